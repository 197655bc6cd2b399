"""`prepare_coco` and `ssd prepare-coco`: every COCO quirk counted, no real object lost, layouts, splits, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssdcli.data.coco_source import find_coco_sources, prepare_coco
from ssdcli.data.prepare import StrictFailure
from ssdcli.data.records import load_prepared
from ssdcli.errors import SsdError
from tests.cli_helpers import ssd

W, H = 60, 40


def image(folder: Path, name: str, size=(W, H), fmt: str = "JPEG") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(folder / name, format=fmt)


def write_json(path: Path, images, annotations, categories) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def quirky(root: Path) -> Path:
    """One COCO file with every quirk the reader handles; ``root/images`` holds the files."""
    imgs = root / "images"
    for name in ("a.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"):
        image(imgs, name)
    image(imgs, "b.png", fmt="PNG")
    image(imgs, "big.jpg", size=(80, 50))
    images = [
        {"id": 0, "file_name": "a.jpg", "width": W, "height": H},  # image id 0
        {"id": 5, "file_name": "b.png", "width": W, "height": H},
        {"id": 5, "file_name": "c.jpg", "width": W, "height": H},  # duplicate id: ignored
        {"id": 7, "file_name": "gone.jpg", "width": W, "height": H},  # missing on disk
        {"id": 9, "file_name": "a.jpg", "width": W, "height": H},  # same file as id 0: merged
        {"id": 11, "file_name": "big.jpg", "width": W, "height": H},  # JSON size wrong
        {"id": 12, "file_name": "d.jpg", "width": 0, "height": -1},  # JSON size unusable
        {"id": 13, "file_name": "e.jpg", "width": W, "height": H},  # every box invalid: skipped
        {"id": 14, "file_name": "f.jpg", "width": W, "height": H},  # no annotation: a negative
        {"file_name": "nothing.jpg"},  # no id
    ]
    categories = [
        {"id": 0, "name": "animals", "supercategory": "none"},  # unused supercategory entry
        {"id": 3, "name": "cat", "supercategory": "animals"},
        {"id": 7, "name": "dog", "supercategory": "animals"},
        {"id": 8, "name": "dog", "supercategory": "animals"},  # duplicate name
    ]
    anns = [
        {"id": 1, "image_id": 0, "category_id": 3, "bbox": [10.25, 5.5, 20.5, 10.75], "iscrowd": 0},  # float
        {"id": 2, "image_id": 0, "category_id": 7, "bbox": [0, 0, 30, 20], "iscrowd": 1},  # crowd
        {"id": 3, "image_id": 5, "category_id": 7, "bbox": [5, 5, 0, 10]},  # zero width
        {"id": 4, "image_id": 5, "category_id": 7, "bbox": [5, 5, 10, -3]},  # negative height
        {"id": 5, "image_id": 5, "category_id": 3, "bbox": [50, 30, 20, 20]},  # clipped (10 px outside)
        {"id": 6, "image_id": 5, "category_id": 3, "bbox": [-0.5, 1, 10, 10]},  # edge (0.5 px)
        {"id": 7, "image_id": 5, "category_id": 3, "bbox": [70, 50, 5, 5]},  # outside the image
        {"id": 8, "image_id": 99, "category_id": 3, "bbox": [1, 1, 5, 5]},  # names a missing image
        {"id": 9, "image_id": 5, "category_id": 42, "bbox": [1, 1, 5, 5]},  # unknown category
        {"id": 10, "image_id": 5, "category_id": 3, "bbox": "oops"},  # not a bbox
        {"id": 10, "image_id": 9, "category_id": 8, "bbox": [2, 2, 8, 8]},  # duplicate id; image 9 = a.jpg
        {"id": 12, "image_id": 7, "category_id": 3, "bbox": [1, 1, 5, 5]},  # image missing on disk
        {"id": 13, "image_id": 11, "category_id": 3, "bbox": [60, 40, 10, 5]},  # fits the real 80x50 image
        {"id": 14, "image_id": 12, "category_id": 7, "bbox": [1, 1, 5, 5]},
        {"id": 15, "image_id": 13, "category_id": 7, "bbox": [1, 1, 0, 0]},  # the only box of e.jpg: invalid
        {"id": 16, "image_id": 0, "category_id": 3, "bbox": [1, 2, 3, 4]},
    ]
    return write_json(root / "annotations" / "instances_default.json", images, anns, categories)


def test_every_quirk_is_counted_and_no_real_object_is_lost(tmp_path: Path):
    src = quirky(tmp_path / "ds")
    report = prepare_coco(src, tmp_path / "out", split="1,0,0", val_fraction=0)
    counts = {k: p.count for k, p in report.problems.items()}
    assert counts == {
        "image_id_zero": 1, "duplicate_image_id": 1, "missing_image": 1, "duplicate_image_file": 1,
        "size_mismatch": 1, "size_missing": 1, "bad_image_entry": 1, "all_boxes_invalid": 1, "no_objects": 1,
        "unused_category": 1, "duplicate_category": 1, "float_coordinates": 2, "crowd": 1, "invalid_box": 3,
        "box_clipped": 1, "box_edge": 1, "box_outside_image": 1, "annotation_without_image": 1,
        "unknown_category": 1, "bad_object": 1, "duplicate_annotation_id": 1,
    }  # fmt: skip
    ds = load_prepared(tmp_path / "out")
    assert ds.classes == ["cat", "dog"]  # category-id order; the unused id-0 entry is no class
    recs = {r.id: r for r in ds.split("train")}
    assert sorted(recs) == ["a", "b", "big", "d", "f"]  # gone, e (all invalid) skipped; c (duplicate id) ignored
    a = recs["a"]
    # xmin = x + 1, ymin = y + 1, xmax = x + w, ymax = y + h; crowd kept as difficult; image 9's box merged
    np.testing.assert_allclose(a.boxes, [[11.25, 6.5, 30.75, 16.25], [1, 1, 30, 20], [3, 3, 10, 10], [2, 3, 4, 6]])
    assert a.labels.tolist() == [1, 2, 2, 1] and a.difficult.tolist() == [False, True, False, False]
    np.testing.assert_allclose(recs["b"].boxes, [[51, 31, 60, 40], [1, 2, 9.5, 11]])
    assert (recs["big"].width, recs["big"].height) == (80, 50)  # the real size, not the JSON's
    np.testing.assert_allclose(recs["big"].boxes, [[61, 41, 70, 45]])
    assert recs["f"].labels.size == 0
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["source"]["format"] == "coco" and manifest["options"]["classes"] == "categories"
    skipped = {(d["id"], d["reason"]) for d in manifest["skipped"]["images"]}
    assert skipped == {("gone", "missing_image"), ("e", "all_boxes_invalid")}
    assert manifest["skipped"]["objects"] == {"invalid_box": 3, "box_outside_image": 1, "bad_object": 1,
                                              "annotation_without_image": 1, "unknown_category": 1}  # fmt: skip
    with pytest.raises(StrictFailure):
        prepare_coco(src, None, strict=True)


def test_usual_layouts_and_split_names(tmp_path: Path):
    cats = [{"id": 1, "name": "cat"}]
    coco = tmp_path / "coco"
    for split, n in (("train2017", 4), ("val2017", 2)):
        for i in range(n):
            image(coco / split, f"{split}_{i}.jpg")
        imgs = [{"id": i, "file_name": f"{split}_{i}.jpg", "width": W, "height": H} for i in range(n)]
        anns = [{"id": i + 1, "image_id": i, "category_id": 1, "bbox": [1, 1, 9, 9]} for i in range(n)]
        write_json(coco / "annotations" / f"instances_{split}.json", imgs, anns, cats)
    write_json(coco / "annotations" / "captions_train2017.json", [], [], [])  # not an instance file: ignored
    report = prepare_coco(coco, tmp_path / "p1")
    assert {k: s.images for k, s in report.splits.items()} == {"train": 4, "val": 2}
    assert report.splits["train"].sets == ["instances_train2017.json"]

    site = tmp_path / "site"  # dataset-site export: train/ valid/ test/ with _annotations.coco.json beside the images
    for split in ("train", "valid", "test"):
        image(site / split, f"{split}.jpg")
        write_json(site / split / "_annotations.coco.json",
                   [{"id": 0, "file_name": f"{split}.jpg", "width": W, "height": H}],
                   [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 1, 9, 9]}], cats)  # fmt: skip
    sources, layout = find_coco_sources(site)
    assert layout == "split folders" and [s.split for s in sources] == ["test", "train", "val"]
    report = prepare_coco(site, tmp_path / "p2")
    assert {k: s.images for k, s in report.splits.items()} == {"train": 1, "val": 1, "test": 1}


def test_one_file_is_split_seeded_and_stratified(tmp_path: Path):
    root = tmp_path / "one"
    imgs, anns = [], []
    for i in range(40):
        image(root, f"im{i:02d}.jpg")
        imgs.append({"id": i, "file_name": f"im{i:02d}.jpg", "width": W, "height": H})
        anns.append({"id": i, "image_id": i, "category_id": 1 + (i % 4 == 0), "bbox": [1, 1, 9, 9]})
    write_json(root / "_annotations.coco.json", imgs, anns, [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}])
    a = prepare_coco(root, tmp_path / "a", split="0.6,0.2,0.2", split_seed=3)
    assert {k: s.images for k, s in a.splits.items()} == {"train": 24, "val": 8, "test": 8}
    assert all(s.class_objects[1] == {"train": 6, "val": 2, "test": 2}[k] for k, s in a.splits.items())  # stratified
    manifest = json.loads((tmp_path / "a/manifest.json").read_text())
    assert manifest["options"]["auto_split"]["fractions"] == [0.6, 0.2, 0.2]
    prepare_coco(root, tmp_path / "b", split="0.6,0.2,0.2", split_seed=3)
    assert (tmp_path / "a/test.jsonl").read_text() == (tmp_path / "b/test.jsonl").read_text()  # deterministic
    c = prepare_coco(root, None, split="0.6,0.2,0.2", split_seed=4)
    assert c.splits["test"].images == 8


def test_input_errors_are_one_clear_line(tmp_path: Path):
    with pytest.raises(SsdError, match="not found"):
        prepare_coco(tmp_path / "nope.json", None)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SsdError, match=r"bad\.json: not valid JSON"):
        prepare_coco(bad, None)
    bad.write_text('{"images": []}')
    with pytest.raises(SsdError, match="'annotations' is missing"):
        prepare_coco(bad, None)
    with pytest.raises(SsdError, match="--split"):
        prepare_coco(bad, None, split="0.5,0.6")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SsdError, match="no COCO JSON"):
        prepare_coco(tmp_path / "empty", None)


def test_cli(tmp_path: Path):
    src = quirky(tmp_path / "ds")
    result = ssd("prepare-coco", "--train", f"{src}:{tmp_path / 'ds/images'}", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "duplicate_image_file" in result.output and "Wrote" in result.output
    again = ssd("prepare-coco", "--train", f"{src}:{tmp_path / 'ds/images'}", "-o", tmp_path / "out")
    assert again.exit_code == 2 and "--force" in again.output
    (tmp_path / "broken.json").write_text("[1, 2")
    broken = ssd("prepare-coco", tmp_path / "broken.json", "-o", tmp_path / "o2")
    assert broken.exit_code == 2 and "broken.json: not valid JSON" in broken.output
    assert "Traceback" not in broken.output
    missing = ssd("prepare-coco", tmp_path / "missing.json")
    assert missing.exit_code == 2 and "not found" in missing.output


def test_a_file_in_two_split_files_is_an_overlap_not_a_merge(tmp_path: Path):
    image(tmp_path / "img", "x.jpg")
    image(tmp_path / "img", "y.jpg")
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "unused"}]
    tr = write_json(tmp_path / "train.json", [{"id": 1, "file_name": "x.jpg"}, {"id": 2, "file_name": "y.jpg"}],
                    [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}], cats)  # fmt: skip
    te = write_json(tmp_path / "test.json", [{"id": 1, "file_name": "x.jpg"}],
                    [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5]}], cats)  # fmt: skip
    img = tmp_path / "img"
    report = prepare_coco(None, tmp_path / "out", train=f"{tr}:{img}", test=f"{te}:{img}", val_fraction=0)
    assert report.problems["split_overlap"].count == 1 and report.problems["unused_category"].count == 1
    assert report.problems["size_missing"].count == 3  # no width/height in the JSON: the real size is used
    ds = load_prepared(tmp_path / "out")
    assert [r.id for r in ds.split("test")] == ["x"] and [r.id for r in ds.split("train")] == ["x", "y"]
    np.testing.assert_allclose(ds.split("test")[0].boxes, [[3, 3, 7, 7]])  # its own box, not merged
    np.testing.assert_allclose(ds.split("train")[0].boxes, [[2, 2, 6, 6]])
