"""Vectorised box validation shared by the COCO and YOLO readers: the same rules as a VOC ``<bndbox>``.

Boxes come in the project's pixel convention (:mod:`ssdcli.boxes`: ``xmin, ymin, xmax, ymax``, 1-based inclusive, so
pixel ``i`` covers the continuous span ``[i-1, i]``) and are clipped to ``[1, W] x [1, H]`` exactly as
:func:`ssdcli.data.voc.parse_voc_item` does: a box with ``xmin >= xmax`` / ``ymin >= ymax`` or non-finite numbers is
``invalid_box``, one empty after clipping is ``box_outside_image``, one moved by more than 1 px is ``box_clipped``
(warning), by at most 1 px ``box_edge`` (note).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BoxCheck", "check_pixel_boxes"]

_LIMIT = 1e9  # coordinates beyond this are unreadable numbers, as in the VOC parser


@dataclass
class BoxCheck:
    boxes: np.ndarray  # float64 [N,4] clipped (rows of dropped boxes are meaningless)
    invalid: np.ndarray  # bool [N]: non-finite, huge, or xmin >= xmax / ymin >= ymax
    outside: np.ndarray  # bool [N]: empty after clipping
    clipped: np.ndarray  # bool [N]: kept, moved by more than 1 px
    edge: np.ndarray  # bool [N]: kept, moved by at most 1 px

    @property
    def kept(self) -> np.ndarray:
        return ~(self.invalid | self.outside)


def check_pixel_boxes(boxes: np.ndarray, width: np.ndarray, height: np.ndarray) -> BoxCheck:
    """Validate and clip pixel boxes ``[N,4]`` against per-box image sizes ``width``/``height`` ``[N]``."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w, h = np.asarray(width, np.float64).reshape(-1), np.asarray(height, np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        finite = (np.abs(b) < _LIMIT).all(axis=1)  # also false for NaN / inf
        invalid = ~finite | (b[:, 0] >= b[:, 2]) | (b[:, 1] >= b[:, 3])
        c = np.stack([np.maximum(b[:, 0], 1.0), np.maximum(b[:, 1], 1.0),
                      np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)], axis=1)  # fmt: skip
        outside = ~invalid & ((c[:, 0] >= c[:, 2]) | (c[:, 1] >= c[:, 3]))
        moved = np.where(invalid[:, None], 0.0, np.abs(c - b)).max(axis=1) if len(b) else np.zeros(0)
    kept = ~(invalid | outside)
    return BoxCheck(boxes=c, invalid=invalid, outside=outside, clipped=kept & (moved > 1.0),
                    edge=kept & (moved > 0) & (moved <= 1.0))  # fmt: skip
