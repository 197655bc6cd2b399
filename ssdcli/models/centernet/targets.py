"""CenterNet training targets ("Objects as Points", Zhou et al. 2019), vectorised over the whole batch.

For every ground-truth box (relative xyxy, 1-based label) on an output map of ``H x W`` cells (input / 4):

* the centre ``c = ((x1 + x2) / 2, (y1 + y2) / 2)`` in cells, its integer cell ``floor(c)`` and the sub-pixel
  offset ``c - floor(c)`` (in ``[0, 1)``);
* the size ``(x2 - x1, y2 - y1)`` **in output-map cells** (not relative units);
* a Gaussian ``exp(-(dx^2 + dy^2) / (2 sigma^2))``, ``sigma = (2r + 1) / 6``, drawn on the heatmap channel of its
  class around the integer centre inside the square window ``|dx|, |dy| <= r``; where Gaussians of the same class
  overlap the element-wise **maximum** is kept (never the sum). The value at the integer centre is exactly 1.
  ``r = floor(gaussian_radius(w, h))`` (CornerNet rule, see :func:`gaussian_radius`).

Size and offset are regressed only at the centre cells: the targets keep them per object (padded ``[N, K, 2]``
with the flat centre cell index ``[N, K]`` and a ``[N, K]`` mask), so two objects sharing a centre cell both count.
"""

from __future__ import annotations

import torch

from ssdcli.errors import SsdError
from ssdcli.matching import pad_ground_truth

# Objects drawn at once: bounds the [objects, H, W] Gaussian buffer (256 x 128 x 128 floats = 16 MiB).
_DRAW_CHUNK = 256


def gaussian_radius(
    width: torch.Tensor, height: torch.Tensor, min_overlap: float = 0.7, exact: bool = False
) -> torch.Tensor:
    """CornerNet radius rule: how far the box corners may move while the box keeps IoU >= ``min_overlap``.

    ``width``/``height`` (any shape, same units as the result, here output-map cells). Three cases, each a
    quadratic ``a r^2 + b r + c = 0`` (o = ``min_overlap``):

    1. one corner inside, one outside (box shifted by r):  ``r^2 - (h+w) r + wh(1-o)/(1+o) = 0``
    2. both corners inside (box shrunk by r on every side): ``4 r^2 - 2(h+w) r + (1-o) wh = 0``
    3. both corners outside (box grown by r on every side): ``4o r^2 + 2o(h+w) r + (o-1) wh = 0``

    ``exact=False`` (default) reproduces the reference CenterNet/CornerNet code, whose solutions are
    ``(b' + sqrt(b'^2 - 4ac)) / 2`` (no division by ``2a``, larger root in cases 1/2): these wider Gaussians
    are what the paper's results were obtained with. ``exact=True`` solves the quadratics correctly (smallest
    positive root), giving radii about 3x smaller. The minimum over the three cases is returned (not floored).
    """
    w = width.float()
    h = height.float()
    o = min_overlap
    b1 = h + w
    c1 = w * h * (1 - o) / (1 + o)
    sq1 = torch.sqrt((b1 * b1 - 4 * c1).clamp(min=0))
    b2 = 2 * (h + w)
    c2 = (1 - o) * w * h
    sq2 = torch.sqrt((b2 * b2 - 16 * c2).clamp(min=0))
    a3 = 4 * o
    b3 = -2 * o * (h + w)
    c3 = (o - 1) * w * h
    sq3 = torch.sqrt((b3 * b3 - 4 * a3 * c3).clamp(min=0))
    if exact:
        r1 = (b1 - sq1) / 2
        r2 = (b2 - sq2) / 8
        r3 = (b3 + sq3) / (2 * a3)
    else:
        r1 = (b1 + sq1) / 2
        r2 = (b2 + sq2) / 2
        r3 = (b3 + sq3) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def draw_gaussians(
    centers: torch.Tensor, radii: torch.Tensor, channels: torch.Tensor, num_maps: int, height: int, width: int
) -> torch.Tensor:
    """Draw one Gaussian per object and combine them with element-wise max.

    Args:
        centers: ``[M, 2]`` integer cell ``(x, y)`` of each object (long), inside the map.
        radii: ``[M]`` integer radii (long, >= 0); ``sigma = (2r + 1) / 6``, window ``|dx|, |dy| <= r``.
        channels: ``[M]`` index of the map each object is drawn on (e.g. ``image * num_classes + class``).
    Returns:
        ``[num_maps, height, width]`` float32, exactly 1 at every centre, 0 outside all windows.
    """
    device = centers.device
    heat = torch.zeros((num_maps, height * width), dtype=torch.float32, device=device)
    xs = torch.arange(width, device=device, dtype=torch.float32)
    ys = torch.arange(height, device=device, dtype=torch.float32)
    for start in range(0, int(centers.shape[0]), _DRAW_CHUNK):  # chunks of objects, bounded memory
        c = centers[start : start + _DRAW_CHUNK].float()
        r = radii[start : start + _DRAW_CHUNK].float()[:, None]
        two_sigma_sq = 2 * ((2 * r + 1) / 6) ** 2
        dx = xs[None, :] - c[:, 0:1]  # [m, W]
        dy = ys[None, :] - c[:, 1:2]  # [m, H]
        gx = torch.exp(-dx * dx / two_sigma_sq) * (dx.abs() <= r)
        gy = torch.exp(-dy * dy / two_sigma_sq) * (dy.abs() <= r)
        g = (gy[:, :, None] * gx[:, None, :]).reshape(c.shape[0], -1)  # separable: exp(a)exp(b) = exp(a+b)
        index = channels[start : start + _DRAW_CHUNK, None].expand_as(g)
        heat.scatter_reduce_(0, index, g, reduce="amax", include_self=True)
    return heat.reshape(num_maps, height, width)


def encode_centernet_targets(
    gt_boxes: list[torch.Tensor],
    gt_labels: list[torch.Tensor],
    num_foreground: int,
    out_size: tuple[int, int],
    min_overlap: float = 0.7,
    exact_radius: bool = False,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image relative xyxy boxes ``[K_i, 4]`` and 1-based labels ``[K_i]`` -> CenterNet targets.

    ``out_size = (H, W)`` of the output map. Returns (``K = max K_i``, padded entries have ``mask == 0``)::

        heatmap [N, C-1, H, W] float32   Gaussian peaks per foreground class
        index   [N, K] int64            flat centre cell ``y * W + x``
        size    [N, K, 2] float32       (w, h) in output cells
        offset  [N, K, 2] float32       centre - integer centre, in cells
        mask    [N, K] float32          1 for real objects (boxes with positive width and height)
    """
    boxes, labels, valid = pad_ground_truth(gt_boxes, gt_labels)
    if device is not None:
        boxes, labels, valid = boxes.to(device), labels.to(device), valid.to(device)
    n, k = labels.shape
    out_h, out_w = out_size
    if k and bool(((labels < 1) | (labels > num_foreground))[valid].any()):
        bad = int(labels[valid & ((labels < 1) | (labels > num_foreground))][0])
        raise SsdError(f"label {bad} is out of range for a model with {num_foreground} foreground classes")
    scale = torch.tensor([out_w, out_h, out_w, out_h], dtype=torch.float32, device=boxes.device)
    cells = boxes * scale
    size = cells[..., 2:] - cells[..., :2]
    valid = valid & (size > 0).all(dim=-1)
    center = (cells[..., :2] + cells[..., 2:]) / 2
    limit = torch.tensor([out_w - 1, out_h - 1], device=boxes.device)
    center_int = torch.minimum(center.floor().long().clamp(min=0), limit)
    offset = center - center_int
    index = center_int[..., 1] * out_w + center_int[..., 0]

    radius = gaussian_radius(size[..., 0], size[..., 1], min_overlap, exact_radius).floor().long().clamp(min=0)
    img = torch.arange(n, device=boxes.device)[:, None].expand(n, k)
    channel = img * num_foreground + (labels - 1).clamp(min=0)
    heat = draw_gaussians(center_int[valid], radius[valid], channel[valid], n * num_foreground, out_h, out_w)
    mask = valid.float()
    return {
        "heatmap": heat.reshape(n, num_foreground, out_h, out_w),
        "index": torch.where(valid, index, torch.zeros_like(index)),
        "size": size * mask[..., None],
        "offset": offset * mask[..., None],
        "mask": mask,
    }
