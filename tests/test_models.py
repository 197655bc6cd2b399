"""Model zoo: output contract of every SSD-family model, bad input, and SSD300's exact architecture."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssdcli.errors import SsdError
from ssdcli.models import available_models, build_model
from ssdcli.models.ssd.priors import PRIOR_SPECS
from ssdcli.priors import make_priors

pytestmark = pytest.mark.usefixtures("one_thread")


SSD_MODELS = [m for m in available_models() if not m.startswith("centernet")]  # CenterNet is tested elsewhere
HEAVY = {"ssd512", "ssd512-bn"}  # a few seconds per real forward on a busy CPU


def _param(name: str):  # noqa: ANN202
    return pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name


def test_registry_has_the_issue_models() -> None:
    assert {"ssd300", "ssd300-bn", "ssd512", "ssd512-bn", "ssdlite320"} <= set(available_models())


@pytest.mark.parametrize("name", SSD_MODELS)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("batch", [1, 2])
def test_output_shapes(name: str, mode: str, batch: int) -> None:
    """Shapes for batch 1 and 2 in train and eval mode, on the meta device (shape propagation, no compute)."""
    num_classes = 5
    with torch.device("meta"):
        model = build_model(name, num_classes)
    getattr(model, mode)()
    size = model.config.image_size
    p = PRIOR_SPECS[name].num_priors()
    assert model.priors.shape == (p, 4)
    try:
        locs, logits = model(torch.empty(batch, 3, size, size, device="meta"))
    except SsdError as e:  # BatchNorm cannot normalise a single value per channel on the 1x1 top map
        assert mode == "train" and batch == 1 and "at least 2 images per batch" in str(e)
        return
    assert locs.shape == (batch, p, 4) and logits.shape == (batch, p, num_classes)


@pytest.mark.parametrize("name", [_param(n) for n in SSD_MODELS])
def test_real_forward(name: str) -> None:
    """A real eval forward: priors equal the spec's, one source map per prior level, finite outputs; for the
    cheaper models also batch 2, whose first image must equal the batch-1 result."""
    torch.manual_seed(0)
    model = build_model(name, 3).eval()
    size = model.config.image_size
    spec = PRIOR_SPECS[name]
    p = spec.num_priors()
    assert torch.equal(model.priors, make_priors(name))
    sizes: list[tuple[int, int]] = []
    hook = model.backbone.register_forward_hook(lambda _m, _i, out: sizes.extend(tuple(o.shape[-2:]) for o in out))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        locs1, logits1 = model(x[:1])
    hook.remove()
    assert sizes == [(f, f) for f in spec.feature_maps]
    assert locs1.shape == (1, p, 4) and logits1.shape == (1, p, 3)
    assert torch.isfinite(locs1).all() and torch.isfinite(logits1).all()
    if name in ("ssd300", "ssdlite320"):
        with torch.no_grad():
            locs2, logits2 = model(x)
        assert locs2.shape == (2, p, 4) and logits2.shape == (2, p, 3)
        torch.testing.assert_close(locs2[:1], locs1, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits2[:1], logits1, rtol=1e-4, atol=1e-4)


def test_train_mode_outputs_carry_gradients() -> None:
    model = build_model("ssdlite320", 3).train()
    locs, logits = model(torch.randn(2, 3, 320, 320))
    assert locs.shape == (2, 3234, 4) and logits.shape == (2, 3234, 3)
    assert locs.requires_grad and logits.requires_grad
    (locs.sum() + logits.sum()).backward()
    assert all(p.grad is not None for p in model.loc.parameters())


@pytest.mark.parametrize("name", SSD_MODELS)
def test_wrong_input_shape_names_expected_shape(name: str) -> None:
    model = build_model(name, 3)
    s = model.config.image_size
    shapes = [(1, 3, 100, 100), (3, s, s), (1, 1, s, s), (1, 3, s, s + 1)]
    for bad in (torch.zeros(shape) for shape in shapes):
        with pytest.raises(SsdError) as info:
            model(bad)
        msg = str(info.value)
        assert f"[N, 3, {s}, {s}]" in msg and "\n" not in msg
        assert str(list(bad.shape)) in msg


def test_unknown_model_name() -> None:
    with pytest.raises(SsdError, match="unknown model 'ssd301'") as info:
        build_model("ssd301", 21)
    assert "ssd300" in str(info.value)  # lists what is available


def test_wrong_class_name_count() -> None:
    with pytest.raises(SsdError, match="2 class names given for num_classes=4"):
        build_model("ssdlite320", 4, class_names=["cat", "dog"])
    with pytest.raises(SsdError, match="num_classes"):
        build_model("ssdlite320", 1)
    model = build_model("ssdlite320", 3, class_names=["cat", "dog"])
    assert model.config.class_names == ["cat", "dog"]
    assert model.config.num_classes == 3


def test_batchnorm_variants() -> None:
    plain = build_model("ssd300", 21)
    bn = build_model("ssd300-bn", 21)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.backbone.modules()) == 15 + 8  # 15 VGG convs + 8 extra convs


@pytest.fixture(scope="module")
def ssd300() -> nn.Module:
    return build_model("ssd300", 21)


def test_ssd300_parameter_count_matches_classic_port(ssd300: nn.Module) -> None:
    assert sum(p.numel() for p in ssd300.parameters()) == 26_285_486


def test_ssd300_layers(ssd300: nn.Module) -> None:
    vgg = ssd300.backbone.vgg
    assert len(vgg) == 35  # the classic port's indices: vgg[0..34]
    convs = [m for m in vgg if isinstance(m, nn.Conv2d)]
    expected = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    assert [c.out_channels for c in convs] == expected
    pools = [(i, m) for i, m in enumerate(vgg) if isinstance(m, nn.MaxPool2d)]
    assert [i for i, _ in pools] == [4, 9, 16, 23, 30]
    assert vgg[16].ceil_mode and not vgg[9].ceil_mode  # pool3 in ceil mode: 75 -> 38
    pool5 = vgg[30]
    assert (pool5.kernel_size, pool5.stride, pool5.padding) == (3, 1, 1)
    conv6, conv7 = vgg[31], vgg[33]
    assert (conv6.in_channels, conv6.out_channels, conv6.kernel_size) == (512, 1024, (3, 3))
    assert (conv6.padding, conv6.dilation) == ((6, 6), (6, 6))
    assert (conv7.in_channels, conv7.out_channels, conv7.kernel_size) == (1024, 1024, (1, 1))
    assert isinstance(vgg[22], nn.ReLU) and ssd300.backbone.conv4_3_end == 22  # L2Norm after conv4_3's ReLU
    l2 = ssd300.backbone.l2norm.weight
    assert l2.shape == (512,) and bool((l2 == 20).all()) and l2.requires_grad
    extras = ssd300.backbone.extras
    assert len(extras) == 4
    assert [(e[0].out_channels, e[2].out_channels) for e in extras] == [(256, 512), (128, 256), (128, 256), (128, 256)]
    assert [m.out_channels for m in ssd300.loc] == [4 * a for a in (4, 6, 6, 6, 4, 4)]
    assert [m.out_channels for m in ssd300.conf] == [21 * a for a in (4, 6, 6, 6, 4, 4)]
    assert ssd300.priors.shape == (8732, 4)


def test_l2norm_scales_unit_norm_to_weight(ssd300: nn.Module) -> None:
    l2 = ssd300.backbone.l2norm
    x = torch.randn(2, 512, 3, 3)
    out = l2(x)
    torch.testing.assert_close(out.norm(dim=1), torch.full((2, 3, 3), 20.0), rtol=1e-4, atol=1e-3)
