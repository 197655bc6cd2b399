"""SSD training augmentation (the paper's distribution) computed with one resample per image.

The distribution is that of the classic SSD ports as composed from ``torchvision.transforms.v2`` in
:mod:`ssdcli.data.reference_aug` (the reference): photometric distortion (brightness 0.875..1.125, contrast
0.5..1.5 before or after saturation 0.5..1.5 and hue +-0.05 turn = +-18 degrees, channel permutation; each
with p=0.5), zoom-out with p=0.5 to a canvas ``U(1,4)`` times the image filled with the mean pixel, min-IoU
crop (mode among keep-whole, 0.1, 0.3, 0.5, 0.7, 0.9, unconstrained; 50 trials; sides ``U(0.3,1)`` of the
canvas, aspect 0.5..2; boxes kept when their centre is inside), horizontal flip p=0.5, warp to ``S x S``.

What differs is the cost. :meth:`SSDTrainAugment.sample` decides the whole geometric chain on integers and
box coordinates (:class:`GeometryParams`, in the v2 kernels' own parameter order), then
:meth:`SSDTrainAugment.render` materialises only the source pixels the crop sees, resized once (bilinear,
antialiased, uint8) into their rectangle of the ``S x S`` output; the rest is the fill colour. The photometric
chain runs on that small patch, with the contrast mean taken from a thumbnail of the whole source, as the
reference (which distorts before zooming) does. The patch edges are rounded to whole output pixels (at most
half a pixel off the exact geometry; a little more when the source was decoded at reduced scale) and the
returned boxes follow the rendered patch exactly, so boxes and pixels always agree.
The photometric steps are :mod:`ssdcli.data.photometric` (its names are re-exported here).

All randomness comes from the ``torch.Generator`` passed in; the global RNGs are not touched.

Boxes in: VOC pixel convention (:mod:`ssdcli.boxes`) ``[K,4]``; boxes out: relative xyxy in ``[0,1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from ssdcli.data.photometric import PhotometricParams, Scratch, photometric_distort, sample_photometric
from ssdcli.errors import SsdError
from ssdcli.preprocess import IMAGENET, Preprocess

__all__ = [
    "MIN_IOU_OPTIONS",
    "GeometryParams",
    "AugmentPlan",
    "PhotometricParams",
    "sample_photometric",
    "photometric_distort",
    "TrainAugment",
    "SSDTrainAugment",
    "voc_to_continuous",
]

# v2.RandomIoUCrop's options: 0.0 = any crop holding a box centre, >= 1.0 = keep the whole canvas.
MIN_IOU_OPTIONS: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


@dataclass(frozen=True, eq=False)
class GeometryParams:
    """Geometric part of one draw, in the parameter order of ``torchvision.transforms.v2.functional``.

    ``padding``: zoom-out ``(left, top, right, bottom)`` source pixels of fill (``F.pad``), None = no zoom-out.
    ``crop``: ``(top, left, height, width)`` in canvas pixels (``F.crop``), None = keep the whole canvas.
    ``min_iou``: the crop mode drawn (an entry of :data:`MIN_IOU_OPTIONS`; 1.0 = keep whole).
    ``keep``: bool ``[K]`` boxes whose centre lies in the crop (all True without a crop).
    """

    width: int
    height: int
    padding: tuple[int, int, int, int] | None
    crop: tuple[int, int, int, int] | None
    min_iou: float
    flip: bool
    keep: np.ndarray


@dataclass(frozen=True, eq=False)
class AugmentPlan:
    geometry: GeometryParams
    photometric: PhotometricParams | None


def voc_to_continuous(boxes: torch.Tensor | np.ndarray) -> np.ndarray:
    """VOC pixel boxes ``[K,4]`` -> continuous pixel xyxy float64 ``(xmin-1, ymin-1, xmax, ymax)``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, :2] -= 1.0
    return b


def _rand(generator: torch.Generator, *shape: int) -> np.ndarray:
    return torch.rand(*shape, generator=generator, dtype=torch.float64).numpy()


def _sample_crop(
    cw: int, ch: int, boxes: np.ndarray, generator: torch.Generator, trials: int
) -> tuple[tuple[int, int, int, int] | None, float, np.ndarray]:
    """Min-IoU crop of a ``cw x ch`` canvas as ``v2.RandomIoUCrop`` draws it, all trials of a mode at once.

    ``boxes``: continuous canvas xyxy ``[K,4]``. Returns ``(crop (top,left,h,w) | None, min_iou, keep [K])``.
    """
    k = len(boxes)
    if k == 0:  # v2 redraws modes until "keep whole" comes up: same outcome, without the wasted trials
        return None, 1.0, np.zeros(0, dtype=bool)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while True:
        mode = MIN_IOU_OPTIONS[int(torch.randint(len(MIN_IOU_OPTIONS), (1,), generator=generator))]
        if mode >= 1.0:
            return None, 1.0, np.ones(k, dtype=bool)
        u = _rand(generator, trials, 4)
        new_w = np.floor(cw * (0.3 + 0.7 * u[:, 0]))
        new_h = np.floor(ch * (0.3 + 0.7 * u[:, 1]))
        ok = (new_w > 0) & (new_h > 0) & (new_w >= 0.5 * new_h) & (new_w <= 2.0 * new_h)
        left = np.floor((cw - new_w) * u[:, 2])[:, None]
        top = np.floor((ch - new_h) * u[:, 3])[:, None]
        right, bottom = left + new_w[:, None], top + new_h[:, None]
        inside = (left < cx) & (cx < right) & (top < cy) & (cy < bottom)  # [T,K]
        iw = (np.minimum(boxes[:, 2], right) - np.maximum(boxes[:, 0], left)).clip(min=0)
        ih = (np.minimum(boxes[:, 3], bottom) - np.maximum(boxes[:, 1], top)).clip(min=0)
        inter = iw * ih
        iou = inter / (area + (new_w * new_h)[:, None] - inter)
        ok &= inside.any(1) & (np.where(inside, iou, -1.0).max(1) >= mode)
        if ok.any():
            t = int(np.argmax(ok))
            crop = (int(top[t, 0]), int(left[t, 0]), int(new_h[t]), int(new_w[t]))
            return crop, mode, inside[t].copy()


class TrainAugment:
    """What every family's training augmentation is: a plan drawn from the image size and boxes alone
    (:meth:`sample`), the largest JPEG decode reduction the plan allows (:meth:`max_reduction`), and the rendering
    (:meth:`render`). The dataset plans from the JPEG header and decodes at a reduced scale when it can
    (:mod:`ssdcli.data.dataset`), for any family.

    ``__call__(image uint8 [3,H,W], boxes VOC pixel float32 [K,4], labels int64 [K], generator)`` ->
    ``(image uint8 [3,S,S], boxes float32 [K',4] relative xyxy, labels int64 [K'])``.
    """

    def sample(self, width: int, height: int, boxes: torch.Tensor | np.ndarray, generator: torch.Generator) -> object:
        raise NotImplementedError

    def max_reduction(self, plan: object) -> int:
        """The largest power-of-two decode reduction that leaves the rendering unchanged (1: none)."""
        return 1

    def render(
        self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, plan: object, reduction: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __call__(
        self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        plan = self.sample(image.shape[-1], image.shape[-2], boxes, generator)
        return self.render(image, boxes, labels, plan)


class SSDTrainAugment(TrainAugment):
    """SSD training augmentation producing uint8 ``[3,S,S]`` images and relative xyxy boxes.

    ``__call__(image uint8 [3,H,W], boxes VOC pixel float32 [K,4], labels int64 [K], generator)`` ->
    ``(image uint8 [3,S,S], boxes float32 [K',4] relative xyxy, labels int64 [K'])``. All randomness comes
    from ``generator``. Normalisation is left to the batch (``Preprocess.normalize``).
    """

    def __init__(
        self,
        image_size: int,
        preprocess: Preprocess = IMAGENET,
        *,
        photometric: bool = True,
        zoom_out_p: float = 0.5,
        max_zoom_out: float = 4.0,
        flip_p: float = 0.5,
        trials: int = 50,
    ) -> None:
        if int(image_size) < 8:
            raise SsdError(f"image size: must be at least 8 pixels, got {image_size}")
        self.size = int(image_size)
        self.fill = preprocess.fill_value_uint8()
        self.photometric = photometric
        self.zoom_out_p, self.max_zoom_out, self.flip_p, self.trials = zoom_out_p, max_zoom_out, flip_p, trials
        self._canvas = torch.tensor(self.fill, dtype=torch.uint8).view(3, 1, 1).repeat(1, self.size, self.size)
        self._scratch = Scratch()

    # -- planning: geometry on numbers only -----------------------------------------------------------------
    def sample(
        self, width: int, height: int, boxes: torch.Tensor | np.ndarray, generator: torch.Generator
    ) -> AugmentPlan:
        """Draw one augmentation for a ``width x height`` image with VOC pixel ``boxes [K,4]``."""
        photo = sample_photometric(generator) if self.photometric else None
        u = _rand(generator, 4).tolist()
        b = voc_to_continuous(boxes)
        padding = None
        cw, ch = width, height
        if u[0] < self.zoom_out_p:
            r = 1.0 + u[1] * (self.max_zoom_out - 1.0)
            cw, ch = int(width * r), int(height * r)
            left, top = int((cw - width) * u[2]), int((ch - height) * u[3])
            padding = (left, top, cw - width - left, ch - height - top)
            b = b + np.array([left, top, left, top], dtype=np.float64)
        crop, mode, keep = _sample_crop(cw, ch, b, generator, self.trials)
        flip = bool(_rand(generator, 1)[0] < self.flip_p)
        geom = GeometryParams(int(width), int(height), padding, crop, mode, flip, keep)
        return AugmentPlan(geom, photo)

    def _layout(self, g: GeometryParams) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """Source rectangle ``(x0,y0,x1,y1)`` the crop sees and its rounded output rectangle (same order)."""
        pl, pt = (g.padding[0], g.padding[1]) if g.padding else (0, 0)
        cw = g.width + (g.padding[0] + g.padding[2] if g.padding else 0)
        ch = g.height + (g.padding[1] + g.padding[3] if g.padding else 0)
        top, left, h, w = g.crop if g.crop else (0, 0, ch, cw)
        x0, x1 = max(left - pl, 0), min(left + w - pl, g.width)
        y0, y1 = max(top - pt, 0), min(top + h - pt, g.height)
        s = self.size
        out = (
            round((x0 + pl - left) * s / w), round((y0 + pt - top) * s / h),
            round((x1 + pl - left) * s / w), round((y1 + pt - top) * s / h),
        )
        return (x0, y0, x1, y1), out

    def max_reduction(self, plan: AugmentPlan) -> int:
        """Largest decode reduction (1, 2, 4 or 8) keeping the source at least as sharp as its output patch."""
        (x0, y0, x1, y1), (ox0, oy0, ox1, oy1) = self._layout(plan.geometry)
        k = 1
        while k < 8 and (x1 - x0) >= 2 * k * max(ox1 - ox0, 1) and (y1 - y0) >= 2 * k * max(oy1 - oy0, 1):
            k *= 2
        return k

    # -- rendering: one resample ----------------------------------------------------------------------------
    def render(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | np.ndarray,
        labels: torch.Tensor,
        plan: AugmentPlan,
        reduction: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Materialise ``plan`` from ``image``: the source, or the source decoded at ``1/reduction`` scale
        (``ceil(W/reduction) x ceil(H/reduction)``, as JPEG DCT scaling gives). ``boxes``: the source's VOC boxes."""
        g, s, k = plan.geometry, self.size, reduction
        (x0, y0, x1, y1), (ox0, oy0, ox1, oy1) = self._layout(g)
        hr, wr = image.shape[-2:]
        if (wr, hr) != (-(-g.width // k), -(-g.height // k)):
            raise ValueError(f"image is {wr}x{hr}, plan expects {g.width}x{g.height} at 1/{k}")
        red = (x0 // k, y0 // k, min(-(-x1 // k), wr), min(-(-y1 // k), hr))
        drawn = ox1 > ox0 and oy1 > oy0 and red[2] > red[0] and red[3] > red[1]
        # where the (whole-pixel) reduced crop lands: a little beyond the output rectangle, cut back after resizing
        land = (ox0, oy0, ox1, oy1)
        if k > 1 and drawn:
            fx, fy = (ox1 - ox0) / (x1 - x0), (oy1 - oy0) / (y1 - y0)
            land = (
                round(ox0 - (x0 - k * red[0]) * fx), round(oy0 - (y0 - k * red[1]) * fy),
                round(ox1 + (k * red[2] - x1) * fx), round(oy1 + (k * red[3] - y1) * fy),
            )
        rect = (s - ox1, oy0, s - ox0, oy1) if g.flip else (ox0, oy0, ox1, oy1)
        out = torch.empty(3, s, s, dtype=torch.uint8) if drawn and rect == (0, 0, s, s) else self._canvas.clone()
        if drawn:
            patch = image[:, red[1] : red[3], red[0] : red[2]]
            if patch.shape[-2:] != (land[3] - land[1], land[2] - land[0]):
                if patch.stride(0) != 1 or patch.stride(1) != 3 * patch.shape[2]:
                    # packed channels-last (HWC): the input torch's uint8 antialiased kernel runs on without repacking
                    patch = patch.permute(1, 2, 0).contiguous().permute(2, 0, 1)
                patch = TF.resize(patch, [land[3] - land[1], land[2] - land[0]], antialias=True)
            patch = patch[:, oy0 - land[1] : oy1 - land[1], ox0 - land[0] : ox1 - land[0]]
            if g.flip:
                patch = patch.flip(-1)
            dst = out[:, rect[1] : rect[3], rect[0] : rect[2]]
            if plan.photometric is not None:
                photometric_distort(patch, plan.photometric, whole_image=image, out=dst, scratch=self._scratch)
            else:
                dst.copy_(patch)
        return out, *self._boxes(g, boxes, labels, (x0, y0, x1, y1), red, land, (ox0, oy0, ox1, oy1), k)

    def _boxes(
        self,
        g: GeometryParams,
        boxes: torch.Tensor | np.ndarray,
        labels: torch.Tensor,
        src: tuple[int, int, int, int],
        red: tuple[int, int, int, int],
        land: tuple[int, int, int, int],
        rect: tuple[int, int, int, int],
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes through the rendered mapping: source px -> reduced px -> landing rect (cut to the drawn ``rect``)
        -> flip -> relative. Boxes under one output pixel wide or high are dropped (as v2's Sanitize after Resize)."""
        s = self.size
        (x0, y0, x1, y1), (a0, b0, a1, b1), (u0, v0, u1, v1) = src, red, land
        b = voc_to_continuous(boxes)[g.keep]
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)[torch.from_numpy(g.keep)]
        b = b.clip([x0, y0, x0, y0], [x1, y1, x1, y1]) / k
        sx, sy = (u1 - u0) / max(a1 - a0, 1), (v1 - v0) / max(b1 - b0, 1)
        out = ((b - [a0, b0, a0, b0]) * [sx, sy, sx, sy] + [u0, v0, u0, v0]).clip(rect[:2] * 2, rect[2:] * 2)
        if g.flip:
            out = np.stack([s - out[:, 2], out[:, 1], s - out[:, 0], out[:, 3]], axis=1)
        valid = ((out[:, 2] - out[:, 0]) >= 1.0) & ((out[:, 3] - out[:, 1]) >= 1.0)
        rel = torch.from_numpy((out[valid] / s).clip(0.0, 1.0).astype(np.float32)).reshape(-1, 4)
        return rel, labels[torch.from_numpy(valid)]
