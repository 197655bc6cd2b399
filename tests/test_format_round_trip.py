"""Round trips: VOC -> prepared -> COCO JSON / YOLO -> prepared gives identical records (boxes to 1e-6, classes,
splits, order), and `ssd eval --metric coco` on a COCO-prepared set equals pycocotools on the source JSON."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ssdcli.data.coco_source import prepare_coco
from ssdcli.data.export_formats import export_coco, export_yolo
from ssdcli.data.prepare import prepare_voc
from ssdcli.data.records import PreparedDataset, load_prepared
from ssdcli.data.samples import SAMPLE_CLASSES, write_sample_dataset
from ssdcli.data.splits import stratified_split
from ssdcli.data.yolo_source import prepare_yolo
from tests.cli_helpers import ssd

RACCOON = Path(__file__).resolve().parents[2] / "shared/datasets/raccoon"


def assert_same_records(a: PreparedDataset, b: PreparedDataset, *, difficult: bool = True) -> None:
    """Same classes, split names, image order, files (symbolic links followed), sizes, boxes (1e-6), labels."""
    assert a.classes == b.classes
    assert list(a.splits) == list(b.splits)
    for name in a.splits:
        ra, rb = a.splits[name], b.splits[name]
        assert [r.id for r in ra] == [r.id for r in rb], name
        for x, y in zip(ra, rb):
            assert os.path.realpath(x.path) == os.path.realpath(y.path)
            assert (x.width, x.height) == (y.width, y.height)
            assert x.boxes.shape == y.boxes.shape and np.abs(x.boxes - y.boxes).max(initial=0.0) <= 1e-6, x.id
            assert x.labels.tolist() == y.labels.tolist()
            if difficult:
                assert x.difficult.tolist() == y.difficult.tolist()


def round_trip(voc_root: Path, tmp: Path, classes) -> None:
    prepare_voc(voc_root, tmp / "voc", classes=classes)
    voc = load_prepared(tmp / "voc")
    js = export_coco(voc, tmp / "coco")
    specs = {split: f"{path}:{voc.image_root}" for split, path in js.items()}
    prepare_coco(None, tmp / "from_coco", **specs)
    coco = load_prepared(tmp / "from_coco")
    assert_same_records(voc, coco)
    for split in voc.splits:  # the very same index: training on either reads the same bytes in the same order
        assert (tmp / "voc" / f"{split}.jsonl").read_text() == (tmp / "from_coco" / f"{split}.jsonl").read_text()
    assert coco.manifest["counts"] == voc.manifest["counts"]

    prepare_yolo(export_yolo(voc, tmp / "yolo"), tmp / "from_yolo")
    yolo = load_prepared(tmp / "from_yolo")
    assert_same_records(voc, yolo, difficult=False)  # YOLO has no difficult flag
    assert yolo.manifest["source"]["format"] == "yolo"


def test_sample_data_round_trips(tmp_path: Path):
    write_sample_dataset(tmp_path / "src", num_train=12, num_test=4, image_size=(48, 64), seed=1)
    round_trip(tmp_path / "src", tmp_path, list(SAMPLE_CLASSES))


@pytest.mark.skipif(not RACCOON.is_dir(), reason="shared raccoon dataset not present")
def test_raccoon_round_trips(tmp_path: Path):
    round_trip(RACCOON, tmp_path, "auto")
    voc = load_prepared(tmp_path / "voc")
    assert {k: len(v) for k, v in voc.splits.items()} == {"train": 144, "val": 16, "test": 40}


def test_voc_without_split_files_splits_like_any_source(tmp_path: Path):
    """A VOC folder without ImageSets/Main and the same data as one unsplit COCO file get the same split."""
    src = write_sample_dataset(tmp_path / "src", num_train=20, num_test=10, image_size=(48, 64), seed=2)
    prepare_voc(src, tmp_path / "split", classes=list(SAMPLE_CLASSES), train_sets="trainval,test", test_sets="none",
                val_fraction=0)
    joined = load_prepared(tmp_path / "split")
    assert list(joined.splits) == ["train"] and len(joined.splits["train"]) == 30
    export_coco(joined, tmp_path / "coco")
    for f in (src / "ImageSets" / "Main").glob("*.txt"):
        f.unlink()
    a = prepare_voc(src, tmp_path / "a", classes=list(SAMPLE_CLASSES), split="0.7,0.15,0.15", split_seed=5)
    assert {k: s.images for k, s in a.splits.items()} == {"train": 22, "val": 4, "test": 4}
    prepare_coco(None, tmp_path / "b", train=f"{tmp_path / 'coco/annotations/instances_train.json'}:{src}",
                 split="0.7,0.15,0.15", split_seed=5)  # fmt: skip
    assert_same_records(load_prepared(tmp_path / "a"), load_prepared(tmp_path / "b"))


def _coco_source(root: Path, rng: np.random.Generator) -> Path:
    """A COCO file with quarter-pixel float boxes (exact in the prepared index), crowd regions, image id 0,
    non-contiguous category ids and ``area = w * h`` (what ``eval`` gives pycocotools; see the README)."""
    images, anns = [], []
    for i in range(12):
        w, h = int(rng.integers(60, 120)), int(rng.integers(60, 120))
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(root / f"img{i}.jpg")
        images.append({"id": i * 3, "file_name": f"img{i}.jpg", "width": w, "height": h})
        for _ in range(int(rng.integers(0, 4))):
            bw, bh = rng.integers(8, 200, 2) / 4
            x, y = rng.integers(0, int((w - bw) * 4)) / 4, rng.integers(0, int((h - bh) * 4)) / 4
            anns.append({"id": len(anns) + 1, "image_id": i * 3, "category_id": int(rng.choice([2, 5, 9])),
                         "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": int(rng.random() < 0.15)})  # fmt: skip
    cats = [{"id": 2, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 9, "name": "bird"}]
    path = root / "_annotations.coco.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_coco_metric_equals_pycocotools_on_the_source_json(tmp_path: Path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    (tmp_path / "src").mkdir()
    source = _coco_source(tmp_path / "src", rng)
    prepare_coco(None, tmp_path / "prep", test=str(source))
    prepared = load_prepared(tmp_path / "prep")
    records, classes = prepared.split("test"), prepared.classes
    data = json.loads(source.read_text())
    by_name = {img["file_name"]: img for img in data["images"]}
    cat_id = {c["name"]: c["id"] for c in data["categories"]}
    ours, theirs = [], []
    for r in records:  # noisy copies of the ground truth and false positives, distinct scores
        img = by_name[os.path.basename(r.path)]
        boxes = np.concatenate([r.boxes + rng.normal(0, 3, r.boxes.shape), rng.uniform(1, 50, (2, 4)).cumsum(1)])
        labels = np.concatenate([r.labels, rng.integers(1, 4, 2)])
        for box, label in zip(boxes.tolist(), labels.tolist()):
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            score = float(rng.uniform(0.05, 1.0))
            name = classes[label - 1]
            ours.append({"image_id": r.id, "label": name, "score": score, "box": box})
            theirs.append({"image_id": img["id"], "category_id": cat_id[name], "score": score,
                           "bbox": [box[0] - 1, box[1] - 1, box[2] - box[0] + 1, box[3] - box[1] + 1]})  # fmt: skip
    (tmp_path / "dets.json").write_text(json.dumps(ours))
    result = ssd("eval", "--data", tmp_path / "prep", "--detections", tmp_path / "dets.json", "--metric", "coco",
                 "--json", tmp_path / "eval.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "eval.json").read_text())["metrics"]["coco"]["stats"]

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(source))
        ev = COCOeval(gt, gt.loadRes(theirs), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    assert stats["AP"] > 0.05  # the detections are not trivially all wrong
    for k, v in zip(names, ev.stats):
        assert (stats[k] if stats[k] is not None else -1.0) == pytest.approx(float(v), abs=1e-6), k


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=60), st.integers(0, 5), st.randoms(use_true_random=False))
def test_stratified_split_ignores_order_and_has_exact_sizes(strata, seed, rnd):
    ids = [f"img{i}" for i in range(len(strata))]
    which = stratified_split(ids, strata, (0.7, 0.2, 0.1), seed)
    n = len(ids)
    sizes = [which.count(k) for k in range(3)]
    assert sizes[0] >= 1 and sum(sizes) == n
    if n >= 10:
        assert sizes[1:] == [round(0.2 * n), round(0.1 * n)]
    order = list(range(n))
    rnd.shuffle(order)
    shuffled = stratified_split([ids[i] for i in order], [strata[i] for i in order], (0.7, 0.2, 0.1), seed)
    assert {ids[i]: w for i, w in zip(order, shuffled)} == dict(zip(ids, which))
