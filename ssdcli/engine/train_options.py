"""Every ``ssd train`` setting, declared once (:class:`TrainOptions`): the CLI generates its flags from these fields'
metadata (help, range, choices) and :meth:`TrainOptions.validate` checks the same for API callers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ssdcli.engine.optim import OPTIMIZERS
from ssdcli.errors import SsdError
from ssdcli.loss import BOX_LOSSES
from ssdcli.models.registry import available_models

AUGMENT_KINDS: tuple[str, ...] = ("fast", "reference")
# coco first: on small validation splits mAP@0.5 saturates and picks loose early checkpoints (measured on raccoon:
# centernet-res18 best.pth by val mAP@0.5 scored 0.42 test mAP@0.5, the later one preferred by val COCO AP 0.54)
VAL_METRICS: tuple[str, ...] = ("coco", "voc07", "voc12")


def metric_label(metric: str) -> str:
    """How a validation metric is named in messages: ``AP@[.5:.95] (coco)`` or ``mAP@0.5 (voc07)``."""
    return f"{'AP@[.5:.95]' if metric == 'coco' else 'mAP@0.5'} ({metric})"


def option(default: Any, help: str, *, min: float | None = None, max: float | None = None,
           choices: Sequence[str] | Callable[[], Sequence[str]] | None = None, flag: str | None = None,
           kind: str | None = None) -> Any:  # fmt: skip
    """A TrainOptions field that is also an ``ssd train`` flag (``flag`` default: ``--field-name``)."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "flag": flag, "kind": kind}
    return field(default=default, metadata={k: v for k, v in meta.items() if v is not None} | {"help": help})


@dataclass
class TrainOptions:
    """Every training setting, declared once: ``ssd train``'s flags are generated from these fields' metadata
    (help, range, choices; see :func:`option`), and :meth:`validate` checks the same ranges for API callers.

    Settings left as None come from the architecture's recipe for how the run starts (scratch, ImageNet backbone or
    detector weights; see :mod:`ssdcli.models.recipe`); the trainer replaces the Nones with the resolved values.
    """

    data: str = option("", "Prepared dataset folder (from `ssd prepare-voc`).", kind="path")
    arch: str = option("ssd300", "Architecture (`ssd train --arch A --print-recipe` shows its recipe).", choices=available_models)
    iters: int | None = option(None, "Training iterations (default: the recipe's epochs, or fitted to "
                               "--time-limit).", min=1)  # fmt: skip
    epochs: float | None = option(None, "Length in epochs, instead of --iters.", min=1e-6)
    batch: int | None = option(None, "Images per step and process (default: the recipe's).", min=1)
    lr: float | None = option(None, "Base learning rate (default: the recipe's, scaled to the global batch by "
                              "its rule).", min=1e-12)  # fmt: skip
    momentum: float | None = option(None, "SGD momentum / Adam beta1 (default: the recipe's).", min=0.0, max=0.9999)
    weight_decay: float | None = option(None, "Weight decay of conv/linear weights (default: the recipe's).",
                                        min=0.0, max=1.0)  # fmt: skip
    bias_lr_factor: float | None = option(None, "Bias lr multiplier (Caffe SSD: 2; default: the recipe's).",
                                          min=0.0, max=100.0)  # fmt: skip
    optimizer: str | None = option(None, "Optimizer (default: the recipe's).", choices=OPTIMIZERS)
    schedule: str | None = option(None, "lr schedule: step (x0.1 at the recipe's milestones) or cosine.",
                                  choices=("step", "cosine"))  # fmt: skip
    warmup_iters: int | None = option(None, "Linear warm-up iterations (default: the recipe's share of the run).",
                                      min=0)  # fmt: skip
    img_size: int | None = option(None, "Input size (default: the recipe's or the architecture's).", min=32,
                                  max=4096)  # fmt: skip
    workers: int | None = option(None, "DataLoader worker processes (default: 1 on CPU, min(8, CPUs) on CUDA).",
                                 min=0, max=64)  # fmt: skip
    seed: int = option(0, "Random seed (data order, augmentation, initialisation).", min=0)
    amp: bool | None = option(None, "Mixed precision: float16 on CUDA, bf16 on CPU (default: on for CUDA; on "
                               "CPUs with AMX where the recipe says it is faster).", flag="--amp/--no-amp")  # fmt: skip
    channels_last: bool | None = option(None, "channels-last memory format (default: the recipe's).",
                                        flag="--channels-last/--no-channels-last")  # fmt: skip
    zoom_out: float | None = option(None, "SSD zoom-out limit; 1 turns it off (default: the recipe's).", min=1.0,
                                    max=16.0)  # fmt: skip
    ema: bool | None = option(None, "Keep, validate and save an EMA of the weights (default: the recipe's).",
                              flag="--ema/--no-ema")  # fmt: skip
    ema_decay: float | None = option(None, "EMA decay (default: the recipe's).", min=0.5, max=0.999999)
    freeze_backbone: float | None = option(None, "Do not update the backbone during this fraction of the run (0-1; "
                                           "fine-tuning: the heads adapt first; default: the recipe's).", min=0.0,
                                           max=1.0)  # fmt: skip
    augment: str = option("fast", "fast (the model's own pipeline) or reference (SSD only: the torchvision v2 "
                          "composition, slower).", choices=AUGMENT_KINDS)  # fmt: skip
    compile: bool = option(False, "torch.compile the model.", flag="--compile")
    box_loss: str | None = option(None, "SSD box regression: smooth_l1 (the paper) or smooth L1 plus an IoU-aware "
                                  "term on the decoded boxes: giou, diou, ciou (default: the recipe's).",
                                  choices=BOX_LOSSES)  # fmt: skip
    box_loss_weight: float = option(1.0, "Weight of the IoU term of --box-loss.", min=0.0, max=100.0)
    fit_priors: bool | None = option(None, "Re-fit the SSD prior sizes and aspect ratios to the training boxes "
                                     "(same layout; stored in the checkpoint; default: the recipe's).",
                                     flag="--fit-priors/--no-fit-priors")  # fmt: skip
    iou: float | None = option(None, "NMS IoU threshold stored in the model: what validation (best.pth), eval, "
                               "detect and export-onnx use unless given --iou (default: the recipe's; else the "
                               "start weights', or the SSD paper's 0.45).", min=1e-6, max=1.0)  # fmt: skip
    grad_clip: float | None = option(None, "Clip the gradient norm to this value.", min=1e-12)
    eval_every: int | None = option(None, "Validate every N iterations (default: 4 times per run).", min=1)
    patience: int | None = option(None, "Stop after N validations without a better val mAP (default: never).",
                                  min=1)  # fmt: skip
    val_size: int | None = option(None, "Validate on a random subset of this many images.", min=1)
    val_split: str = option("val", "Split that picks best.pth ('none': no validation; 'test' makes test figures "
                            "optimistic).")  # fmt: skip
    val_metric: str = option("coco", "Metric that picks best.pth: coco (AP@[.5:.95], rewards tight boxes) or voc07 / "
                             "voc12 (mAP@0.5).", choices=VAL_METRICS)  # fmt: skip
    weights: str | None = option(None, "Fine-tune from a native checkpoint, or coco-ssd300 / coco-ssdlite320 "
                                 "(torchvision's COCO model: downloaded once, converted, cached); selects the "
                                 "fine-tuning recipe.", flag="--weights/-w", kind="path")  # fmt: skip
    class_map: str | None = option(None, "With --weights of other classes: NEW=OLD pairs (dataset class = "
                                   "checkpoint class), comma-separated or a file; equal names (any case) and VOC/COCO "
                                   "spellings match by themselves.")  # fmt: skip
    backbone_weights: str | None = option(None, "ImageNet backbone state dict file (torchvision format).",
                                          kind="path")  # fmt: skip
    pretrained_backbone: bool = option(False, "Fetch torchvision's ImageNet backbone (needs internet).",
                                       flag="--pretrained-backbone")  # fmt: skip
    project: str = option("runs/train", "Parent folder of run folders.")
    name: str = option("exp", "Run name (auto-incremented if taken).")
    time_limit: float | None = option(None, "Time budget, e.g. 15m or 1.5h: alone, the schedule is fitted to it.",
                                      kind="duration")  # fmt: skip
    save_every: float | None = option(None, "Also save last.pth this often, e.g. 10m (besides each validation).",
                                      min=0.0, kind="duration")  # fmt: skip
    log_every: int = option(20, "Write a metrics row every N iterations.", min=1)
    device: str = option("auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N.")
    max_bad_steps: int = 5  # non-finite losses in a row before the run stops
    stop_after: int | None = None  # end this process after N iterations, as if interrupted (tests, drills)
    recipe: dict | None = None  # filled by the trainer: the recipe used and where each value came from
    class_transfer: dict | None = None  # filled by the trainer: which classes kept trained rows (--weights)

    def validate(self) -> None:
        """Check every declared range and choice (the CLI checks the same before parsing ends)."""
        for f in fields(self):
            meta, value = f.metadata, getattr(self, f.name)
            if not meta or value is None:
                continue
            flag = "--" + f.name.replace("_", "-")
            choices = meta.get("choices")
            if choices is not None:
                allowed = tuple(choices() if callable(choices) else choices)
                if value not in allowed:
                    raise SsdError(f"{flag} {value}: expected one of {', '.join(allowed)}")
            lo, hi = meta.get("min"), meta.get("max")
            if lo is not None or hi is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise SsdError(f"{flag} {value!r}: expected a number")
                if (lo is not None and value < lo) or (hi is not None and value > hi):
                    bounds = " and ".join(x for x in (f">= {lo:g}" if lo is not None else "",
                                                      f"<= {hi:g}" if hi is not None else "") if x)  # fmt: skip
                    raise SsdError(f"{flag} {value:g}: expected a value {bounds}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainOptions:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
