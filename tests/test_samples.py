"""Built-in sample dataset: deterministic, valid VOC, exact boxes, and parses back with zero problems."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssdcli.data.prepare import prepare_voc
from ssdcli.data.samples import SAMPLE_CLASSES, draw_sample, write_sample_dataset
from ssdcli.errors import SsdError


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_deterministic_for_a_seed(tmp_path: Path):
    a = files(write_sample_dataset(tmp_path / "a", 6, 3, seed=3))
    b = files(write_sample_dataset(tmp_path / "b", 6, 3, seed=3))
    c = files(write_sample_dataset(tmp_path / "c", 6, 3, seed=4))
    assert a == b
    assert a.keys() == c.keys() and a != c
    # image i of a split does not depend on how many images are drawn
    d = files(write_sample_dataset(tmp_path / "d", 4, 2, seed=3))
    assert d["JPEGImages/train_00003.jpg"] == a["JPEGImages/train_00003.jpg"]
    assert d["Annotations/test_00001.xml"] == a["Annotations/test_00001.xml"]


def test_layout_counts_and_boxes(tmp_path: Path):
    root = write_sample_dataset(tmp_path / "s", 20, 8, image_size=(96, 160), seed=0)
    train = (root / "ImageSets/Main/trainval.txt").read_text().split()
    test = (root / "ImageSets/Main/test.txt").read_text().split()
    assert len(train) == 20 and len(test) == 8 and not set(train) & set(test)
    assert (root / "classes.txt").read_text().split() == list(SAMPLE_CLASSES)
    seen = set()
    for image_id in train + test:
        w, h = Image.open(root / "JPEGImages" / f"{image_id}.jpg").size
        assert 96 <= w <= 160 and 96 <= h <= 160
        ann = ET.parse(root / "Annotations" / f"{image_id}.xml").getroot()
        assert (int(ann.findtext("size/width")), int(ann.findtext("size/height"))) == (w, h)
        objects = ann.findall("object")
        assert 1 <= len(objects) <= 4
        for o in objects:
            seen.add(o.findtext("name"))
            assert o.findtext("difficult") == "0"
            x0, y0, x1, y1 = (int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= x0 < x1 <= w and 1 <= y0 < y1 <= h
            side = min(w, h)
            assert max(x1 - x0 + 1, y1 - y0 + 1) >= 0.1 * side  # no tiny objects
    assert seen == set(SAMPLE_CLASSES)


def test_boxes_are_tight_around_the_drawn_shape(monkeypatch):
    """On a black background without clutter or noise, the non-black pixels of an image are exactly its shapes:
    their bounding box is the object's box (one object) or the union of the boxes (several)."""
    from PIL import Image as PILImage

    import ssdcli.data.samples as samples

    monkeypatch.setattr(samples, "_background", lambda rng, w, h: PILImage.new("RGB", (w, h)))
    monkeypatch.setattr(samples, "_clutter", lambda *a: None)
    singles = 0
    for i in range(12):
        image, objects = draw_sample(np.random.default_rng(i), 96, 200, noise=False)
        ys, xs = np.nonzero(np.asarray(image).max(-1) > 0)
        painted = (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)  # VOC pixel convention
        boxes = np.array([b for _, b in objects])
        assert painted == (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())
        singles += len(objects) == 1
    assert singles >= 1


def test_parses_back_with_zero_problems(tmp_path: Path):
    root = write_sample_dataset(tmp_path / "s", 12, 5, seed=1)
    report = prepare_voc(root, tmp_path / "prepared", classes=list(SAMPLE_CLASSES), strict=True, val_fraction=0.0)
    assert report.problems == {}
    assert report.splits["train"].images == 12 and report.splits["test"].images == 5
    assert report.splits["train"].objects == sum(report.splits["train"].class_objects) >= 12
    assert report.splits["train"].difficult == 0


def test_bad_arguments():
    with pytest.raises(SsdError):
        write_sample_dataset("/tmp/never", 1, 1, image_size=(300, 100))
    with pytest.raises(SsdError):
        write_sample_dataset("/tmp/never", 0, 0)
