"""What a benchmark ran on: device name, cores, library versions (recorded with every report)."""

from __future__ import annotations

import platform
from importlib import metadata

import torch

from ssdcli.device import cpu_flags
from ssdcli.inference.onnx_backend import physical_cores

# /proc/cpuinfo flag -> what it speeds up (ONNX Runtime's int8 kernels use VNNI / AMX-INT8, oneDNN's bf16 kernels
# under PyTorch autocast use AVX-512 BF16 / AMX-BF16)
CPU_FEATURES = {
    "avx512_vnni": "AVX-512 VNNI (int8)",
    "avx_vnni": "AVX-VNNI (int8)",
    "amx_int8": "AMX-INT8",
    "avx512_bf16": "AVX-512 BF16",
    "amx_bf16": "AMX-BF16",
}


def cpu_features() -> dict:
    """Which int8/bf16 instruction sets this CPU has (``/proc/cpuinfo``), and PyTorch's CPU kernel level."""
    flags = cpu_flags()
    return {
        "flags": {name: label for name, label in CPU_FEATURES.items() if name in flags},
        "known": bool(flags),  # False where /proc/cpuinfo cannot be read
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment_info(device: torch.device) -> dict:
    info: dict = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu": cpu_name(),
        "physical_cores": physical_cores(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            "torch": torch.__version__,
            "torchvision": _version("torchvision"),
            "onnx": _version("onnx"),
            "onnxruntime": _version("onnxruntime-gpu") or _version("onnxruntime"),
            "ssdcli": _version("ssdcli"),
        },
    }
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = []
    info["cpu_features"] = cpu_features()
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info
