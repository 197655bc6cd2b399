"""`ssd export-onnx`, the in-graph NMS contract and the ONNX Runtime backend.

Most cases use a tiny SSD registered for this module only (64 px input, 352 priors: exports in well under a
second); one case exports the real ``ssdlite320``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ssdcli.checkpoint import save_checkpoint
from ssdcli.cli.main import app
from ssdcli.deploy.onnx_export import export_onnx, read_metadata
from ssdcli.deploy.verify import compare_detections
from ssdcli.errors import SsdError
from ssdcli.inference import Detector
from ssdcli.inference.onnx_backend import OnnxBackend
from ssdcli.models import registry
from ssdcli.models.export_graph import DETECTION_OUTPUTS, detections_from_outputs
from ssdcli.models.registry import build_model
from ssdcli.models.ssd import SSD
from ssdcli.models.ssd.graph import ssd_export_graph
from ssdcli.postprocess import PostprocessConfig
from ssdcli.priors import PriorSpec

TINY = "tiny-export-test-ssd"
TINY_SPEC = PriorSpec(
    image_size=64,
    feature_maps=(8, 4),
    min_sizes=(12.0, 30.0),
    max_sizes=(30.0, 60.0),
    aspect_ratios=((2.0,), (2.0, 3.0)),
)


class _TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU()
        )
        self.s1 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.s2 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.s1(self.stem(x))
        return [a, self.s2(a)]


def _build_tiny(config):  # type: ignore[no-untyped-def]
    return SSD(config, _TinyBackbone(), [16, 16], PriorSpec.from_dict(config.extra["prior_spec"]))


@pytest.fixture(scope="module", autouse=True)
def tiny_arch():
    registry.register(TINY, 64, default_extra=lambda _size: {"prior_spec": TINY_SPEC.to_dict()})(_build_tiny)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threading only costs time on a busy machine
    yield
    torch.set_num_threads(threads)
    registry.unregister(TINY)


def tiny_model(num_classes: int = 3, seed: int = 0) -> SSD:
    torch.manual_seed(seed)
    model = build_model(TINY, num_classes, class_names=[f"c{i}" for i in range(1, num_classes)])
    with torch.no_grad():  # varied, unsaturated scores: no exact ties between priors
        for head in model.conf:
            head.weight.mul_(3.0)
            head.bias.normal_(0.0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_arch) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.pth"
    save_checkpoint(path, tiny_model())
    return path


@pytest.fixture(scope="module")
def exported(tiny_ckpt: Path):  # type: ignore[no-untyped-def]
    out = tiny_ckpt.with_name("tiny.onnx")
    return export_onnx(tiny_ckpt, out), out


def _batch(n: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 64, 64, generator=gen)


@pytest.mark.parametrize(
    "pp",
    [
        PostprocessConfig(),
        PostprocessConfig(score_threshold=0.3, nms_threshold=0.3, top_k=7, pre_nms_top_k=50),
        PostprocessConfig(score_threshold=0.99),  # nothing passes: all slots padding
    ],
)
def test_export_graph_equals_decode_in_pytorch(pp: PostprocessConfig) -> None:
    model = tiny_model()
    x = _batch(3)
    with torch.no_grad():
        num, boxes, scores, labels = ssd_export_graph(model, pp)(x)
        ref = model.decode(model(x), pp)
    assert boxes.shape == (3, min(pp.top_k, 2 * min(pp.pre_nms_top_k, 352)), 4)
    assert num.tolist() == [len(d) for d in ref]
    assert bool((scores[:, 1:] <= scores[:, :-1]).all())  # sorted per image, padding (0) last
    assert compare_detections(ref, detections_from_outputs(num, boxes, scores, labels), 1e-6, 1e-6).equal


def test_export_checks_and_metadata(exported) -> None:  # type: ignore[no-untyped-def]
    report, out = exported
    assert report.checked and report.batch_sizes == [2, 1]
    assert set(report.raw_diff) == {"locs", "logits"}
    assert all(report.raw_diff[k] <= report.raw_tol[k] for k in report.raw_diff)
    assert report.graph_vs_decode.equal and report.graph_vs_decode.reference > 0
    assert report.onnx_vs_torch.equal and report.onnx_vs_torch.matched == report.onnx_vs_torch.reference
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert [o.name for o in proto.graph.output] == list(DETECTION_OUTPUTS)
    assert any(n.op_type == "NonMaxSuppression" for n in proto.graph.node)
    meta = read_metadata(proto)
    assert meta["config"] == tiny_model().config.to_dict()
    assert meta["postprocess"] == {"score_threshold": 0.01, "nms_threshold": 0.45, "top_k": 200, "pre_nms_top_k": 400}
    assert meta["max_detections"] == 200 and meta["dynamic_batch"] is True
    plain = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(plain["class_names"]) == ["c1", "c2"] and plain["image_size"] == "64"


def test_dynamic_batch_and_backend_roundtrip(exported) -> None:  # type: ignore[no-untyped-def]
    _, out = exported
    model = tiny_model()
    backend = OnnxBackend(out, "cpu")
    assert backend.config.to_dict() == model.config.to_dict()
    assert backend.fixed_batch is None and backend.providers == ["CPUExecutionProvider"]
    for n in (1, 3):
        x = _batch(n, seed=n)
        with torch.no_grad():
            ref = model.decode(model(x), PostprocessConfig())
        got = backend.detect(x, PostprocessConfig())
        assert len(got) == n
        assert compare_detections(ref, got).equal
    # stricter settings than the baked ones are applied exactly on top of the graph's output
    strict = PostprocessConfig(score_threshold=0.3, top_k=5)
    with torch.no_grad():
        ref = model.decode(model(_batch(2)), strict)
    assert compare_detections(ref, backend.detect(_batch(2), strict)).equal
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend.detect(_batch(1), PostprocessConfig(nms_threshold=0.6))
    assert any("inside the graph" in str(w.message) for w in caught)


def test_detector_predicts_like_pytorch(exported, tiny_ckpt: Path) -> None:  # type: ignore[no-untyped-def]
    _, out = exported
    gen = torch.Generator().manual_seed(3)
    images = [torch.randint(0, 256, (3, 48 + 10 * i, 80), generator=gen, dtype=torch.uint8) for i in range(3)]
    onnx_preds = Detector.from_checkpoint(out, "cpu").predict(images)
    torch_preds = Detector.from_checkpoint(tiny_ckpt, "cpu").predict(images)
    for a, b in zip(onnx_preds, torch_preds):
        assert (a.width, a.height) == (b.width, b.height) and len(a) == len(b) > 0
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)  # pixels
        assert a.names == b.names


def test_no_nms_export_writes_priors(tiny_ckpt: Path) -> None:
    out = tiny_ckpt.with_name("raw.onnx")
    report = export_onnx(tiny_ckpt, out, nms=False, force=True)
    assert report.priors_path == out.with_name("raw.priors.npy") and report.graph_vs_decode is None
    assert report.onnx_vs_torch.equal
    model = tiny_model()
    np.testing.assert_array_equal(np.load(report.priors_path), model.priors.numpy())
    proto = onnx.load(str(out))
    assert [o.name for o in proto.graph.output] == ["locs", "logits"]
    assert not any(n.op_type == "NonMaxSuppression" for n in proto.graph.node)
    x = _batch(2)
    with torch.no_grad():
        ref = model.decode(model(x), PostprocessConfig(nms_threshold=0.6))
    backend = OnnxBackend(out, "cpu")
    assert not backend.nms
    assert compare_detections(ref, backend.detect(x, PostprocessConfig(nms_threshold=0.6))).equal  # any settings
    report.priors_path.unlink()  # priors are regenerated from the spec in the metadata when the file is missing
    assert compare_detections(ref, OnnxBackend(out, "cpu").detect(x, PostprocessConfig(nms_threshold=0.6))).equal


def test_static_and_half_exports(tiny_ckpt: Path) -> None:
    out = tiny_ckpt.with_name("static.onnx")
    export_onnx(tiny_ckpt, out, dynamic_batch=False, force=True)
    backend = OnnxBackend(out, "cpu")
    assert backend.fixed_batch == 1
    x = _batch(3)
    model = tiny_model()
    with torch.no_grad():
        ref = model.decode(model(x), PostprocessConfig())
    assert compare_detections(ref, backend.detect(x, PostprocessConfig())).equal  # run image by image
    half = tiny_ckpt.with_name("half.onnx")
    report = export_onnx(tiny_ckpt, half, half=True, force=True)
    assert report.graph_vs_decode.equal  # NMS logic exact; fp16 network only approximately equal
    hb = OnnxBackend(half, "cpu")
    assert hb.input_dtype == np.float16 and read_metadata(onnx.load(str(half)))["input_dtype"] == "float16"
    assert len(hb.detect(x, PostprocessConfig())) == 3


def test_refuses_existing_output_and_bad_input(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(SsdError, match="already exists"):
        export_onnx(tiny_ckpt, out)
    assert out.read_bytes() == b"keep me"
    export_onnx(tiny_ckpt, out, force=True, verify=False)
    assert OnnxBackend(out, "cpu").nms
    with pytest.raises(SsdError, match="opset"):
        export_onnx(tiny_ckpt, tmp_path / "old.onnx", opset=9)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint\n")
    with pytest.raises(SsdError, match="junk.pth"):
        export_onnx(junk, tmp_path / "junk.onnx")
    with pytest.raises(SsdError, match="already an ONNX model"):
        export_onnx(out, tmp_path / "again.onnx")
    plain = tmp_path / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(nn.Conv2d(3, 1, 1), (torch.zeros(1, 3, 4, 4),), plain, dynamo=False)
    with pytest.raises(SsdError, match="no ssdcli metadata"):
        OnnxBackend(plain, "cpu")
    with pytest.raises(SsdError, match="CUDA"):
        OnnxBackend(out, "cpu", engine="tensorrt")
    assert not (tmp_path / "old.onnx").exists() and not (tmp_path / "junk.onnx").exists()


def test_cli_export(tiny_ckpt: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli.onnx"
    res = runner.invoke(app, ["export-onnx", str(tiny_ckpt), "-o", str(out), "--conf", "0.05", "--top-k", "50"])
    assert res.exit_code == 0, res.output
    assert "detections equal" in res.output and "max |onnx - torch| locs" in res.output
    assert read_metadata(onnx.load(str(out)))["postprocess"]["top_k"] == 50
    for args, message in [
        ([str(tiny_ckpt), "-o", str(out)], "already exists"),
        ([str(tmp_path / "missing.pth")], "file not found"),
        ([str(tiny_ckpt), "-o", str(tmp_path / "x.onnx"), "--opset", "8"], "--opset 8"),
        ([str(tiny_ckpt), "-o", str(tmp_path / "y.onnx"), "--check-images", str(tmp_path / "nope")], "--check-images"),
    ]:
        res = runner.invoke(app, ["export-onnx", *args])
        assert res.exit_code == 2, res.output
        assert message in res.output and "Traceback" not in res.output
        assert len([line for line in res.output.splitlines() if line.strip()]) == 1
    res = runner.invoke(app, ["export-onnx", str(tiny_ckpt), "-o", str(tmp_path / "raw.onnx"), "--no-nms", "--static"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "raw.priors.npy").is_file()


@pytest.mark.slow
def test_ssdlite320_export(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("ssdlite320", 3)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:  # running statistics from one batch, so that activations (and scores) are not vanishingly small
        bn.momentum = None
        bn.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 320, 320))
    save_checkpoint(tmp_path / "lite.pth", model.eval())
    report = export_onnx(tmp_path / "lite.pth", tmp_path / "lite.onnx")
    assert report.graph_vs_decode.equal and report.onnx_vs_torch.equal
    assert OnnxBackend(tmp_path / "lite.onnx", "cpu").config.arch == "ssdlite320"


def test_export_uses_the_models_nms_threshold_unless_given(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model()
    model.config.nms_threshold = 0.3
    ckpt = tmp_path / "own.pth"
    save_checkpoint(ckpt, model)
    baked = export_onnx(ckpt, tmp_path / "own.onnx", verify=False)
    assert baked.postprocess.nms_threshold == 0.3
    assert read_metadata(onnx.load(str(tmp_path / "own.onnx")))["postprocess"]["nms_threshold"] == 0.3
    given = export_onnx(ckpt, tmp_path / "given.onnx", verify=False, postprocess=PostprocessConfig(nms_threshold=0.5))
    assert given.postprocess.nms_threshold == 0.5
    raw = export_onnx(ckpt, tmp_path / "raw.onnx", verify=False, nms=False)
    assert raw.postprocess is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "NMS is inside the graph with other settings" warning
        for name, expected in (("own", 0.3), ("given", 0.5), ("raw", 0.3)):
            detector = Detector(OnnxBackend(tmp_path / f"{name}.onnx", "cpu"))
            assert detector.postprocess.nms_threshold == expected, name
            detector.predict_tensors([torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)])
