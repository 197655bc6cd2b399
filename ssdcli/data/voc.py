"""Parse one PASCAL VOC annotation (and read its image's header) robustly, counting every quirk by kind.

Box convention of everything returned here: VOC pixel numbers as written in the XML (``xmin, ymin, xmax,
ymax``, 1-based inclusive, see :mod:`ssdcli.boxes`), clipped to ``[1, W] x [1, H]`` where ``W x H`` is the real
image size as :func:`ssdcli.data.images.read_image` decodes it (EXIF orientation applied).

Real datasets break the format in many small ways; each problem found is reported as ``(kind, file, detail)``
with ``kind`` one of :data:`PROBLEM_KINDS`. Kinds of severity ``"warning"`` change or drop data (``--strict``
fails on them); kinds of severity ``"note"`` are handled without loss (PNG data in a ``.jpg`` file, float
coordinates, a missing ``<difficult>``...).

Images whose boxes do not fit are skipped, not repaired: an image smaller than its XML ``<size>`` with boxes
beyond the real image (resized after annotation; clipping would keep wrong boxes) is ``image_smaller_than_xml``,
and one whose objects all had invalid boxes is ``all_boxes_invalid``, rather than kept as a negative (its
real objects would be trained as background). Files are read through :mod:`ssdcli.data.images` (regular files only, pixel
limit from the header); ``verify`` decodes with the exact decoder training uses.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import NamedTuple

from ssdcli.data.images import check_regular_file, probe_image, read_image
from ssdcli.errors import SsdError

# The 20 PASCAL VOC classes in the usual (alphabetical) order: label i (1-based) is VOC_CLASSES[i-1].
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

# kind -> (severity, what happened)
PROBLEM_KINDS: dict[str, tuple[str, str]] = {
    "missing_annotation": ("warning", "id listed in a split file has no annotation XML: image skipped"),
    "bad_annotation": ("warning", "annotation XML unreadable or not VOC: image skipped"),
    "missing_image": ("warning", "no image file for the annotation: image skipped"),
    "unreadable_image": ("warning", "image file cannot be opened as an image: image skipped"),
    "truncated_image": ("warning", "image data incomplete or corrupt: image skipped"),
    "size_mismatch": ("warning", "XML width/height differ from the image: real size used"),
    "image_smaller_than_xml": ("warning", "image smaller than its XML <size>, boxes beyond it: image skipped"),
    "all_boxes_invalid": ("warning", "no usable box among its objects: image skipped, not kept as a negative"),
    "exif_orientation": ("warning", "image has an EXIF rotation: check that its boxes fit the shown image"),
    "bad_object": ("warning", "object without <name> or <bndbox>: dropped"),
    "invalid_box": ("warning", "box with xmin >= xmax, ymin >= ymax or unreadable numbers: dropped"),
    "box_outside_image": ("warning", "box empty after clipping to the image: dropped"),
    "box_clipped": ("warning", "box more than 1 px outside the image: clipped"),
    "unknown_class": ("warning", "object class not in the class list: object skipped"),
    "split_overlap": ("warning", "image is in both the train and the test split"),
    "size_missing": ("note", "XML width/height missing or invalid: real size used"),
    "filename_mismatch": ("note", "XML <filename> differs from the image file: matched on the id"),
    "extension_mismatch": ("note", "file content does not match its extension (e.g. PNG named .jpg): still usable"),
    "float_coordinates": ("note", "non-integer box coordinates: kept as written"),
    "missing_difficult": ("note", "object without a valid <difficult>: taken as 0"),
    "box_edge": ("note", "box at most 1 px outside the image (0-based coordinates?): clipped"),
    "no_objects": ("note", "image without objects: kept as a negative example"),
    "duplicate_id": ("note", "id listed twice in the same split: kept once"),
}

_EXT_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP",
                ".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF"}  # fmt: skip
_TAIL_BYTES = 4096  # end-of-image markers are looked for in the last bytes of a file...
_TAIL_BYTES_MAX = 1 << 16  # ...and, when absent there, in the last 64 KiB (cameras append trailers)


class VocObject(NamedTuple):
    name: str
    box: tuple[float, float, float, float]  # VOC pixel convention, clipped to the image
    difficult: bool


@dataclass(slots=True)
class VocAnnotation:
    """One parsed annotation. ``skip`` is the problem kind that made the image unusable (None when usable)."""

    id: str
    annotation: str  # path of the XML file
    image: str | None = None  # path of the image file used
    width: int = 0  # real image size (EXIF orientation applied)
    height: int = 0
    objects: list[VocObject] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, file, detail)
    skip: str | None = None

    def problem(self, kind: str, file: str, detail: str) -> None:
        self.problems.append((kind, file, detail))

    def fail(self, kind: str, file: str, detail: str) -> VocAnnotation:
        self.problem(kind, file, detail)
        self.skip = kind
        return self


@dataclass
class ImageInfo:
    width: int  # as decoded with EXIF orientation applied
    height: int
    format: str | None  # Pillow's format name, e.g. "JPEG", "PNG"
    orientation: int  # EXIF orientation 1..8 (1 = as stored)
    raw_size: tuple[int, int]  # (width, height) as stored


class ImageProblem(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


def read_image_info(path: str, verify: bool = False) -> ImageInfo:
    """Size and format from the image header (no decode; pixel limit and regular-file check of
    :mod:`ssdcli.data.images`); with ``verify``, a full decode by :func:`~ssdcli.data.images.read_image`, the
    decoder training uses, so what passes decodes in training. Raises ImageProblem."""
    try:
        check_regular_file(path)
        with open(path, "rb") as f:
            header, _ = probe_image(f, path)  # the lazily opened image goes with the file
            if not verify and header.format in ("JPEG", "PNG") and not _has_end_marker(f, header.format):
                raise ImageProblem("truncated_image", f"{header.format} data ends before its end-of-image marker")
    except SsdError as e:
        raise ImageProblem("unreadable_image", _detail(e, path)) from None
    except OSError as e:
        raise ImageProblem("unreadable_image", e.strerror or _short(e)) from None
    if verify:
        try:
            read_image(path)
        except SsdError as e:
            raise ImageProblem("truncated_image", f"decode failed: {_detail(e, path)}") from None
    return ImageInfo(header.width, header.height, header.format, header.orientation, header.raw_size)


def _detail(e: SsdError, path: str) -> str:
    """An SsdError's message without the leading file name (the report names the file itself)."""
    text = str(e)
    return text[len(str(path)) + 2 :] if text.startswith(f"{path}: ") else text


def _has_end_marker(f, fmt: str) -> bool:
    marker = b"\xff\xd9" if fmt == "JPEG" else b"IEND"
    size = f.seek(0, os.SEEK_END)
    for n in (_TAIL_BYTES, _TAIL_BYTES_MAX):
        f.seek(max(0, size - n))
        if marker in f.read(n):
            return True
        if size <= n:
            return False
    return False


def _short(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:120] if text else type(e).__name__


def _positive_int(text: str | None) -> int | None:
    try:
        v = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(round(v)) if v > 0 and v == v and v != float("inf") else None


def _basename(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def parse_voc_item(
    image_id: str, xml_path: str, image_path: str | None, image_dir: str, verify_images: bool = False
) -> VocAnnotation:
    """Parse one annotation. ``image_path`` is the image found for ``image_id`` (None when no file has that
    stem: the XML ``<filename>`` in ``image_dir`` is tried next). Class names are not checked here."""
    res = VocAnnotation(id=image_id, annotation=xml_path)
    try:
        check_regular_file(xml_path)  # a FIFO named x.xml would block the parser forever
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        return res.fail("missing_annotation", xml_path, "no such file")
    except SsdError as e:
        if not os.path.exists(xml_path):
            return res.fail("missing_annotation", xml_path, "no such file")
        return res.fail("bad_annotation", xml_path, _detail(e, xml_path))
    except (ET.ParseError, OSError, UnicodeError, LookupError, ValueError) as e:  # LookupError: unknown encoding
        return res.fail("bad_annotation", xml_path, _short(e))
    if root.tag != "annotation":
        return res.fail("bad_annotation", xml_path, f"root element <{root.tag}>, expected <annotation>")

    filename = _basename((root.findtext("filename") or "").strip())
    if image_path is None:
        candidate = os.path.join(image_dir, filename) if filename else ""
        if not (candidate and os.path.isfile(candidate)):
            return res.fail("missing_image", xml_path, f"no image named {image_id}.* or {filename or '<filename>'}")
        image_path = candidate
        res.problem("filename_mismatch", xml_path, f"no image {image_id}.*; used <filename> {filename}")
    elif filename and filename != _basename(image_path) and "." in filename:
        res.problem("filename_mismatch", xml_path, f"<filename> {filename}, image {_basename(image_path)}")
    res.image = image_path

    try:
        info = read_image_info(image_path, verify_images)
    except ImageProblem as p:
        return res.fail(p.kind, image_path, str(p))
    ext = os.path.splitext(image_path)[1].lower()
    if info.format and _EXT_FORMATS.get(ext, info.format) != info.format:
        res.problem("extension_mismatch", image_path, f"{info.format} data in a {ext} file")
    res.width, res.height = info.width, info.height

    xml_size = (_positive_int(root.findtext("size/width")), _positive_int(root.findtext("size/height")))
    # An EXIF-rotated image whose XML size is the stored (unrotated) size was annotated on the stored pixels:
    # its boxes are turned to match the image as it is decoded.
    rotate = info.orientation >= 5 and xml_size == info.raw_size and info.raw_size != (info.width, info.height)
    if info.orientation != 1:
        how = "boxes rotated with the image" if rotate else "boxes taken as drawn on the rotated image"
        res.problem("exif_orientation", image_path, f"EXIF orientation {info.orientation}: {how}")
    if None in xml_size:
        res.problem("size_missing", xml_path, f"using the real size {info.width}x{info.height}")
    elif not rotate and xml_size != (info.width, info.height):
        res.problem(
            "size_mismatch", xml_path, f"XML says {xml_size[0]}x{xml_size[1]}, image is {info.width}x{info.height}"
        )

    first = len(res.problems)
    objects = root.findall("object")  # direct children only: <name> inside <owner>/<source>/<part> never counts
    for obj in objects:
        _parse_object(obj, res, xml_path, info, rotate)
    return _check_boxes_fit(res, xml_path, xml_size, info, first, bool(objects) and not rotate)


def _check_boxes_fit(res: VocAnnotation, xml_path: str, xml_size, info: ImageInfo, first: int,
                     check: bool) -> VocAnnotation:  # fmt: skip
    """Skip an image whose boxes do not fit it: smaller than its XML ``<size>`` with boxes beyond the real
    image (resized after annotation: clipping would keep wrong boxes), or every box invalid (it would be
    trained as background)."""
    if not check:
        return res
    lost = [p for p in res.problems[first:] if p[0] in ("box_clipped", "box_outside_image")]
    smaller = None not in xml_size and (info.width < xml_size[0] or info.height < xml_size[1])
    if smaller and lost:
        res.problems = [p for p in res.problems if p[0] not in ("size_mismatch", "box_clipped", "box_outside_image")]
        res.objects = []
        detail = (f"image is {info.width}x{info.height}, XML <size> {xml_size[0]}x{xml_size[1]}; "
                  f"{len(lost)} box(es) reach beyond the image")  # fmt: skip
        return res.fail("image_smaller_than_xml", res.image or xml_path, detail)
    if not res.objects:
        dropped = [p for p in res.problems[first:] if p[0] in ("bad_object", "invalid_box", "box_outside_image")]
        if dropped:
            return res.fail("all_boxes_invalid", xml_path, f"{len(dropped)} object(s), none usable")
    return res


def _parse_object(obj: ET.Element, res: VocAnnotation, xml_path: str, info: ImageInfo, rotate: bool) -> None:
    name = (obj.findtext("name") or "").strip()
    bndbox = obj.find("bndbox")
    if not name or bndbox is None:
        res.problem("bad_object", xml_path, "object without <name>" if not name else f"{name} without <bndbox>")
        return
    texts = [(bndbox.findtext(k) or "").strip() for k in ("xmin", "ymin", "xmax", "ymax")]
    try:
        x0, y0, x1, y1 = (float(t) for t in texts)
    except ValueError:
        res.problem("invalid_box", xml_path, f"{name}: unreadable coordinates {' '.join(texts) or 'missing'}")
        return
    if not all(abs(v) < 1e9 for v in (x0, y0, x1, y1)):  # also rejects nan/inf
        res.problem("invalid_box", xml_path, f"{name}: coordinates {' '.join(texts)}")
        return
    if any(not t.lstrip("+-").isdigit() for t in texts):
        res.problem("float_coordinates", xml_path, f"{name}: {' '.join(texts)}")
    if x0 >= x1 or y0 >= y1:
        res.problem("invalid_box", xml_path, f"{name}: xmin {texts[0]} ymin {texts[1]} xmax {texts[2]} ymax {texts[3]}")
        return
    difficult_text = (obj.findtext("difficult") or "").strip()
    try:
        difficult = int(float(difficult_text)) != 0
    except ValueError:
        res.problem("missing_difficult", xml_path, f"{name}: <difficult> {difficult_text or 'missing'}")
        difficult = False
    if rotate:
        x0, y0, x1, y1 = _rotate_box((x0, y0, x1, y1), info.orientation, *info.raw_size)
    w, h = info.width, info.height
    c = (max(x0, 1.0), max(y0, 1.0), min(x1, float(w)), min(y1, float(h)))
    if c[0] >= c[2] or c[1] >= c[3]:
        res.problem("box_outside_image", xml_path, f"{name}: {' '.join(texts)} outside {w}x{h}")
        return
    moved = max(abs(c[0] - x0), abs(c[1] - y0), abs(c[2] - x1), abs(c[3] - y1))
    if moved > 1.0:
        res.problem("box_clipped", xml_path, f"{name}: {' '.join(texts)} clipped to {w}x{h}")
    elif moved > 0:
        res.problem("box_edge", xml_path, f"{name}: {' '.join(texts)} in {w}x{h}")
    res.objects.append(VocObject(name, c, difficult))


def _rotate_box(box: tuple[float, ...], orientation: int, raw_w: int, raw_h: int) -> tuple[float, ...]:
    """Map a VOC pixel box on the stored pixels to the displayed image for EXIF orientations 5-8."""
    x0, y0, x1, y1 = box[0] - 1, box[1] - 1, box[2], box[3]  # continuous coordinates
    if orientation == 5:  # transpose
        nx0, nx1, ny0, ny1 = y0, y1, x0, x1
    elif orientation == 6:  # rotate 90 clockwise for display
        nx0, nx1, ny0, ny1 = raw_h - y1, raw_h - y0, x0, x1
    elif orientation == 7:  # transverse
        nx0, nx1, ny0, ny1 = raw_h - y1, raw_h - y0, raw_w - x1, raw_w - x0
    else:  # 8: rotate 90 counter-clockwise for display
        nx0, nx1, ny0, ny1 = y0, y1, raw_w - x1, raw_w - x0
    return (nx0 + 1, ny0 + 1, nx1, ny1)
