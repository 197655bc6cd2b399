"""Detection confusion matrix: which class each object was detected as, what was missed, what was invented.

Layout: ``matrix[true, predicted]`` of shape ``[C+1, C+1]`` (int64). Rows are the ground-truth classes, columns
the predicted classes; index ``C`` (the last) is *background*:

* ``matrix[t, p]`` (``t, p < C``): objects of class ``t`` matched by a detection of class ``p`` (the diagonal:
  correct detections; off the diagonal: the right place, the wrong class);
* ``matrix[t, C]``: objects of class ``t`` that no detection matched (missed);
* ``matrix[C, p]``: detections of class ``p`` that matched no object (false positives: background, or a
  duplicate of an object already matched); ``matrix[C, C]`` is always 0.

Matching, per image, only for detections with ``score >= score_threshold``:

1. Same class first, by the VOC rule (:func:`ssdcli.metrics.voc.match_detections`): each detection looks at
   the object *of its class* with the highest IoU (ties: annotation order); at IoU ``>= iou_threshold`` the
   highest-scoring such detection (ties: input order) matches it, later ones are duplicates; when that object is
   difficult (VOC) / crowd (COCO) the detection is ignored (counted in ``ignored``, in no cell). So the diagonal
   is exactly the VOC true-positive count of the detections at or above the score threshold.
2. The detections still unmatched (not ignored) then try objects *of another class* still unmatched and not
   difficult, greedy by score: in descending score order each takes the one of highest IoU ``>= iou_threshold``
   (ties: annotation order). These are the class confusions.
3. What is left: unmatched detections are false positives (background row), unmatched non-difficult objects
   are missed (background column). Difficult objects are never counted as missed.

IoU is the devkit's (+1 pixel areas on VOC pixel boxes, :func:`ssdcli.metrics.voc.voc_iou_pairs`), so "IoU 0.5"
means what it means in ``voc07``/``voc12``. Only overlapping (detection, object) pairs of the same image are ever
formed (no ``N x G`` matrix); the greedy pass loops over score *ranks* (at most ``max-det`` per image), each step
vectorised over all images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ssdcli.detections_io import DetectionArrays
from ssdcli.errors import SsdError
from ssdcli.metrics.voc import GroundTruth, voc_iou_pairs

__all__ = ["DEFAULT_SCORE_THRESHOLD", "ConfusionMatrix", "confusion_matrix"]

DEFAULT_SCORE_THRESHOLD = 0.25  # the usual operating point of confusion matrices (YOLO trainers use 0.25 too)


@dataclass
class ConfusionMatrix:
    """``matrix[true, predicted]`` with background last (see the module docstring)."""

    matrix: np.ndarray  # int64 [C+1, C+1]
    class_names: list[str]
    iou_threshold: float
    score_threshold: float
    detections: int  # detections at or above the score threshold
    ignored: int  # of those, left out because they overlap a difficult / crowd object of their class

    @property
    def labels(self) -> list[str]:
        """Row / column names: the classes, then ``"background"``."""
        return [*self.class_names, "background"]

    @property
    def correct(self) -> int:
        return int(np.trace(self.matrix))

    @property
    def confused(self) -> int:
        """Objects found at the right place with the wrong class."""
        c = len(self.class_names)
        return int(self.matrix[:c, :c].sum()) - self.correct

    @property
    def missed(self) -> int:
        return int(self.matrix[:-1, -1].sum())

    @property
    def false_positives(self) -> int:
        """Detections that matched no object (background or duplicates)."""
        return int(self.matrix[-1, :-1].sum())

    def to_dict(self) -> dict:
        return {
            "layout": "matrix[true][predicted]; last row/column = background (row: false positives, column: missed "
                      "objects); difficult/crowd objects and the detections on them are left out",
            "labels": self.labels,
            "iou_threshold": self.iou_threshold,
            "score_threshold": self.score_threshold,
            "matrix": self.matrix.tolist(),
            "detections": self.detections,
            "ignored_detections": self.ignored,
            "correct": self.correct,
            "confused": self.confused,
            "missed": self.missed,
            "false_positives": self.false_positives,
        }  # fmt: skip


def confusion_matrix(
    detections: DetectionArrays,
    gt: GroundTruth,
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
) -> ConfusionMatrix:
    """The confusion matrix of ``detections`` against ``gt`` (see the module docstring for the rules)."""
    if not 0.0 < iou_threshold <= 1.0:
        raise SsdError(f"confusion matrix: IoU threshold {iou_threshold} outside (0, 1]")
    if not 0.0 <= score_threshold <= 1.0:
        raise SsdError(f"confusion matrix: score threshold {score_threshold} outside [0, 1]")
    ncls = gt.num_classes
    keep = np.flatnonzero(np.asarray(detections.scores, np.float64) >= score_threshold)
    d_img = np.asarray(detections.image_index, np.int64)[keep]
    d_cls = np.asarray(detections.class_index, np.int64)[keep]
    d_score = np.asarray(detections.scores, np.float64)[keep]
    d_box = np.asarray(detections.boxes, np.float64).reshape(-1, 4)[keep]
    n = len(keep)
    # Rank of each detection inside its image: score descending, input order on ties.
    order = np.lexsort((np.arange(n), -d_score, d_img))
    rank = np.empty(n, np.int64)
    if n:
        img_sorted = d_img[order]
        first = np.searchsorted(img_sorted, img_sorted, side="left")
        rank[order] = np.arange(n) - first
    pair_det, pair_gt = _same_image_pairs(d_img, gt.image_index, gt.num_images)
    iou = voc_iou_pairs(d_box[pair_det], gt.boxes[pair_gt]) if len(pair_det) else np.zeros(0)
    close = iou >= iou_threshold
    pair_det, pair_gt, iou = pair_det[close], pair_gt[close], iou[close]
    same_class = d_cls[pair_det] == gt.class_index[pair_gt]
    difficult = gt.difficult[pair_gt]

    det_match = np.full(n, -1, np.int64)
    gt_taken = np.zeros(len(gt.class_index), bool)
    ignored = _voc_same_class(pair_det[same_class], pair_gt[same_class], iou[same_class], rank, gt.difficult,
                              det_match, gt_taken)
    other = ~same_class & ~difficult & ~ignored[pair_det]
    _greedy(pair_det[other], pair_gt[other], iou[other], rank, det_match, gt_taken)
    unmatched = det_match < 0

    false_pos = unmatched & ~ignored
    missed = ~gt_taken & ~gt.difficult
    size = ncls + 1
    true = np.concatenate([gt.class_index[det_match[~unmatched]], np.full(int(false_pos.sum()), ncls),
                           gt.class_index[missed]])  # fmt: skip
    pred = np.concatenate([d_cls[~unmatched], d_cls[false_pos], np.full(int(missed.sum()), ncls)])
    matrix = np.bincount(true * size + pred, minlength=size * size).reshape(size, size).astype(np.int64)
    return ConfusionMatrix(matrix, list(class_names), float(iou_threshold), float(score_threshold), detections=n,
                           ignored=int(ignored.sum()))  # fmt: skip


def _same_image_pairs(d_img: np.ndarray, g_img: np.ndarray, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, object) pair of the same image, as index arrays (no per-image loop)."""
    g_sort = np.argsort(g_img, kind="stable")
    g_count = np.bincount(g_img, minlength=num_images)
    g_start = np.cumsum(g_count) - g_count
    per_det = g_count[d_img] if len(d_img) else np.zeros(0, np.int64)
    total = int(per_det.sum())
    pair_det = np.repeat(np.arange(len(d_img)), per_det)
    local = np.arange(total) - np.repeat(np.cumsum(per_det) - per_det, per_det)
    pair_gt = g_sort[np.repeat(g_start[d_img], per_det) + local] if total else np.zeros(0, np.int64)
    return pair_det, pair_gt


def _voc_same_class(pair_det: np.ndarray, pair_gt: np.ndarray, iou: np.ndarray, rank: np.ndarray,
                    difficult: np.ndarray, det_match: np.ndarray, gt_taken: np.ndarray) -> np.ndarray:  # fmt: skip
    """Step 1: the VOC rule on same-class pairs (IoU already ``>=`` the threshold). Fills ``det_match`` and
    ``gt_taken``; returns the ignored detections (best object difficult) as a bool mask."""
    ignored = np.zeros(len(det_match), bool)
    if not len(pair_det):
        return ignored
    order = np.lexsort((pair_gt, -iou, pair_det))  # per detection: highest IoU first, then annotation order
    dets, first = np.unique(pair_det[order], return_index=True)
    best = pair_gt[order][first]
    ignored[dets[difficult[best]]] = True
    dets, best = dets[~difficult[best]], best[~difficult[best]]
    by_object = np.lexsort((rank[dets], best))  # per object: the highest-scoring detection first
    _, winner = np.unique(best[by_object], return_index=True)
    det_match[dets[by_object][winner]] = best[by_object][winner]
    gt_taken[best[by_object][winner]] = True
    return ignored


def _greedy(pair_det: np.ndarray, pair_gt: np.ndarray, iou: np.ndarray, rank: np.ndarray,
            det_match: np.ndarray, gt_taken: np.ndarray) -> None:  # fmt: skip
    """Step 2, greedy matching by score: in rank order, each still unmatched detection takes its still free object of
    highest IoU (ties: lower object index = annotation order). Updates ``det_match`` and ``gt_taken`` in place.

    One step per rank (each image has at most one detection of a given rank, so the detections of one step never
    compete for an object), vectorised over all images."""
    if not len(pair_det):
        return
    r = rank[pair_det]
    order = np.lexsort((pair_gt, -iou, r))
    pair_det, pair_gt, r = pair_det[order], pair_gt[order], r[order]
    _, starts = np.unique(r, return_index=True)
    ends = np.append(starts[1:], len(r))
    for s, e in zip(starts, ends):
        d, g = pair_det[s:e], pair_gt[s:e]
        free = (det_match[d] < 0) & ~gt_taken[g]
        d, g = d[free], g[free]
        if not len(d):
            continue
        _, first = np.unique(d, return_index=True)  # pairs are in IoU order: the first one of a detection is its best
        det_match[d[first]] = g[first]
        gt_taken[g[first]] = True
