"""`ssd benchmark`: report rows per engine and batch, skipped engines, FLOPs/peak, training and accuracy rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ssdcli.checkpoint import save_checkpoint
from ssdcli.cli.main import app
from ssdcli.deploy.benchmark import run_benchmark
from ssdcli.deploy.flops import count_flops, measure_matmul_peak
from ssdcli.errors import SsdError
from ssdcli.models import registry
from ssdcli.models.registry import build_model
from ssdcli.models.ssd import SSD
from ssdcli.priors import PriorSpec

TINY = "tiny-bench-test-ssd"
TINY_SPEC = PriorSpec(
    image_size=64,
    feature_maps=(8, 4),
    min_sizes=(12.0, 30.0),
    max_sizes=(30.0, 60.0),
    aspect_ratios=((2.0,), (2.0, 3.0)),
)
FAST = {"warmup": 1, "iters": 2}


class _TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1), nn.ReLU())  # 64 -> 16
        self.s1 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())  # 8
        self.s2 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())  # 4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.s1(self.stem(x))
        return [a, self.s2(a)]


def _build_tiny(config):  # type: ignore[no-untyped-def]
    return SSD(config, _TinyBackbone(), [16, 16], PriorSpec.from_dict(config.extra["prior_spec"]))


def _row(report, engine: str, batch: int | None = None):  # type: ignore[no-untyped-def]
    return next(r for r in report.rows if r.engine == engine and batch in (None, r.batch))


@pytest.fixture(scope="module", autouse=True)
def tiny_arch():
    registry.register(TINY, 64, default_extra=lambda _size: {"prior_spec": TINY_SPEC.to_dict()})(_build_tiny)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    registry.unregister(TINY)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench") / "tiny.pth"
    save_checkpoint(path, build_model(TINY, 5, class_names=["circle", "square", "triangle", "star"]))
    return path


def test_flops_and_peak() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, 16) == 2 * 3 * 8 * 9 * 16 * 16  # 2 FLOPs per multiply-add, no arithmetic done
    peak = measure_matmul_peak("cpu", size=256, repeats=2)
    assert peak.gflops > 0 and peak.size == 256 and peak.dtype == "float32"


def test_report_rows_and_skips(ckpt: Path) -> None:
    report = run_benchmark(ckpt, batches=[1, 3], engines=["torch", "onnx", "tensorrt"], device="cpu", **FAST)
    assert [(r.engine, r.batch, r.status) for r in report.rows] == [
        ("torch", 1, "ok"),
        ("torch", 3, "ok"),
        ("onnx", 1, "ok"),
        ("onnx", 3, "ok"),
        ("tensorrt", None, "skipped"),
    ]
    assert "CUDA" in _row(report, "tensorrt").reason
    for r in report.rows[:4]:
        assert 0 < r.forward_ms <= r.latency_p50_ms <= r.latency_p90_ms
        assert r.pre_ms > 0 and r.post_ms >= 0 and r.peak_ratio > 0
        assert r.throughput == pytest.approx(r.batch * 1000 / r.latency_p50_ms)
        assert r.map is None
    assert report.model["arch"] == TINY and report.model["gflops_per_image"] > 0
    assert report.peak["gflops"] > 0 and report.peak["device"] == "cpu"
    env = report.environment
    assert env["device"] == "cpu" and env["versions"]["torch"] and env["versions"]["onnxruntime"]
    assert report.engines["onnx"]["providers"] == ["CPUExecutionProvider"] and report.engines["onnx"]["nms_in_graph"]
    assert any("synthetic" in n for n in report.notes)
    assert json.loads(json.dumps(report.to_dict()))["rows"][4]["status"] == "skipped"


def test_onnx_weights_compile_failure_and_training(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ssdcli.deploy.onnx_export import export_onnx

    onnx_path = ckpt.with_name("bench.onnx")
    export_onnx(ckpt, onnx_path, verify=False, force=True)

    def broken_compile(*_a, **_k):  # noqa: ANN002, ANN003
        raise RuntimeError("no C compiler\nmore detail")

    monkeypatch.setattr(torch, "compile", broken_compile)
    report = run_benchmark(
        onnx_path, batches=[2], engines=["torch", "compile", "onnx"], device="cpu", train=True, **FAST
    )
    assert _row(report, "torch").status == "skipped" and ".pth" in _row(report, "torch").reason
    assert _row(report, "compile").status == "skipped"
    assert _row(report, "onnx", 2).ok
    (train,) = report.train
    assert train.status == "ok" and train.batch == 2 and train.images_per_s > 0

    report = run_benchmark(ckpt, batches=[1], engines=["compile"], device="cpu", **FAST)
    assert _row(report, "compile").status == "skipped" and "no C compiler" in _row(report, "compile").reason


def test_accuracy_column(ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("ssdcli.engine.evaluator")
    from ssdcli.data.prepare import prepare_voc
    from ssdcli.data.samples import SAMPLE_CLASSES, write_sample_dataset

    voc = write_sample_dataset(tmp_path / "voc", num_train=1, num_test=3, image_size=(64, 96))
    prepare_voc(voc, tmp_path / "prepared", classes=list(SAMPLE_CLASSES))
    report = run_benchmark(
        ckpt, batches=[2], engines=["torch", "onnx"], device="cpu", accuracy_data=tmp_path / "prepared", **FAST
    )
    torch_map, onnx_map = _row(report, "torch", 2).map, _row(report, "onnx", 2).map
    assert torch_map is not None and 0.0 <= torch_map <= 1.0
    assert onnx_map == pytest.approx(torch_map, abs=1e-3)  # within 0.1 mAP points
    other = tmp_path / "other.pth"
    save_checkpoint(other, build_model(TINY, 3))
    with pytest.raises(SsdError, match="do not match"):  # checked before any timing
        run_benchmark(other, batches=[1], engines=["torch"], device="cpu", accuracy_data=tmp_path / "prepared")


def test_bad_arguments(ckpt: Path) -> None:
    with pytest.raises(SsdError, match="unknown engine"):
        run_benchmark(ckpt, engines=["torch", "tvm"], device="cpu")
    with pytest.raises(SsdError, match="--batch"):
        run_benchmark(ckpt, batches=[0], device="cpu")
    with pytest.raises(SsdError, match="file not found"):
        run_benchmark(ckpt.with_name("missing.pth"), device="cpu")


def test_cli_benchmark(ckpt: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "bench.json"
    res = runner.invoke(
        app,
        [
            "benchmark",
            "--weights",
            str(ckpt),
            "--batch",
            "1",
            "--engines",
            "torch,tensorrt",
            "--device",
            "cpu",
            "--iters",
            "2",
            "--warmup",
            "0",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "skipped" in res.output and "GFLOPs/image" in res.output and "matmul peak" in res.output
    data = json.loads(out.read_text())
    assert [r["engine"] for r in data["rows"]] == ["torch", "tensorrt"]
    assert data["settings"]["batches"] == [1] and data["environment"]["versions"]["torch"]
    for args, message in [
        (["--batch", "1,x"], "--batch"),
        (["--engines", "torch,foo"], "unknown engine"),
        (["--accuracy"], "--data"),
    ]:
        res = runner.invoke(app, ["benchmark", "--weights", str(ckpt), "--device", "cpu", *args])
        assert res.exit_code == 2, res.output
        assert message in res.output and "Traceback" not in res.output
        assert len([line for line in res.output.splitlines() if line.strip()]) == 1
