"""High-level inference: images (paths, PIL, arrays) in, boxes in original-image pixels out.

The same :class:`Detector` drives PyTorch checkpoints and exported ONNX models: both are an
:class:`InferenceBackend` that maps a normalised batch to per-image relative detections.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from ssdcli.boxes import relative_to_pixel
from ssdcli.checkpoint import load_model
from ssdcli.data.images import resize_square, to_image_tensor
from ssdcli.device import resolve_device
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.postprocess import Detections, PostprocessConfig

ImageLike = "str | os.PathLike | np.ndarray | torch.Tensor | PIL.Image.Image"


class InferenceBackend(Protocol):
    config: ModelConfig
    device: torch.device

    def detect(self, batch: torch.Tensor, postprocess: PostprocessConfig) -> list[Detections]:
        """Normalised ``[N,3,S,S]`` batch -> per-image detections in relative xyxy."""
        ...


class TorchBackend:
    def __init__(self, model: DetectorModel, device: torch.device, half: bool = False) -> None:
        self.model = model.to(device).eval()
        self.config = model.config
        self.device = device
        self.half = half and device.type == "cuda"
        if self.half:
            self.model.half()

    @torch.inference_mode()
    def detect(self, batch: torch.Tensor, postprocess: PostprocessConfig) -> list[Detections]:
        batch = batch.to(self.device, non_blocking=True)
        outputs = self.model(batch.half() if self.half else batch)
        return self.model.decode(tuple(o.float() for o in outputs), postprocess)


@dataclass
class Prediction:
    """Detections of one image in original-image pixels (VOC convention, see :mod:`ssdcli.boxes`)."""

    boxes: np.ndarray  # [K,4] float32 xmin, ymin, xmax, ymax
    scores: np.ndarray  # [K]
    labels: np.ndarray  # [K] 1-based class indices
    names: list[str]  # [K] class names
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.scores)

    def to_records(self, image_id: str) -> list[dict]:
        """Entries of the detection JSON format read by ``ssd eval --detections``."""
        return [
            {"image_id": image_id, "label": n, "score": round(float(s), 6), "box": [round(float(v), 2) for v in b]}
            for b, s, n in zip(self.boxes, self.scores, self.names)
        ]


def detections_to_prediction(det: Detections, width: int, height: int, class_names: list[str]) -> Prediction:
    boxes = relative_to_pixel(det.boxes.float().cpu(), width, height).numpy().astype(np.float32)
    labels = det.labels.cpu().numpy().astype(np.int64)
    return Prediction(
        boxes=boxes,
        scores=det.scores.float().cpu().numpy(),
        labels=labels,
        names=[class_names[i - 1] for i in labels],
        width=width,
        height=height,
    )


class Detector:
    """``Detector.from_checkpoint("best.pth").predict(["a.jpg", pil_image, array])``."""

    def __init__(self, backend: InferenceBackend, postprocess: PostprocessConfig | None = None) -> None:
        self.backend = backend
        self.config = backend.config
        self.postprocess = postprocess or PostprocessConfig()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "auto",
        postprocess: PostprocessConfig | None = None,
        half: bool = False,
    ) -> "Detector":
        """Open a native ``.pth`` checkpoint, or an exported ``.onnx`` model (run through ONNX Runtime)."""
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        if Path(path).suffix.lower() == ".onnx":
            from ssdcli.deploy.runners import OnnxBackend

            return cls(OnnxBackend(path, dev), postprocess)
        return cls(TorchBackend(load_model(path, "cpu"), dev, half=half), postprocess)

    @property
    def class_names(self) -> list[str]:
        return self.config.class_names

    def prepare(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """RGB uint8 images -> normalised network batch (resize to the model input, then normalise)."""
        size = self.config.image_size
        batch = torch.stack([resize_square(im, size) for im in images])
        return self.config.preprocess.normalize(batch)

    def predict_tensors(self, images: Sequence[torch.Tensor]) -> list[Prediction]:
        dets = self.backend.detect(self.prepare(images), self.postprocess)
        return [
            detections_to_prediction(d, int(im.shape[2]), int(im.shape[1]), self.class_names)
            for d, im in zip(dets, images)
        ]

    def predict(self, images: object, batch_size: int = 8) -> list[Prediction]:
        """Detect objects in one image or a list of images (paths, PIL images, HWC arrays, CHW uint8 tensors)."""
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        out: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            tensors = [to_image_tensor(x) for x in items[start : start + batch_size]]  # type: ignore[arg-type]
            out.extend(self.predict_tensors(tensors))
        return out
