"""DetectionDataset: decoding (incl. reduced-scale JPEG), per-sample determinism, workers, bad files."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ssdcli.data.dataset import DetectionDataset, collate_detections, load_sample, sample_generator
from ssdcli.data.images import read_image, resize_square
from ssdcli.data.records import ImageRecord
from ssdcli.data.transforms import SSDTrainAugment, voc_to_continuous
from ssdcli.errors import SsdError

RACCOON = Path(__file__).resolve().parents[2] / "shared/datasets/raccoon"
S = 96


pytestmark = pytest.mark.usefixtures("one_thread_module")


def _picture(w: int, h: int, seed: int) -> tuple[Image.Image, list[list[float]]]:
    """Smooth random background with two solid rectangles; VOC boxes of the rectangles."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(60, 200, (15, 20, 3), dtype=np.uint8))  # texture scales with the image
    im = small.resize((w, h), Image.BILINEAR)
    px = np.asarray(im).copy()
    boxes = []
    for (x0, y0, x1, y1), col in zip([(0.1, 0.1, 0.45, 0.5), (0.5, 0.4, 0.9, 0.95)], [(230, 30, 30), (30, 60, 230)]):
        c0, r0, c1, r1 = int(x0 * w), int(y0 * h), int(x1 * w), int(y1 * h)
        px[r0:r1, c0:c1] = col
        boxes.append([c0 + 1, r0 + 1, c1, r1])
    return Image.fromarray(px), boxes


def _record(path: Path, w: int, h: int, boxes, labels=None, difficult=None) -> ImageRecord:
    k = len(boxes)
    return ImageRecord(
        path.stem, str(path), w, h, np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(labels if labels is not None else [1 + i % 2 for i in range(k)], np.int64),
        np.asarray(difficult if difficult is not None else [False] * k, bool),
    )


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[ImageRecord]:
    root = tmp_path_factory.mktemp("imgs")
    recs = []
    im, b = _picture(320, 240, 0)
    im.save(root / "plain.jpg", quality=92)
    recs.append(_record(root / "plain.jpg", 320, 240, b, difficult=[False, True]))
    im, b = _picture(1600, 1200, 1)  # much larger than the model input: reduced-scale decoding
    im.save(root / "large.jpg", quality=90)
    recs.append(_record(root / "large.jpg", 1600, 1200, b))
    im, b = _picture(200, 150, 2)
    im.save(root / "picture.png")
    recs.append(_record(root / "picture.png", 200, 150, b))
    im, b = _picture(240, 180, 3)
    im.convert("L").save(root / "gray.jpg")
    recs.append(_record(root / "gray.jpg", 240, 180, b))
    im, b = _picture(160, 240, 4)  # displayed 160x240, stored rotated with EXIF orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    im.transpose(Image.ROTATE_90).save(root / "rotated.jpg", exif=exif.tobytes(), quality=92)
    recs.append(_record(root / "rotated.jpg", 160, 240, b))
    im, _ = _picture(300, 200, 5)
    im.save(root / "negative.jpg")
    recs.append(_record(root / "negative.jpg", 300, 200, []))
    return recs


def test_items_contract(records):
    ds = DetectionDataset(records, SSDTrainAugment(S), seed=3)
    assert len(ds) == len(records)
    for epoch in range(3):
        for i in range(len(ds)):
            img, boxes, labels = ds[(epoch, i)]
            assert img.dtype == torch.uint8 and img.shape == (3, S, S)
            assert boxes.dtype == torch.float32 and boxes.shape == (len(labels), 4) and labels.dtype == torch.int64
            assert ((boxes >= 0) & (boxes <= 1)).all()
    assert ds[(2, 5)][1].shape == (0, 4)  # negative image
    for a, b in zip(ds[1], ds[(0, 1)]):
        assert torch.equal(a, b)
    assert any(not torch.equal(ds[(0, i)][0], ds[(1, i)][0]) for i in range(len(ds)))


def test_same_as_augmenting_read_image(records):
    """JPEG path (header plan, decode_jpeg, EXIF) == read_image + transform when no reduction is used."""
    aug = SSDTrainAugment(S)
    ds = DetectionDataset(records, aug, seed=1)
    checked = 0
    for epoch in range(4):
        for i, r in enumerate(records):
            if "large" in r.path:
                continue
            boxes, labels = ds.targets(i)
            img = read_image(r.path)
            plan = aug.sample(img.shape[-1], img.shape[-2], boxes, sample_generator(1, epoch, i))
            if aug.max_reduction(plan) > 1:
                continue
            want = aug(img, boxes, labels, sample_generator(1, epoch, i))
            got = ds[(epoch, i)]
            assert all(torch.equal(a, b) for a, b in zip(want, got)), (r.path, epoch)
            checked += 1
    assert checked >= 6


def test_reduced_decoding_differs_only_by_interpolation(records):
    aug = SSDTrainAugment(S, photometric=False)
    ds = DetectionDataset(records, aug, seed=0)
    idx = next(i for i, r in enumerate(records) if "large" in r.path)
    boxes, labels = ds.targets(idx)
    full = read_image(records[idx].path)
    reduced = 0
    for epoch in range(12):
        plan = aug.sample(1600, 1200, boxes, sample_generator(0, epoch, idx))
        reduced += aug.max_reduction(plan) > 1
        want_img, want_boxes, want_labels = aug.render(full, boxes, labels, plan)
        got_img, got_boxes, got_labels = ds[(epoch, idx)]
        assert torch.equal(want_labels, got_labels)
        assert (want_boxes - got_boxes).abs().max() * S <= 1.0
        assert (want_img.float() - got_img.float()).abs().mean() < 2.5
    assert reduced >= 8  # 1600x1200 into 96x96: nearly every draw decodes at 1/2 .. 1/8


def _eval_transform(image, boxes, labels, generator=None):
    """Warp to S x S, VOC pixel boxes -> relative xyxy (what validation does)."""
    h, w = image.shape[-2:]
    rel = torch.from_numpy((voc_to_continuous(boxes) / [w, h, w, h]).clip(0, 1).astype("float32")).reshape(-1, 4)
    return resize_square(image, S), rel, torch.as_tensor(labels, dtype=torch.int64).reshape(-1)


def test_difficult_dropped_unless_kept(records):
    ds = DetectionDataset(records, _eval_transform)
    assert ds[0][1].shape[0] == 1 and ds[0][2].tolist() == [1]
    kept = DetectionDataset(records, _eval_transform, keep_difficult=True)
    assert kept[0][1].shape[0] == 2
    img, boxes, _ = kept[4]  # EXIF-rotated: boxes are in displayed coordinates, as read_image returns
    assert img.shape == (3, S, S) and read_image(records[4].path).shape == (3, 240, 160)


def test_workers_give_identical_tensors(records):
    ds = DetectionDataset(records, SSDTrainAugment(S), seed=7)
    keys = [[(0, 3), (1, 0), (0, 1)], [(2, 2), (0, 5), (3, 4)], [(1, 1), (5, 0)]]
    runs = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_sampler=keys, num_workers=workers, collate_fn=collate_detections)
        runs.append(list(loader))
    for (ia, ba, la), (ib, bb, lb) in zip(*runs):
        assert ia.dtype == torch.uint8 and ia.shape[1:] == (3, S, S)
        assert torch.equal(ia, ib)
        assert all(torch.equal(x, y) for x, y in zip(ba, bb)) and all(torch.equal(x, y) for x, y in zip(la, lb))


def test_bad_files_raise_ssd_error(tmp_path, records):
    aug = SSDTrainAugment(S)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 3)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(records[0].path).read_bytes()[:300])
    large = Path(records[1].path).read_bytes()
    half = tmp_path / "half.jpg"  # header fine, so it takes the reduced-scale decoding path first
    half.write_bytes(large[: len(large) // 2])
    missing = tmp_path / "missing.jpg"
    for path in (garbage, truncated, half, missing):
        ds = DetectionDataset([_record(path, 320, 240, [[1, 1, 10, 10]])], aug)
        with pytest.raises(SsdError, match=path.name):
            ds[0]


def test_collate():
    batch = [(torch.full((3, 8, 8), k, dtype=torch.uint8), torch.rand(k, 4), torch.ones(k).long()) for k in (0, 2, 5)]
    images, boxes, labels = collate_detections(batch)
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.uint8 and images[:, 0, 0, 0].tolist() == [0, 2, 5]
    assert [len(b) for b in boxes] == [0, 2, 5] and [len(x) for x in labels] == [0, 2, 5]


@pytest.mark.skipif(not RACCOON.is_dir(), reason="../shared/datasets/raccoon not available")
def test_raccoon_round_trip():
    """Real photographs: dataset samples equal the plan rendered from the fully decoded image."""
    recs = []
    for xml in sorted((RACCOON / "Annotations").glob("*.xml"))[:10]:
        root = ET.parse(xml).getroot()
        corners = ("xmin", "ymin", "xmax", "ymax")
        b = [[float(o.find("bndbox").findtext(k)) for k in corners] for o in root.iter("object")]
        w, h = int(root.find("size").findtext("width")), int(root.find("size").findtext("height"))
        recs.append(_record(RACCOON / "JPEGImages" / f"{xml.stem}.jpg", w, h, b, [1] * len(b)))
    aug = SSDTrainAugment(300)
    ds = DetectionDataset(recs, aug, seed=5)
    for epoch in range(3):
        for i, r in enumerate(recs):
            boxes, labels = ds.targets(i)
            img = read_image(r.path)
            g = sample_generator(5, epoch, i)
            want = aug.render(img, boxes, labels, aug.sample(img.shape[-1], img.shape[-2], boxes, g))
            got = load_sample(r.path, boxes, labels, aug, sample_generator(5, epoch, i))
            assert torch.equal(want[2], got[2])
            assert len(want[1]) == 0 or (want[1] - got[1]).abs().max() * 300 <= 1.0
            assert (want[0].float() - got[0].float()).abs().mean() < 3.0
