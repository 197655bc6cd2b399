"""Parsing one VOC annotation: every real-world quirk gives the right outcome and the right problem kind."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssdcli.data.images import read_image
from ssdcli.data.voc import PROBLEM_KINDS, VOC_CLASSES, parse_voc_item, read_image_info

W, H = 64, 48


def save_image(path: Path, w: int = W, h: int = H, fmt: str = "JPEG", exif: bytes | None = None) -> Path:
    arr = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    kw = {"exif": exif} if exif else {}
    Image.fromarray(arr).save(path, format=fmt, **kw)
    return path


def voc_xml(objects=(), filename="a.jpg", size: tuple | None = (W, H), head: str = "") -> str:
    """objects: (name, (xmin, ymin, xmax, ymax) as strings or numbers, difficult or None)."""
    size_xml = (
        "" if size is None else f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    )
    objs = ""
    for name, box, difficult in objects:
        diff = "" if difficult is None else f"<difficult>{difficult}</difficult>"
        coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        objs += f"<object><name>{name}</name><pose>Left</pose>{diff}<bndbox>{coords}</bndbox></object>"
    return f"<annotation><folder>VOC</folder><filename>{filename}</filename>{head}{size_xml}{objs}</annotation>"


@pytest.fixture
def voc(tmp_path: Path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()

    def make(xml: str, image: bool | str = True, image_id: str = "a"):
        xml_path = tmp_path / "Annotations" / f"{image_id}.xml"
        xml_path.write_text(xml)
        image_path = None
        if image is True:
            image_path = str(save_image(tmp_path / "JPEGImages" / f"{image_id}.jpg"))
        elif isinstance(image, str):
            image_path = str(tmp_path / "JPEGImages" / image)
        return xml_path, image_path

    def parse(xml: str, image: bool | str = True, image_id: str = "a", verify: bool = False):
        xml_path, image_path = make(xml, image, image_id)
        return parse_voc_item(image_id, str(xml_path), image_path, str(tmp_path / "JPEGImages"), verify)

    make.parse = parse
    make.root = tmp_path
    return make


def kinds(ann) -> list[str]:
    return sorted(k for k, _, _ in ann.problems)


def test_problem_kinds_have_severity_and_description():
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    for sev, desc in PROBLEM_KINDS.values():
        assert sev in ("warning", "note") and desc


def test_clean_annotation(voc):
    ann = voc.parse(voc_xml([("dog", (10, 5, 40, 30), 0), ("cat", (1, 1, W, H), 1)]))
    assert ann.skip is None and ann.problems == []
    assert (ann.width, ann.height) == (W, H)
    assert [o.name for o in ann.objects] == ["dog", "cat"]
    assert ann.objects[0].box == (10, 5, 40, 30) and not ann.objects[0].difficult
    assert ann.objects[1].box == (1, 1, W, H) and ann.objects[1].difficult


def test_name_tags_outside_object_are_ignored(voc):
    head = "<source><database>VOC</database><name>flickr</name></source>"
    head += "<owner><flickrid>x</flickrid><name>Fred</name></owner>"
    xml = voc_xml([("person", (5, 5, 30, 40), 0)], head=head)
    xml = xml.replace(
        "<pose>",
        "<part><name>head</name><bndbox><xmin>6</xmin><ymin>6</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></part><pose>",
    )
    ann = voc.parse(xml)
    assert [o.name for o in ann.objects] == ["person"]
    assert ann.objects[0].box == (5, 5, 30, 40)
    assert ann.problems == []


def test_float_coordinates_kept(voc):
    ann = voc.parse(voc_xml([("dog", ("10.5", "5.0", "40.25", "30"), 0)]))
    assert ann.objects[0].box == (10.5, 5.0, 40.25, 30.0)
    assert kinds(ann) == ["float_coordinates"]


@pytest.mark.parametrize("difficult", [None, "", "Unspecified"])
def test_missing_difficult_is_zero(voc, difficult):
    ann = voc.parse(voc_xml([("dog", (10, 5, 40, 30), difficult)]))
    assert len(ann.objects) == 1 and ann.objects[0].difficult is False
    assert kinds(ann) == ["missing_difficult"]


@pytest.mark.parametrize(
    "box", [(40, 5, 10, 30), (10, 30, 40, 30), (10, 5, 10, 30), ("a", 5, 40, 30), ("nan", 5, 40, 30)]
)
def test_invalid_box_dropped(voc, box):
    ann = voc.parse(voc_xml([("dog", box, 0), ("cat", (1, 1, 5, 5), 0)]))
    assert [o.name for o in ann.objects] == ["cat"]
    assert kinds(ann) == ["invalid_box"]


def test_object_without_name_or_bndbox_dropped(voc):
    xml = voc_xml([("cat", (1, 1, 5, 5), 0)]).replace(
        "</annotation>", "<object><name>dog</name></object><object><name> </name><bndbox/></object></annotation>"
    )
    ann = voc.parse(xml)
    assert [o.name for o in ann.objects] == ["cat"]
    assert kinds(ann) == ["bad_object", "bad_object"]


def test_boxes_outside_image_clipped_or_dropped(voc):
    ann = voc.parse(voc_xml([
        ("dog", (-20, 10, 30, H + 50), 0),  # partly outside: clipped
        ("cat", (W + 5, 10, W + 40, 20), 0),  # entirely outside: empty after clipping
        ("cow", (0, 0, W + 1, 20), 0),  # 0-based / one past the edge: clipped, only a note
    ]))  # fmt: skip
    assert [o.name for o in ann.objects] == ["dog", "cow"]
    assert ann.objects[0].box == (1, 10, 30, H)
    assert ann.objects[1].box == (1, 1, W, 20)
    assert kinds(ann) == ["box_clipped", "box_edge", "box_outside_image"]
    assert PROBLEM_KINDS["box_edge"][0] == "note" and PROBLEM_KINDS["box_clipped"][0] == "warning"


@pytest.mark.parametrize(
    "size,kind", [((W * 2, H * 2), "size_mismatch"), ((H, W), "size_mismatch"), (None, "size_missing"),
                  (("abc", "0"), "size_missing"), ((0, 0), "size_missing")]
)  # fmt: skip
def test_wrong_or_missing_size_uses_real_size(voc, size, kind):
    ann = voc.parse(voc_xml([("dog", (10, 5, 60, 45), 0)], size=size))
    assert (ann.width, ann.height) == (W, H)
    assert kinds(ann) == [kind]


def test_filename_mismatch_matched_on_id(voc):
    ann = voc.parse(voc_xml([("dog", (10, 5, 40, 30), 0)], filename="IMG_0001.JPG"))
    assert ann.skip is None and ann.image.endswith("a.jpg")
    assert kinds(ann) == ["filename_mismatch"]
    # a path or no extension in <filename> is not a mismatch
    assert voc.parse(voc_xml(filename="C:\\data\\a.jpg")).problems == []
    assert voc.parse(voc_xml(filename="a")).problems == []


def test_image_found_by_filename_when_id_has_none(voc):
    save_image(voc.root / "JPEGImages" / "photo.jpg")
    ann = voc.parse(voc_xml([("dog", (10, 5, 40, 30), 0)], filename="photo.jpg"), image=False)
    assert ann.skip is None and ann.image.endswith("photo.jpg")
    assert kinds(ann) == ["filename_mismatch"]


def test_missing_image_skipped(voc):
    ann = voc.parse(voc_xml([("dog", (10, 5, 40, 30), 0)]), image=False)
    assert ann.skip == "missing_image" and kinds(ann) == ["missing_image"]


def test_png_named_jpg_is_usable(voc):
    path = save_image(voc.root / "JPEGImages" / "a.jpg", fmt="PNG")
    ann = voc.parse(voc_xml([("dog", (10, 5, 40, 30), 0)]), image="a.jpg")
    assert ann.skip is None and (ann.width, ann.height) == (W, H)
    assert kinds(ann) == ["extension_mismatch"]
    assert PROBLEM_KINDS["extension_mismatch"][0] == "note"
    assert tuple(read_image(path).shape) == (3, H, W)


def test_truncated_jpeg_skipped_without_decoding(voc):
    path = save_image(voc.root / "JPEGImages" / "a.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ann = voc.parse(voc_xml([("dog", (10, 5, 40, 30), 0)]), image="a.jpg")
    assert ann.skip == "truncated_image" and kinds(ann) == ["truncated_image"]
    assert voc.parse(voc_xml(), image="a.jpg", verify=True).skip == "truncated_image"


def test_corrupt_png_found_only_with_verify(voc):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[len(data) // 2 : len(data) // 2 + 200] = bytes(200)  # corrupt the pixel data, keep header and IEND
    (voc.root / "JPEGImages" / "a.png").write_bytes(bytes(data))
    assert voc.parse(voc_xml(filename="a.png"), image="a.png").skip is None
    ann = voc.parse(voc_xml(filename="a.png"), image="a.png", verify=True)
    assert ann.skip == "truncated_image" and "decode failed" in ann.problems[0][2]


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8\xff\xe0garbage"])
def test_unreadable_image_skipped(voc, content):
    (voc.root / "JPEGImages" / "a.jpg").write_bytes(content)
    ann = voc.parse(voc_xml([("dog", (10, 5, 40, 30), 0)]), image="a.jpg")
    assert ann.skip == "unreadable_image" and kinds(ann) == ["unreadable_image"]


def test_bad_and_missing_annotation(voc):
    ann = voc.parse("<annotation><object><name>dog</name>", image=True)
    assert ann.skip == "bad_annotation"
    assert voc.parse("<html></html>").skip == "bad_annotation"
    gone = parse_voc_item("zz", str(voc.root / "Annotations" / "zz.xml"), None, str(voc.root / "JPEGImages"))
    assert gone.skip == "missing_annotation"


def test_image_without_objects_parses(voc):
    ann = voc.parse(voc_xml([]))
    assert ann.skip is None and ann.objects == [] and ann.problems == []


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_exif_rotated_image_boxes_follow_the_pixels(voc, orientation):
    """An image stored 64x48 with EXIF rotation decodes as 48x64; a box drawn on the stored pixels
    (XML size = stored size) must land on the same pixels after decoding."""
    raw = np.zeros((H, W, 3), dtype=np.uint8)
    raw[5:20, 30:50] = 255  # stored-pixel box: VOC (31, 6, 50, 20)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = voc.root / "JPEGImages" / "a.jpg"
    Image.fromarray(raw).save(path, format="JPEG", quality=100, exif=exif.tobytes())
    ann = voc.parse(voc_xml([("dog", (31, 6, 50, 20), 0)]), image="a.jpg")
    assert (ann.width, ann.height) == (H, W)
    assert kinds(ann) == ["exif_orientation"]
    decoded = read_image(path)[0].numpy()
    ys, xs = np.nonzero(decoded > 128)
    found = (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)
    assert np.abs(np.array(ann.objects[0].box) - np.array(found)).max() <= 1
    info = read_image_info(str(path))
    assert info.orientation == orientation and info.raw_size == (W, H)
