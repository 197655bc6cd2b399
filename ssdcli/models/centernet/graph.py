"""ONNX export graph of CenterNet: forward + 3x3 max-pool peak extraction + top-k inside the graph.

Outputs follow the exported-detections contract of :mod:`ssdcli.models.export_graph` (``num_detections [N]`` int64,
``boxes [N,D,4]`` relative xyxy float32, ``scores [N,D]`` float32 sorted descending, ``labels [N,D]`` int64
1-based; padding slots at the end hold 0) with ``D = min(max_peaks, top_k, C*H*W)``. A slot is valid when its
peak scores above ``score_threshold``. No NMS: the max-pool replaces it, as in :func:`.decode.decode`.
"""

from __future__ import annotations

import torch
from torch import nn

from ssdcli.models.centernet.decode import MAX_PEAKS, decode_fixed
from ssdcli.postprocess import PostprocessConfig


class CenterNetExportGraph(nn.Module):
    """``images [N,3,S,S]`` -> ``(num_detections, boxes, scores, labels)``; ``with_raw`` appends the raw
    ``(heatmap, size, offset)`` outputs."""

    def __init__(
        self, model: nn.Module, config: PostprocessConfig, max_peaks: int = MAX_PEAKS, with_raw: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.post = config
        self.k = max(1, min(int(max_peaks), int(config.top_k)))
        self.with_raw = with_raw

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(images)
        boxes, scores, labels = decode_fixed(outputs, self.k)
        valid = scores > self.post.score_threshold
        zero = torch.zeros_like(scores)
        dets = (
            valid.sum(dim=1),
            torch.where(valid.unsqueeze(-1), boxes, zero.unsqueeze(-1)),
            torch.where(valid, scores, zero),
            torch.where(valid, labels, torch.zeros_like(labels)),
        )
        return dets + tuple(outputs) if self.with_raw else dets
