"""SSD's photometric distortion on uint8 images: ``v2.RandomPhotometricDistort``'s draw and arithmetic, fast.

:func:`sample_photometric` draws :class:`PhotometricParams` as ``torchvision.transforms.v2.RandomPhotometricDistort``
does (brightness 0.875..1.125, contrast 0.5..1.5 before or after saturation 0.5..1.5 and hue +-0.05 turn, channel
permutation; each with p=0.5); :func:`photometric_distort` applies them to a uint8 ``[3,h,w]`` patch with v2's
per-step rounding (clamp to 0..255 and truncate after every step), in reusable float32 buffers (:class:`Scratch`).
Used by :class:`ssdcli.data.transforms.SSDTrainAugment`; the v2 reference is :mod:`ssdcli.data.reference_aug`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PHOTOMETRIC_RANGES", "PhotometricParams", "Scratch", "sample_photometric", "photometric_distort"]


@dataclass(frozen=True)
class PhotometricParams:
    """Factors of one photometric draw (None = step skipped); ``permutation[i]`` = input channel of output i."""

    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None
    hue: float | None = None
    contrast_before: bool = True
    permutation: tuple[int, int, int] | None = None


PHOTOMETRIC_RANGES = {
    "brightness": (0.875, 1.125),
    "contrast": (0.5, 1.5),
    "saturation": (0.5, 1.5),
    "hue": (-0.05, 0.05),
}


def sample_photometric(generator: torch.Generator, p: float = 0.5) -> PhotometricParams:
    """v2.RandomPhotometricDistort's draw: each factor with probability ``p``, uniform in its range; contrast
    before or after saturation/hue with probability 1/2; a uniform channel permutation with probability ``p``."""
    u = torch.rand(13, generator=generator, dtype=torch.float64).tolist()
    ranges = PHOTOMETRIC_RANGES.items()
    vals = {key: lo + (hi - lo) * u[4 + i] if u[i] < p else None for i, (key, (lo, hi)) in enumerate(ranges)}
    perm = tuple(int(i) for i in np.argsort(u[10:13])) if u[9] < p else None
    return PhotometricParams(**vals, contrast_before=u[8] < 0.5, permutation=perm)  # type: ignore[arg-type]


class Scratch:
    """Reusable float32 work buffers for the photometric steps.

    A fresh tensor of a few hundred KB per elementwise op costs page faults (measured here: from tens of
    microseconds to milliseconds each), more than the arithmetic; the buffers are reused instead. One per
    augmenter, i.e. per DataLoader worker process; not shared between threads; never pickled.
    """

    def __init__(self) -> None:
        self._buf = torch.empty(0)

    def take(self, n: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Views ``x [3,n]``, ``q [3,n]`` and six ``[n]`` temporaries."""
        if self._buf.numel() < 12 * n:
            self._buf = torch.empty(12 * n)
        f = self._buf
        return f[: 3 * n].view(3, n), f[3 * n : 6 * n].view(3, n), [f[(6 + i) * n : (7 + i) * n] for i in range(6)]

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._buf = torch.empty(0)


def _gray(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Floored luma (torchvision's rgb_to_grayscale weights) of float RGB ``x [3,n]`` into ``out [n]``."""
    torch.mul(x[0], 0.2989, out=out)
    return out.add_(x[1], alpha=0.587).add_(x[2], alpha=0.114).floor_()


def _finish_(x: torch.Tensor) -> torch.Tensor:
    """End of every v2 step on uint8: clamp to 0..255 and truncate."""
    return x.clamp_(0.0, 255.0).floor_()


_HUE_OFFSETS = torch.tensor([0.0, -2.0, -4.0]).view(3, 1)


def _hue(x: torch.Tensor, hue: float, q: torch.Tensor, t: list[torch.Tensor]) -> torch.Tensor:
    """HSV hue rotation by ``hue`` turns (|hue| <= 1/6) of integral float RGB 0..255 ``x [3,n]`` into ``q``,
    as v2's adjust_hue on uint8.

    Hexcone hue ``h6`` from the max channel, selected arithmetically (values are integral, so
    ``clamp(r - max + 1, 0)`` is 1 exactly where r is the max; torch.where is slow on CPU), shifted, and back to
    RGB with the branch-free ``channel = min + C * clamp(||h6 + (0,-2,-4)| - 3| - 1, 0, 1)``.
    """
    r, g, b = x.unbind(0)
    maxc, minc, c, is_r, is_g, h6 = t
    torch.maximum(torch.maximum(r, g, out=maxc), b, out=maxc)
    torch.minimum(torch.minimum(r, g, out=minc), b, out=minc)
    torch.sub(maxc, minc, out=c)
    torch.sub(r, maxc, out=is_r).add_(1.0).clamp_(min=0.0)
    torch.sub(g, maxc, out=is_g).add_(1.0).clamp_(min=0.0).sub_(is_r).clamp_(min=0.0)
    h_b = torch.sub(r, g, out=q[0]).add_(c, alpha=4.0)  # hue numerator when b is the max
    torch.sub(b, r, out=h6).add_(c, alpha=2.0).sub_(h_b).mul_(is_g).add_(h_b)
    h6.add_(torch.sub(g, b, out=q[1]).sub_(h6).mul_(is_r))
    h6.div_(torch.clamp(c, min=1.0, out=is_r)).add_(6.0 * hue)  # C is 0 or >= 1; h6 in [-1-6|hue|, 5+6|hue|)
    torch.add(h6.unsqueeze(0), _HUE_OFFSETS, out=q)
    q.abs_().sub_(3.0).abs_().sub_(1.0).clamp_(0.0, 1.0)
    return q.mul_(c).add_(minc).mul_(255.999 / 255.0).floor_()


def _pointwise(
    x: torch.Tensor,
    p: PhotometricParams,
    mean: float | None,
    q: torch.Tensor,
    t: list[torch.Tensor],
    upto_contrast: bool = False,
) -> torch.Tensor:
    """v2's photometric order on ``x [3,n]`` (modified in place; the result may live in ``q``)."""
    if p.brightness is not None:
        _finish_(x.mul_(p.brightness))
    if p.contrast is not None and p.contrast_before:
        if upto_contrast:
            return x
        _finish_(x.mul_(p.contrast).add_(torch.tensor(float(mean)), alpha=1.0 - p.contrast))  # type: ignore[arg-type]
    if p.saturation is not None:
        gray = _gray(x, t[0]).unsqueeze(0)
        _finish_(x.mul_(p.saturation).add_(gray, alpha=1.0 - p.saturation))  # v2's blend, same rounding
    if p.hue is not None:
        x = _hue(x, p.hue, q, t)
    if p.contrast is not None and not p.contrast_before:
        if upto_contrast:
            return x
        _finish_(x.mul_(p.contrast).add_(torch.tensor(float(mean)), alpha=1.0 - p.contrast))  # type: ignore[arg-type]
    return x


def photometric_distort(
    patch: torch.Tensor,
    p: PhotometricParams,
    whole_image: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    scratch: Scratch | None = None,
) -> torch.Tensor:
    """Apply ``p`` to uint8 ``patch [3,h,w]``; result written to ``out`` (uint8 ``[3,h,w]``, may be a view) or a
    new tensor. The contrast mean is that of ``whole_image`` (default: the patch) after the steps preceding
    contrast, as when the whole image is distorted, estimated on a strided thumbnail (~64 pixels a side)."""
    h, w = patch.shape[-2:]
    out = torch.empty(3, h, w, dtype=torch.uint8) if out is None else out
    if p == PhotometricParams(contrast_before=p.contrast_before):
        return out.copy_(patch)
    scratch = scratch or Scratch()
    mean = None
    if p.contrast is not None:
        src = patch if whole_image is None else whole_image
        step = max(1, min(src.shape[-2:]) // 64)
        thumb = src[:, ::step, ::step]
        x, q, t = scratch.take(thumb.shape[-1] * thumb.shape[-2])
        x.view(thumb.shape).copy_(thumb)
        mean = float(_gray(_pointwise(x, p, None, q, t, upto_contrast=True), t[5]).mean())
    x, q, t = scratch.take(h * w)
    x.view(3, h, w).copy_(patch)
    res = _pointwise(x, p, mean, q, t).numpy().reshape(3, h, w)
    perm = p.permutation or (0, 1, 2)
    dst = out.numpy()
    for i in range(3):  # numpy's float->uint8 cast is several times faster than torch's here
        np.copyto(dst[i], res[perm[i]], casting="unsafe")
    return out
