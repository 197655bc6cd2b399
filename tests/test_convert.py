"""`ssd convert` and ImageNet backbone loading: converted models reproduce the source models exactly.

Sources are built with random weights: the ssd.pytorch SSD300 from its key/shape layout written down in
``tests/data/amdegroot_ssd300_layout.json`` (run through an independent functional re-implementation of that
port's forward), torchvision models from torchvision itself.
"""

from __future__ import annotations

import json
import math
from itertools import product
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from typer.testing import CliRunner

from ssdcli.boxes import cxcywh_to_xyxy, decode, xyxy_to_cxcywh
from ssdcli.checkpoint import load_checkpoint, load_model
from ssdcli.cli.main import app
from ssdcli.convert import convert_file, convert_state_dict, load_backbone_state, load_backbone_weights
from ssdcli.convert import amdegroot as amdegroot_mod
from ssdcli.convert.backbones import decimate_fc6, decimate_fc7, identify_backbone
from ssdcli.convert.classes import VOC_CLASSES, coco_category_slots, resolve_class_names
from ssdcli.convert.common import read_state_dict
from ssdcli.errors import SsdError
from ssdcli.models import build_model
from ssdcli.postprocess import PostprocessConfig, select_detections
from ssdcli.preprocess import CAFFE_BGR
from ssdcli.priors import generate_priors

LAYOUT = json.loads((Path(__file__).parent / "data" / "amdegroot_ssd300_layout.json").read_text())
REL_TOL = 1e-5  # max |ours - reference| relative to max |reference| for raw outputs


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max().clamp(min=1.0))


def _image(seed: int, size: int = 300) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=g)


# --------------------------------------------------------------------------------------------------------------
# ssd.pytorch reference (independent of ssdcli.models): random weights in its layout + its forward, functionally
# --------------------------------------------------------------------------------------------------------------

def amdegroot_random_state(num_classes: int = 21, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in LAYOUT["keys"]:
        shape = list(shape)
        if key.startswith("conf."):
            shape[0] = shape[0] // LAYOUT["num_classes"] * num_classes
        if key == "L2Norm.weight":
            t = 20.0 + torch.randn(shape, generator=g)
        elif key.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            t = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
        state[key] = t
    return state


def _classic_vgg_layers() -> list[tuple]:
    """ssd.pytorch ``vgg(base['300'], 3)`` as (kind, args) in ModuleList order (35 entries)."""
    layers: list[tuple] = []
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]:
        if v == "M":
            layers.append(("pool", 2, 2, 0, False))
        elif v == "C":
            layers.append(("pool", 2, 2, 0, True))
        else:
            layers += [("conv", 1, 1, 1), ("relu",)]
    layers += [("pool", 3, 1, 1, False), ("conv", 1, 6, 6), ("relu",), ("conv", 1, 0, 1), ("relu",)]
    return layers


def amdegroot_reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The port's ``SSD.forward`` in train phase: returns (loc [N,P,4], conf [N,P,C])."""

    def apply(k: int, layer: tuple, x: torch.Tensor) -> torch.Tensor:
        if layer[0] == "conv":
            _, stride, pad, dil = layer
            return F.conv2d(x, state[f"vgg.{k}.weight"], state[f"vgg.{k}.bias"], stride, pad, dil)
        if layer[0] == "relu":
            return F.relu(x)
        _, kernel, stride, pad, ceil = layer
        return F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil)

    vgg = _classic_vgg_layers()
    assert len(vgg) == 35
    sources = []
    for k in range(23):
        x = apply(k, vgg[k], x)
    norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
    sources.append(state["L2Norm.weight"].view(1, -1, 1, 1) * (x / norm))
    for k in range(23, len(vgg)):
        x = apply(k, vgg[k], x)
    sources.append(x)
    extra_conv = [(1, 0), (2, 1), (1, 0), (2, 1), (1, 0), (1, 0), (1, 0), (1, 0)]  # (stride, padding) per extras.k
    for k, (stride, pad) in enumerate(extra_conv):
        x = F.relu(F.conv2d(x, state[f"extras.{k}.weight"], state[f"extras.{k}.bias"], stride, pad))
        if k % 2 == 1:
            sources.append(x)
    n = x.shape[0]

    def head(name: str) -> torch.Tensor:
        w = [(state[f"{name}.{i}.weight"], state[f"{name}.{i}.bias"]) for i in range(len(sources))]
        outs = [F.conv2d(s, wi, bi, padding=1) for s, (wi, bi) in zip(sources, w)]
        return torch.cat([o.permute(0, 2, 3, 1).reshape(n, -1) for o in outs], 1)

    loc, conf = head("loc"), head("conf")
    num_classes = state["conf.0.weight"].shape[0] // 4
    return loc.view(n, -1, 4), conf.view(n, -1, num_classes)


def reference_prior_box(min_sizes: list[float], max_sizes: list[float]) -> torch.Tensor:
    """The port's ``PriorBox.forward`` (v2, 300 px, its steps/aspect ratios) as a plain loop."""
    feature_maps, steps, ars = [38, 19, 10, 5, 3, 1], [8, 16, 32, 64, 100, 300], [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    mean: list[float] = []
    for k, f in enumerate(feature_maps):
        for i, j in product(range(f), repeat=2):
            f_k = 300 / steps[k]
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s_k = min_sizes[k] / 300
            mean += [cx, cy, s_k, s_k]
            s_kp = math.sqrt(s_k * (max_sizes[k] / 300))
            mean += [cx, cy, s_kp, s_kp]
            for ar in ars[k]:
                mean += [cx, cy, s_k * math.sqrt(ar), s_k / math.sqrt(ar)]
                mean += [cx, cy, s_k / math.sqrt(ar), s_k * math.sqrt(ar)]
    return torch.tensor(mean).view(-1, 4).clamp(0, 1)


@pytest.fixture(scope="module")
def amdegroot_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = amdegroot_random_state()
    path = tmp_path_factory.mktemp("amdegroot") / "ssd300_voc.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def amdegroot_converted(amdegroot_file, tmp_path_factory) -> Path:
    src, _ = amdegroot_file
    out = tmp_path_factory.mktemp("amdegroot_out") / "native.pth"
    convert_file(src, out, "amdegroot")
    return out


def test_layout_json_maps_onto_ssd300_one_to_one() -> None:
    with torch.device("meta"):  # shapes only
        own = build_model("ssd300", 21).state_dict()
    targets = {}
    for key, shape in LAYOUT["keys"]:
        target = amdegroot_mod.rename(key)
        assert target in own, key
        assert list(own[target].shape) == shape, key
        assert amdegroot_mod.source_name(target) == key
        targets[target] = key
    assert set(targets) == set(own)  # every model tensor comes from exactly one source tensor


def test_amdegroot_conversion_reproduces_raw_outputs(amdegroot_file, amdegroot_converted) -> None:
    _, state = amdegroot_file
    ckpt = load_checkpoint(amdegroot_converted)
    assert ckpt.config.arch == "ssd300" and ckpt.config.preprocess == CAFFE_BGR
    assert ckpt.config.class_names == list(VOC_CLASSES)
    assert ckpt.meta["converted_from"]["format"] == "amdegroot"
    model = load_model(amdegroot_converted)
    x = model.config.preprocess.normalize(_image(1))
    # BGR caffe input: channel 0 is blue minus 104
    assert torch.allclose(x[0, 0], _image(1)[0, 2].float() - 104.0)
    with torch.no_grad():
        locs, logits = model(x)
        ref_loc, ref_conf = amdegroot_reference_forward(state, x)
    assert locs.shape == ref_loc.shape == (1, 8732, 4) and logits.shape == ref_conf.shape == (1, 8732, 21)
    assert _rel_err(locs, ref_loc) < REL_TOL, _rel_err(locs, ref_loc)
    assert _rel_err(logits, ref_conf) < REL_TOL, _rel_err(logits, ref_conf)
    assert ref_conf.std() > 0.1  # the comparison is not between two near-constant tensors


def test_amdegroot_priors_follow_its_config(amdegroot_file) -> None:
    _, state = amdegroot_file
    ref_voc = reference_prior_box([30, 60, 111, 162, 213, 264], [60, 111, 162, 213, 264, 315])
    assert torch.allclose(generate_priors(amdegroot_mod.SSD300_VOC), ref_voc, atol=1e-6)  # 21 classes: `voc`
    # any class count other than 21 makes the port use its `coco` config: same here
    coco_state = dict(state)
    for i, a in enumerate(amdegroot_mod.PRIORS_PER_LOCATION):
        cin = state[f"conf.{i}.weight"].shape[1]
        coco_state[f"conf.{i}.weight"] = torch.zeros(a * 81, cin, 3, 3)
        coco_state[f"conf.{i}.bias"] = torch.zeros(a * 81)
    result = convert_state_dict(coco_state, "auto")
    assert result.source_format == "amdegroot" and "ssd.pytorch" in (result.detected or "")
    assert len(result.model.config.class_names) == 80 and result.model.config.class_names[0] == "person"
    ref_coco = reference_prior_box([21, 45, 99, 153, 207, 261], [45, 99, 153, 207, 261, 315])
    assert torch.allclose(result.model.priors, ref_coco, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# torchvision ssd300_vgg16
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tv_ssd(tmp_path_factory):
    from torchvision.models.detection import ssd300_vgg16

    torch.manual_seed(0)
    tv = ssd300_vgg16(weights=None, weights_backbone=None).eval()
    with torch.no_grad():  # tame the random classifier so softmax scores are spread (no ties at 1.0)
        for conv in tv.head.classification_head.module_list:
            conv.weight.mul_(0.05)
        tv.backbone.scale_weight.uniform_(10, 30)
    path = tmp_path_factory.mktemp("tv") / "ssd300_vgg16_coco.pth"
    torch.save(tv.state_dict(), path)
    out = path.parent / "native.pth"
    result = convert_file(path, out, "auto")
    return tv, result, out


@pytest.mark.slow
def test_torchvision_detected_with_coco_slots_and_preprocessing(tv_ssd) -> None:
    tv, result, out = tv_ssd
    assert result.source_format == "torchvision" and "ssd300_vgg16" in (result.detected or "")
    cfg = load_checkpoint(out).config
    assert cfg.num_classes == 91 and len(cfg.class_names) == 90 and len(set(cfg.class_names)) == 90
    assert cfg.class_names[:3] == ["person", "bicycle", "car"] and cfg.class_names[11] == "N/A-12"
    assert cfg.extra["prior_spec"]["clip_centers"] is False
    img = _image(2)
    ours = cfg.preprocess.normalize(img)
    theirs = tv.transform.normalize(img[0].float() / 255.0)[None]
    assert (ours - theirs).abs().max() < 1e-3  # float32 rounding of x/255 in torchvision's path


def _tv_raw(tv, x):
    from torchvision.models.detection.image_list import ImageList

    features = list(tv.backbone(x).values())
    head = tv.head(features)
    anchors = tv.anchor_generator(ImageList(x, [(300, 300)]), features)
    return head, anchors


@pytest.mark.slow
def test_torchvision_conversion_reproduces_head_outputs_and_detections(tv_ssd) -> None:
    tv, _, out = tv_ssd
    model = load_model(out)
    x = model.config.preprocess.normalize(_image(3))
    with torch.no_grad():
        head, anchors = _tv_raw(tv, x)
        locs, logits = model(x)
    assert _rel_err(locs, head["bbox_regression"]) < REL_TOL
    assert _rel_err(logits, head["cls_logits"]) < REL_TOL
    # priors vs torchvision's DefaultBoxGenerator, same order (pixels, xyxy)
    ours_xyxy = cxcywh_to_xyxy(model.priors) * 300
    centres = (anchors[0][:, :2] + anchors[0][:, 2:]) / 2 / 300
    inside = (centres <= 1.0).all(dim=1)  # torchvision puts 114 centres at 1.0133 (see the exact-priors test below)
    assert int((~inside).sum()) == 114
    assert (ours_xyxy[inside] - anchors[0][inside]).abs().max() < 1e-3
    # final detections: torchvision's postprocess vs our decode + selection on its anchors (its boxes are
    # clipped to the image before NMS; ssdcli.postprocess does not clip, so the clip is done here)
    tv_det = tv.postprocess_detections(head, anchors, [(300, 300)])[0]
    priors = xyxy_to_cxcywh(anchors[0] / 300)
    assert torch.allclose(priors[inside], model.priors[inside], atol=1e-6)
    boxes = decode(head["bbox_regression"], priors, model.prior_spec.variances).clamp(0, 1)
    scores = torch.softmax(head["cls_logits"], dim=-1)[..., 1:]
    det = select_detections(boxes, scores, PostprocessConfig(0.01, 0.45, 200, 400))[0]
    assert len(det) == len(tv_det["scores"]) > 50
    assert torch.equal(det.labels, tv_det["labels"])
    assert (det.scores - tv_det["scores"]).abs().max() < 1e-6
    assert (det.boxes * 300 - tv_det["boxes"]).abs().max() < 1e-3


@pytest.mark.slow
def test_torchvision_priors_exact_including_edge_centres(tv_ssd) -> None:
    tv, _, out = tv_ssd
    model = load_model(out)
    fms = [[f, f] for f in (38, 19, 10, 5, 3, 1)]
    theirs = tv.anchor_generator._grid_default_boxes(fms, [300, 300])
    assert (model.priors - theirs).abs().max() < 1e-6


# --------------------------------------------------------------------------------------------------------------
# ImageNet backbones
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vgg16_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return torchvision.models.vgg16(weights=None).state_dict()


def test_fc6_fc7_decimation_equals_direct_computation(vgg16_state) -> None:
    fc6_w, fc6_b = vgg16_state["classifier.0.weight"], vgg16_state["classifier.0.bias"]
    fc7_w, fc7_b = vgg16_state["classifier.3.weight"], vgg16_state["classifier.3.bias"]
    w6, b6 = decimate_fc6(fc6_w, fc6_b)
    w7, b7 = decimate_fc7(fc7_w, fc7_b)
    assert w6.shape == (1024, 512, 3, 3) and w7.shape == (1024, 1024, 1, 1)
    # element level: conv6[o, c, i, j] = fc6[4o, c*49 + 3i*7 + 3j]
    o, c, i, j = 1023, 77, 2, 1
    assert w6[o, c, i, j] == fc6_w[4 * o, c * 49 + 3 * i * 7 + 3 * j]
    assert w7[5, 9, 0, 0] == fc7_w[20, 36] and b6[3] == fc6_b[12] and b7[3] == fc7_b[12]
    # function level: fc6 on a pool5 map (512x7x7, stride 32) holding values only at the kept taps {0,3,6}^2
    # equals a dilation-6 conv6 at the centre of the same map at stride 16 (values every 2 cells, 13x13)
    g = torch.Generator().manual_seed(0)
    pool5 = torch.zeros(1, 512, 7, 7)
    pool5[:, :, ::3, ::3] = torch.randn(1, 512, 3, 3, generator=g)
    fc6_out = F.linear(pool5.flatten(1), fc6_w, fc6_b)[:, ::4]
    stride16 = torch.zeros(1, 512, 13, 13)
    stride16[:, :, ::2, ::2] = pool5
    conv6_out = F.conv2d(stride16, w6, b6, padding=6, dilation=6)[:, :, 6, 6]
    assert torch.allclose(conv6_out, fc6_out, atol=1e-5)
    # fc7 on fc6 outputs of which only the kept (every 4th) are non-zero equals conv7 on the kept ones
    h = torch.zeros(1, 4096)
    h[:, ::4] = torch.randn(1, 1024, generator=g)
    fc7_out = F.linear(h, fc7_w, fc7_b)[:, ::4]
    conv7_out = F.conv2d(h[:, ::4, None, None], w7, b7)[:, :, 0, 0]
    assert torch.allclose(conv7_out, fc7_out, atol=1e-5)


def test_vgg16_into_ssd300(vgg16_state) -> None:
    assert identify_backbone(vgg16_state) == "vgg16"
    model = build_model("ssd300", 3)
    before_l2 = model.backbone.l2norm.weight.clone()
    text = load_backbone_state(model, vgg16_state, "vgg16.pth")
    assert "vgg16" in text and "dilation 6" in text
    own = model.state_dict()
    for k, v in vgg16_state.items():
        if k.startswith("features."):
            assert torch.equal(own["backbone.vgg." + k.removeprefix("features.")], v)
    w6, b6 = decimate_fc6(vgg16_state["classifier.0.weight"], vgg16_state["classifier.0.bias"])
    w7, b7 = decimate_fc7(vgg16_state["classifier.3.weight"], vgg16_state["classifier.3.bias"])
    assert torch.equal(model.backbone.vgg[31].weight, w6) and torch.equal(model.backbone.vgg[31].bias, b6)
    assert model.backbone.vgg[31].dilation == (6, 6)
    assert torch.equal(model.backbone.vgg[33].weight, w7) and torch.equal(model.backbone.vgg[33].bias, b7)
    assert torch.equal(model.backbone.l2norm.weight, before_l2)  # not part of ImageNet weights
    # torchvision's IMAGENET1K_FEATURES VGG16 has a NaN classifier: the convs load, fc6/fc7 are reported as not loaded
    nan_state = dict(vgg16_state, **{"classifier.0.bias": torch.full((4096,), float("nan"))})
    text = load_backbone_state(model, nan_state, "vgg16_features.pth")
    assert "NOT loaded" in text
    with pytest.raises(SsdError, match="needs mobilenet_v3_large"):
        load_backbone_state(build_model("ssdlite320", 3), vgg16_state, "vgg16.pth")
    with pytest.raises(SsdError, match="ImageNet vgg16 classifier"):
        convert_state_dict(vgg16_state, "auto", source="vgg16.pth")


def test_vgg16_bn_into_ssd300_bn(vgg16_state) -> None:
    model = build_model("ssd300-bn", 3).eval()
    with pytest.raises(SsdError, match="needs vgg16_bn"):
        load_backbone_state(model, vgg16_state, "vgg16.pth")
    torch.manual_seed(2)
    with torch.device("meta"):  # layout from torchvision; only `features` is materialised (the fc layers are big)
        tv = torchvision.models.vgg16_bn(weights=None, init_weights=False)
    tv.features.to_empty(device="cpu")
    with torch.no_grad():
        for m in tv.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.normal_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean):
                    t.normal_()
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.zero_()
    state = {k: v for k, v in tv.state_dict().items() if k.startswith("features.")}
    state.update({k: v for k, v in vgg16_state.items() if k.startswith("classifier.")})
    assert identify_backbone(state) == "vgg16_bn"
    load_backbone_state(model, state, "vgg16_bn.pth")
    # conv1_1 .. conv5_3 (+BN, ReLU, pools) compute exactly torchvision's features[:43] in eval mode
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = x
        for layer in model.backbone.vgg[:43]:
            ours = layer(ours)
        theirs = tv.features[:43].eval()(x)
    assert _rel_err(ours, theirs) < REL_TOL
    convs = [i for i, m in enumerate(model.backbone.vgg) if isinstance(m, nn.Conv2d)]
    w6, b6 = decimate_fc6(state["classifier.0.weight"], state["classifier.0.bias"])
    assert torch.equal(model.backbone.vgg[convs[13]].weight, w6)
    assert torch.equal(model.backbone.vgg[convs[13] + 1].running_mean, -b6)  # bias folded into BN statistics
    # the folded conv biases are exact in train mode as well (batch statistics absorb a constant)
    model.train(), tv.train()
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        assert _rel_err(nn.Sequential(*model.backbone.vgg[:3])(x), tv.features[:3](x)) < REL_TOL


def test_mobilenet_v3_large_file_into_ssdlite320(tmp_path: Path) -> None:
    torch.manual_seed(3)
    tv = torchvision.models.mobilenet_v3_large(weights=None).eval()
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save({"state_dict": tv.state_dict()}, path)  # nested under "state_dict" is accepted
    model = build_model("ssdlite320", 5).eval()
    text = load_backbone_weights(model, path)
    assert "mobilenet_v3_large" in text and "backbone.body" in text
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.backbone.body(x), tv.features(x))


class _ToyResNetDetector(nn.Module):
    """Stand-in for a CenterNet: torchvision's ResNet modules held under ``backbone.body``."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.body = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        self.backbone.body.fc = nn.Identity()
        self.head = nn.Conv2d(512, 4, 1)


def test_resnet18_into_model_with_resnet_names() -> None:
    torch.manual_seed(4)
    src = torchvision.models.resnet18(weights=None).state_dict()
    assert identify_backbone(src) == "resnet18"
    model = _ToyResNetDetector(18)
    head_before = model.head.weight.clone()
    text = load_backbone_state(model, src, "resnet18.pth")
    assert "resnet18" in text and "backbone.body" in text
    own = model.state_dict()
    assert all(torch.equal(own["backbone.body." + k], v) for k, v in src.items() if not k.startswith("fc."))
    assert torch.equal(model.head.weight, head_before)
    with pytest.raises(SsdError, match="needs vgg16"):
        load_backbone_state(build_model("ssd300", 3), src, "resnet18.pth")


def test_resnet_into_registered_centernet_if_present() -> None:
    from ssdcli.models.registry import available_models

    names = [n for n in available_models() if n.startswith("centernet")]
    if not names:
        pytest.skip("no centernet model registered yet")
    for name in names:
        depth = 18 if "18" in name else 50 if "50" in name else None
        if depth is None:
            continue
        model = build_model(name, 3)
        src = getattr(torchvision.models, f"resnet{depth}")(weights=None).state_dict()
        text = load_backbone_state(model, src, f"resnet{depth}.pth")
        assert f"resnet{depth}" in text


# --------------------------------------------------------------------------------------------------------------
# reading files and the CLI
# --------------------------------------------------------------------------------------------------------------

class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"vgg.0.weight": torch.zeros(1)}, "obj": _Evil()}, path)
    with pytest.raises(SsdError, match="refused"):
        read_state_dict(path)


def test_unwrap_module_prefix_and_nesting(amdegroot_file, tmp_path: Path) -> None:
    _, state = amdegroot_file
    path = tmp_path / "dp.pth"
    torch.save({"epoch": 3, "model": {"module." + k: v for k, v in list(state.items())[:4]}}, path)
    loaded = read_state_dict(path)
    assert list(loaded) == list(state)[:4]


def _run(args: list[str]):
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    return result, lines


def test_cli_converts_and_reports(amdegroot_file, tmp_path: Path) -> None:
    src, _ = amdegroot_file
    out = tmp_path / "out.pth"
    result, lines = _run(["convert", str(src), "-o", str(out), "--from", "auto"])
    assert result.exit_code == 0, result.output
    assert "ssd.pytorch" in result.output and "wrote" in result.output and out.is_file()
    meta = load_checkpoint(out).meta["converted_from"]
    assert meta["format"] == "amdegroot" and meta["file"] == str(src.resolve()) and len(meta["sha256"]) == 64
    result, lines = _run(["convert", str(src), "-o", str(out)])  # exists, no --force
    assert result.exit_code == 2 and len(lines) == 1 and "--force" in lines[0]
    result, lines = _run(["convert", str(out), "-o", str(tmp_path / "again.pth")])
    assert result.exit_code == 2 and len(lines) == 1 and "already an ssdcli checkpoint" in lines[0]


def test_cli_bad_inputs_are_one_line_errors(amdegroot_file, tmp_path: Path) -> None:
    src, state = amdegroot_file
    out = str(tmp_path / "o.pth")
    unknown = tmp_path / "unknown.pth"
    torch.save({"encoder.conv.weight": torch.zeros(2, 3, 3, 3), "decoder.fc.bias": torch.zeros(2)}, unknown)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(src.read_bytes()[: 1 << 20])
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    broken = tmp_path / "broken_layout.pth"
    broken_state = {k: v for k, v in state.items() if not k.startswith("extras.7")}
    torch.save(broken_state | {"extras.8.weight": torch.zeros(1)}, broken)
    evil = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, evil)
    cases = [
        ([str(unknown), "-o", out], "encoder.conv.weight"),
        ([str(truncated), "-o", out], "truncated"),
        ([str(src), "-o", out, "--classes", str(names)], "class-count mismatch"),
        ([str(src), "-o", out, "--classes", "voc", "--from", "torchvision"], "looks like ssd.pytorch"),
        ([str(broken), "-o", out, "--from", "amdegroot"], "unexpected keys extras.8.weight"),
        ([str(evil), "-o", out], "refused"),
        ([str(tmp_path / "missing.pth"), "-o", out], "not found"),
        ([str(src), "-o", out, "--from", "caffe"], "'caffe' is not one of"),
        ([str(unknown), "-o", out, "--from", "torchvision"], "found keys encoder.conv.weight"),
    ]
    for args, expected in cases:
        result, lines = _run(["convert", *args])
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1, result.output
        assert expected in lines[0], (expected, lines[0])
    _, lines = _run(["convert", str(broken), "-o", out, "--from", "amdegroot"])
    assert "missing 2 tensors, e.g. extras.7.weight, extras.7.bias" in lines[0]
    assert not Path(out).exists()


def test_class_name_resolution(tmp_path: Path) -> None:
    names = [f"thing{i}" for i in range(20)]
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\nbackground\n" + "\n".join(names) + "\n")
    assert resolve_class_names(str(path), 21, "voc", "src.pth") == names
    assert resolve_class_names(None, 21, "voc", "src.pth") == list(VOC_CLASSES)
    assert resolve_class_names("coco", 91, None, "src.pth") == coco_category_slots()
    assert coco_category_slots()[-1] == "toothbrush" and len(resolve_class_names(None, 81, "coco", "s")) == 80
    with pytest.raises(SsdError, match="pass --classes FILE with 6 names"):
        resolve_class_names(None, 7, "coco", "src.pth")
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(SsdError, match="duplicate"):
        resolve_class_names(str(tmp_path / "dup.txt"), 4, None, "src.pth")


def test_pretrained_backbone_download_failure_and_success(monkeypatch: pytest.MonkeyPatch) -> None:
    from ssdcli.convert import load_pretrained_backbone

    model = build_model("ssdlite320", 3)

    def offline(url, **kwargs):
        assert kwargs.get("weights_only") is True and "mobilenet_v3_large" in url
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(SsdError, match="--backbone-weights FILE"):
        load_pretrained_backbone(model)
    src = torchvision.models.mobilenet_v3_large(weights=None).state_dict()
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kw: src)
    assert "mobilenet_v3_large" in load_pretrained_backbone(model)
    assert torch.equal(model.backbone.body[0][0].weight, src["features.0.0.weight"])
