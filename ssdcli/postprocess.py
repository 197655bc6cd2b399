"""SSD post-processing: decode, score threshold, per-class top-k, class-aware NMS, top-k per image.

One ``torchvision.ops.batched_nms`` call for the whole batch (image and class folded into the NMS group id),
no Python loop over images or classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms

from ssdcli.boxes import VARIANCES, decode


@dataclass(frozen=True)
class PostprocessConfig:
    score_threshold: float = 0.01
    nms_threshold: float = 0.45
    top_k: int = 200  # detections kept per image
    pre_nms_top_k: int = 400  # candidates kept per class and image before NMS (Caffe SSD: 400)


@dataclass
class Detections:
    """Detections for one image. ``boxes`` are relative xyxy (or pixels after :meth:`to_pixels`)."""

    boxes: torch.Tensor  # [K,4]
    scores: torch.Tensor  # [K]
    labels: torch.Tensor  # [K] 1-based class index

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def select_detections(
    boxes: torch.Tensor, scores: torch.Tensor, config: PostprocessConfig = PostprocessConfig()
) -> list[Detections]:
    """Shared selection step for any detector with per-class scores.

    Args: ``boxes [N,P,4]`` relative xyxy (class-agnostic), ``scores [N,P,K]`` per foreground class.
    """
    n, p, k = scores.shape
    device = scores.device
    pre = min(config.pre_nms_top_k, p)
    top_scores, top_prior = scores.topk(pre, dim=1)  # [N,pre,K] per class and image
    keep = top_scores > config.score_threshold
    img_idx, rank_idx, cls_idx = keep.nonzero(as_tuple=True)
    prior_idx = top_prior[img_idx, rank_idx, cls_idx]
    cand_scores = top_scores[img_idx, rank_idx, cls_idx]
    cand_boxes = boxes[img_idx, prior_idx]
    group = img_idx * k + cls_idx
    kept = batched_nms(cand_boxes.float(), cand_scores.float(), group, config.nms_threshold)  # sorted by score
    kept_img = img_idx[kept]
    order = torch.sort(kept_img, stable=True).indices  # group by image, keeping score order
    kept = kept[order]
    kept_img = kept_img[order]
    counts = torch.bincount(kept_img, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    pos_in_image = torch.arange(kept.shape[0], device=device) - starts[kept_img]
    sel = pos_in_image < config.top_k
    kept, kept_img = kept[sel], kept_img[sel]
    per_image = torch.bincount(kept_img, minlength=n).tolist()
    out_boxes = cand_boxes[kept].split(per_image)
    out_scores = cand_scores[kept].split(per_image)
    out_labels = (cls_idx[kept] + 1).split(per_image)
    return [Detections(b, s, l) for b, s, l in zip(out_boxes, out_scores, out_labels)]


def postprocess(
    locs: torch.Tensor,
    logits: torch.Tensor,
    priors: torch.Tensor,
    config: PostprocessConfig = PostprocessConfig(),
    variances: tuple[float, float] = VARIANCES,
) -> list[Detections]:
    """SSD raw outputs ``locs [N,P,4]``, ``logits [N,P,C]`` -> per-image :class:`Detections` (relative xyxy)."""
    boxes = decode(locs.float(), priors.to(locs.device), variances)
    scores = torch.softmax(logits.float(), dim=-1)[..., 1:]
    return select_detections(boxes, scores, config)
