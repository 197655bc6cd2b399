"""Box conventions and SSD box coding (ssdcli.boxes)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdcli.boxes import (
    VARIANCES,
    box_iou,
    cxcywh_to_xyxy,
    decode,
    encode,
    pixel_to_relative,
    relative_to_pixel,
    xyxy_to_cxcywh,
)


def test_xyxy_cxcywh_known_values() -> None:
    xyxy = torch.tensor([[0.1, 0.2, 0.5, 0.8], [0.0, 0.0, 1.0, 1.0]])
    cxcywh = torch.tensor([[0.3, 0.5, 0.4, 0.6], [0.5, 0.5, 1.0, 1.0]])
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), cxcywh)
    torch.testing.assert_close(cxcywh_to_xyxy(cxcywh), xyxy)


def test_conversions_keep_leading_dims() -> None:
    boxes = torch.rand(2, 3, 5, 4)
    assert xyxy_to_cxcywh(boxes).shape == (2, 3, 5, 4)
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)


def test_box_iou_is_torchvision() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0]]))


def test_pixel_to_relative_voc_convention() -> None:
    w, h = 500, 375
    whole = torch.tensor([[1.0, 1.0, w, h]])
    torch.testing.assert_close(pixel_to_relative(whole, w, h), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    # pixel i covers [i-1, i]: the single top-left pixel is the first 1/W x 1/H cell
    one = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(pixel_to_relative(one, w, h), torch.tensor([[0.0, 0.0, 1 / w, 1 / h]]))
    box = torch.tensor([[48.0, 240.0, 195.0, 371.0]])
    expected = torch.tensor([[47 / w, 239 / h, 195 / w, 371 / h]])
    torch.testing.assert_close(pixel_to_relative(box, w, h), expected)


def test_relative_to_pixel_inverse_and_clipped() -> None:
    w, h = 640, 480
    boxes = torch.tensor([[10.0, 20.0, 300.0, 470.0], [1.0, 1.0, 640.0, 480.0]])
    torch.testing.assert_close(relative_to_pixel(pixel_to_relative(boxes, w, h), w, h), boxes)
    outside = torch.tensor([[-0.5, -0.1, 1.5, 2.0]])
    torch.testing.assert_close(relative_to_pixel(outside, w, h), torch.tensor([[1.0, 1.0, 640.0, 480.0]]))


def test_encode_known_value() -> None:
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.4]])  # cxcywh
    gt = torch.tensor([[0.42, 0.34, 0.62, 0.74]])  # cxcywh (0.52, 0.54, 0.2, 0.4)
    v0, v1 = VARIANCES
    expected = torch.tensor([[0.02 / (v0 * 0.2), 0.04 / (v0 * 0.4), 0.0, 0.0]])
    torch.testing.assert_close(encode(gt, prior), expected)
    gt2 = torch.tensor([[0.3, 0.2, 0.7, 0.6]])  # w 0.4 = 2 * pw, h 0.4 = ph
    enc = encode(gt2, prior)
    assert enc[0, 2].item() == pytest.approx(math.log(2.0) / v1, rel=1e-6)
    assert enc[0, 3].item() == pytest.approx(0.0, abs=1e-6)


_unit = st.floats(0.0, 1.0, allow_nan=False)
_size = st.floats(0.01, 1.0, allow_nan=False)


@st.composite
def boxes_and_priors(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    n = draw(st.integers(1, 16))
    gt = []
    for _ in range(n):
        x1, y1 = draw(_unit) * 0.95, draw(_unit) * 0.95
        w, h = draw(_size), draw(_size)
        gt.append([x1, y1, min(x1 + w, 1.0) + 0.01, min(y1 + h, 1.0) + 0.01])
    priors = [[draw(_unit), draw(_unit), draw(st.floats(0.02, 1.0)), draw(st.floats(0.02, 1.0))] for _ in range(n)]
    return torch.tensor(gt, dtype=torch.float64), torch.tensor(priors, dtype=torch.float64)


@settings(max_examples=150, deadline=None)
@given(boxes_and_priors())
def test_encode_decode_round_trip(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    gt, priors = data
    # float64: exact up to rounding
    torch.testing.assert_close(decode(encode(gt, priors), priors), gt, rtol=1e-10, atol=1e-12)
    # float32 (what the model uses): rtol ~1e-5
    gt32, pr32 = gt.float(), priors.float()
    torch.testing.assert_close(decode(encode(gt32, pr32), pr32), gt32, rtol=1e-5, atol=2e-6)
    # and the other way round: offsets -> boxes -> offsets
    offsets = encode(gt, priors)
    torch.testing.assert_close(encode(decode(offsets, priors), priors), offsets, rtol=1e-8, atol=1e-8)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3), st.integers(1, 50))
def test_encode_decode_batched_shapes(n: int, p: int) -> None:
    priors = torch.cat((torch.rand(p, 2), torch.rand(p, 2) * 0.5 + 0.05), dim=1)
    gt = cxcywh_to_xyxy(torch.cat((torch.rand(n, p, 2), torch.rand(n, p, 2) * 0.5 + 0.05), dim=-1))
    enc = encode(gt, priors)
    assert enc.shape == (n, p, 4)
    torch.testing.assert_close(decode(enc, priors), gt, rtol=1e-5, atol=2e-6)


def test_decode_clamps_huge_scales_to_finite() -> None:
    priors = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.1, 0.1, 0.05, 0.05]])
    offsets = torch.tensor([[0.0, 0.0, 1e4, 1e4], [1.0, -1.0, 1e30, float("inf")]])
    out = decode(offsets, priors)
    assert torch.isfinite(out).all()
    wh = xyxy_to_cxcywh(out)[:, 2:]
    # the scale is capped at 1000/16 times the prior size (as torchvision)
    torch.testing.assert_close(wh, priors[:, 2:] * 1000 / 16, rtol=1e-5, atol=0.0)
    small = decode(torch.tensor([[0.0, 0.0, -1e4, -1e4]]), priors[:1])
    assert torch.isfinite(small).all()
    assert (xyxy_to_cxcywh(small)[:, 2:] >= 0).all()


def test_decode_half_precision_finite() -> None:
    priors = torch.tensor([[0.5, 0.5, 0.9, 0.9]]).half()
    out = decode(torch.tensor([[0.0, 0.0, 50.0, 50.0]]).half(), priors)
    assert torch.isfinite(out).all()


def test_encode_degenerate_box_finite() -> None:
    priors = torch.tensor([[0.5, 0.5, 0.1, 0.1]])
    zero = torch.tensor([[0.3, 0.3, 0.3, 0.3]])
    assert torch.isfinite(encode(zero, priors)).all()
