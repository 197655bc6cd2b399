"""Options shared by several commands (typed once, reused everywhere)."""

from __future__ import annotations

from typing import Annotated

import typer

DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N.")
]
