"""COCO metrics vs pycocotools driven directly (JSON file + loadRes), with the documented box conversion."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssdcli.detections_io import DetectionArrays
from ssdcli.metrics.coco import COCO_STAT_NAMES, coco_evaluate, voc_to_coco_xywh
from ssdcli.metrics.voc import GroundTruth


def random_problem(seed: int, num_images: int = 20, num_classes: int = 4):
    rng = np.random.default_rng(seed)
    g_img, g_cls, g_box, g_diff = [], [], [], []
    for i in range(num_images):
        for _ in range(0 if i % 5 == 0 else int(rng.integers(1, 5))):
            x, y = rng.integers(1, 300, 2)
            w, h = rng.integers(4, 150, 2)
            g_img.append(i)
            g_cls.append(int(rng.integers(0, num_classes - 1)))  # last class: no ground truth
            g_box.append([x, y, x + w, y + h])
            g_diff.append(bool(rng.random() < 0.2))
    gt = GroundTruth(np.array(g_img), np.array(g_cls), np.array(g_box, float), np.array(g_diff), num_images, num_classes)
    n = len(g_img)
    pick = rng.integers(0, n, 3 * n)
    boxes = np.array(g_box, float)[pick] + rng.normal(0, 6, (3 * n, 4))
    rnd = rng.uniform(1, 300, (n, 2))
    rnd_boxes = np.concatenate([rnd, rnd + rng.uniform(5, 100, (n, 2))], 1)
    det = DetectionArrays(
        image_index=np.concatenate([np.array(g_img)[pick], rng.integers(0, num_images, n)]),
        class_index=np.concatenate([np.array(g_cls)[pick], rng.integers(0, num_classes, n)]),
        scores=rng.random(4 * n),
        boxes=np.concatenate([boxes, rnd_boxes]),
    )
    return gt, det


def pycocotools_direct(gt: GroundTruth, det: DetectionArrays, num_classes: int, tmp_path) -> np.ndarray:
    anns = []
    for k in range(len(gt.image_index)):
        xmin, ymin, xmax, ymax = gt.boxes[k]
        w, h = xmax - xmin + 1, ymax - ymin + 1
        anns.append({"id": k + 1, "image_id": int(gt.image_index[k]), "category_id": int(gt.class_index[k]) + 1,
                     "bbox": [xmin - 1, ymin - 1, w, h], "area": w * h, "iscrowd": int(gt.difficult[k])})
    data = {"images": [{"id": i} for i in range(gt.num_images)],
            "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(num_classes)], "annotations": anns}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    res = [{"image_id": int(det.image_index[k]), "category_id": int(det.class_index[k]) + 1,
            "bbox": [det.boxes[k][0] - 1, det.boxes[k][1] - 1, det.boxes[k][2] - det.boxes[k][0] + 1,
                     det.boxes[k][3] - det.boxes[k][1] + 1], "score": float(det.scores[k])} for k in range(len(det))]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(path))
        ev = COCOeval(coco_gt, coco_gt.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocotools_direct(seed, tmp_path):
    gt, det = random_problem(seed)
    ours = coco_evaluate(det, gt, [f"c{c}" for c in range(4)])
    ref = pycocotools_direct(gt, det, 4, tmp_path)
    for name, v in zip(COCO_STAT_NAMES, ref):
        assert (ours.stats[name] is None) == (v < 0)
        if v >= 0:
            assert ours.stats[name] == pytest.approx(v, abs=1e-12), name
    assert ours.per_class_ap[3] is None  # class without ground truth: n/a, not in the mean
    present = [a for a in ours.per_class_ap if a is not None]
    assert ours.map == pytest.approx(np.mean(present), abs=1e-12)
    assert ours.precision50.shape == (4, 101) and np.isnan(ours.precision50[3]).all()


def test_box_conversion_and_perfect_detections():
    np.testing.assert_array_equal(voc_to_coco_xywh(np.array([[1.0, 1, 10, 20]])), [[0, 0, 10, 20]])
    boxes = np.array([[1.0, 1, 10, 10], [20, 20, 60, 50], [5, 5, 200, 150]])
    gt = GroundTruth(np.array([0, 0, 1]), np.array([0, 1, 0]), boxes, np.zeros(3, bool), 2, 2)
    det = DetectionArrays(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([0.9, 0.8, 0.7]), boxes.copy())
    r = coco_evaluate(det, gt, ["a", "b"])
    assert r.stats["AP"] == pytest.approx(1.0) and r.stats["AP50"] == pytest.approx(1.0)
    assert r.stats["APs"] == pytest.approx(1.0)  # 10x10 box: area 100 < 32^2 with w = xmax - xmin + 1
    assert r.to_dict()["per_class"]["b"]["ap"] == pytest.approx(1.0)


def test_difficult_objects_are_neither_positives_nor_penalised():
    boxes = np.array([[1.0, 1, 50, 50], [100, 100, 150, 150]])
    base = GroundTruth(np.array([0]), np.array([0]), boxes[:1], np.array([False]), 1, 1)
    with_difficult = GroundTruth(np.array([0, 0]), np.array([0, 0]), boxes, np.array([False, True]), 1, 1)
    det = DetectionArrays(np.zeros(3, np.int64), np.zeros(3, np.int64), np.array([0.9, 0.95, 0.96]),
                          np.array([boxes[0], boxes[1], boxes[1]]))
    r = coco_evaluate(det, with_difficult, ["a"])
    assert r.stats["AP"] == pytest.approx(1.0)  # two detections on the difficult object: ignored
    r_base = coco_evaluate(det, base, ["a"])
    assert r_base.stats["AP"] < 0.5  # the same detections against the object set without it are FPs


def test_no_detections():
    gt = GroundTruth(np.array([0]), np.array([0]), np.array([[1.0, 1, 50, 50]]), np.array([False]), 1, 1)
    r = coco_evaluate(DetectionArrays.empty(), gt, ["a"])
    assert r.stats["AP"] == 0.0 and r.per_class_ap == [0.0]
