"""Box formats and box coding. A box format is never implicit: every function says what it takes.

Formats used in the project:

* **relative xyxy**: ``(x1, y1, x2, y2)`` as fractions of image width/height, continuous coordinates
  (0 = left edge of the image, 1 = right edge). What the model, matching and post-processing work in.
* **cxcywh**: ``(cx, cy, w, h)``, relative. Priors are in this format.
* **pixel (VOC convention)**: ``(xmin, ymin, xmax, ymax)`` exactly as written in PASCAL VOC XML: 1-based
  inclusive pixel indices, so a box covering a whole ``W x H`` image is ``(1, 1, W, H)`` and its width is
  ``xmax - xmin + 1``. Prepared datasets, ``detect --json``, ``eval --detections`` and
  :class:`ssdcli.Detector` results all use it. Pixel ``i`` covers the continuous span ``[i-1, i]``, so
  conversion to relative is ``((xmin-1)/W, (ymin-1)/H, xmax/W, ymax/H)``.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import box_iou

__all__ = [
    "box_iou",
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "encode",
    "decode",
    "pixel_to_relative",
    "relative_to_pixel",
    "VARIANCES",
]

VARIANCES: tuple[float, float] = (0.1, 0.2)
# Largest log-scale accepted when decoding (as torchvision): keeps exp() finite for untrained models.
_MAX_LOG_SCALE = math.log(1000.0 / 16)
_MIN_SIZE = 1e-6


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def encode(
    boxes_xyxy: torch.Tensor, priors_cxcywh: torch.Tensor, variances: tuple[float, float] = VARIANCES
) -> torch.Tensor:
    """SSD box encoding: relative xyxy ground truth ``[..., P, 4]`` against priors ``[P, 4]`` -> offsets.

    ``((gcx - pcx) / (v0 pw), (gcy - pcy) / (v0 ph), log(gw / pw) / v1, log(gh / ph) / v1)``.
    Degenerate (zero-size) boxes are clamped to a tiny size so the log stays finite.
    """
    g = xyxy_to_cxcywh(boxes_xyxy)
    p = priors_cxcywh
    center = (g[..., :2] - p[..., :2]) / (variances[0] * p[..., 2:])
    size = torch.log(g[..., 2:].clamp(min=_MIN_SIZE) / p[..., 2:]) / variances[1]
    return torch.cat((center, size), dim=-1)


def decode(
    offsets: torch.Tensor, priors_cxcywh: torch.Tensor, variances: tuple[float, float] = VARIANCES
) -> torch.Tensor:
    """Inverse of :func:`encode`: offsets ``[..., P, 4]`` and priors ``[P, 4]`` -> relative xyxy boxes."""
    p = priors_cxcywh
    center = p[..., :2] + offsets[..., :2] * variances[0] * p[..., 2:]
    size = p[..., 2:] * torch.exp((offsets[..., 2:] * variances[1]).clamp(max=_MAX_LOG_SCALE))
    return torch.cat((center - size / 2, center + size / 2), dim=-1)


def pixel_to_relative(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """VOC pixel boxes ``[K,4]`` -> relative continuous xyxy."""
    scale = boxes.new_tensor([width, height, width, height])
    shift = boxes.new_tensor([1.0, 1.0, 0.0, 0.0])
    return (boxes - shift) / scale


def relative_to_pixel(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """Relative continuous xyxy ``[K,4]`` -> VOC pixel boxes (clipped to the image)."""
    scale = boxes.new_tensor([width, height, width, height])
    shift = boxes.new_tensor([1.0, 1.0, 0.0, 0.0])
    out = boxes.clamp(0.0, 1.0) * scale + shift
    return out
