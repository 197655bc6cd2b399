"""Reading foreign weight files and copying renamed tensors into a model, with one-line errors.

Every foreign file goes through :func:`ssdcli.checkpoint.read_weights_file` (``torch.load(weights_only=True)``):
a file that needs arbitrary unpickling is refused, so no code from a downloaded checkpoint ever runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ssdcli.checkpoint import CHECKPOINT_FORMAT, read_weights_file
from ssdcli.errors import SsdError

StateDict = dict[str, torch.Tensor]
NESTING_KEYS = ("state_dict", "model", "model_state_dict", "net", "weights")


def _examples(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def unwrap_state_dict(obj: object, source: str) -> StateDict:
    """The tensor dict inside a loaded file: plain, nested under ``state_dict``/``model``/..., with or without a
    ``module.`` prefix (DataParallel). Raises :class:`SsdError` for anything else."""
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        raise SsdError(f"{source}: already an ssdcli checkpoint; nothing to convert")
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        tensors = [k for k, v in obj.items() if isinstance(v, torch.Tensor)]
        if tensors and len(tensors) >= len(obj) - 2:  # a state dict, maybe with a stray non-tensor entry
            break
        inner = next((obj[k] for k in NESTING_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise SsdError(f"{source}: not a state dict (expected a dict of tensors, got {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor) or not isinstance(k, str)]
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise SsdError(f"{source}: not a state dict (no tensors; keys: {_examples(bad)})")
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Load a foreign weights file safely and return its (unwrapped) state dict."""
    return unwrap_state_dict(read_weights_file(path), str(path))


def transfer(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    rename: Callable[[str], str | None],
    source: str,
    layout: str,
    ignore: Callable[[str], bool] = lambda k: False,
    extra: Mapping[str, torch.Tensor] | None = None,
    allow_missing: Callable[[str], bool] | None = None,
    source_name: Callable[[str], str] | None = None,
) -> list[str]:
    """Copy ``state`` into ``model`` under renamed keys; everything must fit.

    ``rename(src_key) -> model key`` (None: the key has no place in the layout); ``ignore(src_key)``: keys
    dropped on purpose (e.g. an ImageNet classifier); ``extra``: tensors computed by the caller, already under
    model keys. ``allow_missing(model_key)``: model keys that may keep their initialisation (otherwise every
    model key must be supplied); ``source_name(model_key)``: how a missing key is called in the source layout
    (for the error message). Raises :class:`SsdError` naming unexpected/missing keys and shape mismatches.
    Returns the model keys that were loaded.
    """
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    wrong: list[str] = []
    for key, value in state.items():
        if ignore(key):
            continue
        target = rename(key)
        if target is None or target not in own:
            unexpected.append(key)
        elif own[target].shape != value.shape:
            wrong.append(f"{key} {tuple(value.shape)} vs {tuple(own[target].shape)} expected")
        else:
            mapped[target] = value
    for key, value in (extra or {}).items():
        if key not in own:
            unexpected.append(key)
            continue
        if own[key].shape != value.shape:
            wrong.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)} expected")
        mapped[key] = value
    may_miss = allow_missing or (lambda k: False)
    missing = [k for k in own if k not in mapped and not may_miss(k)]
    if source_name is not None:
        missing = [source_name(k) for k in missing]
    if unexpected or missing or wrong:
        parts = []
        if unexpected:
            parts.append(f"unexpected keys {_examples(unexpected)}")
        if missing:
            parts.append(f"missing {len(missing)} tensors, e.g. {_examples(missing)}")
        if wrong:
            parts.append(f"shape mismatch {_examples(wrong, 2)}")
        raise SsdError(f"{source}: does not match the {layout} layout: {'; '.join(parts)}")
    with torch.no_grad():
        for key, value in mapped.items():
            own[key].copy_(value.to(own[key].dtype))
    return list(mapped)


RenameRules = list  # [(compiled pattern, match -> new key)], tried in order


def apply_rename_rules(rules: RenameRules, key: str) -> str | None:
    """The new name of ``key`` from the first rule whose pattern matches it whole (None when none does)."""
    for pattern, fn in rules:
        m = pattern.fullmatch(key)
        if m:
            return fn(m)
    return None
