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


def cpu_flags() -> set[str]:
    """Instruction-set flags of this CPU from ``/proc/cpuinfo`` (empty where it cannot be read, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX-BF16), so that bf16 autocast is faster
    than float32 instead of emulated; off Linux, oneDNN's own check."""
    flags = cpu_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_bf16_matrix_units() -> bool:
    """Whether this CPU has AMX-BF16 tiles (Intel Sapphire Rapids and later): there oneDNN's bf16 convolutions run
    several times faster than float32 (measured for training: ``benchmarks/bench_train_step.py``); with AVX-512 BF16
    alone the gain is smaller and not measured here."""
    return "amx_bf16" in cpu_flags()
