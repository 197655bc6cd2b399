"""The one console every command prints through (errors and warnings go to stderr)."""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True)
