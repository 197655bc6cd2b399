"""`prepare_voc` and `ssd prepare-voc`: layouts, splits, classes, every counted quirk, strict mode, errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import ssdcli.data.prepare as prepare_mod
from ssdcli.cli.main import app
from ssdcli.data.prepare import StrictFailure, prepare_voc
from ssdcli.data.records import load_prepared
from ssdcli.errors import SsdError
from ssdcli.reporting import RecordingReporter

RACCOON = Path(__file__).resolve().parents[2] / "shared/datasets/raccoon"
W, H = 60, 40


def obj(name: str, box, difficult="0") -> str:
    diff = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name>{diff}<bndbox>{coords}</bndbox></object>"


def ann(objects: str = "", filename: str | None = None, size=(W, H), head: str = "") -> str:
    size_xml = "" if size is None else f"<size><width>{size[0]}</width><height>{size[1]}</height></size>"
    fn = "" if filename is None else f"<filename>{filename}</filename>"
    return f"<annotation>{fn}{head}{size_xml}{objects}</annotation>"


def add(folder: Path, image_id: str, xml: str | None, image: str | bytes | None = "jpg") -> None:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    if xml is not None:
        (folder / "Annotations" / f"{image_id}.xml").write_text(xml)
    if isinstance(image, bytes):
        (folder / "JPEGImages" / f"{image_id}.jpg").write_bytes(image)
    elif image is not None:
        fmt = "PNG" if image == "png-as-jpg" else "JPEG"
        arr = np.full((H, W, 3), 90, dtype=np.uint8)
        Image.fromarray(arr).save(folder / "JPEGImages" / f"{image_id}.jpg", format=fmt)


def split_file(folder: Path, name: str, ids: list[str]) -> None:
    (folder / "ImageSets/Main").mkdir(parents=True, exist_ok=True)
    (folder / "ImageSets/Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))


def clean_folder(folder: Path, n_train: int = 3, n_test: int = 2, classes=("cat", "dog")) -> Path:
    ids = [f"img{i}" for i in range(n_train + n_test)]
    for i, image_id in enumerate(ids):
        add(folder, image_id, ann(obj(classes[i % len(classes)], (5, 5, 30, 30), str(i % 2)), f"{image_id}.jpg"))
    split_file(folder, "trainval", ids[:n_train])
    split_file(folder, "test", ids[n_train:])
    return folder


@pytest.fixture
def quirky(tmp_path: Path) -> Path:
    """One VOC folder holding every quirk real datasets have, one image each."""
    f = tmp_path / "quirky"
    good = obj("dog", (5, 5, 30, 30))
    add(f, "clean", ann(good + obj("cat", (10, 10, 50, 35), "1"), "clean.jpg"))
    add(f, "mismatch", ann(good, "DSC_0042.jpg"))
    add(f, "pngjpg", ann(good, "pngjpg.jpg"), image="png-as-jpg")
    jpeg = (f / "JPEGImages/clean.jpg").read_bytes()
    add(f, "truncated", ann(good, "truncated.jpg"), image=jpeg[:-20])  # cut inside the pixel data
    add(f, "noimage", ann(good, "noimage.jpg"), image=None)
    add(f, "badbox", ann(good + obj("cat", (30, 5, 10, 30)), "badbox.jpg"))
    add(f, "outside", ann(obj("dog", (-10, 5, 30, H + 20)) + obj("cat", (W + 1, 1, W + 9, 9)), "outside.jpg"))
    add(f, "unknown", ann(good + obj("unicorn", (5, 5, 30, 30)), "unknown.jpg"))
    add(f, "onlyunknown", ann(obj("unicorn", (5, 5, 30, 30)), "onlyunknown.jpg"))
    add(f, "empty", ann("", "empty.jpg"))
    owner = "<source><name>flickr</name></source><owner><name>Fred</name></owner>"
    add(f, "owner", ann(good, "owner.jpg", head=owner))
    add(f, "floats", ann(obj("dog", ("5.5", "5", "30.25", "30.0")), "floats.jpg"))
    add(f, "nodifficult", ann(obj("dog", (5, 5, 30, 30), None), "nodifficult.jpg"))
    add(f, "wrongsize", ann(good, "wrongsize.jpg", size=(600, 400)))
    add(f, "nosize", ann(good, "nosize.jpg", size=None))
    add(f, "badxml", "<annotation><object>")
    train = ["clean", "mismatch", "pngjpg", "truncated", "noimage", "badbox", "outside", "unknown", "onlyunknown",
             "empty", "owner", "floats", "nodifficult", "wrongsize", "nosize", "badxml", "noxml", "clean"]  # fmt: skip
    split_file(f, "trainval", train)
    split_file(f, "test", ["clean"])
    return f


def test_every_quirk_is_handled_and_counted(quirky: Path, tmp_path: Path):
    out = tmp_path / "out"
    report = prepare_voc(quirky, out, classes=["cat", "dog"], val_fraction=0.0)
    p = {k: v.count for k, v in report.problems.items()}
    assert p == {
        "missing_image": 1, "truncated_image": 1, "bad_annotation": 1, "missing_annotation": 1, "invalid_box": 1,
        "box_outside_image": 1, "box_clipped": 1, "unknown_class": 2, "split_overlap": 1, "size_mismatch": 1,
        "filename_mismatch": 1, "extension_mismatch": 1, "float_coordinates": 1, "missing_difficult": 1,
        "size_missing": 1, "no_objects": 2, "duplicate_id": 1,
    }  # fmt: skip
    assert report.unknown_classes == {"unicorn": 2}
    assert "truncated.jpg" in report.problems["truncated_image"].examples[0]
    assert {s["id"]: s["reason"] for s in report.skipped} == {
        "truncated": "truncated_image", "noimage": "missing_image", "badxml": "bad_annotation",
        "noxml": "missing_annotation",
    }  # fmt: skip

    ds = load_prepared(out)
    assert ds.classes == ["cat", "dog"]
    recs = {r.id: r for r in ds.split("train")}
    assert len(ds.split("train")) == 13 and [r.id for r in ds.split("test")] == ["clean"]
    np.testing.assert_array_equal(recs["clean"].labels, [2, 1])
    np.testing.assert_array_equal(recs["clean"].difficult, [False, True])
    assert recs["mismatch"].path.endswith("mismatch.jpg")
    assert recs["pngjpg"].path.endswith("pngjpg.jpg") and recs["pngjpg"].boxes.shape == (1, 4)
    np.testing.assert_array_equal(recs["badbox"].labels, [2])  # the reversed cat box is gone
    np.testing.assert_allclose(recs["outside"].boxes, [[1, 5, 30, H]])  # dog clipped, cat dropped
    np.testing.assert_array_equal(recs["unknown"].labels, [2])
    assert recs["onlyunknown"].boxes.shape == (0, 4) and recs["empty"].boxes.shape == (0, 4)  # kept as negatives
    np.testing.assert_array_equal(recs["owner"].labels, [2])  # <name> in <owner>/<source> is no object
    np.testing.assert_allclose(recs["floats"].boxes, [[5.5, 5, 30.25, 30]])
    assert recs["nodifficult"].difficult.tolist() == [False]
    assert (recs["wrongsize"].width, recs["wrongsize"].height) == (W, H)
    assert (recs["nosize"].width, recs["nosize"].height) == (W, H)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["problems"]["unknown_class"]["count"] == 2
    assert manifest["problems"]["missing_image"]["severity"] == "warning"
    assert manifest["skipped"]["objects"] == {"invalid_box": 1, "box_outside_image": 1, "unknown_class": 2}
    assert len(manifest["skipped"]["images"]) == 4
    assert manifest["counts"]["train"]["per_class"]["dog"]["objects"] == 11
    assert manifest["counts"]["train"]["per_class"]["cat"] == {"objects": 1, "difficult": 1}
    assert manifest["source"]["sets"] == {"train": ["trainval"], "test": ["test"]}
    assert manifest["options"]["classes"] == "list" and "created" in manifest


def test_strict_fails_and_writes_nothing(quirky: Path, tmp_path: Path):
    with pytest.raises(StrictFailure) as e:
        prepare_voc(quirky, tmp_path / "out", classes=["cat", "dog"], strict=True)
    assert e.value.report.problems["missing_image"].count == 1
    assert not (tmp_path / "out").exists()
    clean = clean_folder(tmp_path / "clean")
    assert prepare_voc(clean, tmp_path / "ok", classes="auto", strict=True).written


def test_classes_auto_list_and_errors(tmp_path: Path):
    folder = clean_folder(tmp_path / "d", classes=("zebra", "ant"))
    report = prepare_voc(folder, None, classes="auto")
    assert report.classes == ["ant", "zebra"] and report.classes_auto and not report.written
    assert report.splits["train"].class_objects == [1, 2] and report.splits["train"].class_difficult == [1, 0]
    assert prepare_voc(folder, None, classes="zebra, ant").classes == ["zebra", "ant"]
    for bad, msg in [
        ([], "empty"),
        (["a", "a"], "duplicate"),
        (["background", "a"], "implicit"),
        (None, "no object matches"),
    ]:
        with pytest.raises(SsdError, match=msg):
            prepare_voc(folder, None, classes=bad)


def test_input_errors_are_one_line(tmp_path: Path):
    with pytest.raises(SsdError, match="not found"):
        prepare_voc(tmp_path / "nope", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SsdError, match="no Annotations"):
        prepare_voc(tmp_path / "empty", None)
    add(tmp_path / "nosplit", "a", ann(obj("dog", (1, 1, 5, 5))))  # no split files: split, not refused
    assert list(prepare_voc(tmp_path / "nosplit", None).splits) == ["train"]
    with pytest.raises(SsdError, match="--train-sets"):
        prepare_voc(clean_folder(tmp_path / "c"), None, train_sets="missing")


def test_single_folder_split_mapping(tmp_path: Path):
    f = tmp_path / "tv"
    for i in range(3):
        add(f, f"i{i}", ann(obj("dog", (1, 1, 5, 5))))
    split_file(f, "train", ["i0"])
    split_file(f, "val", ["i1"])
    assert {k: v.images for k, v in prepare_voc(f, None, classes="auto").splits.items()} == {"train": 1, "test": 1}
    split_file(f, "test", ["i2"])
    splits = prepare_voc(f, None, classes="auto").splits
    assert {k: v.images for k, v in splits.items()} == {"train": 1, "test": 1, "val": 1}
    split_file(f, "trainval", ["i0", "i1"])
    assert {k: v.images for k, v in prepare_voc(f, None, classes="auto").splits.items()} == {"train": 2, "test": 1}
    custom = prepare_voc(f, None, classes="auto", train_sets="train,val", test_sets="none")
    assert {k: (v.images, v.sets) for k, v in custom.splits.items()} == {"train": (2, ["train", "val"])}
    g = tmp_path / "cvat"
    add(g, "x", ann(obj("dog", (1, 1, 5, 5))))
    split_file(g, "default", ["x"])
    split_file(g, "dog_default", ["x 1"])  # per-class files are never splits
    assert {k: v.sets for k, v in prepare_voc(g, None, classes="auto").splits.items()} == {"train": ["default"]}


def test_devkit_layout_and_set_options(tmp_path: Path):
    kit = tmp_path / "data" / "VOCdevkit"
    clean_folder(kit / "VOC2007", 2, 2)
    f12 = kit / "VOC2012"
    for i in range(3):
        add(f12, f"2008_00000{i}", ann(obj("dog", (1, 1, 5, 5))))
    split_file(f12, "trainval", [f"2008_00000{i}" for i in range(3)])
    out = tmp_path / "out"
    report = prepare_voc(tmp_path / "data", out, classes=["cat", "dog"])  # the folder holding VOCdevkit works
    assert {k: (v.images, v.sets) for k, v in report.splits.items()} == {
        "train": (5, ["2007/trainval", "2012/trainval"]), "test": (2, ["2007/test"])}  # fmt: skip
    ds = load_prepared(out)
    assert Path(ds.image_root) == kit.resolve() and ds.manifest["source"]["layout"] == "devkit"
    assert ds.split("train")[-1].path == str(kit.resolve() / "VOC2012/JPEGImages/2008_000002.jpg")
    only12 = prepare_voc(kit, None, classes=["cat", "dog"], train_sets="VOC2012/trainval", test_sets="none")
    assert {k: v.images for k, v in only12.splits.items()} == {"train": 3}
    with pytest.raises(SsdError, match="2010"):
        prepare_voc(kit, None, train_sets="2010/trainval")
    with pytest.raises(SsdError, match="should look like"):
        prepare_voc(kit, None, train_sets="trainval")


def test_parallel_parsing_matches_serial(tmp_path: Path, monkeypatch):
    folder = clean_folder(tmp_path / "d", 30, 10)
    serial = prepare_voc(folder, tmp_path / "s", classes="auto", workers=1)
    monkeypatch.setattr(prepare_mod, "_SERIAL_BELOW", 0)
    monkeypatch.setattr(prepare_mod, "_CHUNK", 7)
    parallel = prepare_voc(folder, tmp_path / "p", classes="auto", workers=2)
    assert parallel.splits == serial.splits
    assert (tmp_path / "s/train.jsonl").read_text() == (tmp_path / "p/train.jsonl").read_text()


def test_progress_is_advanced(tmp_path: Path):
    folder = clean_folder(tmp_path / "d")
    reporter = RecordingReporter()
    prepare_voc(folder, None, classes="auto", reporter=reporter)
    assert reporter.totals("read annotations") == [5] and reporter.done("read annotations") == 5
    assert reporter.kinds("read annotations") == ["start", "advance", "end"]


runner = CliRunner()


def test_cli_prints_tables_and_writes(quirky: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare-voc", str(quirky), "--out", str(out), "--classes", "cat,dog"])
    assert result.exit_code == 0, result.output
    for text in ("Problems found", "missing_image", "truncated_image", "Objects per class", "unicorn (2)", "Wrote"):
        assert text in result.output
    assert load_prepared(out).classes == ["cat", "dog"]
    strict = runner.invoke(
        app, ["prepare-voc", str(quirky), "--out", str(tmp_path / "s"), "--classes", "cat,dog", "--strict"]
    )
    assert strict.exit_code == 2 and "missing_image" in strict.output and not (tmp_path / "s").exists()


def test_cli_classes_file_and_errors(tmp_path: Path):
    folder = clean_folder(tmp_path / "d")
    (tmp_path / "classes.txt").write_text("# my classes\ndog\n\ncat\n")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["prepare-voc", str(folder), "-o", str(out), "--classes-file", str(tmp_path / "classes.txt")]
    )
    assert result.exit_code == 0, result.output
    assert load_prepared(out).classes == ["dog", "cat"]
    both = runner.invoke(
        app, ["prepare-voc", str(folder), "--classes", "a", "--classes-file", str(tmp_path / "classes.txt")]
    )
    assert both.exit_code == 2 and "only one" in both.output
    missing = runner.invoke(app, ["prepare-voc", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output


@pytest.mark.skipif(not RACCOON.is_dir(), reason="shared raccoon dataset not present")
def test_raccoon_end_to_end(tmp_path: Path):
    out = tmp_path / "raccoon"
    result = runner.invoke(app, ["prepare-voc", str(RACCOON), "--out", str(out), "--classes", "auto"])
    assert result.exit_code == 0, result.output
    assert "raccoon" in result.output and "--classes auto" in result.output
    ds = load_prepared(out)
    assert ds.classes == ["raccoon"]
    train, val, test = ds.split("train"), ds.split("val"), ds.split("test")
    assert (len(train), len(val), len(test)) == (144, 16, 40)  # 10% of trainval held out as val by default
    assert not {r.id for r in train} & {r.id for r in val}
    assert sum(len(r.labels) for r in train + val + test) == 217
    for r in train + val + test:
        assert Path(r.path).is_file()
        assert (r.boxes[:, :2] >= 1).all() and (r.boxes[:, 2] <= r.width).all() and (r.boxes[:, 3] <= r.height).all()


def test_nothing_usable_reports_problems(tmp_path: Path):
    f = tmp_path / "bad"
    add(f, "a", ann(obj("dog", (1, 1, 5, 5))), image=None)
    add(f, "b", "<annotation>", image="jpg")
    split_file(f, "trainval", ["a", "b"])
    with pytest.raises(prepare_mod.PrepareFailure) as e:
        prepare_voc(f, tmp_path / "out", classes=["dog"])
    assert {p for p in e.value.report.problems} == {"missing_image", "bad_annotation"}
    assert not (tmp_path / "out").exists()
    result = runner.invoke(app, ["prepare-voc", str(f), "-o", str(tmp_path / "out"), "--classes", "dog"])
    assert result.exit_code == 2 and "missing_image" in result.output and "no usable image" in result.output
    (tmp_path / "file").write_text("x")
    with pytest.raises(SsdError, match="not a folder"):
        prepare_voc(clean_folder(tmp_path / "c"), tmp_path / "file", classes="auto")
