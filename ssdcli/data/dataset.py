"""Training/validation dataset over prepared records, with per-sample deterministic augmentation.

``dataset[(epoch, index)]`` (the keys :class:`ssdcli.engine.sampler.ResumableBatchSampler` yields; a plain
``index`` means epoch 0) returns ``(image uint8 [3,S,S], boxes float32 [K,4] relative xyxy, labels int64 [K])``.
The augmentation of sample ``index`` in ``epoch`` draws from a generator seeded by ``(seed, epoch, index)``
only, so it is the same whatever the number of DataLoader workers or the order the samples are read in.

Decoding: JPEG bytes go through ``torchvision.io.decode_jpeg`` (libjpeg-turbo). With
:class:`~ssdcli.data.transforms.TrainAugment` (every family's training augmentation) the augmentation is planned from the image header first; when
the crop will shrink the source at least 2x, the JPEG is decoded at 1/2, 1/4 or 1/8 scale with Pillow's
``draft`` (DCT-domain scaling), which differs from decoding in full and resizing only by interpolation noise.
Anything else goes through :func:`ssdcli.data.images.decode_image_bytes` (the project's one safe decoder).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from ssdcli.data.images import decode_image_bytes, probe_image, read_image_bytes
from ssdcli.data.records import ImageRecord
from ssdcli.data.transforms import TrainAugment
from ssdcli.errors import SsdError

__all__ = ["DetectionDataset", "collate_detections", "load_sample", "sample_generator"]

Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Transform = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], Sample]
_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_ORIENTATION = 0x0112


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, epoch, index)``."""
    digest = hashlib.blake2b(f"{int(seed)}/{int(epoch)}/{int(index)}".encode(), digest_size=8).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
    return g


def _header(data: bytes) -> tuple[Image.Image, int, int, int] | None:
    """Open a JPEG lazily: ``(image, width, height, exif_orientation)`` as displayed, or None when unreadable or
    over the pixel limit (then :func:`~ssdcli.data.images.decode_image_bytes` decides, and names the file)."""
    try:
        header, im = probe_image(data)
    except SsdError:
        return None
    return im, header.width, header.height, header.orientation


def _decode_reduced(im: Image.Image, width: int, height: int, k: int) -> torch.Tensor | None:
    """Decode at 1/k scale (JPEG DCT scaling) to RGB uint8 ``[3, ceil(H/k), ceil(W/k)]``, or None."""
    want = (-(-width // k), -(-height // k))
    try:
        im.draft("RGB", (width // k, height // k))  # Pillow picks the largest scale whose output is >= the request
        if im.size != want or im.mode not in ("RGB", "L"):
            return None
        im.load()
        if im.mode != "RGB":
            im = im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None  # damaged file: the full decoder, then read_image, report it
    with warnings.catch_warnings():  # Pillow's buffer is read-only; the tensor is only ever read
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(im)).permute(2, 0, 1)  # channels-last view, taken as is by resize


def _decode_jpeg_bytes(data: bytes) -> torch.Tensor:
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return decode_jpeg(buf, mode=ImageReadMode.RGB, apply_exif_orientation=True)


def _planned_jpeg(
    data: bytes, boxes: torch.Tensor, labels: torch.Tensor, aug: TrainAugment, generator: torch.Generator
) -> Sample | None:
    """Plan from the header, decode at the coarsest scale the plan allows, render. None: use the generic path."""
    head = _header(data)
    if head is None:
        return None
    im, width, height, orientation = head
    state = generator.get_state()
    plan = aug.sample(width, height, boxes, generator)
    k = aug.max_reduction(plan)
    image = _decode_reduced(im, width, height, k) if (k > 1 and orientation == 1) else None
    if image is not None:
        return aug.render(image, boxes, labels, plan, reduction=k)
    try:
        image = _decode_jpeg_bytes(data)
    except RuntimeError:
        return None
    if tuple(image.shape[-2:]) != (height, width):  # header and decoder disagree: plan on what was decoded
        generator.set_state(state)
        plan = aug.sample(image.shape[-1], image.shape[-2], boxes, generator)
    return aug.render(image, boxes, labels, plan)


def load_sample(
    path: str | os.PathLike,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    transform: Transform,
    generator: torch.Generator,
    data: bytes | None = None,
) -> Sample:
    """Decode the image at ``path`` (or its bytes ``data``) and apply ``transform``. VOC pixel ``boxes [K,4]``.

    Raises :class:`SsdError` naming the file when it cannot be read or decoded.
    """
    if data is None:
        data = read_image_bytes(path)  # regular files only: a FIFO cannot block a worker
    if isinstance(transform, TrainAugment) and data.startswith(_JPEG_MAGIC):
        state = generator.get_state()
        out = _planned_jpeg(data, boxes, labels, transform, generator)
        if out is not None:
            return out
        generator.set_state(state)
    image = decode_image_bytes(data, path)  # the one safe decoder of ssdcli.data.images, or an SsdError
    return transform(image, boxes, labels, generator)


class DetectionDataset(Dataset):
    """Records -> augmented samples. ``transform(image, boxes VOC px, labels, generator) -> sample``.

    Difficult objects are dropped unless ``keep_difficult`` (as the classic SSD ports train).
    """

    def __init__(
        self, records: Sequence[ImageRecord], transform: Transform, seed: int = 0, keep_difficult: bool = False
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.seed = int(seed)
        self.keep_difficult = keep_difficult

    def __len__(self) -> int:
        return len(self.records)

    def targets(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """VOC pixel boxes ``[K,4]`` float32 and 1-based labels ``[K]`` int64 used for record ``index``."""
        r = self.records[index]
        boxes = np.asarray(r.boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(r.labels, dtype=np.int64).reshape(-1)
        if not self.keep_difficult and len(r.difficult):
            keep = ~np.asarray(r.difficult, dtype=bool)
            boxes, labels = boxes[keep], labels[keep]
        return torch.from_numpy(np.ascontiguousarray(boxes)), torch.from_numpy(np.ascontiguousarray(labels))

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        if isinstance(key, (tuple, list)):
            epoch, index = int(key[0]), int(key[1])
        else:
            epoch, index = 0, int(key)
        boxes, labels = self.targets(index)
        generator = sample_generator(self.seed, epoch, index)
        return load_sample(self.records[index].path, boxes, labels, self.transform, generator)


def collate_detections(batch: Sequence[Sample]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """``[(image [3,S,S], boxes [K_i,4], labels [K_i])]`` -> ``(images uint8 [N,3,S,S], [boxes], [labels])``."""
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch], [b[2] for b in batch]
