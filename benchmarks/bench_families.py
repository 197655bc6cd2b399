"""SSD vs CenterNet on one table: inference (PyTorch eager and ONNX Runtime, batch 1) and training throughput.

    .venv/bin/python benchmarks/bench_families.py [--archs ssd300,ssdlite320,centernet-res18,centernet-dla34]
                                                  [--iters 7]
                                                  [--train-batch 8] [--json out.json]

Each architecture is built with random weights and 21 classes (VOC: 20 + background) at its default input size,
saved as a native checkpoint, and measured by the same :func:`ssdcli.deploy.benchmark.run_benchmark` that
``ssd benchmark`` calls: latency p50 of the whole path (image file in, pixel boxes out), the forward alone, FLOPs
per image, the forward time relative to the machine's measured matmul peak, and the median training-step
throughput at ``--train-batch``. Speed does not depend on the weights' values; random-init SSD models make every
prior a candidate, so their post-processing is the worst case.

``centernet-dla34`` (deformable convolutions, exported at opset 19 for ONNX ``DeformConv``): the GFLOPs column
comes from ``FlopCounterMode``, which does not count ``torchvision::deform_conv2d``; the row adds those (the
same multiply-adds as a plain 3x3 convolution of the same shape, without the bilinear sampling) and says so.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torchvision.ops import DeformConv2d

from ssdcli.checkpoint import save_checkpoint
from ssdcli.deploy.benchmark import run_benchmark
from ssdcli.deploy.trainbench import train_throughput
from ssdcli.models.registry import build_model


def deform_conv_flops(model: torch.nn.Module, image_size: int) -> int:
    """FLOPs (2 per multiply-add) of the ``DeformConv2d`` layers for one image, which ``FlopCounterMode`` skips."""
    total = 0

    def hook(m: DeformConv2d, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += 2 * m.in_channels // m.groups * m.out_channels * kh * kw * out.shape[-2] * out.shape[-1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, DeformConv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, image_size, image_size))
    for h in handles:
        h.remove()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="ssd300,ssdlite320,centernet-res18,centernet-dla34")
    ap.add_argument("--iters", type=int, default=7, help="timed inference runs per engine (after 2 warm-up runs)")
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            torch.manual_seed(0)
            ckpt = Path(tmp) / f"{arch}.pth"
            model = build_model(arch, 21).eval()
            save_checkpoint(ckpt, model)
            uncounted = deform_conv_flops(model, model.config.image_size)
            report = run_benchmark(ckpt, batches=(1,), engines=("torch", "onnx"), device="cpu", warmup=2,
                                   iters=args.iters)
            config = build_model(arch, 21).config
            train = train_throughput(config, torch.device("cpu"), args.train_batch, False, warmup=1,
                                     iters=args.train_iters)
            row = {"arch": arch, "image_size": report.model["image_size"],
                   "gflops": round(report.model["gflops_per_image"] + uncounted / 1e9, 2),
                   "gflops_deform_conv": round(uncounted / 1e9, 2),
                   "params_m": round(report.model["parameters"] / 1e6, 2),
                   "train_images_per_s": train.images_per_s}
            for r in report.rows:
                if r.ok:
                    row[f"{r.engine}_p50_ms"] = round(r.latency_p50_ms, 1)
                    row[f"{r.engine}_forward_ms"] = round(r.forward_ms, 1)
                    row[f"{r.engine}_post_ms"] = round(r.post_ms, 1)
                    row[f"{r.engine}_peak_ratio"] = round(r.peak_ratio, 2) if r.peak_ratio else None
                else:
                    row[f"{r.engine}_skipped"] = r.reason
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| arch | input | GFLOPs | params (M) | torch p50 ms (forward / post) | ONNX Runtime p50 ms (forward / post) "
          f"| train img/s (batch {args.train_batch}) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['arch']} | {r['image_size']} | {r['gflops']} | {r['params_m']} "
              f"| {r.get('torch_p50_ms')} ({r.get('torch_forward_ms')} / {r.get('torch_post_ms')}) "
              f"| {r.get('onnx_p50_ms')} ({r.get('onnx_forward_ms')} / {r.get('onnx_post_ms')}) "
              f"| {r['train_images_per_s']:.3g} |")
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
