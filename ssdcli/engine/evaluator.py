"""Evaluation engine: run a :class:`ssdcli.Detector` over a split and score detections (VOC07/VOC12/COCO).

UI-free: used by ``ssd eval``, the trainer's periodic validation and ``ssd benchmark --accuracy``. Progress goes to an
optional :class:`ssdcli.reporting.Reporter` (task ``"eval"``: one unit per image).

Detections travel as the detection JSON dicts of :mod:`ssdcli.detections_io` (``Prediction.to_records``:
scores rounded to 6 decimals, boxes to 2), so ``ssd detect --json`` + ``ssd eval --detections`` reproduce
``ssd eval --weights`` exactly.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ssdcli.data.images import read_image, resize_square
from ssdcli.data.records import ImageRecord
from ssdcli.detections_io import DetectionCheck, detections_to_arrays
from ssdcli.errors import SsdError, first_line
from ssdcli.inference import Detector
from ssdcli.metrics.coco import coco_evaluate
from ssdcli.metrics.confusion import ConfusionMatrix, confusion_matrix
from ssdcli.metrics.confusion_plot import plot_confusion_matrix
from ssdcli.metrics.plots import PRCurve, plot_pr_curves
from ssdcli.metrics.voc import GroundTruth, voc_evaluate
from ssdcli.postprocess import PostprocessConfig
from ssdcli.reporting import Reporter, as_reporter

__all__ = [
    "METRICS",
    "METRIC_PROTOCOLS",
    "EvalReport",
    "parse_metrics",
    "check_class_names",
    "load_detector",
    "detector_settings",
    "run_detector",
    "evaluate_detections",
    "evaluate_detector",
    "write_pr_plots",
    "write_confusion_plot",
]

METRICS = ("voc07", "voc12", "coco")
METRIC_PROTOCOLS = {
    "voc07": "PASCAL VOC2007 devkit: 11-point interpolated AP, IoU >= 0.5 (+1 pixel areas), difficult objects "
             "ignored, duplicates are false positives",
    "voc12": "PASCAL VOC2010+ devkit: all-points AP (area under the monotone precision envelope), IoU >= 0.5 "
             "(+1 pixel areas), difficult objects ignored, duplicates are false positives",
    "coco": "COCO (pycocotools): AP averaged over IoU 0.50:0.05:0.95, 101 recall points, max 100 detections "
            "per image, difficult objects as crowd/ignore, box w = xmax - xmin + 1",
}


@dataclass
class EvalReport:
    """Results of one evaluation. ``results[metric]`` is a ``VocResult`` or ``CocoResult``."""

    results: dict[str, object]
    primary: str
    class_names: list[str]
    num_images: int
    num_objects: int
    detection_check: DetectionCheck
    class_counts: dict[str, list[int]] = field(default_factory=dict)  # "gt" (non-difficult), "difficult", "detections" per class
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # detector settings (filled by evaluate_detector)
    confusion: ConfusionMatrix | None = None  # at IoU 0.5 and a stated score threshold

    @property
    def map(self) -> float:
        """The primary metric's mean AP (VOC mAP or COCO AP@[.5:.95]); NaN if no class has ground truth."""
        return self.results[self.primary].map  # type: ignore[attr-defined]

    def to_dict(self) -> dict:
        m = self.map
        return {
            "primary": self.primary,
            "map": None if math.isnan(m) else m,
            "protocols": {k: METRIC_PROTOCOLS[k] for k in self.results},
            "classes": list(self.class_names),
            "images": self.num_images,
            "objects": self.num_objects,
            "detections": self.detection_check.to_dict(),
            "class_counts": {k: list(v) for k, v in self.class_counts.items()},
            "settings": dict(self.settings),
            "warnings": list(self.warnings),
            "metrics": {k: r.to_dict() for k, r in self.results.items()},  # type: ignore[attr-defined]
            "confusion": None if self.confusion is None else self.confusion.to_dict(),
        }


def parse_metrics(spec: str | Sequence[str], option: str = "--metric") -> tuple[str, ...]:
    """``"voc07,coco"`` or ``["voc07", "coco"]`` -> validated, de-duplicated tuple (first one = primary)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = tuple(dict.fromkeys(s.strip().lower() for s in items if s.strip()))
    bad = [m for m in out if m not in METRICS]
    if bad or not out:
        raise SsdError(f"{option} {','.join(bad) or repr(spec)}: unknown metric (choose from {', '.join(METRICS)})")
    return out


def check_class_names(model_names: Sequence[str], dataset_names: Sequence[str], model_source: str, data_source: str) -> None:
    """Detections are matched to classes by name, so the same names in any order are fine; else SsdError."""
    if sorted(model_names) != sorted(dataset_names):
        raise SsdError(
            f"{model_source}: model classes [{', '.join(model_names)}] do not match the classes of {data_source} "
            f"[{', '.join(dataset_names)}]"
        )


def load_detector(weights: str | os.PathLike, device: torch.device | str, postprocess: PostprocessConfig,
                  flip_test: bool = False, test_scales: Sequence[float] | None = None) -> Detector:
    """``Detector.from_checkpoint`` for ``.pth`` checkpoints and ``.onnx`` models, missing ONNX support -> SsdError."""
    try:
        return Detector.from_checkpoint(weights, device=device, postprocess=postprocess, flip_test=flip_test,
                                        test_scales=test_scales)
    except ImportError as e:  # onnxruntime missing or broken
        raise SsdError(f"{weights}: ONNX Runtime is not usable here ({first_line(e)})") from None


def detector_settings(detector: Detector) -> dict:
    cfg, pp = detector.config, detector.postprocess
    return {
        "arch": cfg.arch, "image_size": cfg.image_size, "score_threshold": pp.score_threshold,
        "nms_threshold": pp.nms_threshold, "top_k": pp.top_k, "pre_nms_top_k": pp.pre_nms_top_k,
        "device": str(getattr(detector.backend, "device", "")), "backend": type(detector.backend).__name__,
        "flip_test": bool(getattr(detector.backend, "flip_test", False)),
        "test_scales": list(getattr(detector.backend, "test_scales", None) or []),
    }


class _SplitImages(Dataset):
    """Decodes and warps one image per item (in DataLoader workers): ``(uint8 [3,S,S], width, height, error)``."""

    def __init__(self, records: Sequence[ImageRecord], size: int) -> None:
        self.paths = [r.path for r in records]
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, int, str | None]:
        try:
            im = read_image(self.paths[i])
        except SsdError as e:  # re-raised in the main process as a one-line error
            return None, 0, 0, str(e)
        return resize_square(im, self.size), int(im.shape[2]), int(im.shape[1]), None


def _collate(items: list) -> list:
    return items


def run_detector(
    detector: Detector,
    records: Sequence[ImageRecord],
    batch_size: int = 8,
    workers: int = 0,
    reporter: Reporter | None = None,
) -> list[dict]:
    """Batched inference over a split -> detection dicts (``Prediction.to_records``) in split order.

    Images are decoded and resized to the model input in ``workers`` DataLoader processes (0: in this process),
    with the same ``resize_square`` warp as ``Detector.prepare``; :meth:`Detector.detect_resized` normalises,
    detects and maps the boxes back with the decoded size.
    """
    if batch_size < 1:
        raise SsdError(f"--batch {batch_size}: must be at least 1")
    if workers < 0:
        raise SsdError(f"--workers {workers}: must be 0 or more")
    device = getattr(detector.backend, "device", torch.device("cpu"))
    loader = DataLoader(
        _SplitImages(records, detector.config.image_size), batch_size=batch_size, shuffle=False,
        num_workers=workers, collate_fn=_collate, pin_memory=getattr(device, "type", "cpu") == "cuda",
    )
    out: list[dict] = []
    done = 0
    reporter = as_reporter(reporter)
    reporter.start("eval", len(records), unit="img")
    try:
        for items in loader:
            for im, _, _, err in items:
                if err is not None:
                    raise SsdError(err)
            preds = detector.detect_resized(torch.stack([it[0] for it in items]), [(w, h) for _, w, h, _ in items])
            for pred, rec in zip(preds, records[done : done + len(items)]):
                out.extend(pred.to_records(rec.id))
            done += len(items)
            reporter.advance("eval", len(items))
    finally:
        reporter.end("eval")
    return out


def evaluate_detections(
    detections: Sequence[dict],
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    metrics: Sequence[str] = ("voc07",),
    *,
    source: str = "detections",
    confusion_score: float | None = None,
) -> EvalReport:
    """Score detection dicts against a split's ground truth.

    ``class_names``: the dataset's foreground names (labels are 1-based indices into it). ``metrics``: any of
    ``voc07``, ``voc12``, ``coco``; the first is primary. ``source`` names the detections in messages.
    ``confusion_score``: also compute the confusion matrix (:mod:`ssdcli.metrics.confusion`, IoU 0.5) at this
    score threshold (``ssd eval``: ``--matrix-conf``, 0.25); None: none (``report.confusion`` is None).
    """
    metrics = parse_metrics(metrics)
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i, k in Counter(ids).items() if k > 1)
        raise SsdError(f"split: image id '{dup}' appears more than once")
    arrays, check = detections_to_arrays(detections, ids, class_names, source)
    gt = GroundTruth.from_records(records, len(class_names))
    results: dict[str, object] = {}
    voc = [m for m in metrics if m.startswith("voc")]
    if voc:
        results.update(voc_evaluate(arrays, gt, class_names, voc))
    if "coco" in metrics:
        results["coco"] = coco_evaluate(arrays, gt, class_names)
    warnings = check.warnings(source)
    ncls = len(class_names)
    counts = {
        "gt": gt.npos().tolist(),
        "difficult": np.bincount(gt.class_index[gt.difficult], minlength=ncls).tolist(),
        "detections": np.bincount(arrays.class_index, minlength=ncls).tolist(),
    }
    no_gt = [n for n, k in zip(class_names, counts["gt"]) if k == 0]
    if no_gt:
        warnings.append(f"{len(no_gt)} classes have no (non-difficult) ground truth and are left out of the mean: "
                        f"{', '.join(no_gt[:5])}{' ...' if len(no_gt) > 5 else ''}")
    confusion = None if confusion_score is None else confusion_matrix(arrays, gt, class_names, 0.5, confusion_score)
    return EvalReport(
        results={m: results[m] for m in metrics}, primary=metrics[0], class_names=list(class_names),
        num_images=len(records), num_objects=int(len(gt.class_index)), detection_check=check, class_counts=counts,
        warnings=warnings, confusion=confusion,
    )


def evaluate_detector(
    detector: Detector,
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    metrics: Sequence[str] = ("voc07",),
    batch_size: int = 8,
    workers: int = 0,
    reporter: Reporter | None = None,
) -> EvalReport:
    """Run ``detector`` on ``records`` and score it (the detector's classes must be ``class_names``, any order)."""
    metrics = parse_metrics(metrics)
    check_class_names(detector.class_names, class_names, "model", "the dataset")
    dets = run_detector(detector, records, batch_size=batch_size, workers=workers, reporter=reporter)
    report = evaluate_detections(dets, records, class_names, metrics, source="model detections")
    report.settings = detector_settings(detector)
    return report


def write_pr_plots(report: EvalReport, out_dir: str | os.PathLike) -> list[Path]:
    """One PNG per metric with every class's precision-recall curve: ``pr_<metric>.png`` in ``out_dir``.

    VOC: the raw ranked-detection curve (the same curve for voc07 and voc12, the legend shows that metric's AP).
    COCO: the 101-point interpolated precision at IoU 0.50 (all areas, 100 detections per image).
    """

    written = []
    for name, res in report.results.items():
        if name == "coco":
            curves = [PRCurve(n, res.recall_thresholds, res.precision50[k], res.per_class_ap50[k])  # type: ignore[attr-defined]
                      for k, n in enumerate(report.class_names)]
            title = "COCO: interpolated precision at IoU 0.50 (legend: AP50)"
        else:
            curves = [PRCurve(c.name, c.recall, c.precision, c.ap) for c in res.classes]  # type: ignore[attr-defined]
            title = f"{name}: precision-recall per class (mAP {100 * res.map:.2f})"  # type: ignore[attr-defined]
        path = Path(out_dir) / f"pr_{name}.png"
        plot_pr_curves(path, curves, title)
        written.append(path)
    return written


def write_confusion_plot(report: EvalReport, out_dir: str | os.PathLike) -> Path | None:
    """``confusion_matrix.png`` in ``out_dir`` (None when the report has no confusion matrix)."""
    if report.confusion is None:
        return None
    path = Path(out_dir) / "confusion_matrix.png"
    plot_confusion_matrix(path, report.confusion, f"Confusion matrix ({len(report.class_names)} classes, "
                                                  f"{report.num_images} images)")
    return path
