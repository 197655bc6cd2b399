"""Periodic validation during training: mAP@0.5 of the in-memory model on a split."""

from __future__ import annotations

import torch

from ssdcli.data.records import ImageRecord
from ssdcli.engine.evaluator import evaluate_detector
from ssdcli.inference import Detector, TorchBackend
from ssdcli.models import DetectorModel
from ssdcli.postprocess import PostprocessConfig
from ssdcli.reporting import Reporter


class Validator:
    def __init__(self, records: list[ImageRecord], class_names: list[str], metric: str, device: torch.device,
                 workers: int, reporter: Reporter | None = None) -> None:  # fmt: skip
        self.reporter = reporter  # gets the "eval" task of each validation
        self.records = records
        self.class_names = class_names
        self.metric = metric
        self.device = device
        self.workers = workers

    def __call__(self, model: DetectorModel) -> float:
        detector = Detector(TorchBackend(model, self.device), PostprocessConfig())
        report = evaluate_detector(
            detector, self.records, self.class_names, metrics=(self.metric,), batch_size=16, workers=min(self.workers, 2),
            reporter=self.reporter,
        )
        return float(report.map)
