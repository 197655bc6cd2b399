"""Foreground class-name lists given by the user: validated, or read from a names file.

Class names never include the background (label 0 is implicit, see :mod:`ssdcli.boxes`); name ``i`` is label
``i + 1``. Used by ``ssd prepare-voc`` (``--classes``, ``--classes-file``) and ``ssd convert`` (``--classes FILE``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ssdcli.errors import SsdError

__all__ = ["BACKGROUND_NAMES", "validate_class_names", "read_class_file"]

BACKGROUND_NAMES = ("background", "__background__")  # a first line dropped by read_class_file(drop_leading_background)


def validate_class_names(names: Sequence[str], source: str) -> list[str]:
    """Names stripped, blanks dropped -> the list. SsdError ``"{source}: ..."`` when it is empty, repeats a
    name, or names the background (``background``, ``__background__``, any case)."""
    out = [n for n in (str(c).strip() for c in names) if n]
    if not out:
        raise SsdError(f"{source}: empty class list")
    dup = sorted(n for n, k in Counter(out).items() if k > 1)
    if dup:
        raise SsdError(f"{source}: duplicate class name(s) {', '.join(dup[:5])}{' ...' if len(dup) > 5 else ''}")
    bg = [n for n in out if n.lower().strip("_") == "background"]
    if bg:
        raise SsdError(f"{source}: '{bg[0]}' is implicit (label 0); list only the object classes")
    return out


def read_class_file(
    path: str | os.PathLike, option: str = "--classes-file", *, drop_leading_background: bool = False
) -> list[str]:
    """One class name per line; blank lines and lines starting with ``#`` are skipped; then
    :func:`validate_class_names`. ``drop_leading_background``: a first name in :data:`BACKGROUND_NAMES` (any
    case; torchvision-style lists) is dropped instead of refused. Errors: SsdError ``"{option} {path}: ..."``."""
    source = f"{option} {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeError) as e:
        reason = getattr(e, "strerror", None) or e.__class__.__name__
        raise SsdError(f"{source}: cannot read the class names file ({reason})") from None
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if drop_leading_background and names and names[0].lower() in BACKGROUND_NAMES:
        names = names[1:]
    if not names:
        raise SsdError(f"{source}: no class names in the file (one name per line)")
    return validate_class_names(names, source)
