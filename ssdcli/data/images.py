"""Image reading: every supported format to an RGB uint8 tensor ``[3,H,W]``, EXIF orientation applied.

JPEG/PNG/WebP go through ``torchvision.io`` (libjpeg-turbo, fastest here); BMP/TIFF and anything else Pillow
reads go through Pillow. Content is sniffed, not trusted from the extension (a PNG named ``.jpg`` works).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image

from ssdcli.errors import SsdError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
_TORCHVISION_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"RIFF")
Image.MAX_IMAGE_PIXELS = 25_000 * 25_000  # allow big photos (up to ~625 MP) but not decompression bombs


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to RGB uint8 ``[3,H,W]``. Raises :class:`SsdError` naming the file on failure."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SsdError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data:
        raise SsdError(f"{path}: empty file")
    if data.startswith(_TORCHVISION_MAGIC):
        try:
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return _as_uint8(decode_image(buf, mode=ImageReadMode.RGB, apply_exif_orientation=True))
        except RuntimeError:
            pass  # truncated or unusual file: let Pillow try, it tolerates more and gives clearer errors
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
            return pil_to_tensor(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise SsdError(f"{path}: not a readable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    """16-bit PNGs decode to uint16: scale them to uint8 like every other image."""
    if image.dtype == torch.uint8:
        return image
    from torchvision.transforms.v2 import functional as TF

    return TF.to_dtype(image, torch.uint8, scale=True)


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """Any PIL image (grayscale, RGBA, palette, 16-bit) -> RGB uint8 ``[3,H,W]``."""
    if im.mode != "RGB":
        im = im.convert("RGB")
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def to_image_tensor(image: "str | os.PathLike | Image.Image | np.ndarray | torch.Tensor") -> torch.Tensor:
    """Path, PIL image, HWC uint8 array, or CHW uint8 tensor -> RGB uint8 ``[3,H,W]``."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_tensor(image)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise SsdError(f"image array must be HxW or HxWx(1|3|4), got shape {arr.shape}")
        arr = arr[..., :3] if arr.shape[2] >= 3 else np.repeat(arr, 3, axis=2)
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise SsdError(f"image tensor must be [3,H,W] (or [1,H,W]), got {list(image.shape)}")
        t = image if image.dtype == torch.uint8 else image.clamp(0, 255).to(torch.uint8)
        return t.expand(3, -1, -1).contiguous() if t.shape[0] == 1 else t
    raise SsdError(f"unsupported image type {type(image).__name__}")


def resize_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Warp an RGB uint8 ``[3,H,W]`` image to ``[3,size,size]`` (bilinear, antialiased): SSD's test-time resize."""
    from torchvision.transforms.v2 import functional as TF

    if image.shape[-2:] == (size, size):
        return image
    return TF.resize(image, [size, size], antialias=True)
