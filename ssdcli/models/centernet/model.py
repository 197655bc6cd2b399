"""CenterNet ("Objects as Points") with a torchvision ResNet backbone; :class:`CenterNetBase` holds what every
CenterNet shares (heads, loss, decoding, flip and multi-scale testing, export), :mod:`.dla_model` the DLA-34 one.

Layout (state-dict names)::

    backbone.body.{conv1,bn1,layer1..layer4}   torchvision ResNet names (ImageNet weights load 1:1, minus fc)
    neck.{0,1,2}.{up,conv,bn,relu}             3 stages: bilinear x2 upsample, 3x3 conv (or modulated
                                               DeformConv2d, extra["deform"]=True; ONNX export of that
                                               variant needs opset >= 19, see .onnx_ops), BN, ReLU -> stride 4
    lateral.{0,1,2}                            extra["skips"]: 1x1 convs adding layer3/layer2/layer1 (stride
                                               16/8/4) to the output of neck stage 0/1/2
    head_heatmap / head_size / head_offset     3x3 conv + ReLU + 1x1 conv each (C-1, 2, 2 channels)

Skip connections (on by default): without them the stride-4 maps are decoded from the stride-32 map alone (3x3
cells at a 96-pixel input), and a network trained from scratch does not learn where the centres are: measured on
the sample dataset at 96 px, 120 iterations without skips left 5% of the objects with a peak next to their centre,
80 with skips 52% (mAP@0.5 0.00 -> 0.18). The reference ResNet variant has no skips (it starts from ImageNet
weights at 512 px); its DLA-34 variant aggregates the stride-4..32 stages the same way. Checkpoints written before
the setting existed (``extra`` without ``skips``) are rebuilt without them.

``forward(images [N,3,S,S]) -> (heatmap logits [N,C-1,S/4,S/4], size [N,2,S/4,S/4], offset [N,2,S/4,S/4])`` in
train and eval mode alike; ``S`` must be a multiple of 32. Sizes and offsets are in output-map cells (1 cell =
4 input pixels); see :mod:`.targets`, :mod:`.loss`, :mod:`.decode`.

Settings in ``ModelConfig.extra`` (written back with their defaults so checkpoints are self-describing):
``deform`` (False), ``skips`` (True), ``neck_channels`` ([256, 128, 64]), ``head_conv`` (64), ``max_peaks`` (100),
``min_overlap`` (0.7), ``exact_radius`` (False), ``size_weight`` (0.1), ``offset_weight`` (1.0).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torchvision
from torch import nn

from ssdcli.errors import SsdError
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.centernet import decode as cn_decode
from ssdcli.models.centernet.augment import CenterNetTrainAugment
from ssdcli.models.centernet.deform import ModulatedDeformConv3x3
from ssdcli.models.centernet.graph import CenterNetExportGraph
from ssdcli.models.centernet.loss import OFFSET_WEIGHT, SIZE_WEIGHT, centernet_loss
from ssdcli.models.centernet.multiscale import detect_multi_scale
from ssdcli.models.centernet.onnx_ops import MIN_OPSET as DEFORM_MIN_OPSET
from ssdcli.models.centernet.targets import encode_centernet_targets
from ssdcli.models.class_rows import remap_rows
from ssdcli.postprocess import Detections, PostprocessConfig

OUTPUT_STRIDE = 4
HEATMAP_BIAS = -2.19  # sigmoid(-2.19) ~= 0.1: the focal-loss prior of the reference implementation
_RESNETS = {
    "resnet18": (torchvision.models.resnet18, (64, 128, 256, 512)),
    "resnet50": (torchvision.models.resnet50, (256, 512, 1024, 2048)),
}
DEFAULTS: dict = {
    "deform": False,
    "skips": True,
    "neck_channels": [256, 128, 64],
    "head_conv": 64,
    "max_peaks": cn_decode.MAX_PEAKS,
    "min_overlap": 0.7,
    "exact_radius": False,
    "size_weight": SIZE_WEIGHT,
    "offset_weight": OFFSET_WEIGHT,
}
LEGACY: dict = {"skips": False}  # values of settings added later, for configs saved before they existed


class ResNetBackbone(nn.Module):
    """torchvision ResNet without avgpool/fc: ``[N,3,S,S] -> [N,out_channels,S/32,S/32]``; :meth:`features`
    also returns the earlier stages."""

    def __init__(self, name: str = "resnet18") -> None:
        super().__init__()
        ctor, self.stage_channels = _RESNETS[name]
        self.out_channels = self.stage_channels[-1]
        net = ctor(weights=None)
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        self.body = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[layer1 (stride 4), layer2 (8), layer3 (16), layer4 (32)]`` outputs."""
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        out = []
        for layer in (b.layer1, b.layer2, b.layer3, b.layer4):
            x = layer(x)
            out.append(x)
        return out


def _up_stage(cin: int, cout: int, deform: bool) -> nn.Sequential:
    conv: nn.Module = ModulatedDeformConv3x3(cin, cout) if deform else nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    return nn.Sequential(
        OrderedDict(
            up=nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            conv=conv,
            bn=nn.BatchNorm2d(cout),
            relu=nn.ReLU(inplace=True),
        )
    )


def _head(cin: int, mid: int, cout: int, heatmap_bias: float | None = None) -> nn.Sequential:
    """3x3 conv + ReLU + 1x1 conv, initialised as the reference implementation: the heatmap head (``heatmap_bias``
    given) keeps PyTorch's default conv init with the last bias set to the focal-loss prior; the regression heads
    get weights N(0, 0.001) and zero biases."""
    head = nn.Sequential(nn.Conv2d(cin, mid, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1))
    if heatmap_bias is not None:
        nn.init.constant_(head[2].bias, heatmap_bias)
        return head
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.001)
            nn.init.zeros_(m.bias)
    return head


class CenterNetBase(DetectorModel):
    """Anchor-free detector: class-centre heatmap + size + offset at stride 4 (the parts every CenterNet backbone
    shares). Subclasses build the backbone and neck, then call :meth:`_build_heads`, and implement
    :meth:`features` (normalised images of any size divisible by 32 -> the stride-4 feature map)."""

    def _init_settings(self, config: ModelConfig, defaults: dict, legacy: dict | None = None) -> None:
        if config.image_size % 32 != 0 or config.image_size <= 0:
            raise SsdError(f"--img-size: {config.arch} needs an input size divisible by 32, got {config.image_size}")
        saved = any(k in config.extra for k in ("neck_channels", "max_peaks"))  # written back by an earlier build
        for key, value in defaults.items():
            config.extra.setdefault(key, copy.deepcopy(legacy[key] if saved and legacy and key in legacy else value))
        self.config = config
        self.settings = config.extra
        self.num_foreground = config.num_classes - 1
        self.out_size = config.image_size // OUTPUT_STRIDE

    def _build_heads(self, feat: int) -> None:
        mid = int(self.settings["head_conv"])
        self.head_heatmap = _head(feat, mid, self.num_foreground, HEATMAP_BIAS)
        self.head_size = _head(feat, mid, 2)
        self.head_offset = _head(feat, mid, 2)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def raw_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` without the input-size check: any ``[N,3,H,W]`` with ``H, W`` divisible by 32
        (multi-scale testing)."""
        f = self.features(images)
        return self.head_heatmap(f), self.head_size(f), self.head_offset(f)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.check_input(images)
        return self.raw_outputs(images)

    supports_flip_test = True
    supports_multi_scale = True

    def flip_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass over ``images`` (any size divisible by 32) and their mirror image, merged by
        :func:`.decode.merge_flip`."""
        both = self.raw_outputs(torch.cat((images, images.flip(-1))))
        n = images.shape[0]
        return cn_decode.merge_flip(tuple(o[:n] for o in both), tuple(o[n:] for o in both))  # type: ignore[arg-type]

    def forward_flip_test(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flip test hook: one pass over ``images`` and their mirror image, merged by :func:`.decode.merge_flip`
        into outputs of the same format as :meth:`forward` (decode them with :meth:`decode`)."""
        self.check_input(images)
        return self.flip_outputs(images)

    def detect_multi_scale(
        self, images: torch.Tensor, scales: tuple[float, ...], config: PostprocessConfig, flip_test: bool = False
    ) -> list[Detections]:
        """Multi-scale test (see :func:`.multiscale.detect_multi_scale`): ``images`` at the model input size."""
        self.check_input(images)
        forward = self.flip_outputs if flip_test else self.raw_outputs
        config = config.with_nms_default(self.config.nms_threshold)
        return detect_multi_scale(forward, images, scales, config, int(self.settings["max_peaks"]))

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_targets(self, gt_boxes: list[torch.Tensor], gt_labels: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Relative xyxy ``[K_i,4]`` + 1-based labels ``[K_i]`` per image -> targets on the model's device
        (keys ``heatmap, index, size, offset, mask``; see :func:`.targets.encode_centernet_targets`)."""
        return encode_centernet_targets(
            gt_boxes,
            gt_labels,
            self.num_foreground,
            (self.out_size, self.out_size),
            float(self.settings["min_overlap"]),
            bool(self.settings["exact_radius"]),
            device=self._device(),
        )

    def compute_loss(
        self, outputs: tuple[torch.Tensor, ...], targets: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return centernet_loss(
            outputs,  # type: ignore[arg-type]
            targets,
            float(self.settings["size_weight"]),
            float(self.settings["offset_weight"]),
        )

    def decode(
        self, outputs: tuple[torch.Tensor, ...], config: PostprocessConfig = PostprocessConfig()
    ) -> list[Detections]:
        return cn_decode.decode(outputs, config, int(self.settings["max_peaks"]))  # type: ignore[arg-type]

    def train_augment(self, max_zoom_out: float | None = None) -> CenterNetTrainAugment:
        """The "Objects as Points" training augmentation (random scale/shift, flip, colour jitter, PCA lighting)
        at the model's input size; see :mod:`.augment`. It has no SSD zoom-out step (its random scale covers it)."""
        if max_zoom_out is not None:
            raise SsdError(f"--zoom-out: {self.config.arch} has no SSD zoom-out step (its augmentation scales randomly)")
        return CenterNetTrainAugment(self.config.image_size, self.config.preprocess)

    def export_graph(self, config: PostprocessConfig, with_raw: bool = False) -> nn.Module:
        return CenterNetExportGraph(self, config, int(self.settings["max_peaks"]), with_raw)

    def head_parameter_prefixes(self) -> tuple[str, ...]:
        return ("head_heatmap.",)

    def backbone_parameter_prefixes(self) -> tuple[str, ...]:
        return ("backbone.",)  # the ResNet / DLA trunk (the neck and heads train)

    def transfer_class_rows(self, src_state: Mapping[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The heat-map head's 1x1 output conv has one channel per foreground class (no background: ``rows[1:]``
        shifted to 0-based); its 3x3 conv is class-independent and copied whole."""
        out: dict[str, torch.Tensor] = {}
        fg = torch.where(rows[1:] > 0, rows[1:] - 1, -1)
        for name, own in self.head_heatmap.state_dict().items():
            key = f"head_heatmap.{name}"
            src = src_state.get(key)
            if src is None:
                continue
            out[key] = remap_rows(own, src, fg) if name.startswith("2.") else src
        return out

    @property
    def plain_variant(self) -> str:
        """What to use instead when deformable convolutions cannot be exported."""
        return f"{self.config.arch} without extra deform=True"

    def export_support(self, opset: int) -> str | None:
        """Deformable convolutions export as ONNX ``DeformConv``, which exists from opset 19 on."""
        if bool(self.settings.get("deform")) and opset < DEFORM_MIN_OPSET:
            return (
                f"--opset {opset}: {self.config.arch} has deformable convolutions, which ONNX has as DeformConv from "
                f"opset {DEFORM_MIN_OPSET} on (use --opset {DEFORM_MIN_OPSET} or newer, or train {self.plain_variant})"
            )
        return None

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("heatmap", "size", "offset")


class CenterNet(CenterNetBase):
    """CenterNet with a torchvision ResNet backbone and the bilinear up-sampling neck (module docstring)."""

    def __init__(self, config: ModelConfig, backbone: nn.Module, in_channels: int) -> None:
        super().__init__()
        self._init_settings(config, DEFAULTS, LEGACY)
        self.backbone = backbone
        chans = [in_channels] + [int(c) for c in self.settings["neck_channels"]]
        if len(chans) != 4:
            raise SsdError(f"{config.arch}: neck_channels needs 3 entries, got {self.settings['neck_channels']}")
        self.neck = nn.Sequential(*(_up_stage(a, b, bool(self.settings["deform"])) for a, b in zip(chans, chans[1:])))
        for stage in self.neck:
            conv = stage.conv.conv if isinstance(stage.conv, ModulatedDeformConv3x3) else stage.conv
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.lateral: nn.ModuleList | None = None
        if bool(self.settings["skips"]):
            skip_in = list(getattr(backbone, "stage_channels", ()))[-2::-1]  # layer3, layer2, layer1
            if len(skip_in) != 3:
                raise SsdError(f"{config.arch}: skip connections need a backbone with 4 stages")
            self.lateral = nn.ModuleList(nn.Conv2d(a, b, 1) for a, b in zip(skip_in, chans[1:]))
        self._build_heads(chans[-1])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.lateral is None:
            return self.neck(self.backbone(images))
        feats = self.backbone.features(images)
        f = feats[-1]
        for stage, lateral, skip in zip(self.neck, self.lateral, feats[-2::-1]):
            f = stage(f) + lateral(skip)
        return f

    def load_backbone_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load a torchvision ResNet ``state_dict`` (e.g. ImageNet weights) into ``backbone.body``; ``fc.*`` keys
        are ignored, every other key must match (SsdError otherwise)."""
        body = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = self.backbone.body.state_dict()
        missing = sorted(set(own) - set(body))
        unexpected = sorted(set(body) - set(own))
        wrong = [k for k in own if k in body and body[k].shape != own[k].shape]
        if missing or unexpected or wrong:
            raise SsdError(
                f"backbone weights do not fit {self.config.arch}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
                f"shape mismatches {wrong[:3]}"
            )
        self.backbone.body.load_state_dict(body)


def build_centernet(config: ModelConfig, resnet: str) -> CenterNet:
    backbone = ResNetBackbone(resnet)
    return CenterNet(config, backbone, backbone.out_channels)
