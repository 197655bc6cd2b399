"""CenterNet training augmentation ("Objects as Points" recipe) with one resample per image.

The recipe of the reference implementation: a random scale ``U(0.6, 1.4)`` of the window the output sees, its
centre drawn uniformly inside the image minus a border (128 source pixels, halved until it fits the image),
horizontal flip with p=0.5, colour jitter (brightness, contrast, saturation, each a factor ``U(0.6, 1.4)``) and
PCA lighting noise (AlexNet's ImageNet RGB eigen-decomposition, std 0.1). Output ``S x S`` uint8.

Differences from the reference, on purpose:

* the window has the **image's own aspect ratio** (``W*scale x H*scale``), not a square of the longer side: this
  tool's test-time input is a warp to ``S x S`` (:func:`ssdcli.data.images.resize_square`), so at scale 1 with the
  centre in the middle this augmentation *is* the test-time transform and the size head learns the aspect the
  detector sees at test time (a square window would teach it the letterboxed aspect);
* the scale is continuous, not the reference's ``{0.6, 0.7, ..., 1.3}``; the centre is continuous too;
* the area outside the image is the mean pixel (zero after normalisation, as SSD's zoom-out), not black;
* uint8 arithmetic for the colour steps (:func:`ssdcli.data.photometric.photometric_distort`: clamped and
  truncated after each step, contrast mean of the whole output); in real arithmetic brightness, contrast and
  saturation commute, so the reference's random order reduces to contrast before or after saturation.

Cost: :meth:`CenterNetTrainAugment.sample` decides everything on numbers (:class:`CenterNetPlan`);
:meth:`CenterNetTrainAugment.render` resizes only the source pixels the window sees (antialiased, uint8) into
their rectangle of the output, then flips and colours the ``S x S`` output. The rectangle's edges are rounded to
whole output pixels and the boxes follow the rendered mapping exactly, so boxes and pixels always agree.
``render`` also accepts a source decoded at ``1/2``, ``1/4`` or ``1/8`` scale (``max_reduction`` says which
is safe), the same planning interface as :class:`ssdcli.data.transforms.SSDTrainAugment`.

All randomness comes from the ``torch.Generator`` passed in. Boxes in: VOC pixel convention
(:mod:`ssdcli.boxes`) ``[K,4]``; boxes out: relative xyxy ``[K',4]`` clipped to the image area of the output,
boxes under ``min_size`` output pixels wide or high dropped (with their labels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from ssdcli.data.photometric import PhotometricParams, Scratch, photometric_distort
from ssdcli.data.transforms import TrainAugment, voc_to_continuous
from ssdcli.errors import SsdError
from ssdcli.preprocess import IMAGENET, Preprocess

__all__ = ["CenterNetPlan", "CenterNetTrainAugment", "centre_border", "PCA_EIGVAL", "PCA_EIGVEC"]

# ImageNet RGB colour PCA (Krizhevsky et al. 2012), eigenvalues for pixel values in [0, 1]; columns = eigenvectors.
PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


def centre_border(border: int, size: int) -> int:
    """The reference rule: ``border`` halved until ``size - b > b`` (0 for a 1-pixel side)."""
    b = int(border)
    while b > 0 and size - b <= b:
        b //= 2
    return b


@dataclass(frozen=True, eq=False)
class CenterNetPlan:
    """One draw. ``window``: source region ``(x0, y0, x1, y1)`` in continuous pixel coordinates (pixel ``i``
    covers ``[i, i+1)``) that is warped onto the ``S x S`` output (may reach outside the image); ``lighting``:
    RGB offsets in 0..255 units added after the colour jitter (None = off)."""

    width: int
    height: int
    window: tuple[float, float, float, float]
    flip: bool
    photometric: PhotometricParams | None
    lighting: tuple[float, float, float] | None


@dataclass(frozen=True)
class _Layout:
    """Integer rendering geometry along one image (for one reduction ``k``): reduced source pixels
    ``[r0, r1)`` are resized onto output pixels ``[l0, l1)`` (may overhang ``[0, S]``), of which ``[d0, d1)`` is kept."""

    r0: int
    r1: int
    l0: int
    l1: int
    d0: int
    d1: int


def _axis(w0: float, w1: float, full: int, k: int, size: int) -> _Layout | None:
    """Layout along one axis: window ``[w0, w1]`` of a ``full``-pixel side, source reduced by ``k``."""
    v0, v1 = max(w0, 0.0), min(w1, float(full))
    if v1 <= v0:
        return None
    reduced = -(-full // k)
    r0 = min(int(math.floor(v0 / k)), reduced - 1)
    r1 = max(min(int(math.ceil(v1 / k)), reduced), r0 + 1)
    f = size / (w1 - w0)
    l0 = round((k * r0 - w0) * f)
    l1 = max(round((k * r1 - w0) * f), l0 + 1)
    d0, d1 = max(l0, 0), min(l1, size)
    return _Layout(r0, r1, l0, l1, d0, d1) if d1 > d0 else None


class CenterNetTrainAugment(TrainAugment):
    """``__call__(image uint8 [3,H,W], boxes VOC pixel float32 [K,4], labels int64 [K], generator)`` ->
    ``(image uint8 [3,S,S], boxes float32 [K',4] relative xyxy, labels int64 [K'])``; see the module docstring.

    ``color``: jitter strength (factors ``U(1-color, 1+color)``; 0 = off); ``lighting_std``: PCA lighting std
    (0 = off); ``border``: the reference's centre border in source pixels (:func:`centre_border`).
    """

    def __init__(
        self,
        image_size: int,
        preprocess: Preprocess = IMAGENET,
        *,
        scale_range: tuple[float, float] = (0.6, 1.4),
        border: int = 128,
        flip_p: float = 0.5,
        color: float = 0.4,
        lighting_std: float = 0.1,
        min_size: float = 1.0,
    ) -> None:
        if int(image_size) < 8:
            raise SsdError(f"image size: must be at least 8 pixels, got {image_size}")
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise SsdError(f"scale range: need 0 < min <= max, got {scale_range}")
        if not 0 <= color < 1:
            raise SsdError(f"colour jitter: must be in [0, 1), got {color}")
        self.size = int(image_size)
        self.scale_range = (lo, hi)
        self.border, self.flip_p, self.color = int(border), float(flip_p), float(color)
        self.lighting_std, self.min_size = float(lighting_std), float(min_size)
        self.fill = preprocess.fill_value_uint8()
        self._canvas = torch.tensor(self.fill, dtype=torch.uint8).view(3, 1, 1).repeat(1, self.size, self.size)
        self._scratch = Scratch()

    # -- planning: numbers only ------------------------------------------------------------------------------
    def sample(
        self, width: int, height: int, boxes: torch.Tensor | np.ndarray | None, generator: torch.Generator
    ) -> CenterNetPlan:
        """Draw one augmentation for a ``width x height`` image (``boxes`` unused: the recipe ignores them).
        Always draws the same number of values from ``generator``."""
        u = torch.rand(8, generator=generator, dtype=torch.float64).tolist()
        light = torch.randn(3, generator=generator, dtype=torch.float64).numpy()
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * u[0]
        bw, bh = centre_border(self.border, width), centre_border(self.border, height)
        cx = bw + (width - 2 * bw) * u[1]
        cy = bh + (height - 2 * bh) * u[2]
        hw, hh = width * scale / 2, height * scale / 2
        photo = None
        if self.color > 0:
            b, c, s = (1 - self.color + 2 * self.color * v for v in u[4:7])
            photo = PhotometricParams(brightness=b, contrast=c, saturation=s, contrast_before=u[7] < 0.5)
        lighting = None
        if self.lighting_std > 0:
            lighting = tuple(float(v) for v in 255.0 * PCA_EIGVEC @ (PCA_EIGVAL * light * self.lighting_std))
        return CenterNetPlan(
            int(width), int(height), (cx - hw, cy - hh, cx + hw, cy + hh), u[3] < self.flip_p, photo, lighting
        )

    def _layouts(self, plan: CenterNetPlan, k: int) -> tuple[_Layout, _Layout] | None:
        x0, y0, x1, y1 = plan.window
        ax = _axis(x0, x1, plan.width, k, self.size)
        ay = _axis(y0, y1, plan.height, k, self.size)
        return None if ax is None or ay is None else (ax, ay)

    def max_reduction(self, plan: CenterNetPlan) -> int:
        """Largest decode reduction (1, 2, 4 or 8) keeping the source at least as sharp as the output."""
        lay = self._layouts(plan, 1)
        if lay is None:
            return 8
        ax, ay = lay
        k = 1
        while k < 8 and (ax.r1 - ax.r0) >= 2 * k * (ax.l1 - ax.l0) and (ay.r1 - ay.r0) >= 2 * k * (ay.l1 - ay.l0):
            k *= 2
        return k

    # -- rendering: one resample ----------------------------------------------------------------------------
    def render(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | np.ndarray,
        labels: torch.Tensor,
        plan: CenterNetPlan,
        reduction: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Materialise ``plan`` from ``image`` (the source, or the source decoded at ``1/reduction`` scale:
        ``ceil(W/k) x ceil(H/k)``). ``boxes``: the full-resolution source's VOC pixel boxes ``[K,4]``."""
        s, k = self.size, int(reduction)
        want = (-(-plan.width // k), -(-plan.height // k))
        if (image.shape[-1], image.shape[-2]) != want:
            raise ValueError(f"image is {image.shape[-1]}x{image.shape[-2]}, plan expects {plan.width}x{plan.height} at 1/{k}")
        lay = self._layouts(plan, k)
        full = lay is not None and (lay[0].d0, lay[1].d0, lay[0].d1, lay[1].d1) == (0, 0, s, s)
        out = torch.empty(3, s, s, dtype=torch.uint8) if full else self._canvas.clone()
        if lay is not None:
            ax, ay = lay
            patch = image[:, ay.r0 : ay.r1, ax.r0 : ax.r1]
            if patch.shape[-2:] != (ay.l1 - ay.l0, ax.l1 - ax.l0):
                if patch.stride(0) != 1 or patch.stride(1) != 3 * patch.shape[2]:
                    patch = patch.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # channels-last: torch's uint8 kernel
                patch = TF.resize(patch, [ay.l1 - ay.l0, ax.l1 - ax.l0], antialias=True)
            patch = patch[:, ay.d0 - ay.l0 : ay.d1 - ay.l0, ax.d0 - ax.l0 : ax.d1 - ax.l0]
            xs = (s - ax.d1, s - ax.d0) if plan.flip else (ax.d0, ax.d1)
            out[:, ay.d0 : ay.d1, xs[0] : xs[1]] = patch.flip(-1) if plan.flip else patch
        self._colour_(out, plan)
        return (out, *self._boxes(plan, boxes, labels, lay, k))

    def _colour_(self, out: torch.Tensor, plan: CenterNetPlan) -> None:
        """Colour jitter then PCA lighting on the whole ``S x S`` output, in place."""
        if plan.photometric is not None:
            photometric_distort(out, plan.photometric, out=out, scratch=self._scratch)
        if plan.lighting is not None:
            delta = torch.tensor([round(v) for v in plan.lighting], dtype=torch.int16)
            if bool(delta.any()):
                out.copy_(out.to(torch.int16).add_(delta.view(3, 1, 1)).clamp_(0, 255))

    def _boxes(
        self,
        plan: CenterNetPlan,
        boxes: torch.Tensor | np.ndarray,
        labels: torch.Tensor,
        lay: tuple[_Layout, _Layout] | None,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes through the rendered mapping (reduced source ``[r0, r1)`` -> output ``[l0, l1)``), clipped to the
        drawn rectangle ``[d0, d1)``, flipped, relative; boxes under ``min_size`` output pixels dropped."""
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        b = voc_to_continuous(boxes)
        if lay is None or len(b) == 0:
            return torch.zeros(0, 4, dtype=torch.float32), labels[:0]
        ax, ay = lay
        sx, sy = (ax.l1 - ax.l0) / (ax.r1 - ax.r0), (ay.l1 - ay.l0) / (ay.r1 - ay.r0)
        scale = np.array([sx, sy, sx, sy]) / k
        shift = np.array([ax.l0 - ax.r0 * sx, ay.l0 - ay.r0 * sy] * 2)
        lo, hi = np.array([ax.d0, ay.d0] * 2, dtype=np.float64), np.array([ax.d1, ay.d1] * 2, dtype=np.float64)
        out = (b * scale + shift).clip(lo, hi)
        if plan.flip:
            out = np.stack([self.size - out[:, 2], out[:, 1], self.size - out[:, 0], out[:, 3]], axis=1)
        valid = ((out[:, 2] - out[:, 0]) >= self.min_size) & ((out[:, 3] - out[:, 1]) >= self.min_size)
        rel = torch.from_numpy((out[valid] / self.size).clip(0.0, 1.0).astype(np.float32)).reshape(-1, 4)
        return rel, labels[torch.from_numpy(valid)]
