"""Confusion matrix (``ssdcli.metrics.confusion``) on hand-made cases, and ``ssd eval --out`` writing it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import CLASSES, ssd, tiny_prepared
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ssdcli.data.records import ImageRecord
from ssdcli.detections_io import DetectionArrays
from ssdcli.engine.evaluator import evaluate_detections
from ssdcli.metrics.confusion import ConfusionMatrix, confusion_matrix
from ssdcli.metrics.voc import GroundTruth, match_detections

NAMES = ["cat", "dog", "bird"]
A, B, C = [10, 10, 50, 50], [60, 60, 100, 100], [10, 60, 50, 100]  # three disjoint boxes


def gt_of(*images: list[tuple[list[float], int, bool]]) -> GroundTruth:
    """One list of ``(box, label 1-based, difficult)`` per image."""
    records = [
        ImageRecord(id=str(i), path="", width=120, height=120,
                    boxes=np.array([o[0] for o in objs], np.float32).reshape(-1, 4),
                    labels=np.array([o[1] for o in objs], np.int64), difficult=np.array([o[2] for o in objs], bool))
        for i, objs in enumerate(images)
    ]  # fmt: skip
    return GroundTruth.from_records(records, len(NAMES))


def dets_of(*dets: tuple[int, list[float], int, float]) -> DetectionArrays:
    """``(image, box, label 1-based, score)`` each."""
    if not dets:
        return DetectionArrays.empty()
    return DetectionArrays(
        image_index=np.array([d[0] for d in dets], np.int64), class_index=np.array([d[2] - 1 for d in dets], np.int64),
        scores=np.array([d[3] for d in dets], np.float64), boxes=np.array([d[1] for d in dets], np.float64),
    )  # fmt: skip


def cm_of(dets: DetectionArrays, gt: GroundTruth, score: float = 0.25) -> ConfusionMatrix:
    return confusion_matrix(dets, gt, NAMES, iou_threshold=0.5, score_threshold=score)


def test_perfect_detections_fill_the_diagonal_only():
    gt = gt_of([(A, 1, False), (B, 2, False)], [(C, 3, False), (A, 1, False)])
    dets = dets_of((0, A, 1, 0.9), (0, B, 2, 0.8), (1, C, 3, 0.7), (1, A, 1, 0.6))
    cm = cm_of(dets, gt)
    assert cm.matrix.shape == (4, 4)
    np.testing.assert_array_equal(cm.matrix, np.diag([2, 1, 1, 0]))
    assert (cm.correct, cm.confused, cm.missed, cm.false_positives) == (4, 0, 0, 0)


def test_wrong_class_miss_duplicate_and_background():
    gt = gt_of([(A, 1, False), (B, 2, False), (C, 3, False)])
    dets = dets_of(
        (0, A, 2, 0.9),  # a cat detected as a dog
        (0, B, 2, 0.8),  # the dog, right
        (0, B, 2, 0.7),  # a duplicate of the dog: false positive
        (0, [200, 200, 240, 240], 3, 0.6),  # nothing there: false positive
        (0, C, 3, 0.1),  # the bird, but below the score threshold: the bird is missed
    )
    cm = cm_of(dets, gt)
    m = cm.matrix
    assert m[0, 1] == 1  # true cat -> predicted dog
    assert m[1, 1] == 1
    assert m[3, 1] == 1  # the duplicate dog
    assert m[3, 2] == 1  # the invented bird
    assert m[2, 3] == 1  # the missed bird
    assert m.sum() == 5 and cm.detections == 4
    assert (cm.correct, cm.confused, cm.missed, cm.false_positives) == (1, 1, 1, 2)


def test_same_class_is_matched_before_a_higher_scoring_wrong_class():
    gt = gt_of([(A, 1, False)])
    dets = dets_of((0, A, 2, 0.9), (0, A, 1, 0.5))  # the dog scores higher, but the cat detection is right
    m = cm_of(dets, gt).matrix
    assert m[0, 0] == 1 and m[3, 1] == 1 and m[0, 1] == 0


def test_same_class_follows_the_voc_rule_and_confusions_are_greedy_by_score():
    shifted = [14, 10, 54, 50]  # IoU with A ~0.82
    gt = gt_of([(A, 1, False), (shifted, 1, False)])
    # The second detection's best object is A (tie, first in annotation order), already taken: a duplicate, as
    # in the VOC metric; it does not fall back onto the other cat.
    cm = cm_of(dets_of((0, [12, 10, 52, 50], 1, 0.5), (0, A, 1, 0.9)), gt)
    assert (cm.correct, cm.missed, cm.false_positives) == (1, 1, 1)
    # Wrong-class detections: the higher score takes the object of highest IoU, the other one the next free one.
    gt = gt_of([(A, 1, False), (shifted, 1, False)])
    cm = cm_of(dets_of((0, [13, 10, 53, 50], 2, 0.4), (0, A, 2, 0.9)), gt)
    assert cm.matrix[0, 1] == 2 and cm.missed == 0 and cm.false_positives == 0


def test_difficult_objects_are_neither_missed_nor_matched():
    gt = gt_of([(A, 1, True), (B, 2, False)])
    dets = dets_of((0, A, 1, 0.9), (0, A, 1, 0.8), (0, B, 2, 0.7))  # two on the difficult cat: ignored
    cm = cm_of(dets, gt)
    np.testing.assert_array_equal(cm.matrix, np.diag([0, 1, 0, 0]))
    assert cm.ignored == 2 and cm.detections == 3
    # A detection of another class on a difficult object is still a false positive (as in the VOC metric).
    cm = cm_of(dets_of((0, A, 3, 0.9)), gt)
    assert cm.matrix[3, 2] == 1 and cm.missed == 1


def test_images_are_kept_apart_and_empty_input_is_fine():
    gt = gt_of([(A, 1, False)], [])
    cm = cm_of(dets_of((1, A, 1, 0.9)), gt)  # the right box in the wrong image
    assert cm.matrix[0, 3] == 1 and cm.matrix[3, 0] == 1
    cm = cm_of(DetectionArrays.empty(), gt_of([], []))
    assert cm.matrix.sum() == 0 and cm.to_dict()["labels"] == [*NAMES, "background"]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_diagonal_equals_voc_true_positives_and_counts_add_up(seed):
    """Random scenes: the diagonal is the VOC matching's TP count at the score threshold; every non-difficult
    object is counted once (row sums) and every kept, non-ignored detection once (column sums)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(3):
        k = int(rng.integers(0, 5))
        xy = rng.uniform(1, 80, (k, 2))
        wh = rng.uniform(10, 40, (k, 2))
        images.append([([*xy[i], *(xy[i] + wh[i])], int(rng.integers(1, 4)), bool(rng.random() < 0.2))
                       for i in range(k)])
    gt = gt_of(*images)
    n = int(rng.integers(0, 12))
    img = rng.integers(0, 3, n)
    dets = []
    for i in range(n):
        objs = images[img[i]]
        if objs and rng.random() < 0.7:  # near an object
            box = np.array(objs[int(rng.integers(0, len(objs)))][0]) + rng.normal(0, 4, 4)
        else:
            xy = rng.uniform(1, 80, 2)
            box = np.r_[xy, xy + rng.uniform(10, 40, 2)]
        dets.append((int(img[i]), box.tolist(), int(rng.integers(1, 4)), float(rng.choice([0.3, 0.5, 0.9]))))
    arrays = dets_of(*dets)
    cm = cm_of(arrays, gt, score=0.4)
    keep = arrays.scores >= 0.4
    sub = DetectionArrays(arrays.image_index[keep], arrays.class_index[keep], arrays.scores[keep], arrays.boxes[keep])
    voc = match_detections(sub.image_index, sub.class_index, sub.scores, sub.boxes, gt)
    assert cm.correct == int(voc.tp.sum())
    m = cm.matrix
    np.testing.assert_array_equal(m[:3].sum(axis=1), gt.npos())
    kept = np.bincount(sub.class_index, minlength=3)
    assert (m[:, :3].sum(axis=0) <= kept).all() and m[:, :3].sum() + cm.ignored == len(sub)
    assert m[3, 3] == 0


def test_eval_out_writes_the_confusion_matrix(tmp_path):
    data = tiny_prepared(tmp_path)
    dets = [{"image_id": "img0", "label": "cat", "score": 0.9, "box": [5, 5, 40, 30]},
            {"image_id": "img1", "label": "cat", "score": 0.8, "box": [5, 5, 40, 30]},  # a dog called cat
            {"image_id": "img1", "label": "dog", "score": 0.1, "box": [5, 5, 40, 30]}]  # below 0.25
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps(dets))
    out = tmp_path / "plots"
    r = ssd("eval", "--data", data, "--detections", det_file, "--out", out, "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    picture = out / "confusion_matrix.png"
    with Image.open(picture) as im:
        assert im.format == "PNG" and im.size[0] > 300
    cm = json.loads((tmp_path / "r.json").read_text())["confusion"]
    assert cm["labels"] == [*CLASSES, "background"]
    assert cm["score_threshold"] == 0.25 and cm["iou_threshold"] == 0.5
    assert cm["matrix"] == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert "confusion matrix" in r.stdout.lower() and "score >= 0.25" in r.stdout
    # Refused before any work when the picture exists (no --force).
    for p in out.glob("pr_*.png"):
        p.unlink()
    r = ssd("eval", "--data", data, "--detections", det_file, "--out", out)
    assert r.exit_code == 2 and "confusion_matrix.png" in r.stderr
    # --matrix-conf moves the threshold (the dog at 0.1 now counts, same class first); out of range is refused.
    r = ssd("eval", "--data", data, "--detections", det_file, "--json", tmp_path / "r2.json", "--matrix-conf", 0.05)
    assert r.exit_code == 0, r.output
    cm = json.loads((tmp_path / "r2.json").read_text())["confusion"]
    assert cm["score_threshold"] == 0.05 and cm["matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]  # cat on the dog: FP
    r = ssd("eval", "--data", data, "--detections", det_file, "--matrix-conf", 1.5)
    assert r.exit_code == 2 and "--matrix-conf" in r.stderr


@pytest.mark.parametrize("score", [0.0, 1.0])
def test_thresholds_at_the_ends(score):
    gt = gt_of([(A, 1, False)])
    cm = cm_of(dets_of((0, A, 1, 1.0), (0, B, 1, 0.0)), gt, score=score)
    assert cm.detections == (2 if score == 0.0 else 1)
    assert cm.correct == 1 and cm.false_positives == (1 if score == 0.0 else 0)


def test_evaluate_detections_computes_the_matrix_only_when_asked():
    records = [ImageRecord("a", "", 120, 120, np.array([A], np.float32), np.array([1]), np.array([False]))]
    dets = [{"image_id": "a", "label": "dog", "score": 0.9, "box": A}]
    assert evaluate_detections(dets, records, NAMES).to_dict()["confusion"] is None
    report = evaluate_detections(dets, records, NAMES, confusion_score=0.5)
    assert report.confusion.matrix[0, 1] == 1 and report.to_dict()["confusion"]["confused"] == 1
