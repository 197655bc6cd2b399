"""Training recipes as data: what a family trains best with, and where each choice comes from.

A family registers one :class:`Recipe` per way a run can start (:data:`START_KINDS`):

* ``"scratch"``: random initialisation (what a user gets with no weights option),
* ``"backbone"``: an ImageNet backbone (``--backbone-weights`` / ``--pretrained-backbone``),
* ``"finetune"``: a whole detector's weights (``--weights``).

Every field is a default that the matching ``ssd train`` flag overrides; the trainer resolves the final values
(lr scaled to the batch, length from epochs or a time budget) in :mod:`ssdcli.engine.recipes` and prints them.
``sources`` names, for each field that needs one, the paper, reference script or measurement behind it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ssdcli.loss import BOX_LOSSES

START_KINDS: tuple[str, ...] = ("scratch", "backbone", "finetune")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw", "adam")
SCHEDULES: tuple[str, ...] = ("step", "cosine")
LR_SCALING: tuple[str, ...] = ("linear", "sqrt", "none")


@dataclass(frozen=True)
class Recipe:
    """One training recipe. ``lr`` is the rate at ``batch`` images per step (all processes together)."""

    name: str
    optimizer: str = "sgd"
    lr: float = 1e-3
    batch: int = 32
    lr_scaling: str = "linear"  # how lr follows a different global batch: linear, sqrt or none
    momentum: float = 0.9  # SGD momentum; Adam's beta1
    weight_decay: float = 5e-4
    bias_lr_factor: float = 2.0  # Caffe SSD: biases at 2x lr, never decayed; norm parameters never decayed
    schedule: str = "step"
    milestones: tuple[float, ...] = (2 / 3, 5 / 6)  # step schedule: x0.1 at these fractions of the run
    warmup_fraction: float = 0.05  # linear warm-up over this fraction of the run ...
    warmup_max_iters: int = 500  # ... at most this many iterations
    epochs: float = 100.0  # default length when neither --iters, --epochs nor --time-limit is given
    img_size: int | None = None  # None: the architecture's default input size
    zoom_out: float | None = None  # SSD zoom-out limit (None: the paper's 4; 1: off); None for other families
    ema: bool = False  # validate, keep and export an exponential moving average of the weights
    ema_decay: float = 0.9998
    channels_last: bool = False
    cpu_bf16: bool = False  # on CPU, bf16 autocast where the CPU has AMX-BF16 matrix units (see ssdcli.device)
    freeze_backbone: float = 0.0  # fraction of the run (from its start) in which the backbone is not updated
    fit_priors: bool = False  # SSD: re-fit prior sizes and aspect ratios to the training boxes (same layout)
    box_loss: str = "smooth_l1"  # SSD: smooth_l1 (the paper) or smooth L1 plus an IoU term: giou, diou, ciou
    iou: float | None = None  # NMS IoU threshold stored in the trained model (None: the start weights' or 0.45)
    warning: str = ""  # printed when a run uses this recipe (e.g. a VGG without BatchNorm from random weights)
    sources: dict[str, str] = field(default_factory=dict)  # field name -> where the value comes from

    def __post_init__(self) -> None:
        # recipes are written by developers: a wrong value is a programming error, not a user error
        assert self.optimizer in OPTIMIZERS, self.optimizer
        assert self.schedule in SCHEDULES, self.schedule
        assert self.lr_scaling in LR_SCALING, self.lr_scaling
        assert self.box_loss in BOX_LOSSES, self.box_loss
        assert self.iou is None or 0 < self.iou <= 1, self.iou
        assert self.lr > 0 and self.batch > 0 and self.epochs > 0 and 0 <= self.warmup_fraction < 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d
