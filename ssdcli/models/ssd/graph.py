"""The SSD family's ONNX export graph: forward + decode + softmax + NMS inside the graph."""

from __future__ import annotations

import torch
from torch import nn

from ssdcli.boxes import decode
from ssdcli.models.export_graph import select_in_graph
from ssdcli.postprocess import PostprocessConfig


class SsdExportGraph(nn.Module):
    """SSD forward + decode + softmax + :func:`select_in_graph` (float32 after the network, also for fp16)."""

    def __init__(self, model: nn.Module, config: PostprocessConfig) -> None:
        super().__init__()
        self.model = model
        self.post = config
        self.variances = tuple(model.prior_spec.variances)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        locs, logits = self.model(images)
        boxes = decode(locs.float(), self.model.priors.float(), self.variances)
        scores = torch.softmax(logits.float(), dim=-1)[..., 1:]
        return select_in_graph(boxes, scores, self.post)


def ssd_export_graph(model: nn.Module, config: PostprocessConfig) -> nn.Module:
    """The export module of an SSD model (see the module docstring for its outputs)."""
    return SsdExportGraph(model, config)
