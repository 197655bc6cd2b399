"""Target assignment (matching) for SSD, vectorised over the whole batch.

Rules (SSD paper / classic ports): every ground truth first claims its best-overlapping prior (when several
ground truths claim the same prior, the later one wins, as in the reference loop); then every other prior whose
best IoU with any ground truth is >= ``iou_threshold`` takes that ground truth; all other priors are background
(label 0).
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

from ssdcli.boxes import VARIANCES, cxcywh_to_xyxy, encode


def pad_ground_truth(
    gt_boxes: list[torch.Tensor], gt_labels: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack variable-length per-image boxes ``[K_i,4]``/labels ``[K_i]`` into ``[N,M,4]``, ``[N,M]`` and a mask."""
    n = len(gt_boxes)
    m = max((int(b.shape[0]) for b in gt_boxes), default=0)
    ref = gt_boxes[0] if n else torch.zeros(0, 4)
    boxes = ref.new_zeros((n, m, 4), dtype=torch.float32)
    labels = torch.zeros((n, m), dtype=torch.int64, device=ref.device)
    valid = torch.zeros((n, m), dtype=torch.bool, device=ref.device)
    for i, (b, l) in enumerate(zip(gt_boxes, gt_labels)):  # copies only; no per-box work
        k = int(b.shape[0])
        boxes[i, :k] = b.reshape(-1, 4).float()
        labels[i, :k] = l.reshape(-1).long()
        valid[i, :k] = True
    return boxes, labels, valid


def match_padded(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    priors_xyxy: torch.Tensor,
    iou_threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Core matcher on padded tensors. Returns (matched gt index ``[N,P]``, class targets ``[N,P]``)."""
    n, m = labels.shape
    p = priors_xyxy.shape[0]
    device = priors_xyxy.device
    if m == 0:
        return torch.zeros((n, p), dtype=torch.long, device=device), torch.zeros((n, p), dtype=torch.long, device=device)
    iou = box_iou(boxes.reshape(-1, 4), priors_xyxy).reshape(n, m, p)
    iou = iou.masked_fill(~valid[:, :, None], -1.0)
    best_gt_iou, best_gt_idx = iou.max(dim=1)  # [N,P]
    best_prior_idx = iou.argmax(dim=2)  # [N,M]
    # Forced matches: padded (invalid) ground truths write into a spare column P that is dropped afterwards.
    target_col = torch.where(valid, best_prior_idx, torch.full_like(best_prior_idx, p))
    gt_ids = torch.arange(m, device=device).expand(n, m)
    forced_idx = torch.full((n, p + 1), -1, dtype=torch.long, device=device)
    forced_idx.scatter_reduce_(1, target_col, gt_ids, reduce="amax", include_self=True)
    forced_idx = forced_idx[:, :p]
    forced = forced_idx >= 0
    best_gt_idx = torch.where(forced, forced_idx, best_gt_idx)
    best_gt_iou = torch.where(forced, torch.full_like(best_gt_iou, 2.0), best_gt_iou)
    cls_targets = torch.gather(labels, 1, best_gt_idx)
    cls_targets = torch.where(best_gt_iou >= iou_threshold, cls_targets, torch.zeros_like(cls_targets))
    return best_gt_idx, cls_targets


def assign_targets(
    gt_boxes: list[torch.Tensor],
    gt_labels: list[torch.Tensor],
    priors: torch.Tensor,
    iou_threshold: float = 0.5,
    variances: tuple[float, float] = VARIANCES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match a batch of ground truths to priors.

    Args:
        gt_boxes: per image, relative xyxy boxes ``[K_i, 4]`` (``K_i`` may be 0).
        gt_labels: per image, 1-based class labels ``[K_i]``.
        priors: ``[P, 4]`` cxcywh.
    Returns:
        ``loc_targets [N,P,4]`` (encoded offsets; meaningful only where ``cls_targets > 0``) and
        ``cls_targets [N,P]`` (0 = background).
    """
    boxes, labels, valid = pad_ground_truth(gt_boxes, gt_labels)
    boxes, labels, valid = boxes.to(priors.device), labels.to(priors.device), valid.to(priors.device)
    gt_idx, cls_targets = match_padded(boxes, labels, valid, cxcywh_to_xyxy(priors), iou_threshold)
    n, p = cls_targets.shape
    if boxes.shape[1] == 0:
        return priors.new_zeros((n, p, 4)), cls_targets
    matched = torch.gather(boxes, 1, gt_idx[:, :, None].expand(n, p, 4))
    return encode(matched, priors, variances), cls_targets
