"""CenterNet ("Objects as Points") with a torchvision ResNet backbone.

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

import torch
import torchvision
from torch import nn
from torchvision.ops import DeformConv2d

from ssdcli.errors import SsdError
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.centernet import decode as cn_decode
from ssdcli.models.centernet.augment import CenterNetTrainAugment
from ssdcli.models.centernet.graph import CenterNetExportGraph
from ssdcli.models.centernet.loss import OFFSET_WEIGHT, SIZE_WEIGHT, centernet_loss
from ssdcli.models.centernet.targets import encode_centernet_targets
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


class ModulatedDeformConv3x3(nn.Module):
    """DCNv2-style 3x3 conv from ``torchvision.ops.DeformConv2d`` (no compiled extension). Offsets and masks
    come from a zero-initialised 3x3 conv, so it starts as a plain conv with a 0.5 mask."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.offset_mask = nn.Conv2d(cin, 27, kernel_size=3, padding=1)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        self.conv = DeformConv2d(cin, cout, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        om = self.offset_mask(x)
        return self.conv(x, om[:, :18], torch.sigmoid(om[:, 18:]))


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


class CenterNet(DetectorModel):
    """Anchor-free detector: class-centre heatmap + size + offset at stride 4. See the module docstring."""

    def __init__(self, config: ModelConfig, backbone: nn.Module, in_channels: int) -> None:
        super().__init__()
        if config.image_size % 32 != 0 or config.image_size <= 0:
            raise SsdError(f"--img-size: {config.arch} needs an input size divisible by 32, got {config.image_size}")
        saved = "neck_channels" in config.extra  # a config written back by an earlier build (a checkpoint)
        for key, value in DEFAULTS.items():
            config.extra.setdefault(key, copy.deepcopy(LEGACY[key] if saved and key in LEGACY else value))
        self.config = config
        self.settings = config.extra
        self.num_foreground = config.num_classes - 1
        self.out_size = config.image_size // OUTPUT_STRIDE
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
        mid, feat = int(self.settings["head_conv"]), chans[-1]
        self.head_heatmap = _head(feat, mid, self.num_foreground, HEATMAP_BIAS)
        self.head_size = _head(feat, mid, 2)
        self.head_offset = _head(feat, mid, 2)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.check_input(images)
        if self.lateral is None:
            f = self.neck(self.backbone(images))
        else:
            feats = self.backbone.features(images)
            f = feats[-1]
            for stage, lateral, skip in zip(self.neck, self.lateral, feats[-2::-1]):
                f = stage(f) + lateral(skip)
        return self.head_heatmap(f), self.head_size(f), self.head_offset(f)

    supports_flip_test = True

    def forward_flip_test(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flip test hook: one pass over ``images`` and their mirror image, merged by :func:`.decode.merge_flip`
        into outputs of the same format as :meth:`forward` (decode them with :meth:`decode`)."""
        both = self(torch.cat((images, images.flip(-1))))
        n = images.shape[0]
        return cn_decode.merge_flip(tuple(o[:n] for o in both), tuple(o[n:] for o in both))  # type: ignore[arg-type]

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

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("heatmap", "size", "offset")

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
