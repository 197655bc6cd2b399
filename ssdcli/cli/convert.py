"""`ssd convert` (not built yet)."""

from __future__ import annotations

from ssdcli.errors import NotBuiltYet


def command() -> None:
    """Not built yet."""
    raise NotBuiltYet("`ssd convert` is not built yet")
