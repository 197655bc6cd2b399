"""Inputs and output names of ``ssd detect`` (:mod:`ssdcli.engine.detect`).

Inputs: files (always tried), folders (``recursive``: subfolders too) and glob patterns; in folders and glob
matches, files without an image or video extension and hidden files are ignored (counted); videos are then
handed to :mod:`ssdcli.engine.detect_video`. Output names keep the
input's relative path (files found in a folder: relative to that folder; files and glob matches: their name)
and extension (else ``.jpg``); names that clash, ignoring the extension and case, get ``_2``, ``_3`` ...;
inputs sharing a file stem use that output path without extension as ``image_id``. Outputs never overwrite
inputs (:func:`check_outputs`).
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from ssdcli.data.images import IMAGE_EXTENSIONS
from ssdcli.data.video import is_video_name
from ssdcli.errors import SsdError

__all__ = ["DetectItem", "collect_inputs", "picture_path", "check_outputs"]

_GLOB_CHARS = set("*?[")


@dataclass
class DetectItem:
    path: Path  # input file
    rel: PurePosixPath  # unique output path relative to --out (input's extension)
    image_id: str  # file stem, or rel without extension when the stem is shared by another input


def collect_inputs(
    inputs: list[str], recursive: bool = False, exclude: Path | None = None
) -> tuple[list[DetectItem], int, list[Path]]:
    """Files, folders (``recursive``: with subfolders) and glob patterns -> (items, ignored count, folders).

    Folders and glob matches keep files with an image extension (:data:`IMAGE_EXTENSIONS`, any case) that
    are not hidden; files named explicitly are always tried. ``exclude``: a folder never scanned (``--out``).
    """
    found: list[tuple[Path, PurePosixPath]] = []
    folders: list[Path] = []
    ignored = 0
    for spec in inputs:
        p = Path(spec).expanduser()
        if p.is_dir():
            folders.append(p)
            files, n_ignored = _scan_folder(p, recursive, exclude)
            ignored += n_ignored
            found += [(f, PurePosixPath(f.relative_to(p).as_posix())) for f in files]
        elif p.exists():  # a file, or a FIFO/device: tried like any input, then skipped with a warning
            found.append((p, PurePosixPath(p.name)))
        elif _GLOB_CHARS & set(spec) and (matches := sorted(glob.glob(os.path.expanduser(spec), recursive=recursive))):
            files = [Path(m) for m in matches if Path(m).is_file()]
            keep = [f for f in files if _is_image_name(f.name)]
            ignored += len(files) - len(keep)
            found += [(f, PurePosixPath(f.name)) for f in keep]
        else:
            raise SsdError(f"{spec}: no such file or folder, and no file matches it as a pattern")
    seen: set[Path] = set()
    unique = []
    for path, rel in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((path, rel))
    return _name_outputs(unique), ignored, folders


def _is_image_name(name: str) -> bool:
    """An image or a video name (not hidden)."""
    return not name.startswith(".") and (Path(name).suffix.lower() in IMAGE_EXTENSIONS or is_video_name(name))


def _scan_folder(folder: Path, recursive: bool, exclude: Path | None) -> tuple[list[Path], int]:
    files, ignored = [], 0
    exclude = exclude.resolve() if exclude is not None else None
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        if exclude is not None and recursive:
            dirs[:] = [d for d in dirs if (Path(root) / d).resolve() != exclude]
        for name in sorted(names):
            if _is_image_name(name):
                files.append(Path(root) / name)
            else:
                ignored += 1
    return files, ignored


def _name_outputs(found: list[tuple[Path, PurePosixPath]]) -> list[DetectItem]:
    """Unique output paths (extension and case ignored: pictures and .txt files never collide) and image ids."""
    taken: set[str] = set()
    items = []
    for path, rel in found:
        base, n = rel.with_suffix(""), 1
        while (str(base) if n == 1 else f"{base}_{n}").lower() in taken:
            n += 1
        stem_path = base if n == 1 else base.with_name(f"{base.name}_{n}")
        taken.add(str(stem_path).lower())
        items.append(DetectItem(path, stem_path.with_suffix(rel.suffix), ""))
    stems = Counter(it.path.stem for it in items)
    for it in items:
        it.image_id = it.path.stem if stems[it.path.stem] == 1 else str(it.rel.with_suffix(""))
    return items


def picture_path(out: Path, rel: PurePosixPath) -> Path:
    """Where the picture of an input goes: its extension when Pillow can write it, else ``.jpg``."""
    fmt = Image.registered_extensions().get(rel.suffix.lower())
    suffix = rel.suffix if fmt in Image.SAVE and rel.suffix.lower() in IMAGE_EXTENSIONS else ".jpg"
    return out / Path(*rel.with_suffix(suffix).parts)


def _check_writable_dir(folder: Path, what: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise SsdError(f"{what} {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ssd-write-test-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise SsdError(f"{what} {folder}: cannot write there ({e.strerror or e})") from None


def check_outputs(
    items: list[DetectItem], folders: list[Path], out: Path | None, json_path: Path | None, *,
    force: bool = False, protected: Sequence[str | os.PathLike] = (), save_txt: bool = False,
) -> None:
    """Refuse outputs that would overwrite an input (``out`` = an input folder, a picture path = an input file,
    ``json_path`` = an input or a folder, any output = a ``protected`` file such as the weights in use, even with
    ``force``), existing files without ``force``, and folders that cannot be written; creates ``out``. SsdError."""
    inputs = {it.path.resolve() for it in items} | {Path(p).resolve() for p in protected}
    if out is not None:
        out_res = out.resolve()
        if any(out_res == f.resolve() for f in folders):
            raise SsdError(f"--out {out}: is an input folder; pictures would overwrite the inputs (use e.g. --out vis)")
        written = [(it, p) for it in items for p in _outputs_of(out, it, save_txt)]
        clash = next((it for it, p in written if p.resolve() in inputs), None)
        if clash is not None:
            raise SsdError(f"--out {out}: the picture of {clash.path} would overwrite an input; use another folder")
        existing = None if force else next((p for _, p in written if p.exists() or p.is_symlink()), None)
        if existing is not None:
            raise SsdError(f"--out {out}: {existing} already exists (use --force to replace it, or another --out)")
        _check_writable_dir(out, "--out")
    if json_path is not None:
        if json_path.resolve() in inputs or json_path.is_dir():
            raise SsdError(f"--json {json_path}: is an input file or a folder")
        if not force and (json_path.exists() or json_path.is_symlink()):
            raise SsdError(f"--json {json_path}: already exists (use --force to replace it)")
        _check_writable_dir(json_path.parent, "--json")


def _outputs_of(out: Path, item: DetectItem, save_txt: bool) -> list[Path]:
    picture = picture_path(out, item.rel)
    return [picture, out / Path(*item.rel.with_suffix(".txt").parts)] if save_txt else [picture]
