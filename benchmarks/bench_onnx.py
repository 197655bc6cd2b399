"""SSD300 at batch 1 on CPU: PyTorch eager vs ONNX Runtime, and end-to-end latency vs the forward alone.

    .venv/bin/python benchmarks/bench_onnx.py [--repeats 15] [--threads N] [--classes 21] [--json out.json]

Random weights (speed does not depend on them; BatchNorm-free SSD300, 21 classes). The checkpoint is exported
twice through ``ssdcli.deploy.onnx_export`` (NMS in the graph, and raw outputs), with the usual ONNX Runtime vs
PyTorch check. All variants are timed interleaved, round after round, and medians are reported, so a machine
shared with other work slows every variant alike.

Measured per round (batch 1, one 500x375 JPEG):
  * torch forward                 ``model(x)``
  * torch forward+post            ``model.decode(model(x))`` (what ``TorchBackend.detect`` does)
  * onnx raw forward              raw-output export, ``session.run``
  * onnx forward+post             NMS-in-graph export, ``session.run`` + unpacking (what ``OnnxBackend.detect`` does)
  * onnx end-to-end               image file -> decode, resize, normalise -> onnx forward+post -> pixel boxes
Targets (issue 7): onnx forward+post at least 1.25x faster than torch forward+post; end-to-end within 15% of the
forward alone; identical detections.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ssdcli.checkpoint import save_checkpoint
from ssdcli.data.images import read_image
from ssdcli.deploy.environment import environment_info
from ssdcli.deploy.onnx_export import export_onnx
from ssdcli.inference.onnx_backend import OnnxBackend, physical_cores
from ssdcli.deploy.verify import compare_detections
from ssdcli.models.registry import build_model
from ssdcli.postprocess import PostprocessConfig
from ssdcli.inference import Detector, detections_to_prediction


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def _picture(path: Path) -> None:
    from torchvision.io import encode_jpeg

    gen = torch.Generator().manual_seed(1)
    low = torch.rand(1, 3, 5, 6, generator=gen) * 255
    img = torch.nn.functional.interpolate(low, size=(375, 500), mode="bilinear", align_corners=False)[0]
    img = (img + torch.randn(img.shape, generator=gen) * 12).clamp(0, 255).to(torch.uint8)
    path.write_bytes(encode_jpeg(img, quality=90).numpy().tobytes())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="ssd300")
    ap.add_argument("--classes", type=int, default=21, help="including background")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: physical cores)"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    pp = PostprocessConfig()

    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp_dir:
        tmp = Path(tmp_dir)
        model = build_model(args.arch, args.classes).eval()
        save_checkpoint(tmp / "model.pth", model)
        picture = tmp / "picture.jpg"
        _picture(picture)
        print(f"exporting {args.arch} ({args.classes} classes) twice, checking each against PyTorch ...", flush=True)
        rep = export_onnx(tmp / "model.pth", tmp / "model.onnx", check_images=picture)
        rep_raw = export_onnx(tmp / "model.pth", tmp / "raw.onnx", nms=False, check_images=picture)
        onnx_nms = OnnxBackend(tmp / "model.onnx", "cpu", threads=threads)
        onnx_raw = OnnxBackend(tmp / "raw.onnx", "cpu", threads=threads)
        detector = Detector(onnx_nms, pp)

        image = read_image(picture)
        x = detector.prepare([image])

        def torch_forward() -> None:
            with torch.inference_mode():
                model(x)

        def torch_full() -> None:
            with torch.inference_mode():
                model.decode(model(x), pp)

        def onnx_forward_raw() -> None:
            onnx_raw.run(x)

        def onnx_full() -> None:
            onnx_nms.detect(x, pp)

        def onnx_e2e() -> None:
            im = read_image(picture)
            det = onnx_nms.detect(detector.prepare([im]), pp)[0]
            detections_to_prediction(det, int(im.shape[2]), int(im.shape[1]), detector.class_names)

        variants = {
            "torch forward": torch_forward,
            "torch forward+post": torch_full,
            "onnx raw forward": onnx_forward_raw,
            "onnx forward+post": onnx_full,
            "onnx end-to-end": onnx_e2e,
        }
        for fn in variants.values():  # warm-up: allocators, thread pools, ORT kernels
            fn()
        times: dict[str, list[float]] = {k: [] for k in variants}
        print(f"timing {len(variants)} variants x {args.repeats} rounds (interleaved) ...", flush=True)
        for _ in range(args.repeats):
            for name, fn in variants.items():
                times[name].append(_timed(fn))

        with torch.inference_mode():
            torch_dets = model.decode(model(x), pp)
        agreement = compare_detections(torch_dets, onnx_nms.detect(x, pp))
        agreement_raw = compare_detections(torch_dets, onnx_raw.detect(x, pp))

    med = {k: float(np.median(v)) for k, v in times.items()}
    best = {k: float(np.min(v)) for k, v in times.items()}
    speedup = med["torch forward+post"] / med["onnx forward+post"]
    speedup_best = best["torch forward+post"] / best["onnx forward+post"]
    speedup_raw = med["torch forward"] / med["onnx raw forward"]
    e2e_ratio = med["onnx end-to-end"] / med["onnx forward+post"]
    e2e_raw_ratio = med["onnx end-to-end"] / med["onnx raw forward"]
    env = environment_info(torch.device("cpu"))
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    versions = env["versions"]
    print(f"\n{env['device_name']}, {env['physical_cores']} physical cores, {threads} threads")
    print(f"load average after the run: {' '.join(load)} (a busy machine makes every figure noisy)")
    print(f"torch {versions['torch']}, onnxruntime {versions['onnxruntime']}, batch 1, {args.repeats} rounds")
    for name, value in med.items():
        p10, p90 = np.percentile(times[name], [10, 90])
        print(f"  {name:<20} median {value:8.1f} ms   min {best[name]:8.1f}   p10 {p10:.1f}   p90 {p90:.1f}")
    print(f"ONNX Runtime vs eager, forward+post: {speedup:.2f}x median, {speedup_best:.2f}x best (target > 1.25x)")
    print(f"ONNX Runtime vs eager, raw forward only: {speedup_raw:.2f}x median")
    print(
        f"end-to-end / (forward+NMS): {e2e_ratio:.3f}; end-to-end / raw forward: {e2e_raw_ratio:.3f} (target <= 1.15)"
    )
    print(f"detections, NMS-in-graph vs torch: {agreement.summary()}")
    print(f"detections, raw export + ssdcli post-processing vs torch: {agreement_raw.summary()}")
    check = rep.onnx_vs_torch.summary() if rep.onnx_vs_torch else "-"
    print(f"export check: max raw diff {max(rep_raw.raw_diff.values()):.3g}; {check}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "arch": args.arch,
                    "classes": args.classes,
                    "threads": threads,
                    "repeats": args.repeats,
                    "load_average": load,
                    "environment": env,
                    "median_ms": med,
                    "times_ms": times,
                    "speedup": speedup,
                    "speedup_raw": speedup_raw,
                    "e2e_over_forward": e2e_ratio,
                    "e2e_over_raw_forward": e2e_raw_ratio,
                    "min_ms": best,
                    "speedup_best": speedup_best,
                    "detections_equal": agreement.equal,
                    "agreement": agreement.summary(),
                },
                indent=2,
            )
        )
    return 0 if agreement.equal else 1


if __name__ == "__main__":
    sys.exit(main())
