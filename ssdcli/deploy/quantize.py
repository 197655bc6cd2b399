"""INT8 static quantization of an exported model with ONNX Runtime's own tools (``onnxruntime.quantization``).

* Format: QDQ (``QuantizeLinear``/``DequantizeLinear`` pairs that ONNX Runtime's CPU provider fuses into integer
  kernels), weights int8 symmetric per output channel, activations uint8 per tensor (the combination ONNX
  Runtime recommends for x86 CPUs with VNNI; ``reduce_range`` is off).
* Only convolutions (with their ReLU/clip activations and max-pooling, :data:`QUANTIZED_OP_TYPES`) of the
  *network* are quantized: the nodes that the raw outputs (``locs``/``logits`` or the family's) depend on.
  The prediction heads (:func:`head_nodes`, the last convolution before each raw output) stay float: 8-bit
  class logits take few distinct values, so scores tie, and the ranking that NMS, top-k and mAP rest on becomes
  arbitrary among them. Normalisation layers (SSD300's L2Norm), element-wise ops, head reshapes/concats, box
  decoding, score activation, top-k and NMS stay float, as do any nodes named in ``exclude``.
* Activation ranges come from real training images (the ``train`` split of a prepared dataset, nothing else) fed
  through the model's own preprocessing (:class:`CalibrationImages`), with min/max, entropy or percentile
  calibration.
* :func:`int8_agreement` is the parity check for int8 models: detections compared with the float model's with a
  tolerance that fits 8-bit arithmetic (confident detections only; constants below).
"""

from __future__ import annotations

import enum
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torchvision.ops import box_iou

from ssdcli.data.images import read_image, resize_square
from ssdcli.data.records import ImageRecord, load_prepared
from ssdcli.errors import SsdError, first_line
from ssdcli.models.base import ModelConfig
from ssdcli.postprocess import Detections

CALIBRATION_SPLIT = "train"  # activation ranges are never fitted on the images the model is measured on
DEFAULT_CALIB_IMAGES = 64
# Quantized op types: convolutions and what ONNX Runtime fuses into its integer convolution / runs in int8 directly.
# Everything else stays float: measured on SSD300 (raccoon, test mAP@0.5), quantizing every node in front of the
# outputs (also the conv4_3 L2Norm's Pow/ReduceSum/Sqrt/Div/Mul) cost 5.6 points, this set none. (MobileNetV3's
# SSDLite320 loses ~4.6 points either way; see the README.)
QUANTIZED_OP_TYPES = ("Conv", "Relu", "Clip", "MaxPool")

# int8 parity check (int8 model against the float model on the same images)
CONFIDENT_SCORE = 0.3  # detections scoring at least this on either side must have a counterpart
MATCH_IOU = 0.7  # counterpart: same class, box IoU >= this ...
MATCH_SCORE_TOL = 0.15  # ... and score within this (absolute, scores are 0..1)
MIN_AGREEMENT = 0.8  # share of confident detections (both sides) with a counterpart for the export to pass


class CalibMethod(str, enum.Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


_ORT_METHODS = {  # names in onnxruntime.quantization.CalibrationMethod
    CalibMethod.minmax: "MinMax",
    CalibMethod.entropy: "Entropy",
    CalibMethod.percentile: "Percentile",
}


@dataclass
class QuantizeSpec:
    """What ``export_onnx(..., int8=QuantizeSpec(...))`` quantizes with."""

    calib_data: Path
    images: int = DEFAULT_CALIB_IMAGES
    method: CalibMethod = CalibMethod.minmax
    exclude: tuple[str, ...] = ()  # node names kept float in addition to decode/NMS

    def __post_init__(self) -> None:
        self.calib_data = Path(self.calib_data)
        self.method = CalibMethod(self.method)
        if self.images < 1:
            raise SsdError(f"--calib-images {self.images}: must be at least 1")


@dataclass
class QuantizeResult:
    model: onnx.ModelProto
    calibrated_on: list[str]  # record ids fed to the calibrator, in order
    quantized_nodes: int = 0  # network nodes handed to the quantizer
    float_nodes: int = 0  # network nodes (in front of the raw outputs) left float: heads, normalisation, ...
    float_op_types: list[str] = field(default_factory=list)  # their op types, for the report

    def metadata(self, spec: QuantizeSpec) -> dict:
        """The ``quantization`` entry of the model's ssdcli metadata."""
        return {
            "dtype": "int8",
            "format": "QDQ",
            "weights": "int8 symmetric, per output channel",
            "activations": "uint8 asymmetric, per tensor",
            "calibration": {
                "method": spec.method.value,
                "images": len(self.calibrated_on),
                "split": CALIBRATION_SPLIT,
                "dataset": spec.calib_data.name,
            },
            "quantized_op_types": list(QUANTIZED_OP_TYPES),
            "float_parts": "prediction heads (last conv before each output), normalisation and element-wise ops, "
            "box decoding, score activation, top-k, NMS",
            "excluded_nodes": list(spec.exclude),
        }


def calibration_records(data: str | os.PathLike, count: int) -> list[ImageRecord]:
    """``count`` records of the ``train`` split of a prepared dataset, spread evenly over it (deterministic).
    SsdError when the folder is missing or not prepared, has no train split, or the split is empty."""
    root = Path(data)
    if not root.exists():
        raise SsdError(f"{root}: --calib-data: no such folder (give a dataset prepared by `ssd prepare-voc`)")
    ds = load_prepared(root, splits=[CALIBRATION_SPLIT])
    if CALIBRATION_SPLIT not in ds.splits:
        raise SsdError(f"{root}: --calib-data has no '{CALIBRATION_SPLIT}' split to calibrate on")
    records = ds.split(CALIBRATION_SPLIT)
    if not records:
        raise SsdError(f"{root}: --calib-data: the '{CALIBRATION_SPLIT}' split is empty, nothing to calibrate on")
    if count >= len(records):
        return list(records)
    picks = np.linspace(0, len(records) - 1, count).round().astype(int)
    return [records[i] for i in picks]


class CalibrationImages:
    """Feeds images one by one as ``{input_name: [1,3,S,S] float32}``, preprocessed exactly as at inference
    (warp to the model input, then the model's own normalisation). ``read_ids`` records what was fed.

    An ``onnxruntime.quantization.CalibrationDataReader`` by its interface (``get_next``, ``set_range``,
    ``__len__``; ONNX Runtime's class recognises readers by ``get_next``), without importing onnxruntime's
    quantization package (seconds of start-up) for exports that do not quantize."""

    def __init__(self, records: Sequence[ImageRecord], config: ModelConfig, input_name: str) -> None:
        self.records = list(records)
        self.config = config
        self.input_name = input_name
        self.read_ids: list[str] = []
        self._next, self._end = 0, len(self.records)

    def get_next(self) -> dict | None:
        if self._next >= self._end:
            return None
        record = self.records[self._next]
        self._next += 1
        try:
            image = read_image(record.path)
        except SsdError:
            raise
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's data problem
            raise SsdError(f"{record.path}: calibration image unreadable ({first_line(e)})") from None
        x = self.config.preprocess.normalize(resize_square(image, self.config.image_size)[None])
        self.read_ids.append(record.id)
        return {self.input_name: x.numpy()}

    def __len__(self) -> int:
        return len(self.records)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Feed records ``start_index:end_index`` next (ONNX Runtime calibrates chunk by chunk)."""
        self._next, self._end = start_index, min(end_index, len(self.records))


def _chunk(n: int, most: int = 8) -> int:
    """Largest divisor of ``n`` up to ``most``: calibration runs in chunks of this many images, so that histogram
    calibration (entropy, percentile) never holds more than a few images' activations in memory."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


def _walk_back(model: onnx.ModelProto, outputs: Iterable[str], stop_at: str | None = None) -> tuple[set[str], set[str]]:
    """Nodes reached from ``outputs`` backwards, and those of them of op type ``stop_at`` (not walked past)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    seen: set[str] = set()
    stopped: set[str] = set()
    stack = list(outputs)
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == stop_at:
            stopped.add(node.name)
        else:
            stack.extend(node.input)
    return seen, stopped


def network_nodes(model: onnx.ModelProto, outputs: Iterable[str]) -> set[str]:
    """Names of the nodes that ``outputs`` depend on (the network in front of decode/NMS)."""
    return _walk_back(model, outputs)[0]


def head_nodes(model: onnx.ModelProto, outputs: Iterable[str]) -> set[str]:
    """Names of the prediction heads: the last convolutions before ``outputs`` (reached from them backwards
    without crossing another convolution)."""
    return _walk_back(model, outputs, stop_at="Conv")[1]


def quantize_model(
    model: onnx.ModelProto,
    raw_outputs: Sequence[str],
    reader: CalibrationImages,
    method: CalibMethod = CalibMethod.minmax,
    exclude: Sequence[str] = (),
    op_types: Sequence[str] | None = QUANTIZED_OP_TYPES,
    float_heads: bool = True,
) -> QuantizeResult:
    """Static QDQ quantization of the ``op_types`` nodes (``None``: every node) in front of ``raw_outputs`` (which
    must be graph outputs of ``model``), the prediction heads left float unless ``float_heads`` is off (both
    settings exist to measure what the float parts cost); returns the quantized model (metadata not yet set) and
    what was kept float."""
    # imported here: onnxruntime.quantization takes seconds to import, and only int8 exports need it
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    names = {o.name for o in model.graph.output}
    missing = [o for o in raw_outputs if o not in names]
    if missing:
        raise ValueError(f"quantize_model: {missing} are not outputs of the graph")
    with tempfile.TemporaryDirectory(prefix="ssd-int8-") as tmp:
        src, pre, out = Path(tmp, "float.onnx"), Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        onnx.save(model, src)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # shape inference + ONNX Runtime's basic graph optimisations (e.g. folding leftover constants)
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            prepared = onnx.load(pre)
            network = network_nodes(prepared, raw_outputs)
            unknown = sorted(set(exclude) - {n.name for n in prepared.graph.node})
            if unknown:
                raise SsdError(f"int8 exclude {','.join(unknown)}: no such node in the exported graph")
            targets = {n.name for n in prepared.graph.node if n.name in network and (
                op_types is None or n.op_type in op_types)}
            targets -= set(exclude) | (head_nodes(prepared, raw_outputs) if float_heads else set())
            try:
                quantize_static(
                    str(pre),
                    str(out),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    reduce_range=False,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_quantize=sorted(targets),
                    calibrate_method=getattr(CalibrationMethod, _ORT_METHODS[CalibMethod(method)]),
                    extra_options={"CalibStridedMinMax": _chunk(len(reader))},
                )
            except SsdError:
                raise
            except Exception as e:  # noqa: BLE001 - onnxruntime raises many types
                raise SsdError(f"int8 quantization failed: {type(e).__name__}: {first_line(e)}") from None
        quantized = onnx.load(out)
    kept = [n for n in prepared.graph.node if n.name in network and n.name not in targets and n.op_type != "Constant"]
    read = list(reader.read_ids)
    return QuantizeResult(quantized, read, len(targets), len(kept), sorted({n.op_type for n in kept}))


@dataclass
class Int8Agreement:
    """Confident detections (score >= :data:`CONFIDENT_SCORE`) of either model with a counterpart in the other
    (same class, IoU >= :data:`MATCH_IOU`, score within :data:`MATCH_SCORE_TOL`)."""

    images: int = 0
    confident: int = 0  # confident detections, float and int8 together
    matched: int = 0
    min_iou: float = 1.0  # over matched pairs: the worst box IoU ...
    max_score_diff: float = 0.0  # ... and the largest score difference

    @property
    def ratio(self) -> float:
        return self.matched / self.confident if self.confident else 1.0

    @property
    def ok(self) -> bool:
        return self.ratio >= MIN_AGREEMENT

    def summary(self) -> str:
        if not self.confident:
            return f"{self.images} images, no detections scoring >= {CONFIDENT_SCORE:g} on either side"
        return (
            f"{self.matched}/{self.confident} confident detections matched on {self.images} images "
            f"({100 * self.ratio:.0f}%, need {100 * MIN_AGREEMENT:.0f}%; IoU >= {MATCH_IOU:g}, score within "
            f"{MATCH_SCORE_TOL:g}); worst matched IoU {self.min_iou:.3f}, largest score diff {self.max_score_diff:.3f}"
        )


def _one_way(a: Detections, b: Detections) -> tuple[int, int, float, float]:
    """Confident detections of ``a``, how many have a counterpart in ``b``, worst IoU and score diff of those."""
    keep = a.scores.float() >= CONFIDENT_SCORE
    if not bool(keep.any()):
        return 0, 0, 1.0, 0.0
    boxes, scores, labels = a.boxes.float()[keep], a.scores.float()[keep], a.labels[keep]
    if len(b) == 0:
        return int(keep.sum()), 0, 1.0, 0.0
    iou = box_iou(boxes, b.boxes.float())
    ds = (scores[:, None] - b.scores.float()[None, :]).abs()
    ok = (labels[:, None] == b.labels[None, :]) & (iou >= MATCH_IOU) & (ds <= MATCH_SCORE_TOL)
    has = ok.any(1)
    if not bool(has.any()):
        return int(keep.sum()), 0, 1.0, 0.0
    best_iou = torch.where(ok, iou, torch.zeros_like(iou)).amax(1)[has]
    best_ds = torch.where(ok, ds, torch.full_like(ds, 2.0)).amin(1)[has]
    return int(keep.sum()), int(has.sum()), float(best_iou.min()), float(best_ds.max())


def int8_agreement(reference: Sequence[Detections], int8: Sequence[Detections]) -> Int8Agreement:
    """Agreement of int8 detections with the float model's (per-image lists, relative xyxy), checked both ways."""
    out = Int8Agreement(images=len(reference))
    for ref, got in zip(reference, int8):
        for a, b in ((ref, got), (got, ref)):
            a = Detections(a.boxes.cpu(), a.scores.cpu(), a.labels.cpu())
            b = Detections(b.boxes.cpu(), b.scores.cpu(), b.labels.cpu())
            n, m, iou, ds = _one_way(a, b)
            out.confident += n
            out.matched += m
            if m:
                out.min_iou = min(out.min_iou, iou)
                out.max_score_diff = max(out.max_score_diff, ds)
    return out
