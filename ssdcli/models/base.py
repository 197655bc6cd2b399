"""The one interface every detector family implements, so that train/eval/detect/export never special-case.

* ``forward(images)`` -> tuple of raw output tensors named by :attr:`~DetectorModel.output_names` (SSD:
  ``(locs [N,P,4], logits [N,P,C])``), same in train and eval mode.
* ``encode_targets(gt_boxes, gt_labels)`` -> dict of target tensors for :meth:`compute_loss`
  (per-image relative xyxy boxes and 1-based labels in).
* ``compute_loss(outputs, targets)`` -> dict with named loss terms and ``"total"``.
* ``decode(outputs, config)`` -> per-image :class:`~ssdcli.postprocess.Detections` in relative xyxy.
* ``train_augment(max_zoom_out)`` -> the family's :class:`~ssdcli.data.transforms.TrainAugment`;
  ``reference_augment`` the optional slow torchvision v2 version of it.
* ``export_graph(config)`` -> the ONNX export module (contract: :mod:`ssdcli.models.export_graph`);
  ``export_arrays()`` / ``decoder_name`` what a raw-outputs export stores beside it.
* ``supports_flip_test`` / ``forward_flip_test(images)``: optional test-time flip; ``supports_multi_scale`` /
  ``detect_multi_scale(images, scales, config, flip_test)``: optional multi-scale testing.
* ``export_support(opset)``: None, or why the model cannot be exported at that opset.
* ``head_parameter_prefixes()``: the class-dependent layers (re-initialised when fine-tuning to new classes);
  ``transfer_class_rows(src_state, rows)`` keeps the trained rows of classes that exist in both class lists.
* ``config`` -> :class:`ModelConfig`, everything needed to rebuild the model and feed it (stored in checkpoints).

Nothing here is specific to one family: defaults either raise or describe "no such feature".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ssdcli.data.transforms import TrainAugment
from ssdcli.errors import SsdError
from ssdcli.postprocess import PAPER_NMS_IOU, Detections, PostprocessConfig
from ssdcli.preprocess import Preprocess
from ssdcli.prior_fit import PriorCoverage


@dataclass
class ModelConfig:
    arch: str
    num_classes: int  # including background (index 0), as torchvision
    image_size: int
    preprocess: Preprocess = field(default_factory=Preprocess)
    class_names: list[str] = field(default_factory=list)  # foreground names, len == num_classes - 1
    extra: dict = field(default_factory=dict)  # family-specific settings (SSD: prior spec)
    # NMS IoU threshold used when --iou is not given (eval, detect, export, validation during training): chosen by
    # the training recipe, or the source project's for converted weights; the SSD paper's in older checkpoints
    nms_threshold: float = PAPER_NMS_IOU

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "preprocess": self.preprocess.to_dict(),
            "class_names": list(self.class_names),
            "extra": self.extra,
            "nms_threshold": self.nms_threshold,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(
            arch=str(d["arch"]),
            num_classes=int(d["num_classes"]),
            image_size=int(d["image_size"]),
            preprocess=Preprocess.from_dict(d["preprocess"]),
            class_names=[str(c) for c in d.get("class_names", [])],
            extra=dict(d.get("extra", {})),
            nms_threshold=float(d.get("nms_threshold", PAPER_NMS_IOU)),
        )


class NormalizationLayer(nn.Module):
    """Base of a family's own normalisation layers (e.g. SSD's L2Norm): their parameters get no weight decay."""


class DetectorModel(nn.Module):
    """Base class of all detectors; see the module docstring for the contract."""

    config: ModelConfig

    def check_input(self, images: torch.Tensor) -> None:
        size = self.config.image_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != size or images.shape[3] != size:
            raise SsdError(
                f"{self.config.arch} expects a normalised image batch of shape [N, 3, {size}, {size}], "
                f"got {list(images.shape)}"
            )
        if self.training and images.shape[0] == 1 and self._has_batch_norm():
            raise SsdError(
                f"{self.config.arch} has BatchNorm layers: training needs at least 2 images per batch (got 1)"
            )

    def _has_batch_norm(self) -> bool:
        if not hasattr(self, "_batch_norm_cache"):
            self._batch_norm_cache = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules())
        return self._batch_norm_cache

    def encode_targets(self, gt_boxes: list[torch.Tensor], gt_labels: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def compute_loss(self, outputs: tuple[torch.Tensor, ...], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, outputs: tuple[torch.Tensor, ...], config: PostprocessConfig = PostprocessConfig()) -> list[Detections]:
        raise NotImplementedError

    def train_augment(self, max_zoom_out: float | None = None) -> TrainAugment:
        """The training augmentation of this family: a :class:`~ssdcli.data.transforms.TrainAugment`.

        ``max_zoom_out``: the zoom-out ("expansion") ratio limit of families that have one (None: the family's
        default; 1 or less: off); families without a zoom-out step raise :class:`SsdError` when it is given.
        """
        raise NotImplementedError

    def reference_augment(self, max_zoom_out: float | None = None) -> Callable:
        """A slower plain ``torchvision.transforms.v2`` composition that :meth:`train_augment` reproduces, for
        comparisons (``ssd train --augment reference``); :class:`SsdError` for families without one."""
        raise SsdError(
            f"--augment reference: {self.config.arch} brings its own augmentation (no torchvision v2 reference)"
        )

    def set_box_loss(self, kind: str, weight: float = 1.0) -> None:
        """Train box regression with ``kind`` (one of :data:`ssdcli.loss.BOX_LOSSES`; ``--box-loss``); families
        with a box loss of their own accept only the default and refuse the others."""
        if kind != "smooth_l1":
            raise SsdError(f"--box-loss {kind}: {self.config.arch} has a box loss of its own (the option is for SSD)")

    def prior_coverage(self, boxes: torch.Tensor) -> PriorCoverage | None:
        """How the model's priors cover ``boxes`` (``[M,4]`` relative xyxy); None for families without priors."""
        return None

    def refit_priors(self, boxes: torch.Tensor, seed: int = 0) -> None:
        """Re-fit the prior sizes and aspect ratios to ``boxes`` (same layout, recorded in :attr:`config`)."""
        raise SsdError(f"--fit-priors: {self.config.arch} has no priors to fit")

    def export_graph(self, config: PostprocessConfig) -> nn.Module:
        """A module for ONNX export mapping a normalised batch to final detections (decode and NMS or peak
        extraction inside the graph). The output contract is defined in :mod:`ssdcli.models.export_graph`."""
        raise NotImplementedError

    def export_arrays(self) -> dict[str, torch.Tensor]:
        """Arrays a raw-outputs ONNX export writes beside the model so that other runtimes can decode it
        (SSD: ``{"priors": [P,4]}``, saved as ``<stem>.priors.npy``); none by default."""
        return {}

    def export_support(self, opset: int) -> str | None:
        """None when the model exports to ONNX at ``opset``, else the one-line reason (e.g. an operator that ONNX
        has only from a later opset on), naming what to use instead."""
        return None

    @property
    def decoder_name(self) -> str:
        """How the raw outputs are decoded, recorded in ONNX metadata (default: the architecture name)."""
        return self.config.arch

    def head_parameter_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of the class-dependent layers (re-initialised when fine-tuning to new classes)."""
        raise NotImplementedError

    def backbone_parameter_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of the feature extractor (``--freeze-backbone``); none by default."""
        return ()

    def transfer_class_rows(self, src_state: Mapping[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensors under :meth:`head_parameter_prefixes` for this model, taken from ``src_state`` (a checkpoint of
        the same architecture trained on other classes): ``rows`` ``[num_classes]`` (long, background at 0) gives,
        for each class of this model, the source class whose trained output row it keeps, or -1 to keep this
        model's fresh initialisation. Class-independent parts of those layers are copied whole. Returns the
        tensors to load (state-dict keys); families without class-row knowledge return none (heads stay fresh)."""
        return {}

    supports_flip_test: bool = False  # True: :meth:`forward_flip_test` is implemented

    def forward_flip_test(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One pass over ``images`` and their mirror image, merged into outputs of :meth:`forward`'s format
        (families that set :attr:`supports_flip_test`)."""
        raise NotImplementedError(f"{self.config.arch} has no flip test")

    supports_multi_scale: bool = False  # True: :meth:`detect_multi_scale` is implemented

    def detect_multi_scale(
        self, images: torch.Tensor, scales: tuple[float, ...], config: PostprocessConfig, flip_test: bool = False
    ) -> list[Detections]:
        """Detections for a normalised batch at the model input size, run at every ``scale`` of that size and
        merged (families that set :attr:`supports_multi_scale`)."""
        raise SsdError(f"--test-scales: {self.config.arch} has no multi-scale testing")

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of :meth:`forward`'s raw outputs (ONNX output names of a raw-outputs export)."""
        raise NotImplementedError
