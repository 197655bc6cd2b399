"""torchvision ``ssdlite320_mobilenet_v3_large`` -> native ``ssdlite320``: same raw outputs, anchors and detections.

The reference is torchvision itself, built with random weights and random, non-trivial BatchNorm statistics.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ssdcli.boxes import decode
from ssdcli.checkpoint import load_checkpoint, load_model
from ssdcli.cli.main import app
from ssdcli.convert import convert_file, convert_state_dict
from ssdcli.convert import torchvision_ssdlite as tvl
from ssdcli.errors import SsdError
from ssdcli.postprocess import PostprocessConfig, select_detections

REL_TOL = 1e-5


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max().clamp(min=1.0))


def random_ssdlite(num_classes: int = 91, seed: int = 0, reduced_tail: bool = True) -> nn.Module:
    """torchvision's SSDLite with random weights and BN statistics (eval mode). ``reduced_tail=False`` is the
    layout torchvision builds around ImageNet backbone weights."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.models.detection.ssdlite import SSDLite320_MobileNet_V3_Large_Weights  # noqa: F401

    torch.manual_seed(seed)
    if reduced_tail:
        tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    else:  # the 960-channel tail: what torchvision builds when ImageNet weights are asked for (not loaded here)
        from torchvision.models.detection import ssdlite as tv_ssdlite

        orig = tv_ssdlite.mobilenet_v3_large
        tv_ssdlite.mobilenet_v3_large = lambda **kw: orig(**{**kw, "weights": None, "reduced_tail": False})
        try:
            tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
        finally:
            tv_ssdlite.mobilenet_v3_large = orig
    # torchvision's init (N(0, 0.03) convs) and default BN statistics let the input signal die out in the trunk
    # (outputs the same for every image), which would hide a wrong trunk mapping: fan-in scaled convs, BN
    # statistics measured on a random batch, then random BN scales and shifts and shifted running means.
    bns = [m for m in tv.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: the statistics of the batch below
        tv.train()
        tv.head(list(tv.backbone(torch.randn(2, 3, 320, 320)).values()))
        for bn in bns:
            bn.momentum = 0.03
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
            bn.running_mean.add_(torch.randn_like(bn.running_mean) * 0.1 * bn.running_var.sqrt())
    return tv.eval()


@pytest.fixture(scope="module")
def tv_lite(tmp_path_factory, one_thread_module):
    tv = random_ssdlite()
    path = tmp_path_factory.mktemp("tvl") / "ssdlite320_coco.pth"
    torch.save(tv.state_dict(), path)
    out = path.parent / "native.pth"
    return tv, convert_file(path, out, "auto"), out


def _image(seed: int, size: int = 320) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=g)


def _tv_raw(tv: nn.Module, x: torch.Tensor):
    from torchvision.models.detection.image_list import ImageList

    features = list(tv.backbone(x).values())
    head = tv.head(features)
    anchors = tv.anchor_generator(ImageList(x, [(320, 320)]), features)
    return head, anchors


def test_ssdlite_detected_with_layout_preprocessing_and_coco_names(tv_lite) -> None:
    tv, result, out = tv_lite
    assert result.source_format == "torchvision" and "ssdlite320_mobilenet_v3_large" in (result.detected or "")
    cfg = load_checkpoint(out).config
    assert cfg.arch == "ssdlite320" and cfg.image_size == 320 and cfg.extra["reduced_tail"] is True
    assert cfg.num_classes == 91 and cfg.class_names[:3] == ["person", "bicycle", "car"]
    assert cfg.class_names[11] == "N/A-12" and len(set(cfg.class_names)) == 90
    assert cfg.nms_threshold == tv.nms_thresh == 0.55  # torchvision's NMS IoU, used unless --iou is given
    img = _image(1)
    ours = cfg.preprocess.normalize(img)
    theirs = tv.transform.normalize(img[0].float() / 255.0)[None]
    assert (ours - theirs).abs().max() < 1e-5
    # the whole transform: torchvision's fixed-size resize of a 320x320 image is the identity
    batched, _ = tv.transform([img[0].float() / 255.0])
    assert (batched.tensors - ours).abs().max() < 1e-5


def test_ssdlite_raw_outputs_anchors_and_detections_match_torchvision(tv_lite) -> None:
    tv, _, out = tv_lite
    model = load_model(out)
    x = model.config.preprocess.normalize(_image(2))
    with torch.no_grad():
        head, anchors = _tv_raw(tv, x)
        locs, logits = model(x)
    assert _rel_err(locs, head["bbox_regression"]) < REL_TOL
    assert _rel_err(logits, head["cls_logits"]) < REL_TOL
    with torch.no_grad():  # the outputs depend on the image: the comparison covers the whole trunk
        other = model(model.config.preprocess.normalize(_image(3)))[1]
    assert (other - logits).abs().max() > 0.1 * logits.abs().max()
    # priors == torchvision's DefaultBoxGenerator (relative cxcywh, same order)
    fms = [[f, f] for f in tvl.FEATURE_MAPS]
    theirs = tv.anchor_generator._grid_default_boxes(fms, [320, 320])
    assert model.priors.shape == theirs.shape == (3234, 4)
    assert (model.priors - theirs).abs().max() < 1e-6
    # detections: torchvision's postprocess (score > 0.001, top 300 per class, NMS 0.55, 300 per image, boxes
    # clipped to the image) vs our decode + selection with the same settings on our outputs (ssdcli.postprocess
    # does not clip: clipped here)
    tv_det = tv.postprocess_detections(head, anchors, [(320, 320)])[0]
    boxes = decode(locs, model.priors, model.prior_spec.variances).clamp(0, 1)
    scores = torch.softmax(logits, dim=-1)[..., 1:]
    det = select_detections(boxes, scores, PostprocessConfig(0.001, 0.55, 300, 300))[0]
    assert len(det) == len(tv_det["scores"]) == 300
    assert (det.scores - tv_det["scores"]).abs().max() < 1e-6
    assert torch.equal(det.labels, tv_det["labels"])
    assert (det.boxes * 320 - tv_det["boxes"]).abs().max() < 1e-3


def test_ssdlite_full_width_tail_converts(one_thread) -> None:
    tv = random_ssdlite(num_classes=21, reduced_tail=False)
    result = convert_state_dict(tv.state_dict(), "torchvision", classes="voc")
    model = result.model
    assert model.config.extra["reduced_tail"] is False and model.config.class_names[0] == "aeroplane"
    x = model.config.preprocess.normalize(_image(3))
    with torch.no_grad():
        head, _ = _tv_raw(tv, x)
        _, logits = model(x)
    assert _rel_err(logits, head["cls_logits"]) < REL_TOL


def test_ssdlite_damaged_state_names_keys_in_torchvision_terms(one_thread) -> None:
    state = random_ssdlite().state_dict()
    del state["backbone.features.1.0.1.0.weight"]
    with pytest.raises(SsdError, match=r"missing 1 tensors, e\.g\. backbone\.features\.1\.0\.1\.0\.weight"):
        convert_state_dict(state, "torchvision")
    state = random_ssdlite().state_dict()
    state["backbone.features.1.3.0.weight"] = torch.zeros(7, 80, 1, 1)
    with pytest.raises(SsdError, match="480- or 960-channel"):
        convert_state_dict(state, "auto")


def test_rename_round_trip_covers_every_key() -> None:
    from ssdcli.models import build_model

    own = build_model("ssdlite320", 91, extra={"reduced_tail": True}).state_dict()
    for key in own:
        assert tvl.rename(tvl.source_name(key)) == key


def test_cli_convert_ssdlite(tmp_path: Path, one_thread) -> None:
    src = tmp_path / "lite.pth"
    torch.save(random_ssdlite(num_classes=4).state_dict(), src)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    res = CliRunner().invoke(app, ["convert", str(src), "-o", str(tmp_path / "n.pth"), "--classes", str(names)])
    assert res.exit_code == 0, res.output
    assert "ssdlite320" in res.output and "reduced tail" in res.output
    assert load_checkpoint(tmp_path / "n.pth").config.class_names == ["cat", "dog", "bird"]
