"""ONNX Runtime inference backend: ``Detector.from_checkpoint("model.onnx")`` runs through this.

Execution providers: CPU for CPU devices; for CUDA devices the CUDA provider, or TensorRT (then CUDA) when
``engine="tensorrt"`` (TensorRT builds an engine on first use, minutes for SSD300, so it is opt-in; engines are
cached next to the model). Session options are tuned for CPU latency: all graph optimisations (constant folding,
Conv+BN/activation fusion, NCHWc blocked convolutions), intra-op threads = physical cores of this process's CPU set,
no spinning of idle workers.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ssdcli.checkpoint import config_from_stored
from ssdcli.errors import SsdError, first_line
from ssdcli.models.base import DetectorModel
from ssdcli.models.export_graph import DETECTION_OUTPUTS, detections_from_outputs
from ssdcli.models.registry import build_from_config
from ssdcli.postprocess import Detections, PostprocessConfig

ENGINES = ("auto", "cpu", "cuda", "tensorrt")

METADATA_KEY = "ssdcli"  # ONNX metadata_props key of the JSON written by `ssd export-onnx`
ONNX_FORMAT = "ssdcli-onnx"


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                (base.joinpath("physical_package_id").read_text().strip(), base.joinpath("core_id").read_text().strip())
            )
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def session_options(threads: int | None = None):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    # no busy-waiting between kernels: spinning workers steal the cores that image decoding, resizing and
    # post-processing in the same process (and other processes) need; measured faster on a shared 2-core machine
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def providers_for(device: torch.device, engine: str, cache_dir: Path) -> list:
    """Provider list for ``engine`` on ``device``; raises :class:`SsdError` when it cannot be had here."""
    import onnxruntime as ort

    if engine not in ENGINES:
        raise SsdError(f"engine '{engine}': expected one of {', '.join(ENGINES)}")
    available = set(ort.get_available_providers())
    if engine == "cpu" or (engine == "auto" and device.type != "cuda"):
        return ["CPUExecutionProvider"]
    if device.type != "cuda":
        raise SsdError(f"{engine}: needs a CUDA device (running on {device.type})")
    cuda = ("CUDAExecutionProvider", {"device_id": device.index or 0})
    if "CUDAExecutionProvider" not in available:
        raise SsdError("onnxruntime has no CUDA provider here: install onnxruntime-gpu")
    if engine != "tensorrt":
        return [cuda, "CPUExecutionProvider"]
    if "TensorrtExecutionProvider" not in available:
        raise SsdError("TensorRT: onnxruntime was built without the TensorRT provider")
    trt = (
        "TensorrtExecutionProvider",
        {"device_id": device.index or 0, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir)},
    )
    return [trt, cuda, "CPUExecutionProvider"]


class OnnxBackend:
    """An exported model as an :class:`~ssdcli.inference.InferenceBackend` (``.config``, ``.device``, ``.detect``)."""

    def __init__(
        self,
        path: str | os.PathLike,
        device: torch.device | str = "cpu",
        engine: str = "auto",
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.device = torch.device(device)
        if not self.path.is_file():
            raise SsdError(f"{self.path}: file not found")
        cache = self.path.parent if os.access(self.path.parent, os.W_OK) else Path(tempfile.gettempdir())
        wanted = providers_for(self.device, engine, cache)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.session = ort.InferenceSession(str(self.path), session_options(threads), providers=wanted)
        except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidProtobuf, ...)
            first = first_line(e)
            raise SsdError(f"{self.path}: not a loadable ONNX model ({first})") from None
        first_wanted = wanted[0] if isinstance(wanted[0], str) else wanted[0][0]
        if self.session.get_providers()[0] != first_wanted:
            raise SsdError(
                f"{self.path}: {first_wanted} could not be initialised here (missing CUDA/TensorRT libraries?); "
                f"got {self.session.get_providers()[0]}"
            )
        self.providers = self.session.get_providers()
        self.meta = _metadata(self.session, self.path)
        self.config = config_from_stored(self.meta["config"], f"{self.path}: ONNX metadata")
        self.nms = bool(self.meta.get("nms"))
        self.baked = _baked_postprocess(self.meta, self.path) if self.nms else None
        if self.baked is not None:  # the model's own NMS IoU threshold is the one baked into its graph
            self.config.nms_threshold = float(self.baked.nms_threshold)  # type: ignore[arg-type]
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.output_names = list(self.meta["outputs"])
        self._warned = False
        self._decoder: DetectorModel | None = None

    # -- running -------------------------------------------------------------------------------------------
    def run(self, batch: torch.Tensor | np.ndarray) -> list[np.ndarray]:
        """Normalised ``[N,3,S,S]`` -> the model's outputs (numpy, in ``self.output_names`` order)."""
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        step = self.fixed_batch
        if step is None or x.shape[0] == step:
            return self.session.run(self.output_names, {self.input_name: x})
        chunks = []
        for start in range(0, x.shape[0], step):
            part = x[start : start + step]
            n = part.shape[0]
            if n < step:  # pad the last chunk of a static-batch model
                part = np.concatenate([part, np.repeat(part[-1:], step - n, axis=0)])
            chunks.append([o[:n] for o in self.session.run(self.output_names, {self.input_name: part})])
        return [np.concatenate(parts) for parts in zip(*chunks)]

    def to_detections(self, outputs: list[np.ndarray], config: PostprocessConfig) -> list[Detections]:
        """Outputs of :meth:`run` -> per-image relative-xyxy :class:`Detections` (CPU tensors)."""
        config = config.with_nms_default(self.config.nms_threshold)  # the model's own unless given
        if self.nms:
            self._check_baked(config)
            return detections_from_outputs(*outputs, config=config)
        raw = tuple(torch.from_numpy(o).float() for o in outputs)
        return self._decoder_model().decode(raw, config)

    def detect(self, batch: torch.Tensor, postprocess: PostprocessConfig) -> list[Detections]:
        return self.to_detections(self.run(batch), postprocess)

    # -- helpers -------------------------------------------------------------------------------------------
    def _decoder_model(self) -> DetectorModel:
        """The family's own decode, from a model rebuilt from the stored config (weights unused)."""
        if self._decoder is None:
            self._decoder = build_from_config(self.config).eval()
        return self._decoder

    def _check_baked(self, config: PostprocessConfig) -> None:
        b = self.baked
        assert b is not None
        exact = (
            config.nms_threshold == b.nms_threshold
            and config.pre_nms_top_k == b.pre_nms_top_k
            and config.score_threshold >= b.score_threshold
            and config.top_k <= b.top_k
        )
        if not exact and not self._warned:
            self._warned = True
            warnings.warn(
                f"{self.path.name}: NMS is inside the graph with conf {b.score_threshold}, nms-iou {b.nms_threshold}, "
                f"top-k {b.top_k}, pre-nms {b.pre_nms_top_k}; requested {config} can only be applied as a stricter "
                "filter (re-export with other settings or with --no-nms)",
                stacklevel=3,
            )


def _metadata(session, path: Path) -> dict:  # type: ignore[no-untyped-def]
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise SsdError(f"{path}: no ssdcli metadata; only models written by `ssd export-onnx` are supported")
    try:
        meta = json.loads(props[METADATA_KEY])
    except (ValueError, RecursionError):
        raise SsdError(f"{path}: damaged ssdcli metadata in the ONNX model (not JSON)") from None
    if not (isinstance(meta, dict) and meta.get("format") == ONNX_FORMAT and isinstance(meta.get("config"), dict)
            and isinstance(meta.get("outputs"), list) and all(isinstance(o, str) for o in meta["outputs"])):
        raise SsdError(f"{path}: damaged ssdcli metadata in the ONNX model (format, config or outputs)")
    if meta.get("nms") and meta["outputs"] != list(DETECTION_OUTPUTS):
        raise SsdError(f"{path}: unexpected outputs {meta['outputs']} for an NMS-in-graph model")
    return meta


def _baked_postprocess(meta: dict, path: Path) -> PostprocessConfig:
    """The post-processing baked into an NMS-in-graph model, from its metadata. SsdError when damaged."""
    try:
        baked = PostprocessConfig(**meta["postprocess"])
        numbers = (baked.score_threshold, baked.nms_threshold, baked.top_k, baked.pre_nms_top_k)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            raise TypeError("non-numeric setting")
        return baked.validate()
    except (KeyError, TypeError, SsdError) as e:
        raise SsdError(f"{path}: damaged ssdcli metadata in the ONNX model (postprocess: {first_line(e)})") from None
