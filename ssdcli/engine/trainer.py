"""The training loop behind ``ssd train``: resumable bit for bit on CPU, AMP, DDP, NaN guard, time limit."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ssdcli.boxes import pixel_to_relative
from ssdcli.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ssdcli.convert.pretrained import pretrained_arch
from ssdcli.data.dataset import DetectionDataset
from ssdcli.data.records import load_prepared
from ssdcli.data.replacement import ReplacingDataset, collate_with_replacements, count_missing
from ssdcli.device import resolve_device
from ssdcli.engine import distributed as D
from ssdcli.engine.ema import make_ema
from ssdcli.engine.interrupts import StopRequests, exit_status, ignore_stop_signals, signal_name
from ssdcli.engine.model_init import init_model
from ssdcli.engine.optim import build_optimizer, set_lr
from ssdcli.engine.recipes import plan_length, recipe_text, resolve_for, warmup_iters
from ssdcli.engine.resume import RESUME_AUTO, check_resume_changes, find_resume_checkpoint
from ssdcli.engine.rng import capture_rng_state, restore_rng_state, seed_everything
from ssdcli.engine.runs import new_run_dir
from ssdcli.engine.sampler import ResumableBatchSampler, epoch_permutation
from ssdcli.engine.schedule import LRSchedule
from ssdcli.engine.time_budget import TimeBudget
from ssdcli.engine.train_log import MetricsFiles, memory_mb, plot_curves
from ssdcli.engine.train_options import TrainOptions, metric_label
from ssdcli.engine.validation import Validator
from ssdcli.errors import SsdError
from ssdcli.io_utils import atomic_write_text
from ssdcli.models.base import DetectorModel
from ssdcli.models.recipe import Recipe
from ssdcli.prior_fit import PriorCoverage
from ssdcli.reporting import Fanout, NullReporter, Reporter, as_reporter


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    total_iters: int
    best_map: float | None
    last_map: float | None
    stopped: str  # "finished" | "time-limit" | "interrupted"
    bad_steps: int = 0
    history: list[dict] = field(default_factory=list)
    exit_code: int = 0  # 130 after SIGINT, 143 after SIGTERM (the run saved and can be resumed)
    unreadable: list[str] = field(default_factory=list)  # training images found unreadable and replaced
    val_metric: str = "coco"  # what best_map / last_map measure


class NonFiniteLoss(SsdError):
    pass


def train(
    options: TrainOptions,
    resume: str | None = None,
    report: Reporter | Callable[[str], None] | None = print,
    changes: dict | None = None,
    stops: StopRequests | None = None,
) -> TrainResult:
    """Run (or resume) a training; see :class:`TrainOptions`. ``report``: a :class:`~ssdcli.reporting.Reporter`
    (messages, the "train" task advanced once per iteration with loss/lr/images_per_s fields, metric rows; a
    plain callable gets the messages only).

    ``resume``: a checkpoint, a run folder or ``"auto"`` (see :mod:`ssdcli.engine.resume`). ``changes``: the options
    the user gave explicitly with ``resume`` (refused unless they may change, see ``RESUME_CHANGEABLE``).
    ``stops``: where SIGINT/SIGTERM requests are recorded (default: handlers installed for the run's duration).
    """
    report = as_reporter(report)
    path = find_resume_checkpoint(resume, options.project, options.name) if resume else None
    if resume == RESUME_AUTO and path is None:
        report.message(f"--resume auto: no run named '{options.name}' under {options.project} yet: starting a new one")
    if path is not None and resume == RESUME_AUTO:
        report.message(f"--resume auto: resuming {path}")
    ckpt = load_checkpoint(path) if path is not None else None
    changed: dict = {}
    if ckpt is not None:
        if not ckpt.train_state:
            raise SsdError(f"{path}: checkpoint holds no training state (it is a weights-only checkpoint; use --weights)")
        stored = ckpt.train_state["options"]
        changed = check_resume_changes(stored, changes or {}, path)
        options = TrainOptions.from_dict({**stored, "stop_after": None, **changed})  # stop_after: one process only
        if "epochs" in changed and "iters" not in changed:
            options.iters = None  # recomputed from the new --epochs
    options.validate()
    device = resolve_device(options.device)
    dist = D.init_distributed(device)
    device = D.local_device(device, dist)
    reporter = report if dist.is_main else NullReporter()
    try:
        with stops if stops is not None else StopRequests(reporter.message) as requests:
            return _Run(options, ckpt, str(path) if path else None, device, dist, reporter, changed).run(requests)
    finally:
        D.cleanup(dist)


@dataclass
class _LogWindow:
    """Loss sums since the last ``metrics.jsonl`` row (part of the training state: rows stay exact on resume)."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    images: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, losses: dict[str, float]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}

    def state(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}

    @classmethod
    def from_state(cls, state: dict | None) -> _LogWindow:
        state = state or {}
        return cls(sums=dict(state.get("sums", {})), count=int(state.get("count", 0)))


class _Run:
    def __init__(self, options, ckpt, resume, device, dist, reporter: Reporter, changed=None) -> None:
        self.o: TrainOptions = options
        self.device: torch.device = device
        self.dist: D.DistInfo = dist
        self.report: Reporter = reporter
        self.say: Callable[[str], None] = reporter.message
        seed_everything(options.seed)
        data = load_prepared(options.data)
        self.classes = data.classes
        train_records = data.split("train")
        if not train_records:
            raise SsdError(f"{options.data}: the train split is empty")
        missing = count_missing(train_records)
        if missing * 2 > len(train_records):
            raise SsdError(f"{options.data}: {missing} of {len(train_records)} training images no longer exist; "
                           "the data has moved or vanished since prepare-voc (prepare it again)")
        self.val_records = self._validation_split(data)
        if options.val_size and self.val_records:
            pick = epoch_permutation(len(self.val_records), options.seed, 0)[: options.val_size].sort().values
            self.val_records = [self.val_records[int(i)] for i in pick]
        if ckpt is not None:
            if ckpt.config.class_names != self.classes:
                raise SsdError(f"{resume}: checkpoint classes differ from the dataset's ({options.data})")
            self.model = model_from_checkpoint(ckpt, resume)
            self.run_dir = Path(resume).parent
            state = ckpt.train_state
            self.start_iter = int(state["iteration"])
        else:
            coco_arch = pretrained_arch(options.weights)
            if coco_arch and coco_arch != options.arch:
                self.say(f"--weights {options.weights}: training '{coco_arch}' (not '{options.arch}')")
                options.arch = coco_arch
            self._resolve_recipe()
            self.model, transfer = init_model(
                options.arch, self.classes, options.img_size, options.weights, options.backbone_weights,
                options.pretrained_backbone, self.say, options.class_map,
            )
            options.class_transfer = transfer.to_dict() if transfer is not None else None
            self._check_priors(train_records)
            state = None
            self.start_iter = 0
        if options.iou is not None:  # on resume options.iou is the stored run's value
            self.model.config.nms_threshold = float(options.iou)
        self.model.set_box_loss(options.box_loss, options.box_loss_weight)
        self.recipe = Recipe(**{**options.recipe["recipe"], "milestones": tuple(options.recipe["recipe"]["milestones"])})
        self.config = self.model.config
        transform = train_transform(self.model, options.zoom_out, options.augment)
        self.model.to(device)
        if options.channels_last:
            self.model.to(memory_format=torch.channels_last)
        world_batch = options.batch * dist.world
        n = len(train_records)
        if n < world_batch:
            raise SsdError(f"{options.data}: {n} training images, fewer than one batch of {world_batch}")
        self.iters_per_epoch = n // world_batch
        self.length = plan_length(options.iters, options.epochs, options.time_limit, self.recipe, self.iters_per_epoch)
        extended = bool({"iters", "epochs"} & set(changed or {}))
        self.total = self.length.total
        if state is not None and not extended:
            self.total = int(state.get("total_iters", self.length.total))
        if state is not None and extended and options.warmup_iters is None:  # the warm-up done stays as it was
            options.warmup_iters = warmup_iters(self.recipe, int(state.get("total_iters", state["options"]["iters"])))
        if not self.length.fit_to_time:
            options.iters = self.total
        self.schedule = self._schedule(self.total)
        self.optimizer = build_optimizer(
            self.model, options.lr, options.momentum, options.weight_decay, options.optimizer, options.bias_lr_factor
        )
        self.ema = make_ema(self.model, options.ema_decay) if options.ema else None
        self.budget = TimeBudget(options.time_limit if options.time_limit is not None else math.inf,
                                 spent_s=float(state.get("time_spent", 0.0)) if state is not None else 0.0)  # fmt: skip
        self.stale_validations = 0
        self.early_stopped = False
        self._fitted = state is not None  # a resumed run keeps the warm-up and validation rhythm it had
        self.amp = options.amp if options.amp is not None else device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp and device.type == "cuda")
        self.frozen_params = self._backbone_params(options.freeze_backbone)
        self.backbone_frozen = False
        self.best_map: float | None = None
        self.last_map: float | None = None
        self.bad_steps = 0
        self.consecutive_bad = 0
        self.unreadable: list[str] = []  # training images found unreadable (replaced), in the order met
        self.replaced_samples = 0
        self.window = _LogWindow()
        self.images_per_s = 0.0  # of the last metrics row (shown with the progress)
        self.saved_at: int | None = None
        if ckpt is None:  # after every check on the options and data: a refused run leaves no folder behind
            self.run_dir = self._make_run_dir()
        self.log = MetricsFiles(self.run_dir)  # (written by the main process only)
        if dist.is_main:
            self.report = Fanout(reporter, self.log)  # metric rows go to the files and the caller alike
        if state is not None:
            self._restore_training_state(state)
            if dist.is_main:
                self.log.truncate_after(self.start_iter)
            self.say(f"resumed {resume} at iteration {self.start_iter}/{self.total}")
            self._report_extension(state, changed or {})
        if options.workers is None:
            options.workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 1
        dataset = ReplacingDataset(DetectionDataset(train_records, transform, seed=options.seed))
        # a schedule fitted to the time may grow: the sampler runs on and the loop stops at self.total
        sampler_end = self.total if not self.length.fit_to_time else _OPEN_END
        sampler = ResumableBatchSampler(n, options.batch, options.seed, self.start_iter, sampler_end, dist.rank, dist.world)
        self.loader = DataLoader(
            dataset, batch_sampler=sampler, num_workers=options.workers, collate_fn=collate_with_replacements,
            pin_memory=device.type == "cuda", persistent_workers=False, worker_init_fn=_data_worker_init,
            generator=torch.Generator().manual_seed(options.seed),  # workers' seeds never draw from the global RNG
        )
        self.core = self.model
        self.forward_model: torch.nn.Module = self.model
        if dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.forward_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if options.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.eval_every = options.eval_every or max(1, self.total // 4)
        if state is not None and not options.eval_every and "eval_every" in state and not extended:
            self.eval_every = int(state["eval_every"])  # a length fitted to the time set it at the first fit
        self.validator = (Validator(self.val_records, self.classes, options.val_metric, device, options.workers,
                                    reporter=self.report) if self.val_records else None)  # fmt: skip

    def _check_priors(self, records: list) -> None:
        """Print how the priors cover the training boxes; with --fit-priors re-fit them first (fresh runs only:
        the fitted spec is in the model's config, so checkpoints, resume, detect and export use it)."""
        boxes = relative_boxes(records)
        before = self.model.prior_coverage(boxes)
        if self.o.fit_priors:
            self.model.refit_priors(boxes, seed=self.o.seed)  # families without priors refuse here
        if before is None:
            return
        self.say(f"prior fit: {_coverage_text(before)}")
        if self.o.fit_priors:
            self.say(f"priors re-fitted to the training boxes: {_coverage_text(self.model.prior_coverage(boxes))}")

    def _validation_split(self, data) -> list:
        """The records ``best.pth`` is chosen on: ``val`` by default; test only when asked (and said so)."""
        o = self.o
        if o.val_split == "none":
            return []
        if o.val_split not in data.splits:
            if o.val_split == "val":
                self.say(f"note: {o.data} has no val split, so there is no validation and no best.pth; re-run "
                         "prepare-voc (it holds out 10% of train as val) or pass --val-split")  # fmt: skip
                return []
            raise SsdError(f"--val-split {o.val_split}: {o.data} has no such split "
                           f"(splits: {', '.join(sorted(data.splits))})")  # fmt: skip
        if o.val_split == "test":
            self.say("note: validating on the test split: best.pth is chosen on test, so test figures are optimistic")
        return data.splits[o.val_split]

    def _resolve_recipe(self) -> None:
        """Fill the options left unset from the architecture's recipe; keep the recipe and origins in options."""
        o = self.o
        resolved = resolve_for(o, self.dist.world, self.device.type)
        for k, v in resolved.values.items():
            setattr(o, k, v)
        o.recipe = {**resolved.to_dict(), "recipe": resolved.recipe.to_dict()}
        if resolved.recipe.warning and not o.weights:
            self.say(f"warning: {o.arch} {resolved.recipe.warning}")

    def _schedule(self, total: int) -> LRSchedule:
        warmup = self.o.warmup_iters if self.o.warmup_iters is not None else warmup_iters(self.recipe, total)
        return LRSchedule(base_lr=float(self.o.lr), total_iters=total, warmup_iters=warmup, kind=self.o.schedule,
                          milestones=self.recipe.milestones)  # fmt: skip

    def _make_run_dir(self) -> Path:
        run_dir = new_run_dir(self.o.project, self.o.name) if self.dist.is_main else None
        return Path(D.broadcast_object(str(run_dir) if run_dir else None, self.dist))  # type: ignore[arg-type]

    def _report_extension(self, state: dict, changed: dict) -> None:
        old_total = int(state.get("total_iters", state["options"]["iters"]))
        if self.total == old_total or not ({"iters", "epochs"} & set(changed)):
            return
        if self.total <= self.start_iter:
            raise SsdError(f"--iters {self.total}: the run is already at iteration {self.start_iter}; give more to extend it")
        old = self._schedule(old_total)
        self.say(
            f"extending the run from {old_total} to {self.total} iterations: the {self.o.schedule} lr schedule is "
            f"recomputed over {self.total} (lr at iteration {self.start_iter}: {old.lr(self.start_iter):g} -> "
            f"{self.schedule.lr(self.start_iter):g})"
        )

    # -- the training state in checkpoints ------------------------------------------------------------------------
    def _training_state(self, it: int) -> dict:
        """Everything besides the weights that a resumed run needs to continue exactly as this one would."""
        state = {
            "iteration": it,
            "total_iters": self.total,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "options": asdict(self.o),
            "best_map": self.best_map,
            "last_map": self.last_map,
            "bad_steps": self.bad_steps,
            "consecutive_bad": self.consecutive_bad,
            "rng": capture_rng_state(),
            "log_window": self.window.state(),
            "time_spent": self.budget.elapsed(),
            "stale_validations": self.stale_validations,
            "eval_every": self.eval_every,
            "unreadable": list(self.unreadable),
            "replaced_samples": self.replaced_samples,
        }
        if self.ema is not None:  # the checkpoint's weights are the EMA's; the raw weights continue training
            state["ema"] = self.ema.state_dict()
            state["model"] = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return state

    def _restore_training_state(self, state: dict) -> None:
        if "model" in state:  # the checkpoint's weights are the EMA's; the raw weights continue training
            self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.stale_validations = int(state.get("stale_validations", 0))
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best_map = state.get("best_map")
        self.last_map = state.get("last_map")
        self.bad_steps = int(state.get("bad_steps", 0))
        self.consecutive_bad = int(state.get("consecutive_bad", 0))
        restore_rng_state(state["rng"])
        self.window = _LogWindow.from_state(state.get("log_window"))
        self.unreadable = list(state.get("unreadable", []))
        self.replaced_samples = int(state.get("replaced_samples", 0))

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self, stops: StopRequests) -> TrainResult:
        o = self.o
        if self.start_iter >= self.total:
            self.say(f"{self.run_dir} already finished ({self.start_iter}/{self.total} iterations): nothing to do; "
                     "give a larger --iters or --epochs with --resume to extend it")
            history = self.log.rows() if self.dist.is_main else []
            return TrainResult(self.run_dir, self.start_iter, self.total, self.best_map, self.last_map, "finished",
                               self.bad_steps, history, val_metric=o.val_metric)  # fmt: skip
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "options.json", _json(asdict(o)))
            if self.start_iter == 0:
                self.say(recipe_text(o.recipe))
            length = (f"a length fitted to the {o.time_limit:g} s time limit (provisionally {self.total} iterations)"
                      if self.length.fit_to_time else f"{self.total} iterations ({self.length.source})")  # fmt: skip
            self.say(
                f"training {self.config.arch} ({self.config.image_size}px, {len(self.classes)} classes) on {self.device}"
                f" for {length}, {self.iters_per_epoch} iterations per epoch, batch {o.batch}x{self.dist.world},"
                f" lr {self.schedule.base_lr:g}, {self._precision()}; run folder {self.run_dir}"
            )
        it = self.start_iter
        announced = False
        stopped, exit_code = "finished", 0
        last_time_save = time.monotonic()
        self.window.started = time.monotonic()
        self.model.train()
        self.report.start("train", self.total, unit="it", done=self.start_iter)
        batches = iter(self.loader)
        try:
            while it < self.total:
                images, boxes, labels = self._next_batch(batches, it)
                set_lr(self.optimizer, self.schedule.lr(it))
                self.backbone_frozen = it < round(float(o.freeze_backbone or 0.0) * self.total)
                losses = self._step(images, boxes, labels)
                it += 1
                self._account(losses, it)
                self.budget.step_done()
                if self.budget.ready and self.length.fit_to_time and (not announced or it % _REFIT_EVERY == 0):
                    self._refit(it)
                if self.budget.ready and not announced:
                    announced = True
                    self._announce_duration(it)
                self.window.images += images.shape[0] * self.dist.world
                self.report.advance("train", 1, **{f"loss_{k}": v for k, v in self.window.means().items()},
                                    lr=self.schedule.lr(it - 1), images_per_s=self.images_per_s)
                if it % o.log_every == 0 or it == self.total:
                    self.images_per_s = self._log_row(it)["images_per_s"]
                due = it % self.eval_every == 0 or it >= self.total
                if due:
                    self._validate_and_save(it)
                signum, out_of_time = self._agree_on_stop(stops)
                if out_of_time and not due:
                    self._validate_and_save(it)
                if signum and it < self.total:  # (a request during the last step's save: the run is done)
                    self._save_last(it)
                    stopped, exit_code = "interrupted", exit_status(signum)
                    self.say(f"{signal_name(signum)}: stopped at iteration {it}/{self.total}, saved "
                             f"{self.run_dir / 'last.pth'}; continue with: ssd train --resume {self.run_dir}")
                    break
                if out_of_time:
                    stopped = "time-limit"
                    break
                if self.early_stopped:
                    self.say(f"early stop at iteration {it}: no better val {metric_label(o.val_metric)} in "
                             f"{o.patience} validations; best.pth ({self.best_map:.4f}) is kept")  # fmt: skip
                    break
                if o.stop_after is not None and it - self.start_iter >= o.stop_after and it < self.total:
                    self._save_last(it)
                    stopped = "interrupted"
                    break
                if o.save_every is not None and time.monotonic() - last_time_save >= o.save_every:
                    self._save_last(it)
                    last_time_save = time.monotonic()
        finally:
            _shut_down(batches)  # here, not at a garbage collection that an exception's traceback may delay
            self.report.end("train")
            self.log.close()
        if stopped == "time-limit":
            self.say(f"the {o.time_limit:g} s time limit ended the run at iteration {it} of {self.total}")
        elif stopped == "finished" and o.time_limit is not None and not self.length.fit_to_time:
            self.say(f"all {self.total} iterations done within the {o.time_limit:g} s time limit")
        history = self.log.rows() if self.dist.is_main else []
        if self.dist.is_main and stopped != "interrupted":
            plot_curves(history, self.run_dir)
        if self.unreadable:
            self.say(f"{len(self.unreadable)} training images were unreadable and replaced in {self.replaced_samples} "
                     f"samples (e.g. {self.unreadable[0]}); see 'replaced_samples' in metrics.jsonl")
        return TrainResult(self.run_dir, it, self.total, self.best_map, self.last_map, stopped, self.bad_steps, history,
                           exit_code=exit_code, unreadable=list(self.unreadable), val_metric=o.val_metric)

    def _next_batch(self, batches, it: int) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The next batch; a data error saves the run (at this step boundary) first, then stops with one line."""
        try:
            images, boxes, labels, unreadable = next(batches)
        except StopIteration:
            raise SsdError(f"the training data ended early at iteration {it}") from None
        except Exception as e:  # noqa: BLE001 - anything from data loading: save first, then one line
            self._save_last(it)
            raise SsdError(f"reading training data at iteration {it} failed: {_data_error_line(e)}; the run was saved: "
                           f"fix the data, then ssd train --resume {self.run_dir}") from None
        for paths in unreadable:  # one entry per replaced sample
            self.replaced_samples += 1
            self.unreadable.extend(p for p in paths if p not in self.unreadable)
        return images, boxes, labels

    def _account(self, losses: dict[str, float] | None, it: int) -> None:
        if losses is not None:
            self.consecutive_bad = 0
            self.window.add(losses)
            return
        self.consecutive_bad += 1
        self.bad_steps += 1
        if self.consecutive_bad >= self.o.max_bad_steps:
            raise NonFiniteLoss(
                f"{self.consecutive_bad} non-finite losses in a row at iteration {it - 1}: the lr "
                f"({self.schedule.lr(it - 1):g}) may be too high for batch {self.o.batch}, or the data has degenerate "
                f"boxes; the last good checkpoint {self.run_dir / 'last.pth'} is kept"
            )

    def _log_row(self, it: int) -> dict:
        w = self.window
        dt = time.monotonic() - w.started
        row = {"type": "train", "iter": it, "epoch": (it - 1) // self.iters_per_epoch, "lr": self.schedule.lr(it - 1)}
        row.update({f"loss_{k}": v for k, v in w.means().items()})
        if self.replaced_samples:
            row["replaced_samples"] = self.replaced_samples
        row.update({"images_per_s": w.images / max(dt, 1e-9), "memory_mb": round(memory_mb(self.device), 1)})
        if self.dist.is_main:
            self.report.metrics(row)
        self.window = _LogWindow()
        return row

    def _agree_on_stop(self, stops: StopRequests) -> tuple[int, bool]:
        """``(signal number or 0, out of time)``, the same on every rank (one small all-reduce per step)."""
        out_of_time = self.budget.expired()
        signum, late = D.all_reduce_max([stops.signum or 0, int(out_of_time)], self.dist)
        return signum, bool(late)

    def _backbone_params(self, fraction: float | None) -> list[torch.nn.Parameter]:
        """The parameters ``--freeze-backbone`` holds still (none when it is 0)."""
        if not fraction:
            return []
        prefixes = self.model.backbone_parameter_prefixes()
        if not prefixes:
            raise SsdError(f"--freeze-backbone: {self.config.arch} names no backbone to freeze")
        self.say(f"backbone ({', '.join(prefixes)}) not updated during the first {fraction:g} of the run")
        return [p for name, p in self.model.named_parameters() if name.startswith(prefixes)]

    def _step(self, images: torch.Tensor, boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> dict[str, float] | None:
        dev = self.device
        x = self.config.preprocess.normalize(images.to(dev, non_blocking=True))
        if self.o.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = self.core.encode_targets([b.to(dev) for b in boxes], [l.to(dev) for l in labels])
        with torch.autocast(dev.type, dtype=torch.float16 if dev.type == "cuda" else torch.bfloat16, enabled=self.amp):
            outputs = self.forward_model(x)
        losses = self.core.compute_loss(tuple(t.float() for t in outputs), targets)
        total = losses["total"]
        finite = torch.isfinite(total.detach()).float()
        if self.dist.enabled:
            finite = D.all_reduce_mean(finite, self.dist)
        self.optimizer.zero_grad(set_to_none=True)
        if finite.item() < 1.0:
            return None
        self.scaler.scale(total).backward()
        if self.backbone_frozen:  # --freeze-backbone: no gradient, so no update (nor decay, momentum) this step
            for p in self.frozen_params:
                p.grad = None
        if self.o.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.o.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return {k: float(v.detach()) for k, v in losses.items()}

    def _refit(self, it: int) -> None:
        """Fit the schedule's length to the time left (see :mod:`ssdcli.engine.time_budget`)."""
        new_total = int(D.broadcast_object(self.budget.fit_total(it, self.total, self.eval_every), self.dist))
        if new_total == self.total:
            return
        self.total = new_total
        if not self._fitted:  # the warm-up and the validation rhythm are fixed by the first fit
            self._fitted = True
            if self.o.warmup_iters is None:
                self.o.warmup_iters = warmup_iters(self.recipe, new_total)
            if not self.o.eval_every:
                self.eval_every = max(1, new_total // 4)
            if self.dist.is_main:  # now with the warm-up the first fit resolved
                atomic_write_text(self.run_dir / "options.json", _json(asdict(self.o)))
        self.schedule = self._schedule(new_total)
        self.report.start("train", new_total, unit="it", done=it)

    def _precision(self) -> str:
        """How the steps compute: ``float32`` or ``bfloat16 autocast`` (``float16`` on CUDA), and the memory format."""
        kind = "float32" if not self.amp else ("float16" if self.device.type == "cuda" else "bfloat16") + " autocast"
        return kind + (", channels-last" if self.o.channels_last else "")

    def _announce_duration(self, it: int) -> None:
        sps = self.budget.seconds_per_step() or 0.0
        left = (self.total - it) * sps
        limit = "" if math.isinf(self.budget.limit_s) else f" (time limit {_duration(self.budget.limit_s)})"
        self.say(f"{sps:.2f} s per iteration: {self.total} iterations take about {_duration(left)} more{limit}")

    def _validate_and_save(self, it: int) -> None:
        started = time.monotonic()
        if self.validator is not None and self.dist.is_main:
            evaluated = self.ema.module if self.ema is not None else self.model
            evaluated.eval()
            try:
                value = self.validator(evaluated)
            except SsdError as e:
                evaluated.train()
                self._save_last(it)
                raise SsdError(f"validation at iteration {it} failed: {e}; the run was saved: fix the data, then "
                               f"ssd train --resume {self.run_dir}") from None
            evaluated.train()
            self.last_map = value
            self.report.metrics({"type": "val", "iter": it, "map": value, "metric": self.o.val_metric})
            improved = self.best_map is None or value > self.best_map
            if improved:
                self.best_map = value
            self.stale_validations = 0 if improved else self.stale_validations + 1
            self.early_stopped = bool(self.o.patience) and self.stale_validations >= self.o.patience  # type: ignore[operator]
            weights = " (EMA weights)" if self.ema is not None else ""
            self.say(f"iteration {it}: val {metric_label(self.o.val_metric)}{weights} {value:.4f} "
                     f"(best {self.best_map:.4f})")  # fmt: skip
            self._save_last(it)
            if improved:
                self._save("best.pth", it)
        else:
            self._save_last(it)
        D.barrier(self.dist)
        self.early_stopped = bool(D.broadcast_object(self.early_stopped, self.dist))
        self.budget.overhead(time.monotonic() - started)

    def _save_last(self, it: int) -> None:
        """``last.pth`` at step boundary ``it`` (once per iteration)."""
        if self.saved_at != it:
            self._save("last.pth", it)
            self.saved_at = it

    def _save(self, name: str, it: int) -> None:
        if not self.dist.is_main:
            return
        meta = {"iteration": it, "val_map": self.last_map, "val_metric": self.o.val_metric, "dataset": self.o.data}
        if self.o.class_transfer:
            meta["class_transfer"] = self.o.class_transfer
        weights = self.ema.module if self.ema is not None else self.model  # EMA: the raw weights are in the state
        save_checkpoint(self.run_dir / name, weights, train_state=self._training_state(it), meta=meta)


_OPEN_END = 2**62  # sampler end for a length fitted to the time (the loop stops at the fitted total)
_REFIT_EVERY = 25  # iterations between two fits of the length to the time left


def relative_boxes(records: list) -> torch.Tensor:
    """All non-difficult boxes of ``records`` as ``[M,4]`` xyxy relative to their image (what the priors see)."""
    chunks = [pixel_to_relative(torch.from_numpy(r.boxes[~r.difficult]).float(), r.width, r.height)
              for r in records if len(r.boxes)]  # fmt: skip
    return torch.cat(chunks) if chunks else torch.zeros((0, 4))


def _coverage_text(c: PriorCoverage) -> str:
    return (f"mean best-prior IoU {c.mean_best_iou:.3f} over {c.boxes} training boxes, "
            f"{100 * c.below_threshold:.1f}% below the {c.threshold:g} matching threshold, "
            f"{c.mean_positives:.1f} positive priors per box")  # fmt: skip


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def train_transform(model: DetectorModel, zoom_out: float | None, kind: str = "fast") -> Callable:
    """The training augmentation: the model's own (``"fast"``) or, for SSD models, the plain
    ``torchvision.transforms.v2`` composition it reproduces (``"reference"``, slower; for comparisons)."""
    if kind == "fast":
        return model.train_augment(zoom_out)
    return model.reference_augment(zoom_out)


def _data_worker_init(_worker_id: int) -> None:
    """Data workers decode and augment one image at a time (extra intra-op threads only oversubscribe the CPU)
    and leave SIGINT/SIGTERM to the main process, which stops the run at a step boundary."""
    torch.set_num_threads(1)
    ignore_stop_signals()


def _shut_down(batches: object) -> None:
    """Stop a DataLoader iterator's worker processes now (they exit on the loader's own end-of-work message)."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # multi-process iterators only
    if shutdown is not None:
        shutdown()


def _data_error_line(e: BaseException) -> str:
    """One line for an error raised in a DataLoader worker (whose message carries the worker's whole traceback)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    last = lines[-1]
    if "Original Traceback" in str(e):
        name, sep, rest = last.partition(": ")
        return rest if sep and " " not in name else last
    return last


def _json(d: dict) -> str:
    import json

    return json.dumps(d, indent=2, default=str) + "\n"
