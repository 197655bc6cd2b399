"""MultiBox loss: smooth L1 on positives + softmax cross-entropy with hard negative mining.

``box_loss`` other than ``"smooth_l1"`` adds an IoU-aware term on the positives: their predicted offsets and their
targets are decoded against the matched priors into boxes, and torchvision's GIoU / DIoU / CIoU loss between the
two (summed, divided by the number of positives like the other terms, times ``box_loss_weight``) is added to the
smooth L1 term. With ``"smooth_l1"`` (the default) the loss is the paper's, bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

from ssdcli.boxes import VARIANCES, decode

BOX_LOSSES = ("smooth_l1", "giou", "diou", "ciou")
_IOU_LOSS = {"giou": generalized_box_iou_loss, "diou": distance_box_iou_loss, "ciou": complete_box_iou_loss}


def hard_negative_mask(ce: torch.Tensor, positive: torch.Tensor, neg_pos_ratio: float) -> torch.Tensor:
    """Per image, the ``neg_pos_ratio * num_pos`` background priors with the highest loss (``[N,P]`` bool)."""
    num_pos = positive.sum(dim=1, keepdim=True)
    num_neg = torch.clamp(num_pos * neg_pos_ratio, max=positive.shape[1] - num_pos)
    neg_loss = ce.masked_fill(positive, float("-inf"))
    order = neg_loss.argsort(dim=1, descending=True)
    ranks = torch.arange(ce.shape[1], device=ce.device).expand_as(order)
    return torch.zeros_like(positive).scatter_(1, order, ranks < num_neg)  # one sort, no rank-of-rank sort


def multibox_loss(
    locs: torch.Tensor,
    logits: torch.Tensor,
    loc_targets: torch.Tensor,
    cls_targets: torch.Tensor,
    neg_pos_ratio: float = 3.0,
    box_loss: str = "smooth_l1",
    priors: torch.Tensor | None = None,
    variances: tuple[float, float] = VARIANCES,
    box_loss_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD loss, both terms summed over the batch and divided by the number of positives (paper eq. 1).

    Args: ``locs [N,P,4]``, ``logits [N,P,C]``, ``loc_targets [N,P,4]``, ``cls_targets [N,P]`` (0 = background);
    for an IoU ``box_loss`` also the ``priors [P,4]`` (cxcywh) and ``variances`` the targets were encoded with.
    Returns ``(loc_loss, cls_loss)``; with no positives in the batch both are exactly 0 (never NaN).
    """
    positive = cls_targets > 0
    num_pos = positive.sum().clamp(min=1).to(locs.dtype if locs.is_floating_point() else torch.float32)
    pos_locs, pos_targets = locs[positive].float(), loc_targets[positive].float()
    loc_loss = F.smooth_l1_loss(pos_locs, pos_targets, reduction="sum")
    if box_loss != "smooth_l1":
        if box_loss not in _IOU_LOSS:
            raise ValueError(f"box_loss must be one of {', '.join(BOX_LOSSES)}, got {box_loss!r}")
        if priors is None:
            raise ValueError(f"box_loss={box_loss!r} needs the priors")
        pos_priors = priors.float().expand(positive.shape[0], -1, -1)[positive]
        pred, target = decode(pos_locs, pos_priors, variances), decode(pos_targets, pos_priors, variances)
        loc_loss = loc_loss + box_loss_weight * _IOU_LOSS[box_loss](pred, target, reduction="sum")
    n, p, c = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, c).float(), cls_targets.reshape(-1), reduction="none").reshape(n, p)
    with torch.no_grad():
        negative = hard_negative_mask(ce.detach(), positive, neg_pos_ratio)
    cls_loss = torch.where(positive | negative, ce, torch.zeros_like(ce)).sum()
    return loc_loss / num_pos.float(), cls_loss / num_pos.float()
