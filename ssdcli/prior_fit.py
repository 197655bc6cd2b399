"""How well a prior spec covers a dataset's boxes, and re-fitting its sizes and aspect ratios to the data.

SSD matches every ground-truth box to its best prior and to every prior with IoU >= the matching threshold
(0.5). A box whose best prior is below the threshold still gets exactly one positive (its best prior) and a
regression target far from that prior; the fraction of such boxes is the "prior fit" the YOLO trainers check
before training. The IoU here is the exact one the matcher uses: priors and boxes relative to the image (the
model input is the image resized without keeping the aspect ratio, so relative coordinates are what the priors
see).

The re-fit keeps the feature-map layout (sources, steps, the number of priors per location, so the heads keep their
shapes) and searches the per-map sizes (``min_sizes``, ``max_sizes``) and aspect ratios by a seeded evolution
(multiplicative mutations, keep the better one), maximising the mean best-prior IoU plus the fraction of boxes with
a prior at or above the threshold. Deterministic for a given seed and box set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from ssdcli.boxes import cxcywh_to_xyxy
from ssdcli.priors import PriorSpec, generate_priors

_MAX_BOXES = 4000  # boxes used for the statistics and the search (a seeded sample of larger sets)


@dataclass(frozen=True)
class MapCoverage:
    feature_map: int  # cells per side
    min_size: float  # pixels at the input size
    boxes_best_here: int  # boxes whose best prior lies on this map
    mean_best_iou: float  # mean best IoU of those boxes (nan when none)


@dataclass(frozen=True)
class PriorCoverage:
    boxes: int  # boxes measured (a sample when the dataset has more than _MAX_BOXES)
    threshold: float
    mean_best_iou: float
    below_threshold: float  # fraction of boxes whose best prior IoU is below the threshold
    mean_positives: float  # priors at or above the threshold per box (what the matcher makes positive)
    per_map: tuple[MapCoverage, ...]

    def fitness(self) -> float:
        return fit_score(self.mean_best_iou, 1.0 - self.below_threshold)


def fit_score(mean_best_iou: float, share_covered: float) -> float:
    """What the re-fit maximises: the mean best-prior IoU plus the share of boxes with a prior at or above the
    matching threshold."""
    return mean_best_iou + share_covered


def sample_boxes(boxes: torch.Tensor, limit: int = _MAX_BOXES, seed: int = 0) -> torch.Tensor:
    """At most ``limit`` rows of ``boxes`` (a seeded sample, order kept)."""
    if boxes.shape[0] <= limit:
        return boxes
    g = torch.Generator().manual_seed(seed)
    return boxes[torch.randperm(boxes.shape[0], generator=g)[:limit].sort().values]


def _map_index(spec: PriorSpec) -> torch.Tensor:
    counts = [f * f * n for f, n in zip(spec.feature_maps, spec.priors_per_location())]
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def coverage(spec: PriorSpec, boxes: torch.Tensor, threshold: float = 0.5) -> PriorCoverage:
    """How the priors of ``spec`` cover ``boxes`` (``[M,4]`` xyxy relative to the image, 0..1)."""
    boxes = sample_boxes(boxes.to(torch.float32))
    priors = cxcywh_to_xyxy(generate_priors(spec))
    which_map = _map_index(spec)
    if boxes.shape[0] == 0:
        per_map = tuple(MapCoverage(f, m, 0, float("nan")) for f, m in zip(spec.feature_maps, spec.min_sizes))
        return PriorCoverage(0, threshold, float("nan"), float("nan"), float("nan"), per_map)
    iou = box_iou(boxes, priors)  # [M, P]
    best, arg = iou.max(dim=1)
    best_map = which_map[arg]
    per_map = []
    for k, (f, m) in enumerate(zip(spec.feature_maps, spec.min_sizes)):
        here = best_map == k
        mean = float(best[here].mean()) if bool(here.any()) else float("nan")
        per_map.append(MapCoverage(f, float(m), int(here.sum()), mean))
    return PriorCoverage(
        boxes=int(boxes.shape[0]),
        threshold=threshold,
        mean_best_iou=float(best.mean()),
        below_threshold=float((best < threshold).float().mean()),
        mean_positives=float((iou >= threshold).sum(dim=1).float().mean()),
        per_map=tuple(per_map),
    )


def _fitness(spec: PriorSpec, boxes: torch.Tensor, threshold: float) -> float:
    best = box_iou(boxes, cxcywh_to_xyxy(generate_priors(spec))).max(dim=1).values
    return fit_score(float(best.mean()), float((best >= threshold).float().mean()))


def _mutate(spec: PriorSpec, g: torch.Generator, sigma: float) -> PriorSpec:
    def jitter(values: tuple[float, ...]) -> torch.Tensor:
        t = torch.tensor(values, dtype=torch.float64)
        keep = torch.rand(t.shape, generator=g, dtype=torch.float64) < 0.5  # mutate about half the values
        factor = torch.exp(torch.randn(t.shape, generator=g, dtype=torch.float64) * sigma)
        return torch.where(keep, t, t * factor)

    size = float(spec.image_size)
    mins = jitter(spec.min_sizes).clamp(2.0, 1.2 * size)
    maxs = torch.maximum(jitter(spec.max_sizes), mins * 1.05).clamp(max=1.5 * size)
    ars = tuple(tuple(float(a) for a in jitter(r).clamp(1.05, 6.0)) if r else () for r in spec.aspect_ratios)
    return dataclasses.replace(
        spec,
        min_sizes=tuple(round(float(v), 3) for v in mins),
        max_sizes=tuple(round(float(v), 3) for v in maxs),
        aspect_ratios=tuple(tuple(round(a, 3) for a in r) for r in ars),
    )


def refit(
    spec: PriorSpec, boxes: torch.Tensor, threshold: float = 0.5, generations: int = 300, seed: int = 0,
    sigma: float = 0.15,
) -> PriorSpec:
    """A spec with the same layout as ``spec`` whose sizes and aspect ratios fit ``boxes`` at least as well
    (:meth:`PriorCoverage.fitness`); ``spec`` itself when nothing better is found."""
    boxes = sample_boxes(boxes.to(torch.float32), seed=seed)
    if boxes.shape[0] == 0:
        return spec
    g = torch.Generator().manual_seed(seed)
    best_spec, best_fit = spec, _fitness(spec, boxes, threshold)
    for _ in range(generations):
        candidate = _mutate(best_spec, g, sigma)
        fit = _fitness(candidate, boxes, threshold)
        if fit > best_fit:
            best_spec, best_fit = candidate, fit
    return best_spec
