"""`ssd eval` end to end: tiny random-weight checkpoint on a tiny prepared split, `--detections`, bad inputs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ssdcli.checkpoint import save_checkpoint
from ssdcli.cli.main import app
from ssdcli.data.records import ImageRecord, write_split
from ssdcli.detections_io import write_detections
from ssdcli.engine.evaluator import evaluate_detections, evaluate_detector
from ssdcli.errors import SsdError
from ssdcli.inference import Detector, TorchBackend
from ssdcli.models import build_model
from ssdcli.postprocess import PostprocessConfig
from ssdcli.reporting import RecordingReporter

CLASSES = ["cat", "dog"]
runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    model = build_model("ssdlite320", 3, class_names=CLASSES, image_size=128)  # small input: fast on CPU
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # spread the class scores (a fresh head scores every class ~1/3: ties everywhere)
        for name, p in model.named_parameters():
            if name.startswith("conf.") and name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 2)
    detector = Detector(TorchBackend(model, torch.device("cpu")), PostprocessConfig())
    records = []
    sizes = [(64, 48), (80, 80), (50, 70), (96, 64)]
    for i, (w, h) in enumerate(sizes):
        path = images / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        records.append(path)
    preds = detector.predict([str(p) for p in records], batch_size=4)
    for i, ((w, h), pred) in enumerate(zip(sizes, preds)):
        # objects where the random model puts boxes (so there are TPs), one fixed box, one difficult object
        pick = [int(np.argmax(pred.labels == 1)), int(np.argmax(pred.labels == 2))]  # best cat and best dog
        assert set(pred.labels[pick].tolist()) == {1, 2}
        boxes = np.round(np.concatenate([pred.boxes[pick], [[5, 5, 20, 25]]]))
        labels = np.array([1, 2, 1])
        records[i] = ImageRecord(id=f"im{i}", path=str(records[i]), width=w, height=h, boxes=boxes.astype(np.float32),
                                 labels=labels.astype(np.int64), difficult=np.array([False, i == 3, False]))
    data = root / "prepared"
    data.mkdir()
    write_split(data / "test.jsonl", records, str(images))
    manifest = {"format": "ssdcli-prepared", "version": 1, "classes": CLASSES, "image_root": str(images),
                "splits": {"test": {"file": "test.jsonl", "images": len(records),
                                    "objects": int(sum(len(r.labels) for r in records))}}}
    (data / "manifest.json").write_text(json.dumps(manifest))
    ckpt = root / "model.pth"
    save_checkpoint(ckpt, model)
    save_checkpoint(root / "other.pth", build_model("ssdlite320", 3, class_names=["car", "bus"], image_size=128))
    dets = [d for r, p in zip(records, preds) for d in p.to_records(r.id)]  # what `ssd detect --json` writes
    return {"root": root, "data": data, "ckpt": ckpt, "records": records, "detector": detector, "dets": dets}


def invoke(*args):
    return runner.invoke(app, ["eval", *[str(a) for a in args]])


def test_eval_weights_end_to_end_and_detections_file_agree(setup, tmp_path):
    res_json, out = tmp_path / "r.json", tmp_path / "plots"
    r = invoke("--weights", setup["ckpt"], "--data", setup["data"], "--metric", "voc07,voc12,coco", "--device", "cpu",
               "--batch", 4, "--json", res_json, "--out", out)
    assert r.exit_code == 0, r.output
    assert "score >= 0.01" in r.stdout and "NMS IoU 0.45" in r.stdout and "top 200" in r.stdout
    assert "11-point" in r.stdout and "all-points" in r.stdout and "pycocotools" in r.stdout
    assert "mAP@0.5 (voc07)" in r.stdout and "COCO" in r.stdout
    report = json.loads(res_json.read_text())
    assert report["primary"] == "voc07" and report["map"] is not None
    assert report["settings"]["score_threshold"] == 0.01 and report["settings"]["top_k"] == 200
    per = report["metrics"]["voc07"]["per_class"]
    assert sum(p["npos"] for p in per.values()) == 11 and sum(p["difficult"] for p in per.values()) == 1
    assert sum(p["tp"] for p in per.values()) >= 4  # the boxes copied from the model's detections
    assert 0 < report["map"] < 1
    for m in ("voc07", "voc12", "coco"):
        png = out / f"pr_{m}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"

    # the same detections from Detector.predict, written as a file, give the same numbers
    dets = setup["dets"]
    lib = evaluate_detections(dets, setup["records"], CLASSES, ("voc07", "voc12", "coco"))
    det_file = tmp_path / "dets.json"
    write_detections(det_file, dets)
    res2 = tmp_path / "r2.json"
    r2 = invoke("--detections", det_file, "--data", setup["data"], "--metric", "voc07,voc12,coco", "--json", res2)
    assert r2.exit_code == 0, r2.output
    report2 = json.loads(res2.read_text())
    for m in ("voc07", "voc12", "coco"):
        assert report2["metrics"][m] == report["metrics"][m]
        assert lib.results[m].to_dict() == report["metrics"][m]
    assert report2["detections"]["kept"] == len(dets) == sum(report["class_counts"]["detections"])


def test_evaluate_detector_with_workers_matches_in_process(setup):
    det = setup["detector"]
    done = RecordingReporter()
    a = evaluate_detections(setup["dets"], setup["records"], CLASSES, ("voc12",))
    # decoding in a worker process, and a dataset listing the same classes in another order (matched by name)
    swapped = [dataclasses.replace(r, labels=3 - r.labels) for r in setup["records"]]
    b = evaluate_detector(det, swapped, CLASSES[::-1], ("voc12",), batch_size=4, workers=1, reporter=done)
    assert done.totals("eval") == [done.done("eval")] == [len(setup["records"])]
    assert done.kinds("eval") == ["start", "advance", "end"] and b.settings["top_k"] == 200
    assert a.map == b.map and a.map > 0
    with pytest.raises(SsdError, match=r"model classes \[cat, dog\] do not match"):
        evaluate_detector(det, setup["records"], ["cat", "bird"])


def test_eval_bad_inputs(setup, tmp_path):
    data = setup["data"]
    r = invoke("--weights", setup["root"] / "other.pth", "--data", data, "--device", "cpu")
    assert r.exit_code == 2 and "car, bus" in r.output and "cat, dog" in r.output

    def run_file(content, *extra):
        f = tmp_path / "d.json"
        f.write_text(content if isinstance(content, str) else json.dumps(content))
        return invoke("--detections", f, "--data", data, *extra)

    r = run_file([{"image_id": "nope", "label": "cat", "score": 0.5, "box": [1, 1, 5, 5]}])
    assert r.exit_code == 2 and "1 detections name 1 image ids" in r.output and "'nope'" in r.output
    r = run_file('[{"image_id": "im0",')
    assert r.exit_code == 2 and "d.json: not valid JSON" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_file([])
    assert r.exit_code == 0 and "no detections" in r.output and "mAP@0.5 (voc07) = 0.0000" in r.output
    good = {"image_id": "im0", "label": "cat", "score": 0.9, "box": [1, 1, 64, 48]}
    r = run_file([good, {**good, "label": "zebra"}, {**good, "box": [1, None, 64, 48]}, {**good, "score": float("nan")}])  # NaN
    assert r.exit_code == 0, r.output
    assert "ignored 1 detections of 1 unknown classes: 'zebra'" in r.output
    assert "dropped 2 detections with a NaN/Inf" in r.output
    r = run_file([good, {**good, "score": "0.9"}])  # numbers only: text would convert silently
    assert r.exit_code == 2 and "detection #1: non-numeric score" in r.output
    r = run_file([good], "--metric", "voc2007")
    assert r.exit_code == 2 and "unknown metric" in r.output
    r = run_file([good], "--split", "val")
    assert r.exit_code == 2 and "no split 'val'" in r.output
    r = invoke("--data", data)
    assert r.exit_code == 2 and "give exactly one" in r.output
    r = run_file({"detections": []})
    assert r.exit_code == 2 and "expected a JSON list" in r.output
    r = invoke("--weights", tmp_path / "missing.pth", "--data", data)
    assert r.exit_code == 2 and "missing.pth" in r.output
