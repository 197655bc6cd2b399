"""How much work a model is and how fast this machine can do that kind of work.

* :func:`count_flops`: floating-point operations of one forward pass per image, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products, 2 FLOPs per multiply-add;
  element-wise work is not counted, as usual for "model FLOPs").
* :func:`measure_matmul_peak`: the best throughput of a large square ``torch.mm`` on the device: the practical
  peak the forward pass is compared against.

A forward pass can run its model FLOPs faster than that peak (ratio below 1): convolution libraries (oneDNN on
CPU, cuDNN on GPU) pick algorithms such as Winograd for 3x3 kernels that need fewer multiplies than the direct
convolution the FLOP count describes. Measured on the 2-core development machine (AMD EPYC): ``torch.mm`` 2048^3
about 200 GFLOP/s, a 512-channel 3x3 convolution on 64x64 about 430 "model" GFLOP/s.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model: torch.nn.Module, image_size: int) -> int:
    """FLOPs of ``model`` on one ``[1,3,S,S]`` image. Runs on fake tensors: shapes only, no arithmetic."""

    param = next(model.parameters())
    counter = FlopCounterMode(display=False)
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
        with counter, torch.no_grad():
            model(x)
    return int(counter.get_total_flops())


@dataclass
class MatmulPeak:
    gflops: float  # best measured GFLOP/s
    size: int  # n of the n x n x n product
    dtype: str
    device: str
    seconds: float  # best time of one product

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None, repeats: int = 3
) -> MatmulPeak:
    """Best-of-``repeats`` throughput of ``torch.mm`` on ``n x n`` matrices (CPU: n=2048, CUDA: n=8192)."""
    device = torch.device(device)
    n = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)  # warm-up (library initialisation, clocks)
    _sync(device)
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return MatmulPeak(
        gflops=2 * n**3 / best / 1e9, size=n, dtype=str(dtype).replace("torch.", ""), device=str(device), seconds=best
    )
