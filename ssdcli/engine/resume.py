"""``ssd train --resume``: find the checkpoint to resume and decide which options may change.

``--resume`` takes a checkpoint file, a run folder (its ``last.pth``) or ``auto``: the newest ``last.pth`` among
the runs of the same ``--name`` under ``--project`` (``exp``, ``exp2``, ...), or a new run when there is none, so
a preempted job can be requeued with the very same command line.

Options given together with ``--resume`` either change the run (the ones in :data:`RESUME_CHANGEABLE`: a longer
``--iters``/``--epochs`` extends it, the schedule is recomputed over the new length) or must equal the run's own
values; any other difference is refused with one line instead of being ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

from ssdcli.errors import SsdError

RESUME_AUTO = "auto"
# may differ from the run's own values when resuming (none of them changes what the model sees until the run's end)
RESUME_CHANGEABLE: frozenset[str] = frozenset(
    {"iters", "epochs", "device", "workers", "save_every", "time_limit", "log_every", "eval_every", "stop_after"}
)


def find_resume_checkpoint(resume: str, project: str, name: str) -> Path | None:
    """The checkpoint ``--resume`` names; None for ``auto`` when no run of that name exists yet."""
    if resume == RESUME_AUTO:
        return _newest_run_checkpoint(Path(project), name)
    path = Path(resume)
    if path.is_dir():
        if (path / "last.pth").is_file():
            return path / "last.pth"
        raise SsdError(f"--resume {resume}: the folder holds no last.pth (not a run folder, or the run stopped "
                       "before its first checkpoint)")
    if not path.exists():
        raise SsdError(f"--resume {resume}: not found (give a run folder, its last.pth, or 'auto')")
    return path


def _newest_run_checkpoint(project: Path, name: str) -> Path | None:
    if not project.is_dir():
        return None
    pattern = re.compile(re.escape(name) + r"\d*")
    found = [d / "last.pth" for d in project.iterdir() if pattern.fullmatch(d.name) and (d / "last.pth").is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def option_flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def check_resume_changes(stored: dict, given: dict, where: str | Path) -> dict:
    """The subset of ``given`` (options the user typed) that changes the run; raises for forbidden changes."""
    changed = {k: v for k, v in given.items() if k in stored and stored[k] != v}
    refused = sorted(k for k in changed if k not in RESUME_CHANGEABLE)
    if refused:
        shown = ", ".join(f"{option_flag(k)} {changed[k]} (the run has {stored[k]})" for k in refused)
        allowed = ", ".join(option_flag(k) for k in sorted(RESUME_CHANGEABLE - {"stop_after"}))
        raise SsdError(
            f"--resume {where}: cannot change {shown} when resuming (only {allowed} can); to train again with "
            f"other settings start a new run with --weights {where}"
        )
    return {k: v for k, v in changed.items() if k in RESUME_CHANGEABLE}
