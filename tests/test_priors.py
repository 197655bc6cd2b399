"""Default boxes (ssdcli.priors) against the classic PyTorch SSD port's PriorBox, element for element."""

from __future__ import annotations

import json
from itertools import product
from math import sqrt

import pytest
import torch

from ssdcli.errors import SsdError
from ssdcli.models.ssd.priors import PRIOR_SPECS, SSD300_VOC, SSD512_VOC, SSDLITE320
from ssdcli.priors import PriorSpec, generate_priors, make_priors


def reference_prior_box(
    image_size: int,
    feature_maps: list[int],
    steps: list[float],
    min_sizes: list[float],
    max_sizes: list[float],
    aspect_ratios: list[list[float]],
    clip: bool = True,
) -> torch.Tensor:
    """The classic port's ``PriorBox.forward`` as a plain nested loop (float64 Python math, then float32)."""
    mean: list[float] = []
    for k, f in enumerate(feature_maps):
        for i, j in product(range(f), repeat=2):
            f_k = image_size / steps[k]
            cx = (j + 0.5) / f_k
            cy = (i + 0.5) / f_k
            s_k = min_sizes[k] / image_size
            mean += [cx, cy, s_k, s_k]
            s_k_prime = sqrt(s_k * (max_sizes[k] / image_size))
            mean += [cx, cy, s_k_prime, s_k_prime]
            for ar in aspect_ratios[k]:
                mean += [cx, cy, s_k * sqrt(ar), s_k / sqrt(ar)]
                mean += [cx, cy, s_k / sqrt(ar), s_k * sqrt(ar)]
    output = torch.Tensor(mean).view(-1, 4)
    if clip:
        output.clamp_(max=1, min=0)
    return output


VOC_300 = dict(
    image_size=300,
    feature_maps=[38, 19, 10, 5, 3, 1],
    steps=[8, 16, 32, 64, 100, 300],
    min_sizes=[30, 60, 111, 162, 213, 264],
    max_sizes=[60, 111, 162, 213, 264, 315],
    aspect_ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]],
)


def test_ssd300_count() -> None:
    priors = make_priors("ssd300")
    assert priors.shape == (8732, 4)
    assert priors.dtype == torch.float32
    assert SSD300_VOC.num_priors() == 8732
    assert SSD300_VOC.priors_per_location() == [4, 6, 6, 6, 4, 4]


def test_ssd300_equals_classic_port_element_for_element() -> None:
    ours = make_priors("ssd300")
    ref = reference_prior_box(**VOC_300)
    assert ours.shape == ref.shape
    assert torch.equal(ours, ref), f"max abs diff {(ours - ref).abs().max().item()}"
    # spot checks of the order: first location of conv4_3, then the single conv11_2 location
    torch.testing.assert_close(ours[0], torch.tensor([4 / 300, 4 / 300, 0.1, 0.1]))
    torch.testing.assert_close(ours[4], torch.tensor([12 / 300, 4 / 300, 0.1, 0.1]))  # next column (j) first
    torch.testing.assert_close(ours[38 * 4], torch.tensor([4 / 300, 12 / 300, 0.1, 0.1]))  # then next row (i)
    torch.testing.assert_close(ours[-4], torch.tensor([0.5, 0.5, 0.88, 0.88]))


def test_ssd300_spec_from_explicit_spec_object() -> None:
    assert torch.equal(make_priors(SSD300_VOC), make_priors("ssd300"))
    assert torch.equal(make_priors("ssd300-bn"), make_priors("ssd300"))


def test_ssd512_count_and_reference() -> None:
    priors = make_priors("ssd512")
    assert priors.shape == (24564, 4)
    ref = reference_prior_box(
        image_size=SSD512_VOC.image_size,
        feature_maps=list(SSD512_VOC.feature_maps),
        steps=list(SSD512_VOC.steps or ()),
        min_sizes=list(SSD512_VOC.min_sizes),
        max_sizes=list(SSD512_VOC.max_sizes),
        aspect_ratios=[list(a) for a in SSD512_VOC.aspect_ratios],
    )
    assert torch.equal(priors, ref)
    # Caffe ssd_pascal_512.py: min_ratio 15, max_ratio 90, step 15, first level 4% / 10% of 512
    assert SSD512_VOC.min_sizes == pytest.approx((20.48, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8))
    assert SSD512_VOC.max_sizes == pytest.approx((51.2, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6))
    assert SSD512_VOC.feature_maps == (64, 32, 16, 8, 4, 2, 1)


def test_ssdlite320_count() -> None:
    priors = make_priors("ssdlite320")
    assert SSDLITE320.num_priors() == 6 * (20 * 20 + 10 * 10 + 5 * 5 + 3 * 3 + 2 * 2 + 1)
    assert priors.shape == (3234, 4)
    assert (priors >= 0).all() and (priors <= 1).all()


def test_default_steps_and_no_clip() -> None:
    spec = PriorSpec(
        image_size=100, feature_maps=(4, 2), min_sizes=(20, 60), max_sizes=(60, 300), aspect_ratios=((2,), ()),
        clip=False,
    )
    ours = generate_priors(spec)
    ref = reference_prior_box(100, [4, 2], [25, 50], [20, 60], [60, 300], [[2], []], clip=False)
    assert torch.equal(ours, ref)
    assert ours.shape == (4 * 4 * 4 + 2 * 2 * 2, 4)
    assert ours[:, 2:].max() > 1.0  # not clipped: sqrt(0.6 * 3.0) ~ 1.34


@pytest.mark.parametrize("name", sorted(PRIOR_SPECS))
def test_spec_dict_round_trip(name: str) -> None:
    spec = PRIOR_SPECS[name]
    d = spec.to_dict()
    d2 = json.loads(json.dumps(d))  # JSON-safe (stored in checkpoints and ONNX metadata)
    back = PriorSpec.from_dict(d2)
    assert back == spec
    assert torch.equal(generate_priors(back), generate_priors(spec))


def test_spec_from_dict_defaults() -> None:
    d = SSD300_VOC.to_dict()
    for key in ("steps", "clip", "variances"):
        d.pop(key)
    spec = PriorSpec.from_dict(d)
    assert spec.steps is None and spec.clip is True and spec.variances == (0.1, 0.2)


def test_unknown_name_raises() -> None:
    with pytest.raises(SsdError, match="no prior spec for 'ssd999'"):
        make_priors("ssd999")
