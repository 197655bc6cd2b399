"""`ssd train`: its flags are generated from :class:`ssdcli.engine.trainer.TrainOptions` (declared once there:
help, range, choices), then the trainer runs and this module prints where everything went."""

from __future__ import annotations

import inspect
import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_type_hints

import typer
from rich.markup import escape
from rich.table import Table

from ssdcli.cli.console import console
from ssdcli.cli.options import in_range, interval, run_name_callback
from ssdcli.cli.progress import reporting
from ssdcli.device import resolve_device
from ssdcli.engine.distributed import launch_torchrun
from ssdcli.engine.recipes import resolve_for, trained_arch
from ssdcli.engine.train_options import metric_label
from ssdcli.engine.trainer import TrainOptions, train
from ssdcli.errors import SsdError
from ssdcli.models.registry import available_models

_NEGATIVE = "no__"  # parameter-name prefix of the hidden --no-x flags
# besides the TrainOptions fields
_EXTRA_HELP = {
    "resume": "Resume a run: its last.pth, its folder, or 'auto' (the newest run named --name).",
    "devices": "GPU ids (e.g. 0,1): launch one process per GPU with torchrun.",
    "print_recipe": "Print the recipe --arch would train with (and where each value comes from), then exit.",
}


def parse_duration(text: str | None, option: str = "--time-limit") -> float | None:
    """``90``, ``90s``, ``15m``, ``1.5h`` -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not m:
        raise SsdError(f"{option} {text}: expected a duration like 900, 90s, 15m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _check_arch(value: str | None) -> str | None:
    if value is not None and value not in available_models():
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(available_models())}")
    return value


def _parameter(name: str, hint: Any, default: Any, meta: dict) -> inspect.Parameter:
    """One Typer option from a TrainOptions field's type and metadata."""
    flag = meta.get("flag", "--" + name.replace("_", "-"))
    decls = flag.split("/")
    kwargs: dict[str, Any] = {"help": meta["help"]}
    if hint in (bool, Optional[bool]) and len(decls) == 2:  # --x/--no-x: the negative is a hidden option of its own
        decls, kwargs["help"] = decls[:1], f"{kwargs['help']} ({decls[1]}: off.)"
    if "min" in meta or "max" in meta:  # the shared range check: one line naming the option and the range
        bounds = {"lo": meta.get("min"), "hi": meta.get("max")}
        kwargs["help"] += f" Range: {interval(**bounds)}."
        kwargs["callback"] = in_range(**bounds)
    if name == "name":
        kwargs["callback"] = run_name_callback
    choices = meta.get("choices")
    if meta.get("kind") == "duration":  # text like 15m: parse_duration checks it (a numeric range check cannot)
        hint = Optional[str]
        kwargs.pop("callback", None)
    elif choices is not None and callable(choices):
        kwargs["callback"] = _check_arch
        kwargs["help"] += f" One of: {', '.join(choices())}."
    elif choices is not None:
        hint = Optional[Literal[tuple(choices)]]  # type: ignore[misc]
    if name == "data":
        hint, default = Optional[str], None
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[hint, typer.Option(*decls, **kwargs)])  # fmt: skip


def _signature() -> inspect.Signature:
    hints = get_type_hints(TrainOptions)
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for f in fields(TrainOptions):
        if "help" in f.metadata:
            default = f.default if f.default is not MISSING else None
            params.append(_parameter(f.name, hints[f.name], default, dict(f.metadata)))
            negative = _negative_flag(f.metadata)
            if negative:  # shown in the help text of the positive flag, not as a column of its own (80 columns)
                params.append(inspect.Parameter(_NEGATIVE + f.name, inspect.Parameter.KEYWORD_ONLY, default=False,
                                                annotation=Annotated[bool, typer.Option(negative, hidden=True)]))  # fmt: skip
    for name, hint in (("resume", Optional[str]), ("devices", Optional[str])):
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[hint, typer.Option(help=_EXTRA_HELP[name])]))  # fmt: skip
    params.append(inspect.Parameter("print_recipe", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
        bool, typer.Option("--print-recipe", help=_EXTRA_HELP["print_recipe"])]))  # fmt: skip
    return inspect.Signature(params)


def command(ctx: typer.Context, **values: Any) -> None:
    """Train a detector; unset settings come from the architecture's recipe (printed before training)."""
    resume, devices, print_recipe = values.pop("resume"), values.pop("devices"), values.pop("print_recipe")
    for key in [k for k in values if k.startswith(_NEGATIVE)]:
        if values.pop(key):
            values[key[len(_NEGATIVE):]] = False
    given = {k for k in values if _given(ctx, k)}
    if devices:  # the same options, re-run by torchrun in one process per GPU
        raise typer.Exit(launch_torchrun(devices, ["train", *forwarded_args(values, given, resume)]))
    for k in ("time_limit", "save_every"):
        values[k] = parse_duration(values[k], "--" + k.replace("_", "-"))
    if values["data"]:
        values["data"] = str(Path(values["data"]).resolve())
    options = TrainOptions(**{k: ("" if k == "data" and v is None else v) for k, v in values.items()})
    if print_recipe:
        _print_recipe(options)
        return
    if not resume and not options.data:
        raise SsdError("--data PREPARED is required (or --resume RUN)")
    changes = {k: getattr(options, k) for k in given if k != "data"} if resume else None
    with reporting() as reporter:
        result = train(options, resume=resume, report=reporter, changes=changes)
    _print_result(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _negative_flag(meta: Any) -> str | None:
    parts = meta.get("flag", "").split("/")
    return parts[1] if len(parts) == 2 and parts[1].startswith("--no-") else None


def _given(ctx: typer.Context, name: str) -> bool:
    if ctx.get_parameter_source(_NEGATIVE + name) is not None and ctx.params.get(_NEGATIVE + name):
        return True
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _print_recipe(options: TrainOptions) -> None:
    options.validate()
    resolved = resolve_for(options, device_type=resolve_device(options.device).type)
    recipe = resolved.recipe
    table = Table(title=f"{trained_arch(options)}: recipe {recipe.name} (start: {resolved.start})", title_justify="left")
    for col in ("setting", "value", "from"):
        table.add_column(col, overflow="fold")
    for row in resolved.rows():
        table.add_row(*row)
    table.add_row("schedule milestones", ", ".join(f"{m:.3g}" for m in recipe.milestones), "recipe (step schedule)")
    table.add_row("warm-up", f"{recipe.warmup_fraction:g} of the run, at most {recipe.warmup_max_iters}", "recipe")
    table.add_row("length", f"{recipe.epochs:g} epochs", recipe.sources.get("epochs", "recipe"))
    console.print(table)
    if recipe.warning:
        console.print(f"[yellow]warning:[/] {escape(recipe.warning)}")


def _print_result(result) -> None:  # type: ignore[no-untyped-def]
    table = Table(title=f"training {result.stopped}", show_header=False)
    table.add_row("iterations", f"{result.iteration} / {result.total_iters}")
    table.add_row(f"best val {metric_label(result.val_metric)}", "-" if result.best_map is None else f"{result.best_map:.4f}")
    table.add_row("non-finite steps skipped", str(result.bad_steps))
    for f in ("last.pth", "best.pth", "metrics.jsonl", "metrics.csv", "tensorboard", "loss.png", "map.png",
              "options.json"):
        if (result.run_dir / f).exists():
            table.add_row(f, str(result.run_dir / f))
    console.print(table)


def forwarded_args(values: dict[str, Any], given: set[str], resume: str | None) -> list[str]:
    """The command-line arguments that reproduce the options the user gave (for the torchrun re-launch): built
    from the parsed values, so every spelling (``--opt=v``, short flags, negative flags) comes out the same."""
    args: list[str] = []
    for f in fields(TrainOptions):
        if f.name not in given or "help" not in f.metadata:
            continue
        value = values[f.name]
        decls = f.metadata.get("flag", "--" + f.name.replace("_", "-")).split("/")
        if isinstance(value, bool):
            negative = _negative_flag(f.metadata)
            if value or negative:
                args.append(decls[0] if value else negative)  # type: ignore[arg-type]
        elif value is not None:
            args += [decls[0], str(value)]
    return args + (["--resume", resume] if resume else [])


# Typer reads the options from the signature: TrainOptions' fields, generated once at import
command.__signature__ = _signature()  # type: ignore[attr-defined]
command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}  # type: ignore[attr-defined]
