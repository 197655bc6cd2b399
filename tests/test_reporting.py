"""One reporting channel: every long workflow reports start/advance/end with the right totals to a Reporter;
training metrics reach metrics.jsonl, metrics.csv, TensorBoard (when installed) and the plots through it."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from ssdcli.cli.progress import RichReporter, format_fields
from ssdcli.data.samples import write_sample_dataset
from ssdcli.deploy.benchmark import run_benchmark
from ssdcli.deploy.onnx_export import export_onnx
from ssdcli.engine.train_log import MetricsFiles
from ssdcli.engine.trainer import TrainOptions, train
from ssdcli.reporting import Fanout, NullReporter, RecordingReporter, Reporter, Stages, as_reporter

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(prepared_sample) -> Path:
    return prepared_sample(8, 4, image_size=(64, 80), seed=3)


def _options(data: Path, project: Path, **kw) -> TrainOptions:
    base = {"data": str(data), "arch": "ssd-mini", "img_size": 64, "iters": 6, "batch": 4, "workers": 0, "seed": 0,
            "lr": 1e-3, "warmup_iters": 1, "val_split": "test", "eval_every": 2, "project": str(project), "name": "r",
            "device": "cpu", "log_every": 1}  # fmt: skip
    return TrainOptions(**{**base, **kw})


@pytest.fixture(scope="module")
def interrupted_run(data: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A run stopped after its first validation (iteration 2 of 6), at iteration 3."""
    rec = RecordingReporter()
    result = train(_options(data, tmp_path_factory.mktemp("runs"), stop_after=3), report=rec)
    return result, rec


def test_reporter_helpers() -> None:
    assert isinstance(as_reporter(None), NullReporter) and isinstance(RecordingReporter(), Reporter)
    said: list[str] = []
    as_reporter(said.append).message("hello")
    a, b = RecordingReporter(), RecordingReporter()
    stages = Stages(Fanout(a, b), "job", 2)
    stages.next("one")
    stages.next("two")
    stages.done()
    assert said == ["hello"] and a.events == b.events and a.done("job") == 2
    assert a.kinds("job") == ["start", "advance", "end"]
    with pytest.raises(TypeError):
        as_reporter(42)  # type: ignore[arg-type]


def test_train_reports_progress_and_metrics_then_plots_at_validation(interrupted_run) -> None:  # type: ignore[no-untyped-def]
    result, rec = interrupted_run
    assert result.stopped == "interrupted" and result.iteration == 3
    assert rec.totals("train") == [6] and rec.done("train") == 3 and rec.kinds("train") == ["start", "advance", "end"]
    assert rec.totals("eval") == [4] and rec.done("eval") == 4  # the validation (on the 4 test images)
    fields = [e[3] for e in rec.events if e[:2] == ("advance", "train")]
    assert all({"loss_total", "lr", "images_per_s"} <= set(f) for f in fields)
    rows = [e[1] for e in rec.events if e[0] == "metrics"]
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows == logged and [r["type"] for r in rows] == ["train", "train", "val", "train"]
    # the curves are drawn at the first validation, though the run never reached its end
    assert (result.run_dir / "loss.png").stat().st_size > 0 and (result.run_dir / "map.png").stat().st_size > 0


def _csv_matches_jsonl(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    with open(run_dir / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    assert list(table[0]) == columns
    assert table == [{k: "" if k not in r else str(r[k]) for k in columns} for r in rows]
    return rows


def test_csv_matches_jsonl_across_resume(interrupted_run) -> None:  # type: ignore[no-untyped-def]
    result, _ = interrupted_run
    _csv_matches_jsonl(result.run_dir)
    rec = RecordingReporter()
    done = train(TrainOptions(), resume=str(result.run_dir), report=rec)
    assert done.stopped == "finished" and rec.totals("train") == [6] and rec.done("train") == 6
    rows = _csv_matches_jsonl(done.run_dir)
    assert [r["iter"] for r in rows if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_tensorboard_event_files(interrupted_run) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, _ = interrupted_run
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss_total", "train/lr", "val/map"} <= set(tags)
    assert [e.step for e in events.Scalars("val/map")][:1] == [2]


def test_metrics_files_without_tensorboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    files = MetricsFiles(tmp_path)
    files.metrics({"type": "train", "iter": 1, "loss_total": 2.0})
    files.metrics({"type": "train", "iter": 2, "loss_total": 1.5, "replaced_samples": 1})  # a new column
    files.close()
    assert not (tmp_path / "tensorboard").exists() and (tmp_path / "loss.png").exists() is False
    assert _csv_matches_jsonl(tmp_path)[1]["replaced_samples"] == 1


def test_export_and_benchmark_report_stages(interrupted_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result, _ = interrupted_run
    rec = RecordingReporter()
    export_onnx(result.run_dir / "last.pth", tmp_path / "m.onnx", reporter=rec)
    assert rec.totals("export") == [4] and rec.done("export") == 4 and rec.kinds("export")[-1] == "end"
    rec = RecordingReporter()
    run_benchmark(tmp_path / "m.onnx", batches=(1, 2), engines=("torch", "onnx"), device="cpu", warmup=0, iters=1,
                  reporter=rec)  # fmt: skip
    # load, FLOPs, then per engine: prepare + one per batch (torch is skipped: an ONNX file has no PyTorch weights)
    assert rec.totals("benchmark") == [2 + 2 * 3] and rec.done("benchmark") == 8


def test_sample_data_reports(tmp_path: Path) -> None:
    rec = RecordingReporter()
    write_sample_dataset(tmp_path / "voc", num_train=3, num_test=2, image_size=48, reporter=rec)
    assert rec.totals("draw samples") == [5] and rec.done("draw samples") == 5


def test_rich_reporter_draws_bars_with_eta_and_prints_messages() -> None:
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, width=150, force_terminal=False))
    reporter.start("train", 10, unit="it")
    reporter.message("a [bold] line")  # printed as is, above the bars
    reporter.advance("train", 4, loss_total=3.0, loss_loc=1.25, lr=0.001, images_per_s=12.5)
    reporter.end("train")
    reporter.close()
    text = out.getvalue()
    assert "a [bold] line" in text and "4/10" in text and "eta" in text and "loc 1.250" in text
    assert format_fields({"loss_total": 1.0, "stage": "writing", "lr": 0.01}) == "writing  lr 1.00e-02"
