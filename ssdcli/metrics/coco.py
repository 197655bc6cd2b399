"""COCO box AP (AP@[.5:.95], AP50, AP75, APs/m/l and the six AR numbers) computed by pycocotools.

The ground truth and detections are handed to pycocotools in memory (no temporary JSON files).

Box conversion, VOC pixel -> COCO ``[x, y, w, h]`` in continuous coordinates (see :mod:`ssdcli.boxes`):
``x = xmin - 1``, ``y = ymin - 1``, ``w = xmax - xmin + 1``, ``h = ymax - ymin + 1``. pycocotools' IoU has
no +1 term, so on integer boxes it equals the VOC devkit's +1 IoU; ``area = w * h`` for both ground truth
and detections (the COCO small/medium/large ranges, 32² and 96², apply to that area).

Difficult objects: ``iscrowd = 1`` (pycocotools derives its ignore flag from ``iscrowd`` only). They are
never positives and a detection matched to one is ignored, any number of times. Caveat of pycocotools' crowd
semantics: the IoU with a crowd region is intersection over the *detection's* area, so a detection lying
inside a difficult box is ignored even if much smaller. A detection is matched to a regular object before a
difficult one. Other COCO rules apply unchanged: at most 100 detections per image (``maxDets``; SSD keeps
200, so the lowest-scored are cut), 101-point interpolated precision, 10 IoU thresholds.

Classes without any (non-difficult) ground truth get -1 from pycocotools and are left out of every mean,
as for the VOC metrics; here they are reported as ``None``.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ssdcli.metrics.voc import GroundTruth

__all__ = ["COCO_STAT_NAMES", "CocoResult", "voc_to_coco_xywh", "coco_evaluate"]

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def voc_to_coco_xywh(boxes: np.ndarray) -> np.ndarray:
    """VOC pixel boxes ``[N,4]`` (xmin, ymin, xmax, ymax) -> COCO ``[N,4]`` (x, y, w, h), float64."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0] - 1.0, b[:, 1] - 1.0, b[:, 2] - b[:, 0] + 1.0, b[:, 3] - b[:, 1] + 1.0], axis=1)


@dataclass
class CocoResult:
    stats: dict[str, float | None]  # COCO_STAT_NAMES -> value (None where pycocotools gives -1)
    class_names: list[str]
    per_class_ap: list[float | None]  # AP@[.5:.95] per class, None without ground truth
    per_class_ap50: list[float | None]
    recall_thresholds: np.ndarray = field(repr=False)  # [101]
    precision50: np.ndarray = field(repr=False)  # [C,101] interpolated precision at IoU .5 (all areas, 100 dets); NaN = n/a
    metric: str = "coco"

    @property
    def map(self) -> float:
        v = self.stats["AP"]
        return math.nan if v is None else v

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "stats": dict(self.stats),
            "per_class": {
                n: {"ap": a, "ap50": a50} for n, a, a50 in zip(self.class_names, self.per_class_ap, self.per_class_ap50)
            },
            "map": self.stats["AP"],
        }


def _coco_object(dataset: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _annotations(image_index, class_index, boxes, extra: dict[str, np.ndarray]) -> list[dict]:
    xywh = voc_to_coco_xywh(boxes)
    area = xywh[:, 2] * xywh[:, 3]
    cols = {"image_id": image_index.tolist(), "category_id": (class_index + 1).tolist(),
            "bbox": xywh.tolist(), "area": area.tolist(), **{k: v.tolist() for k, v in extra.items()}}
    keys = list(cols)
    return [dict(zip(keys, vals), id=i + 1) for i, vals in enumerate(zip(*cols.values()))]


def coco_evaluate(detections, gt: GroundTruth, class_names: Sequence[str]) -> CocoResult:
    """COCO metrics of ``detections`` (:class:`ssdcli.detections_io.DetectionArrays`) against ``gt``."""
    from pycocotools.cocoeval import COCOeval

    images = [{"id": i} for i in range(gt.num_images)]
    categories = [{"id": c + 1, "name": n} for c, n in enumerate(class_names)]
    gt_anns = _annotations(gt.image_index, gt.class_index, gt.boxes,
                           {"iscrowd": gt.difficult.astype(np.int64), "ignore": gt.difficult.astype(np.int64)})
    dt_anns = _annotations(detections.image_index, detections.class_index, detections.boxes,
                           {"score": np.asarray(detections.scores, np.float64), "iscrowd": np.zeros(len(detections), np.int64)})
    coco_gt = _coco_object({"images": images, "categories": categories, "annotations": gt_anns})
    coco_dt = _coco_object({"images": images, "categories": categories, "annotations": dt_anns})
    ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {k: (None if v < 0 else float(v)) for k, v in zip(COCO_STAT_NAMES, ev.stats)}
    prec = ev.eval["precision"]  # [T,R,K,A,M], -1 = no ground truth
    all_area, max100 = 0, len(ev.params.maxDets) - 1
    p = prec[:, :, :, all_area, max100]  # [T,R,K]
    per_class, per_class50 = [], []
    for k in range(len(class_names)):  # result assembly, C entries
        pk = p[:, :, k]
        valid = pk[pk > -1]
        per_class.append(float(valid.mean()) if valid.size else None)
        v50 = pk[0][pk[0] > -1]
        per_class50.append(float(v50.mean()) if v50.size else None)
    p50 = p[0].T.astype(np.float64)  # [K,R]
    p50 = np.where(p50 > -1, p50, np.nan)
    return CocoResult(stats=stats, class_names=list(class_names), per_class_ap=per_class, per_class_ap50=per_class50,
                      recall_thresholds=np.asarray(ev.params.recThrs, np.float64), precision50=p50)
