"""Target assignment (matching) for SSD, vectorised over the whole batch.

Rules (SSD paper / classic ports): every ground truth first claims its best-overlapping prior (the first such
prior in prior order; when several ground truths claim the same prior, the later one wins, as in the reference
loop); then every other prior whose best IoU with any ground truth of its image is >= ``iou_threshold`` takes
that ground truth (the first one on ties); all other priors are background (label 0). Results are identical to
the classic per-image ``match()`` (same IoU arithmetic, same tie-breaking).

How: SSD priors form, per feature map and box shape, a grid of rows x columns, and a prior's x extent depends
only on its column and its y extent only on its row. Overlap extents are therefore computed per (ground truth,
row) and (ground truth, column), ``[G, rows]`` and ``[G, columns]`` (372 of each for SSD300), instead of per
(ground truth, prior); the best prior of a ground truth follows from per-group maxima, and only the few (ground
truth, prior) pairs that can reach the threshold (or tie for the best prior) are enumerated and get their exact
IoU. Priors without that structure fall back to one group per prior, i.e. a dense ``[G, P]`` computation
through the same code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ssdcli.boxes import VARIANCES, cxcywh_to_xyxy, encode
from ssdcli.errors import SsdError
from ssdcli.priors import PriorSpec, named_prior_specs

# Relative slack of the candidate filters: float32 rounding differences between the factored and the exact
# IoU are ~1e-7, so a 1e-4 margin never drops a pair that the exact test would keep.
_SLACK = 1e-4


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


@dataclass
class PriorGrid:
    """Priors as ``R`` groups of rows x columns: prior ``base[r] + i * row_stride[r] + j * col_stride[r]`` spans
    column interval ``j`` x row interval ``i`` of group ``r``. Row and column intervals are stored flat, sorted by
    group (``row_group``/``row_pos``, ``col_group``/``col_pos``)."""

    rows: torch.Tensor  # [Lr,2] (y1, y2)
    row_group: torch.Tensor  # [Lr] int64
    row_pos: torch.Tensor  # [Lr] int64 (i)
    cols: torch.Tensor  # [Lc,2] (x1, x2)
    col_group: torch.Tensor  # [Lc]
    col_pos: torch.Tensor  # [Lc] (j)
    base: torch.Tensor  # [R] int64
    row_stride: torch.Tensor  # [R]
    col_stride: torch.Tensor  # [R]
    area: torch.Tensor  # [P] prior areas, as box_iou computes them
    group_area: torch.Tensor  # [R] area of each group's first prior (equal to the others up to rounding)

    @property
    def num_groups(self) -> int:
        return int(self.base.shape[0])


@dataclass(frozen=True)
class _Layout:
    """Index arrays of a grouping (CPU): per group base/strides/size, and each prior's row and column entry."""

    base: torch.Tensor
    row_stride: torch.Tensor
    col_stride: torch.Tensor
    size: torch.Tensor  # [R] rows (= columns) per group
    prior_row: torch.Tensor  # [P] flat row entry of each prior
    prior_col: torch.Tensor  # [P] flat column entry of each prior


@functools.lru_cache(maxsize=8)
def _spec_layout(spec: PriorSpec) -> _Layout:
    """(feature map, shape) groups of ``spec``, in the generation order of :mod:`ssdcli.priors`."""
    base, rs, cs, size, prior_row, prior_col = [], [], [], [], [], []
    offset, entries = 0, 0
    for f, shapes in zip(spec.feature_maps, spec.priors_per_location()):
        i = torch.arange(f).repeat_interleave(f * shapes)  # priors of the level in order: (i, j, a)
        j = torch.arange(f).repeat_interleave(shapes).repeat(f)
        a = torch.arange(shapes).repeat(f * f)
        group_entry = entries + a * f  # first flat entry of group (level, a)
        prior_row.append(group_entry + i)
        prior_col.append(group_entry + j)
        for s in range(shapes):
            base.append(offset + s)
            rs.append(f * shapes)
            cs.append(shapes)
            size.append(f)
        offset += f * f * shapes
        entries += shapes * f
    t = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return _Layout(t(base), t(rs), t(cs), t(size), torch.cat(prior_row), torch.cat(prior_col))


def _single_layout(p: int) -> _Layout:
    """One group per prior (any priors factor this way): the dense fallback."""
    ar = torch.arange(p)
    zero = torch.zeros(p, dtype=torch.long)
    return _Layout(ar, zero, zero, torch.ones(p, dtype=torch.long), ar, ar)


def _grid_from_layout(priors_xyxy: torch.Tensor, layout: _Layout) -> PriorGrid | None:
    """The grid view of ``priors_xyxy`` for ``layout``, or None if the priors do not factor that way."""
    dev = priors_xyxy.device
    lay = _Layout(*(getattr(layout, f).to(dev) for f in _Layout.__dataclass_fields__))
    group = torch.repeat_interleave(torch.arange(lay.base.shape[0], device=dev), lay.size)
    pos = torch.arange(group.shape[0], device=dev) - (lay.size.cumsum(0) - lay.size)[group]
    rows = priors_xyxy[lay.base[group] + pos * lay.row_stride[group]][:, [1, 3]]  # read in column 0
    cols = priors_xyxy[lay.base[group] + pos * lay.col_stride[group]][:, [0, 2]]  # read in row 0
    c, r = cols[lay.prior_col], rows[lay.prior_row]
    rebuilt = torch.stack((c[:, 0], r[:, 0], c[:, 1], r[:, 1]), dim=1)
    if not torch.equal(rebuilt, priors_xyxy):
        return None
    area = (priors_xyxy[:, 2] - priors_xyxy[:, 0]) * (priors_xyxy[:, 3] - priors_xyxy[:, 1])
    prior_group = group[lay.prior_row]
    lo = area.new_full(lay.base.shape, float("inf")).scatter_reduce(0, prior_group, area, "amin")
    hi = area.new_zeros(lay.base.shape).scatter_reduce(0, prior_group, area, "amax")
    if not bool((hi - lo <= 0.1 * _SLACK * hi).all()):  # one box size per group (up to rounding) is assumed
        return None
    return PriorGrid(rows, group, pos, cols, group, pos, lay.base, lay.row_stride, lay.col_stride, area, area[lay.base])


_GRID_CACHE: dict[tuple, tuple[torch.Tensor, PriorGrid]] = {}


def prior_grid(priors: torch.Tensor, prior_spec: PriorSpec | None = None) -> PriorGrid:
    """Grid view of ``priors [P,4]`` (cxcywh): from ``prior_spec``, else from a spec registered with
    :func:`ssdcli.priors.register_prior_spec` that generates
    exactly these priors, else one group per prior (always valid). Cached (the cache compares the priors)."""
    key = (prior_spec, priors.shape[0], priors.dtype, priors.device)
    hit = _GRID_CACHE.get(key)
    if hit is not None and torch.equal(hit[0], priors):
        return hit[1]
    p = priors.shape[0]
    xyxy = cxcywh_to_xyxy(priors)
    specs = [prior_spec] if prior_spec is not None else list(dict.fromkeys(named_prior_specs().values()))
    grid = None
    for spec in specs:
        if spec.num_priors() == p:
            grid = _grid_from_layout(xyxy, _spec_layout(spec))
            if grid is not None:
                break
    if grid is None:
        grid = _grid_from_layout(xyxy, _single_layout(p))
        assert grid is not None
    if len(_GRID_CACHE) >= 8:
        _GRID_CACHE.clear()
    _GRID_CACHE[key] = (priors.detach().clone(), grid)
    return grid


def _pairs(rows_m: torch.Tensor, cols_m: torch.Tensor, grid: PriorGrid) -> tuple[torch.Tensor, ...]:
    """All (g, row entry, column entry) of the same group with ``rows_m[g, row]`` and ``cols_m[g, col]`` (a ragged
    Cartesian product per (ground truth, group)); sorted by ground truth."""
    r_total = grid.num_groups
    rg, rl = rows_m.nonzero(as_tuple=True)  # sorted by (g, row entry) hence by (g, group)
    cg, cl = cols_m.nonzero(as_tuple=True)
    n_cols = torch.bincount(cg * r_total + grid.col_group[cl], minlength=rows_m.shape[0] * r_total)
    col_start = n_cols.cumsum(0) - n_cols
    key = rg * r_total + grid.row_group[rl]
    reps = n_cols[key]
    row_of = torch.repeat_interleave(torch.arange(key.shape[0], device=key.device), reps)
    within = torch.arange(row_of.shape[0], device=key.device) - (reps.cumsum(0) - reps)[row_of]
    return rg[row_of], rl[row_of], cl[col_start[key[row_of]] + within]


def _exact_iou(g, rl, cl, ix, iy, area_g, grid: PriorGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Prior index and IoU of pairs, with exactly the arithmetic of ``box_iou`` / the classic ``jaccard``."""
    r = grid.row_group[rl]
    prior = grid.base[r] + grid.row_pos[rl] * grid.row_stride[r] + grid.col_pos[cl] * grid.col_stride[r]
    inter = ix[g, cl] * iy[g, rl]
    return prior, inter / (area_g[g] + grid.area[prior] - inter)


def _first_of_runs(sorted_keys: torch.Tensor, last: bool = False) -> torch.Tensor:
    """Positions of the first (or last) element of each run of equal values in ``sorted_keys``."""
    _, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
    ends = counts.cumsum(0)
    return ends - 1 if last else ends - counts


def match_boxes(
    boxes: torch.Tensor, image: torch.Tensor, num_priors: int, grid: PriorGrid, iou_threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Core matcher. ``boxes [G,4]`` relative xyxy of all images, ``image [G]`` their image index (ascending).

    Returns the positive priors as flat indices ``image * P + prior`` (unique) and the index into ``boxes`` of
    the ground truth each one is matched to.
    """
    p = num_priors
    n_gt = boxes.shape[0]
    x1, y1, x2, y2 = boxes.unbind(1)
    area_g = (x2 - x1) * (y2 - y1)
    # overlap extents against every column / row interval, as box_iou's clamp(min(x2) - max(x1), 0)
    ix = (torch.minimum(x2[:, None], grid.cols[:, 1]) - torch.maximum(x1[:, None], grid.cols[:, 0])).clamp(min=0)
    iy = (torch.minimum(y2[:, None], grid.rows[:, 1]) - torch.maximum(y1[:, None], grid.rows[:, 0])).clamp(min=0)
    zeros = ix.new_zeros((n_gt, grid.num_groups))
    mx = zeros.scatter_reduce(1, grid.col_group.expand(n_gt, -1), ix, "amax")  # [G,R] best extents per group
    my = zeros.scatter_reduce(1, grid.row_group.expand(n_gt, -1), iy, "amax")
    area_sum = area_g[:, None] + grid.group_area[None, :]
    keep_lo = 1.0 - _SLACK

    # 1) best prior of every ground truth: groups whose best cell is (nearly) the best overall, and in them the
    #    cells of (nearly) maximal row and column extent; exact IoU decides, the first prior wins ties.
    inter_best = mx * my
    group_iou = inter_best / (area_sum - inter_best)
    top = group_iou.amax(dim=1, keepdim=True)
    near = (group_iou >= top * keep_lo) & (top > 0)  # no overlap with any prior: prior 0, as argmax
    inf = torch.full_like(mx, float("inf"))  # groups not near the best: no cell passes
    rows_m = iy >= torch.where(near, my * keep_lo, inf).index_select(1, grid.row_group)
    cols_m = ix >= torch.where(near, mx * keep_lo, inf).index_select(1, grid.col_group)
    g, rl, cl = _pairs(rows_m, cols_m, grid)
    prior, iou = _exact_iou(g, rl, cl, ix, iy, area_g, grid)
    best = iou.new_full((n_gt,), -1.0).scatter_reduce(0, g, iou, "amax")
    tie = iou == best[g]
    big = torch.iinfo(torch.int64).max
    best_prior = torch.full((n_gt,), big, dtype=torch.int64, device=boxes.device)
    best_prior = best_prior.scatter_reduce(0, g[tie], prior[tie], "amin")
    best_prior = torch.where(top[:, 0] > 0, best_prior, 0)

    # 2) pairs that can reach the threshold: IoU >= t  <=>  inter >= t / (1 + t) * (area_g + area_p)
    if iou_threshold > 0:
        need = iou_threshold / (1.0 + iou_threshold) * keep_lo * area_sum
    else:  # every pair qualifies
        need = torch.full_like(area_sum, -1.0)
    rows_m = iy >= (need / mx).index_select(1, grid.row_group)  # iy * mx >= need; mx == 0 gives inf: none
    cols_m = ix >= (need / my).index_select(1, grid.col_group)
    g, rl, cl = _pairs(rows_m, cols_m, grid)
    prior, iou = _exact_iou(g, rl, cl, ix, iy, area_g, grid)
    hit = iou >= iou_threshold
    g, seg, iou = g[hit], image[g[hit]] * p + prior[hit], iou[hit]
    # per prior the best IoU, the first ground truth on ties (pairs come sorted by ground truth; sorts are stable)
    order = torch.sort(-iou, stable=True).indices
    order = order[torch.sort(seg[order], stable=True).indices]
    first = order[_first_of_runs(seg[order])]

    # 3) forced matches override; the later ground truth wins a contested prior
    gt_ids = torch.arange(n_gt, device=boxes.device)
    seg_all = torch.cat((seg[first], image * p + best_prior))
    gt_all = torch.cat((g[first], gt_ids))
    order = torch.sort(seg_all, stable=True).indices  # thresholded before forced, forced by ground truth
    pick = order[_first_of_runs(seg_all[order], last=True)]
    return seg_all[pick], gt_all[pick]


def assign_targets(
    gt_boxes: list[torch.Tensor],
    gt_labels: list[torch.Tensor],
    priors: torch.Tensor,
    iou_threshold: float = 0.5,
    variances: tuple[float, float] = VARIANCES,
    prior_spec: PriorSpec | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match a batch of ground truths to priors.

    Args:
        gt_boxes: per image, relative xyxy boxes ``[K_i, 4]`` (``K_i`` may be 0).
        gt_labels: per image, 1-based class labels ``[K_i]``.
        priors: ``[P, 4]`` cxcywh.
        prior_spec: the spec that generated ``priors`` (optional; enables the fast path for custom specs, the
            built-in specs are recognised by themselves).
    Returns:
        ``loc_targets [N,P,4]`` (encoded offsets where ``cls_targets > 0``, 0 elsewhere) and
        ``cls_targets [N,P]`` int64 (0 = background).
    """
    n, p = len(gt_boxes), priors.shape[0]
    device = priors.device
    dtype = priors.dtype if priors.is_floating_point() else torch.float32
    loc_targets = torch.zeros((n, p, 4), dtype=dtype, device=device)
    cls_targets = torch.zeros((n, p), dtype=torch.int64, device=device)
    counts = torch.tensor([int(b.shape[0]) for b in gt_boxes], dtype=torch.int64)
    if n == 0 or int(counts.sum()) == 0:
        return loc_targets, cls_targets
    boxes = torch.cat([b.reshape(-1, 4) for b in gt_boxes]).to(device=device, dtype=dtype)
    if not bool(torch.isfinite(boxes).all()):
        raise SsdError("ground-truth boxes contain NaN or infinite coordinates")
    labels = torch.cat([l.reshape(-1) for l in gt_labels]).to(device=device, dtype=torch.int64)
    image = torch.repeat_interleave(torch.arange(n), counts).to(device)
    grid = prior_grid(priors.to(dtype), prior_spec)
    pos, gt = match_boxes(boxes, image, p, grid, iou_threshold)
    cls_targets.view(-1).index_copy_(0, pos, labels[gt])
    loc_targets.view(-1, 4).index_copy_(0, pos, encode(boxes[gt], priors[pos % p].to(dtype), variances))
    return loc_targets, cls_targets
