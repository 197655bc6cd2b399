"""SSD detectors: a backbone returning source feature maps + per-source loc/conf convolution heads."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ssdcli.data.reference_aug import ReferenceAugment
from ssdcli.data.transforms import SSDTrainAugment
from ssdcli.loss import multibox_loss
from ssdcli.matching import assign_targets
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.class_rows import remap_rows
from ssdcli.models.ssd.graph import SsdExportGraph
from ssdcli.postprocess import Detections, PostprocessConfig, postprocess
from ssdcli.prior_fit import PriorCoverage, coverage, refit
from ssdcli.priors import PriorSpec, generate_priors

HeadFactory = Callable[[int, int], nn.Module]  # (in_channels, out_channels) -> module


def conv3x3_head(cin: int, cout: int) -> nn.Module:
    conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _flatten(outputs: list[torch.Tensor], last: int) -> torch.Tensor:
    n = outputs[0].shape[0]
    return torch.cat([o.permute(0, 2, 3, 1).reshape(n, -1, last) for o in outputs], dim=1)


class SSD(DetectorModel):
    """``forward(images [N,3,S,S]) -> (locs [N,P,4], logits [N,P,C])`` with P priors in :attr:`priors` order."""

    def __init__(
        self,
        config: ModelConfig,
        backbone: nn.Module,
        out_channels: list[int],
        prior_spec: PriorSpec,
        head: HeadFactory = conv3x3_head,
    ) -> None:
        super().__init__()
        if len(out_channels) != len(prior_spec.feature_maps):
            raise ValueError("one backbone source per prior feature map is required")
        self.config = config
        self.prior_spec = prior_spec
        self.backbone = backbone
        per_loc = prior_spec.priors_per_location()
        self.loc = nn.ModuleList(head(c, a * 4) for c, a in zip(out_channels, per_loc))
        self.conf = nn.ModuleList(head(c, a * config.num_classes) for c, a in zip(out_channels, per_loc))
        self.register_buffer("priors", generate_priors(prior_spec), persistent=False)
        self.box_loss, self.box_loss_weight = "smooth_l1", 1.0

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(images)
        sources = self.backbone(images)
        locs = _flatten([h(s) for h, s in zip(self.loc, sources)], 4)
        logits = _flatten([h(s) for h, s in zip(self.conf, sources)], self.config.num_classes)
        return locs, logits

    def encode_targets(self, gt_boxes: list[torch.Tensor], gt_labels: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        loc_t, cls_t = assign_targets(
            gt_boxes, gt_labels, self.priors, 0.5, self.prior_spec.variances, prior_spec=self.prior_spec
        )
        return {"loc_targets": loc_t, "cls_targets": cls_t}

    def compute_loss(self, outputs: tuple[torch.Tensor, ...], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        locs, logits = outputs
        loc_loss, cls_loss = multibox_loss(
            locs, logits, targets["loc_targets"], targets["cls_targets"], box_loss=self.box_loss, priors=self.priors,
            variances=self.prior_spec.variances, box_loss_weight=self.box_loss_weight,
        )
        return {"loc": loc_loss, "cls": cls_loss, "total": loc_loss + cls_loss}

    def decode(self, outputs: tuple[torch.Tensor, ...], config: PostprocessConfig = PostprocessConfig()) -> list[Detections]:
        locs, logits = outputs
        config = config.with_nms_default(self.config.nms_threshold)
        return postprocess(locs, logits, self.priors, config, self.prior_spec.variances)

    def set_box_loss(self, kind: str, weight: float = 1.0) -> None:
        self.box_loss, self.box_loss_weight = kind, float(weight)

    def prior_coverage(self, boxes: torch.Tensor) -> PriorCoverage:
        return coverage(self.prior_spec, boxes)

    def refit_priors(self, boxes: torch.Tensor, seed: int = 0) -> None:
        spec = refit(self.prior_spec, boxes, seed=seed)
        self.prior_spec = spec
        self.config.extra["prior_spec"] = spec.to_dict()
        self.priors = generate_priors(spec).to(self.priors.device)

    def train_augment(self, max_zoom_out: float | None = None) -> SSDTrainAugment:
        """The SSD paper's augmentation (fast path); ``max_zoom_out`` None: the paper's 4, 1 or less: off."""
        size, pre = self.config.image_size, self.config.preprocess
        if max_zoom_out is None:
            return SSDTrainAugment(size, pre)
        if max_zoom_out <= 1.0:
            return SSDTrainAugment(size, pre, zoom_out_p=0.0)
        return SSDTrainAugment(size, pre, max_zoom_out=float(max_zoom_out))

    def reference_augment(self, max_zoom_out: float | None = None) -> ReferenceAugment:
        return ReferenceAugment(self.config.image_size, self.config.preprocess, max_zoom_out=max_zoom_out)

    def export_graph(self, config: PostprocessConfig) -> nn.Module:
        return SsdExportGraph(self, config.with_nms_default(self.config.nms_threshold))

    def export_arrays(self) -> dict[str, torch.Tensor]:
        return {"priors": self.priors}

    @property
    def decoder_name(self) -> str:
        return "ssd"

    def head_parameter_prefixes(self) -> tuple[str, ...]:
        return ("conf.",)

    def backbone_parameter_prefixes(self) -> tuple[str, ...]:
        return ("backbone.",)  # the trunk and the extra layers: everything but the loc/conf heads

    def transfer_class_rows(self, src_state: Mapping[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each conf head's last convolution predicts ``anchors x classes`` channels per location (channel
        ``a * C + c``, the order :func:`_flatten` reads): rows move per anchor group. Layers before it (SSDLite's
        depthwise conv + BN) are class-independent and copied whole."""
        out: dict[str, torch.Tensor] = {}
        for i, (head, anchors) in enumerate(zip(self.conf, self.prior_spec.priors_per_location())):
            last = [name for name, m in head.named_modules() if isinstance(m, nn.Conv2d)][-1]
            for name, own in head.state_dict().items():
                key, src = f"conf.{i}.{name}", src_state.get(f"conf.{i}.{name}")
                if src is None:
                    continue
                if name.rpartition(".")[0] == last:
                    out[key] = remap_rows(own, src, rows, anchors)
                elif src.shape == own.shape:
                    out[key] = src
        return out

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("locs", "logits")
