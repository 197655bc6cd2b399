"""Run folders ``runs/<task>/<name>``: auto-incremented, never overwritten."""

from __future__ import annotations

import os
from pathlib import Path

from ssdcli.errors import SsdError


def check_run_name(name: str, option: str = "--name") -> str:
    """``name`` when it is one plain folder name (so the run stays inside ``--project``), else SsdError."""
    bad = (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or Path(name).is_absolute()
        or name != name.strip()
    )
    if bad:
        raise SsdError(f"{option} {name!r}: expected one folder name (no '/', '\\', '..', leading/trailing spaces); "
                       "use --project to choose the parent folder")
    return name


def new_run_dir(project: str | os.PathLike, name: str) -> Path:
    """Create ``project/name`` or, when taken, ``project/name2``, ``name3``... and return it."""
    check_run_name(name)
    project = Path(project)
    try:
        project.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SsdError(f"{project}: cannot create the run folder ({e.strerror or e})") from None
    if not os.access(project, os.W_OK):
        raise SsdError(f"{project}: folder is not writable")
    for i in range(1, 10_000):
        candidate = project / (name if i == 1 else f"{name}{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as e:
            raise SsdError(f"{candidate}: cannot create the run folder ({e.strerror or e})") from None
    raise SsdError(f"{project}: too many runs named '{name}'")


def next_run_dir(project: str | os.PathLike, name: str) -> Path:
    """The folder :func:`new_run_dir` would create now (``project/name``, ``name2``...), without creating it."""
    check_run_name(name)
    project = Path(project)
    for i in range(1, 10_000):
        candidate = project / (name if i == 1 else f"{name}{i}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
    raise SsdError(f"{project}: too many runs named '{name}'")
