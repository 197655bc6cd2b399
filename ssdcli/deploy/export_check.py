"""The check every export goes through: ONNX Runtime (CPU) against PyTorch on a few inputs.

Three comparisons per input batch:

* raw outputs (``locs``/``logits`` or the family's): largest absolute difference, against a tolerance relative to
  the outputs' magnitude (:func:`~ssdcli.deploy.verify.raw_tolerance`);
* NMS-in-graph exports: the graph's detections against PyTorch post-processing applied to the *same* ONNX raw
  outputs (checks the in-graph decode/NMS logic by itself);
* final detections of ONNX Runtime against the PyTorch model's (end to end).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ssdcli.data.images import IMAGE_EXTENSIONS, read_image, resize_square
from ssdcli.deploy.verify import DetectionAgreement, compare_detections, raw_tolerance
from ssdcli.errors import SsdError
from ssdcli.models.base import DetectorModel
from ssdcli.models.export_graph import DETECTION_OUTPUTS, INPUT_NAME, detections_from_outputs
from ssdcli.postprocess import Detections, PostprocessConfig

CHECK_SIZE = 512  # check images are first warped to this square (the model's own resize follows)


@dataclass
class CheckResult:
    source: str  # "3 synthetic images" / "2 image(s) from DIR"
    batch_sizes: list[int] = field(default_factory=list)
    raw_diff: dict[str, float] = field(default_factory=dict)
    raw_tol: dict[str, float] = field(default_factory=dict)
    graph_vs_decode: DetectionAgreement | None = None
    onnx_vs_torch: DetectionAgreement = field(default_factory=DetectionAgreement)
    first_feed: dict = field(default_factory=dict)  # first batch's ONNX input and detection outputs, to re-check
    first_outputs: list[np.ndarray] = field(default_factory=list)  # the written (stripped) model against
    torch_dets: list[Detections] = field(default_factory=list)  # per image, every batch (int8 agreement)
    onnx_dets: list[Detections] = field(default_factory=list)

    def problems(self, nms: bool, half: bool, int8: bool = False) -> list[str]:
        """Why the export must fail (empty when it passes). fp16 end-to-end differences are expected, not fatal;
        int8 raw outputs and detections are judged by :func:`ssdcli.deploy.quantize.int8_agreement` instead."""
        out = [] if int8 else [
            f"{n} max diff {d:.3g} > {self.raw_tol[n]:.3g}" for n, d in self.raw_diff.items() if d > self.raw_tol[n]
        ]
        if nms and self.graph_vs_decode is not None and not self.graph_vs_decode.equal:
            out.append(f"in-graph NMS vs PyTorch post-processing: {self.graph_vs_decode.summary()}")
        if not half and not int8 and not self.onnx_vs_torch.equal:
            out.append(f"detections: {self.onnx_vs_torch.summary()}")
        return out


def check_inputs(check_images: str | os.PathLike | None, dynamic: bool) -> tuple[list[torch.Tensor], str]:
    """uint8 RGB batches ``[B,3,512,512]`` and their description; a batch of 2 then of 1 when ``dynamic``."""

    if check_images is not None:
        root = Path(check_images)
        if root.is_dir():
            files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:3]
        elif root.is_file():
            files = [root]
        else:
            raise SsdError(f"{root}: --check-images: no such file or folder")
        if not files:
            raise SsdError(f"{root}: --check-images: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in the folder")
        return image_batches(files, dynamic), f"{len(files)} image(s) from {root}"
    gen = torch.Generator().manual_seed(0)
    low = torch.rand(3, 3, 6, 6, generator=gen) * 255  # smooth synthetic pictures, not white noise
    up = torch.nn.functional.interpolate(low, size=(CHECK_SIZE, CHECK_SIZE), mode="bilinear", align_corners=False)
    images = list(up.round().clamp(0, 255).to(torch.uint8))
    return _group(images, dynamic), "3 synthetic images"


def image_batches(files: list[Path], dynamic: bool) -> list[torch.Tensor]:
    """Check batches (as :func:`check_inputs`) from image files: uint8 ``[B,3,512,512]``."""
    return _group([resize_square(read_image(p), CHECK_SIZE) for p in files], dynamic)


def _group(images: list[torch.Tensor], dynamic: bool) -> list[torch.Tensor]:
    if dynamic and len(images) > 1:
        groups = [images[:2], images[2:]] if len(images) > 2 else [images[:2], images[:1]]
    else:
        groups = [[im] for im in images]
    return [torch.stack(g) for g in groups if g]


def cpu_session(data: bytes):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def check_against_pytorch(
    model_bytes: bytes,
    reference: DetectorModel,
    batches: list[torch.Tensor],
    source: str,
    nms: bool,
    half: bool,
    pp: PostprocessConfig,
) -> CheckResult:
    """Run the ONNX model (NMS exports: with the raw outputs appended after the 4 detection outputs)."""

    session = cpu_session(model_bytes)
    raw_names = list(reference.output_names)
    size = reference.config.image_size
    result = CheckResult(source, graph_vs_decode=DetectionAgreement() if nms else None)
    n_det = len(DETECTION_OUTPUTS) if nms else 0
    for images_u8 in batches:
        x = reference.config.preprocess.normalize(torch.stack([resize_square(im, size) for im in images_u8]))
        result.batch_sizes.append(int(x.shape[0]))
        with torch.no_grad():
            torch_raw = reference(x)
            torch_dets = reference.decode(torch_raw, pp)
        feed = {INPUT_NAME: x.half().numpy() if half else x.numpy()}
        got = session.run(None, feed)
        if not result.first_feed:
            result.first_feed, result.first_outputs = feed, got[:n_det]
        onnx_raw = got[n_det:]
        for name, a, b in zip(raw_names, onnx_raw, torch_raw):
            ref = b.numpy()
            result.raw_diff[name] = max(result.raw_diff.get(name, 0.0), float(np.abs(a.astype(np.float32) - ref).max()))
            result.raw_tol[name] = max(result.raw_tol.get(name, 0.0), raw_tolerance(ref, half))
        with torch.no_grad():
            from_onnx_raw = reference.decode(tuple(torch.from_numpy(a).float() for a in onnx_raw), pp)
        onnx_dets = detections_from_outputs(*got[:n_det]) if nms else from_onnx_raw
        if result.graph_vs_decode is not None:
            result.graph_vs_decode.merge(compare_detections(from_onnx_raw, onnx_dets))
        result.onnx_vs_torch.merge(compare_detections(torch_dets, onnx_dets))
        result.torch_dets.extend(torch_dets)
        result.onnx_dets.extend(onnx_dets)
    return result


def check_final_model(data: bytes, result: CheckResult) -> DetectionAgreement:
    """The written model (NMS export with the raw outputs removed) against the checked one, on the first batch."""
    got = cpu_session(data).run(list(DETECTION_OUTPUTS), result.first_feed)
    return compare_detections(detections_from_outputs(*result.first_outputs), detections_from_outputs(*got), 1e-6, 1e-6)
