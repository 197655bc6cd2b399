"""Turns user-facing errors into one red line and an exit code; bugs keep their traceback."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.markup import escape

from ssdcli.cli.console import error
from ssdcli.errors import SsdError

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SsdError as e:
            if os.environ.get("SSD_DEBUG"):
                raise
            error(escape(str(e)))
            raise typer.Exit(code=e.exit_code) from None
        except KeyboardInterrupt:
            error("interrupted")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]
