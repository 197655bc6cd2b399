"""Seconds per training step on this CPU: float32 vs bf16 autocast, contiguous vs channels-last memory format.

    .venv/bin/python benchmarks/bench_train_step.py [--archs ssdlite320:16 ssd300-bn:8 centernet-res18:16]
        [--rounds 5] [--json out.json]

Each ``ARCH:BATCH`` is built with 2 classes at the recipe's input size (random weights; speed does not depend on
them) and timed on one fixed batch of random images with one box each: forward (under ``torch.autocast("cpu",
torch.bfloat16)`` for bf16, as ``ssd train --amp`` does), the family's loss in float32, backward, an SGD step. The
four variants are interleaved round by round (a shared machine drifts) and each round times two steps; the
median over rounds is printed with the speed-up over float32 contiguous. These figures set the recipes'
``channels_last`` and ``cpu_bf16`` defaults (``ssdcli/models/*/recipes.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ssdcli.device import cpu_flags
from ssdcli.models.registry import architecture, build_model, recipe_for

VARIANTS = [("float32", False), ("float32", True), ("bf16", False), ("bf16", True)]


def time_steps(arch: str, batch: int, rounds: int) -> dict[str, float]:
    torch.manual_seed(0)
    size = recipe_for(arch, "scratch").img_size or architecture(arch).default_image_size
    model = build_model(arch, 2, ["object"], image_size=size).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images = torch.randn(batch, 3, size, size)
    targets = model.encode_targets([torch.tensor([[0.2, 0.25, 0.7, 0.9]])] * batch, [torch.tensor([1])] * batch)

    def step(precision: str, channels_last: bool) -> None:
        x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            outputs = model(x)
        loss = model.compute_loss(tuple(t.float() for t in outputs), targets)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def use(channels_last: bool) -> None:
        model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    for precision, cl in VARIANTS:  # warm-up: oneDNN primitive creation
        use(cl)
        step(precision, cl)
    times: dict[tuple[str, bool], list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for precision, cl in VARIANTS:
            use(cl)
            t0 = time.perf_counter()
            step(precision, cl)
            step(precision, cl)
            times[(precision, cl)].append((time.perf_counter() - t0) / 2)
    return {f"{p}{' channels-last' if cl else ''}": statistics.median(v) for (p, cl), v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["ssdlite320:16", "ssd300-bn:8", "centernet-res18:16"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    flags = cpu_flags()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, AMX-BF16 {'amx_bf16' in flags}, "
          f"AVX-512 BF16 {'avx512_bf16' in flags}")
    report = {"threads": torch.get_num_threads(), "amx_bf16": "amx_bf16" in flags, "rows": []}
    for spec in args.archs:
        arch, batch = spec.split(":")
        medians = time_steps(arch, int(batch), args.rounds)
        base = medians["float32"]
        for variant, seconds in medians.items():
            print(f"{arch:16s} batch {batch:>3s}  {variant:24s} {seconds:6.3f} s/step  {base / seconds:4.2f}x")
            report["rows"].append({"arch": arch, "batch": int(batch), "variant": variant, "s_per_step": seconds,
                                   "speedup": base / seconds})  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
