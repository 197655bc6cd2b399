"""CenterNet decoding: 3x3 max-pool peak extraction (instead of NMS), top-k peaks over all classes, boxes.

:func:`decode_fixed` is traceable with fixed output shapes (used by the ONNX export graph too); :func:`decode`
turns its result into per-image :class:`~ssdcli.postprocess.Detections` with the score threshold applied.

Box from a peak at integer cell ``(x, y)``: centre ``(x + off_x, y + off_y)``, box centre +- size / 2, all in
output-map cells, divided by the map size -> relative xyxy clipped to ``[0, 1]``. Labels are 1-based.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssdcli.models.centernet.loss import gather_at
from ssdcli.postprocess import Detections, PostprocessConfig

MAX_PEAKS = 100


def _tracing() -> bool:
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
                or torch.compiler.is_exporting())


def max_filter(x: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """``kernel x kernel`` max-pool, stride 1, same size (``F.max_pool2d`` semantics, -inf padding).

    Eager CPU tensors use a separable max over shifted slices (exactly equal, ~20x faster than the NCHW CPU
    max-pool kernel on [16, 20, 96, 96]); GPU tensors and exported/traced graphs use ``max_pool2d`` (ONNX MaxPool).
    """
    pad = (kernel - 1) // 2
    if x.device.type != "cpu" or _tracing():
        return F.max_pool2d(x, kernel, stride=1, padding=pad)
    h, w = x.shape[-2:]
    p = F.pad(x, (pad, pad, pad, pad), value=float("-inf"))
    rows = p[..., :, 0:w]
    for i in range(1, kernel):
        rows = torch.maximum(rows, p[..., :, i : i + w])
    out = rows[..., 0:h, :]
    for i in range(1, kernel):
        out = torch.maximum(out, rows[..., i : i + h, :])
    return out


def peak_logits(heat_logits: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Heatmap logits ``[N, C, H, W]`` (as float32) with every pixel that is not the maximum of its
    ``kernel x kernel`` neighbourhood set to ``-inf`` (ties all survive, as in the reference implementation).

    Peaks are found on the logits, not on the sigmoid: the sigmoid is monotonic, so the peaks are the same, but
    max-pool and equality on identical logits are exact in every engine (an ONNX Runtime graph and PyTorch agree
    bit for bit on which cells are peaks), while two engines' sigmoids may round neighbouring values differently.
    """
    x = heat_logits.float()
    return torch.where(max_filter(x, kernel) == x, x, torch.full_like(x, float("-inf")))


def decode_fixed(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], k: int = MAX_PEAKS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw outputs -> the ``k`` best peaks over all classes of each image (sorted by score, descending).

    Returns ``boxes [N, k', 4]`` relative xyxy, ``scores [N, k']`` float32, ``labels [N, k']`` int64 1-based,
    ``k' = min(k, C * H * W)``. No thresholding, no data-dependent shapes.
    """
    heat_logits, size, offset = outputs
    n, c, h, w = heat_logits.shape
    peaks = peak_logits(heat_logits).reshape(n, c * h * w)
    top_logits, flat = peaks.topk(min(k, c * h * w), dim=1)
    scores = torch.sigmoid(top_logits)  # 0 for the -inf filler when an image has fewer than k peaks
    cls = torch.div(flat, h * w, rounding_mode="floor")
    cell = flat - cls * (h * w)
    ys = torch.div(cell, w, rounding_mode="floor")
    xs = cell - ys * w
    off = gather_at(offset.float(), cell)  # [N, k, 2]
    wh = gather_at(size.float(), cell).clamp(min=0)
    cx = xs.to(torch.float32) + off[..., 0]
    cy = ys.to(torch.float32) + off[..., 1]
    half_w, half_h = wh[..., 0] / 2, wh[..., 1] / 2
    boxes = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)
    scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
    boxes = (boxes / scale).clamp(0, 1)
    return boxes, scores, cls + 1


def decode(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: PostprocessConfig = PostprocessConfig(),
    max_peaks: int = MAX_PEAKS,
) -> list[Detections]:
    """Raw outputs -> per-image detections (relative xyxy, scores, 1-based labels), sorted by score.

    At most ``min(max_peaks, config.top_k)`` peaks per image; peaks scoring ``<= config.score_threshold`` are
    dropped. ``config.nms_threshold``/``pre_nms_top_k`` are unused (max-pool peak extraction replaces NMS).
    """
    boxes, scores, labels = decode_fixed(outputs, min(max_peaks, config.top_k))
    keep = scores > config.score_threshold  # a prefix of each row: scores are sorted
    counts = keep.sum(dim=1).tolist()
    return [
        Detections(b, s, l)
        for b, s, l in zip(boxes[keep].split(counts), scores[keep].split(counts), labels[keep].split(counts))
    ]


def merge_flip(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    flipped: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flip test: combine the outputs for a batch and for its horizontally flipped copy.

    Heatmap probabilities and sizes are averaged (the flipped maps mirrored back); the offset is taken from the
    unflipped pass (as the reference implementation). The heatmap is returned as logits so :func:`decode`
    applies unchanged.
    """
    heat = (torch.sigmoid(outputs[0].float()) + torch.sigmoid(flipped[0].float().flip(-1))) / 2
    heat_logits = torch.logit(heat, eps=1e-6)
    size = (outputs[1].float() + flipped[1].float().flip(-1)) / 2
    return heat_logits, size, outputs[2].float()
