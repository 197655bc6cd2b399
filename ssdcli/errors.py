"""User-facing errors.

Anything the user can cause (bad input files, bad options, missing hardware) is raised as
:class:`SsdError`; the CLI turns it into one red line and exit code 2. Every other exception is a bug.
"""

from __future__ import annotations


class SsdError(Exception):
    """An error caused by input or environment; its message is shown to the user as one line."""

    exit_code = 2


class NotBuiltYet(SsdError):
    """A subcommand or option that exists in the interface but is not implemented yet."""

    exit_code = 3
