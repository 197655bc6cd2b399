"""`ssd train`: bit-exact resume, interruption, NaN guard, fine-tuning, bad input, DDP on gloo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssdcli.checkpoint import load_checkpoint, save_checkpoint
from ssdcli.cli.main import app
from ssdcli.data.samples import SAMPLE_CLASSES
from ssdcli.engine.trainer import TrainOptions, train
from ssdcli.errors import SsdError
from ssdcli.models import build_model

ARCH, SIZE = "ssdlite320", 96


@pytest.fixture(scope="module")
def tiny_data(prepared_sample) -> Path:
    return prepared_sample(16, 4, image_size=(96, 128), seed=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def _options(data: Path, project: Path, **kw) -> TrainOptions:
    base = dict(
        data=str(data), arch=ARCH, img_size=SIZE, iters=6, batch=4, workers=0, seed=7, lr=1e-3, warmup_iters=2,
        val_split="none", project=str(project), name="t", device="cpu", log_every=1,
    )
    base.update(kw)
    return TrainOptions(**base)


def test_resume_is_bit_exact(tiny_data, tmp_path):
    straight = train(_options(tiny_data, tmp_path), report=lambda m: None)
    first = train(_options(tiny_data, tmp_path, stop_after=3), report=lambda m: None)
    assert first.stopped == "interrupted" and first.iteration == 3
    resumed = train(TrainOptions(), resume=str(first.run_dir / "last.pth"), report=lambda m: None)
    assert resumed.iteration == 6 and resumed.run_dir == first.run_dir
    a = load_checkpoint(straight.run_dir / "last.pth").model_state
    b = load_checkpoint(resumed.run_dir / "last.pth").model_state
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the log is continuous: one row per iteration 1..6, no duplicates from the interrupted part
    iters = [r["iter"] for r in resumed.history if r["type"] == "train"]
    assert iters == [1, 2, 3, 4, 5, 6]
    assert {"lr", "loss_loc", "loss_cls", "images_per_s", "memory_mb"} <= set(resumed.history[0])
    assert (straight.run_dir / "options.json").exists() and (straight.run_dir / "loss.png").exists()


def test_ctrl_c_saves_a_resumable_checkpoint(tiny_data, tmp_path, monkeypatch):
    """A Ctrl-C during step 3 is a request: step 3 completes, last.pth is saved at 3 (real signals: see
    tests/test_train_signals.py)."""
    import signal

    from ssdcli.engine import trainer as T
    from ssdcli.engine.interrupts import StopRequests

    stops = StopRequests()
    real_step = T._Run._step
    calls = {"n": 0}

    def step(self, *a):
        calls["n"] += 1
        if calls["n"] == 3:
            stops.request(signal.SIGINT)
        return real_step(self, *a)

    monkeypatch.setattr(T._Run, "_step", step)
    result = train(_options(tiny_data, tmp_path), report=lambda m: None, stops=stops)
    assert result.stopped == "interrupted" and result.iteration == 3 and result.exit_code == 130
    state = load_checkpoint(result.run_dir / "last.pth").train_state
    assert state["iteration"] == 3


def test_nan_guard_skips_then_stops_keeping_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    from ssdcli.models.ssd import SSD

    real = SSD.compute_loss
    calls = {"n": 0}

    def flaky(self, outputs, targets):
        calls["n"] += 1
        losses = real(self, outputs, targets)
        if calls["n"] == 2 or calls["n"] >= 4:
            losses = {k: v * float("nan") for k, v in losses.items()}
        return losses

    monkeypatch.setattr(SSD, "compute_loss", flaky)
    opts = _options(tiny_data, tmp_path, iters=10, max_bad_steps=3, eval_every=3)
    with pytest.raises(SsdError, match="non-finite losses in a row.*lr"):
        train(opts, report=lambda m: None)
    run = tmp_path / "t"
    state = load_checkpoint(run / "last.pth").train_state
    assert state["iteration"] == 3  # saved by the eval at iteration 3, before the run of bad steps
    for v in load_checkpoint(run / "last.pth").model_state.values():
        assert torch.isfinite(v.float()).all()


def test_fine_tune_with_other_classes_reinitialises_heads(tiny_data, tmp_path):
    src = build_model(ARCH, 3, class_names=["a", "b"], image_size=SIZE)
    save_checkpoint(tmp_path / "src.pth", src)
    notes: list[str] = []
    result = train(_options(tiny_data, tmp_path, iters=1, weights=str(tmp_path / "src.pth")), report=notes.append)
    assert any("0 of 4 classes keep trained rows, 4 start fresh" in n for n in notes)
    ckpt = load_checkpoint(result.run_dir / "last.pth")
    assert ckpt.config.class_names == list(SAMPLE_CLASSES)
    assert ckpt.config.num_classes == len(SAMPLE_CLASSES) + 1


def test_bad_inputs_give_one_line_errors(tiny_data, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "missing"), "--device", "cpu"])
    assert r.exit_code == 2 and "not found" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["train", "--data", str(tiny_data), "--iters", "0", "--device", "cpu"])
    assert r.exit_code == 2 and "--iters 0: outside the allowed range >= 1" in r.output
    r = runner.invoke(app, ["train", "--data", str(tiny_data), "--time-limit", "soon"])
    assert r.exit_code == 2 and "--time-limit" in r.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = runner.invoke(app, ["train", "--data", str(tiny_data), "--batch", "4", "--project", str(blocker / "runs"),
                            "--device", "cpu"])
    assert r.exit_code == 2 and "cannot create" in r.output
    # a refused run (too few images for one batch) leaves no run folder behind
    r = runner.invoke(app, ["train", "--data", str(tiny_data), "--batch", "64", "--project", str(tmp_path / "runs"),
                            "--device", "cpu"])  # fmt: skip
    assert r.exit_code == 2 and "fewer than one batch" in r.output
    assert not (tmp_path / "runs").exists()


def test_cli_train_runs_and_reports(tiny_data, tmp_path):
    r = CliRunner().invoke(
        app,
        ["train", "--data", str(tiny_data), "--arch", ARCH, "--img-size", str(SIZE), "--iters", "2", "--batch", "4",
         "--workers", "0", "--project", str(tmp_path), "--name", "cli", "--device", "cpu", "--val-size", "2"],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cli" / "last.pth").exists() and (tmp_path / "cli" / "best.pth").exists()
    assert "best val AP@[.5:.95] (coco)" in r.output


@pytest.mark.slow
def test_ddp_on_gloo_with_two_processes(tiny_data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ssdcli", "train",
           "--data", str(tiny_data), "--arch", ARCH, "--img-size", str(SIZE), "--iters", "2", "--batch", "2",
           "--workers", "0", "--project", str(tmp_path), "--name", "ddp", "--device", "cpu", "--val-split", "none"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert runs == ["ddp"]  # rank 0 alone creates the run folder and writes checkpoints
    assert load_checkpoint(tmp_path / "ddp" / "last.pth").train_state["iteration"] == 2
