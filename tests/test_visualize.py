"""Golden checks of ssdcli.visualize: outlines land exactly on the VOC pixel boxes, on original and scaled canvases."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFont

from ssdcli.inference import Prediction
from ssdcli.visualize import (
    PALETTE,
    box_pixels,
    class_color,
    draw_boxes,
    draw_prediction,
    load_font,
    style_for,
    text_color,
)


def ring(shape: tuple[int, int], left: int, top: int, right: int, bottom: int, width: int) -> np.ndarray:
    """Expected outline mask: 0-based inclusive rectangle, line ``width`` growing inwards."""
    mask = np.zeros(shape, dtype=bool)
    mask[top : bottom + 1, left : right + 1] = True
    mask[top + width : bottom + 1 - width, left + width : right + 1 - width] = False
    return mask


def painted(image: Image.Image, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(np.asarray(image) == np.array(color, dtype=np.uint8), axis=-1)


def test_palette_distinct_and_contrast() -> None:
    assert len(set(PALETTE)) == len(PALETTE) >= 20
    assert len({class_color(k) for k in range(1, 21)}) == 20  # the 20 VOC classes never share a colour
    assert class_color(1) == class_color(1 + len(PALETTE))
    assert text_color((255, 255, 0)) == (0, 0, 0) and text_color((0, 0, 117)) == (255, 255, 255)


def test_style_scales_with_image_size() -> None:
    small, large = style_for(200, 200), style_for(4000, 3000)
    assert small == (1, 10)
    assert large[0] >= 8 and large[1] >= 70  # ~ the same share of a 4000 px picture as 1 px/10 px of 200 px
    assert style_for(640, 480)[0] <= large[0] and style_for(640, 480)[1] <= large[1]


def test_font_is_truetype_from_matplotlib() -> None:
    assert isinstance(load_font(20), ImageFont.FreeTypeFont)


def test_outline_covers_exactly_the_box_pixels() -> None:
    canvas = Image.new("RGB", (200, 100))
    boxes = np.array([[11, 21, 60, 80]], dtype=np.float32)  # VOC: columns 11..60, rows 21..80 (1-based)
    draw_boxes(canvas, boxes, [1], [0.9], ["cat"], show_labels=False)
    lw = style_for(200, 100)[0]
    expected = ring((100, 200), 10, 20, 59, 79, lw)
    np.testing.assert_array_equal(painted(canvas, class_color(1)), expected)
    assert not np.asarray(canvas)[~expected].any()  # nothing else drawn


def test_thick_outline_grows_inwards() -> None:
    canvas = Image.new("RGB", (1600, 1200))
    lw = style_for(*canvas.size)[0]
    assert lw > 3
    draw_boxes(canvas, np.array([[101, 201, 900, 1000]]), [3], [0.7], ["x"], show_labels=False)
    np.testing.assert_array_equal(painted(canvas, class_color(3)), ring((1200, 1600), 100, 200, 899, 999, lw))


def test_scaled_canvas_maps_original_pixels() -> None:
    # original 1000x500 drawn on a 200x100 copy: continuous edges x 100..600, y 50..400 -> x 20..120, y 10..80
    canvas = Image.new("RGB", (200, 100))
    box = np.array([[101, 51, 600, 400]])
    draw_boxes(canvas, box, [2], [0.8], ["dog"], original_size=(1000, 500), show_labels=False)
    expected = ring((100, 200), 20, 10, 119, 79, style_for(200, 100)[0])
    np.testing.assert_array_equal(painted(canvas, class_color(2)), expected)


def test_box_pixels_rounding_clipping_and_degenerate() -> None:
    boxes = np.array([[1.4, 1.0, 10.6, 5.0], [-5, -5, 500, 500], [7, 7, 6.2, 6.2]])
    rects = box_pixels(boxes, (100, 50), (100, 50))
    np.testing.assert_array_equal(rects[0], [0, 0, 10, 4])
    np.testing.assert_array_equal(rects[1], [0, 0, 99, 49])  # clipped to the canvas
    assert rects[2][2] >= rects[2][0] and rects[2][3] >= rects[2][1]  # at least one pixel


def test_label_tag_drawn_above_box_and_kept_inside_image() -> None:
    canvas = Image.new("RGB", (300, 200))
    color = class_color(1)
    draw_boxes(canvas, np.array([[101, 101, 200, 180]]), [1], [0.87], ["cat"])
    mask = painted(canvas, color)
    rows_above = np.flatnonzero(mask[:100, 100:200].any(axis=1))
    assert rows_above.size and rows_above.max() == 99  # the tag sits on the top edge, outside the box
    assert np.asarray(canvas)[:100, :100].sum() == 0  # and starts at the box's left edge

    # box touching the top-right corner: tag goes inside the box and is shifted left to stay in the image
    canvas = Image.new("RGB", (300, 200))
    draw_boxes(canvas, np.array([[280, 1, 300, 100]]), [1], [0.87], ["a long class name"])
    mask = painted(canvas, color)
    assert mask[0, :280].any()  # tag extends left of the box instead of leaving the image
    assert not mask[101:, :].any()  # nothing below the box


def test_tag_text_contrasts_with_fill() -> None:
    canvas = Image.new("RGB", (400, 300))
    draw_boxes(canvas, np.array([[101, 101, 300, 250]]), [9], [0.5], ["yellow"])  # yellow fill -> black text
    arr = np.asarray(canvas)[60:100, 100:250].reshape(-1, 3)
    assert (np.abs(arr.astype(int) - np.array(class_color(9))).sum(1) == 0).any()
    assert (arr.sum(1) < 60).any()  # dark text pixels inside the yellow tag


def test_draw_prediction_uses_original_size() -> None:
    pred = Prediction(
        boxes=np.array([[201, 101, 1000, 600]], dtype=np.float32), scores=np.array([0.9], dtype=np.float32),
        labels=np.array([2]), names=["dog"], width=2000, height=1000,
    )
    canvas = draw_prediction(Image.new("RGB", (400, 200)), pred, show_labels=False)
    # continuous x 200..1000 -> 40..200, y 100..600 -> 20..120
    expected = ring((200, 400), 40, 20, 199, 119, style_for(400, 200)[0])
    np.testing.assert_array_equal(painted(canvas, class_color(2)), expected)


def test_draw_needs_rgb_and_accepts_no_boxes() -> None:
    with pytest.raises(ValueError):
        draw_boxes(Image.new("L", (10, 10)), np.zeros((1, 4)), [1], [0.5], ["a"])
    im = Image.new("RGB", (10, 10))
    assert draw_boxes(im, np.zeros((0, 4)), [], [], []) is im
