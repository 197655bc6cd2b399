"""Periodic validation during training: mAP@0.5 of the in-memory model on a split."""

from __future__ import annotations

import torch

from ssdcli.data.records import ImageRecord
from ssdcli.models import DetectorModel
from ssdcli.postprocess import PostprocessConfig
from ssdcli.predictor import Detector, TorchBackend


class Validator:
    def __init__(self, records: list[ImageRecord], class_names: list[str], metric: str, device: torch.device, workers: int) -> None:
        self.records = records
        self.class_names = class_names
        self.metric = metric
        self.device = device
        self.workers = workers

    def __call__(self, model: DetectorModel) -> float:
        from ssdcli.engine.evaluator import evaluate_detector

        detector = Detector(TorchBackend(model, self.device), PostprocessConfig())
        report = evaluate_detector(
            detector, self.records, self.class_names, metrics=(self.metric,), batch_size=16, workers=min(self.workers, 2)
        )
        return float(report.map)
