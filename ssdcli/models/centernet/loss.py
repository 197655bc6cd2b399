"""CenterNet loss: penalty-reduced pixel-wise focal loss + L1 size and offset regression at object centres.

``total = focal + size_weight * L1(size) + offset_weight * L1(offset)`` with the paper's weights
``size_weight = 0.1`` (lambda_size) and ``offset_weight = 1`` (lambda_off) ("Objects as Points", Zhou et al.
2019, Sec. 3, Eq. 3; the reference code uses the same defaults, ``--wh_weight 0.1 --off_weight 1``).

Normalisation follows the reference implementation (whose results the weights were tuned with):

* focal term: sum over all pixels and classes of the batch divided by the number of objects of the batch
  (at least 1, so a batch without objects gives the finite negative-only loss);
* L1 terms: sum of absolute errors over objects and both coordinates divided by ``2 * num_objects`` (the mean
  per coordinate; the paper's Eq. 2 writes the sum over both coordinates per object, i.e. twice this value).

Sizes are in output-map cells (stride 4), offsets in cells, as produced by :mod:`.targets`.
"""

from __future__ import annotations

import math

import torch

SIZE_WEIGHT = 0.1
OFFSET_WEIGHT = 1.0
_EPS = 1e-4
_LOGIT_LIMIT = math.log((1 - _EPS) / _EPS)  # clamping logits here == clamping sigmoid to [1e-4, 1 - 1e-4]


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    num_objects: torch.Tensor | float | None = None,
    alpha: float = 2.0,
    beta: float = 4.0,
) -> torch.Tensor:
    """Penalty-reduced pixel-wise focal loss (CornerNet / CenterNet).

    ``logits``/``target`` ``[N, C, H, W]``; positives are the pixels where ``target == 1``::

        p = clamp(sigmoid(logits), 1e-4, 1 - 1e-4)
        loss = -( sum_pos (1-p)^alpha log p + sum_neg (1-target)^beta p^alpha log(1-p) ) / max(num_objects, 1)

    ``num_objects`` defaults to the number of positive pixels. The logs are computed with ``logsigmoid`` of
    the clamped logits (same values as clamping the sigmoid, no log(0)); computed in float32.
    """
    x = logits.float().clamp(-_LOGIT_LIMIT, _LOGIT_LIMIT)
    t = target.float()
    p = torch.sigmoid(x)
    pos = t.eq(1).float()
    log_p = torch.nn.functional.logsigmoid(x)
    log_not_p = torch.nn.functional.logsigmoid(-x)
    pos_term = (1 - p).pow(alpha) * log_p * pos
    neg_term = (1 - t).pow(beta) * p.pow(alpha) * log_not_p * (1 - pos)
    if num_objects is None:
        num_objects = pos.sum()
    denom = torch.as_tensor(num_objects, dtype=torch.float32, device=x.device).clamp(min=1)
    return -(pos_term.sum() + neg_term.sum()) / denom


def gather_at(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of ``maps [N, D, H, W]`` at flat cells ``index [N, K]`` (``y * W + x``) -> ``[N, K, D]``."""
    n, d = maps.shape[:2]
    flat = maps.reshape(n, d, -1)
    return torch.gather(flat, 2, index[:, None, :].expand(n, d, index.shape[1])).permute(0, 2, 1)


def regression_l1(pred: torch.Tensor, index: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked L1 between ``pred [N, D, H, W]`` read at ``index [N, K]`` and ``target [N, K, D]``.

    Sum of ``|pred - target|`` over objects (``mask [N, K]``) and coordinates, divided by ``D * num_objects``
    (at least ``D``); 0 (with a gradient path) when there are no objects.
    """
    got = gather_at(pred.float(), index)
    m = mask.float()[..., None]
    total = ((got - target.float()).abs() * m).sum()
    return total / (m.sum() * got.shape[-1]).clamp(min=got.shape[-1])


def centernet_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    targets: dict[str, torch.Tensor],
    size_weight: float = SIZE_WEIGHT,
    offset_weight: float = OFFSET_WEIGHT,
) -> dict[str, torch.Tensor]:
    """``outputs = (heatmap logits [N,C-1,H,W], size [N,2,H,W], offset [N,2,H,W])``, targets from
    :func:`~ssdcli.models.centernet.targets.encode_centernet_targets` -> ``{"heatmap", "size", "offset", "total"}``
    (unweighted terms plus the weighted total)."""
    heat_logits, size, offset = outputs
    num_objects = targets["mask"].sum()
    heat = focal_loss(heat_logits, targets["heatmap"], num_objects)
    size_l = regression_l1(size, targets["index"], targets["size"], targets["mask"])
    off_l = regression_l1(offset, targets["index"], targets["offset"], targets["mask"])
    total = heat + size_weight * size_l + offset_weight * off_l
    return {"heatmap": heat, "size": size_l, "offset": off_l, "total": total}
