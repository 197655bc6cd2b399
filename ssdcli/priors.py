"""Default boxes (priors) from a declarative spec, in ``(cx, cy, w, h)`` relative to the image.

The generation order is the one of the classic SSD ports: feature map by feature map, locations in row-major
order, and per location ``[s_k, sqrt(s_k s_k+1), then (s_k sqrt(ar), s_k / sqrt(ar)) and its transpose for each
aspect ratio]``. Loc/conf heads produce their outputs in the same order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ssdcli.errors import SsdError


@dataclass(frozen=True)
class PriorSpec:
    image_size: int
    feature_maps: tuple[int, ...]
    min_sizes: tuple[float, ...]  # pixels
    max_sizes: tuple[float, ...]  # pixels
    aspect_ratios: tuple[tuple[float, ...], ...]
    steps: tuple[float, ...] | None = None  # pixels per cell; default image_size / feature_map
    clip: bool = True  # clamp priors to [0, 1]
    clip_centers: bool = True  # with clip: clamp centres too (classic ports) or only w/h (torchvision)
    variances: tuple[float, float] = (0.1, 0.2)

    def priors_per_location(self) -> list[int]:
        return [2 + 2 * len(ars) for ars in self.aspect_ratios]

    def num_priors(self) -> int:
        return sum(f * f * n for f, n in zip(self.feature_maps, self.priors_per_location()))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["aspect_ratios"] = [list(a) for a in self.aspect_ratios]
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "PriorSpec":
        return cls(
            image_size=int(d["image_size"]),
            feature_maps=tuple(int(x) for x in d["feature_maps"]),
            min_sizes=tuple(float(x) for x in d["min_sizes"]),
            max_sizes=tuple(float(x) for x in d["max_sizes"]),
            aspect_ratios=tuple(tuple(float(a) for a in ars) for ars in d["aspect_ratios"]),
            steps=None if d.get("steps") is None else tuple(float(x) for x in d["steps"]),
            clip=bool(d.get("clip", True)),
            clip_centers=bool(d.get("clip_centers", True)),
            variances=tuple(float(x) for x in d.get("variances", (0.1, 0.2))),  # type: ignore[arg-type]
        )


def generate_priors(spec: PriorSpec) -> torch.Tensor:
    """All priors ``[P, 4]`` (float32 cxcywh) for ``spec``; vectorised per feature map."""
    chunks = []
    for k, f in enumerate(spec.feature_maps):
        step = spec.steps[k] if spec.steps is not None else spec.image_size / f
        f_k = spec.image_size / step
        s_k = spec.min_sizes[k] / spec.image_size
        s_k_prime = (s_k * (spec.max_sizes[k] / spec.image_size)) ** 0.5
        shapes = [(s_k, s_k), (s_k_prime, s_k_prime)]
        for ar in spec.aspect_ratios[k]:
            r = ar**0.5
            shapes += [(s_k * r, s_k / r), (s_k / r, s_k * r)]
        idx = torch.arange(f, dtype=torch.float64)
        cy, cx = torch.meshgrid((idx + 0.5) / f_k, (idx + 0.5) / f_k, indexing="ij")
        centers = torch.stack((cx.reshape(-1), cy.reshape(-1)), dim=-1)  # [f*f, 2] row-major
        wh = torch.tensor(shapes, dtype=torch.float64)  # [A, 2]
        n_loc, n_shape = centers.shape[0], wh.shape[0]
        boxes = torch.cat((centers[:, None, :].expand(n_loc, n_shape, 2), wh[None].expand(n_loc, n_shape, 2)), dim=-1)
        chunks.append(boxes.reshape(-1, 4))
    priors = torch.cat(chunks).float()
    if spec.clip and spec.clip_centers:
        priors.clamp_(min=0.0, max=1.0)
    elif spec.clip:
        priors[:, 2:].clamp_(min=0.0, max=1.0)
    return priors


_NAMED_SPECS: dict[str, PriorSpec] = {}


def register_prior_spec(name: str, spec: PriorSpec) -> None:
    """Make ``spec`` known under an architecture ``name`` (called by the family that owns it, e.g.
    :mod:`ssdcli.models.ssd.priors`): ``make_priors(name)`` returns its priors and the matcher tries its grid layout."""
    _NAMED_SPECS[name] = spec


def named_prior_specs() -> dict[str, PriorSpec]:
    """Architecture name -> default prior spec, as registered by the families."""
    return dict(_NAMED_SPECS)


def make_priors(name_or_spec: str | PriorSpec) -> torch.Tensor:
    """Priors ``[P,4]`` cxcywh for an architecture name (e.g. ``"ssd300"``) or an explicit :class:`PriorSpec`."""
    if isinstance(name_or_spec, PriorSpec):
        return generate_priors(name_or_spec)
    if name_or_spec not in _NAMED_SPECS:
        raise SsdError(f"no prior spec for '{name_or_spec}' (known: {', '.join(sorted(_NAMED_SPECS))})")
    return generate_priors(_NAMED_SPECS[name_or_spec])
