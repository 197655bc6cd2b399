"""``ssd convert``: foreign SSD state dict file -> native ssdcli checkpoint."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ssdcli.checkpoint import save_checkpoint
from ssdcli.convert.amdegroot import convert_amdegroot
from ssdcli.convert.common import read_state_dict
from ssdcli.convert.detect_format import FORMATS, UNKNOWN, describe_layout, detect_format
from ssdcli.convert.torchvision_ssd import convert_torchvision_ssd
from ssdcli.convert.torchvision_ssdlite import convert_torchvision_ssdlite, is_torchvision_ssdlite
from ssdcli.errors import SsdError
from ssdcli.models.base import DetectorModel


def _convert_torchvision(state: dict, classes: str | None, source: str) -> tuple[DetectorModel, list[str]]:
    """torchvision ``ssdlite320_mobilenet_v3_large`` or ``ssd300_vgg16``, told apart by their keys."""
    if is_torchvision_ssdlite(state):
        return convert_torchvision_ssdlite(state, classes, source)
    return convert_torchvision_ssd(state, classes, source)


_CONVERTERS = {"amdegroot": convert_amdegroot, "torchvision": _convert_torchvision}


@dataclass
class ConversionResult:
    model: DetectorModel  # eval mode, on CPU
    source_format: str  # "amdegroot" or "torchvision"
    detected: str | None = None  # what --from auto recognised (None when the format was given)
    notes: list[str] = field(default_factory=list)  # human-readable lines: classes, preprocessing, priors


def convert_state_dict(
    state: dict, source_format: str = "auto", classes: str | None = None, source: str = "<state>"
) -> ConversionResult:
    """Convert an in-memory foreign state dict. ``source_format``: ``amdegroot``, ``torchvision`` or ``auto``;
    ``classes``: ``voc``, ``coco``, a names file, or None (built-in list that fits the class count)."""
    detected = None
    if source_format == "auto":
        source_format, detected = detect_format(state, source)
    elif source_format not in _CONVERTERS:
        raise SsdError(f"--from {source_format}: unknown format (choose {', '.join(FORMATS)} or auto)")
    else:  # refuse files recognised as something else; damaged ones get the converter's missing/unexpected keys
        fmt, what = describe_layout(state)
        if fmt != source_format and what != UNKNOWN:
            raise SsdError(f"{source}: --from {source_format} given, but the file looks like {what}")
    model, notes = _CONVERTERS[source_format](state, classes, source)
    return ConversionResult(model=model, source_format=source_format, detected=detected, notes=notes)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_file(
    src: str | os.PathLike,
    out: str | os.PathLike,
    source_format: str = "auto",
    classes: str | None = None,
    force: bool = False,
) -> ConversionResult:
    """Read ``src`` safely (``weights_only=True``), convert, and write a native checkpoint to ``out`` (atomic).

    The checkpoint's ``meta["converted_from"]`` records the format, file path and SHA-256 of the source.
    """
    src_p, out_p = Path(src), Path(out)
    if out_p.exists() and not force:
        raise SsdError(f"{out_p}: output exists (use --force to overwrite)")
    if out_p.exists() and src_p.exists() and out_p.resolve() == src_p.resolve():
        raise SsdError(f"{out_p}: the output would overwrite the source file")
    if out_p.is_dir():
        raise SsdError(f"{out_p}: is a folder; give a file name like model.pth")
    if not out_p.parent.exists():
        raise SsdError(f"{out_p}: folder {out_p.parent} does not exist")
    state = read_state_dict(src_p)
    result = convert_state_dict(state, source_format, classes, str(src_p))
    meta = {
        "converted_from": {
            "format": result.source_format,
            "file": str(src_p.resolve()),
            "sha256": _sha256(src_p),
            "tensors": len(state),
        },
        "notes": list(result.notes),
    }
    save_checkpoint(out_p, result.model, meta=meta)
    return result
