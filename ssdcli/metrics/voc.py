"""PASCAL VOC detection AP exactly as the official devkit (``VOCevaldet.m`` / ``VOCap.m``), vectorised.

Protocol (per class, over the whole split):

* Detections are ranked by score, highest first. Exact ties keep the order of the input list (a stable sort,
  like Matlab's ``sort(-confidence)`` in the devkit over the results file; ``np.argsort`` in the popular
  py-faster-rcnn port is not stable).
* IoU uses the +1 pixel convention on the VOC pixel coordinates: ``iw = min(x2) - max(x1) + 1``, areas
  ``(x2 - x1 + 1) * (y2 - y1 + 1)``; pairs with ``iw <= 0`` or ``ih <= 0`` do not overlap. Arithmetic is
  float64 in the devkit's operation order, so IoUs are bit-identical to it.
* Each detection looks at the ground truth *of its class in its image* with the highest IoU (first one in
  annotation order on ties). If that IoU is ``>= iou_threshold`` (0.5): a difficult object -> the detection is
  ignored (neither TP nor FP, even when repeated); else the first such detection in rank order is a TP and
  later ones are FPs (duplicates). IoU below the threshold, or no ground truth -> FP. The best ground truth is
  fixed per detection (the devkit does not fall back to the second best), so "first come" is a
  first-occurrence problem solved with a sort (``np.unique``), with no loop over detections.
* ``npos`` = number of non-difficult objects; ``rec = tp / npos``, ``prec = tp / max(tp + fp, eps)`` on the
  cumulative counts (eps as py-faster-rcnn: a class whose first-ranked detections are all ignored gets 0
  there where the Matlab code would have NaN, which it ignores anyway).
* ``voc07``: 11-point interpolated AP, ``sum_t max(prec[rec >= t]) / 11`` with the devkit's thresholds
  ``t = 0:0.1:1`` *as Matlab's colon operator evaluates them* (``0.30000000000000004`` but exactly ``0.6``
  and ``0.7``; ``np.arange`` in py-faster-rcnn differs at 0.6 and 0.7). ``voc12``: all-points area under the
  monotone precision envelope (``VOCap.m``, VOC2010+).
* mean AP: classes without any non-difficult ground truth have no AP (reported "n/a", ``ap=None``) and are
  excluded from the mean (the devkit would produce NaN for them). Classes with ground truth but no
  detections have AP 0 and count in the mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ssdcli.errors import SsdError

__all__ = [
    "VOC07_RECALL_THRESHOLDS",
    "GroundTruth",
    "VocMatches",
    "VocClassResult",
    "VocResult",
    "voc_iou_pairs",
    "rank_detections",
    "match_detections",
    "voc_evaluate",
    "ap_voc07",
    "ap_voc12",
    "interpolated_precision",
]

# Matlab evaluates 0:0.1:1 symmetrically: a + k*d for the first half, b - (n-k)*d for the second.
VOC07_RECALL_THRESHOLDS = np.array([k * 0.1 for k in range(6)] + [1.0 - k * 0.1 for k in (4, 3, 2, 1, 0)])
_EPS = np.finfo(np.float64).eps


@dataclass
class GroundTruth:
    """All ground-truth objects of a split, flattened."""

    image_index: np.ndarray  # int64 [G]
    class_index: np.ndarray  # int64 [G], 0-based foreground class (label - 1)
    boxes: np.ndarray  # float64 [G,4], VOC pixel convention
    difficult: np.ndarray  # bool [G]
    num_images: int
    num_classes: int  # foreground classes

    @classmethod
    def from_records(cls, records: Sequence, num_classes: int) -> "GroundTruth":
        """From :class:`ssdcli.data.records.ImageRecord` s (labels 1-based)."""
        counts = np.array([len(r.labels) for r in records], dtype=np.int64)
        if counts.sum() == 0:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, bool),
                       len(records), num_classes)
        labels = np.concatenate([np.asarray(r.labels, np.int64).reshape(-1) for r in records])
        bad = (labels < 1) | (labels > num_classes)
        if bad.any():
            img = int(np.repeat(np.arange(len(records)), counts)[np.argmax(bad)])
            raise SsdError(f"image '{records[img].id}': label {int(labels[np.argmax(bad)])} outside 1..{num_classes}")
        return cls(
            image_index=np.repeat(np.arange(len(records), dtype=np.int64), counts),
            class_index=labels - 1,
            boxes=np.concatenate([np.asarray(r.boxes, np.float64).reshape(-1, 4) for r in records]),
            difficult=np.concatenate([np.asarray(r.difficult, bool).reshape(-1) for r in records]),
            num_images=len(records),
            num_classes=num_classes,
        )

    def npos(self) -> np.ndarray:
        """Non-difficult objects per class, int64 [C]."""
        return np.bincount(self.class_index[~self.difficult], minlength=self.num_classes)[: self.num_classes]


def voc_iou_pairs(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Devkit IoU of row-aligned box pairs ``det [P,4]``, ``gt [P,4]`` (VOC pixels) -> float64 ``[P]``.

    Non-overlapping pairs (``iw <= 0`` or ``ih <= 0``) get ``-inf`` (the devkit skips them).
    """
    iw = np.minimum(det[:, 2], gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0]) + 1.0
    ih = np.minimum(det[:, 3], gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1]) + 1.0
    inter = iw * ih
    ua = (det[:, 2] - det[:, 0] + 1.0) * (det[:, 3] - det[:, 1] + 1.0) + (gt[:, 2] - gt[:, 0] + 1.0) * (
        gt[:, 3] - gt[:, 1] + 1.0
    ) - inter
    ok = (iw > 0) & (ih > 0)
    out = np.full(det.shape[0], -np.inf)
    np.divide(inter, ua, out=out, where=ok)
    return out


@dataclass
class VocMatches:
    """Per-detection outcome, in rank order (class ascending, then score descending, then input position)."""

    order: np.ndarray  # int64 [N], indices into the input detections
    class_index: np.ndarray  # int64 [N]
    tp: np.ndarray  # bool [N]
    fp: np.ndarray  # bool [N]; ~tp & ~fp = ignored (best match is a difficult object)
    best_iou: np.ndarray  # float64 [N], -inf when no overlapping ground truth of the class


def rank_detections(scores: np.ndarray, class_index: np.ndarray, num_classes: int) -> np.ndarray:
    """Order ``[N]``: class ascending, score descending, ties by input position (stable; scores finite).

    Two stable passes (timsort on the scores, then an O(N) radix sort on the int16 class) beat ``np.lexsort``.
    """
    if num_classes >= 2**15:
        return np.lexsort((-scores, class_index))
    by_score = np.argsort(-scores, kind="stable")
    return by_score[np.argsort(class_index[by_score].astype(np.int16), kind="stable")]


def match_detections(
    image_index: np.ndarray,
    class_index: np.ndarray,
    scores: np.ndarray,
    boxes: np.ndarray,
    gt: GroundTruth,
    iou_threshold: float = 0.5,
) -> VocMatches:
    """Assign every detection TP / FP / ignored by the devkit rules (see module docstring); vectorised."""
    n = int(scores.shape[0])
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ncls = gt.num_classes
    # Ground truth grouped by (image, class), annotation order kept inside a group (devkit argmax tie rule).
    g_group = gt.image_index * ncls + gt.class_index
    g_sort = np.argsort(g_group, kind="stable")
    n_groups = gt.num_images * ncls
    g_count = np.bincount(g_group, minlength=n_groups)
    g_start = np.cumsum(g_count) - g_count
    d_group = image_index * ncls + class_index
    per_det = g_count[d_group] if n else np.zeros(0, np.int64)
    # All (detection, same-image same-class gt) pairs, grouped by detection.
    total = int(per_det.sum())
    pair_det = np.repeat(np.arange(n), per_det)
    pair_first = np.cumsum(per_det) - per_det
    local = np.arange(total) - np.repeat(pair_first, per_det)
    pair_gt = g_sort[np.repeat(g_start[d_group], per_det) + local] if total else np.zeros(0, np.int64)
    iou = voc_iou_pairs(boxes[pair_det], gt.boxes[pair_gt])

    best_iou = np.full(n, -np.inf)
    best_gt = np.full(n, -1, dtype=np.int64)
    has = per_det > 0
    if total:
        starts = pair_first[has]
        seg_max = np.maximum.reduceat(iou, starts)
        is_max = iou == np.repeat(seg_max, per_det[has])
        first_local = np.minimum.reduceat(np.where(is_max, local, total), starts)
        best_iou[has] = seg_max
        best_gt[has] = pair_gt[starts + first_local]

    order = rank_detections(np.asarray(scores, np.float64), class_index, ncls)
    matched = best_iou[order] >= iou_threshold
    gt_r = best_gt[order]
    gt_difficult = gt.difficult[np.maximum(gt_r, 0)] if len(gt.difficult) else np.zeros(n, bool)
    cand = matched & ~gt_difficult
    cand_pos = np.flatnonzero(cand)
    _, first = np.unique(gt_r[cand_pos], return_index=True)  # first detection (in rank order) of each object
    tp = np.zeros(n, bool)
    tp[cand_pos[first]] = True
    fp = ~matched | (cand & ~tp)
    return VocMatches(order=order, class_index=class_index[order], tp=tp, fp=fp, best_iou=best_iou[order])


def ap_voc07(recall: np.ndarray, precision: np.ndarray) -> float:
    """11-point interpolated AP of one class (``VOCevaldet.m`` of VOC2007), for reference/plots."""
    ap = 0.0
    for t in VOC07_RECALL_THRESHOLDS:
        sel = precision[recall >= t]
        ap = ap + (float(sel.max()) if sel.size else 0.0) / 11
    return ap


def ap_voc12(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-points AP of one class (``VOCap.m``): area under the monotone precision envelope."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


@dataclass
class VocClassResult:
    name: str
    ap: float | None  # None ("n/a") when the class has no non-difficult ground truth
    npos: int  # non-difficult objects
    ndifficult: int
    ndet: int  # detections of the class (TP + FP + ignored)
    tp: int
    fp: int
    recall: np.ndarray = field(repr=False)  # float64 [ndet], rank order (NaN when npos == 0)
    precision: np.ndarray = field(repr=False)  # float64 [ndet]

    @property
    def ignored(self) -> int:
        return self.ndet - self.tp - self.fp


@dataclass
class VocResult:
    metric: str  # "voc07" or "voc12"
    iou_threshold: float
    classes: list[VocClassResult]

    @property
    def map(self) -> float:
        """Mean AP over classes with ground truth; NaN when no class has any."""
        aps = [c.ap for c in self.classes if c.ap is not None]
        return float(np.mean(aps)) if aps else math.nan

    def to_dict(self, curve_points: int = 101) -> dict:
        """JSON-ready summary. PR curves are sampled as the precision envelope at ``curve_points`` recalls."""
        grid = np.linspace(0.0, 1.0, curve_points)
        per_class = {}
        for c in self.classes:
            curve = interpolated_precision(c.recall, c.precision, grid).tolist() if c.npos else None
            per_class[c.name] = {
                "ap": c.ap, "npos": c.npos, "difficult": c.ndifficult, "detections": c.ndet, "tp": c.tp,
                "fp": c.fp, "ignored": c.ignored,
                "max_recall": float(c.recall[-1]) if c.ndet and c.npos else None,
                "precision_at_recall": curve,
            }
        m = self.map
        return {"metric": self.metric, "iou_threshold": self.iou_threshold, "map": None if math.isnan(m) else m,
                "classes_in_mean": sum(c.ap is not None for c in self.classes), "recall_grid_points": curve_points,
                "per_class": per_class}


def interpolated_precision(recall: np.ndarray, precision: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Monotone precision envelope ``max(precision[recall >= r])`` at each recall ``r`` of ``grid`` (0 if none)."""
    if recall.size == 0:
        return np.zeros(len(grid))
    env = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, grid, side="left")
    return np.where(idx < recall.size, env[np.minimum(idx, recall.size - 1)], 0.0)


def voc_evaluate(
    detections,
    gt: GroundTruth,
    class_names: Sequence[str],
    metrics: Sequence[str] = ("voc07",),
    iou_threshold: float = 0.5,
) -> dict[str, VocResult]:
    """VOC AP for each metric in ``metrics`` (``voc07``/``voc12``) from one matching pass.

    ``detections``: :class:`ssdcli.detections_io.DetectionArrays` (image/class indices, scores, VOC pixel boxes).
    """
    unknown = [x for x in metrics if x not in ("voc07", "voc12")]
    if unknown:
        raise SsdError(f"unknown VOC metric(s) {', '.join(unknown)} (use voc07 or voc12)")
    ncls = gt.num_classes
    m = match_detections(detections.image_index, detections.class_index, detections.scores, detections.boxes,
                         gt, iou_threshold)
    cls = m.class_index
    ndet = np.bincount(cls, minlength=ncls)
    seg_end = np.cumsum(ndet)
    seg_start = seg_end - ndet
    ctp = np.cumsum(m.tp)
    cfp = np.cumsum(m.fp)
    base_tp = np.concatenate(([0], ctp))[seg_start]
    base_fp = np.concatenate(([0], cfp))[seg_start]
    tp_cum = ctp - base_tp[cls]
    fp_cum = cfp - base_fp[cls]
    npos = gt.npos()
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp_cum / npos[cls].astype(np.float64)
    prec = tp_cum / np.maximum((tp_cum + fp_cum).astype(np.float64), _EPS)

    # Only TP positions matter for AP: recall rises only there, and precision elsewhere never exceeds the
    # precision of the last TP before it, so the envelope at a TP = max precision over later TPs.
    tp_pos = np.flatnonzero(m.tp)
    tp_cls, tp_rec, tp_prec = cls[tp_pos], rec[tp_pos], prec[tp_pos]
    env = _segment_suffix_max(tp_prec, tp_cls)
    ntp = np.bincount(tp_cls, minlength=ncls)
    tp_end = np.cumsum(ntp)
    aps: dict[str, np.ndarray] = {}
    if "voc07" in metrics:
        ap = np.zeros(ncls)
        for t in VOC07_RECALL_THRESHOLDS:  # 11 thresholds, vectorised over classes
            n_ge = np.bincount(tp_cls, weights=(tp_rec >= t), minlength=ncls).astype(np.int64)
            first = np.minimum(tp_end - n_ge, max(len(env) - 1, 0))
            p = np.where(n_ge > 0, env[first] if len(env) else 0.0, 0.0)
            ap = ap + p / 11
        aps["voc07"] = ap
    if "voc12" in metrics:
        prev = np.concatenate(([0.0], tp_rec[:-1]))
        is_first = np.ones(len(tp_pos), bool)
        is_first[1:] = tp_cls[1:] != tp_cls[:-1]
        prev[is_first] = 0.0
        aps["voc12"] = np.bincount(tp_cls, weights=(tp_rec - prev) * env, minlength=ncls)

    counts_difficult = np.bincount(gt.class_index[gt.difficult], minlength=ncls)
    ntp_all = np.bincount(cls[m.tp], minlength=ncls)
    nfp_all = np.bincount(cls[m.fp], minlength=ncls)
    out: dict[str, VocResult] = {}
    for metric, ap_arr in aps.items():
        classes = [
            VocClassResult(
                name=class_names[c], ap=float(ap_arr[c]) if npos[c] > 0 else None, npos=int(npos[c]),
                ndifficult=int(counts_difficult[c]), ndet=int(ndet[c]), tp=int(ntp_all[c]), fp=int(nfp_all[c]),
                recall=rec[seg_start[c]: seg_end[c]], precision=prec[seg_start[c]: seg_end[c]],
            )
            for c in range(ncls)
        ]
        out[metric] = VocResult(metric=metric, iou_threshold=iou_threshold, classes=classes)
    return out


def _segment_suffix_max(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Suffix maximum of ``values`` restarted at each segment (``segment`` sorted ascending); exact.

    Values are replaced by their integer rank, segments are made to dominate by an integer offset, and one
    reversed ``np.maximum.accumulate`` runs over the whole array.
    """
    if values.size == 0:
        return values.copy()
    uniq, rank = np.unique(values, return_inverse=True)
    seg = segment.max() - segment  # reversed array: later (lower class) segments get larger offsets
    key = seg.astype(np.int64) * len(uniq) + rank.reshape(-1)
    acc = np.maximum.accumulate(key[::-1])[::-1]
    return uniq[acc - seg * len(uniq)]
