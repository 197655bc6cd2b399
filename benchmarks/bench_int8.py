"""CPU deployment options side by side (issue 20): float32 ONNX, int8 ONNX, PyTorch fp32, PyTorch bf16.

    .venv/bin/python benchmarks/bench_int8.py --data /tmp/d_racc CKPT [CKPT ...] [--rounds 15] [--ablation]
        [--calib-images 64] [--calib-method minmax] [--json out.json]

``--data``: a prepared dataset (``ssd prepare-voc``); int8 models calibrate on its train split, every variant is
measured on its test split. Per checkpoint:

* latency: batch 1, one preprocessed test image, ``backend.detect`` (forward + box decoding + NMS, i.e. what
  ``ssd detect`` runs per image after decoding the file); all variants timed interleaved, round after round, after
  warm-up; medians reported, so a machine shared with other work slows every variant alike;
* accuracy: VOC07 mAP@0.5 and COCO AP@[.5:.95] on the test split (conf 0.01, the evaluation setting).

``--ablation`` adds int8 variants that quantize more of the network, to show what the float parts cost:
``int8+heads`` (prediction heads int8 too) and ``int8-all`` (every node in front of the raw outputs int8, e.g.
SSD300's L2Norm and MobileNetV3's hard-swish / squeeze-excitation element-wise ops).
Targets: int8 latency <= 0.5x float32 ONNX, test mAP@0.5 within 1.0 point of float.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# PyTorch's OpenMP workers wait passively (as ONNX Runtime's do, see ssdcli.inference.onnx_backend): spinning
# workers made PyTorch 10-80x slower on the shared 2-core machine; set before torch loads OpenMP
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import onnx
import torch

from ssdcli.data.images import read_image
from ssdcli.data.records import load_prepared
from ssdcli.deploy.environment import environment_info
from ssdcli.deploy.onnx_export import _add_metadata, _export, _strip_outputs, export_onnx, load_checkpoint_model
from ssdcli.deploy.quantize import CalibMethod, CalibrationImages, QuantizeSpec, calibration_records, quantize_model
from ssdcli.engine.evaluator import evaluate_detector
from ssdcli.inference import Detector, TorchBackend
from ssdcli.inference.onnx_backend import OnnxBackend, physical_cores
from ssdcli.models.export_graph import INPUT_NAME
from ssdcli.postprocess import PostprocessConfig

PP = PostprocessConfig()


def _ablation_model(ckpt: Path, out: Path, data: Path, images: int, method: str, heads: bool, everything: bool) -> Path:
    """An int8 model quantizing more than the default (heads and/or every network node), written to ``out``."""
    model = load_checkpoint_model(ckpt)
    proto = _export(model, 17, True, False, True, PP)
    raw = list(model.output_names)
    reader = CalibrationImages(calibration_records(data, images), model.config, INPUT_NAME)
    result = quantize_model(proto, raw, reader, CalibMethod(method), op_types=None if everything else
                            ("Conv", "Relu", "Clip", "MaxPool"), float_heads=not heads)
    q = result.model
    _add_metadata(q, model, True, PP, False, True, ckpt, None, 17, {"dtype": "int8", "ablation": True})
    _strip_outputs(q, raw)
    onnx.save(q, out)
    return out


def _variants(ckpt: Path, data: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Detector]:
    f32, i8 = tmp / f"{ckpt.parent.name}.fp32.onnx", tmp / f"{ckpt.parent.name}.int8.onnx"
    t0 = time.perf_counter()
    export_onnx(ckpt, f32, verify=False, force=True)
    export_onnx(ckpt, i8, verify=False, force=True, int8=QuantizeSpec(data, args.calib_images, args.calib_method))
    print(f"  exported float + int8 in {time.perf_counter() - t0:.0f} s", flush=True)
    variants = {
        "onnx-fp32": Detector(OnnxBackend(f32, "cpu"), PP),
        "onnx-int8": Detector(OnnxBackend(i8, "cpu"), PP),
    }
    if args.ablation:
        for name, heads, everything in (("onnx-int8+heads", True, False), ("onnx-int8-all", True, True)):
            path = _ablation_model(ckpt, tmp / f"{ckpt.parent.name}.{name}.onnx", data, args.calib_images,
                                   args.calib_method, heads, everything)
            variants[name] = Detector(OnnxBackend(path, "cpu"), PP)
    variants["torch-fp32"] = Detector(TorchBackend(load_checkpoint_model(ckpt), torch.device("cpu")), PP)
    try:
        variants["torch-bf16"] = Detector(TorchBackend(load_checkpoint_model(ckpt), torch.device("cpu"), half=True), PP)
    except Exception as e:  # noqa: BLE001 - a CPU without bf16: the row says so
        print(f"  torch-bf16 skipped: {e}")
    return variants


def _latency(variants: dict[str, Detector], x: torch.Tensor, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in variants}
    for det in variants.values():  # warm-up
        for _ in range(3):
            det.backend.detect(x, PP)
    for _ in range(rounds):
        for name, det in variants.items():
            t0 = time.perf_counter()
            det.backend.detect(x, PP)
            times[name].append((time.perf_counter() - t0) * 1000)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--calib-method", default="minmax", choices=[m.value for m in CalibMethod])
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(physical_cores())
    ds = load_prepared(args.data, splits=["test"])
    test = ds.split("test")
    env = environment_info(torch.device("cpu"))
    print(f"{env['cpu']} | {env['physical_cores']} cores | features {env['cpu_features']} | "
          f"torch {env['versions']['torch']} onnxruntime {env['versions']['onnxruntime']}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for ckpt in args.checkpoints:
            print(f"{ckpt}:", flush=True)
            variants = _variants(ckpt, args.data, Path(tmp), args)
            size = next(iter(variants.values())).config.image_size
            x = next(iter(variants.values())).prepare([read_image(test[0].path)])
            assert x.shape[-1] == size
            lat = _latency(variants, x, args.rounds)
            for name, det in variants.items():
                t0 = time.perf_counter()
                rep = evaluate_detector(det, test, ds.classes, metrics=("voc07", "coco"))
                row = {
                    "checkpoint": str(ckpt),
                    "arch": det.config.arch,
                    "variant": name,
                    "latency_ms": lat[name],
                    "vs_onnx_fp32": lat[name] / lat["onnx-fp32"],
                    "map50_voc07": float(rep.results["voc07"].map),  # type: ignore[attr-defined]
                    "coco_ap": float(rep.results["coco"].map),  # type: ignore[attr-defined]
                    "eval_s": time.perf_counter() - t0,
                }
                results.append(row)
                print(f"  {name:16s} {row['latency_ms']:8.2f} ms  x{row['vs_onnx_fp32']:.2f}  "
                      f"mAP@0.5 {100 * row['map50_voc07']:.2f}  COCO AP {100 * row['coco_ap']:.2f}", flush=True)
    print("\n| model | variant | latency ms (batch 1, median) | vs float32 ONNX | test mAP@0.5 | COCO AP |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['arch']} | {r['variant']} | {r['latency_ms']:.1f} | {r['vs_onnx_fp32']:.2f}x | "
              f"{100 * r['map50_voc07']:.2f} | {100 * r['coco_ap']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "rounds": args.rounds, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
