"""Self-describing checkpoints, loaded with ``torch.load(weights_only=True)`` (opening one never runs code).

Layout (plain dict of tensors and primitives)::

    {"format": "ssdcli-checkpoint", "version": 1,
     "config": ModelConfig.to_dict(),      # arch, classes, input size, prior spec, preprocessing
     "model": state_dict,
     "train_state": {...} or absent,       # optimizer, scheduler, scaler, iteration, RNG states (training only)
     "meta": {...}}                        # free-form: source, metrics, creation options
"""

from __future__ import annotations

import io
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ssdcli.errors import SsdError, first_line
from ssdcli.io_utils import atomic_write
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.registry import architecture, build_from_config

CHECKPOINT_FORMAT = "ssdcli-checkpoint"
CHECKPOINT_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save since 1.6
_PICKLE_PROTO = b"\x80"  # legacy torch.save: a pickle protocol header
_MAX_CLASSES = 100_000  # sanity bounds of a stored config (a damaged file must not build a giant model)
_MAX_IMAGE_SIZE = 8192


@dataclass
class Checkpoint:
    config: ModelConfig
    model_state: dict[str, torch.Tensor]
    train_state: dict | None = None
    meta: dict = field(default_factory=dict)


def save_checkpoint(
    path: str | os.PathLike,
    model: DetectorModel,
    train_state: dict | None = None,
    meta: dict | None = None,
) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename): a crash never corrupts an existing file."""
    model = getattr(model, "module", model)  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    payload: dict = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    if train_state is not None:
        payload["train_state"] = train_state
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def read_weights_file(path: str | os.PathLike) -> object:
    """``torch.load(weights_only=True)`` with every failure turned into a one-line :class:`SsdError`."""
    path = Path(path)
    if not path.is_file():
        raise SsdError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise SsdError(f"{path}: empty file, not a checkpoint")
    with open(path, "rb") as f:
        head = f.read(8)
    if not (head.startswith(_ZIP_MAGIC) or head[:1] == _PICKLE_PROTO):
        raise SsdError(f"{path}: not a PyTorch checkpoint (the file does not start like one; a text, JSON or git-LFS file?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "Weights only load failed" in str(e):
            raise SsdError(
                f"{path}: refused: the file contains pickled Python objects beyond tensors and plain containers; "
                "loading it could run arbitrary code, so it is not opened (re-save it as a plain state_dict)"
            ) from None
        raise SsdError(f"{path}: not a PyTorch checkpoint ({first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - any other failure of a foreign file is "not readable", never a traceback
        raise SsdError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first_line(e)}") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a native checkpoint (on CPU). Raises :class:`SsdError` for anything else."""
    data = read_weights_file(path)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        hint = ""
        if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
            hint = " It looks like a plain state_dict from another project: convert it with `ssd convert`."
        raise SsdError(f"{path}: not an ssdcli checkpoint.{hint}")
    config = config_from_stored(data.get("config"), f"{path}: checkpoint")
    if not isinstance(data.get("model"), dict) or not all(isinstance(v, torch.Tensor) for v in data["model"].values()):
        raise SsdError(f"{path}: damaged checkpoint: 'model' is not a dict of tensors")
    return Checkpoint(config=config, model_state=data["model"], train_state=data.get("train_state"), meta=data.get("meta", {}))


def config_from_stored(d: object, source: str) -> ModelConfig:
    """A model config stored in a checkpoint or ONNX metadata -> :class:`ModelConfig`, checked (known
    architecture, sizes and classes in range, finite preprocessing). Damage: one SsdError starting with ``source``."""
    try:
        if not isinstance(d, dict):
            raise TypeError(f"config is a {type(d).__name__}, not an object")
        config = ModelConfig.from_dict(d)
        architecture(config.arch)
    except SsdError as e:
        raise SsdError(f"{source} config: {e}") from None
    except KeyError as e:
        raise SsdError(f"{source} config is damaged (missing {e})") from None
    except (TypeError, ValueError, AttributeError, OverflowError) as e:
        raise SsdError(f"{source} config is damaged ({first_line(e)})") from None
    pre = config.preprocess
    problems = [
        what for what, bad in (
            (f"num_classes {config.num_classes}", not 2 <= config.num_classes <= _MAX_CLASSES),
            (f"image_size {config.image_size}", not 16 <= config.image_size <= _MAX_IMAGE_SIZE),
            (f"{len(config.class_names)} class names for {config.num_classes - 1} classes",
             bool(config.class_names) and len(config.class_names) != config.num_classes - 1),
            ("preprocess mean/std", len(pre.mean) != 3 or len(pre.std) != 3 or not all(map(math.isfinite, pre.mean))
             or not all(math.isfinite(v) and v > 0 for v in pre.std)),
            (f"pixel_scale {pre.pixel_scale}", not (math.isfinite(pre.pixel_scale) and pre.pixel_scale > 0)),
            (f"nms_threshold {config.nms_threshold}", not 0.0 < config.nms_threshold <= 1.0),
        ) if bad
    ]  # fmt: skip
    if problems:
        raise SsdError(f"{source} config is damaged ({'; '.join(problems)})")
    return config


def model_from_checkpoint(ckpt: Checkpoint, path: str | os.PathLike = "<checkpoint>", arch: str | None = None) -> DetectorModel:
    """Build the checkpoint's architecture and load its weights (strict)."""
    if arch is not None and arch != ckpt.config.arch:
        raise SsdError(f"{path}: checkpoint is a '{ckpt.config.arch}' model, expected '{arch}'")
    model = build_from_config(ckpt.config)
    load_state_strict(model, ckpt.model_state, path)
    return model


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[0]})")
        raise SsdError(f"{path}: weights do not fit the model: {'; '.join(parts)}")
    model.load_state_dict(state)


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu", arch: str | None = None) -> DetectorModel:
    """Open a checkpoint and return the model on ``device`` in eval mode."""
    model = model_from_checkpoint(load_checkpoint(path), path, arch)
    return model.to(device).eval()
