"""Run folders ``runs/<task>/<name>``: auto-incremented, never overwritten."""

from __future__ import annotations

import os
from pathlib import Path

from ssdcli.errors import SsdError


def new_run_dir(project: str | os.PathLike, name: str) -> Path:
    """Create ``project/name`` or, when taken, ``project/name2``, ``name3``... and return it."""
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
