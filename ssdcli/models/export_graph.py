"""The export-graph contract every family implements: a normalised image batch straight to final detections.

Families build their graph (:meth:`ssdcli.models.base.DetectorModel.export_graph`) from the helpers here
(:func:`select_in_graph`: NMS inside the ONNX graph); :mod:`ssdcli.deploy.onnx_export` exports it.

Exported-detections contract (shared by every detector family; CenterNet implements the same outputs)
------------------------------------------------------------------------------------------------------

Input ``images``: float32 (float16 for ``--half`` exports) ``[N, 3, S, S]``, already normalised with the
model's :class:`~ssdcli.preprocess.Preprocess` (stored in the ONNX metadata); ``N`` is dynamic unless exported
with ``--static``.

Outputs, all with a fixed number ``D`` of slots per image (``D = min(top_k, candidates)``, recorded as
``max_detections`` in the metadata), padded at the end:

===================  ===========  =======  ==============================================================
name                 shape        dtype    meaning
===================  ===========  =======  ==============================================================
``num_detections``   ``[N]``      int64    number of valid slots per image (valid slots come first)
``boxes``            ``[N,D,4]``  float32  relative xyxy (0..1 of width/height, continuous), 0 in padding
``scores``           ``[N,D]``    float32  class confidence, sorted descending per image, 0 in padding
``labels``           ``[N,D]``    int64    1-based class index (0 = background), 0 in padding
===================  ===========  =======  ==============================================================

The selection equals :func:`ssdcli.postprocess.select_detections`: per image and foreground class keep the
``pre_nms_top_k`` best priors, drop scores ``<= score_threshold``, class-aware greedy NMS at ``nms_threshold``
(ONNX ``NonMaxSuppression``, one NMS "batch" per (image, class) pair), then the ``top_k`` best per image.
:func:`detections_from_outputs` turns the four arrays back into :class:`~ssdcli.postprocess.Detections`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms

from ssdcli.postprocess import Detections, PostprocessConfig

DETECTION_OUTPUTS: tuple[str, ...] = ("num_detections", "boxes", "scores", "labels")
INPUT_NAME = "images"


class _GroupedNms(torch.autograd.Function):
    """Greedy NMS run independently on each of ``B`` groups; exported as one ONNX ``NonMaxSuppression``.

    ``boxes [B,M,4]`` xyxy, ``scores [B,1,M]`` -> ``selected [S,3]`` int64 rows ``(group, 0, index)``, the
    format of ONNX ``NonMaxSuppression`` (boxes with score ``<= score_threshold`` are never selected).
    """

    @staticmethod
    def forward(
        ctx, boxes: torch.Tensor, scores: torch.Tensor, m: int, iou: float, score_threshold: float
    ) -> torch.Tensor:  # type: ignore[override]
        flat = scores.reshape(-1)
        cand = (flat > score_threshold).nonzero().squeeze(1)
        b = boxes.reshape(-1, 4)[cand].float()
        b = b - torch.cat((b.reshape(-1), b.new_zeros(1))).min()  # >= 0: batched_nms' group offsets stay apart
        kept = cand[batched_nms(b, flat[cand].float(), cand // m, iou)]
        return torch.stack((kept // m, torch.zeros_like(kept), kept % m), dim=1)

    @staticmethod
    def symbolic(g, boxes, scores, m: int, iou: float, score_threshold: float):  # type: ignore[no-untyped-def]
        max_out = g.op("Constant", value_t=torch.tensor([m], dtype=torch.int64))
        iou_t = g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32))
        thr_t = g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32))
        return g.op("NonMaxSuppression", boxes, scores, max_out, iou_t, thr_t, center_point_box_i=0)


def select_in_graph(
    boxes: torch.Tensor, scores: torch.Tensor, config: PostprocessConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Export-friendly :func:`~ssdcli.postprocess.select_detections` (no data-dependent Python control flow).

    ``boxes [N,P,4]`` relative xyxy, ``scores [N,P,K]`` per foreground class -> the four contract outputs.
    """
    p, k = int(scores.shape[1]), int(scores.shape[2])  # static (only the batch axis is dynamic)
    pre = min(config.pre_nms_top_k, p)
    top_s, top_i = scores.float().transpose(1, 2).topk(pre, dim=2)  # [N,K,pre]
    flat_i = top_i.reshape(top_i.shape[0], k * pre, 1).expand(-1, -1, 4)
    cand_boxes = boxes.float().gather(1, flat_i)  # [N,K*pre,4], slot j = class j // pre, rank j % pre
    iou, thr = float(config.nms_iou), float(config.score_threshold)
    selected = _GroupedNms.apply(cand_boxes.reshape(-1, pre, 4), top_s.reshape(-1, 1, pre), pre, iou, thr)
    slot = selected[:, 0] * pre + selected[:, 2]  # (image*K + class)*pre + rank == image*K*pre + class*pre + rank
    flat_s = top_s.reshape(-1)
    kept = torch.zeros_like(flat_s).scatter(0, slot, torch.ones_like(slot, dtype=flat_s.dtype)) > 0
    masked = torch.where(kept, flat_s, torch.full_like(flat_s, -1.0)).reshape(-1, k * pre)
    out_s, out_j = masked.topk(min(config.top_k, k * pre), dim=1)  # [N,D] sorted descending
    valid = out_s >= 0
    out_b = cand_boxes.gather(1, out_j.unsqueeze(-1).expand(-1, -1, 4))
    out_l = torch.div(out_j, pre, rounding_mode="floor") + 1
    zero = torch.zeros_like(out_s)
    return (
        valid.sum(dim=1),
        torch.where(valid.unsqueeze(-1), out_b, zero.unsqueeze(-1)),
        torch.where(valid, out_s, zero),
        torch.where(valid, out_l, torch.zeros_like(out_l)),
    )


class WithRawOutputs(nn.Module):
    """Export helper: ``graph``'s outputs followed by the raw outputs of the detector call inside it.

    Family-neutral: the raw outputs are captured with a forward hook on ``model`` (called once by ``graph``).
    Used to check the in-graph post-processing against the PyTorch one on identical raw outputs.
    """

    def __init__(self, graph: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.graph = graph
        object.__setattr__(self, "_detector", model)  # not a second registered submodule

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        captured: list[tuple[torch.Tensor, ...]] = []
        handle = self._detector.register_forward_hook(lambda _m, _i, out: captured.append(tuple(out)))
        try:
            dets = self.graph(images)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError("the export graph must call the detector exactly once")
        out = tuple(dets) + captured[0]
        self.output_shapes = [tuple(int(d) for d in o.shape) for o in out]  # concrete, also while tracing
        return out


def detections_from_outputs(
    num: np.ndarray | torch.Tensor,
    boxes: np.ndarray | torch.Tensor,
    scores: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    config: PostprocessConfig | None = None,
) -> list[Detections]:
    """Contract outputs -> per-image :class:`Detections`; optionally a stricter ``score_threshold``/``top_k``
    applied on top (exact: greedy NMS never lets a lower-scored box change which higher-scored boxes survive)."""
    num_t, boxes_t, scores_t, labels_t = (torch.as_tensor(a) for a in (num, boxes, scores, labels))
    slots = torch.arange(scores_t.shape[1])
    keep = slots[None, :] < num_t[:, None]
    if config is not None:
        keep &= (scores_t > config.score_threshold) & (slots[None, :] < config.top_k)
    counts = keep.sum(dim=1).tolist()
    per_image = zip(
        boxes_t[keep].float().split(counts), scores_t[keep].float().split(counts), labels_t[keep].long().split(counts)
    )
    return [Detections(b, s, lab) for b, s, lab in per_image]
