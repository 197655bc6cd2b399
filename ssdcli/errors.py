"""User-facing errors.

Anything the user can cause (bad input files, bad options, missing hardware) is raised as
:class:`SsdError`; the CLI turns it into one red line and exit code 2. Every other exception is a bug.
"""

from __future__ import annotations


class SsdError(Exception):
    """An error caused by input or environment; its message is shown to the user as one line."""

    exit_code = 2


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of ``e``'s message (at most ``limit`` characters), or its type name when it has none:
    what a one-line error shows of an exception raised by a library."""
    text = str(e).strip()
    return (text.splitlines()[0][:limit] if text else "") or type(e).__name__
