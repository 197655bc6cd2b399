"""Checkpoint -> ONNX, checked against PyTorch with ONNX Runtime before anything is written.

Uses the TorchScript-based exporter (``torch.onnx.export(dynamo=False)``): it needs no extra package and lets the
grouped NMS be emitted as one ONNX ``NonMaxSuppression`` node (see :mod:`ssdcli.models.export_graph`).

The ONNX ``metadata_props`` hold ``ssdcli`` = JSON (:func:`read_metadata`): ``format``/``version``, the full
``ModelConfig.to_dict()`` (arch, classes, input size, preprocessing, prior spec), ``nms``, the baked ``postprocess``
settings, output names, ``max_detections``, input dtype, ``dynamic_batch``, ``decoder`` and ``priors_file``;
``arch``, ``class_names``, ``image_size`` and ``preprocess`` are repeated as plain keys for other runtimes.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from ssdcli.checkpoint import load_model
from ssdcli.data.records import load_prepared
from ssdcli.deploy.export_check import check_against_pytorch, check_final_model, check_inputs, image_batches
from ssdcli.deploy.quantize import (
    CalibrationImages,
    Int8Agreement,
    QuantizeSpec,
    calibration_records,
    int8_agreement,
    quantize_model,
)
from ssdcli.deploy.verify import DetectionAgreement
from ssdcli.engine.evaluator import evaluate_detector
from ssdcli.errors import SsdError, first_line
from ssdcli.inference import Detector, TorchBackend
from ssdcli.inference.onnx_backend import METADATA_KEY, ONNX_FORMAT, OnnxBackend
from ssdcli.io_utils import atomic_write
from ssdcli.models.base import DetectorModel
from ssdcli.models.export_graph import DETECTION_OUTPUTS, INPUT_NAME, WithRawOutputs
from ssdcli.postprocess import PostprocessConfig
from ssdcli.reporting import Reporter, Stages, as_reporter

MIN_OPSET = 11  # NonMaxSuppression, ScatterElements, dynamic TopK
MAX_OPSET = 20  # newest opset of the TorchScript exporter
DEFAULT_OPSET = 17


@dataclass
class ExportReport:
    output: Path
    checkpoint: Path
    arch: str
    opset: int
    nms: bool
    half: bool
    dynamic_batch: bool
    postprocess: PostprocessConfig | None
    priors_path: Path | None = None
    size_bytes: int = 0
    export_seconds: float = 0.0
    checked: bool = False
    check_source: str = ""  # "3 images from DIR" / "3 synthetic images"
    batch_sizes: list[int] = field(default_factory=list)
    raw_diff: dict[str, float] = field(default_factory=dict)  # output -> largest |onnx - torch|
    raw_tol: dict[str, float] = field(default_factory=dict)
    graph_vs_decode: DetectionAgreement | None = None  # in-graph NMS vs PyTorch post-processing, same raw outputs
    onnx_vs_torch: DetectionAgreement | None = None  # end to end
    int8: dict | None = None  # the metadata's "quantization" entry of an int8 export
    int8_check: Int8Agreement | None = None  # int8 detections against the float PyTorch model's
    int8_float_ops: list[str] = field(default_factory=list)  # op types left float (decode, NMS)
    map_split: str = ""  # split of --calib-data the mAP change was measured on ("" when none)
    map_images: int = 0
    map_float: float | None = None  # VOC07 mAP@0.5 of the float PyTorch model ...
    map_int8: float | None = None  # ... and of the int8 ONNX model, same images

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(output=str(self.output), checkpoint=str(self.checkpoint))
        d["priors_path"] = str(self.priors_path) if self.priors_path else None
        d["int8_check"] = asdict(self.int8_check) if self.int8_check else None
        return d


def read_metadata(model: onnx.ModelProto) -> dict | None:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None


def load_checkpoint_model(path: Path) -> DetectorModel:
    """:func:`ssdcli.checkpoint.load_model` on CPU, with any unpickling failure of a non-checkpoint file (which
    ``torch.load`` may raise as ``KeyError``, ``IndexError``, ...) turned into a one-line :class:`SsdError`."""
    try:
        return load_model(path, "cpu")
    except SsdError:
        raise
    except Exception as e:  # noqa: BLE001 - garbage input makes the unpickler fail in many ways
        raise SsdError(f"{path}: not a readable ssdcli checkpoint ({type(e).__name__}: {first_line(e)})") from None


def export_onnx(
    checkpoint_path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    half: bool = False,
    nms: bool = True,
    postprocess: PostprocessConfig = PostprocessConfig(),
    check_images: str | os.PathLike | None = None,
    force: bool = False,
    verify: bool = True,
    int8: QuantizeSpec | None = None,
    reporter: Reporter | None = None,
) -> ExportReport:
    """Export a native checkpoint to ONNX (see the module docstring); raises :class:`SsdError` when ONNX Runtime
    disagrees with PyTorch (raw outputs beyond tolerance, or different final detections). ``reporter`` gets task
    ``"export"``: loading, exporting, (int8: quantizing,) checking (with ``verify``), (int8 with a test split:
    measuring mAP,) writing.

    ``int8``: static INT8 quantization (:mod:`ssdcli.deploy.quantize`) calibrated on the ``train`` split of
    ``int8.calib_data``; the check then compares detections with the float model's within the int8 tolerance
    (:func:`~ssdcli.deploy.quantize.int8_agreement`), on up to 8 images of the dataset's test split (unless
    ``check_images`` is given), and the mAP change on that split is measured (with ``verify``)."""
    ckpt = Path(checkpoint_path)
    if ckpt.suffix.lower() == ".onnx":
        raise SsdError(f"{ckpt}: already an ONNX model; export-onnx takes a .pth checkpoint")
    out = Path(output) if output is not None else ckpt.with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":
        raise SsdError(f"{out}: the output file must end in .onnx")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise SsdError(f"--opset {opset}: too old or too new for this exporter, use {MIN_OPSET}..{MAX_OPSET}")
    postprocess.validate()
    if out.exists() and not force:
        raise SsdError(f"{out}: already exists (use --force to overwrite)")
    if int8 is not None and half:
        raise SsdError("--int8 and --half: choose one (int8 models take float32 input)")
    calib = calibration_records(int8.calib_data, int8.images) if int8 is not None else []
    test = _test_records(int8.calib_data) if int8 is not None and verify else []
    if verify and int8 is not None and check_images is None and test:
        files = [Path(r.path) for r in test[:8]]
        batches, source = image_batches(files, dynamic_batch), f"{len(files)} test image(s) of {int8.calib_data}"
    else:
        batches, source = check_inputs(check_images, dynamic_batch) if verify else ([], "")

    n_stages = (4 if verify else 3) + (1 if int8 is not None else 0) + (1 if test else 0)
    stages = Stages(as_reporter(reporter), "export", n_stages)
    stages.next("loading checkpoint")
    model = load_checkpoint_model(ckpt)
    postprocess = postprocess.with_nms_default(model.config.nms_threshold)  # --iou not given: the model's own
    priors = model.export_arrays().get("priors")
    priors_path = out.with_name(out.stem + ".priors.npy") if not nms and priors is not None else None
    if priors_path is not None and priors_path.exists() and not force:
        raise SsdError(f"{priors_path}: already exists (use --force to overwrite)")
    refusal = model.export_support(opset)
    if refusal:
        raise SsdError(f"{ckpt}: {refusal}")
    report = ExportReport(out, ckpt, model.config.arch, opset, nms, half, dynamic_batch, postprocess if nms else None)
    t0 = time.perf_counter()
    stages.next(f"exporting {model.config.arch} (opset {opset})")
    if half:
        _to_half(model)
    proto = _export(model, opset, dynamic_batch, half, nms, postprocess)
    raw_names = list(model.output_names)
    quant_meta = None
    if int8 is not None:
        stages.next(f"quantizing to int8 ({int8.method.value} calibration on {len(calib)} train images)")
        reader = CalibrationImages(calib, model.config, INPUT_NAME)
        quantized = quantize_model(proto, raw_names, reader, int8.method, int8.exclude)
        proto, quant_meta = quantized.model, quantized.metadata(int8)
        report.int8, report.int8_float_ops = quant_meta, quantized.float_op_types
    _add_metadata(proto, model, nms, postprocess, half, dynamic_batch, ckpt, priors_path, opset, quant_meta)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise SsdError(f"{out}: exported graph fails onnx.checker: {first_line(e)}") from None
    report.export_seconds = time.perf_counter() - t0

    check = None
    if verify:
        stages.next("checking ONNX Runtime against PyTorch")
        reference = load_checkpoint_model(ckpt)  # fp32 reference, also for --half exports
        check = check_against_pytorch(proto.SerializeToString(), reference, batches, source, nms, half, postprocess)
        report.checked, report.check_source, report.batch_sizes = True, check.source, check.batch_sizes
        report.raw_diff, report.raw_tol = check.raw_diff, check.raw_tol
        report.graph_vs_decode, report.onnx_vs_torch = check.graph_vs_decode, check.onnx_vs_torch
        problems = check.problems(nms, half, int8=int8 is not None)
        if int8 is not None:
            report.int8_check = int8_agreement(check.torch_dets, check.onnx_dets)
            if not report.int8_check.ok:
                problems.append(f"int8 detections: {report.int8_check.summary()}")
        if problems:
            raise SsdError(f"{out}: ONNX Runtime disagrees with PyTorch: {'; '.join(problems)}; nothing written")
    if nms:
        _strip_outputs(proto, raw_names)
    data = proto.SerializeToString()
    if check is not None and nms:
        final = check_final_model(data, check)
        if not final.equal:
            raise SsdError(
                f"{out}: the final model disagrees with the checked one ({final.summary()}); nothing written"
            )
    if test:
        stages.next(f"measuring mAP on {len(test)} test images (float PyTorch, int8 ONNX)")
        report.map_split, report.map_images = "test", len(test)
        report.map_float, report.map_int8 = _map_change(data, model, test, int8.calib_data, postprocess)  # type: ignore[union-attr]
    stages.next(f"writing {out.name}")
    atomic_write(out, lambda f: f.write(data))
    report.size_bytes = len(data)
    if priors_path is not None:
        buf = io.BytesIO()
        np.save(buf, priors.float().cpu().numpy())
        atomic_write(priors_path, lambda f: f.write(buf.getvalue()))
        report.priors_path = priors_path
    stages.done()
    return report


def _test_records(data: Path) -> list:
    """The test split of a prepared dataset (empty when it has none)."""
    ds = load_prepared(data)
    return list(ds.splits.get("test", []))


def _map_change(
    data: bytes, model: DetectorModel, records: list, calib_data: Path, pp: PostprocessConfig
) -> tuple[float | None, float | None]:
    """VOC07 mAP@0.5 of the float PyTorch model and of the int8 ONNX model (``data``) on ``records``."""
    classes = load_prepared(calib_data, splits=[]).classes
    maps = []
    with tempfile.TemporaryDirectory(prefix="ssd-int8-map-") as tmp:
        path = Path(tmp, "int8.onnx")
        path.write_bytes(data)
        for backend in (TorchBackend(model, torch.device("cpu")), OnnxBackend(path, "cpu")):
            value = float(evaluate_detector(Detector(backend, pp), records, classes).map)
            maps.append(None if np.isnan(value) else value)
    return maps[0], maps[1]


def _to_half(model: DetectorModel) -> None:
    """Weights to fp16; non-persistent buffers (SSD priors: geometry, not weights) stay fp32 for exact decoding."""
    persistent = set(model.state_dict())
    keep = {n: b.clone() for n, b in model.named_buffers() if n not in persistent and b.is_floating_point()}
    model.half()
    for name, buf in keep.items():
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, buf)


def _export(
    model: DetectorModel, opset: int, dynamic: bool, half: bool, nms: bool, pp: PostprocessConfig
) -> onnx.ModelProto:
    size = model.config.image_size
    example = torch.randn(2 if dynamic else 1, 3, size, size, dtype=torch.float16 if half else torch.float32)
    raw = list(model.output_names)
    module = WithRawOutputs(model.export_graph(pp), model) if nms else model
    outputs = (list(DETECTION_OUTPUTS) + raw) if nms else raw
    axes = {n: {0: "batch"} for n in [INPUT_NAME, *outputs]} if dynamic else None
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (example,),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except (torch.onnx.errors.OnnxExporterError, torch.onnx.errors.SymbolicValueError) as e:
        raise SsdError(f"--opset {opset}: cannot export {model.config.arch} ({first_line(e)})") from None
    except RuntimeError as e:
        if "opset" in str(e).lower() or "unsupported" in str(e).lower():
            raise SsdError(f"--opset {opset}: cannot export {model.config.arch} ({first_line(e)})") from None
        raise
    proto = onnx.load_from_string(buf.getvalue())
    if isinstance(module, WithRawOutputs):  # the tracer names fixed axes (detection slots) as if dynamic
        for out, shape in zip(proto.graph.output, module.output_shapes):
            for dim, size in list(zip(out.type.tensor_type.shape.dim, shape))[1:]:
                dim.dim_value = size
    return proto


def _add_metadata(
    proto: onnx.ModelProto,
    model: DetectorModel,
    nms: bool,
    pp: PostprocessConfig,
    half: bool,
    dynamic: bool,
    ckpt: Path,
    priors_path: Path | None,
    opset: int,
    quantization: dict | None = None,
) -> None:
    cfg = model.config.to_dict()
    outputs = list(DETECTION_OUTPUTS) if nms else list(model.output_names)
    max_det = None
    if nms:
        scores = next(o for o in proto.graph.output if o.name == "scores")
        max_det = int(scores.type.tensor_type.shape.dim[1].dim_value)
    meta = {
        "format": ONNX_FORMAT,
        "version": 1,
        "config": cfg,
        "nms": nms,
        "postprocess": asdict(pp) if nms else None,
        "input": INPUT_NAME,
        "input_dtype": "float16" if half else "float32",
        "outputs": outputs,
        "max_detections": max_det,
        "dynamic_batch": dynamic,
        "decoder": model.decoder_name,
        "priors_file": priors_path.name if priors_path else None,
        "opset": opset,
        "source": ckpt.name,
        "quantization": quantization,  # None for float models
    }
    plain = {
        METADATA_KEY: json.dumps(meta),
        "arch": cfg["arch"],
        "class_names": json.dumps(cfg["class_names"]),
        "image_size": str(cfg["image_size"]),
        "preprocess": json.dumps(cfg["preprocess"]),
    }
    del proto.metadata_props[:]
    for k, v in plain.items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name = "ssdcli"
    proto.doc_string = (
        f"{cfg['arch']} detector exported by `ssd export-onnx` ({'NMS in graph' if nms else 'raw outputs'}"
        f"{', int8 QDQ' if quantization else ''})"
    )


def _strip_outputs(proto: onnx.ModelProto, names: list[str]) -> None:
    keep = [o for o in proto.graph.output if o.name not in names]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
