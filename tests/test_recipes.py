"""Training recipes: resolution and overrides, lr scaling, time-budget fitting (fake clock), val hold-out, EMA."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from ssdcli.data.splits import holdout
from ssdcli.engine.ema import make_ema
from ssdcli.engine.recipes import resolve_recipe, scaled_lr, start_kind, warmup_iters
from ssdcli.engine.schedule import LRSchedule
from ssdcli.engine.time_budget import TimeBudget
from ssdcli.models.recipe import Recipe

@pytest.fixture
def sample_voc_factory(tmp_path):
    from ssdcli.data.samples import write_sample_dataset

    def make(**kwargs):
        return write_sample_dataset(tmp_path / f"voc{len(list(tmp_path.iterdir()))}", image_size=(64, 96), **kwargs)

    return make


RECIPE = Recipe(name="t", optimizer="sgd", lr=0.01, batch=16, lr_scaling="linear", weight_decay=4e-5,
                schedule="cosine", epochs=50.0, zoom_out=1.0, sources={"lr": "a paper"})  # fmt: skip


def test_start_kind_selects_by_weights() -> None:
    assert start_kind(None, None, False) == "scratch"
    assert start_kind(None, "vgg.pth", False) == "backbone"
    assert start_kind(None, None, True) == "backbone"
    assert start_kind("best.pth", "vgg.pth", False) == "finetune"


def test_recipe_fills_what_the_user_left_out_and_names_the_origin() -> None:
    r = resolve_recipe(RECIPE, "scratch", {"weight_decay": 1e-3, "batch": None})
    assert r.values["weight_decay"] == 1e-3 and r.origins["weight_decay"] == "--weight-decay"
    assert r.values["optimizer"] == "sgd" and r.origins["optimizer"].startswith("recipe t")
    assert r.values["batch"] == 16 and r.values["lr"] == pytest.approx(0.01)
    assert "a paper" in r.origins["lr"]
    assert r.values["zoom_out"] == 1.0 and r.values["ema"] is False
    assert [row[0] for row in r.rows()] == list(r.values)


@pytest.mark.parametrize("rule,batch,world,expected", [
    ("linear", 32, 1, 0.02), ("linear", 8, 2, 0.01), ("sqrt", 64, 1, 0.02), ("none", 64, 1, 0.01),
])  # fmt: skip
def test_lr_follows_the_global_batch_by_the_recipes_rule(rule: str, batch: int, world: int, expected: float) -> None:
    recipe = Recipe(name="t", lr=0.01, batch=16, lr_scaling=rule)
    r = resolve_recipe(recipe, "scratch", {"batch": batch}, world=world)
    assert r.values["lr"] == pytest.approx(expected)
    assert scaled_lr(recipe, batch * world) == pytest.approx(expected)
    if batch * world != 16 and rule != "none":
        assert "scaled" in r.origins["lr"]


@pytest.mark.parametrize("device,recipe_bf16,amx,given,expected", [
    ("cuda", False, False, None, True), ("cpu", False, True, None, False), ("cpu", True, True, None, True),
    ("cpu", True, False, None, False), ("cpu", True, True, False, False), ("cpu", False, False, True, True),
])  # fmt: skip
def test_amp_follows_the_device_the_recipe_and_the_cpu(monkeypatch, device, recipe_bf16, amx, given, expected) -> None:
    monkeypatch.setattr("ssdcli.engine.recipes.cpu_bf16_matrix_units", lambda: amx)
    recipe = Recipe(name="t", cpu_bf16=recipe_bf16, sources={"cpu_bf16": "a measurement"})
    r = resolve_recipe(recipe, "scratch", {"amp": given}, device_type=device)
    assert r.values["amp"] is expected
    if given is not None:
        assert r.origins["amp"] == ("--amp" if given else "--no-amp")
    elif device == "cpu" and recipe_bf16:
        assert ("AMX" in r.origins["amp"]) and (("lacks" in r.origins["amp"]) is not amx)


def test_box_loss_is_a_recipe_default_a_flag_overrides() -> None:
    recipe = Recipe(name="t", box_loss="giou")
    assert resolve_recipe(recipe, "scratch", {}).values["box_loss"] == "giou"
    r = resolve_recipe(recipe, "scratch", {"box_loss": "smooth_l1"})
    assert r.values["box_loss"] == "smooth_l1" and r.origins["box_loss"] == "--box-loss"


def test_a_given_lr_is_never_scaled() -> None:
    r = resolve_recipe(RECIPE, "scratch", {"batch": 64, "lr": 0.5})
    assert r.values["lr"] == 0.5 and r.origins["lr"] == "--lr"


def test_warmup_is_a_capped_fraction_of_the_run() -> None:
    recipe = Recipe(name="t", warmup_fraction=0.05, warmup_max_iters=500)
    assert warmup_iters(recipe, 1000) == 50
    assert warmup_iters(recipe, 100_000) == 500


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _simulate(limit: float, step_s: list[float] | float, val_s: float, every_fraction: float = 0.25):
    """Run a fake training loop against a fake clock; returns (iterations, elapsed, final lr factor, totals)."""
    clock = FakeClock()
    budget = TimeBudget(limit, clock=clock)
    total, it, totals = 10_000, 0, []
    every = 10**9
    while it < total and not budget.expired():
        clock.t += step_s if isinstance(step_s, float) else step_s[min(it, len(step_s) - 1)]
        it += 1
        budget.step_done()
        new_total = budget.fit_total(it, total, every)
        if new_total != total:
            total, every = new_total, max(1, int(new_total * every_fraction))
            totals.append(total)
        if it % every == 0 or it == total:
            clock.t += val_s
            budget.overhead(val_s)
    schedule = LRSchedule(base_lr=1.0, total_iters=total, warmup_iters=10, kind="cosine")
    return it, budget.elapsed(), schedule.factor(it - 1), totals


def test_time_fit_ends_the_schedule_when_the_budget_runs_out() -> None:
    it, elapsed, factor, totals = _simulate(900.0, 1.2, val_s=8.0)
    assert it == totals[-1]  # the run ended by reaching the fitted schedule's end ...
    assert 0.95 * 900 <= elapsed <= 1.0 * 900 + 1.2 + 8.0  # ... within 5% of the limit
    assert factor < 0.02  # and the cosine lr is at its final value


def test_time_fit_follows_a_drift_in_throughput() -> None:
    # steps slow down from 1 s to 2 s after 200 iterations: the fitted length shrinks, the run still ends on time
    steps = [1.0] * 200 + [2.0] * 2000
    it, elapsed, factor, totals = _simulate(900.0, steps, val_s=5.0)
    assert len(totals) >= 2 and totals[-1] < totals[0]
    assert 0.95 * 900 <= elapsed <= 900 + 2.0 + 5.0
    assert factor < 0.05


def test_time_budget_counts_time_spent_before_a_resume() -> None:
    clock = FakeClock()
    budget = TimeBudget(100.0, spent_s=60.0, clock=clock)
    clock.t += 30.0
    assert budget.elapsed() == pytest.approx(90.0) and budget.remaining() == pytest.approx(10.0)
    assert not budget.expired()
    clock.t += 10.0
    assert budget.expired()


def test_val_holdout_is_deterministic_disjoint_and_order_free() -> None:
    ids = [f"img_{i:04d}" for i in range(200)]
    kept, held = holdout(ids, ids, 0.1, seed=0)
    assert len(held) == 20 and len(kept) == 180 and not set(kept) & set(held) and set(kept) | set(held) == set(ids)
    rev = list(reversed(ids))
    kept2, held2 = holdout(rev, rev, 0.1, seed=0)
    assert set(held2) == set(held)  # the same images, whatever the listing order
    assert set(holdout(ids, ids, 0.1, seed=1)[1]) != set(held)
    assert holdout(ids, ids, 0.0)[1] == []
    assert len(holdout(ids[:1], ids[:1], 0.5)[0]) == 1  # never empties train


def test_prepare_holds_out_val_only_when_the_source_has_none(sample_voc_factory) -> None:
    from ssdcli.data.prepare import prepare_voc

    voc = sample_voc_factory(num_train=20, num_test=4)
    report = prepare_voc(voc, None, classes="auto")
    assert (report.splits["train"].images, report.splits["val"].images, report.splits["test"].images) == (18, 2, 4)
    assert prepare_voc(voc, None, classes="auto", val_fraction=0.0).splits.keys() == {"train", "test"}
    with_val = sample_voc_factory(num_train=20, num_test=4, num_val=3)
    report = prepare_voc(with_val, None, classes="auto")
    assert (report.splits["train"].images, report.splits["val"].images) == (20, 3)


def test_ema_tracks_the_weights_and_resumes_exactly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = make_ema(model, 0.99)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        model(torch.randn(2, 3, 8, 8)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ema.update_parameters(model)

    for _ in range(5):
        step()
    saved = {k: v.clone() for k, v in ema.state_dict().items()}
    assert int(saved["n_averaged"]) == 5
    assert not torch.equal(ema.module[0].weight, model[0].weight)  # an average, not a copy
    assert torch.equal(ema.module[1].num_batches_tracked, model[1].num_batches_tracked)
    restored = make_ema(model, 0.99)
    restored.load_state_dict(saved)
    state = torch.get_rng_state()
    step()
    after_a = {k: v.clone() for k, v in ema.state_dict().items()}
    restored.update_parameters(model)
    torch.set_rng_state(state)
    for k, v in restored.state_dict().items():
        assert torch.equal(v, after_a[k]), k
    assert math.isclose(float(after_a["n_averaged"]), 6)


def test_length_comes_from_flags_then_the_time_limit_then_the_recipe() -> None:
    from ssdcli.engine.recipes import plan_length

    assert plan_length(100, None, None, RECIPE, 9).total == 100
    assert plan_length(None, 2.5, 600.0, RECIPE, 9).total == 23  # a length and a limit: whichever ends first
    fitted = plan_length(None, None, 600.0, RECIPE, 9)
    assert fitted.fit_to_time and fitted.total == 450
    default = plan_length(None, None, None, RECIPE, 9)
    assert not default.fit_to_time and default.total == 450 and "50 epochs" in default.source


def test_the_bare_command_trains_the_recipe_length_and_announces_it(sample_voc_factory, tmp_path) -> None:
    """No --iters/--epochs/--time-limit: the recipe's epochs, announced with an estimated duration; the recipe
    table is printed and stored; validation runs on the held-out val split, not on test."""
    from ssdcli.data.prepare import prepare_voc
    from ssdcli.engine.trainer import TrainOptions, train

    prepared = tmp_path / "prepared"
    prepare_voc(sample_voc_factory(num_train=20, num_test=4), prepared, classes="auto")
    notes: list[str] = []
    options = TrainOptions(data=str(prepared), arch="ssd-mini", img_size=64, batch=4, workers=0, device="cpu",
                           project=str(tmp_path / "runs"), stop_after=12)  # fmt: skip
    result = train(options, report=notes.append)
    text = "\n".join(notes)
    assert "recipe ssd-mini-quickstart (start: scratch)" in text and "--img-size" in text
    iters_per_epoch = 18 // 4  # 20 training images, 2 held out as val
    assert result.total_iters == math.ceil(122.222 * iters_per_epoch) > iters_per_epoch
    assert f"for {result.total_iters} iterations (recipe ssd-mini-quickstart: 122.222 epochs)" in text
    assert "s per iteration:" in text and "take about" in text
    stored = json.loads((result.run_dir / "options.json").read_text())
    assert stored["optimizer"] == "adamw" and stored["recipe"]["values"]["lr"] == pytest.approx(3e-3 * math.sqrt(4 / 16))
    assert stored["val_split"] == "val"


@pytest.mark.parametrize("args, message", [
    (["--optimizer", "foo"], "--optimizer"), (["--schedule", "linear"], "--schedule"), (["--arch", "bogus"], "--arch"),
    (["--augment", "x"], "--augment"), (["--val-metric", "map"], "--val-metric"),
    (["--grad-clip", "-10"], "--grad-clip -10: outside the allowed range"),
    (["--lr", "-0.01"], "--lr -0.01: outside"), (["--batch", "0"], "--batch 0: outside"),
    (["--img-size", "-7"], "--img-size -7: outside"), (["--workers", "-1"], "--workers -1: outside"),
    (["--log-every", "0"], "--log-every 0: outside"), (["--momentum", "-5"], "--momentum -5: outside"),
    (["--eval-every", "-1"], "--eval-every -1: outside"), (["--weight-decay", "-1"], "--weight-decay -1: outside"),
    (["--zoom-out", "0.5"], "--zoom-out 0.5: outside"), (["--patience", "0"], "--patience 0: outside"),
    (["--ema-decay", "1.5"], "--ema-decay 1.5: outside"), (["--time-limit", "soon"], "--time-limit soon"),
])  # fmt: skip
def test_train_refuses_wrong_values_before_any_work(tmp_path, args, message) -> None:
    """Issue 14/17 reproductions: a wrong choice or number is one line, exit code 2, and no run folder."""
    from typer.testing import CliRunner

    from ssdcli.cli.main import app

    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--project", str(tmp_path / "runs"), *args],
                           env={"COLUMNS": "200", "NO_COLOR": "1"})  # fmt: skip
    assert r.exit_code == 2 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_path / "runs").exists()


def test_train_options_validate_for_api_callers() -> None:
    from ssdcli.engine.trainer import TrainOptions
    from ssdcli.errors import SsdError

    with pytest.raises(SsdError, match="--optimizer adam2: expected one of sgd, adamw, adam"):
        TrainOptions(optimizer="adam2").validate()
    with pytest.raises(SsdError, match="--grad-clip -10: expected a value >= 1e-12"):
        TrainOptions(grad_clip=-10.0).validate()
    TrainOptions(optimizer="adam", batch=4, ema=True).validate()
