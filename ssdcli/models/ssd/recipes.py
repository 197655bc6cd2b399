"""The SSD family's training recipes (see :mod:`ssdcli.models.recipe`), one per way a run starts.

Figures quoted as "measured" come from the README's raccoon section (2-core CPU, 15 minutes, test mAP@0.5 VOC07).
"""

from __future__ import annotations

from ssdcli.models.recipe import Recipe

# SSD paper (Liu et al. 2016), VOC07+12: 120k iterations at batch 32 on 16,551 images = 232 epochs, lr 1e-3 (x0.1 at
# 80k and 100k), SGD 0.9, wd 5e-4, Caffe parameter groups, zoom-out ("expansion") up to 4x. ImageNet VGG16 backbone.
_PAPER = "SSD paper (VOC07+12: 120k it x 32 = 232 epochs, 80k/100k steps)"
# Step speed on a 2-core Intel Xeon with AMX (benchmarks/bench_train_step.py, s/step, float32 -> channels-last ->
# bf16 + channels-last): a faster step is more steps in a time budget. Values the recipes below share.
_VGG_STEP = "measured: ssd300-bn batch 8, 8.47 s/step float32, 6.41 channels-last, 1.90 bf16 + channels-last"
_VGG_SPEED = {"channels_last": True, "cpu_bf16": True}
_VGG_SPEED_SOURCES = {"channels_last": _VGG_STEP, "cpu_bf16": _VGG_STEP}
# NMS IoU threshold of models trained from scratch: their boxes are loose, and keeping overlapping candidates
# (0.65 instead of the paper's 0.45) lets a tighter second box score at the strict COCO IoUs (YOLO validates at 0.7,
# torchvision's SSDLite uses 0.55). Chosen on the raccoon *val* split: five 15-CPU-minute checkpoints (ssdlite320 x3,
# ssd300-bn x2), summed val COCO AP at 0.45/0.55/0.6/0.65/0.7 = 1.84/1.94/1.98/2.02/2.02; on test the same trend
# (ssdlite320 seeds 0/1: COCO AP 0.235 -> 0.255, 0.261 -> 0.278; mAP@0.5 0.586 -> 0.621, 0.567 -> 0.606).
_SCRATCH_NMS = ("measured: raccoon val COCO AP of five 15 CPU-min checkpoints, NMS IoU 0.45 -> 0.65: 1.84 -> 2.02 "
                "summed (benchmarks/train_raccoon.py + `ssd eval --iou`)")
VGG_PAPER = Recipe(
    name="ssd-paper", optimizer="sgd", lr=1e-3, batch=32, lr_scaling="linear", momentum=0.9, weight_decay=5e-4,
    schedule="step", milestones=(2 / 3, 5 / 6), warmup_fraction=0.05, warmup_max_iters=500, epochs=232.0,
    zoom_out=4.0, **_VGG_SPEED,
    sources={"optimizer": _PAPER, "lr": _PAPER, "weight_decay": _PAPER, "schedule": _PAPER, "epochs": _PAPER,
             "zoom_out": _PAPER, "warmup_fraction": "classic PyTorch ports (short linear warm-up)"}
    | _VGG_SPEED_SOURCES,
)

# From scratch the paper's SGD 1e-3 barely moves a randomly initialised VGG in a CPU budget. Measured on raccoon
# (ssd300-bn, 15 CPU minutes, 147 x 8): AdamW 1e-3, wd 0.05, cosine, paper zoom-out: 0.361. Without BatchNorm
# (ssd300/ssd512) from-scratch training is unreliable at any lr: `ssd train` warns. With bf16 (4x the steps) the
# paper's zoom-out (4) held best.pth at test mAP@0.5 0.31-0.33 and its boxes filled the picture; zoom-out off (as
# SSDLite) + EMA 0.34-0.42, plus the SSDLite box options (GIoU, re-fitted priors) 0.41 with COCO AP 0.10 -> 0.16.
_SCRATCH_VGG = "measured: ssd300-bn on raccoon, 15 CPU-min, mAP@0.5 0.361 (benchmarks/train_raccoon.py)"
_SCRATCH_VGG_BOXES = ("measured: ssd300-bn on raccoon, 15 CPU-min bf16, seed 0, zoom-out off + EMA: test mAP@0.5 / COCO "
                      "AP 0.337 / 0.102 -> 0.408 / 0.164, val COCO AP 0.243 -> 0.408, with --box-loss giou "
                      "--fit-priors (benchmarks/train_raccoon.py)")
_SCRATCH_VGG_AUG = ("measured: ssd300-bn on raccoon, 15 CPU-min bf16, seed 0: best.pth test mAP@0.5 0.313 (zoom-out 4) "
                    "-> 0.417 (zoom-out off + EMA) (benchmarks/train_raccoon.py ... -- --zoom-out 1 --ema)")
VGG_SCRATCH = Recipe(
    name="ssd-vgg-scratch", optimizer="adamw", lr=1e-3, batch=8, lr_scaling="sqrt", weight_decay=0.05,
    bias_lr_factor=2.0, schedule="cosine", warmup_fraction=0.1, warmup_max_iters=500, epochs=300.0, zoom_out=1.0,
    ema=True, iou=0.65, fit_priors=True, box_loss="giou", **_VGG_SPEED,
    warning="from random weights: expect about 0.4-0.5 mAP@0.5 (COCO AP 0.16-0.18, loose boxes) after 15 CPU-minutes "
            "on a small dataset (raccoon); --backbone-weights FILE (torchvision vgg16_bn ImageNet) selects the "
            "paper's recipe",
    sources={"optimizer": _SCRATCH_VGG, "lr": _SCRATCH_VGG, "weight_decay": _SCRATCH_VGG, "schedule": _SCRATCH_VGG,
             "batch": _SCRATCH_VGG, "epochs": "from-scratch detectors need long schedules (DSOD/ScratchDet: ~2x "
             "the pretrained one); not measured here", "zoom_out": _SCRATCH_VGG_AUG, "ema": _SCRATCH_VGG_AUG,
             "iou": _SCRATCH_NMS, "fit_priors": _SCRATCH_VGG_BOXES, "box_loss": _SCRATCH_VGG_BOXES}
    | _VGG_SPEED_SOURCES,
)

VGG_SCRATCH_NO_BN = Recipe(
    **{**VGG_SCRATCH.to_dict(), "milestones": VGG_SCRATCH.milestones, "name": "ssd-vgg-scratch-nobn",
       "warning": "a VGG without BatchNorm from random weights rarely trains: give --backbone-weights FILE (a "
                  "torchvision vgg16 ImageNet state dict) or --pretrained-backbone for the paper's recipe (77.2 mAP "
                  "on VOC07 with 120k iterations), or train the -bn variant (from scratch on raccoon, 15 CPU-min: "
                  "0.41-0.49 mAP@0.5)"},
)

# Fine-tuning a whole detector: the paper's optimiser at a quarter of its lr, a short cosine schedule.
VGG_FINETUNE = Recipe(
    name="ssd-finetune", optimizer="sgd", lr=2.5e-4, batch=32, weight_decay=5e-4, schedule="cosine",
    warmup_fraction=0.05, epochs=30.0, zoom_out=4.0, **_VGG_SPEED,
    sources={"lr": "paper lr / 4 (common fine-tuning practice; not measured here)", "epochs": "not measured here"}
    | _VGG_SPEED_SOURCES,
)

# SSDLite: torchvision's reference (references/detection, ssdlite320_mobilenet_v3_large): SGD 0.9, lr 0.15 at batch
# 192 (= 0.0125 at 16), wd 4e-5, cosine, 600 epochs, its "ssdlite" augmentation (crop + flip: no zoom-out).
# Measured on raccoon from scratch (15 CPU-min, 726 x 16): 0.539 with the Caffe groups and zoom-out off, vs AdamW 2e-3
# 0.406 and torchvision's own SSDLite with its recipe 0.476.
_TV = "torchvision reference ssdlite320 (lr 0.15 @ 192, wd 4e-5, cosine, 600 epochs, no zoom-out)"
_SSDLITE_MEASURED = "measured: raccoon 15 CPU-min, mAP@0.5 0.539 vs AdamW 0.406 (benchmarks/train_raccoon.py)"
_SSDLITE_STEP = ("measured (benchmarks/bench_train_step.py, batch 16, 2-core Xeon with AMX): 1.82 s/step float32, "
                 "1.18 channels-last; bf16 adds nothing to channels-last (1.30: depthwise convolutions)")
_SSDLITE_SPEED = {"channels_last": True, "cpu_bf16": False}
_SSDLITE_BOXES = ("measured: raccoon 15 CPU-min, seed 0 (benchmarks/train_raccoon.py): test COCO AP 0.214 -> 0.235, "
                  "AP75 0.085 -> 0.162, mAP@0.5 0.625 -> 0.586 with --box-loss giou --fit-priors (val COCO AP 0.337 -> "
                  "0.477)")
_SSDLITE_SPEED_SOURCES = {"channels_last": _SSDLITE_STEP, "cpu_bf16": _SSDLITE_STEP}
SSDLITE = Recipe(
    name="ssdlite-torchvision", optimizer="sgd", lr=0.0125, batch=16, lr_scaling="linear", momentum=0.9,
    weight_decay=4e-5, bias_lr_factor=2.0, schedule="cosine", warmup_fraction=0.07, warmup_max_iters=1000,
    epochs=600.0, zoom_out=1.0, ema=True, fit_priors=True, box_loss="giou", iou=0.65, **_SSDLITE_SPEED,
    sources=_SSDLITE_SPEED_SOURCES | {"fit_priors": _SSDLITE_BOXES, "box_loss": _SSDLITE_BOXES, "iou": _SCRATCH_NMS,
             "ema": "measured: raccoon 15 CPU-min, seed 0: with EMA test mAP@0.5 0.536 / COCO AP 0.183, without "
                    "0.504 / 0.156 (benchmarks/train_raccoon.py ... -- --ema)",
             "optimizer": _SSDLITE_MEASURED, "lr": _TV, "weight_decay": _TV, "schedule": _TV, "epochs": _TV,
             "zoom_out": _TV + "; " + _SSDLITE_MEASURED, "batch": "CPU: more, smaller steps (measured)",
             "bias_lr_factor": _SSDLITE_MEASURED},
)
SSDLITE_FINETUNE = Recipe(
    name="ssdlite-finetune", optimizer="sgd", lr=0.003, batch=16, weight_decay=4e-5, schedule="cosine",
    warmup_fraction=0.05, epochs=60.0, zoom_out=1.0, **_SSDLITE_SPEED,
    sources={"lr": "torchvision lr / 4 (not measured here)", "epochs": "not measured here"} | _SSDLITE_SPEED_SOURCES,
)

# ssd-mini (the CPU demo model): the quickstart's measured recipe. 2200 iterations of batch 16 on the 300 sample
# training images (18 steps an epoch) = 122.222 epochs: test mAP@0.5 0.914 in 197 s on 2 cores (README table).
_MINI = "measured: quickstart sample data, 2200 x 16 in 197 s, test mAP@0.5 0.914"
MINI = Recipe(
    name="ssd-mini-quickstart", optimizer="adamw", lr=3e-3, batch=16, lr_scaling="sqrt", weight_decay=0.05,
    bias_lr_factor=2.0, schedule="cosine", warmup_fraction=0.01, epochs=122.222, zoom_out=1.0, channels_last=True,
    fit_priors=True,
    sources={k: _MINI for k in ("optimizer", "lr", "batch", "weight_decay", "schedule", "epochs", "zoom_out",
                                 "channels_last", "warmup_fraction")}
    | {"fit_priors": "measured: quickstart sample data, `ssd train --arch ssd-mini` with vs without --fit-priors, one "
                     "seed: test COCO AP 0.673 -> 0.723, mAP@0.5 0.904 -> 0.934"},
)
MINI_FINETUNE = Recipe(
    name="ssd-mini-finetune", optimizer="adamw", lr=1e-3, batch=16, lr_scaling="sqrt", weight_decay=0.05,
    schedule="cosine", epochs=40.0, zoom_out=1.0, channels_last=True, sources={"lr": "not measured here"},
)

VGG_RECIPES = {"scratch": VGG_SCRATCH_NO_BN, "backbone": VGG_PAPER, "finetune": VGG_FINETUNE}
VGG_BN_RECIPES = {"scratch": VGG_SCRATCH, "backbone": VGG_PAPER, "finetune": VGG_FINETUNE}
SSDLITE_RECIPES = {"scratch": SSDLITE, "backbone": SSDLITE, "finetune": SSDLITE_FINETUNE}
MINI_RECIPES = {"scratch": MINI, "backbone": MINI, "finetune": MINI_FINETUNE}
