"""The model's own NMS IoU threshold: recorded in the checkpoint by training (recipe or --iou) and by conversion,
used by validation, eval, detect and export when --iou is not given; --iou still wins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssdcli.checkpoint import config_from_stored, load_checkpoint, save_checkpoint
from ssdcli.cli.main import app
from ssdcli.data.samples import SAMPLE_CLASSES
from ssdcli.engine.recipes import resolve_for
from ssdcli.engine.trainer import TrainOptions, train
from ssdcli.errors import SsdError
from ssdcli.inference import Detector, TorchBackend
from ssdcli.models import build_model
from ssdcli.models.base import ModelConfig
from ssdcli.postprocess import PAPER_NMS_IOU, PostprocessConfig, postprocess

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(nms: float | None = None, seed: int = 0, classes: list[str] = ["a", "b"]):  # noqa: B006 - read only
    torch.manual_seed(seed)
    model = build_model("ssd-mini", len(classes) + 1, class_names=list(classes), image_size=96).eval()
    with torch.no_grad():  # many confident, overlapping candidates: the NMS threshold matters
        for head in model.conf:
            head.bias.normal_(0.0, 2.0)
    if nms is not None:
        model.config.nms_threshold = nms
    return model


def test_config_round_trip_and_older_checkpoints_get_the_paper_value() -> None:
    cfg = _model(0.65).config
    assert ModelConfig.from_dict(cfg.to_dict()).nms_threshold == 0.65
    old = {k: v for k, v in cfg.to_dict().items() if k != "nms_threshold"}
    assert ModelConfig.from_dict(old).nms_threshold == PAPER_NMS_IOU == 0.45
    for bad in (0.0, 1.5, float("nan"), "x"):
        with pytest.raises(SsdError, match="m.pth config is damaged"):
            config_from_stored(cfg.to_dict() | {"nms_threshold": bad}, "m.pth")


def test_detector_uses_the_models_threshold_unless_given() -> None:
    model = _model(0.3)
    images = torch.rand(2, 3, 96, 96)
    assert Detector(TorchBackend(model, torch.device("cpu"))).postprocess.nms_threshold == 0.3
    given = Detector(TorchBackend(model, torch.device("cpu")), PostprocessConfig(nms_threshold=0.7))
    assert given.postprocess.nms_threshold == 0.7
    with torch.no_grad():
        locs, logits = model(images)
    own = model.decode((locs, logits))
    at_03 = postprocess(locs, logits, model.priors, PostprocessConfig(nms_threshold=0.3), model.prior_spec.variances)
    at_paper = postprocess(locs, logits, model.priors, PostprocessConfig(), model.prior_spec.variances)
    assert all(torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) for a, b in zip(own, at_03))
    assert any(not torch.equal(a.boxes, b.boxes) for a, b in zip(at_03, at_paper))  # the threshold matters here


def test_postprocess_config_validates_and_fills_in() -> None:
    assert PostprocessConfig().nms_iou == PAPER_NMS_IOU
    assert PostprocessConfig().with_nms_default(0.6).nms_threshold == 0.6
    assert PostprocessConfig(nms_threshold=0.5).with_nms_default(0.6).nms_threshold == 0.5
    PostprocessConfig().validate()  # None: the model's own


def test_eval_cli_reports_the_models_threshold_and_iou_overrides(prepared_sample, tmp_path: Path) -> None:
    data = prepared_sample(4, 4, image_size=(96, 128), seed=3)
    ckpt = tmp_path / "m.pth"
    save_checkpoint(ckpt, _model(0.6, classes=list(SAMPLE_CLASSES)))
    base = ["eval", "--weights", str(ckpt), "--data", str(data), "--device", "cpu", "--metric", "voc07"]
    r = CliRunner().invoke(app, base)
    assert r.exit_code == 0, r.output
    assert "NMS IoU 0.6," in r.stdout
    r = CliRunner().invoke(app, [*base, "--iou", "0.5"])
    assert r.exit_code == 0, r.output
    assert "NMS IoU 0.5," in r.stdout


def test_recipe_sets_the_threshold_and_iou_overrides() -> None:
    assert resolve_for(TrainOptions(arch="ssdlite320")).values["iou"] == 0.65
    assert resolve_for(TrainOptions(arch="ssd300-bn")).values["iou"] == 0.65
    assert resolve_for(TrainOptions(arch="ssd300-bn", pretrained_backbone=True)).values["iou"] is None  # the paper
    resolved = resolve_for(TrainOptions(arch="ssdlite320", iou=0.5))
    assert resolved.values["iou"] == 0.5 and resolved.origins["iou"] == "--iou"


@pytest.mark.parametrize("iou, expected", [(None, 0.65), (0.55, 0.55)])
def test_training_stores_the_threshold_in_its_checkpoints(prepared_sample, tmp_path: Path, iou, expected) -> None:
    data = prepared_sample(16, 4, image_size=(96, 128), seed=1)
    options = TrainOptions(data=str(data), arch="ssdlite320", img_size=96, iters=2, batch=4, workers=0, seed=7,
                           val_split="test", project=str(tmp_path), name="t", device="cpu", iou=iou)
    result = train(options, report=lambda m: None)
    for name in ("last.pth", "best.pth"):
        assert load_checkpoint(result.run_dir / name).config.nms_threshold == expected
