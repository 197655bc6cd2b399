"""`prepare_yolo` and `ssd prepare-yolo`: every YOLO quirk counted, no real object lost, path resolution, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssdcli.data.records import load_prepared
from ssdcli.data.yolo_source import label_path, prepare_yolo, read_data_yaml
from ssdcli.errors import SsdError
from tests.cli_helpers import ssd

W, H = 60, 40


def image(path: Path, size=(W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path, format="JPEG")
    return path


def labels(image_path: Path, text: str | None) -> None:
    if text is not None:
        p = Path(label_path(str(image_path)))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def quirky(root: Path) -> Path:
    """A Roboflow-style export (``train/images``, ``../train/images`` in data.yaml) with every label quirk."""
    tr, va = root / "train" / "images", root / "valid" / "images"
    labels(image(tr / "a.jpg"), "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.1\n")  # two objects
    labels(image(tr / "b.jpg"), "")  # empty label file: a negative
    image(tr / "c.jpg")  # no label file: a negative
    labels(image(tr / "d.jpg"), "0 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.5 0.5\n"  # duplicate line: kept once
                                "7 0.5 0.5 0.2 0.2\n"  # class id not in names
                                "0 0.5 0.5 0.2\n"  # malformed line
                                "2 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n"  # polygon -> its box
                                "0 1.05 0.5 0.3 0.2\n"  # out of [0, 1]: clipped
                                "0 0.5 0.5 0 0.2\n")  # zero width: invalid  # fmt: skip
    labels(image(tr / "e.jpg"), "0 1.5 1.5 0.1 0.1\n")  # only box outside the image: skipped
    labels(image(va / "v.jpg"), "1 0.5 0.5 1.0 1.0\n")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 3\n"
                                    "names: {0: cat, 1: dog, 2: bird}\n")  # fmt: skip
    return root / "data.yaml"


def test_every_quirk_is_counted_and_no_real_object_is_lost(tmp_path: Path):
    src = quirky(tmp_path / "ds")
    report = prepare_yolo(src, tmp_path / "out", val_fraction=0)
    counts = {k: p.count for k, p in report.problems.items()}
    assert counts == {
        "empty_label_file": 1, "missing_label_file": 1, "no_objects": 2, "duplicate_label_line": 1,
        "unknown_class_id": 1, "bad_label_line": 1, "polygon_label": 1, "coordinates_out_of_range": 1,
        "box_clipped": 1, "invalid_box": 1, "box_outside_image": 1, "all_boxes_invalid": 1,
    }  # fmt: skip
    ds = load_prepared(tmp_path / "out")
    assert ds.classes == ["cat", "dog", "bird"]
    recs = {r.id: r for r in ds.split("train")}
    assert sorted(recs) == ["a", "b", "c", "d"] and [r.id for r in ds.split("val")] == ["v"]
    # xmin = (cx - w/2) W + 1, xmax = (cx + w/2) W (likewise y)
    np.testing.assert_allclose(recs["a"].boxes, [[16, 11, 45, 30], [13, 9, 18, 12]], atol=1e-4)
    assert recs["a"].labels.tolist() == [1, 2]
    np.testing.assert_allclose(recs["d"].boxes, [[16, 11, 45, 30], [7, 5, 18, 16], [55, 17, 60, 24]], atol=1e-4)
    assert recs["d"].labels.tolist() == [1, 3, 1]
    np.testing.assert_allclose(ds.split("val")[0].boxes, [[1, 1, 60, 40]], atol=1e-4)
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["source"]["format"] == "yolo" and manifest["options"]["classes"] == "names"
    assert manifest["skipped"]["images"][0]["reason"] == "all_boxes_invalid"


def test_paths_names_and_lists(tmp_path: Path):
    root = tmp_path / "data"
    for i in range(3):
        labels(image(root / "images" / "train" / f"t{i}.jpg"), "0 0.5 0.5 0.5 0.5\n")
    labels(image(root / "images" / "val" / "v0.jpg"), "1 0.5 0.5 0.5 0.5\n")
    (root / "train_list.txt").write_text("./images/train/t2.jpg\n./images/train/t0.jpg\n")  # order kept
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg/data.yaml").write_text(f"path: {root}\ntrain: [train_list.txt, images/train/t1.jpg]\n"
                                            "val: images/val\nnames: [cat, dog]\n")  # fmt: skip
    ds = read_data_yaml(tmp_path / "cfg/data.yaml")
    assert [Path(p).name for p in ds.splits["train"]] == ["t2.jpg", "t0.jpg", "t1.jpg"]
    assert ds.names == {0: "cat", 1: "dog"}
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: cat, 1: dog}\n")
    report = prepare_yolo(root, tmp_path / "p", classes="dog,cat")  # a folder holding data.yaml; reordered
    assert report.classes == ["dog", "cat"] and report.splits["train"].class_objects == [0, 3]
    report = prepare_yolo(root, None, split="0.5,0.25,0.25")  # has train + val: only test is carved from train
    assert {k: s.images for k, s in report.splits.items()} == {"train": 2, "val": 1, "test": 1}
    assert report.splits["val"].sets == ["images/val"]

    flat = tmp_path / "flat"  # no yaml: images/ + labels/ + classes.txt, no split -> --split
    for i in range(10):
        labels(image(flat / "images" / f"f{i}.jpg"), f"{i % 2} 0.5 0.5 0.5 0.5\n")
    (flat / "classes.txt").write_text("cat\ndog\n")
    report = prepare_yolo(flat, None, split="0.6,0.2,0.2")
    assert {k: s.images for k, s in report.splits.items()} == {"train": 6, "val": 2, "test": 2}


def test_input_errors_are_one_clear_line(tmp_path: Path):
    with pytest.raises(SsdError, match="not found"):
        prepare_yolo(tmp_path / "nope.yaml", None)
    bad = tmp_path / "data.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(SsdError, match=r"data\.yaml: not valid YAML"):
        prepare_yolo(bad, None)
    bad.write_text("train: images\nval: images\n")
    with pytest.raises(SsdError, match="no 'names'"):
        prepare_yolo(bad, None)
    bad.write_text("train: images/train\nnames: [a]\n")
    with pytest.raises(SsdError, match="images/train not found"):
        prepare_yolo(bad, None)
    (tmp_path / "noyaml/images").mkdir(parents=True)
    with pytest.raises(SsdError, match="--classes"):
        prepare_yolo(tmp_path / "noyaml", None)


def test_cli(tmp_path: Path):
    src = quirky(tmp_path / "ds")
    result = ssd("prepare-yolo", src, "-o", tmp_path / "out", "--strict")
    assert result.exit_code == 2 and "--strict" in result.output and not (tmp_path / "out/manifest.json").exists()
    result = ssd("prepare-yolo", src, "-o", tmp_path / "out")
    assert result.exit_code == 0 and "unknown_class_id" in result.output
    (tmp_path / "ds/data.yaml").write_text("names: [a]\n")
    result = ssd("prepare-yolo", tmp_path / "ds/data.yaml", "-o", tmp_path / "o2")
    assert result.exit_code == 2 and "no 'train'" in result.output and "Traceback" not in result.output
