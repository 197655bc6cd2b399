"""The `ssd` command skeleton, --device parsing, and the Detector API (paths, PIL images, arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import ssdcli
from ssdcli.boxes import relative_to_pixel
from ssdcli.cli.main import app
from ssdcli.device import resolve_device
from ssdcli.errors import SsdError
from ssdcli.inference import Detector, TorchBackend
from ssdcli.models import build_model
from ssdcli.postprocess import PostprocessConfig

COMMANDS = ["prepare-voc", "train", "eval", "detect", "export-onnx", "benchmark", "quickstart", "convert"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_resolve_device_cpu_and_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_resolve_device_cuda_without_cuda(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SsdError) as info:
        resolve_device(spec)
    msg = str(info.value)
    assert "\n" not in msg and "CUDA is not available" in msg and f"--device {spec}" in msg


@pytest.mark.parametrize("spec", ["bogus", "gpu", "cuda0", "tpu"])
def test_resolve_device_bogus(spec: str) -> None:
    with pytest.raises(SsdError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device(spec)


def test_cli_device_cuda_without_cuda_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(
        app, ["detect", str(tmp_path), "--weights", str(tmp_path / "w.pth"), "--device", "cuda"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "CUDA is not available" in lines[0]


# ----------------------------------------------------------------------------- Detector API


@pytest.fixture(scope="module")
def detector() -> Detector:
    torch.manual_seed(0)
    model = build_model("ssdlite320", 3, class_names=["cat", "dog"])
    return Detector(TorchBackend(model, torch.device("cpu")), PostprocessConfig(top_k=50))


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check(pred: ssdcli.Prediction, w: int, h: int) -> None:
    assert (pred.width, pred.height) == (w, h)
    k = len(pred)
    assert 0 < k <= 50  # a random-init model scores ~1/3 everywhere: plenty above 0.01
    assert pred.boxes.shape == (k, 4) and pred.boxes.dtype == np.float32
    assert pred.scores.shape == (k,) and pred.labels.shape == (k,)
    assert np.all(np.diff(pred.scores) <= 0)
    assert set(pred.labels.tolist()) <= {1, 2}
    assert pred.names == [["cat", "dog"][i - 1] for i in pred.labels]
    # VOC pixel convention: inside [1, W] x [1, H], xmin <= xmax
    b = pred.boxes
    assert b[:, 0].min() >= 1 and b[:, 1].min() >= 1 and b[:, 2].max() <= w and b[:, 3].max() <= h
    assert np.all(b[:, 0] <= b[:, 2]) and np.all(b[:, 1] <= b[:, 3])
    assert b[:, 2].max() > 320 or w <= 320  # scaled to the original size, not the 320 input


def test_detector_path_pil_array(detector: Detector, tmp_path: Path) -> None:
    a = _image(240, 500, 0)  # wide
    b = _image(410, 180, 1)  # tall
    c = _image(100, 130, 2)  # smaller than the input
    path = tmp_path / "a.png"
    Image.fromarray(a).save(path)
    preds = detector.predict([str(path), Image.fromarray(b), c])
    assert len(preds) == 3
    _check(preds[0], 500, 240)
    _check(preds[1], 180, 410)
    _check(preds[2], 130, 100)
    # the same pixels as path, PIL image, array or tensor give the same detections
    single = [detector.predict(x)[0] for x in (path, Image.fromarray(a), a, torch.from_numpy(a).permute(2, 0, 1))]
    for p in single:
        np.testing.assert_allclose(p.boxes, preds[0].boxes, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(p.scores, preds[0].scores, rtol=1e-5, atol=1e-6)
    # batching does not change the result
    np.testing.assert_allclose(detector.predict([b], batch_size=1)[0].boxes, preds[1].boxes, rtol=1e-4, atol=1e-2)


def test_detector_boxes_are_relative_detections_in_pixels(detector: Detector) -> None:
    img = torch.from_numpy(_image(300, 450, 3)).permute(2, 0, 1).contiguous()
    pred = detector.predict_tensors([img])[0]
    dets = detector.backend.detect(detector.prepare([img]), detector.postprocess)[0]
    expected = relative_to_pixel(dets.boxes, 450, 300).numpy()
    np.testing.assert_allclose(pred.boxes, expected, rtol=1e-6, atol=1e-4)
    records = pred.to_records("img1")
    assert records[0]["image_id"] == "img1" and records[0]["label"] in {"cat", "dog"}
    assert len(records[0]["box"]) == 4


def test_detector_rejects_bad_images(detector: Detector, tmp_path: Path) -> None:
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(SsdError, match="x.jpg"):
        detector.predict(str(bad))
    with pytest.raises(SsdError):
        detector.predict(np.zeros((10, 10, 5), dtype=np.uint8))


def test_public_api_exports() -> None:
    for name in ("build_model", "make_priors", "encode", "decode", "assign_targets", "multibox_loss", "postprocess",
                 "load_checkpoint", "Detector"):
        assert hasattr(ssdcli, name)
