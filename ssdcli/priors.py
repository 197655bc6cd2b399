"""Default boxes (priors) from a declarative spec, in ``(cx, cy, w, h)`` relative to the image.

The generation order is the one of the classic SSD ports: feature map by feature map, locations in row-major
order, and per location ``[s_k, sqrt(s_k s_k+1), then (s_k sqrt(ar), s_k / sqrt(ar)) and its transpose for each
aspect ratio]``. Loc/conf heads produce their outputs in the same order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


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


SSD300_VOC = PriorSpec(
    image_size=300,
    feature_maps=(38, 19, 10, 5, 3, 1),
    steps=(8, 16, 32, 64, 100, 300),
    min_sizes=(30, 60, 111, 162, 213, 264),
    max_sizes=(60, 111, 162, 213, 264, 315),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
)

# Original Caffe SSD512 (ssd_pascal_512.py): min_ratio 15, max_ratio 90 over 7 sources, first level 4%/10%.
SSD512_VOC = PriorSpec(
    image_size=512,
    feature_maps=(64, 32, 16, 8, 4, 2, 1),
    steps=(8, 16, 32, 64, 128, 256, 512),
    min_sizes=(20.48, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
    max_sizes=(51.2, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
)


def _linear_scales_spec(image_size: int, feature_maps: tuple[int, ...], s_min: float, s_max: float) -> PriorSpec:
    """SSD-paper scales ``s_k = s_min + (s_max - s_min) k / (m - 1)`` with the extra ``s_m = 1``."""
    m = len(feature_maps)
    scales = [s_min + (s_max - s_min) * k / (m - 1) for k in range(m)] + [1.0]
    return PriorSpec(
        image_size=image_size,
        feature_maps=feature_maps,
        min_sizes=tuple(round(s * image_size, 4) for s in scales[:-1]),
        max_sizes=tuple(round(s * image_size, 4) for s in scales[1:]),
        aspect_ratios=tuple((2.0, 3.0) for _ in feature_maps),
    )


def _halvings(size: int, times: int) -> int:
    for _ in range(times):  # 3x3 stride-2 convs with padding 1: ceil(size / 2) each
        size = -(-size // 2)
    return size


def ssdlite_prior_spec(image_size: int = 320) -> PriorSpec:
    """SSDLite priors for any input size: sources at strides 16 and 32, then four stride-2 extra levels."""
    f16 = _halvings(image_size, 4)
    return _linear_scales_spec(image_size, tuple(_halvings(f16, k) for k in range(6)), 0.2, 0.95)


def mini_prior_spec(image_size: int = 128) -> PriorSpec:
    """``ssd-mini`` priors: sources from stride 8 down to 1x1, scales 0.1..0.9, aspect ratios {1, 2, 1/2}."""
    fms = [_halvings(image_size, 3)]
    while fms[-1] > 1:
        fms.append(_halvings(fms[-1], 1))
    spec = _linear_scales_spec(image_size, tuple(fms), 0.1, 0.9)
    return PriorSpec(**{**spec.__dict__, "aspect_ratios": tuple((2.0,) for _ in fms)})


SSDLITE320 = ssdlite_prior_spec(320)
SSD_MINI128 = mini_prior_spec(128)
# Architectures whose priors follow the input size (``--img-size``).
SIZED_PRIOR_SPECS = {"ssdlite320": ssdlite_prior_spec, "ssd-mini": mini_prior_spec}

PRIOR_SPECS: dict[str, PriorSpec] = {
    "ssd300": SSD300_VOC,
    "ssd300-bn": SSD300_VOC,
    "ssd512": SSD512_VOC,
    "ssd512-bn": SSD512_VOC,
    "ssdlite320": SSDLITE320,
    "ssd-mini": SSD_MINI128,
}


def make_priors(name_or_spec: str | PriorSpec) -> torch.Tensor:
    """Priors ``[P,4]`` cxcywh for an architecture name (e.g. ``"ssd300"``) or an explicit :class:`PriorSpec`."""
    from ssdcli.errors import SsdError

    if isinstance(name_or_spec, PriorSpec):
        return generate_priors(name_or_spec)
    if name_or_spec not in PRIOR_SPECS:
        raise SsdError(f"no prior spec for '{name_or_spec}' (known: {', '.join(sorted(PRIOR_SPECS))})")
    return generate_priors(PRIOR_SPECS[name_or_spec])
