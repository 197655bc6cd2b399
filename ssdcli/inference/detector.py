"""High-level inference: images (paths, PIL, arrays) in, boxes in original-image pixels out.

The same :class:`Detector` drives PyTorch checkpoints and exported ONNX models: both are an
:class:`InferenceBackend` that maps a normalised batch to per-image relative detections.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np
import torch

from ssdcli.boxes import relative_to_pixel
from ssdcli.checkpoint import load_model
from ssdcli.data.images import resize_square, to_image_tensor
from ssdcli.device import cpu_bf16_supported, resolve_device
from ssdcli.errors import SsdError
from ssdcli.inference.onnx_backend import OnnxBackend
from ssdcli.inference.video import FramePrediction, predict_video
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.postprocess import Detections, PostprocessConfig


class InferenceBackend(Protocol):
    config: ModelConfig
    device: torch.device

    def detect(self, batch: torch.Tensor, postprocess: PostprocessConfig) -> list[Detections]:
        """Normalised ``[N,3,S,S]`` batch -> per-image detections in relative xyxy."""
        ...


class TorchBackend:
    """A :class:`DetectorModel` as an :class:`InferenceBackend`.

    ``half``: fp16 weights and inputs on CUDA; on CPU bfloat16 autocast (``self.bf16``), refused with SsdError on
    CPUs without native bf16 (AVX-512 BF16 / AMX). ``flip_test``: models with a
    ``forward_flip_test(images)`` hook (CenterNet) run it instead of ``forward``: one pass over the batch and its
    mirror image, merged into outputs of ``forward``'s format; ignored for models without it (``self.flip_test``
    says whether it is used). ``test_scales``: multi-scale testing through the model's ``detect_multi_scale``
    (CenterNet: every scale of the input size, merged by NMS); SsdError for models without it.
    """

    uses_torch_threads = True  # its CPU work runs on torch's intra-op threads (see ssdcli.inference.video)

    def __init__(self, model: DetectorModel, device: torch.device, half: bool = False, flip_test: bool = False,
                 test_scales: Sequence[float] | None = None) -> None:
        if test_scales and not model.supports_multi_scale:
            raise SsdError(f"--test-scales: {model.config.arch} has no multi-scale testing (CenterNet models have)")
        self.model = model.to(device).eval()
        self.config = model.config
        self.device = device
        self.half = half and device.type == "cuda"
        self.bf16 = half and device.type == "cpu"
        if self.bf16 and not cpu_bf16_supported():
            raise SsdError("--half on CPU means bfloat16, which this CPU lacks (no AVX-512 BF16 / AMX); drop --half")
        self.flip_test = bool(flip_test) and model.supports_flip_test
        self.test_scales = tuple(float(s) for s in test_scales) if test_scales else None
        if self.half:
            self.model.half()

    @torch.inference_mode()
    def detect(self, batch: torch.Tensor, postprocess: PostprocessConfig) -> list[Detections]:
        batch = batch.to(self.device, non_blocking=True)
        batch = batch.half() if self.half else batch
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            if self.test_scales:
                return self.model.detect_multi_scale(batch, self.test_scales, postprocess, self.flip_test)
            outputs = self.model.forward_flip_test(batch) if self.flip_test else self.model(batch)
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
        # --iou not given: the model's own NMS IoU threshold (recorded at training or conversion)
        self.postprocess = (postprocess or PostprocessConfig()).with_nms_default(self.config.nms_threshold)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "auto",
        postprocess: PostprocessConfig | None = None,
        half: bool = False,
        flip_test: bool = False,
        test_scales: Sequence[float] | None = None,
    ) -> "Detector":
        """Open a native ``.pth`` checkpoint, or an exported ``.onnx`` model (run through ONNX Runtime).

        ``half`` / ``flip_test`` / ``test_scales``: see :class:`TorchBackend` (checkpoints only: an ONNX model
        runs its graph as is). ``flip_test`` or ``test_scales`` that the model cannot do: SsdError.
        """
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        if Path(path).suffix.lower() == ".onnx":
            if flip_test or test_scales:
                what = "--flip-test" if flip_test else "--test-scales"
                raise SsdError(f"{what}: {path} is an exported model, which runs its graph as is (use the .pth "
                               "checkpoint)")
            return cls(OnnxBackend(path, dev), postprocess)
        backend = TorchBackend(load_model(path, "cpu"), dev, half=half, flip_test=flip_test, test_scales=test_scales)
        if flip_test and not backend.flip_test:
            raise SsdError(f"--flip-test: {backend.config.arch} has no flip test (CenterNet models have)")
        return cls(backend, postprocess)

    @property
    def class_names(self) -> list[str]:
        return self.config.class_names

    def resize_batch(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """RGB uint8 images ``[3,H,W]`` -> uint8 ``[N,3,S,S]`` warped to the model input (:func:`resize_square`)."""
        size = self.config.image_size
        return torch.stack([resize_square(im, size) for im in images])

    def prepare(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """RGB uint8 images -> normalised network batch (resize to the model input, then normalise)."""
        return self.config.preprocess.normalize(self.resize_batch(images))

    def detect_resized(self, images_uint8: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[Prediction]:
        """Detect on images already warped to the model input; boxes are mapped back to the original sizes.

        ``images_uint8``: RGB uint8 ``[N,3,S,S]``, each original warped with :func:`resize_square` to
        ``S = config.image_size`` (e.g. in DataLoader workers). ``sizes``: ``(width, height)`` of each original.
        Returns one :class:`Prediction` per image (VOC pixel boxes of the original image).
        """
        size = self.config.image_size
        if images_uint8.dim() != 4 or tuple(images_uint8.shape[1:]) != (3, size, size):
            raise ValueError(f"detect_resized: expected a [N,3,{size},{size}] batch, got {list(images_uint8.shape)}")
        if len(sizes) != images_uint8.shape[0]:
            raise ValueError(f"detect_resized: {images_uint8.shape[0]} images but {len(sizes)} sizes")
        dets = self.backend.detect(self.config.preprocess.normalize(images_uint8), self.postprocess)
        return [detections_to_prediction(d, int(w), int(h), self.class_names) for d, (w, h) in zip(dets, sizes)]

    def predict_tensors(self, images: Sequence[torch.Tensor]) -> list[Prediction]:
        """RGB uint8 images ``[3,H,W]`` (any sizes) -> one :class:`Prediction` each, in original-image pixels."""
        return self.detect_resized(self.resize_batch(images), [(int(im.shape[2]), int(im.shape[1])) for im in images])

    def predict(self, images: object, batch_size: int = 8) -> list[Prediction]:
        """Detect objects in one image or a list of images (paths, PIL images, HWC arrays, CHW uint8 tensors)."""
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        out: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            tensors = [to_image_tensor(x) for x in items[start : start + batch_size]]  # type: ignore[arg-type]
            out.extend(self.predict_tensors(tensors))
        return out

    def predict_video(self, source: str | os.PathLike, batch_size: int = 8, stride: int = 1,
                      keep_frames: bool = False, streams: int | None = None) -> Iterator[FramePrediction]:
        """Detect objects in every ``stride``-th frame of a video file, stream URL or camera index (``"0"``):
        an iterator of :class:`~ssdcli.inference.video.FramePrediction` (``index``, ``time`` in seconds,
        ``prediction``; ``image`` with ``keep_frames``). See :func:`ssdcli.inference.video.predict_video`."""
        return predict_video(self, source, batch_size=batch_size, stride=stride, keep_frames=keep_frames,
                             streams=streams)
