"""`ssd quickstart` end to end with a tiny training budget: every step runs and every output is where the summary
says. (The full recipe's time and mAP are measured by hand and quoted in the README: too slow for a unit test.)"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from ssdcli.cli.main import app
from ssdcli.engine.quickstart import quickstart_plan
from ssdcli.models.registry import recipe_for

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def test_plan_trains_with_the_bare_command_and_ssd_minis_recipe_is_the_measured_one(tmp_path) -> None:
    plan = quickstart_plan(tmp_path / "qs", device="cpu")
    assert [s.argv[0] for s in plan.steps] == ["prepare-voc", "train", "eval", "detect", "export-onnx", "benchmark"]
    train = plan.steps[1].argv
    assert train[train.index("--arch") + 1] == "ssd-mini"
    assert not {"--iters", "--lr", "--optimizer", "--batch", "--zoom-out"} & set(train)  # the recipe decides
    recipe = recipe_for("ssd-mini", "scratch")
    assert (recipe.optimizer, recipe.lr, recipe.batch, recipe.weight_decay, recipe.schedule, recipe.zoom_out,
            recipe.channels_last) == ("adamw", 3e-3, 16, 0.05, "cosine", 1.0, True)  # fmt: skip
    assert math.ceil(recipe.epochs * (300 // 16)) == 2200  # 2200 iterations of 16 on the 300 sample training images
    assert "--iters" in quickstart_plan(tmp_path / "qs", device="cpu", iters=4).steps[1].argv
    # every later step reads what the training step writes
    best = str(plan.run_dir / "best.pth")
    assert all(best in s.argv for s in plan.steps[2:4]) and best in plan.steps[4].argv
    assert all(s.shell().startswith("ssd ") for s in plan.steps)


@pytest.mark.slow
def test_quickstart_runs_every_step(tmp_path) -> None:
    out = tmp_path / "qs"
    result = CliRunner().invoke(app, ["quickstart", "--dir", str(out), "--iters", "4", "--device", "cpu"], env=ENV)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "eval" / "results.json").read_text())
    assert 0.0 <= results["map"] <= 1.0 and results["images"] == 100
    assert len(list((out / "detections").glob("*.jpg"))) == 100
    assert (out / "model.onnx").stat().st_size > 0
    bench = json.loads((out / "benchmark.json").read_text())
    assert bench
    assert (out / "runs" / "quickstart" / "best.pth").exists()
    assert "quickstart finished" in result.output and "ssd train --data" in result.output

    # a second run into the same folder refuses (it would read the old weights) unless --force
    again = CliRunner().invoke(app, ["quickstart", "--dir", str(out), "--iters", "2", "--device", "cpu"], env=ENV)
    assert again.exit_code != 0 and "--force" in again.output and "Traceback" not in again.output
    forced = CliRunner().invoke(
        app, ["quickstart", "--dir", str(out), "--iters", "2", "--device", "cpu", "--force"], env=ENV
    )
    assert forced.exit_code == 0, forced.output
    assert not (out / "runs" / "quickstart2").exists()
