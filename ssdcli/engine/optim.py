"""Optimizer with the original Caffe SSD parameter groups.

* conv/linear weights: lr, weight decay
* biases: 2 x lr, no weight decay
* normalisation parameters (BatchNorm, a family's :class:`~ssdcli.models.base.NormalizationLayer` such as
  SSD's L2Norm scale): lr, no weight decay
"""

from __future__ import annotations

import torch
from torch import nn

from ssdcli.models.base import NormalizationLayer

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, NormalizationLayer)


def parameter_groups(model: nn.Module, weight_decay: float, bias_lr_factor: float = 2.0) -> list[dict]:
    decay, no_decay_bias, no_decay_norm = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, _NORM_TYPES):
                no_decay_norm.append(p)
            elif name == "bias":
                no_decay_bias.append(p)
            else:
                decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr_factor": 1.0},
        {"params": no_decay_bias, "weight_decay": 0.0, "lr_factor": bias_lr_factor},
        {"params": no_decay_norm, "weight_decay": 0.0, "lr_factor": 1.0},
    ]
    return [g for g in groups if g["params"]]


OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw", "adam")


def build_optimizer(
    model: nn.Module,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    kind: str = "sgd",
    bias_lr_factor: float = 2.0,
) -> torch.optim.Optimizer:
    """SGD (``momentum``), AdamW (decoupled decay) or Adam (L2 decay, beta1 = ``momentum``) over the groups above."""
    groups = parameter_groups(model, weight_decay, bias_lr_factor)
    for g in groups:
        g["lr"] = lr * g["lr_factor"]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"unknown optimizer {kind!r} (expected one of {', '.join(OPTIMIZERS)})")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_factor", 1.0)
