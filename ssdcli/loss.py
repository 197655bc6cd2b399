"""MultiBox loss: smooth L1 on positives + softmax cross-entropy with hard negative mining."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD loss, both terms summed over the batch and divided by the number of positives (paper eq. 1).

    Args: ``locs [N,P,4]``, ``logits [N,P,C]``, ``loc_targets [N,P,4]``, ``cls_targets [N,P]`` (0 = background).
    Returns ``(loc_loss, cls_loss)``; with no positives in the batch both are exactly 0 (never NaN).
    """
    positive = cls_targets > 0
    num_pos = positive.sum().clamp(min=1).to(locs.dtype if locs.is_floating_point() else torch.float32)
    loc_loss = F.smooth_l1_loss(locs[positive].float(), loc_targets[positive].float(), reduction="sum")
    n, p, c = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, c).float(), cls_targets.reshape(-1), reduction="none").reshape(n, p)
    with torch.no_grad():
        negative = hard_negative_mask(ce.detach(), positive, neg_pos_ratio)
    cls_loss = torch.where(positive | negative, ce, torch.zeros_like(ce)).sum()
    return loc_loss / num_pos.float(), cls_loss / num_pos.float()
