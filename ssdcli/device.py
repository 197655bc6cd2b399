"""``--device`` parsing: auto | cpu | cuda | cuda:N."""

from __future__ import annotations

import torch

from ssdcli.errors import SsdError


def resolve_device(spec: str = "auto") -> torch.device:
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SsdError(f"--device {spec}: CUDA is not available on this machine (use --device cpu or auto)")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SsdError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise SsdError(f"--device {spec}: expected auto, cpu, cuda or cuda:N")
