"""`ssd detect`: golden pictures, detection JSON round trip, bad inputs, CLI.

Most tests use a stub backend whose relative boxes are known, so the expected original-image pixels are exact.
The large-image case uses 8000x6000 (not 20000x20000) to stay fast; the code path is the same.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ssdcli import build_model, save_checkpoint
from ssdcli.boxes import pixel_to_relative, relative_to_pixel
from ssdcli.engine.detect import collect_inputs, load_for_detect, run_detect
from ssdcli.errors import SsdError
from ssdcli.inference import Detector
from ssdcli.models.base import ModelConfig
from ssdcli.postprocess import Detections
from ssdcli.reporting import RecordingReporter
from ssdcli.visualize import MAX_DRAW_SIDE, class_color, style_for

# relative xyxy boxes returned for every image: a cat (shown at conf 0.5) and a dog (only in --json)
REL = torch.tensor([[0.1, 0.1, 0.6, 0.75], [0.5, 0.2, 0.9, 0.9]])
SCORES = torch.tensor([0.9, 0.3])
LABELS = torch.tensor([1, 2])


class StubBackend:
    def __init__(self) -> None:
        self.config = ModelConfig(arch="stub", num_classes=3, image_size=32, class_names=["cat", "dog"])
        self.device = torch.device("cpu")
        self.batches: list[int] = []

    def detect(self, batch: torch.Tensor, postprocess) -> list[Detections]:
        assert batch.shape[1:] == (3, 32, 32) and batch.dtype == torch.float32
        self.batches.append(batch.shape[0])
        keep = SCORES > postprocess.score_threshold
        return [Detections(REL[keep], SCORES[keep], LABELS[keep]) for _ in range(batch.shape[0])]


@pytest.fixture
def stub() -> Detector:
    return Detector(StubBackend())


def save(path: Path, size: tuple[int, int] = (200, 120), mode: str = "RGB", fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path, format=fmt)
    return path


def expected_pixels(width: int, height: int) -> np.ndarray:
    return relative_to_pixel(REL, width, height).numpy()


def test_golden_picture_on_original_resolution(tmp_path: Path, stub: Detector) -> None:
    src = save(tmp_path / "in" / "img.png")
    summary = run_detect(stub, [str(src)], tmp_path / "vis")
    assert summary.processed == 1 and summary.per_class == {"cat": 1, "dog": 0}
    pic = np.asarray(Image.open(tmp_path / "vis" / "img.png"))
    assert pic.shape == (120, 200, 3)
    xmin, ymin, xmax, ymax = np.rint(expected_pixels(200, 120)[0]).astype(int)  # VOC (21, 13, 120, 90)
    l, t, r, b = xmin - 1, ymin - 1, xmax - 1, ymax - 1
    cat = np.all(pic == class_color(1), axis=-1)
    lw = style_for(200, 120)[0]
    assert cat[t + 5 : b, l].all() and cat[t + 5 : b, r].all() and cat[b, l : r + 1].all()  # edges exactly there
    assert not cat[t + 5 : b + 1, l - 1].any() and not cat[t + 5 : b + 1, r + 1].any() and not cat[b + 1, l : r].any()
    assert not cat[t + lw : b - lw + 1, l + lw : r - lw + 1].any()  # interior untouched
    assert not np.all(pic == class_color(2), axis=-1).any()  # the dog (0.3 < conf) is not drawn


def test_json_round_trip_and_thresholds(tmp_path: Path, stub: Detector) -> None:
    srcs = [save(tmp_path / "in" / "a.png", (200, 120)), save(tmp_path / "in" / "b.jpg", (64, 48))]
    summary = run_detect(stub, [str(tmp_path / "in")], tmp_path / "vis", json_path=tmp_path / "d.json", save_txt=True)
    records = json.loads((tmp_path / "d.json").read_text())
    assert summary.json_detections == len(records) == 4  # every detection >= score threshold, --conf ignored
    assert all(set(r) == {"image_id", "label", "score", "box"} for r in records)
    for src in srcs:
        w, h = Image.open(src).size
        mine = [r for r in records if r["image_id"] == src.stem]
        assert [r["label"] for r in mine] == ["cat", "dog"] and [r["score"] for r in mine] == pytest.approx([0.9, 0.3])
        np.testing.assert_allclose([r["box"] for r in mine], expected_pixels(w, h), atol=0.006)
        back = pixel_to_relative(torch.tensor([r["box"] for r in mine]), w, h)
        torch.testing.assert_close(back, REL, atol=1e-3, rtol=0)
    txt = (tmp_path / "vis" / "a.txt").read_text().splitlines()
    assert len(txt) == 1 and txt[0].split()[0] == "cat" and len(txt[0].split()) == 6  # only >= conf
    assert [float(v) for v in txt[0].split()[2:]] == pytest.approx(expected_pixels(200, 120)[0], abs=0.06)

    run_detect(stub, [str(tmp_path / "in")], None, json_path=tmp_path / "c.json", classes=["dog"], conf=0.1, max_det=1)
    assert {r["label"] for r in json.loads((tmp_path / "c.json").read_text())} == {"dog"}
    with pytest.raises(SsdError, match="--classes bird"):
        run_detect(stub, [str(tmp_path / "in")], None, classes=["bird"])


def test_batches_progress_and_formats(tmp_path: Path, stub: Detector) -> None:
    folder = tmp_path / "in"
    save(folder / "gray.png", mode="L")
    save(folder / "rgba.png", mode="RGBA")
    save(folder / "pic.bmp")
    save(folder / "pic2.tiff")
    save(folder / "pic3.webp")
    save(folder / "pal.PNG", mode="P")
    Image.fromarray(np.full((50, 60), 40000, dtype=np.uint16)).save(folder / "deep16.png")  # 16-bit grayscale
    calls = RecordingReporter()
    summary = run_detect(stub, [str(folder)], tmp_path / "vis", batch_size=4, reporter=calls)
    assert summary.processed == 7 and not summary.skipped
    assert stub.backend.batches == [4, 3] and calls.totals("detect") == [7] and calls.done("detect") == 7
    assert [e[2] for e in calls.events if e[0] == "advance"] == [4, 3] and calls.events[-1] == ("end", "detect")
    names = ["deep16.png", "gray.png", "pal.PNG", "pic.bmp", "pic2.tiff", "pic3.webp", "rgba.png"]
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == names
    assert Image.open(tmp_path / "vis" / "gray.png").mode == "RGB"
    assert Image.open(tmp_path / "vis" / "deep16.png").getpixel((30, 30)) == (156, 156, 156)  # 40000 / 257


def test_exif_orientation_and_reduced_decode(tmp_path: Path) -> None:
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: displayed size is 400x600
    Image.new("RGB", (600, 400), (200, 10, 10)).save(path, exif=exif)
    full = load_for_detect(path, 32, draw=True)
    assert (full.width, full.height) == (400, 600) and full.picture.size == (400, 600) and not full.downscaled
    small = load_for_detect(path, 32, draw=True, max_side=150)  # the huge-image path, forced small
    assert (small.width, small.height) == (400, 600) and small.downscaled and small.picture.size == (100, 150)
    assert small.net.shape == (3, 32, 32)


def test_bad_files_are_skipped_with_one_warning_each(tmp_path: Path, stub: Detector) -> None:
    folder = tmp_path / "in"
    save(folder / "good.jpg")
    save(folder / "png_named.jpg", fmt="PNG")  # content sniffed, not trusted from the name
    (folder / "empty.jpg").write_bytes(b"")
    data = (folder / "good.jpg").read_bytes()
    save(folder / "full.png", (300, 300))
    (folder / "truncated.png").write_bytes((folder / "full.png").read_bytes()[:200])
    (folder / "full.png").unlink()
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.webp").write_bytes(b"RIFF" + data[:50])
    warnings: list[str] = []
    summary = run_detect(stub, [str(folder)], tmp_path / "vis", warn=warnings.append, json_path=tmp_path / "d.json")
    assert summary.processed == 2 and summary.ignored == 1
    assert sorted(Path(p).name for p, _ in summary.skipped) == ["empty.jpg", "fake.webp", "truncated.png"]
    assert len(warnings) == 3 and all("\n" not in w for w in warnings)
    assert any("empty.jpg" in w and "empty" in w for w in warnings)
    assert {r["image_id"] for r in json.loads((tmp_path / "d.json").read_text())} == {"good", "png_named"}


def test_large_image_downscaled_for_drawing_boxes_in_original_pixels(tmp_path: Path, stub: Detector) -> None:
    src = tmp_path / "big.jpg"
    Image.new("RGB", (8000, 6000), (30, 30, 30)).save(src, quality=80)
    summary = run_detect(stub, [str(src)], tmp_path / "vis", json_path=tmp_path / "d.json")
    assert summary.processed == 1 and summary.downscaled == 1
    records = json.loads((tmp_path / "d.json").read_text())
    np.testing.assert_allclose(records[0]["box"], expected_pixels(8000, 6000)[0], atol=0.01)  # (801, 601, 4800, 4500)
    pic = Image.open(tmp_path / "vis" / "big.jpg")
    assert pic.size == (MAX_DRAW_SIDE, 3072)
    arr = np.asarray(pic).astype(int)
    s = MAX_DRAW_SIDE / 8000
    lw = style_for(*pic.size)[0]
    left, bottom = round(800 * s), round(4500 * s) - 1  # continuous edges scaled, first/last covered pixel
    near = lambda y, x: np.abs(arr[y, x] - class_color(1)).sum() < 90  # JPEG: approximate colours
    assert near(1500, left + lw // 2) and near(bottom - lw // 2, 1000)
    assert not near(1500, left - 4) and not near(bottom + 4, 1000)


def test_unwritable_out(tmp_path: Path, stub: Detector) -> None:
    src = save(tmp_path / "in" / "a.png")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SsdError, match="--out .*cannot write"):
        run_detect(stub, [str(src)], blocker / "vis")
    with pytest.raises(SsdError, match="not a folder"):
        run_detect(stub, [str(src)], blocker)
    if os.geteuid() != 0:  # root ignores permissions
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(SsdError, match="cannot write"):
            run_detect(stub, [str(src)], ro)


def test_outputs_never_overwrite_inputs(tmp_path: Path, stub: Detector) -> None:
    folder = tmp_path / "in"
    src = save(folder / "a.png")
    with pytest.raises(SsdError, match="input folder"):
        run_detect(stub, [str(folder)], folder)
    with pytest.raises(SsdError, match="overwrite"):
        run_detect(stub, [str(src)], folder)
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]
    # --out inside the input folder with --recursive: earlier pictures are not read back as inputs
    run_detect(stub, [str(folder)], folder / "vis", recursive=True)
    summary = run_detect(stub, [str(folder)], folder / "vis", recursive=True, force=True)  # replaces its pictures
    assert summary.processed == 1


def test_no_valid_images(tmp_path: Path, stub: Detector) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    with pytest.raises(SsdError, match="no image files found"):
        run_detect(stub, [str(folder)], tmp_path / "vis")
    (folder / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(SsdError, match="no image could be processed"):
        run_detect(stub, [str(folder)], tmp_path / "vis", json_path=tmp_path / "d.json")
    assert not (tmp_path / "d.json").exists()
    with pytest.raises(SsdError, match="no such file"):
        run_detect(stub, [str(tmp_path / "missing")], None)


def test_name_clashes_and_globs(tmp_path: Path, stub: Detector) -> None:
    save(tmp_path / "in" / "a.png")
    save(tmp_path / "in" / "sub" / "a.png")
    save(tmp_path / "in" / "a.jpg")
    items, _, _ = collect_inputs([str(tmp_path / "in")], recursive=True)
    assert [str(i.rel) for i in items] == ["a.jpg", "a_2.png", "sub/a.png"]
    assert [i.image_id for i in items] == ["a", "a_2", "sub/a"]  # shared stems get unique ids
    run_detect(stub, [str(tmp_path / "in")], tmp_path / "vis", recursive=True, save_txt=True)
    names = sorted(str(p.relative_to(tmp_path / "vis")) for p in (tmp_path / "vis").rglob("*.*"))
    assert names == ["a.jpg", "a.txt", "a_2.png", "a_2.txt", "sub/a.png", "sub/a.txt"]
    items, _, _ = collect_inputs([str(tmp_path / "in" / "*.png"), str(tmp_path / "in" / "sub" / "a.png")])
    assert [str(i.rel) for i in items] == ["a.png", "a_2.png"]


# ---------------------------------------------------------------- real model, CLI

@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory):
    """A random-weight SSDLite checkpoint; torch runs single-threaded meanwhile (the 2 test cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, build_model("ssdlite320", 3))
    yield path
    torch.set_num_threads(threads)


def noise_images(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"img{i}.jpg")
        Image.fromarray(rng.integers(0, 255, (90 + 10 * i, 120, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_json_matches_detector_predict(tmp_path: Path, tiny_ckpt: Path) -> None:
    """What `eval --weights` computes (Detector.predict) equals what `detect --json` writes."""
    paths = noise_images(tmp_path / "in", 2)
    detector = Detector.from_checkpoint(tiny_ckpt, "cpu")
    run_detect(detector, [str(tmp_path / "in")], None, batch_size=1, json_path=tmp_path / "d.json")
    preds = detector.predict([str(p) for p in paths], batch_size=1)  # same batches: bit-identical scores
    expected = [r for p, pred in zip(paths, preds) for r in pred.to_records(p.stem)]
    assert json.loads((tmp_path / "d.json").read_text()) == expected


def test_cli(tmp_path: Path, tiny_ckpt: Path) -> None:
    from ssdcli.cli.main import app

    noise_images(tmp_path / "in", 1)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xffnot really")
    runner = CliRunner()
    model = ["--weights", str(tiny_ckpt), "--device", "cpu"]
    args = ["detect", str(tmp_path / "in"), *model, "--out", str(tmp_path / "vis")]
    res = runner.invoke(app, args + ["--json", str(tmp_path / "d.json"), "--conf", "0.2", "--save-txt"])
    assert res.exit_code == 0, res.output
    assert "images processed" in res.output and "broken.jpg" in res.output
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["img0.jpg", "img0.txt"]
    assert json.loads((tmp_path / "d.json").read_text())
    res = runner.invoke(app, args[:-1] + [str(tmp_path / "in")])
    assert res.exit_code == 2 and "input folder" in res.output
    res = runner.invoke(app, ["detect", str(tmp_path / "in" / "broken.jpg"), *model])
    assert res.exit_code == 2 and "no image could be processed" in res.output
    res = runner.invoke(app, args + ["--classes", "nope"])
    assert res.exit_code == 2 and "--classes nope" in res.output


def test_json_into_eval_detections_gives_eval_weights_numbers(tmp_path: Path, stub: Detector) -> None:
    evaluator = pytest.importorskip("ssdcli.engine.evaluator")
    from ssdcli.data.records import ImageRecord
    from ssdcli.detections_io import read_detections

    srcs = [save(tmp_path / "in" / "a.png", (200, 120)), save(tmp_path / "in" / "b.png", (90, 160))]
    records = []
    for src in srcs:
        w, h = Image.open(src).size
        gt = expected_pixels(w, h)[:1] + np.array([2, -1, 3, 0], dtype=np.float32)  # the cat box, slightly off
        records.append(ImageRecord(src.stem, str(src), w, h, gt, np.array([1]), np.array([False])))
    run_detect(stub, [str(tmp_path / "in")], None, json_path=tmp_path / "d.json")
    dets = read_detections(tmp_path / "d.json")
    from_file = evaluator.evaluate_detections(dets, records, ["cat", "dog"], ["voc07", "coco"])
    from_model = evaluator.evaluate_detector(stub, records, ["cat", "dog"], ["voc07", "coco"])
    assert from_file.map == pytest.approx(1.0)
    assert from_file.to_dict()["metrics"] == from_model.to_dict()["metrics"]


@pytest.mark.slow
def test_onnx_model(tmp_path: Path, tiny_ckpt: Path) -> None:
    """`--weights model.onnx` runs through the ONNX Runtime backend with the same outputs (export: ~7 s CPU)."""
    onnx_export = pytest.importorskip("ssdcli.deploy.onnx_export")
    model = tmp_path / "model.onnx"
    onnx_export.export_onnx(tiny_ckpt, model, verify=False)
    paths = noise_images(tmp_path / "in", 2)
    detector = Detector.from_checkpoint(model, "cpu")
    summary = run_detect(
        detector, [str(tmp_path / "in")], tmp_path / "vis", batch_size=1, json_path=tmp_path / "d.json",
        conf=0.0, max_det=5,
    )
    assert summary.processed == 2 and sum(summary.per_class.values()) == 10
    preds = detector.predict([str(p) for p in paths], batch_size=1)
    expected = [r for p, pred in zip(paths, preds) for r in pred.to_records(p.stem)]
    assert json.loads((tmp_path / "d.json").read_text()) == expected
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["img0.jpg", "img1.jpg"]
