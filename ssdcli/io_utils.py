"""Safe file writes: atomic replacement, the user's permissions, no stale temporaries, no clobbered inputs.

* :func:`atomic_write` writes a temp file next to the target, fsyncs it and renames it over the target: a crash
  or a full disk never leaves a half-written file in place of a good one. The temp file is created with mode
  0666 minus the process umask, like any file the user creates (``mkstemp``'s 0600 would hide an exported model
  from a service running as another user).
* Temp files are named ``.<name>.<pid>-<random>.tmp``; the first write into a folder (once per process) removes
  the ones left there by crashed processes (pid no longer alive, untouched for a minute).
* :func:`check_output` is the one rule for output paths: never an input (even with ``--force``), never a file
  that exists unless ``force``.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from ssdcli.errors import SsdError

_TMP_NAME = re.compile(r"^\..+\.(\d+)-[0-9a-f]{12}\.tmp$")
STALE_AFTER_S = 60.0  # a temp file untouched this long whose process is gone is debris of a crash
_swept: set[Path] = set()
_swept_lock = threading.Lock()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fileobj)`` on a temp file next to ``path``, fsync it, then rename it over ``path``.

    On any failure the temp file is removed and an existing ``path`` is left untouched. The file gets the
    permissions of a newly created file (0666 minus the umask).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temporaries(path.parent)
        tmp, fd = _create_temp(path)
    except OSError as e:
        raise SsdError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise SsdError(f"{path}: write failed ({e.strerror or e}); the previous file, if any, is kept") from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _create_temp(path: Path) -> tuple[Path, int]:
    """A new temp file next to ``path``, opened for writing with mode 0666 & ~umask (applied by the kernel)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp"
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def sweep_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove temp files of crashed atomic writes in ``folder`` (once per folder and process); return them.

    Only names of the form ``.<name>.<pid>-<12 hex>.tmp`` are touched, and only when that process is not alive
    on this machine and the file has not changed for :data:`STALE_AFTER_S` seconds.
    """
    folder = Path(folder)
    key = folder.resolve()
    with _swept_lock:
        if key in _swept:
            return []
        _swept.add(key)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TMP_NAME.match(entry.name)
        if m is None or _process_alive(int(m.group(1))):
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
            if entry.is_file(follow_symlinks=False) and old:
                os.remove(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":  # (os.kill(pid, 0) would terminate the process on Windows)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists (another user's) or cannot tell: keep the file
    return True


def _remove_quietly(path: str | os.PathLike) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (resolving links, ``..`` and hard links)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` resolves to ``folder`` or to something inside it."""
    p, f = Path(path).resolve(), Path(folder).resolve()
    return p == f or f in p.parents


def check_output(
    path: str | os.PathLike,
    option: str,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    input_folders: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """Refuse an output path that would replace an input or, without ``force``, any existing file.

    ``inputs``: files the command reads (weights, detections, images); ``input_folders``: folders whose content
    is an input (a prepared dataset: its manifest and split files). Outputs landing on or inside them are refused
    even with ``force``. Raises :class:`SsdError` naming ``option``; returns ``path`` as a Path.
    """
    path = Path(path)
    for src in inputs:
        if src is not None and same_file(path, src):
            raise SsdError(f"{option} {path}: is an input of this command ({src}); choose another path")
    for folder in input_folders:
        if folder is not None and Path(folder).is_dir() and is_within(path, folder):
            raise SsdError(f"{option} {path}: is inside the input folder {folder}; choose another path")
    if path.is_dir():
        raise SsdError(f"{option} {path}: is a folder; give a file name")
    if (path.exists() or path.is_symlink()) and not force:
        raise SsdError(f"{option} {path}: already exists (use --force to replace it)")
    return path
