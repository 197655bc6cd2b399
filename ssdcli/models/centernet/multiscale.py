"""Multi-scale testing of CenterNet ("Objects as Points", sec. 5: "for multi-scale, we use NMS to merge results").

The normalised batch at the model input size ``S`` is resized (bilinear, antialiased when shrinking) to
``round(S * scale / 32) * 32`` pixels for every scale, decoded there (max-pool peaks, up to ``max_peaks`` per
image and scale, score threshold applied), and the detections of all scales, in relative coordinates, are
concatenated and merged by class-aware NMS (``torchvision.ops.batched_nms`` at ``config.nms_threshold``), keeping
the ``config.top_k`` best. A single scale is never NMS-ed (peak extraction replaces NMS, as in the paper).

Difference from the reference code: it resizes the original image for every scale; here the batch already warped
to ``S`` is resized, so scales above 1 up-sample an ``S``-pixel image (no detail beyond it is recovered).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from ssdcli.models.centernet.decode import decode
from ssdcli.postprocess import Detections, PostprocessConfig

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
STRIDE = 32


def scaled_size(size: int, scale: float) -> int:
    """Input size for ``scale``: ``size * scale`` rounded to a multiple of 32 (at least 32)."""
    return max(STRIDE, round(size * scale / STRIDE) * STRIDE)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrink = size < images.shape[-1]
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def merge_scales(per_scale: list[list[Detections]], config: PostprocessConfig) -> list[Detections]:
    """Per scale, per image detections (relative xyxy) -> per image: concatenated, class-aware NMS, top-k."""
    merged = []
    for dets in zip(*per_scale):
        boxes = torch.cat([d.boxes for d in dets])
        scores = torch.cat([d.scores for d in dets])
        labels = torch.cat([d.labels for d in dets])
        keep = batched_nms(boxes, scores, labels, config.nms_iou)[: config.top_k]  # sorted by score
        merged.append(Detections(boxes[keep], scores[keep], labels[keep]))
    return merged


def detect_multi_scale(
    forward: Callable[[torch.Tensor], Outputs],
    images: torch.Tensor,
    scales: tuple[float, ...],
    config: PostprocessConfig,
    max_peaks: int,
) -> list[Detections]:
    """Run ``forward`` (raw CenterNet outputs for a batch of any size divisible by 32) at every scale and merge."""
    size = int(images.shape[-1])
    per_scale = [
        decode(tuple(o.float() for o in forward(resize_batch(images, scaled_size(size, s)))), config, max_peaks)
        for s in scales
    ]
    if len(per_scale) == 1:
        return per_scale[0]
    return merge_scales(per_scale, config)
