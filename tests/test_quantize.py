"""Issue 20: INT8 ONNX export (static quantization calibrated on the train split) and bf16 PyTorch on CPU.

One tiny SSDLite (128 px, random weights with spread class scores) is quantized once per module on 4 training
images of the built-in sample data; the int8 parity tolerance is the one stated in :mod:`ssdcli.deploy.quantize`
(confident detections: same class, IoU >= 0.7, score within 0.15, at least 80% matched both ways).
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from cli_helpers import one_line_error, ssd

from ssdcli.checkpoint import save_checkpoint
from ssdcli.data.records import load_prepared
from ssdcli.data.samples import SAMPLE_CLASSES
from ssdcli.deploy.onnx_export import _export, export_onnx, load_checkpoint_model, read_metadata
from ssdcli.deploy.quantize import (
    CALIBRATION_SPLIT,
    CalibrationImages,
    QuantizeSpec,
    calibration_records,
    int8_agreement,
    quantize_model,
)
from ssdcli.device import cpu_bf16_supported
from ssdcli.errors import SsdError
from ssdcli.inference import Detector, TorchBackend
from ssdcli.inference.onnx_backend import OnnxBackend
from ssdcli.models import build_model
from ssdcli.models.export_graph import INPUT_NAME
from ssdcli.postprocess import PostprocessConfig

pytestmark = pytest.mark.usefixtures("one_thread_module")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("ssdlite320", len(SAMPLE_CLASSES) + 1, class_names=list(SAMPLE_CLASSES), image_size=128)
    with torch.no_grad():  # spread the class scores of the fresh head: some confident detections, few score ties
        for name, p in model.named_parameters():
            if name.startswith("conf."):
                p.copy_(torch.randn(p.shape)) if name.endswith("bias") else p.mul_(10.0)
    return model.eval()


@pytest.fixture(scope="module")
def data(prepared_sample) -> Path:  # type: ignore[no-untyped-def]
    return prepared_sample(6, 3)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("q") / "tiny.pth"
    save_checkpoint(path, _model())
    return path


@pytest.fixture(scope="module")
def int8_export(ckpt: Path, data: Path):  # type: ignore[no-untyped-def]
    out = ckpt.with_name("tiny-int8.onnx")
    return export_onnx(ckpt, out, int8=QuantizeSpec(data, images=4)), out


def test_int8_export_runs_in_onnxruntime_and_matches_float(int8_export) -> None:  # type: ignore[no-untyped-def]
    report, out = int8_export
    proto = onnx.load(str(out))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    assert "NonMaxSuppression" in ops
    # decoding stays float: no Q/DQ pair feeds the NMS or the box/score outputs
    producer = {o: n for n in proto.graph.node for o in n.output}
    nms = next(n for n in proto.graph.node if n.op_type == "NonMaxSuppression")
    assert all(producer[i].op_type != "DequantizeLinear" for i in nms.input if i in producer)
    # parity against the float PyTorch model (stated int8 tolerance), on the 3 test images
    assert report.check_source.startswith("3 test image(s)")
    check = report.int8_check
    assert check is not None and check.ok and check.confident > 0
    assert check.min_iou >= 0.7 and check.max_score_diff <= 0.15
    assert report.graph_vs_decode.equal  # in-graph decode/NMS is exactly PyTorch's on the int8 raw outputs
    assert report.map_split == "test" and report.map_images == 3
    assert report.map_float is not None and report.map_int8 is not None
    # it runs through the ordinary backend
    backend = OnnxBackend(out, "cpu")
    dets = backend.detect(torch.randn(2, 3, 128, 128), PostprocessConfig())
    assert len(dets) == 2


def test_int8_metadata_round_trip(int8_export, data: Path) -> None:  # type: ignore[no-untyped-def]
    report, out = int8_export
    meta = read_metadata(onnx.load(str(out)))
    q = meta["quantization"]
    assert q["dtype"] == "int8" and q["format"] == "QDQ"
    assert q["calibration"] == {"method": "minmax", "images": 4, "split": "train", "dataset": data.name}
    assert meta["input_dtype"] == "float32"
    assert OnnxBackend(out, "cpu").meta["quantization"] == q == report.int8


def test_calibration_reads_only_the_train_split(ckpt: Path, data: Path) -> None:
    ds = load_prepared(data)
    train, test = {r.id for r in ds.split("train")}, {r.id for r in ds.split("test")}
    records = calibration_records(data, 3)
    assert len(records) == 3 and {r.id for r in records} <= train
    assert [r.id for r in calibration_records(data, 100)] == [r.id for r in ds.split(CALIBRATION_SPLIT)]
    model = load_checkpoint_model(ckpt)
    proto = _export(model, 17, True, False, True, PostprocessConfig())
    reader = CalibrationImages(records, model.config, INPUT_NAME)
    result = quantize_model(proto, list(model.output_names), reader)
    assert result.calibrated_on == [r.id for r in records]
    assert not set(result.calibrated_on) & test
    assert result.quantized_nodes > 0 and "Conv" in result.float_op_types  # the prediction heads


def test_calibration_data_errors(tmp_path: Path, data: Path) -> None:
    with pytest.raises(SsdError, match="no such folder"):
        calibration_records(tmp_path / "missing", 4)
    only_test = tmp_path / "only-test"
    only_test.mkdir()
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["splits"] = {"test": manifest["splits"]["test"]}
    (only_test / "manifest.json").write_text(json.dumps(manifest))
    (only_test / manifest["splits"]["test"]["file"]).write_text((data / manifest["splits"]["test"]["file"]).read_text())
    with pytest.raises(SsdError, match="no 'train' split"):
        calibration_records(only_test, 4)
    empty = tmp_path / "empty"
    empty.mkdir()
    manifest["splits"] = {"train": {"file": "train.jsonl", "images": 0, "objects": 0}}
    (empty / "manifest.json").write_text(json.dumps(manifest))
    (empty / "train.jsonl").write_text("")
    with pytest.raises(SsdError, match="split is empty"):
        calibration_records(empty, 4)
    with pytest.raises(SsdError, match="--calib-images"):
        QuantizeSpec(data, images=0)


def test_cli_refuses_int8_without_usable_calibration_data(ckpt: Path, tmp_path: Path) -> None:
    res = ssd("export-onnx", ckpt, "-o", tmp_path / "a.onnx", "--int8")
    assert res.exit_code == 2 and "--calib-data" in one_line_error(res)
    res = ssd("export-onnx", ckpt, "-o", tmp_path / "b.onnx", "--int8", "--calib-data", tmp_path / "nope")
    assert res.exit_code == 2 and "no such folder" in one_line_error(res)
    res = ssd("export-onnx", ckpt, "-o", tmp_path / "c.onnx", "--int8", "--calib-data", tmp_path, "--half")
    assert res.exit_code == 2 and "--half" in one_line_error(res)
    assert not any(tmp_path.glob("*.onnx"))


def test_eval_and_detect_accept_the_int8_model(int8_export, data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, out = int8_export
    res = ssd("eval", "-w", out, "--data", data, "--metric", "voc07", "--json", tmp_path / "e.json", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "map" in json.loads((tmp_path / "e.json").read_text())
    image = Path(load_prepared(data).split("test")[0].path)
    res = ssd("detect", image, "-w", out, "--json", tmp_path / "d.json", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert isinstance(json.loads((tmp_path / "d.json").read_text()), (list, dict))


@pytest.mark.skipif(not cpu_bf16_supported(), reason="CPU without native bfloat16 (AVX-512 BF16 / AMX)")
def test_bf16_backend_matches_fp32_within_tolerance() -> None:
    """bf16 autocast on CPU: same confident detections as fp32 within the int8 tolerance, raw outputs within 5%."""
    model = _model()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    fp32 = TorchBackend(model, torch.device("cpu"))
    bf16 = TorchBackend(_model(), torch.device("cpu"), half=True)
    assert bf16.bf16 and not fp32.bf16
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        raw_bf16 = [o.float() for o in bf16.model(x)]
    with torch.no_grad():
        raw_fp32 = model(x)
    for a, b in zip(raw_bf16, raw_fp32):
        assert float((a - b).abs().max()) <= 0.05 * float(b.abs().max())
    agreement = int8_agreement(fp32.detect(x, PostprocessConfig()), bf16.detect(x, PostprocessConfig()))
    assert agreement.confident > 0 and agreement.ok, agreement.summary()


def test_bf16_refused_where_the_cpu_lacks_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ssdcli.inference import detector

    monkeypatch.setattr(detector, "cpu_bf16_supported", lambda: False)
    with pytest.raises(SsdError, match="bfloat16"):
        TorchBackend(_model(), torch.device("cpu"), half=True)
    assert not TorchBackend(_model(), torch.device("cpu")).bf16
    assert Detector(TorchBackend(_model(), torch.device("cpu"))).class_names == list(SAMPLE_CLASSES)


def test_benchmark_runs_float_int8_and_bf16_side_by_side(ckpt: Path, data: Path, tmp_path: Path) -> None:
    res = ssd("benchmark", "-w", ckpt, "--engines", "onnx,int8,torch,bf16", "--batch", "1", "--iters", "1",
              "--warmup", "0", "--accuracy", "--data", data, "--json", tmp_path / "b.json", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "CPU features for int8/bf16 kernels" in res.output
    report = json.loads((tmp_path / "b.json").read_text())
    rows = {r["engine"]: r for r in report["rows"]}
    expected = {"onnx", "int8", "torch"} | ({"bf16"} if cpu_bf16_supported() else set())
    assert {e for e, r in rows.items() if r["status"] == "ok"} == expected
    assert all(rows[e]["map"] is not None and rows[e]["latency_p50_ms"] > 0 for e in expected)
    assert report["engines"]["int8"]["dtype"] == "int8 (QDQ)" and report["engines"]["onnx"]["dtype"] == "float32"
    assert set(report["environment"]["cpu_features"]) == {"flags", "known", "torch_cpu_capability"}


def test_benchmark_int8_without_calibration_data_is_a_skipped_row(ckpt: Path) -> None:
    res = ssd("benchmark", "-w", ckpt, "--engines", "int8", "--batch", "1", "--iters", "1", "--warmup", "0",
              "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "--calib-data" in res.output and "skipped" in res.output
