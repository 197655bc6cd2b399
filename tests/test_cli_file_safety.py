"""Issue 17, command-line reproductions: no command destroys a user's files, no option is silently wrong.

Each case: the command, its exit code and one-line message, and the files that must still exist unchanged.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from cli_helpers import digest, noise_images, one_line_error, ssd, tiny_checkpoint, tiny_prepared

from ssdcli.engine.quickstart import MARKER, clear_previous_outputs, quickstart_plan, write_marker
from ssdcli.engine.runs import check_run_name, new_run_dir
from ssdcli.errors import SsdError
from ssdcli.io_utils import atomic_write_text, sweep_stale_temporaries


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pth")


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` -> its digest (to check that nothing changed)."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ 3. --json, --out

def test_detect_json_never_replaces_the_weights_even_with_force(tmp_path: Path, ckpt: Path) -> None:
    noise_images(tmp_path / "in", 1)
    weights = tmp_path / "w" / "best.pth"
    weights.parent.mkdir()
    weights.write_bytes(ckpt.read_bytes())
    before = digest(weights)
    for extra in ([], ["--force"]):
        res = ssd("detect", tmp_path / "in", "--weights", weights, "--json", weights, "--device", "cpu", *extra)
        assert res.exit_code == 2
        assert f"--json {weights}: is an input of this command" in one_line_error(res)
        assert digest(weights) == before


def test_detect_json_and_out_replace_existing_files_only_with_force(tmp_path: Path, ckpt: Path) -> None:
    noise_images(tmp_path / "in", 2)
    out = tmp_path / "vis"
    out.mkdir()
    (out / "img0.jpg").write_bytes(b"my own picture")
    (out / "notes.txt").write_text("mine")
    (tmp_path / "d.json").write_text("[]")
    args = ["detect", tmp_path / "in", "-w", ckpt, "--device", "cpu"]
    res = ssd(*args, "--out", out)
    assert res.exit_code == 2 and "img0.jpg already exists (use --force" in one_line_error(res)
    res = ssd(*args, "--json", tmp_path / "d.json")
    assert res.exit_code == 2 and "d.json: already exists (use --force" in one_line_error(res)
    assert (out / "img0.jpg").read_bytes() == b"my own picture" and (tmp_path / "d.json").read_text() == "[]"
    assert sorted(p.name for p in out.iterdir()) == ["img0.jpg", "notes.txt"]
    res = ssd(*args, "--out", out, "--json", tmp_path / "d.json", "--force")
    assert res.exit_code == 0, res.output
    assert (out / "img0.jpg").read_bytes() != b"my own picture" and (out / "notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "d.json").read_text()) != []


def test_eval_json_never_lands_on_an_input(tmp_path: Path, ckpt: Path) -> None:
    data = tiny_prepared(tmp_path)
    (tmp_path / "d.json").write_text("[]")
    before_data, before_ckpt = _tree(data), digest(ckpt)
    cases = [
        (["--weights", ckpt, "--json", ckpt], "is an input of this command"),
        (["--detections", tmp_path / "d.json", "--json", tmp_path / "d.json"], "is an input of this command"),
        (["--detections", tmp_path / "d.json", "--json", data / "manifest.json"], "inside the input folder"),
        (["--detections", tmp_path / "d.json", "--json", data / "new.json"], "inside the input folder"),
        (["--detections", tmp_path / "d.json", "--out", data], "inside the input folder"),
    ]
    for args, expected in cases:
        for extra in ([], ["--force"]):
            res = ssd("eval", "--data", data, "--device", "cpu", *args, *extra)
            assert res.exit_code == 2, res.output
            assert expected in one_line_error(res), (args, res.stderr)
    assert _tree(data) == before_data and digest(ckpt) == before_ckpt
    assert (tmp_path / "d.json").read_text() == "[]"
    (tmp_path / "r.json").write_text("keep")
    res = ssd("eval", "--data", data, "--detections", tmp_path / "d.json", "--json", tmp_path / "r.json")
    assert res.exit_code == 2 and "already exists (use --force" in one_line_error(res)
    assert (tmp_path / "r.json").read_text() == "keep"
    res = ssd("eval", "--data", data, "--detections", tmp_path / "d.json", "--json", tmp_path / "r.json", "--force")
    assert res.exit_code == 0 and json.loads((tmp_path / "r.json").read_text())["images"] == 2


def test_export_and_convert_outputs_never_replace_their_input(tmp_path: Path, ckpt: Path) -> None:
    src = tmp_path / "best.pth"
    src.write_bytes(ckpt.read_bytes())
    before = digest(src)
    for args in (["export-onnx", src, "--out", src, "--force"], ["export-onnx", "-w", src, "-o", src, "--force"],
                 ["convert", src, "--out", src, "--force"], ["convert", "-w", src, "-o", src, "--force"]):
        res = ssd(*args)
        assert res.exit_code == 2 and "is an input of this command" in one_line_error(res), args
        assert digest(src) == before


# ------------------------------------------------------------------------------------------ 2. quickstart --force

def _fake_earlier_quickstart(root: Path) -> None:
    plan = quickstart_plan(root)
    root.mkdir(parents=True)
    write_marker(plan)
    for folder in (plan.sample_voc, plan.prepared, plan.run_dir, plan.eval_json.parent, root / "detections"):
        folder.mkdir(parents=True)
        (folder / "x").write_text("old")
    plan.onnx.write_text("old")


def test_quickstart_force_removes_only_what_a_quickstart_wrote(tmp_path: Path) -> None:
    root = tmp_path / "qs"
    _fake_earlier_quickstart(root)
    mine = root / "runs" / "train" / "my_exp" / "best.pth"
    mine.parent.mkdir(parents=True)
    mine.write_text("my run")
    (root / "notes.md").write_text("mine")
    # options are validated before anything is removed
    for bad in (["--device", "tpu"], ["--iters", "-1"], ["--workers", "-2"]):
        res = ssd("quickstart", "--out", root, "--force", *bad)
        assert res.exit_code == 2, res.output
        assert bad[0] in one_line_error(res)
        assert (root / "prepared" / "x").exists() and (root / "runs" / "quickstart" / "x").exists()
    removed = clear_previous_outputs(quickstart_plan(root), force=True)
    assert {p.name for p in removed} == {"sample-voc", "prepared", "quickstart", "eval", "detections", "model.onnx"}
    assert mine.read_text() == "my run" and (root / "notes.md").read_text() == "mine" and (root / MARKER).exists()


def test_quickstart_never_removes_outputs_it_did_not_record(tmp_path: Path) -> None:
    root = tmp_path / "qs"
    (root / "prepared").mkdir(parents=True)
    (root / "prepared" / "manifest.json").write_text("{}")
    res = ssd("quickstart", "--out", root, "--force", "--device", "cpu", "--iters", "1")
    assert res.exit_code == 2 and "was not created by a quickstart" in one_line_error(res)
    assert (root / "prepared" / "manifest.json").read_text() == "{}" and not (root / "sample-voc").exists()
    (root / MARKER).write_text("{not json")
    res = ssd("quickstart", "--out", root, "--force", "--device", "cpu")
    assert res.exit_code == 2 and "not a quickstart marker" in one_line_error(res)
    assert (root / "prepared" / "manifest.json").exists()


# ------------------------------------------------------------------------------------------ 4. declared ranges

@pytest.mark.parametrize(
    "args, option, allowed",
    [
        (["eval", "--data", "d", "--conf", "1.0"], "--conf 1", "[0, 1)"),
        (["eval", "--data", "d", "--iou", "0"], "--iou 0", "(0, 1]"),
        (["eval", "--data", "d", "--max-det", "0"], "--max-det 0", ">= 1"),
        (["eval", "--data", "d", "--batch", "0"], "--batch 0", ">= 1"),
        (["eval", "--data", "d", "--workers", "-1"], "--workers -1", ">= 0"),
        (["eval", "--data", "d", "--conf", "nan"], "--conf nan", "[0, 1)"),
        (["detect", "x.jpg", "-w", "w.pth", "--show-conf", "1.5"], "--show-conf 1.5", "[0, 1]"),
        (["detect", "x.jpg", "-w", "w.pth", "--batch", "-3"], "--batch -3", ">= 1"),
        (["detect", "x.jpg", "-w", "w.pth", "--score", "-0.1"], "--score -0.1", "[0, 1)"),
        (["export-onnx", "w.pth", "--opset", "99"], "--opset 99", "[11, 20]"),
        (["export-onnx", "w.pth", "--pre-nms-top-k", "0"], "--pre-nms-top-k 0", ">= 1"),
        (["export-onnx", "w.pth", "--top-k", "0"], "--top-k 0", ">= 1"),
        (["benchmark", "-w", "w.pth", "--iters", "0"], "--iters 0", ">= 1"),
        (["benchmark", "-w", "w.pth", "--warmup", "-1"], "--warmup -1", ">= 0"),
        (["benchmark", "-w", "w.pth", "--batch", "8,0"], "--batch 8,0", ">= 1"),
        (["quickstart", "--iters", "-5"], "--iters -5", ">= 0"),
    ],
)
def test_numeric_options_have_a_declared_range(tmp_path: Path, monkeypatch, args, option, allowed) -> None:
    monkeypatch.chdir(tmp_path)
    res = ssd(*args, "--project", tmp_path / "runs") if args[0] == "detect" else ssd(*args)
    assert res.exit_code == 2
    line = one_line_error(res)
    assert option in line and allowed in line, line
    assert list(tmp_path.iterdir()) == []  # nothing created


# ------------------------------------------------------------------------------------------ 6. --name, .tmp

def test_run_names_cannot_leave_the_project(tmp_path: Path, ckpt: Path) -> None:
    noise_images(tmp_path / "in", 1)
    project = tmp_path / "deep" / "runs"
    for name in ("../../x", "..", "a/b", "/abs", ""):
        res = ssd("detect", tmp_path / "in", "-w", ckpt, "--project", project, "--name", name)
        assert res.exit_code == 2 and "--name" in one_line_error(res), name
        with pytest.raises(SsdError, match="--name"):
            new_run_dir(project, name)
    assert not (tmp_path / "x").exists() and not (tmp_path / "deep").exists()
    assert check_run_name("exp-1.b") == "exp-1.b"


def test_stale_temporaries_are_cleaned_on_the_next_write(tmp_path: Path) -> None:
    dead_pid = 2**22 + 12345  # above Linux's largest pid: never a live process
    stale = tmp_path / f".best.pth.{dead_pid}-0123456789ab.tmp"
    fresh = tmp_path / f".last.pth.{dead_pid}-ba9876543210.tmp"  # maybe still being written by another machine
    alive = tmp_path / f".log.json.{os.getpid()}-aaaaaaaaaaaa.tmp"
    user = tmp_path / ".notes.tmp"
    for p in (stale, fresh, alive, user):
        p.write_text("x")
    old = time.time() - 3600
    for p in (stale, alive, user):
        os.utime(p, (old, old))
    atomic_write_text(tmp_path / "metrics.json", "{}")
    assert not stale.exists()
    assert fresh.exists() and alive.exists() and user.exists()
    assert [p.name for p in tmp_path.glob(".metrics.json.*")] == []  # no temporary of our own left either
    assert sweep_stale_temporaries(tmp_path) == []  # once per folder and process


def test_prepare_voc_replaces_an_earlier_prepared_dataset_only_with_force(tmp_path: Path) -> None:
    from ssdcli.data.samples import SAMPLE_CLASSES, write_sample_dataset

    voc = write_sample_dataset(tmp_path / "voc", num_train=2, num_test=2, image_size=(64, 96))
    before = _tree(voc)
    args = ["prepare-voc", voc, "--classes", ",".join(SAMPLE_CLASSES)]
    assert ssd(*args, "--out", tmp_path / "p").exit_code == 0
    manifest = digest(tmp_path / "p" / "manifest.json")
    res = ssd(*args, "--out", tmp_path / "p")
    assert res.exit_code == 2 and "already holds a prepared dataset" in one_line_error(res)
    assert digest(tmp_path / "p" / "manifest.json") == manifest
    assert ssd(*args, "--out", tmp_path / "p", "--force").exit_code == 0
    res = ssd(*args, "--out", voc, "--force")
    assert res.exit_code == 2 and "is the dataset folder itself" in one_line_error(res)
    assert _tree(voc) == before
