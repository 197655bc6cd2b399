"""VOC metric vs a plain per-detection transcription of the devkit (VOCevaldet.m / VOCap.m) written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssdcli.data.records import ImageRecord
from ssdcli.detections_io import DetectionArrays, detections_to_arrays
from ssdcli.engine.evaluator import evaluate_detections
from ssdcli.errors import SsdError
from ssdcli.metrics.voc import GroundTruth, ap_voc07, ap_voc12, voc_evaluate

# ---------------------------------------------------------------- reference (deliberately naive) ----------

# Matlab's 0:0.1:1 (computed symmetrically from both ends, as Matlab's colon operator does)
_MATLAB_T = [0.0 + k * 0.1 for k in range(0, 6)] + [1.0 - (10 - k) * 0.1 for k in range(6, 11)]


def reference_voc(gt_per_image, dets, num_classes, thr=0.5):
    """gt_per_image: list (per image) of lists of (cls, box, difficult); dets: list of (img, cls, score, box).

    Returns per class: (ap07, ap12, tp_list, fp_list, rec, prec) with ap None when npos == 0.
    """
    out = []
    for c in range(num_classes):
        gts = [[(b, d) for (k, b, d) in objs if k == c] for objs in gt_per_image]
        npos = sum(1 for g in gts for (_, d) in g if not d)
        detected = [[False] * len(g) for g in gts]
        mine = [d for d in dets if d[1] == c]
        mine = sorted(mine, key=lambda d: -d[2])  # Python's sort is stable, like Matlab's
        tp, fp = [], []
        for img, _, _, bb in mine:
            ovmax, jmax = -math.inf, -1
            for j, (g, _) in enumerate(gts[img]):
                bi = [max(bb[0], g[0]), max(bb[1], g[1]), min(bb[2], g[2]), min(bb[3], g[3])]
                iw = bi[2] - bi[0] + 1
                ih = bi[3] - bi[1] + 1
                if iw > 0 and ih > 0:
                    ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - iw * ih
                    ov = iw * ih / ua
                    if ov > ovmax:
                        ovmax, jmax = ov, j
            t = f = 0
            if ovmax >= thr:
                if not gts[img][jmax][1]:
                    if not detected[img][jmax]:
                        t = 1
                        detected[img][jmax] = True
                    else:
                        f = 1
            else:
                f = 1
            tp.append(t)
            fp.append(f)
        ctp = np.cumsum(tp).astype(float)
        cfp = np.cumsum(fp).astype(float)
        if npos == 0:
            out.append((None, None, tp, fp, None, None))
            continue
        rec = [x / npos for x in ctp]
        prec = [x / max(x + y, np.finfo(float).eps) for x, y in zip(ctp, cfp)]
        ap07 = 0.0
        for t in _MATLAB_T:
            sel = [p for r, p in zip(rec, prec) if r >= t]
            ap07 = ap07 + (max(sel) if sel else 0.0) / 11
        mrec = [0.0] + rec + [1.0]
        mpre = [0.0] + prec + [0.0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        ap12 = 0.0
        for i in range(1, len(mrec)):
            if mrec[i] != mrec[i - 1]:
                ap12 = ap12 + (mrec[i] - mrec[i - 1]) * mpre[i]
        out.append((ap07, ap12, tp, fp, rec, prec))
    return out


# ---------------------------------------------------------------- synthetic problems ------------------------

def random_problem(seed: int, num_images: int = 25, num_classes: int = 5):
    """Class 3 never has ground truth; class 2 has ground truth but never detections; class 4 objects are all
    difficult; some images are empty; detections include jittered copies, exact duplicates, random boxes,
    quantised scores (ties)."""
    rng = np.random.default_rng(seed)
    gt = []
    for i in range(num_images):
        k = 0 if i % 6 == 0 else int(rng.integers(1, 6))
        objs = []
        for _ in range(k):
            c = int(rng.choice([0, 1, 2, 4]))
            x, y = rng.integers(1, 200, 2)
            w, h = rng.integers(3, 80, 2)
            diff = bool(c == 4 or rng.random() < 0.2)
            objs.append((c, [float(x), float(y), float(x + w), float(y + h)], diff))
        if k >= 2 and rng.random() < 0.3:  # duplicated annotation: equal IoU ties between two objects
            objs.append(objs[0])
        gt.append(objs)
    dets = []
    for i, objs in enumerate(gt):
        for c, b, _ in objs:
            for _ in range(int(rng.integers(0, 4))):
                if c == 2:
                    continue
                jit = rng.normal(0, 4, 4) if rng.random() < 0.7 else np.zeros(4)
                dets.append((i, c, float(np.round(rng.random(), 1)), [float(v) for v in np.asarray(b) + jit]))
        for _ in range(int(rng.integers(0, 6))):
            c = int(rng.choice([0, 1, 3, 4]))
            x, y = rng.uniform(1, 200, 2)
            w, h = rng.uniform(1, 80, 2)
            dets.append((i, c, float(np.round(rng.random(), 1)), [x, y, x + w, y + h]))
    order = rng.permutation(len(dets))
    dets = [dets[j] for j in order]
    return gt, dets, num_classes


def to_arrays(gt, dets, num_classes):
    g_img = [i for i, objs in enumerate(gt) for _ in objs]
    g = GroundTruth(
        image_index=np.array(g_img, np.int64),
        class_index=np.array([o[0] for objs in gt for o in objs], np.int64),
        boxes=np.array([o[1] for objs in gt for o in objs], np.float64).reshape(-1, 4),
        difficult=np.array([o[2] for objs in gt for o in objs], bool),
        num_images=len(gt), num_classes=num_classes,
    )
    d = DetectionArrays(
        image_index=np.array([x[0] for x in dets], np.int64), class_index=np.array([x[1] for x in dets], np.int64),
        scores=np.array([x[2] for x in dets], np.float64), boxes=np.array([x[3] for x in dets], np.float64).reshape(-1, 4),
    )
    return g, d


def names(n):
    return [f"c{i}" for i in range(n)]


# ---------------------------------------------------------------- tests -------------------------------------

@pytest.mark.parametrize("seed,num_images", [(s, 25) for s in range(12)] + [(100, 150), (101, 1)])
def test_matches_reference_devkit(seed, num_images):
    gt, dets, C = random_problem(seed, num_images)
    ref = reference_voc(gt, dets, C)
    g, d = to_arrays(gt, dets, C)
    res = voc_evaluate(d, g, names(C), ("voc07", "voc12"))
    for c in range(C):
        ap07, ap12, tp, fp, rec, prec = ref[c]
        r07, r12 = res["voc07"].classes[c], res["voc12"].classes[c]
        assert r07.tp == sum(tp) and r07.fp == sum(fp) and r07.ndet == len(tp)
        if ap07 is None:
            assert r07.ap is None and r12.ap is None
        else:
            assert r07.ap == ap07  # bit-identical: same float64 operations in the same order
            assert r12.ap == ap12
            np.testing.assert_array_equal(r07.recall, rec)
            np.testing.assert_array_equal(r07.precision, prec)
    # the special classes behave as documented
    if num_images == 1:
        return
    assert res["voc07"].classes[3].ap is None  # no ground truth: n/a, left out of the mean
    assert res["voc07"].classes[4].ap is None  # only difficult ground truth: n/a
    assert res["voc07"].classes[2].ap == 0.0 and res["voc07"].classes[2].ndet == 0  # gt, no detections: 0
    counted = [a for a in (r[0] for r in ref) if a is not None]
    assert res["voc07"].map == pytest.approx(np.mean(counted), abs=1e-12)
    assert res["voc12"].map == pytest.approx(np.mean([r[1] for r in ref if r[1] is not None]), abs=1e-12)


def test_hand_computed_11_point_vs_all_points():
    # npos = 4; ranked: TP FP TP FP TP -> rec .25 .25 .5 .5 .75, prec 1 .5 .667 .5 .6
    rec = np.array([0.25, 0.25, 0.5, 0.5, 0.75])
    prec = np.array([1, 0.5, 2 / 3, 0.5, 0.6])
    assert ap_voc07(rec, prec) == pytest.approx((3 * 1 + 3 * (2 / 3) + 2 * 0.6) / 11)
    assert ap_voc12(rec, prec) == pytest.approx(0.25 * 1 + 0.25 * (2 / 3) + 0.25 * 0.6)
    # the same through the full matching path: 4 objects in 4 images, detections ranked as above
    boxes = [[1.0, 1.0, 10.0, 10.0]] * 4
    g = GroundTruth(np.arange(4), np.zeros(4, np.int64), np.array(boxes), np.zeros(4, bool), 4, 1)
    far = [100.0, 100.0, 120.0, 120.0]
    d = DetectionArrays(np.array([0, 0, 1, 1, 2]), np.zeros(5, np.int64), np.array([0.9, 0.8, 0.7, 0.6, 0.5]),
                        np.array([boxes[0], far, boxes[1], far, boxes[2]]))
    res = voc_evaluate(d, g, ["a"], ("voc07", "voc12"))
    assert res["voc07"].map == pytest.approx(6.2 / 11)
    assert res["voc12"].map == pytest.approx(0.25 + 0.25 * 2 / 3 + 0.25 * 0.6)


def test_11_point_thresholds_follow_matlab():
    # recall exactly 0.6 (6 of 10) reaches Matlab's t=0.6 (np.arange's 0.6000000000000001 would not);
    # recall exactly 0.3 does not reach t = 0.30000000000000004 (both implementations agree there)
    rec = np.arange(1, 7) / 10
    assert ap_voc07(rec, np.ones(6)) == pytest.approx(7 / 11)
    assert ap_voc07(np.arange(1, 4) / 10, np.ones(3)) == pytest.approx(3 / 11)


def _one_image(gt_boxes, difficult, det_boxes, scores):
    g = GroundTruth(np.zeros(len(gt_boxes), np.int64), np.zeros(len(gt_boxes), np.int64), np.array(gt_boxes, float),
                    np.array(difficult, bool), 1, 1)
    d = DetectionArrays(np.zeros(len(det_boxes), np.int64), np.zeros(len(det_boxes), np.int64),
                        np.array(scores, float), np.array(det_boxes, float))
    return voc_evaluate(d, g, ["a"], ("voc07",))["voc07"].classes[0]


def test_iou_exactly_half_is_a_match_with_plus_one_areas():
    # gt 10x10 pixels (1..10), detection 10x5 pixels (1..5): IoU = 50 / 100 = 0.5 exactly
    c = _one_image([[1, 1, 10, 10]], [False], [[1, 1, 10, 5]], [0.9])
    assert (c.tp, c.fp) == (1, 0)
    c = _one_image([[1, 1, 10, 10]], [False], [[1, 1, 10, 4.9]], [0.9])  # just below
    assert (c.tp, c.fp) == (0, 1)


def test_duplicates_difficult_and_best_match_rules():
    # second detection of the same object: FP; detection whose best match is difficult: ignored, repeatedly
    c = _one_image([[1, 1, 10, 10]], [False], [[1, 1, 10, 10], [1, 1, 10, 10]], [0.9, 0.8])
    assert (c.tp, c.fp, c.ignored) == (1, 1, 0)
    c = _one_image([[1, 1, 10, 10]], [True], [[1, 1, 10, 10], [1, 1, 10, 10]], [0.9, 0.8])
    assert (c.tp, c.fp, c.ignored, c.npos, c.ap) == (0, 0, 2, 0, None)
    # best IoU is the difficult object although a regular one also overlaps >= 0.5: ignored (devkit)
    c = _one_image([[1, 1, 20, 10], [1, 1, 20, 12]], [False, True], [[1, 1, 20, 12]], [0.9])
    assert (c.tp, c.fp, c.ignored) == (0, 0, 1)
    # two identical objects: the devkit's argmax picks the first each time, so the second detection is a FP
    c = _one_image([[1, 1, 10, 10], [1, 1, 10, 10]], [False, False], [[1, 1, 10, 10], [1, 1, 10, 10]], [0.9, 0.8])
    assert (c.tp, c.fp, c.npos) == (1, 1, 2)


def test_score_ties_keep_input_order():
    # equal scores: the detection listed first is ranked first (stable, like Matlab's sort)
    c = _one_image([[1, 1, 10, 10]], [False], [[50, 50, 60, 60], [1, 1, 10, 10]], [0.5, 0.5])
    np.testing.assert_array_equal(c.precision, [0.0, 0.5])
    c = _one_image([[1, 1, 10, 10]], [False], [[1, 1, 10, 10], [50, 50, 60, 60]], [0.5, 0.5])
    np.testing.assert_array_equal(c.precision, [1.0, 0.5])


def test_empty_detections_and_empty_ground_truth():
    g = GroundTruth(np.array([0]), np.array([0]), np.array([[1.0, 1, 5, 5]]), np.array([False]), 2, 2)
    res = voc_evaluate(DetectionArrays.empty(), g, ["a", "b"], ("voc07", "voc12"))
    assert res["voc07"].map == 0.0 and res["voc12"].map == 0.0
    assert res["voc07"].classes[1].ap is None
    g0 = GroundTruth(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, bool), 2, 2)
    d = DetectionArrays(np.array([0, 1]), np.array([0, 1]), np.array([0.5, 0.4]), np.array([[1.0, 1, 5, 5]] * 2))
    res = voc_evaluate(d, g0, ["a", "b"], ("voc07",))
    assert math.isnan(res["voc07"].map) and res["voc07"].to_dict()["map"] is None
    assert res["voc07"].classes[0].fp == 1


def test_evaluate_detections_dicts_and_bad_input():
    gt, dets, C = random_problem(3, num_images=8)
    recs = [
        ImageRecord(id=f"im{i}", path=f"/x/{i}.jpg", width=300, height=300,
                    boxes=np.array([o[1] for o in objs], np.float32).reshape(-1, 4),
                    labels=np.array([o[0] + 1 for o in objs], np.int64), difficult=np.array([o[2] for o in objs], bool))
        for i, objs in enumerate(gt)
    ]
    dicts = [{"image_id": f"im{i}", "label": f"c{c}", "score": s, "box": b} for i, c, s, b in dets]
    ref = reference_voc([[(o[0], [float(v) for v in np.float32(o[1])], o[2]) for o in objs] for objs in gt], dets, C)
    extra = [{"image_id": "im0", "label": "zebra", "score": 0.9, "box": [1, 1, 5, 5]},
             {"image_id": "im1", "label": "c0", "score": float("nan"), "box": [1, 1, 5, 5]},
             {"image_id": "im1", "label": "c0", "score": 0.3, "box": [1, float("inf"), 5, 5]}]
    rep = evaluate_detections(dicts + extra, recs, names(C), ("voc12", "voc07"))
    assert rep.primary == "voc12"
    assert rep.map == pytest.approx(np.mean([r[1] for r in ref if r[1] is not None]), abs=1e-12)
    assert rep.detection_check.unknown_classes == {"zebra": 1} and rep.detection_check.non_finite == 2
    assert any("zebra" in w for w in rep.warnings) and any("NaN/Inf" in w for w in rep.warnings)
    d = rep.to_dict()
    assert d["metrics"]["voc07"]["per_class"]["c3"]["ap"] is None
    assert len(d["metrics"]["voc07"]["per_class"]["c0"]["precision_at_recall"]) == 101
    with pytest.raises(SsdError, match=r"3 detections name 2 image ids.*'nope'"):
        evaluate_detections(dicts + [{"image_id": "nope", "label": "c0", "score": 0.1, "box": [1, 1, 2, 2]}] * 2
                            + [{"image_id": "gone", "label": "c0", "score": 0.1, "box": [1, 1, 2, 2]}], recs, names(C))
    with pytest.raises(SsdError, match="detection #1: missing key 'box'"):
        detections_to_arrays([dicts[0], {"image_id": "im0", "label": "c0", "score": 1}], ["im0"], ["c0"])
    empty = evaluate_detections([], recs, names(C))
    assert empty.map == 0.0 and any("no detections" in w for w in empty.warnings)
    with pytest.raises(SsdError, match="unknown metric"):
        evaluate_detections([], recs, names(C), ("voc2007",))
