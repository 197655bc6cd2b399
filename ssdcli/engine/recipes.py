"""Resolve a training run's settings: the family's recipe, overridden by the user's flags, scaled to the batch.

The result says where every value comes from (the recipe and its source, a flag, or a scaling rule), so ``ssd
train`` can print one table before training and store it in ``options.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ssdcli.convert.pretrained import pretrained_arch
from ssdcli.device import cpu_bf16_matrix_units
from ssdcli.models.recipe import Recipe
from ssdcli.models.registry import recipe_for

# TrainOptions field -> Recipe field, for every setting a recipe provides a default for
RECIPE_FIELDS: dict[str, str] = {
    "optimizer": "optimizer",
    "batch": "batch",
    "lr": "lr",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
    "bias_lr_factor": "bias_lr_factor",
    "schedule": "schedule",
    "img_size": "img_size",
    "zoom_out": "zoom_out",
    "ema": "ema",
    "ema_decay": "ema_decay",
    "channels_last": "channels_last",
    "freeze_backbone": "freeze_backbone",
    "fit_priors": "fit_priors",
    "box_loss": "box_loss",
    "iou": "iou",
}


def start_kind(weights: str | None, backbone_weights: str | None, pretrained_backbone: bool) -> str:
    """How a run starts, which selects the family's recipe: finetune, backbone or scratch."""
    if weights:
        return "finetune"
    if backbone_weights or pretrained_backbone:
        return "backbone"
    return "scratch"


@dataclass
class ResolvedRecipe:
    """Final values for the recipe-controlled options, with the origin of each (for the printed table)."""

    recipe: Recipe
    start: str
    values: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, str]]:
        """``(setting, value, origin)`` rows in a stable order."""
        return [(k, _fmt(self.values[k]), self.origins.get(k, "")) for k in self.values]

    def to_dict(self) -> dict:
        return {"recipe": self.recipe.name, "start": self.start, "values": dict(self.values),
                "origins": dict(self.origins)}  # fmt: skip


def scaled_lr(recipe: Recipe, global_batch: int) -> float:
    """The recipe's lr moved from its reference batch to ``global_batch`` by its scaling rule."""
    ratio = global_batch / recipe.batch
    factor = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[recipe.lr_scaling]
    return recipe.lr * factor


def default_amp(recipe: Recipe, device_type: str) -> tuple[bool, str]:
    """Mixed precision when ``--amp``/``--no-amp`` is not given, and why: float16 autocast on CUDA; on a CPU, bf16
    autocast where the recipe asks for it (``cpu_bf16``: measured faster for its model) and the CPU has AMX-BF16."""
    if device_type == "cuda":
        return True, "default on CUDA (float16 autocast)"
    why = f"recipe {recipe.name}"
    if not recipe.cpu_bf16:
        return False, why + (f": {recipe.sources['cpu_bf16']}" if "cpu_bf16" in recipe.sources else "")
    if cpu_bf16_matrix_units():
        return True, why + f": bf16 autocast on CPUs with AMX ({recipe.sources.get('cpu_bf16', 'faster')})"
    return False, why + ": bf16 only on CPUs with AMX-BF16, which this one lacks"


def resolve_recipe(
    recipe: Recipe, start: str, given: dict[str, Any], world: int = 1, device_type: str = "cpu"
) -> ResolvedRecipe:
    """Fill every recipe-controlled option the user left as ``None`` from ``recipe``.

    ``given`` maps TrainOptions field names (see :data:`RECIPE_FIELDS`, and ``amp``) to the user's values (None = not
    given). The lr, when not given, follows the global batch (``batch x world``) by the recipe's scaling rule; amp
    follows the device (:func:`default_amp`).
    """
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    src = recipe.sources
    for opt, rf in RECIPE_FIELDS.items():
        user = given.get(opt)
        if user is not None:
            values[opt], origins[opt] = user, _flag(opt, user)
        else:
            values[opt] = getattr(recipe, rf)
            origins[opt] = f"recipe {recipe.name}" + (f": {src[rf]}" if rf in src else "")
            if opt == "iou" and values[opt] is None:
                origins[opt] += " (none: the start weights' NMS IoU, else the SSD paper's 0.45)"
    if given.get("amp") is not None:
        values["amp"], origins["amp"] = given["amp"], _flag("amp", given["amp"])
    else:
        values["amp"], origins["amp"] = default_amp(recipe, device_type)
    if given.get("lr") is None:
        global_batch = int(values["batch"]) * world
        lr = scaled_lr(recipe, global_batch)
        values["lr"] = lr
        if global_batch != recipe.batch and recipe.lr_scaling != "none":
            origins["lr"] = (f"recipe {recipe.name}: {recipe.lr:g} at batch {recipe.batch}, scaled "
                             f"{recipe.lr_scaling}ly to global batch {global_batch}")  # fmt: skip
    return ResolvedRecipe(recipe, start, values, origins)


def trained_arch(options: Any) -> str:
    """The architecture a TrainOptions trains: ``--arch``, unless ``-w coco-<arch>`` names another."""
    return pretrained_arch(options.weights) or options.arch


def resolve_for(options: Any, world: int = 1, device_type: str = "cpu") -> ResolvedRecipe:
    """The recipe ``options`` (a TrainOptions) select by architecture and start, resolved against its flags for a
    run on ``device_type`` (``cpu`` or ``cuda``)."""
    start = start_kind(options.weights, options.backbone_weights, options.pretrained_backbone)
    recipe = recipe_for(trained_arch(options), start)
    given = {k: getattr(options, k) for k in (*RECIPE_FIELDS, "amp")}
    return resolve_recipe(recipe, start, given, world, device_type)


def recipe_text(recipe: dict) -> str:
    """A resolved recipe as stored in ``TrainOptions.recipe``, as an aligned text table, one setting a line."""
    lines = [f"recipe {recipe['recipe']['name']} (start: {recipe['start']}); setting, value, from:"]
    width = max(len(k) for k in recipe["values"])
    for k, v in recipe["values"].items():
        lines.append(f"  {k:<{width}}  {_fmt(v):<10}  {recipe['origins'].get(k, '')}")
    return "\n".join(lines)


def warmup_iters(recipe: Recipe, total_iters: int) -> int:
    """The recipe's warm-up length for a run of ``total_iters`` iterations."""
    return min(recipe.warmup_max_iters, int(round(recipe.warmup_fraction * total_iters)))


@dataclass(frozen=True)
class LengthPlan:
    """How long a run is: ``total`` iterations (provisional while ``fit_to_time``), and why."""

    total: int
    source: str
    fit_to_time: bool = False


def plan_length(
    iters: int | None, epochs: float | None, time_limit: float | None, recipe: Recipe, iters_per_epoch: int
) -> LengthPlan:
    """``--iters`` or ``--epochs`` when given; else, under ``--time-limit`` alone, a length fitted to the time
    (provisionally the recipe's); else the recipe's default number of epochs."""
    if iters is not None:
        return LengthPlan(int(iters), "--iters")
    if epochs is not None:
        return LengthPlan(max(1, math.ceil(epochs * iters_per_epoch)), f"--epochs {epochs:g}")
    default = max(1, math.ceil(recipe.epochs * iters_per_epoch))
    if time_limit is not None:
        return LengthPlan(default, "fitted to --time-limit", fit_to_time=True)
    return LengthPlan(default, f"recipe {recipe.name}: {recipe.epochs:g} epochs")


def _flag(option: str, value: Any) -> str:
    """The ``ssd train`` flag that gave ``value`` to ``option``: ``--weight-decay``, ``--no-amp``."""
    return "--" + ("no-" if value is False else "") + option.replace("_", "-")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, bool):
        return "on" if v else "off"
    return "-" if v is None else str(v)
