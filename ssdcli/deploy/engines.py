"""Inference engines as the benchmark sees them: ``forward`` (normalised batch -> outputs, synchronised) and
``post`` (outputs -> per-image detections), plus a :class:`~ssdcli.inference.Detector` for accuracy runs.

Engines: ``torch`` (eager), ``compile`` (``torch.compile``), ``onnx`` (ONNX Runtime, CPU or CUDA provider),
``tensorrt`` (ONNX Runtime's TensorRT provider), ``int8`` (an INT8 ONNX model, see :mod:`ssdcli.deploy.quantize`),
``bf16`` (eager PyTorch under bfloat16 autocast on CPU). A missing engine raises :class:`EngineUnavailable` with the
reason, which the benchmark reports as a skipped row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ssdcli.device import cpu_bf16_supported
from ssdcli.errors import SsdError, first_line
from ssdcli.inference import Detector, TorchBackend
from ssdcli.inference.onnx_backend import OnnxBackend
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.postprocess import Detections, PostprocessConfig

ENGINE_NAMES = ("torch", "compile", "onnx", "tensorrt", "int8", "bf16")
DEFAULT_ENGINES = ("torch", "compile", "onnx", "tensorrt")


class EngineUnavailable(Exception):
    """The engine cannot run here; ``str(e)`` is the reason shown in the skipped row."""


@dataclass
class Engine:
    name: str
    detector: Detector
    forward: Callable[[torch.Tensor], object]
    post: Callable[[object], list[Detections]]
    info: dict = field(default_factory=dict)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _ModuleBackend:
    """An :class:`~ssdcli.inference.InferenceBackend` over any callable network (e.g. a compiled model)."""

    def __init__(self, net: Callable, model: DetectorModel, device: torch.device, half: bool) -> None:
        self.net, self.model, self.device, self.half = net, model, device, half
        self.config: ModelConfig = model.config

    @torch.inference_mode()
    def detect(self, batch: torch.Tensor, postprocess: PostprocessConfig) -> list[Detections]:
        x = batch.to(self.device, non_blocking=True)
        out = self.net(x.half() if self.half else x)
        return self.model.decode(tuple(o.float() for o in out), postprocess)


def torch_engine(
    model: DetectorModel, device: torch.device, half: bool, pp: PostprocessConfig, compile: bool = False
) -> Engine:
    """Eager (or ``torch.compile``-d) PyTorch. ``model`` is moved to ``device`` (``half``: fp16 on CUDA; on CPU
    bfloat16 autocast, the ``bf16`` engine, unavailable on CPUs without native bf16)."""
    bf16 = half and device.type == "cpu"
    if bf16 and not cpu_bf16_supported():
        raise EngineUnavailable("this CPU has no native bfloat16 (AVX-512 BF16 / AMX)")
    half = half and not bf16
    model = model.to(device).eval()
    if half:
        model.half()
    net: Callable = model
    if compile:
        try:
            net = torch.compile(model, dynamic=False)
        except Exception as e:  # compile support varies by platform (compiler, Python version)
            raise EngineUnavailable(f"torch.compile unavailable: {first_line(e)}") from None
    backend = _ModuleBackend(net, model, device, half)

    @torch.inference_mode()
    def forward(batch: torch.Tensor) -> object:
        x = batch.to(device, non_blocking=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x.half() if half else x)
        sync(device)
        return out

    @torch.inference_mode()
    def post(out: object) -> list[Detections]:
        dets = model.decode(tuple(o.float() for o in out), pp)  # type: ignore[union-attr]
        sync(device)
        return dets

    detector = Detector(backend if compile else TorchBackend(model, device, half or bf16), pp)
    dtype = "bfloat16 autocast" if bf16 else "float16" if half else "float32"
    info = {"dtype": dtype, "threads": torch.get_num_threads()}
    return Engine("bf16" if bf16 else "compile" if compile else "torch", detector, forward, post, info)


def onnx_engine(
    path: Path, device: torch.device, pp: PostprocessConfig, tensorrt: bool = False, name: str | None = None
) -> Engine:
    """ONNX Runtime on ``path``: CPU provider on CPU, CUDA provider (or TensorRT) on CUDA devices. ``name``: the
    engine's name in the report (default ``onnx``/``tensorrt``)."""

    name = name or ("tensorrt" if tensorrt else "onnx")
    if tensorrt and device.type != "cuda":
        raise EngineUnavailable(f"TensorRT needs a CUDA device (running on {device.type})")
    try:
        backend = OnnxBackend(path, device, engine="tensorrt" if tensorrt else "auto")
    except SsdError as e:
        raise EngineUnavailable(str(e)) from None

    def forward(batch: torch.Tensor) -> object:
        return backend.run(batch)  # session.run returns host arrays: already synchronised

    def post(out: object) -> list[Detections]:
        return backend.to_detections(out, pp)  # type: ignore[arg-type]

    opts = backend.session.get_session_options()
    info = {
        "providers": backend.providers,
        "dtype": "int8 (QDQ)" if backend.meta.get("quantization") else
        "float16" if "16" in backend.input_dtype.__name__ else "float32",
        "threads": opts.intra_op_num_threads,
        "nms_in_graph": backend.nms,
    }
    return Engine(name, Detector(backend, pp), forward, post, info)
