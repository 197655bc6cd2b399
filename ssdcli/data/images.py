"""Image reading: the one path every command takes from a file to an RGB uint8 tensor ``[3,H,W]``.

Made to survive any file a user can hand us (``prepare-voc --verify-images``, training, ``eval``, ``detect``,
``benchmark`` and :class:`~ssdcli.inference.Detector` all go through :func:`read_image` /
:func:`decode_image_bytes`, so what passes ``--verify-images`` decodes in training):

1. :func:`read_image_bytes` opens without blocking and refuses anything but a regular file (a FIFO named
   ``pipe.jpg`` cannot hang a command).
2. :func:`probe_image` reads the header only (Pillow) and refuses sizes above :data:`MAX_IMAGE_PIXELS`
   before any pixel buffer is allocated (a 167-byte PNG claiming 30000x30000 is refused, not decoded).
3. Decoding: JPEG through ``torchvision.io.decode_jpeg`` (libjpeg-turbo, fastest; no crash on 440 bit-flipped
   and truncated JPEGs in ``tests/test_fuzz_images.py``' generator), falling back to Pillow; every other format
   through Pillow, never through ``torchvision.io.decode_png``/``decode_image`` (libpng there segfaults on
   PNGs whose pixel data is short; Pillow checks chunk CRCs and raises). Content is sniffed, not trusted from
   the extension (a PNG named ``.jpg`` works). EXIF orientation is applied.

Every failure is an :class:`SsdError` naming the file; no other exception type escapes.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_jpeg

from ssdcli.errors import SsdError, first_line

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
MAX_IMAGE_PIXELS = 1 << 28  # ~268 MP (16384 x 16384): far above any camera, far below a decompression bomb
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow's own guard agrees (we check first, from the header)
_JPEG_FORMATS = ("JPEG", "MPO")  # MPO: multi-picture JPEGs from cameras
_EXIF_ORIENTATION = 0x0112
_DEEP_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, before any decoding."""

    format: str  # Pillow's format name: "JPEG" (also for camera MPO files), "PNG", "WEBP", ...
    width: int  # as displayed: EXIF orientation applied
    height: int
    raw_size: tuple[int, int]  # (width, height) as stored
    orientation: int  # EXIF orientation 1..8 (1 = as stored)


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file; FIFOs, devices, sockets and folders are refused without blocking. SsdError."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise SsdError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SsdError(f"{path}: not a regular file (a folder, FIFO, socket or device); not read")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read()
    except OSError as e:
        raise SsdError(f"{path}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if not data:
        raise SsdError(f"{path}: empty file")
    return data


def check_regular_file(path: str | os.PathLike) -> None:
    """Raise SsdError unless ``path`` is a regular file (follows links; never opens it, so a FIFO cannot block)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise SsdError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        raise SsdError(f"{path}: not a regular file (a folder, FIFO, socket or device); not read")


def probe_image(data: bytes | BinaryIO, path: str | os.PathLike = "image") -> tuple[ImageHeader, Image.Image]:
    """Header of an encoded image (bytes, or a binary file object read lazily) and the lazily opened Pillow
    image (nothing decoded yet). SsdError when the content is not an image or claims more than
    :data:`MAX_IMAGE_PIXELS` pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, EXIF oddities: handled below
            im = Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
            w, h = (int(v) for v in im.size)
            orientation = 1
            if "exif" in im.info:
                try:
                    orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
                except Exception:  # noqa: BLE001 - a damaged EXIF block only loses the rotation
                    orientation = 1
    except Image.DecompressionBombError as e:
        raise SsdError(f"{path}: {_too_big(str(e))}") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for garbage
        raise SsdError(f"{path}: not a readable image ({first_line(e)})") from None
    if w <= 0 or h <= 0:
        raise SsdError(f"{path}: not a readable image (size {w}x{h})")
    if w * h > MAX_IMAGE_PIXELS:
        raise SsdError(f"{path}: header claims {w}x{h} pixels, over the limit of {MAX_IMAGE_PIXELS:,} (not decoded)")
    orientation = orientation if orientation in range(1, 9) else 1
    fmt = "JPEG" if im.format in _JPEG_FORMATS else str(im.format)
    shown = (h, w) if orientation >= 5 else (w, h)
    return ImageHeader(fmt, shown[0], shown[1], (w, h), orientation), im


def _too_big(message: str) -> str:
    found = re.search(r"\((\d+) pixels\)", message)  # Pillow: "Image size (900000000 pixels) exceeds limit..."
    claimed = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return f"header claims {claimed}, over the limit of {MAX_IMAGE_PIXELS:,} (not decoded)"


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to RGB uint8 ``[3,H,W]``. Raises :class:`SsdError` naming the file on any failure."""
    return decode_image_bytes(read_image_bytes(path), path)


def decode_image_bytes(data: bytes, path: str | os.PathLike = "image") -> torch.Tensor:
    """Decode encoded image bytes (``path`` only names them in errors) to RGB uint8 ``[3,H,W]``. SsdError."""
    header, im = probe_image(data, path)
    if header.format == "JPEG":
        try:
            image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                                apply_exif_orientation=True)  # fmt: skip
            if tuple(image.shape[-2:]) == (header.height, header.width):
                return image
        except RuntimeError:
            pass  # damaged or unusual JPEG: Pillow tolerates more and gives clearer errors
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = ImageOps.exif_transpose(im)
            im.load()
            return pil_to_tensor(im)
    except MemoryError:
        raise SsdError(f"{path}: not enough memory to decode {header.width}x{header.height} pixels") from None
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, EOFError, ...
        raise SsdError(f"{path}: not a readable image ({first_line(e)})") from None
    finally:
        im.close()


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """Any PIL image (grayscale, RGBA, palette, 16-bit) -> RGB uint8 ``[3,H,W]``."""
    if im.mode in _DEEP_GRAY_MODES:  # 16-bit grayscale: scale 0..65535 to 0..255 (Pillow's convert would clip)
        gray = np.clip(np.rint(np.asarray(im, dtype=np.float32) / 257.0), 0, 255).astype(np.uint8)
        return torch.from_numpy(gray).expand(3, -1, -1).contiguous()
    if im.mode != "RGB":
        im = im.convert("RGB")
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def to_image_tensor(image: str | os.PathLike | Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
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
