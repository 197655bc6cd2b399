"""`ssd train` survives real signals and resumes bit for bit (issue 16).

Every test starts the real CLI in a subprocess (``python -m ssdcli train``, or the same entry point behind a
small hook that pauses inside a validation or a checkpoint write, so a signal can be delivered exactly there),
sends real signals to its process group (as a terminal's Ctrl-C does: the DataLoader workers get them too),
resumes, and compares the end of the chain with an uninterrupted run: weights, optimizer state and
``metrics.jsonl`` (minus wall-clock fields) must be equal exactly. BatchNorm model (``ssd-mini``), 2 data workers,
validation inside the run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssdcli.checkpoint import load_checkpoint
from ssdcli.data.prepare import prepare_voc
from ssdcli.data.samples import SAMPLE_CLASSES, write_sample_dataset

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

ITERS = 12
WALL_CLOCK = {"images_per_s", "memory_mb"}

# Runs the real CLI; with SSD_TEST_PAUSE=validate:N or save:N it first patches the Nth validation (at its start)
# or the Nth checkpoint write (half the bytes written) of this process to touch SSD_TEST_MARKER and sleep there;
# SSD_TEST_STEP_DELAY adds a sleep after each training step (the numbers are untouched).
HOOK = r"""
import io, os, sys, time
kind, _, nth = os.environ.get("SSD_TEST_PAUSE", "").partition(":")
if kind:
    seen = [0]
    def pause():
        seen[0] += 1
        if seen[0] == int(nth or 1):
            with open(os.environ["SSD_TEST_MARKER"], "w") as f:
                f.write(str(os.getpid()))
            time.sleep(float(os.environ.get("SSD_TEST_PAUSE_S", "1.0")))
    if kind == "validate":
        from ssdcli.engine import validation
        real_call = validation.Validator.__call__
        def call(self, model):
            pause()
            return real_call(self, model)
        validation.Validator.__call__ = call
    elif kind == "save":
        from ssdcli import checkpoint
        real_write = checkpoint.atomic_write
        def atomic_write(path, write):
            def slow(f):
                buf = io.BytesIO()
                write(buf)
                data = buf.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                pause()
                f.write(data[len(data) // 2 :])
            return real_write(path, slow)
        checkpoint.atomic_write = atomic_write
if os.environ.get("SSD_TEST_STEP_DELAY"):  # slower steps: a signal at a random moment can land before the end
    from ssdcli.engine import trainer
    real_step = trainer._Run._step
    def step(self, *batch):
        out = real_step(self, *batch)
        time.sleep(float(os.environ["SSD_TEST_STEP_DELAY"]))
        return out
    trainer._Run._step = step
from ssdcli.cli.main import main
sys.argv = ["ssd", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("signals")
    write_sample_dataset(root / "voc", num_train=16, num_test=2, image_size=(64, 80), seed=2)
    prepare_voc(root / "voc", root / "prepared", classes=list(SAMPLE_CLASSES))
    return root / "prepared"


def _train_args(data: Path, project: Path, name: str) -> list[str]:
    return [
        "train", "--data", str(data), "--arch", "ssd-mini", "--img-size", "64", "--iters", str(ITERS), "--batch", "2",
        "--workers", "2", "--seed", "5", "--device", "cpu", "--log-every", "1", "--eval-every", "4",
        "--val-split", "val", "--project", str(project), "--name", name,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="120", SSD_DEBUG="")


class _Proc:
    """A CLI process in its own process group (signals go to the whole group, as Ctrl-C in a terminal)."""

    def __init__(self, args: list[str], out: Path, pause: str | None = None, launcher: list[str] | None = None,
                 step_delay: float | None = None) -> None:  # fmt: skip
        env = _env()
        if step_delay:
            env["SSD_TEST_STEP_DELAY"] = str(step_delay)
        self.marker = out.with_suffix(".marker")
        if pause:
            env.update(SSD_TEST_PAUSE=pause, SSD_TEST_MARKER=str(self.marker))
        self.stdout, self.stderr = out.with_suffix(".out"), out.with_suffix(".err")
        cmd = (launcher or [sys.executable, "-c", HOOK]) + args
        with open(self.stdout, "w") as o, open(self.stderr, "w") as e:
            self.proc = subprocess.Popen(cmd, env=env, stdout=o, stderr=e, start_new_session=True)

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            raise

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()

    def wait_for(self, ready, timeout: float = 60) -> bool:
        """Poll ``ready()`` until true; False when the process ended first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ready():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting; output so far:\n{self.output()[-3000:]}")


def _train_rows(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"type": "train"' in line)


def _comparable_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]


def _assert_same_run(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a / "last.pth"), load_checkpoint(b / "last.pth")
    assert ca.train_state["iteration"] == cb.train_state["iteration"] == ITERS
    assert ca.model_state.keys() == cb.model_state.keys()
    for k in ca.model_state:
        assert torch.equal(ca.model_state[k], cb.model_state[k]), k
    oa, ob = ca.train_state["optimizer"], cb.train_state["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for k, v in oa["state"][i].items():
            assert torch.equal(v, ob["state"][i][k]), (i, k)
    assert _comparable_rows(a) == _comparable_rows(b)
    assert ca.train_state["best_map"] == cb.train_state["best_map"]


def _iteration(run: Path) -> int:
    return int(load_checkpoint(run / "last.pth").train_state["iteration"])


def _clean_stop(p: _Proc, sig: int) -> None:
    rc = p.wait()
    out = p.output()
    assert rc == 128 + sig, out[-3000:]
    assert "Traceback" not in out and "Error" not in out.replace("SsdError", ""), out[-3000:]
    assert "--resume" in out, out[-3000:]


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("straight")
    p = _Proc(_train_args(data, project, "straight"), project / "straight", launcher=[sys.executable, "-m", "ssdcli"])
    assert p.wait() == 0, p.output()[-3000:]
    return project / "straight"


def _segment(args: list[str], out: Path, run: Path, where: str, rng: random.Random) -> _Proc:
    """Start one process of the chain and return it once it has reached ``where``: ``step`` (a seeded random
    moment just after it logged its first iteration), ``validate:N`` or ``save:N`` (paused inside those)."""
    pause = None if where == "step" else where
    p = _Proc(args, out, pause=pause, step_delay=None if pause else 0.1)
    if pause:
        ready = p.wait_for(p.marker.exists)
    else:
        rows = _train_rows(run) + 1
        ready = p.wait_for(lambda: _train_rows(run) >= rows)
        time.sleep(rng.uniform(0.0, 0.15))
    assert ready and p.proc.poll() is None, f"{out.name} ended before its signal:\n{p.output()[-3000:]}"
    return p


def test_signals_at_random_moments_resume_bit_for_bit(data, straight, tmp_path):
    """One run, stopped six times (Ctrl-C and SIGTERM at seeded random steps, during a validation and during
    checkpoint writes, a second Ctrl-C that aborts a write, a kill -9 in the middle of a write) and resumed each time
    (once with --save-every given on --resume): the end equals the uninterrupted run exactly."""
    rng = random.Random(16)
    run = tmp_path / "chain"
    resume = ["train", "--resume", str(run)]

    p = _segment(_train_args(data, tmp_path, "chain"), tmp_path / "s0", run, "step", rng)
    p.signal(signal.SIGINT)  # Ctrl-C in the middle of training
    _clean_stop(p, signal.SIGINT)
    first = _iteration(run)
    assert 0 < first < 4

    p = _segment(resume, tmp_path / "s1", run, "save:1", rng)  # half-way through writing the checkpoint of iteration 4
    before = (run / "last.pth").read_bytes()
    p.signal(signal.SIGINT)
    time.sleep(0.2)
    p.signal(signal.SIGINT)  # the second Ctrl-C aborts at once, without saving
    assert p.wait() == 130
    assert "Traceback" not in p.output(), p.output()[-3000:]
    assert (run / "last.pth").read_bytes() == before and _iteration(run) == first

    p = _segment(resume, tmp_path / "s2", run, "save:1", rng)  # a single Ctrl-C lets the write finish
    p.signal(signal.SIGINT)
    _clean_stop(p, signal.SIGINT)
    assert _iteration(run) == 4

    p = _segment(resume, tmp_path / "s3", run, "validate:1", rng)  # SIGTERM while validating at iteration 8
    p.signal(signal.SIGTERM)
    _clean_stop(p, signal.SIGTERM)
    assert _iteration(run) == 8

    # --save-every may change on resume; 0 saves after every step: kill -9 half-way through the write at iteration 9
    p = _segment(resume + ["--save-every", "0"], tmp_path / "s4", run, "save:1", rng)
    before = (run / "last.pth").read_bytes()
    p.signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL
    assert (run / "last.pth").read_bytes() == before and _iteration(run) == 8

    p = _segment(resume, tmp_path / "s5", run, "step", rng)  # SIGTERM in the middle of training
    p.signal(signal.SIGTERM)
    _clean_stop(p, signal.SIGTERM)
    assert 8 < _iteration(run) < ITERS

    p = _Proc(resume, tmp_path / "s6", launcher=[sys.executable, "-m", "ssdcli"])
    assert p.wait() == 0, p.output()[-3000:]
    _assert_same_run(straight, run)


@pytest.mark.slow
def test_torchrun_ranks_stop_together_and_resume_bit_for_bit(data, tmp_path):
    """2-process torchrun (gloo): SIGTERM to the launcher reaches both ranks at different moments; they agree on
    the stop iteration, rank 0 saves, and the resumed run equals an uninterrupted 2-process run exactly."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ssdcli"]
    p = _Proc(_train_args(data, tmp_path, "straight"), tmp_path / "straight", launcher=torchrun)
    assert p.wait() == 0, p.output()[-3000:]
    run = tmp_path / "cut"
    p = _Proc(_train_args(data, tmp_path, "cut"), tmp_path / "cut", launcher=torchrun)
    assert p.wait_for(lambda: _train_rows(run) >= 1) and p.proc.poll() is None, p.output()[-3000:]
    p.signal(signal.SIGTERM)
    p.wait()
    out = p.output()
    assert "SIGTERM: stopped at iteration" in out and "continue with: ssd train --resume" in out, out[-3000:]
    assert 0 < _iteration(run) < ITERS
    p = _Proc(["train", "--resume", str(run)], tmp_path / "resumed", launcher=torchrun)
    assert p.wait() == 0, p.output()[-3000:]
    _assert_same_run(tmp_path / "straight", run)


# -- resume options, unreadable images, data errors (in-process: fast) ------------------------------------------------
def _options(data: Path, project: Path, **kw):
    from ssdcli.engine.trainer import TrainOptions

    base = {"data": str(data), "arch": "ssd-mini", "img_size": 64, "iters": 4, "batch": 2, "workers": 0, "seed": 3,
            "device": "cpu", "log_every": 1, "val_split": "val", "project": str(project), "name": "r"}
    base.update(kw)
    return TrainOptions(**base)


def test_resume_takes_a_folder_or_auto_and_extends_a_finished_run(data, tmp_path, one_thread):
    from ssdcli.engine.trainer import TrainOptions, train

    first = train(_options(data, tmp_path, iters=4), report=lambda m: None)
    notes: list[str] = []
    again = train(TrainOptions(), resume=str(first.run_dir), report=notes.append)  # the folder, finished
    assert again.stopped == "finished" and again.iteration == 4
    assert any("already finished" in n and "--iters" in n for n in notes), notes
    notes.clear()
    longer = train(_options(data, tmp_path, iters=6), resume="auto", report=notes.append, changes={"iters": 6})
    assert longer.run_dir == first.run_dir and longer.iteration == 6 and longer.total_iters == 6
    assert any("extending the run from 4 to 6 iterations" in n for n in notes), notes
    assert [r["iter"] for r in longer.history if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    fresh = train(_options(data, tmp_path, name="other"), resume="auto", report=notes.append)
    assert fresh.run_dir == tmp_path / "other" and fresh.iteration == 4
    assert any("starting a new one" in n for n in notes)


def test_resume_refuses_options_that_cannot_change(data, tmp_path, one_thread):
    from typer.testing import CliRunner

    from ssdcli.cli.main import app
    from ssdcli.engine.trainer import train

    first = train(_options(data, tmp_path, iters=2), report=lambda m: None)
    r = CliRunner().invoke(app, ["train", "--resume", str(first.run_dir), "--iters", "3", "--batch", "4"])
    assert r.exit_code == 2, r.output
    assert "--batch 4" in r.output and "cannot change" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "nothing-here")])
    assert r.exit_code == 2 and "not found" in r.output


def _fragile_copy(tmp_path: Path) -> tuple[Path, list[Path]]:
    write_sample_dataset(tmp_path / "voc", num_train=16, num_test=2, image_size=(64, 80), seed=2)
    prepare_voc(tmp_path / "voc", tmp_path / "prepared", classes=list(SAMPLE_CLASSES))
    from ssdcli.data.records import load_prepared

    return tmp_path / "prepared", [Path(r.path) for r in load_prepared(tmp_path / "prepared").split("train")]


def test_unreadable_images_are_replaced_deterministically_and_reported(tmp_path, one_thread):
    from ssdcli.engine.trainer import TrainOptions, train
    from ssdcli.errors import SsdError

    data, paths = _fragile_copy(tmp_path)
    paths[0].unlink()  # deleted after prepare
    paths[1].write_bytes(paths[1].read_bytes()[:40])  # truncated after prepare
    straight = train(_options(data, tmp_path, iters=8, name="s"), report=lambda m: None)
    assert straight.unreadable and set(straight.unreadable) <= {str(paths[0]), str(paths[1])}
    rows = [r for r in straight.history if r["type"] == "train"]
    assert rows[-1]["replaced_samples"] >= len(straight.unreadable)
    cut = train(_options(data, tmp_path, iters=8, name="c", stop_after=3), report=lambda m: None)
    notes: list[str] = []
    resumed = train(TrainOptions(), resume=str(cut.run_dir), report=notes.append)
    a, b = load_checkpoint(straight.run_dir / "last.pth"), load_checkpoint(resumed.run_dir / "last.pth")
    for k in a.model_state:
        assert torch.equal(a.model_state[k], b.model_state[k]), k
    assert resumed.unreadable == straight.unreadable
    assert any("unreadable and replaced" in n for n in notes)
    for p in paths[2:10]:
        p.unlink()  # most of the data has vanished
    with pytest.raises(SsdError, match="no longer exist"):
        train(_options(data, tmp_path, name="gone"), report=lambda m: None)


def test_a_data_error_saves_first_then_stops_with_one_line(data, tmp_path, monkeypatch, one_thread):
    from ssdcli.data.replacement import ReplacingDataset
    from ssdcli.engine.sampler import ResumableBatchSampler
    from ssdcli.engine.trainer import train
    from ssdcli.errors import SsdError

    n = len((data / "train.jsonl").read_text().splitlines())
    bad_key = list(ResumableBatchSampler(n, 2, 3, 0, 6))[3][0]  # the first sample of iteration 4
    real = ReplacingDataset.__getitem__

    def getitem(self, key):
        if tuple(key) == tuple(bad_key):
            raise ValueError("augmentation exploded")
        return real(self, key)

    monkeypatch.setattr(ReplacingDataset, "__getitem__", getitem)
    with pytest.raises(SsdError) as info:
        train(_options(data, tmp_path, iters=6, workers=2, name="err"), report=lambda m: None)
    message = str(info.value)
    assert "\n" not in message and "augmentation exploded" in message and "iteration 3" in message
    assert _iteration(tmp_path / "err") == 3  # saved at the step boundary before the failing batch


def test_stop_requests_first_signal_is_a_request_second_aborts():
    from ssdcli.engine.interrupts import StopRequests, exit_status

    notes: list[str] = []
    with StopRequests(notes.append) as stops:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert stops.signum == signal.SIGTERM and "Ctrl-C again" in notes[0]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert (exit_status(signal.SIGINT), exit_status(signal.SIGTERM)) == (130, 143)


def test_a_forked_child_ignores_the_parents_stop_handler():
    from ssdcli.engine.interrupts import StopRequests

    with StopRequests() as stops:
        pid = os.fork()
        if pid == 0:  # child: SIGINT must not reach the parent's request nor raise here
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                os._exit(0 if stops.signum is None else 3)
            except BaseException:  # noqa: BLE001
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert stops.signum is None
