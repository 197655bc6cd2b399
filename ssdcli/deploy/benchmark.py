"""``ssd benchmark``: latency / throughput per engine and batch size, with the time split into
pre-processing (image file decode + resize + normalise), model forward and post-processing (decode + NMS + boxes
to pixels); plus model FLOPs against the measured matrix-multiply peak, optional mAP and training throughput.

Every timed iteration runs the whole path on real image files (``images``/the accuracy split) or on synthetic
JPEGs written to a temporary folder. Engines that cannot run here become ``skipped`` rows with the reason.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torchvision.io import encode_jpeg

from ssdcli.data.images import IMAGE_EXTENSIONS, read_image
from ssdcli.data.records import load_prepared
from ssdcli.deploy.engines import (
    DEFAULT_ENGINES,
    ENGINE_NAMES,
    Engine,
    EngineUnavailable,
    onnx_engine,
    torch_engine,
)
from ssdcli.deploy.environment import environment_info
from ssdcli.deploy.flops import count_flops, measure_matmul_peak
from ssdcli.deploy.onnx_export import DEFAULT_OPSET, MAX_OPSET, export_onnx, load_checkpoint_model, read_metadata
from ssdcli.deploy.quantize import QuantizeSpec
from ssdcli.deploy.trainbench import TrainRow, train_throughput
from ssdcli.device import resolve_device
from ssdcli.engine.evaluator import check_class_names, evaluate_detector
from ssdcli.errors import SsdError, first_line
from ssdcli.inference import detections_to_prediction
from ssdcli.inference.onnx_backend import OnnxBackend
from ssdcli.models.base import DetectorModel
from ssdcli.models.registry import build_from_config
from ssdcli.postprocess import PostprocessConfig
from ssdcli.reporting import Reporter, Stages, as_reporter

Progress = Callable[[str], None]


@dataclass
class BenchRow:
    engine: str
    batch: int | None
    status: str = "ok"  # ok | skipped
    reason: str = ""
    latency_p50_ms: float | None = None  # whole path per batch: files in, pixel boxes out
    latency_p90_ms: float | None = None
    throughput: float | None = None  # images/s of the whole path (batch / p50 latency)
    pre_ms: float | None = None  # medians per batch
    forward_ms: float | None = None
    post_ms: float | None = None
    forward_throughput: float | None = None  # images/s of the forward alone
    peak_ratio: float | None = None  # forward time / time of the model FLOPs at the measured matmul peak
    e2e_over_forward: float | None = None  # latency p50 / forward p50
    map: float | None = None  # accuracy (VOC07 mAP@0.5) of this engine, when asked

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class BenchmarkReport:
    settings: dict
    environment: dict
    model: dict  # arch, classes, input size, parameters, GFLOPs per image
    peak: dict  # measured matmul peak
    rows: list[BenchRow] = field(default_factory=list)
    train: list[TrainRow] = field(default_factory=list)
    engines: dict[str, dict] = field(default_factory=dict)  # engine -> providers / dtype / threads
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def run_benchmark(
    weights: str | os.PathLike,
    batches: Sequence[int] = (1, 8, 32),
    engines: Sequence[str] = DEFAULT_ENGINES,
    device: str | torch.device = "auto",
    half: bool = False,
    warmup: int = 3,
    iters: int = 10,
    accuracy_data: str | os.PathLike | None = None,
    train: bool = False,
    images: str | os.PathLike | None = None,
    postprocess: PostprocessConfig = PostprocessConfig(),
    split: str = "test",
    calib_data: str | os.PathLike | None = None,
    reporter: Reporter | None = None,
) -> BenchmarkReport:
    """Benchmark ``weights`` (a ``.pth`` checkpoint or an exported ``.onnx``); see the module docstring.
    ``reporter`` gets task ``"benchmark"``: one stage per measurement. The ``int8`` engine quantizes a ``.pth``
    calibrated on the train split of ``calib_data`` (default: ``accuracy_data``); the ``bf16`` engine is PyTorch
    under bfloat16 autocast on CPU."""
    batches, engines = _check_args(batches, engines, warmup, iters)
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    path = Path(weights)
    if not path.is_file():
        raise SsdError(f"{path}: file not found")
    is_onnx = path.suffix.lower() == ".onnx"
    notes: list[str] = []
    if half and dev.type != "cuda":
        notes.append("--half applies to CUDA only; CPU engines run in fp32 (bfloat16 on CPU: the bf16 engine)")
    use_half = half and dev.type == "cuda"

    per_engine = len(batches) + (1 if accuracy_data is not None else 0)
    total = 2 + len(engines) * (1 + per_engine) + (len(batches) if train else 0)
    stages = Stages(as_reporter(reporter), "benchmark", total)
    stages.next("loading model")
    if is_onnx:
        config = OnnxBackend(path, "cpu").config
        model: DetectorModel | None = None
        shape_model = build_from_config(config).eval()  # random weights: FLOPs and training speed only
    else:
        model = load_checkpoint_model(path)
        config, shape_model = model.config, model
    postprocess = postprocess.with_nms_default(config.nms_threshold)  # --iou not given: the model's own
    records, classes = _accuracy_records(accuracy_data, split) if accuracy_data is not None else (None, None)
    if records is not None:  # fail before the timing runs, not after them

        check_class_names(config.class_names, classes, str(path), str(accuracy_data))  # type: ignore[arg-type]
    settings = {
        "weights": str(path),
        "batches": batches,
        "engines": engines,
        "device": str(dev),
        "half": use_half,
        "warmup": warmup,
        "iters": iters,
        "postprocess": asdict(postprocess),
        "accuracy_data": str(accuracy_data or ""),
        "train": train,
    }
    stages.next("counting FLOPs and measuring the matmul peak")
    flops = count_flops(shape_model, config.image_size)
    peak = measure_matmul_peak(dev, torch.float16 if use_half else torch.float32)
    report = BenchmarkReport(
        settings=settings,
        environment=environment_info(dev),
        model={
            "arch": config.arch,
            "num_classes": config.num_classes,
            "image_size": config.image_size,
            "parameters": sum(p.numel() for p in shape_model.parameters()),
            "gflops_per_image": flops / 1e9,
        },
        peak=peak.to_dict(),
        notes=notes,
    )
    with tempfile.TemporaryDirectory(prefix="ssd-bench-") as tmp:
        files = _image_files(images, records, Path(tmp), max(batches))
        if images is None and records is None:
            notes.append(f"pre-processing timed on {len(files)} synthetic 500x375 JPEG files")
        for name in engines:
            stages.next(f"preparing engine {name}")
            try:
                calib = calib_data if calib_data is not None else accuracy_data
                engine = _make_engine(name, path, model, dev, use_half, postprocess, Path(tmp), stages.note, calib)
            except EngineUnavailable as e:
                report.rows.append(BenchRow(name, None, "skipped", str(e)))
                stages.skip(per_engine)
                continue
            report.engines[name] = engine.info
            for b in batches:
                stages.next(f"{name}: batch {b}")
                report.rows.append(_measure(engine, files, b, warmup, iters, flops, peak.gflops))
            if records is not None and not any(r.ok for r in report.rows if r.engine == name):
                stages.skip(1)
            elif records is not None:
                stages.next(f"{name}: accuracy on {len(records)} images")
                m = _accuracy(engine, records, classes, stages.reporter)  # type: ignore[arg-type]
                for r in report.rows:
                    if r.engine == name and r.ok:
                        r.map = m
            del engine
    if train:
        for b in batches:
            stages.next(f"training step, batch {b}")
            report.train.append(
                train_throughput(config, dev, b, use_half, warmup=min(warmup, 2), iters=max(1, min(iters, 5)))
            )
    stages.done()
    return report


def _check_args(batches: Sequence[int], engines: Sequence[str], warmup: int, iters: int) -> tuple[list[int], list[str]]:
    batches = [int(b) for b in batches]
    if not batches or any(b < 1 for b in batches):
        raise SsdError(f"--batch {','.join(map(str, batches))}: batch sizes must be positive integers")
    engines = list(dict.fromkeys(e.strip().lower() for e in engines if e.strip()))
    bad = [e for e in engines if e not in ENGINE_NAMES]
    if bad or not engines:
        raise SsdError(f"--engines {','.join(bad) or '(none)'}: unknown engine (choose from {', '.join(ENGINE_NAMES)})")
    if iters < 1 or warmup < 0:
        raise SsdError(f"--iters {iters} / --warmup {warmup}: need iters >= 1 and warmup >= 0")
    return batches, engines


def _make_engine(
    name: str,
    path: Path,
    model: DetectorModel | None,
    dev: torch.device,
    half: bool,
    pp: PostprocessConfig,
    tmp: Path,
    say: Progress,
    calib_data: str | os.PathLike | None = None,
) -> Engine:
    if name in ("torch", "compile", "bf16"):
        if model is None:
            raise EngineUnavailable(f"{name} needs a .pth checkpoint (got an ONNX model)")
        if name == "bf16" and dev.type != "cpu":
            raise EngineUnavailable("bf16 is the CPU engine (on CUDA use --half: float16)")
        return torch_engine(copy.deepcopy(model), dev, half or name == "bf16", pp, compile=name == "compile")
    if name == "int8":
        return _int8_engine(path, dev, pp, tmp, say, calib_data)
    onnx_path = path
    if path.suffix.lower() != ".onnx":
        onnx_path = tmp / f"{path.stem}.onnx"
        if not onnx_path.exists():
            if name == "tensorrt" and dev.type != "cuda":
                raise EngineUnavailable(f"TensorRT needs a CUDA device (running on {dev.type})")

            say(f"exporting {path.name} to ONNX")
            opsets = range(DEFAULT_OPSET, MAX_OPSET + 1)  # the default, or the first newer one the model needs
            opset = next((o for o in opsets if model is None or model.export_support(o) is None), DEFAULT_OPSET)
            export_onnx(path, onnx_path, opset=opset, half=half, postprocess=pp, verify=False)
    return onnx_engine(onnx_path, dev, pp, tensorrt=name == "tensorrt")


def _int8_engine(
    path: Path, dev: torch.device, pp: PostprocessConfig, tmp: Path, say: Progress, calib_data: str | os.PathLike | None
) -> Engine:
    """An int8 ONNX model given as ``path``, or quantized from the ``.pth`` on the train split of ``calib_data``."""
    if path.suffix.lower() == ".onnx":
        if not (read_metadata(onnx.load(str(path))) or {}).get("quantization"):
            raise EngineUnavailable(f"{path.name} is a float model (give a .pth with --calib-data, or an int8 .onnx)")
        return onnx_engine(path, dev, pp, name="int8")
    if calib_data is None:
        raise EngineUnavailable("int8 needs --calib-data PREPARED (calibrates on its train split)")
    out = tmp / f"{path.stem}.int8.onnx"
    say(f"quantizing {path.name} to int8 on the train split of {Path(calib_data).name}")
    try:
        export_onnx(path, out, postprocess=pp, verify=False, int8=QuantizeSpec(Path(calib_data)))
    except SsdError as e:  # e.g. a dataset without a train split: the other engines still run
        raise EngineUnavailable(str(e)) from None
    return onnx_engine(out, dev, pp, name="int8")


def _image_files(images: str | os.PathLike | None, records: list | None, tmp: Path, n: int) -> list[Path]:
    if images is not None:
        root = Path(images)
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if root.is_dir() else [root]
        if not files or not files[0].is_file():
            raise SsdError(f"{root}: --images: no image files found")
        return files[: max(n, 1)]
    if records:
        return [Path(r.path) for r in records[: max(n, 1)]]

    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(min(n, 32)):
        low = torch.rand(1, 3, 5, 6, generator=gen) * 255
        img = torch.nn.functional.interpolate(low, size=(375, 500), mode="bilinear", align_corners=False)[0]
        noise = torch.randn(img.shape, generator=gen) * 12
        path = tmp / f"synthetic_{i:02d}.jpg"
        path.write_bytes(encode_jpeg((img + noise).clamp(0, 255).to(torch.uint8), quality=90).numpy().tobytes())
        out.append(path)
    return out


def _measure(
    engine: Engine, files: list[Path], batch: int, warmup: int, iters: int, flops: int, peak_gflops: float
) -> BenchRow:
    detector = engine.detector
    names = detector.class_names
    pre, fwd, post, total = [], [], [], []
    cursor = 0
    for i in range(warmup + iters):
        paths = [files[(cursor + j) % len(files)] for j in range(batch)]
        cursor += batch
        try:
            t0 = time.perf_counter()
            images = [read_image(p) for p in paths]
            x = detector.prepare(images)
            t1 = time.perf_counter()
            out = engine.forward(x)
            t2 = time.perf_counter()
            dets = engine.post(out)
            [detections_to_prediction(d, int(im.shape[2]), int(im.shape[1]), names) for d, im in zip(dets, images)]
            t3 = time.perf_counter()
        except SsdError:
            raise
        except Exception as e:  # e.g. torch.compile failing on first use, out of memory at a large batch
            text = first_line(e)
            return BenchRow(engine.name, batch, "skipped", f"failed: {text}")
        if i >= warmup:
            pre.append(t1 - t0)
            fwd.append(t2 - t1)
            post.append(t3 - t2)
            total.append(t3 - t0)
    ms = lambda v: float(np.median(v) * 1000)  # noqa: E731
    p50, p90 = float(np.percentile(total, 50) * 1000), float(np.percentile(total, 90) * 1000)
    fwd_ms = ms(fwd)
    ideal_ms = flops * batch / (peak_gflops * 1e9) * 1000
    return BenchRow(
        engine.name,
        batch,
        "ok",
        "",
        p50,
        p90,
        batch * 1000 / p50,
        ms(pre),
        fwd_ms,
        ms(post),
        batch * 1000 / fwd_ms,
        fwd_ms / ideal_ms if ideal_ms > 0 else None,
        p50 / fwd_ms,
    )


def _accuracy_records(data: str | os.PathLike, split: str) -> tuple[list, list[str]]:
    ds = load_prepared(data, splits=[split])
    return ds.split(split), ds.classes


def _accuracy(engine: Engine, records: list, classes: list[str], reporter: Reporter) -> float | None:
    report = evaluate_detector(engine.detector, records, classes, metrics=("voc07",), reporter=reporter)
    value = float(report.map)
    return None if np.isnan(value) else value
