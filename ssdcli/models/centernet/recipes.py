"""CenterNet's training recipes (see :mod:`ssdcli.models.recipe`)."""

from __future__ import annotations

from dataclasses import replace

from ssdcli.models.recipe import Recipe

# "Objects as Points" (Zhou et al. 2019): Adam, lr 5e-4 at batch 128 (1.25e-4 at 32; ResNet-18: 5e-4 at 114),
# 140 epochs, x0.1 at 90 and 120, no weight decay, ImageNet backbone.
_PAPER = "CenterNet paper (Adam 1.25e-4 @ 32, 140 epochs, x0.1 at 90 and 120)"
# Step speed on a 2-core Intel Xeon with AMX (benchmarks/bench_train_step.py): a faster step is more steps in a
# time budget.
_STEP = "measured: centernet-res18 batch 16 at 256 px, 1.68 s/step float32, 1.35 channels-last, 0.48 bf16 + channels-last"
_SPEED = {"channels_last": True, "cpu_bf16": True}
_SPEED_SOURCES = {"channels_last": _STEP, "cpu_bf16": _STEP}
PAPER = Recipe(
    name="centernet-paper", optimizer="adam", lr=1.25e-4, batch=32, lr_scaling="linear", momentum=0.9,
    weight_decay=0.0, bias_lr_factor=1.0, schedule="step", milestones=(90 / 140, 120 / 140), warmup_fraction=0.0,
    epochs=140.0, **_SPEED,
    sources={k: _PAPER for k in ("optimizer", "lr", "batch", "weight_decay", "schedule", "milestones", "epochs")}
    | _SPEED_SOURCES,
)

# From scratch on a CPU budget the paper's lr is far too low. Measured on raccoon (centernet-res18, 15 CPU-min,
# 601 x 16): AdamW 2e-3, wd 0.05, cosine, 256 px: mAP@0.5 0.580 (at 384 px a CPU step is ~2.2x slower).
_MEASURED = "measured: raccoon 15 CPU-min at 256 px, mAP@0.5 0.580 (benchmarks/train_raccoon.py)"
SCRATCH = Recipe(
    name="centernet-scratch", optimizer="adamw", lr=2e-3, batch=16, lr_scaling="sqrt", weight_decay=0.05,
    bias_lr_factor=2.0, schedule="cosine", warmup_fraction=0.08, warmup_max_iters=1000, epochs=140.0, img_size=256,
    **_SPEED,
    sources={k: _MEASURED for k in ("optimizer", "lr", "batch", "weight_decay", "schedule", "img_size")}
    | {"epochs": _PAPER} | _SPEED_SOURCES,
)
FINETUNE = Recipe(
    name="centernet-finetune", optimizer="adam", lr=5e-5, batch=32, weight_decay=0.0, bias_lr_factor=1.0,
    schedule="cosine", warmup_fraction=0.05, epochs=40.0, **_SPEED,
    sources={"lr": "paper lr / 2.5 (not measured here)"} | _SPEED_SOURCES,
)

RECIPES = {"scratch": SCRATCH, "backbone": PAPER, "finetune": FINETUNE}

# centernet-dla34: the paper's DLA-34 recipe at its 512 px input for an ImageNet backbone; from scratch the
# ResNet-18 CPU recipe above (not measured for DLA-34: same optimiser, lr and size, by analogy).
_DLA_PAPER = "CenterNet paper, DLA-34 (Adam 1.25e-4 @ 32, 140 epochs, x0.1 at 90 and 120, 512 px)"
DLA_PAPER = Recipe(
    name="centernet-dla34-paper", optimizer="adam", lr=1.25e-4, batch=32, lr_scaling="linear", momentum=0.9,
    weight_decay=0.0, bias_lr_factor=1.0, schedule="step", milestones=(90 / 140, 120 / 140), warmup_fraction=0.0,
    epochs=140.0, img_size=512,
    sources={k: _DLA_PAPER for k in ("optimizer", "lr", "batch", "weight_decay", "schedule", "milestones", "epochs",
                                     "img_size")},
)
_BY_ANALOGY = "by analogy with centernet-scratch (measured on centernet-res18, not on DLA-34)"
DLA_SCRATCH = Recipe(
    name="centernet-dla34-scratch", optimizer="adamw", lr=2e-3, batch=16, lr_scaling="sqrt", weight_decay=0.05,
    bias_lr_factor=2.0, schedule="cosine", warmup_fraction=0.08, warmup_max_iters=1000, epochs=140.0, img_size=256,
    sources={k: _BY_ANALOGY for k in ("optimizer", "lr", "batch", "weight_decay", "schedule", "img_size")}
    | {"epochs": _PAPER},
)
# channels-last and bf16 gain nothing here: the deformable convolutions (float32 in torchvision's CPU kernel)
# dominate the step (benchmarks/bench_train_step.py, centernet-dla34 batch 4: 11.06 s/step float32, 10.61 bf16 +
# channels-last), so the DLA recipes keep float32 and the default memory format.
DLA_FINETUNE = replace(FINETUNE, name="centernet-dla34-finetune", channels_last=False, cpu_bf16=False,
                       sources={"lr": FINETUNE.sources["lr"]})
DLA_RECIPES = {"scratch": DLA_SCRATCH, "backbone": DLA_PAPER, "finetune": DLA_FINETUNE}
