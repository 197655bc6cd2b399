"""The scripts in ``examples/`` run and agree with the library they demonstrate."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssdcli.checkpoint import load_checkpoint, save_checkpoint
from ssdcli.deploy.onnx_export import export_onnx
from ssdcli.inference import Detector
from ssdcli.models.registry import build_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def mini_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("example-onnx")
    torch.manual_seed(0)
    ckpt = tmp / "mini.pth"
    save_checkpoint(ckpt, build_model("ssd-mini", 3, class_names=["cat", "dog"]).eval())
    onnx_path = tmp / "mini.onnx"
    export_onnx(ckpt, onnx_path, verify=False)
    return ckpt, onnx_path


def test_standalone_onnxruntime_example_equals_detector(mini_onnx: tuple[Path, Path], tmp_path: Path) -> None:
    """At the model's input size both resizes are the identity, so the script (no torch, no ssdcli) must give the
    Detector's detections: same labels, same scores, same pixel boxes."""
    ex = _load("onnxruntime_standalone")
    ckpt, onnx_path = mini_onnx
    rng = np.random.default_rng(0)
    path = tmp_path / "img.png"
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(path)
    session, meta = ex.load_session(str(onnx_path))
    [rows] = ex.detect(session, meta, [ex.open_rgb(str(path))])
    [pred] = Detector.from_checkpoint(onnx_path, device="cpu").predict([str(path)])
    assert len(rows) == len(pred) > 0
    assert [r["label"] for r in rows] == pred.names
    np.testing.assert_allclose([r["score"] for r in rows], pred.scores, rtol=1e-6)
    np.testing.assert_allclose([r["box"] for r in rows], pred.boxes, atol=0.006)  # the script rounds to 0.01 px
    # and the ONNX model equals the PyTorch checkpoint it came from
    [torch_pred] = Detector.from_checkpoint(ckpt, device="cpu").predict([str(path)])
    np.testing.assert_allclose(torch_pred.scores[:20], pred.scores[:20], atol=1e-4)


def test_standalone_preprocess_follows_the_metadata(mini_onnx: tuple[Path, Path]) -> None:
    ex = _load("onnxruntime_standalone")
    _, onnx_path = mini_onnx
    _, meta = ex.load_session(str(onnx_path))
    flat = Image.new("RGB", (300, 200), (124, 116, 104))
    x = ex.preprocess(flat, meta)
    assert x.shape == (3, 128, 128) and x.dtype == np.float32
    expected = (np.array([124, 116, 104]) / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x[:, 64, 64], expected, atol=1e-5)


def test_python_api_example_trains_saves_and_evaluates(tmp_path: Path) -> None:
    ex = _load("python_api")
    mean_ap = ex.main(["--dir", str(tmp_path), "--iters", "6", "--batch", "4", "--train-images", "8",
                       "--test-images", "4"])
    assert 0.0 <= mean_ap <= 1.0
    ckpt = load_checkpoint(tmp_path / "ssd-mini.pth")  # weights_only load of what the example saved
    assert ckpt.config.arch == "ssd-mini"
    assert ckpt.config.class_names == ["circle", "square", "star", "triangle"]
