"""Issue 14, "Command line": one vocabulary across commands, old spellings with a note, choices as enums, mAP one
way, user permissions, `detect` run folders, help at 80 columns, `--version`, short functions in cli/."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest
from cli_helpers import digest, noise_images, one_line_error, ssd, tiny_checkpoint, tiny_prepared
from typer.main import get_command
from typer.testing import CliRunner

from ssdcli.cli.main import app
from ssdcli.io_utils import atomic_write_text

COMMANDS = ["prepare-voc", "train", "eval", "detect", "export-onnx", "benchmark", "quickstart", "convert"]


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


def _options(command: str) -> dict[str, list[str]]:
    """Option parameter name -> its spellings, for one subcommand (hidden old spellings included)."""
    cmd = get_command(app).commands[command]  # type: ignore[attr-defined]
    return {p.name: list(p.opts) + list(p.secondary_opts) for p in cmd.params}


def _has(command: str, *flags: str) -> bool:
    return any(all(f in opts for f in flags) for opts in _options(command).values())


# ------------------------------------------------------------------------------------------ one vocabulary

def test_model_is_weights_w_everywhere_output_is_out_o_everywhere() -> None:
    for command in ("eval", "detect", "benchmark", "export-onnx", "convert"):
        assert _has(command, "--weights", "-w"), command
    for command in ("eval", "detect", "export-onnx", "convert", "quickstart", "prepare-voc"):
        assert _has(command, "--out", "-o"), command


def test_detector_thresholds_have_one_name_each() -> None:
    for command in ("eval", "detect", "export-onnx", "benchmark"):
        for flag in ("--conf", "--iou", "--max-det"):
            assert _has(command, flag), (command, flag)
    assert _has("detect", "--show-conf")
    assert _has("export-onnx", "--nms", "--no-nms")  # export's in-graph NMS switch keeps its name


def test_old_output_spellings_work_with_a_note(tmp_path: Path, ckpt: Path) -> None:
    before = digest(ckpt)
    # export-onnx --output: the old name still reaches --out (here refused: it is the checkpoint itself)
    res = ssd("export-onnx", ckpt, "--output", ckpt, "--force")
    assert res.exit_code == 2
    assert "--output is deprecated" in res.stderr and "use --out" in res.stderr
    assert "is an input of this command" in one_line_error(res)
    assert digest(ckpt) == before
    # quickstart --dir: old name with a note; the bad --device is refused before anything is written
    res = ssd("quickstart", "--dir", tmp_path / "qs", "--device", "tpu")
    assert res.exit_code == 2 and "--dir is deprecated" in res.stderr and "--device tpu" in one_line_error(res)
    assert not (tmp_path / "qs").exists()


def test_old_threshold_spellings_work_with_a_note(tmp_path: Path, ckpt: Path) -> None:
    noise_images(tmp_path / "in", 2)
    res = ssd("detect", tmp_path / "in", "-w", ckpt, "--device", "cpu", "--json", tmp_path / "d.json",
              "--score", "0.4", "--nms", "0.3")
    assert res.exit_code == 0, res.output
    assert "--score is deprecated" in res.stderr and "--nms is deprecated" in res.stderr
    scores = [d["score"] for d in json.loads((tmp_path / "d.json").read_text())]
    assert scores and min(scores) >= 0.4
    res = ssd("detect", tmp_path / "in", "-w", ckpt, "--json", tmp_path / "e.json", "--score", "0.4", "--conf", "0.2")
    assert res.exit_code == 2 and "give only --conf" in one_line_error(res)
    assert not (tmp_path / "e.json").exists()


def _txt_scores(folder: Path) -> list[float]:
    return [float(line.split()[1]) for p in folder.glob("*.txt") for line in p.read_text().splitlines()]


def test_detect_conf_is_the_score_threshold_show_conf_the_drawing_threshold(tmp_path: Path, ckpt: Path) -> None:
    noise_images(tmp_path / "in", 2)
    common = [tmp_path / "in", "-w", ckpt, "--device", "cpu", "--save-txt"]
    res = ssd("detect", *common, "--out", tmp_path / "a", "--json", tmp_path / "a.json", "--conf", "0.3",
              "--show-conf", "0.99")
    assert res.exit_code == 0, res.output
    json_scores = [d["score"] for d in json.loads((tmp_path / "a.json").read_text())]
    txt_scores = _txt_scores(tmp_path / "a")
    assert json_scores and min(json_scores) >= 0.3 and min(json_scores) < 0.99
    assert txt_scores and min(txt_scores) >= 0.99 and len(txt_scores) < len(json_scores)
    # only --conf given: it is also the drawing threshold (pictures as with the 0.1 `--conf`), with a note
    res = ssd("detect", *common, "--out", tmp_path / "b", "--json", tmp_path / "b.json", "--conf", "0.99")
    assert res.exit_code == 0 and "drawing threshold is --show-conf" in res.stderr
    json_scores = [d["score"] for d in json.loads((tmp_path / "b.json").read_text())]
    assert min(json_scores) >= 0.99 and sorted(_txt_scores(tmp_path / "b")) == pytest.approx(sorted(json_scores),
                                                                                              abs=1e-4)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["eval", "--data", "x", "--metric", "voc2007"], "--metric voc2007: unknown metric (choose from voc07, voc12"),
        (["convert", "x.pth", "-o", "y.pth", "--from", "caffe"], "--from: 'caffe' is not one of 'auto', 'amdegroot'"),
        (["benchmark", "-w", "x.pth", "--engines", "torch,tvm"], "--engines tvm: unknown engine (choose from torch"),
    ],
)
def test_wrong_choices_are_one_clear_line(args: list[str], expected: str) -> None:
    res = ssd(*args)
    assert res.exit_code == 2 and expected in one_line_error(res)


def test_choices_are_listed_in_help() -> None:
    assert "voc07 (11-point), voc12 (all-points), coco" in ssd("eval", "--help").stdout
    assert "amdegroot" in ssd("convert", "--help").stdout and "torch, compile, onnx, tensorrt" in ssd(
        "benchmark", "--help").stdout


# ------------------------------------------------------------------------------------------ mAP one way

def test_eval_shows_map_as_a_fraction_with_four_decimals(tmp_path: Path) -> None:
    data = tiny_prepared(tmp_path)
    dets = [{"image_id": "img0", "label": "cat", "score": 0.9, "box": [6, 6, 40, 30]},
            {"image_id": "img1", "label": "cat", "score": 0.8, "box": [6, 6, 40, 30]}]
    (tmp_path / "d.json").write_text(json.dumps(dets))
    res = ssd("eval", "--detections", tmp_path / "d.json", "--data", data, "--metric", "voc07,coco")
    assert res.exit_code == 0, res.output
    assert re.search(r"mAP@0\.5 \(voc07\) = 0\.5000 ", res.stdout), res.stdout  # cat found (AP 1), dog missed (AP 0)
    coco = next(line for line in res.stdout.splitlines() if line.startswith("COCO"))
    values = [float(v) for v in re.findall(r"\d+\.\d+", coco)]
    assert values and all(0.0 <= v <= 1.0 for v in values) and all(len(v.split(".")[1]) == 4
                                                                  for v in re.findall(r"\d+\.\d+", coco))
    assert "100.00" not in res.stdout and "50.00" not in res.stdout


# ------------------------------------------------------------------------------------------ outputs

def test_artifacts_get_the_users_permissions(tmp_path: Path, ckpt: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        atomic_write_text(tmp_path / "b.json", "{}")
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    assert ckpt.stat().st_mode & 0o044  # the checkpoint written by save_checkpoint is readable by others


def test_detect_without_out_saves_to_an_incremented_run_folder(tmp_path: Path, ckpt: Path) -> None:
    noise_images(tmp_path / "in", 1)
    project = tmp_path / "runs" / "detect"
    for expected in ("exp", "exp2"):
        res = ssd("detect", tmp_path / "in", "-w", ckpt, "--device", "cpu", "--project", project)
        assert res.exit_code == 0, res.output
        assert sorted(p.name for p in (project / expected).iterdir()) == ["img0.jpg"]
    # only --json asked for: no pictures, no run folder
    res = ssd("detect", tmp_path / "in", "-w", ckpt, "--device", "cpu", "--json", tmp_path / "d.json")
    assert res.exit_code == 0 and sorted(p.name for p in project.iterdir()) == ["exp", "exp2"]



@pytest.mark.parametrize("command", COMMANDS)
def test_help_reads_well_at_80_columns_and_every_option_has_help(command: str) -> None:
    out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80", "NO_COLOR": "1"}).stdout
    assert "…" not in out, out  # rich marks a cut option name or text with an ellipsis
    assert max(len(line) for line in out.splitlines()) <= 80
    cmd = get_command(app).commands[command]  # type: ignore[attr-defined]
    missing = [p.name for p in cmd.params if not getattr(p, "hidden", False) and not (p.help or "").strip()]
    assert not missing, (command, missing)


def test_version() -> None:
    import ssdcli

    res = ssd("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"ssd {ssdcli.__version__}"


def test_no_function_over_80_lines_in_cli() -> None:
    long = []
    for path in sorted((Path(__file__).parents[1] / "ssdcli" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > 80:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    assert not long, long
