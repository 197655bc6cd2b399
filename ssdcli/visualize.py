"""Drawing detections on pictures people look at (Pillow).

Boxes come in the VOC pixel convention of :mod:`ssdcli.boxes` (1-based inclusive ``xmin, ymin, xmax, ymax``
in ORIGINAL-image pixels). The outline's outer edge lies exactly on the box's extreme pixels: pixel columns
``xmin..xmax`` (1-based) are the outline's left/right columns and the line grows inwards, so nothing is drawn
outside the box except the label tag.

Pictures may be drawn on a downscaled copy of the image (huge inputs are capped at :data:`MAX_DRAW_SIDE`
pixels on the longest side when decoded, see :mod:`ssdcli.engine.detect`); boxes are then mapped through the continuous
coordinates (pixel ``i`` covers ``[i-1, i]``) and rounded. Line width and font size follow the size of the
picture actually drawn, so a label reads the same on a 200 px and a 4000 px image.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from ssdcli.inference import Prediction

MAX_DRAW_SIDE = 4096  # longest side of a saved picture; larger inputs are drawn on a downscaled copy

# Twenty well-separated colours (Trubetskoy's "20 distinct colours", white/black left out), most distinct
# first; class ``k`` (1-based) gets ``PALETTE[(k - 1) % len(PALETTE)]``, so the 20 VOC classes never share one.
PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    for h in (
        "e6194b", "3cb44b", "4363d8", "f58231", "911eb4", "42d4f4", "f032e6", "bfef45", "ffe119", "469990",
        "dcbeff", "9a6324", "800000", "aaffc3", "808000", "ffd8b1", "000075", "a9a9a9", "fabed4", "fffac8",
    )
)


def class_color(label: int) -> tuple[int, int, int]:
    """Colour of a 1-based class index (fixed: the same class has the same colour in every picture)."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def text_color(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``fill`` (perceived luminance)."""
    r, g, b = fill
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def style_for(width: int, height: int) -> tuple[int, int]:
    """``(line_width, font_size)`` in pixels for a picture of this size: ~0.3% and ~2.4% of the mean side.

    200x200 -> (1, 10); 640x480 -> (2, 13); 4000x3000 -> (10, 84).
    """
    side = (width + height) / 2
    return max(1, round(side * 0.003)), max(10, round(side * 0.024))


@lru_cache(maxsize=32)
def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib) at ``size`` px; Pillow's built-in font when it is unavailable."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)
    except Exception:  # noqa: BLE001 - no matplotlib, no FreeType, unreadable font: any font beats none
        try:
            return ImageFont.load_default(size)
        except TypeError:  # Pillow < 10.1 has no sized default font
            return ImageFont.load_default()


def box_pixels(boxes: np.ndarray, original_size: tuple[int, int], canvas_size: tuple[int, int]) -> np.ndarray:
    """VOC pixel boxes ``[K,4]`` of an image of ``original_size`` (W, H) -> 0-based inclusive pixel
    rectangles ``[K,4]`` (left, top, right, bottom, int64) on a canvas of ``canvas_size`` (W, H).

    Same size: ``(xmin-1, ymin-1, xmax-1, ymax-1)`` rounded. Scaled: continuous edges ``(xmin-1, xmax)`` are
    scaled, the first/last covered pixel is ``round(x1)`` / ``round(x2)-1`` (at least one pixel wide).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sx = canvas_size[0] / original_size[0]
    sy = canvas_size[1] / original_size[1]
    x1, y1 = np.rint((boxes[:, 0] - 1) * sx), np.rint((boxes[:, 1] - 1) * sy)
    x2, y2 = np.rint(boxes[:, 2] * sx) - 1, np.rint(boxes[:, 3] * sy) - 1
    x1 = np.clip(x1, 0, canvas_size[0] - 1)
    y1 = np.clip(y1, 0, canvas_size[1] - 1)
    x2 = np.clip(np.maximum(x2, x1), 0, canvas_size[0] - 1)
    y2 = np.clip(np.maximum(y2, y1), 0, canvas_size[1] - 1)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)


def draw_boxes(
    image: Image.Image,
    boxes: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    names: Sequence[str],
    original_size: tuple[int, int] | None = None,
    show_labels: bool = True,
) -> Image.Image:
    """Draw boxes with a ``"name 0.87"`` tag each, in place on an RGB ``image``, and return it.

    ``boxes`` ``[K,4]`` VOC pixels of the original image of ``original_size`` (W, H; default: ``image.size``);
    ``labels`` 1-based class indices (pick the colour), ``names`` the class names printed in the tags.
    Higher scores are drawn last (on top); tags are drawn after all outlines and kept inside the image.
    """
    if image.mode != "RGB":
        raise ValueError(f"draw_boxes needs an RGB image, got mode {image.mode}")
    k = len(scores)
    if k == 0:
        return image
    rects = box_pixels(boxes, original_size or image.size, image.size)
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    line_width, font_size = style_for(*image.size)
    draw = ImageDraw.Draw(image)
    for i in order:
        draw.rectangle(rects[i].tolist(), outline=class_color(labels[i]), width=line_width)
    if show_labels:
        font = load_font(font_size)
        for i in order:
            _draw_tag(draw, font, rects[i], f"{names[i]} {float(scores[i]):.2f}", class_color(labels[i]), image.size)
    return image


def _draw_tag(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    rect: np.ndarray,
    text: str,
    fill: tuple[int, int, int],
    size: tuple[int, int],
) -> None:
    """A filled tag sitting on the box's top edge (outside when there is room above, else just inside)."""
    left, top = int(rect[0]), int(rect[1])
    tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=font)
    pad = max(1, round((ty1 - ty0) * 0.2))
    tag_w, tag_h = tx1 - tx0 + 2 * pad, ty1 - ty0 + 2 * pad
    x = max(0, min(left, size[0] - tag_w))
    y = top - tag_h if top - tag_h >= 0 else top
    y = max(0, min(y, size[1] - tag_h))
    draw.rectangle([x, y, x + tag_w - 1, y + tag_h - 1], fill=fill)
    draw.text((x + pad - tx0, y + pad - ty0), text, fill=text_color(fill), font=font)


def draw_prediction(image: Image.Image, prediction: Prediction, show_labels: bool = True) -> Image.Image:
    """Draw a :class:`ssdcli.inference.Prediction` (original-image pixels) on ``image`` (original or downscaled)."""
    return draw_boxes(
        image,
        prediction.boxes,
        prediction.labels,
        prediction.scores,
        prediction.names,
        original_size=(prediction.width, prediction.height),
        show_labels=show_labels,
    )


def draw_ground_truth(
    image: Image.Image,
    boxes: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    names: Sequence[str],
    difficult: Sequence[bool] | np.ndarray | None = None,
    original_size: tuple[int, int] | None = None,
    show_labels: bool = True,
) -> Image.Image:
    """Draw ground-truth boxes in place, the way :func:`draw_boxes` draws detections (same colours, line width,
    tags) with the class name alone in the tag. Difficult / crowd objects (``difficult``) get a dashed outline and
    a ``"name (difficult)"`` tag, and are drawn first (under the others). ``names``: one name per box."""
    if image.mode != "RGB":
        raise ValueError(f"draw_ground_truth needs an RGB image, got mode {image.mode}")
    k = len(labels)
    if k == 0:
        return image
    hard = np.zeros(k, bool) if difficult is None else np.asarray(difficult, bool).reshape(-1)
    rects = box_pixels(boxes, original_size or image.size, image.size)
    order = np.argsort(~hard, kind="stable")  # difficult ones first
    line_width, font_size = style_for(*image.size)
    draw = ImageDraw.Draw(image)
    for i in order:
        if hard[i]:
            _dashed_rectangle(draw, rects[i], class_color(labels[i]), line_width, dash=max(3, 3 * line_width))
        else:
            draw.rectangle(rects[i].tolist(), outline=class_color(labels[i]), width=line_width)
    if show_labels:
        font = load_font(font_size)
        for i in order:
            text = f"{names[i]} (difficult)" if hard[i] else str(names[i])
            _draw_tag(draw, font, rects[i], text, class_color(labels[i]), image.size)
    return image


def _dashed_rectangle(draw: ImageDraw.ImageDraw, rect: np.ndarray, color: tuple[int, int, int], width: int,
                      dash: int) -> None:  # fmt: skip
    """A rectangle outline of ``dash``-pixel dashes and gaps, ``width`` pixels thick, growing inwards (as Pillow's)."""
    x1, y1, x2, y2 = (int(v) for v in rect)
    w = max(1, min(width, (x2 - x1 + 1 + 1) // 2, (y2 - y1 + 1 + 1) // 2))
    for x in range(x1, x2 + 1, 2 * dash):
        end = min(x + dash - 1, x2)
        draw.rectangle([x, y1, end, y1 + w - 1], fill=color)
        draw.rectangle([x, y2 - w + 1, end, y2], fill=color)
    for y in range(y1, y2 + 1, 2 * dash):
        end = min(y + dash - 1, y2)
        draw.rectangle([x1, y, x1 + w - 1, end], fill=color)
        draw.rectangle([x2 - w + 1, y, x2, end], fill=color)
