"""The SSD training augmentation composed plainly from ``torchvision.transforms.v2`` (the reference).

:class:`ReferenceAugment` is the paper's pipeline as torchvision spells it: ``RandomPhotometricDistort`` ->
``RandomZoomOut(fill=mean, side_range=(1,4), p=0.5)`` -> ``RandomIoUCrop(trials=50)`` ->
``RandomHorizontalFlip`` -> ``Resize(S x S)`` -> ``ClampBoundingBoxes`` -> ``SanitizeBoundingBoxes``, on
``tv_tensors``. It has the call signature of :class:`ssdcli.data.transforms.SSDTrainAugment`, which must
match its distribution; it is the slow reference (tests, benchmark), not the training path. v2 draws from the
global torch RNG, so each call runs under a forked RNG seeded from the passed generator.

:func:`reference_geometry` / :func:`reference_photometric` apply given parameters (as drawn by the fast path)
through the v2 kernels, for one-to-one comparisons.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ssdcli.data.transforms import MIN_IOU_OPTIONS, GeometryParams, PhotometricParams, voc_to_continuous
from ssdcli.preprocess import IMAGENET, Preprocess

__all__ = ["ReferenceAugment", "reference_geometry", "reference_photometric"]


class _RecordingOptions(list):
    """RandomIoUCrop's option list that remembers the index last read: the min-IoU mode of the accepted crop."""

    last: int = -1

    def __getitem__(self, i):  # type: ignore[override]
        self.last = i
        return super().__getitem__(i)


def _to_tv(image: torch.Tensor, boxes: torch.Tensor) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes]:
    h, w = image.shape[-2:]
    cont = torch.from_numpy(voc_to_continuous(boxes)).float()
    return tv_tensors.Image(image), tv_tensors.BoundingBoxes(cont, format="XYXY", canvas_size=(h, w))


def _to_relative(boxes: torch.Tensor, size: int) -> torch.Tensor:
    return (boxes.as_subclass(torch.Tensor).float() / size).clamp(0.0, 1.0).reshape(-1, 4)


class ReferenceAugment:
    """Plain v2 composition; ``__call__`` as :class:`~ssdcli.data.transforms.SSDTrainAugment`.

    ``last_min_iou`` holds the crop mode of the latest call (1.0 = the whole canvas was kept).
    ``max_zoom_out``: the zoom-out ratio limit (None: the paper's 4; 1 or less: no zoom-out).
    """

    def __init__(
        self, image_size: int, preprocess: Preprocess = IMAGENET, trials: int = 50, max_zoom_out: float | None = None
    ) -> None:
        self.size = int(image_size)
        self.iou_crop = v2.RandomIoUCrop(trials=trials)
        self.iou_crop.options = _RecordingOptions(MIN_IOU_OPTIONS)
        zoom = 4.0 if max_zoom_out is None else float(max_zoom_out)  # as SSDTrainAugment: <= 1 turns zoom-out off
        fill = list(preprocess.fill_value_uint8())
        zoom_out = [v2.RandomZoomOut(fill=fill, side_range=(1.0, zoom), p=0.5)] if zoom > 1.0 else []
        self.transform = v2.Compose(
            [
                v2.RandomPhotometricDistort(p=0.5),
                *zoom_out,
                self.iou_crop,
                v2.RandomHorizontalFlip(p=0.5),
                v2.Resize((self.size, self.size), antialias=True),
                v2.ClampBoundingBoxes(),  # Resize can leave an edge at S + 1e-5, which Sanitize would drop
                v2.SanitizeBoundingBoxes(min_size=1.0),
            ]
        )
        self.last_min_iou = 1.0

    def __call__(
        self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        img, bb = _to_tv(image, boxes)
        sample = {"image": img, "boxes": bb, "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1)}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = self.transform(sample)
        options = self.iou_crop.options
        self.last_min_iou = float(options[options.last]) if options.last >= 0 else 1.0
        options.last = -1
        return out["image"].as_subclass(torch.Tensor), _to_relative(out["boxes"], self.size), out["labels"]


def reference_geometry(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    geometry: GeometryParams,
    image_size: int,
    fill: tuple[int, int, int] = IMAGENET.fill_value_uint8(),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply fixed zoom-out / crop / flip / resize parameters with the v2 kernels (uint8 in, relative boxes out)."""
    img, bb = _to_tv(image, boxes)
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if geometry.padding is not None:
        img, bb = F.pad(img, list(geometry.padding), fill=list(fill)), F.pad(bb, list(geometry.padding))
    if geometry.crop is not None:
        top, left, h, w = geometry.crop
        img, bb = F.crop(img, top, left, h, w), F.crop(bb, top, left, h, w)
        bb[~torch.from_numpy(geometry.keep)] = 0  # as RandomIoUCrop marks boxes whose centre is outside
    if geometry.flip:
        img, bb = F.horizontal_flip(img), F.horizontal_flip(bb)
    img = F.resize(img, [image_size, image_size], antialias=True)
    bb = F.clamp_bounding_boxes(F.resize(bb, [image_size, image_size]))
    out = v2.SanitizeBoundingBoxes(min_size=1.0)({"image": img, "boxes": bb, "labels": labels})
    return out["image"].as_subclass(torch.Tensor), _to_relative(out["boxes"], image_size), out["labels"]


def reference_photometric(image: torch.Tensor, p: PhotometricParams) -> torch.Tensor:
    """Apply fixed photometric parameters with the v2 kernels, in RandomPhotometricDistort's order."""
    x = image
    if p.brightness is not None:
        x = F.adjust_brightness(x, p.brightness)
    if p.contrast is not None and p.contrast_before:
        x = F.adjust_contrast(x, p.contrast)
    if p.saturation is not None:
        x = F.adjust_saturation(x, p.saturation)
    if p.hue is not None:
        x = F.adjust_hue(x, p.hue)
    if p.contrast is not None and not p.contrast_before:
        x = F.adjust_contrast(x, p.contrast)
    if p.permutation is not None:
        x = F.permute_channels(x, list(p.permutation))
    return x
