"""``-w coco-ssd300`` / ``-w coco-ssdlite320``: torchvision's COCO detectors as native checkpoints.

The torchvision file is fetched through torchvision's weights API (the enum's ``url``, ``torch.hub``'s cache
``<torch.hub.get_dir()>/checkpoints/<file>`` and its hash check on download), converted once by
:mod:`ssdcli.convert.torchvision_ssd` / :mod:`ssdcli.convert.torchvision_ssdlite`, and the native checkpoint is
cached next to it as ``<file stem>.ssdcli.pth``. A local copy of the torchvision file given as ``-w PATH`` (its
original name) is converted the same way, into the same folder as the file. Offline, the error says which file
to fetch and where to put it.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ssdcli.convert.api import convert_file
from ssdcli.errors import SsdError


@dataclass(frozen=True)
class PretrainedDetector:
    name: str  # the -w spelling
    arch: str  # the native architecture it converts to
    weights_enum: str  # torchvision.models.detection.<enum>.COCO_V1

    def weights(self):  # type: ignore[no-untyped-def]
        import torchvision.models.detection as tvd  # the detection zoo: only imported when asked for

        return getattr(tvd, self.weights_enum).COCO_V1

    @property
    def url(self) -> str:
        return str(self.weights().url)

    @property
    def file_name(self) -> str:
        return os.path.basename(self.url)

    @property
    def coco_box_map(self) -> float:
        """torchvision's published COCO val2017 box AP (``meta["_metrics"]``)."""
        return float(self.weights().meta["_metrics"]["COCO-val2017"]["box_map"])


PRETRAINED: dict[str, PretrainedDetector] = {
    p.name: p
    for p in (
        PretrainedDetector("coco-ssd300", "ssd300", "SSD300_VGG16_Weights"),
        PretrainedDetector("coco-ssdlite320", "ssdlite320", "SSDLite320_MobileNet_V3_Large_Weights"),
    )
}
WEIGHTS_HELP = f"{' or '.join(PRETRAINED)}: torchvision's COCO model (downloaded once, converted, cached)"


def pretrained_arch(spec: str | None) -> str | None:
    """The architecture of a ``coco-*`` weights name (None for anything else)."""
    entry = PRETRAINED.get((spec or "").strip().lower())
    return entry.arch if entry else None


def cache_dir() -> Path:
    """Where torch.hub keeps downloaded checkpoints (``$TORCH_HOME/hub/checkpoints`` by default)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def native_path(torchvision_file: Path) -> Path:
    return torchvision_file.with_name(torchvision_file.stem + ".ssdcli.pth")


def _local_torchvision_file(spec: str) -> PretrainedDetector | None:
    name = os.path.basename(spec)
    return next((p for p in PRETRAINED.values() if p.file_name == name), None)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _download(entry: PretrainedDetector, target: Path, note: Callable[[str], None]) -> None:
    note(f"{entry.name}: downloading {entry.url} into {target.parent} (torch.hub cache)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.load_state_dict_from_url(
            entry.url, model_dir=str(target.parent), map_location="cpu", progress=False, check_hash=True,
            weights_only=True,
        )
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as e:  # offline, refused, hash mismatch
        reason = getattr(e, "reason", None) or _first_line(e)
        raise SsdError(
            f"-w {entry.name}: cannot download {entry.url} ({reason}); fetch that file elsewhere and put it in "
            f"{target.parent} as {entry.file_name} (or pass it: -w /path/to/{entry.file_name})"
        ) from None


def _convert_cached(src: Path, note: Callable[[str], None]) -> Path:
    out = native_path(src)
    if out.is_file() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    note(f"converting {src.name} -> {out} (native checkpoint, kept for later runs)")
    try:
        convert_file(src, out, "torchvision", force=True)
    except PermissionError as e:
        raise SsdError(f"{out}: cannot write the converted checkpoint ({_first_line(e)})") from None
    return out


def resolve_weights(spec: str, note: Callable[[str], None] = lambda _line: None) -> str:
    """The native checkpoint a ``-w`` value stands for: ``coco-ssd300`` / ``coco-ssdlite320`` (fetched and
    converted once), a torchvision COCO file under its original name (converted once, beside it), or ``spec``
    unchanged. ``note`` receives one line per download or conversion."""
    entry = PRETRAINED.get(spec.strip().lower())
    if entry is not None:
        src = cache_dir() / entry.file_name
        if not src.is_file():
            _download(entry, src, note)
        return str(_convert_cached(src, note))
    local = _local_torchvision_file(spec)
    if local is not None and Path(spec).is_file():
        return str(_convert_cached(Path(spec), note))
    return spec


__all__ = ["PRETRAINED", "WEIGHTS_HELP", "cache_dir", "pretrained_arch", "resolve_weights"]
