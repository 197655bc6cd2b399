"""`ssd show-data`: ground truth drawn where the records say, difficult objects dashed, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from cli_helpers import one_line_error, ssd
from PIL import Image

from ssdcli.data.records import ImageRecord, write_split
from ssdcli.engine.show_data import MOSAIC_NAME, picture_name, show_data
from ssdcli.reporting import RecordingReporter
from ssdcli.visualize import class_color, draw_ground_truth

GRAY = (128, 128, 128)


def painted(image: Image.Image, color: tuple[int, int, int], tol: int = 0) -> np.ndarray:
    return np.all(np.abs(np.asarray(image, np.int16) - np.array(color, np.int16)) <= tol, axis=-1)


def test_draw_ground_truth_outline_exactly_on_the_box_and_difficult_dashed():
    image = Image.new("RGB", (200, 160), GRAY)
    boxes = np.array([[21, 41, 100, 120], [121, 21, 190, 150]], np.float32)  # VOC pixels (1-based, inclusive)
    draw_ground_truth(image, boxes, [1, 2], ["cat", "dog"], [False, True], show_labels=False)
    cat = painted(image, class_color(1))
    # Solid outline: 0-based columns 20 and 99, rows 40 and 119, nothing outside, inside untouched.
    assert cat[40:120, 20].all() and cat[40:120, 99].all() and cat[40, 20:100].all() and cat[119, 20:100].all()
    assert cat.sum() == 2 * 80 + 2 * 78
    assert painted(image, GRAY)[41:119, 21:99].all()
    # Dashed outline: the left edge alternates painted and unpainted runs (dash 3 px at line width 1).
    dog = painted(image, class_color(2))
    left = dog[20:150, 120]
    assert left[:3].all() and not left[3:6].any() and left[6:9].all()
    assert 0.4 < left.mean() < 0.6 and not dog[:20].any() and not dog[:, :120].any()


def test_tags_name_the_class_without_a_score():
    image = Image.new("RGB", (300, 200), GRAY)
    draw_ground_truth(image, np.array([[51, 81, 250, 190]], np.float32), [3], ["bird"], None)
    tag = painted(image, class_color(3))[60:80]  # above the box: the filled tag
    assert tag.sum() > 100


def _dataset(root: Path) -> tuple[Path, list[ImageRecord]]:
    """Two plain grey 320x240 PNGs: img_a with a cat, img_b with a dog and a difficult cat."""
    images = root / "images"
    images.mkdir(parents=True)
    records = []
    for name, boxes, labels, difficult in (
        ("img_a", [[41, 61, 200, 180]], [1], [False]),
        ("img_b", [[11, 21, 150, 220], [171, 31, 300, 200]], [2, 1], [False, True]),
    ):
        Image.new("RGB", (320, 240), GRAY).save(images / f"{name}.png")
        records.append(ImageRecord(name, str(images / f"{name}.png"), 320, 240, np.array(boxes, np.float32),
                                   np.array(labels), np.array(difficult)))  # fmt: skip
    data = root / "prepared"
    data.mkdir()
    write_split(data / "train.jsonl", records, str(images))
    manifest = {"format": "ssdcli-prepared", "version": 1, "classes": ["cat", "dog"], "image_root": str(images),
                "splits": {"train": {"file": "train.jsonl", "images": 2, "objects": 3}}}
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data, records


def test_show_data_draws_boxes_where_the_records_say(tmp_path):
    data, _ = _dataset(tmp_path)
    reporter = RecordingReporter()
    summary = show_data(data, tmp_path / "out", split="train", ids=["img_a"], reporter=reporter)
    assert [p.name for p in summary.drawn] == ["img_a.jpg"] and summary.objects == 1
    assert reporter.kinds("show-data") == ["start", "advance", "end"] and reporter.done("show-data") == 1
    with Image.open(summary.drawn[0]) as im:
        assert im.format == "JPEG" and im.size == (320, 240)
        pic = im.convert("RGB")
    # JPEG blurs colours a little: compare with a tolerance, on the box's left and right edges (0-based 40, 199).
    cat = painted(pic, class_color(1), tol=60)
    assert cat[70:170, 40].mean() > 0.9 and cat[70:170, 199].mean() > 0.9
    assert painted(pic, GRAY, tol=12)[70:170, 60:180].all()  # inside: untouched
    assert painted(pic, GRAY, tol=12)[:, 215:].all()  # right of the box: untouched
    assert (tmp_path / "out" / MOSAIC_NAME).is_file()


def test_show_data_random_sample_is_seeded_and_capped(tmp_path):
    data, _ = _dataset(tmp_path)
    a = show_data(data, tmp_path / "a", num=1, seed=3, mosaic=False)
    b = show_data(data, tmp_path / "b", num=1, seed=3, mosaic=False)
    assert [p.name for p in a.drawn] == [p.name for p in b.drawn] and a.mosaic is None
    c = show_data(data, tmp_path / "c", num=50)
    assert sorted(p.name for p in c.drawn) == ["img_a.jpg", "img_b.jpg"] and c.difficult == 1


def test_picture_names_are_safe():
    assert picture_name("2008/000123") == "2008_000123.jpg"
    assert picture_name("../x y") == "x_y.jpg"


def test_cli_show_data_and_bad_inputs(tmp_path):
    data, _ = _dataset(tmp_path)
    out = tmp_path / "out"
    r = ssd("show-data", data, "--out", out, "--ids", "img_b,img_a")
    assert r.exit_code == 0, r.output
    assert "Drew 2 images" in r.stdout and "1 difficult" in r.stdout
    assert {p.name for p in out.iterdir()} == {"img_a.jpg", "img_b.jpg", MOSAIC_NAME}
    cases = {
        (str(tmp_path), "--out", str(tmp_path / "x")): "not a prepared dataset",
        (str(data), "--out", str(tmp_path / "x"), "--split", "test"): "--split test",
        (str(data), "--out", str(tmp_path / "x"), "--ids", "img_a,nope"): "--ids nope",
        (str(data), "--out", str(out), "--ids", "img_a"): "already exists",
        (str(data), "--out", str(data / "pics")): "inside the input folder",
        (str(data), "--out", str(tmp_path / "x"), "--num", "0"): "--num",
    }
    for args, expected in cases.items():
        r = ssd("show-data", *args)
        assert r.exit_code == 2, (args, r.output)
        assert expected in one_line_error(r), (args, r.stderr)
    assert not (tmp_path / "x").exists() and not (data / "pics").exists()
    r = ssd("show-data", data, "--out", out, "--ids", "img_a", "--force")
    assert r.exit_code == 0, r.output
