"""ImageNet classifier weights -> the backbone of a freshly built detector (``train --backbone-weights``).

Supported sources (torchvision state dict files unless noted) and targets:

* ``vgg16`` -> ``ssd300`` / ``ssd512``; ``vgg16_bn`` -> ``ssd300-bn`` / ``ssd512-bn``: ``features.N.*`` ->
  ``backbone.vgg.N.*`` (our trunk keeps torchvision's indices up to conv5_3), fc6/fc7 -> conv6/conv7 (below).
* ssd.pytorch's ``vgg16_reducedfc.pth`` (the already reduced Caffe VGG, keys ``N.weight``) -> ``ssd300``/``ssd512``.
* ``mobilenet_v3_large`` -> ``ssdlite320``: ``features.*`` -> ``backbone.body.*``.
* ``resnet18/34/50/101`` -> any model whose state dict contains torchvision's ResNet names (``conv1``,
  ``bn1``, ``layer1..4``) under one prefix (CenterNet): found by suffix matching.
* ``dla34`` (the DLA authors' ``dla34-ba72cf86.pth`` or timm's ``dla34``) -> ``centernet-dla34[-plain]``'s
  ``backbone.*`` the same way (their unused ``level3/4.project`` layers dropped, see
  :mod:`ssdcli.models.centernet.dla`).

The classifier (``classifier.*``/``fc.*``) is dropped; everything else in the model keeps its initialisation.

fc6/fc7 -> conv6/conv7. SSD paper, sec. 3 (base network): "Similar to DeepLab-LargeFOV, we convert fc6 and fc7
to convolutional layers, subsample parameters from fc6 and fc7, change pool5 from 2x2-s2 to 3x3-s1, and use
the à trous algorithm to fill the 'holes'". fc6 (4096 x 25088) is a 7x7 convolution over pool5's 512 x 7 x 7
output (torchvision flattens ``[C, H, W]``): reshaped to 4096x512x7x7, we keep every 4th filter (0, 4, ..,
4092 -> 1024) and taps 0, 3, 6 in each direction (3x3, the centre tap kept). Those taps were 3 cells apart on
the stride-32 map; with pool5 at stride 1 the map has stride 16, so they are 6 cells apart: dilation 6 (what
conv6 uses). fc7 (4096 x 4096) is a 1x1 convolution: every 4th filter and every 4th input channel (the inputs
are fc6's outputs, of which every 4th was kept) -> 1024x1024x1x1; biases keep every 4th entry. The paper does
not state the subsampling offsets; this is the symmetric choice, and gives the 1024-channel 3x3 dilation-6
conv6 of the released reduced VGG.

-bn variants: our convolutions have no bias (BatchNorm follows). ``BN(conv(x) + b)`` equals ``BN'(conv(x))``
with ``running_mean' = running_mean - b`` in eval mode, and exactly in train mode too (batch statistics
absorb a constant), so vgg16_bn's conv biases are folded into the running means. conv6/conv7 get a fresh
BatchNorm that starts as (almost) the identity plus the fc bias: scale 1, shift 0, running mean -b, variance 1.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ssdcli.convert.common import read_state_dict, transfer
from ssdcli.errors import SsdError
from ssdcli.models.centernet.dla import DLA34_URL, is_dla34_state
from ssdcli.models.centernet.dla import imagenet_state as dla_imagenet_state
from ssdcli.models.ssd.mobilenet import MobileNetV3Backbone
from ssdcli.models.ssd.vgg import VGGBackbone
from ssdcli.preprocess import CAFFE_BGR, IMAGENET, Preprocess

_RESNET_DEPTHS = {(2, 2, 2, 2, False): 18, (3, 4, 6, 3, False): 34, (3, 4, 6, 3, True): 50, (3, 4, 23, 3, True): 101}


def decimate_fc6(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VGG16 fc6 ``[4096, 512*7*7]`` + ``[4096]`` -> conv6 ``[1024, 512, 3, 3]`` (use with dilation 6) + ``[1024]``."""
    w = weight.reshape(4096, 512, 7, 7)[::4, :, ::3, ::3]
    return w.contiguous().clone(), bias[::4].contiguous().clone()


def decimate_fc7(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VGG16 fc7 ``[4096, 4096]`` + ``[4096]`` -> conv7 ``[1024, 1024, 1, 1]`` + ``[1024]``."""
    w = weight.reshape(4096, 4096, 1, 1)[::4, ::4]
    return w.contiguous().clone(), bias[::4].contiguous().clone()


def identify_backbone(state: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the ImageNet classifier layout of ``state`` (``vgg16``, ``vgg16_bn``, ``vgg16_reducedfc``,
    ``mobilenet_v3_large``, ``resnet18`` ...), or None."""
    fc6 = state.get("classifier.0.weight")
    if "features.0.weight" in state and fc6 is not None and tuple(fc6.shape) == (4096, 25088):
        convs = sum(1 for k, v in state.items() if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4)
        bn = "features.1.running_mean" in state
        return ({13: "vgg16", 16: "vgg19"}.get(convs, f"vgg({convs} convs)")) + ("_bn" if bn else "")
    w31, w33 = state.get("31.weight"), state.get("33.weight")
    if "0.weight" in state and w31 is not None and w33 is not None and tuple(w31.shape) == (1024, 512, 3, 3):
        return "vgg16_reducedfc"
    first, last = state.get("features.0.0.weight"), state.get("features.16.0.weight")
    if first is not None and last is not None and tuple(last.shape) == (960, 160, 1, 1):
        return "mobilenet_v3_large"
    if is_dla34_state(state):
        return "dla34"
    if "conv1.weight" in state and "layer4.0.conv1.weight" in state:
        blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
        depth = _RESNET_DEPTHS.get((*blocks, "layer1.0.conv3.weight" in state))
        return f"resnet{depth}" if depth else "resnet(unknown depth)"
    return None


def _target_kind(model: nn.Module) -> str:
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, VGGBackbone):
        return "vgg_bn" if any(isinstance(m, nn.BatchNorm2d) for m in backbone.vgg) else "vgg"
    if isinstance(backbone, MobileNetV3Backbone):
        return "mobilenet"
    return "other"


def _preprocess_note(model: nn.Module, expected: Preprocess, what: str) -> str:
    config = getattr(model, "config", None)
    current = getattr(config, "preprocess", None)
    if current is None or current == expected:
        return ""
    return (
        f"; note: {what} expects {expected.channel_order} input with mean {expected.mean} / std {expected.std} "
        f"at pixel scale {expected.pixel_scale:g}, but the model is set up for mean {current.mean} / std {current.std}"
    )


def _features_to(prefix: str) -> Callable[[str], str | None]:
    """Rename ``features.X`` -> ``prefix + X``; other keys have no place (None)."""
    return lambda k: prefix + k.removeprefix("features.") if k.startswith("features.") else None


def _fc_to_conv(vgg: nn.ModuleList, conv6: int, conv7: int, state: Mapping[str, torch.Tensor]) -> dict:
    """conv6/conv7 tensors (model keys) from fc6/fc7; empty when the classifier is missing or not finite."""
    fc = [state.get(f"classifier.{i}.{p}") for i in (0, 3) for p in ("weight", "bias")]
    if any(t is None for t in fc) or not all(bool(torch.isfinite(t).all()) for t in fc):
        return {}
    out: dict[str, torch.Tensor] = {}
    for index, (w, b) in ((conv6, decimate_fc6(fc[0], fc[1])), (conv7, decimate_fc7(fc[2], fc[3]))):
        out[f"backbone.vgg.{index}.weight"] = w
        if vgg[index].bias is not None:
            out[f"backbone.vgg.{index}.bias"] = b
        else:  # -bn variant: a bias before BN is the same as running_mean shifted by -bias
            bn = f"backbone.vgg.{index + 1}"
            ones = torch.ones_like(b)
            out.update({f"{bn}.running_mean": -b, f"{bn}.running_var": ones, f"{bn}.weight": ones.clone(),
                        f"{bn}.bias": torch.zeros_like(b)})
    return out


def _load_vgg(model: nn.Module, state: Mapping[str, torch.Tensor], kind: str, target: str, source: str) -> str:
    vgg = model.backbone.vgg
    convs = [i for i, m in enumerate(vgg) if isinstance(m, nn.Conv2d)]
    conv6, conv7 = convs[13], convs[14]
    if (kind == "vgg16_bn") != (target == "vgg_bn"):
        want = "vgg16_bn" if target == "vgg_bn" else "vgg16 (or vgg16_reducedfc)"
        raise SsdError(f"{source}: {kind} weights do not fit '{_arch(model)}' (it needs {want} weights)")
    if kind == "vgg16_reducedfc":
        transfer(model, state, lambda k: f"backbone.vgg.{k}", source, "ssd.pytorch vgg16_reducedfc",
                 allow_missing=lambda k: not k.startswith("backbone.vgg."))
        return (f"{source}: ssd.pytorch vgg16_reducedfc (Caffe VGG16 with reduced fc6/fc7) -> backbone.vgg "
                f"(15 conv layers){_preprocess_note(model, CAFFE_BGR, 'this Caffe-converted VGG')}")
    extra: dict[str, torch.Tensor] = {}
    folded: set[str] = set()
    if target == "vgg_bn":  # torchvision's convs have biases, ours (BN after) do not: fold into running_mean
        for i in convs[:13]:
            bias, mean = state.get(f"features.{i}.bias"), state.get(f"features.{i + 1}.running_mean")
            if bias is not None and mean is not None and bias.shape == mean.shape:
                extra[f"backbone.vgg.{i + 1}.running_mean"] = mean - bias
                folded |= {f"features.{i}.bias", f"features.{i + 1}.running_mean"}
    fc = _fc_to_conv(vgg, conv6, conv7, state)
    extra.update(fc)
    fc_layers = tuple(f"backbone.vgg.{i}." for i in (conv6, conv6 + 1, conv7, conv7 + 1))

    def may_miss(key: str) -> bool:
        outside = not key.startswith("backbone.vgg.") or key.endswith("num_batches_tracked")
        return outside or (not fc and key.startswith(fc_layers))

    transfer(model, state, _features_to("backbone.vgg."), source, f"torchvision {kind}",
             ignore=lambda k: k.startswith("classifier.") or k in folded, extra=extra, allow_missing=may_miss)
    if fc:
        fc_text = ("fc6 4096x25088 -> conv6 1024x512x3x3 (every 4th filter, taps 0/3/6, dilation 6), "
                   "fc7 -> conv7 1024x1024x1x1 (every 4th filter and input)")
        note = _preprocess_note(model, IMAGENET, "torchvision ImageNet VGG")
    else:
        fc_text = ("fc6/fc7 NOT loaded (the file's classifier weights are missing or not finite, as in torchvision's "
                   "IMAGENET1K_FEATURES VGG16, which expects Caffe-style mean-only input): conv6/conv7 keep their init")
        note = ""
    return (f"{source}: torchvision {kind} ImageNet weights -> backbone.vgg (13 conv layers); {fc_text}; "
            f"ImageNet classifier dropped; L2Norm, extra layers and heads keep their initialisation{note}")


def _load_mobilenet(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> str:
    loaded = transfer(model, state, _features_to("backbone.body."), source, "torchvision mobilenet_v3_large",
                      ignore=lambda k: k.startswith("classifier."),
                      allow_missing=lambda k: not k.startswith("backbone.body."))
    return (f"{source}: torchvision mobilenet_v3_large ImageNet weights -> backbone.body ({len(loaded)} tensors); "
            f"classifier dropped; SSDLite extras and heads keep their initialisation"
            f"{_preprocess_note(model, IMAGENET, 'torchvision ImageNet MobileNetV3')}")


def _load_by_suffix(model: nn.Module, state: Mapping[str, torch.Tensor], kind: str, source: str) -> str:
    """Find the one prefix P with P + key in the model for every (non-classifier) source key, then copy."""
    keys = {k for k in state if not k.startswith("fc.")}
    own = model.state_dict()
    counts: dict[str, int] = {}
    for mk in own:
        for m in re.finditer(r"\.", mk):
            if mk[m.end():] in keys:
                counts[mk[: m.end()]] = counts.get(mk[: m.end()], 0) + 1
    prefix = max(counts, key=lambda p: counts[p], default=None)
    if prefix is None or counts[prefix] < len(keys):
        found = f"best match '{prefix}' holds {counts[prefix]} of {len(keys)} tensors" if prefix else "no names match"
        missing = sorted(k for k in keys if prefix is None or prefix + k not in own)[:3]
        raise SsdError(
            f"{source}: {kind} weights do not fit '{_arch(model)}' ({found}; e.g. missing {', '.join(missing)})"
        )
    origin = "torchvision " if kind.startswith("resnet") else ""
    loaded = transfer(model, state, lambda k: prefix + k, source, f"{origin}{kind}",
                      ignore=lambda k: k.startswith("fc."), allow_missing=lambda k: not k.startswith(prefix))
    note = _preprocess_note(model, IMAGENET, "torchvision ImageNet ResNet")
    return (f"{source}: {origin}{kind} ImageNet weights -> {prefix.rstrip('.')} ({len(loaded)} tensors); "
            f"fc classifier dropped; the rest keeps its initialisation{note}")


def _arch(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "arch", type(model).__name__)


def load_backbone_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "<state dict>") -> str:
    """Load an ImageNet classifier state dict into ``model``'s backbone; returns a one-paragraph description."""
    kind = identify_backbone(state)
    target = _target_kind(model)
    arch = _arch(model)
    if kind is None:
        sample = ", ".join(list(state)[:3])
        raise SsdError(
            f"{source}: unknown backbone layout (expected a torchvision vgg16, vgg16_bn, mobilenet_v3_large or "
            f"resnet state dict; unexpected keys {sample}, ...)"
        )
    if kind.startswith("vgg") and target.startswith("vgg"):
        if kind not in ("vgg16", "vgg16_bn", "vgg16_reducedfc"):
            raise SsdError(f"{source}: {kind} weights are not supported (the SSD trunk is VGG16)")
        return _load_vgg(model, state, kind, target, source)
    if kind == "mobilenet_v3_large" and target == "mobilenet":
        return _load_mobilenet(model, state, source)
    if kind.startswith("resnet") and target == "other":
        return _load_by_suffix(model, state, kind, source)
    if kind == "dla34" and target == "other":
        return _load_by_suffix(model, dla_imagenet_state(state), kind, source)
    needs = {"vgg": "vgg16", "vgg_bn": "vgg16_bn", "mobilenet": "mobilenet_v3_large"}.get(target, "a matching ImageNet")
    raise SsdError(f"{source}: {kind} weights do not fit '{arch}' (it needs {needs} weights)")


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> str:
    """Load an ImageNet backbone state-dict file (read with ``weights_only=True``) into ``model``.

    Returns a description of what was loaded (nothing is printed). Raises :class:`SsdError` for files that do
    not fit, naming unexpected/missing keys.
    """
    return load_backbone_state(model, read_state_dict(path), str(path))


_PRETRAINED = {
    "vgg": ("vgg16", "VGG16_Weights"),
    "vgg_bn": ("vgg16_bn", "VGG16_BN_Weights"),
    "mobilenet": ("mobilenet_v3_large", "MobileNet_V3_Large_Weights"),
}


def load_pretrained_backbone(model: nn.Module) -> str:
    """Download torchvision's ImageNet weights for ``model``'s backbone (needs internet) and load them."""
    import torchvision.models as tvm

    target = _target_kind(model)
    arch = _arch(model)
    origin = "torchvision"
    if target in _PRETRAINED:
        name, enum = _PRETRAINED[target]
    elif "dla34" in arch:  # the DLA authors' file (timm's dla34 too); its 8-hex name suffix is not known to be sha256
        name, enum, origin = "dla34", "", "DLA authors'"
    else:
        m = re.search(r"res(?:net)?(\d+)", arch)
        if not m or int(m.group(1)) not in (18, 34, 50, 101):
            raise SsdError(f"--pretrained-backbone: no known ImageNet backbone for '{arch}'")
        name, enum = f"resnet{m.group(1)}", f"ResNet{m.group(1)}_Weights"
    url = getattr(tvm, enum).IMAGENET1K_V1.url if enum else DLA34_URL
    try:
        state = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=bool(enum), weights_only=True
        )
    except Exception as e:  # network, hash or file errors: all user-environment problems
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SsdError(
            f"--pretrained-backbone: could not fetch {origin} {name} weights from {url} ({first}); download the "
            f"file elsewhere and pass it with --backbone-weights FILE"
        ) from None
    return load_backbone_state(model, state, f"{origin} {name} ({os.path.basename(url)})")


__all__ = [
    "decimate_fc6",
    "decimate_fc7",
    "identify_backbone",
    "load_backbone_state",
    "load_backbone_weights",
    "load_pretrained_backbone",
]
