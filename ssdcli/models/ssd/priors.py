"""The SSD family's prior specs: the paper's SSD300/SSD512 tables and the size-following SSDLite/ssd-mini specs.

The generic maths (:class:`~ssdcli.priors.PriorSpec`, :func:`~ssdcli.priors.generate_priors`) stays in the core;
this module only holds the SSD family's numbers and registers them by architecture name
(:func:`ssdcli.priors.register_prior_spec`), so that ``make_priors("ssd300")`` and the matcher's grid search find them.
"""

from __future__ import annotations

from collections.abc import Callable

from ssdcli.priors import PriorSpec, register_prior_spec

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

# Architecture -> its prior spec for an input size (the fixed paper tables ignore the size; the builder checks it).
SPEC_FOR_SIZE: dict[str, Callable[[int], PriorSpec]] = {
    "ssd300": lambda _size: SSD300_VOC,
    "ssd300-bn": lambda _size: SSD300_VOC,
    "ssd512": lambda _size: SSD512_VOC,
    "ssd512-bn": lambda _size: SSD512_VOC,
    "ssdlite320": ssdlite_prior_spec,
    "ssd-mini": mini_prior_spec,
}

# Default-size specs by architecture name (what ``make_priors(name)`` returns).
PRIOR_SPECS: dict[str, PriorSpec] = {
    "ssd300": SSD300_VOC,
    "ssd300-bn": SSD300_VOC,
    "ssd512": SSD512_VOC,
    "ssd512-bn": SSD512_VOC,
    "ssdlite320": SSDLITE320,
    "ssd-mini": SSD_MINI128,
}

for _name, _spec in PRIOR_SPECS.items():
    register_prior_spec(_name, _spec)
