"""Issue 17, data/reader half: every file a user can hand us turns any malformation into one SsdError line
naming the file; FIFOs never block; images whose boxes do not fit are skipped and reported, not clipped."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import digest, ssd, tiny_checkpoint
from PIL import Image

from ssdcli.checkpoint import load_checkpoint, save_checkpoint
from ssdcli.data.images import MAX_IMAGE_PIXELS, read_image
from ssdcli.data.prepare import prepare_voc
from ssdcli.data.records import load_prepared
from ssdcli.data.voc import parse_voc_item
from ssdcli.detections_io import detections_to_arrays, read_detections
from ssdcli.errors import SsdError
from ssdcli.models import build_model

W, H = 80, 60


def one_line(e: pytest.ExceptionInfo, name: str | Path) -> str:
    text = str(e.value)
    assert "\n" not in text and str(name) in text, text
    return text


# ---------------------------------------------------------------- a tiny VOC folder


def voc_folder(root: Path, items: dict[str, tuple[str, tuple[int, int] | None]]) -> Path:
    """``items``: id -> (objects XML, image size or None for no image file). XML <size> is always W x H."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, (objects, size) in items.items():
        if size is not None:
            Image.new("RGB", size, (90, 120, 30)).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>{W}</width><height>{H}</height></size>"
            f"{objects}</annotation>"
        )
    (root / "ImageSets/Main/trainval.txt").write_text("\n".join(items) + "\n")
    return root


def obj(name: str, box: tuple) -> str:
    coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name><difficult>0</difficult><bndbox>{coords}</bndbox></object>"


def tree_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


@contextmanager
def fifo_watchdog(fifos: list[Path], after: float = 20.0) -> Iterator[list[str]]:
    """Opens the write end of ``fifos`` after ``after`` seconds if a reader is still blocked on one, so a hang
    becomes a test failure (the yielded list names the FIFOs that had a blocked reader) instead of a stuck run."""
    blocked: list[str] = []
    done = threading.Event()

    def watch() -> None:
        if done.wait(after):
            return
        for f in fifos:
            try:
                fd = os.open(f, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only while someone has it open to read
            except OSError:
                continue
            blocked.append(f.name)
            os.close(fd)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield blocked
    finally:
        done.set()
        thread.join()


# ---------------------------------------------------------------- item 1: the image-reading path


def test_short_png_and_bombs_are_refused_from_the_header(tmp_path: Path) -> None:
    from test_fuzz_images import png_claiming

    short = tmp_path / "short.png"
    short.write_bytes(png_claiming(100, 100, pixel_bytes=10))  # segfaulted torchvision's libpng decoder
    with pytest.raises(SsdError) as e:
        read_image(short)
    assert "not a readable image" in one_line(e, short)
    for side in (30000, 60000):
        bomb = tmp_path / f"bomb{side}.png"
        bomb.write_bytes(png_claiming(side, side))
        assert bomb.stat().st_size < 200 and side * side > MAX_IMAGE_PIXELS
        start = time.perf_counter()
        with pytest.raises(SsdError) as e:
            read_image(bomb)
        assert "over the limit" in one_line(e, bomb) and time.perf_counter() - start < 1.0


def test_16bit_and_odd_modes_still_decode(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 7), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 5, 7) and int(image[0, 0, 0]) == 156
    Image.new("RGB", (7, 5)).save(tmp_path / "png-in.jpg", format="PNG")  # content sniffed, not the extension
    assert tuple(read_image(tmp_path / "png-in.jpg").shape) == (3, 5, 7)


def test_eval_on_a_short_png_that_passed_prepare_is_one_line(tmp_path: Path) -> None:
    """The 108-byte PNG of the issue has its IEND marker, so prepare-voc without --verify-images keeps it;
    `eval` then stopped the process with a segfault (exit 139). Now: exit 2 and one line naming the file."""
    from test_fuzz_images import png_claiming

    root = voc_folder(tmp_path / "voc", {"a": (obj("dog", (5, 5, 40, 40)), (W, H))})
    (root / "JPEGImages" / "a.jpg").unlink()
    (root / "JPEGImages" / "a.png").write_bytes(png_claiming(W, H, pixel_bytes=10))
    prepare_voc(root, tmp_path / "prep", classes=["cat", "dog"], val_fraction=0)  # the tiny model's classes
    weights = tiny_checkpoint(tmp_path / "w.pth")
    res = ssd("eval", "--weights", weights, "--data", tmp_path / "prep", "--split", "train", "--device", "cpu")
    assert res.exit_code == 2 and "Traceback" not in res.output and "a.png: not a readable image" in res.output
    res = ssd("prepare-voc", root, "--out", tmp_path / "verified", "--classes", "dog", "--verify-images")
    assert res.exit_code == 2 and "truncated_image" in res.output  # nothing usable: flagged, nothing written


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_are_refused_without_hanging(tmp_path: Path) -> None:
    root = voc_folder(tmp_path / "voc", {"a": (obj("dog", (5, 5, 40, 40)), (W, H)),
                                         "b": (obj("dog", (5, 5, 40, 40)), (W, H))})  # fmt: skip
    os.remove(root / "Annotations" / "b.xml")
    os.mkfifo(root / "Annotations" / "b.xml")  # a FIFO named b.xml
    os.mkfifo(root / "JPEGImages" / "pipe.jpg")
    (root / "Annotations" / "pipe.xml").write_text((root / "Annotations" / "a.xml").read_text())
    (root / "ImageSets/Main/trainval.txt").write_text("a\nb\npipe\n")
    fifos = [root / "Annotations" / "b.xml", root / "JPEGImages" / "pipe.jpg"]
    with fifo_watchdog(fifos) as blocked:
        res = ssd("prepare-voc", root, "--out", tmp_path / "prep", "--classes", "dog", "--val-fraction", "0")
    assert not blocked and res.exit_code == 0, res.output
    reasons = {
        s["id"]: s["reason"] for s in json.loads((tmp_path / "prep/manifest.json").read_text())["skipped"]["images"]
    }
    assert reasons == {"b": "bad_annotation", "pipe": "unreadable_image"}
    assert "not a regular file" in res.output

    weights = tiny_checkpoint(tmp_path / "w.pth")
    with fifo_watchdog(fifos) as blocked:
        res = ssd("detect", root / "JPEGImages", "--weights", weights, "--device", "cpu", "--json", tmp_path / "d.json")
    assert not blocked and res.exit_code == 0, res.output
    assert "pipe.jpg: not a regular file" in res.output
    assert isinstance(json.loads((tmp_path / "d.json").read_text()), list)
    with fifo_watchdog(fifos) as blocked:  # named on its own: refused, one line
        res = ssd("detect", root / "JPEGImages" / "pipe.jpg", "--weights", weights, "--device", "cpu")
    assert not blocked and res.exit_code == 2 and "Traceback" not in res.output


# ---------------------------------------------------------------- item 5: one red line per malformed file


def test_xml_with_unknown_encoding_is_a_bad_annotation(tmp_path: Path) -> None:
    root = voc_folder(tmp_path / "voc", {"a": (obj("dog", (5, 5, 40, 40)), (W, H)),
                                         "b": (obj("dog", (5, 5, 40, 40)), (W, H))})  # fmt: skip
    xml = root / "Annotations" / "b.xml"
    xml.write_text('<?xml version="1.0" encoding="x-no-such-encoding"?>' + xml.read_text())
    ann = parse_voc_item("b", str(xml), str(root / "JPEGImages/b.jpg"), str(root / "JPEGImages"))
    assert ann.skip == "bad_annotation" and "encoding" in ann.problems[-1][2]
    before = tree_digests(root)
    res = ssd("prepare-voc", root, "--out", tmp_path / "prep", "--classes", "dog", "--val-fraction", "0")
    assert res.exit_code == 0 and "Traceback" not in res.output and "bad_annotation" in res.output
    assert tree_digests(root) == before
    (root / "ImageSets/Main/trainval.txt").write_text("b\n")
    res = ssd("prepare-voc", root, "--out", tmp_path / "prep2", "--classes", "dog")
    assert res.exit_code == 2 and "Traceback" not in res.output


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prep")
    voc_folder(root / "voc", {"a": (obj("cat", (5, 5, 40, 40)), (W, H)), "b": (obj("dog", (2, 2, 20, 30)), (W, H))})
    prepare_voc(root / "voc", root / "prepared", classes=["cat", "dog"], val_fraction=0)
    return root / "prepared"


def _damage(prepared: Path, tmp_path: Path, manifest=None, lines=None) -> Path:
    """A copy of ``prepared`` with its manifest edited by ``manifest(dict)`` and train.jsonl by ``lines(list)``."""
    copy = tmp_path / "damaged"
    copy.mkdir()
    m = json.loads((prepared / "manifest.json").read_text())
    recs = (prepared / "train.jsonl").read_text().splitlines()
    result = manifest(m) if manifest else None
    text = result if isinstance(result, str) else json.dumps(m)
    (copy / "manifest.json").write_text(text)
    (copy / "train.jsonl").write_text("\n".join(lines(recs) if lines else recs) + "\n")
    return copy


def _set(d: dict, key: str, value) -> None:
    d[key] = value


def _entry(edit):
    def apply(recs: list[str]) -> list[str]:
        d = json.loads(recs[0])
        edit(d)
        return [json.dumps(d), *recs[1:]]

    return apply


DAMAGED_PREPARED = {
    "garbled manifest": ({"manifest": lambda m: '{"format": "ssdcli-prepared", "classes": ['}, "unreadable manifest"),
    "binary manifest": ({"manifest": lambda m: "\udcff"}, "manifest"),
    "manifest is a list": ({"manifest": lambda m: "[1, 2]"}, "not an ssdcli prepared-dataset manifest"),
    "deeply nested manifest": ({"manifest": lambda m: "[" * 100_000 + "]" * 100_000}, "manifest"),
    "classes not a list": ({"manifest": lambda m: _set(m, "classes", "cat")}, "'classes'"),
    "image_root missing": ({"manifest": lambda m: _set(m, "image_root", None)}, "'image_root'"),
    "splits not a dict": ({"manifest": lambda m: _set(m, "splits", ["train"])}, "'splits'"),
    "split entry without file": ({"manifest": lambda m: _set(m, "splits", {"train": {"images": 2}})}, "'splits'"),
    "split file missing": ({"manifest": lambda m: _set(m, "splits", {"train": {"file": "nope.jsonl"}})}, "nope.jsonl"),
    "bad JSON line": ({"lines": lambda r: [r[0][:-5], *r[1:]]}, "line 1"),
    "line is a list": ({"lines": lambda r: ["[1, 2, 3]", *r[1:]]}, "line 1"),
    "boxes of wrong shape": ({"lines": _entry(lambda d: _set(d, "boxes", [[1, 2, 3]]))}, "'boxes'"),
    "boxes as text": ({"lines": _entry(lambda d: _set(d, "boxes", [["1", "2", "3", "4"]]))}, "'boxes'"),
    "label out of range": ({"lines": _entry(lambda d: _set(d, "labels", [7]))}, "'labels'"),
    "labels count": ({"lines": _entry(lambda d: _set(d, "labels", [1, 2]))}, "'labels'"),
    "width not a number": ({"lines": _entry(lambda d: _set(d, "width", "wide"))}, "'width'"),
    "file missing": ({"lines": _entry(lambda d: d.pop("file"))}, "missing key"),
    "huge integer": ({"lines": _entry(lambda d: _set(d, "height", 10**400))}, "'height'"),
}


@pytest.mark.parametrize("case", list(DAMAGED_PREPARED))
def test_damaged_prepared_folder_is_one_line(case: str, prepared: Path, tmp_path: Path) -> None:
    edits, expected = DAMAGED_PREPARED[case]
    if case == "binary manifest":
        copy = _damage(prepared, tmp_path)
        (copy / "manifest.json").write_bytes(b'{"format": "\xff\xfe\x00garbage')
    else:
        copy = _damage(prepared, tmp_path, **edits)
    with pytest.raises(SsdError) as e:
        load_prepared(copy)
    text = str(e.value)
    assert "\n" not in text and str(copy) in text and expected in text, text


def test_damaged_prepared_folder_through_the_cli(prepared: Path, tmp_path: Path) -> None:
    copy = _damage(prepared, tmp_path, lines=_entry(lambda d: _set(d, "boxes", [[1, 2, 3]])))
    weights = tiny_checkpoint(tmp_path / "w.pth")
    before = tree_digests(copy)
    res = ssd("eval", "--weights", weights, "--data", copy, "--split", "train", "--device", "cpu")
    assert res.exit_code == 2 and "Traceback" not in res.output and "train.jsonl: line 1" in res.output
    assert tree_digests(copy) == before


def _detections_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "d.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('[{"image_id": "a", "label": "cat", "score": 1' + "0" * 400 + ', "box": [1, 2, 3, 4]}]', "digits"),
        ('[{"image_id": "a", "label": "cat", "score": 0.5, "box": [1' + "0" * 400 + ", 2, 3, 4]}]", "digits"),
        ('[{"image_id": "a", "label": "cat", "score": "0.9", "box": [1, 2, 3, 4]}]', "'0.9'"),
        ('[{"image_id": "a", "label": "cat", "score": true, "box": [1, 2, 3, 4]}]', "True"),
        ('[{"image_id": "a", "label": "cat", "score": 0.9, "box": [1, "2", 3, 4]}]', "'2'"),
        ('[{"image_id": {"x": 1}, "label": "cat", "score": 0.9, "box": [1, 2, 3, 4]}]', "image_id"),
    ],
)
def test_malformed_detections_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = _detections_file(tmp_path, text)
    with pytest.raises(SsdError) as e:
        detections_to_arrays(read_detections(path), ["a"], ["cat"], source=str(path))
    assert expected in one_line(e, path)


def test_null_scores_are_still_dropped_as_missing(tmp_path: Path) -> None:
    path = _detections_file(tmp_path, '[{"image_id": "a", "label": "cat", "score": null, "box": [1, 2, 3, 4]},'
                                      '{"image_id": "a", "label": "cat", "score": 0.5, "box": [1, 2, 3, 4]}]')  # fmt: skip
    arrays, check = detections_to_arrays(read_detections(path), ["a"], ["cat"])
    assert len(arrays) == 1 and check.non_finite == 1


def test_string_score_through_eval_cli(prepared: Path, tmp_path: Path) -> None:
    path = _detections_file(tmp_path, '[{"image_id": "a", "label": "cat", "score": "0.9", "box": [5, 5, 40, 40]}]')
    res = ssd("eval", "--detections", path, "--data", prepared, "--split", "train")
    assert res.exit_code == 2 and "Traceback" not in res.output and "numbers only" in res.output


@pytest.fixture(scope="module")
def checkpoint_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "m.pth"
    save_checkpoint(path, build_model("ssdlite320", 3, image_size=128))
    return torch.load(path, weights_only=True)


CHECKPOINT_DAMAGE = {
    "config not a dict": (lambda d: _set(d, "config", [1, 2]), "config"),
    "config missing arch": (lambda d: d["config"].pop("arch"), "missing 'arch'"),
    "num_classes text": (lambda d: _set(d["config"], "num_classes", "many"), "damaged"),
    "num_classes huge": (lambda d: _set(d["config"], "num_classes", 10**12), "num_classes"),
    "image_size negative": (lambda d: _set(d["config"], "image_size", -7), "image_size"),
    "unknown arch": (lambda d: _set(d["config"], "arch", "nope"), "unknown model 'nope'"),
    "preprocess std zero": (lambda d: _set(d["config"]["preprocess"], "std", [0, 0, 0]), "mean/std"),
    "preprocess text": (lambda d: _set(d["config"], "preprocess", "imagenet"), "damaged"),
    "class names count": (lambda d: _set(d["config"], "class_names", ["a"]), "class names"),
    "model not a dict": (lambda d: _set(d, "model", [1]), "'model'"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_DAMAGE))
def test_damaged_checkpoint_config_is_one_line(case: str, checkpoint_data: dict, tmp_path: Path) -> None:
    import copy

    edit, expected = CHECKPOINT_DAMAGE[case]
    data = copy.deepcopy(checkpoint_data)
    edit(data)
    path = tmp_path / "bad.pth"
    torch.save(data, path)
    with pytest.raises(SsdError) as e:
        load_checkpoint(path)
    assert expected in one_line(e, path)


def _onnx_with_metadata(path: Path, value: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["images"], ["out"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"ssdcli": value})
    onnx.save(model, str(path))
    return path


def _meta(**changes) -> str:
    config = {"arch": "ssdlite320", "num_classes": 3, "image_size": 128,
              "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}}  # fmt: skip
    meta = {"format": "ssdcli-onnx", "config": config, "outputs": ["out"], "nms": False}
    for key, value in changes.items():
        if key.startswith("config_"):
            config[key[7:]] = value
        else:
            meta[key] = value
    return json.dumps(meta)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{not json", "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
        ("[1, 2]", "damaged ssdcli metadata"),
        (_meta(config="x"), "damaged ssdcli metadata"),
        (_meta(outputs=[1]), "damaged ssdcli metadata"),
        (_meta(config_num_classes="many"), "config is damaged"),
        (_meta(config_image_size=-7), "image_size -7"),
        (_meta(config_preprocess=[1]), "config is damaged"),
        (_meta(config_arch="nope"), "unknown model"),
        (
            _meta(nms=True, outputs=["boxes", "scores", "labels", "num_detections"], postprocess={"bogus": 1}),
            "postprocess",
        ),
        (
            _meta(nms=True, outputs=["boxes", "scores", "labels", "num_detections"], postprocess={"top_k": "x"}),
            "postprocess",
        ),
    ],
)
def test_damaged_onnx_metadata_is_one_line(tmp_path: Path, value: str, expected: str) -> None:
    from ssdcli.inference.onnx_backend import OnnxBackend
    from ssdcli.models.export_graph import DETECTION_OUTPUTS

    value = value.replace('["boxes", "scores", "labels", "num_detections"]', json.dumps(list(DETECTION_OUTPUTS)))
    path = _onnx_with_metadata(tmp_path / "m.onnx", value)
    with pytest.raises(SsdError) as e:
        OnnxBackend(path, "cpu")
    assert expected in one_line(e, path)


# ---------------------------------------------------------------- item 6 (data part): boxes that do not fit


def test_image_smaller_than_xml_and_all_boxes_invalid_are_skipped_and_reported(tmp_path: Path) -> None:
    root = voc_folder(tmp_path / "voc", {
        "good": (obj("dog", (5, 5, 40, 40)), (W, H)),
        "half": (obj("dog", (30, 20, 70, 55)), (W // 2, H // 2)),  # resized after annotation: boxes beyond it
        "wrongsize": (obj("dog", (5, 5, 20, 20)), (W // 2, H // 2)),  # XML size wrong, boxes fit: kept
        "allbad": (obj("dog", (40, 5, 10, 30)) + obj("dog", (W + 5, 1, W + 9, 9)), (W, H)),
        "someobjects": (obj("dog", (40, 5, 10, 30)) + obj("dog", (5, 5, 40, 40)), (W, H)),
        "empty": ("", (W, H)),  # no objects at all: still a negative
    })  # fmt: skip
    before = tree_digests(root)
    res = ssd("prepare-voc", root, "--out", tmp_path / "prep", "--classes", "dog", "--val-fraction", "0")
    assert res.exit_code == 0, res.output
    assert "image_smaller_than_xml" in res.output and "all_boxes_invalid" in res.output
    assert tree_digests(root) == before
    manifest = json.loads((tmp_path / "prep/manifest.json").read_text())
    reasons = {s["id"]: s["reason"] for s in manifest["skipped"]["images"]}
    assert reasons == {"half": "image_smaller_than_xml", "allbad": "all_boxes_invalid"}
    assert "box_clipped" not in manifest["problems"]  # the half-size image's boxes were not clipped
    kept = {r.id: r for r in load_prepared(tmp_path / "prep").split("train")}
    assert sorted(kept) == ["empty", "good", "someobjects", "wrongsize"]
    assert len(kept["someobjects"].labels) == 1 and len(kept["empty"].labels) == 0
    res = ssd("prepare-voc", root, "--out", tmp_path / "strict", "--classes", "dog", "--strict")
    assert res.exit_code != 0 and not (tmp_path / "strict" / "manifest.json").exists()
