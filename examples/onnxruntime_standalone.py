"""Run a model exported by ``ssd export-onnx`` with nothing but ONNX Runtime, NumPy and Pillow (no ssdcli, no torch).

    ssd export-onnx runs/train/exp/best.pth -o model.onnx
    python examples/onnxruntime_standalone.py model.onnx image.jpg [more.jpg ...] [--conf 0.3]

This is what a deployment service does: everything it needs travels inside the ``.onnx`` file. The metadata key
``ssdcli`` holds the preprocessing (mean, std, channel order, pixel scale), the input size and the class names; the
graph holds decode + class-aware NMS (exported with the default ``--nms``), so its outputs are final detections:

    num_detections [N] int64, boxes [N,D,4] relative xyxy, scores [N,D], labels [N,D] (1-based class index)

Boxes are printed in the project's pixel convention (VOC: 1-based inclusive, a whole W x H image is 1,1,W,H).
The resize here is Pillow's bilinear, ``ssd detect`` uses torchvision's antialiased bilinear: scores can differ in the
third decimal.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def load_session(path: str) -> tuple[ort.InferenceSession, dict]:
    """The ONNX Runtime session (CUDA when this onnxruntime has it, else CPU) and the model's ssdcli metadata."""
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = [p for p in wanted if p in ort.get_available_providers()]
    session = ort.InferenceSession(path, providers=providers)
    props = session.get_modelmeta().custom_metadata_map
    if "ssdcli" not in props:
        raise SystemExit(f"{path}: no ssdcli metadata (export it with `ssd export-onnx`)")
    meta = json.loads(props["ssdcli"])
    if not meta["nms"]:
        raise SystemExit(f"{path}: exported with --no-nms; this example expects NMS in the graph")
    return session, meta


def preprocess(image: Image.Image, meta: dict) -> np.ndarray:
    """PIL image -> normalised float32 [3,S,S] exactly as the metadata says (warp resize, no letterbox)."""
    size = int(meta["config"]["image_size"])
    pp = meta["config"]["preprocess"]
    rgb = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32)  # [S,S,3] 0..255
    if pp["channel_order"] == "BGR":
        rgb = rgb[..., ::-1]
    x = (rgb * float(pp["pixel_scale"]) - np.asarray(pp["mean"], np.float32)) / np.asarray(pp["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def detect(session: ort.InferenceSession, meta: dict, images: list[Image.Image]) -> list[list[dict]]:
    """Images -> per image a list of {label, score, box (VOC pixels of that image)}, best first."""
    batch = np.stack([preprocess(im, meta) for im in images])
    if meta["input_dtype"] == "float16":
        batch = batch.astype(np.float16)
    names = meta["config"]["class_names"]
    outputs = dict(zip(meta["outputs"], session.run(meta["outputs"], {meta["input"]: batch})))
    results = []
    for i, im in enumerate(images):
        w, h = im.size
        n = int(outputs["num_detections"][i])
        rows = []
        boxes = np.clip(outputs["boxes"][i, :n], 0.0, 1.0)
        for (x1, y1, x2, y2), s, lab in zip(boxes, outputs["scores"][i, :n], outputs["labels"][i, :n]):
            box = [float(x1) * w + 1, float(y1) * h + 1, float(x2) * w, float(y2) * h]  # relative -> VOC pixels
            rows.append({"label": names[int(lab) - 1], "score": float(s), "box": [round(v, 2) for v in box]})
        results.append(rows)
    return results


def open_rgb(path: str) -> Image.Image:
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--conf", type=float, default=0.3, help="print detections with at least this score")
    ap.add_argument("--json", action="store_true", help="print all detections as JSON instead")
    args = ap.parse_args(argv)
    session, meta = load_session(args.model)
    results = detect(session, meta, [open_rgb(p) for p in args.images])
    if args.json:
        print(json.dumps({p: r for p, r in zip(args.images, results)}))
        return 0
    for path, rows in zip(args.images, results):
        shown = [r for r in rows if r["score"] >= args.conf]
        print(f"{path}: {len(shown)} detections >= {args.conf}")
        for r in shown:
            print(f"  {r['label']:<12} {r['score']:.3f}  {r['box']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
