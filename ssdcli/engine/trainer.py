"""The training loop behind ``ssd train``: resumable bit for bit on CPU, AMP, DDP, NaN guard, time limit."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ssdcli.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ssdcli.data.dataset import DetectionDataset, collate_detections
from ssdcli.data.records import load_prepared
from ssdcli.device import resolve_device
from ssdcli.engine import distributed as D
from ssdcli.engine.model_init import init_model
from ssdcli.engine.optim import build_optimizer, set_lr
from ssdcli.engine.rng import capture_rng_state, restore_rng_state, seed_everything
from ssdcli.engine.runs import new_run_dir
from ssdcli.engine.sampler import ResumableBatchSampler, epoch_permutation
from ssdcli.engine.schedule import LRSchedule
from ssdcli.engine.train_log import MetricsLog, memory_mb, plot_curves
from ssdcli.engine.validation import Validator
from ssdcli.errors import SsdError
from ssdcli.io_utils import atomic_write_text
from ssdcli.models.base import DetectorModel


@dataclass
class TrainOptions:
    data: str = ""
    arch: str = "ssd300"
    iters: int | None = None
    epochs: float | None = None
    batch: int = 32
    lr: float | None = None  # default 1e-3 x (global batch / 32)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    schedule: str = "step"  # step (x0.1 at 2/3 and 5/6 of the run, = 80k/100k of 120k) | cosine
    warmup_iters: int | None = None  # default min(500, 5% of the run)
    img_size: int | None = None
    workers: int | None = None  # default: 1 on CPU (the model needs the cores), min(8, CPUs) on CUDA
    seed: int = 0
    amp: bool | None = None  # default: on for CUDA
    channels_last: bool = False
    zoom_out: float | None = None  # SSD zoom-out limit (None: the paper's 4; <= 1: off)
    augment: str = "fast"  # "fast": the model's own pipeline; "reference": the plain torchvision v2 one (SSD only)
    compile: bool = False
    grad_clip: float | None = None
    eval_every: int | None = None  # default: 4 validations per run
    val_size: int | None = None
    val_split: str = "test"
    val_metric: str = "voc07"
    weights: str | None = None
    backbone_weights: str | None = None
    pretrained_backbone: bool = False
    project: str = "runs/train"
    name: str = "exp"
    time_limit: float | None = None  # seconds
    log_every: int = 20
    device: str = "auto"
    max_bad_steps: int = 5
    stop_after: int | None = None  # end this process after N iterations, as if interrupted (tests, preemption drills)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainOptions":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


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


class NonFiniteLoss(SsdError):
    pass


Reporter = Callable[[str], None]


def train(options: TrainOptions, resume: str | None = None, report: Reporter = print, progress_factory=None) -> TrainResult:
    """Run (or resume) a training; see :class:`TrainOptions`. ``report`` receives one-line status messages."""
    ckpt = load_checkpoint(resume) if resume else None
    if ckpt is not None:
        if not ckpt.train_state:
            raise SsdError(f"{resume}: checkpoint holds no training state (it is a weights-only checkpoint; use --weights)")
        options = TrainOptions.from_dict(ckpt.train_state["options"])
    if options.iters is not None and options.iters <= 0:
        raise SsdError(f"--iters must be positive (got {options.iters})")
    if options.zoom_out is not None and not (math.isfinite(options.zoom_out) and 0 < options.zoom_out <= 16):
        raise SsdError(f"--zoom-out {options.zoom_out}: expected a ratio in (0, 16] (1 turns zoom-out off)")
    if options.augment not in AUGMENT_KINDS:
        raise SsdError(f"--augment {options.augment}: expected one of {', '.join(AUGMENT_KINDS)}")
    device = resolve_device(options.device)
    dist = D.init_distributed(device)
    device = D.local_device(device, dist)
    say = report if dist.is_main else (lambda _m: None)
    try:
        return _Run(options, ckpt, resume, device, dist, say, progress_factory).run()
    finally:
        D.cleanup(dist)


class _Run:
    def __init__(self, options, ckpt, resume, device, dist, say, progress_factory) -> None:
        self.o: TrainOptions = options
        self.device: torch.device = device
        self.dist: D.DistInfo = dist
        self.say: Reporter = say
        self.progress_factory = progress_factory
        seed_everything(options.seed)
        data = load_prepared(options.data)
        self.classes = data.classes
        train_records = data.split("train")
        if not train_records:
            raise SsdError(f"{options.data}: the train split is empty")
        self.val_records = data.splits.get(options.val_split, [])
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
            self.model = init_model(
                options.arch, self.classes, options.img_size, options.weights, options.backbone_weights,
                options.pretrained_backbone, self.say,
            )
            state = None
            self.start_iter = 0
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
        if options.iters is None:
            epochs = options.epochs if options.epochs is not None else 1.0
            options.iters = max(1, math.ceil(epochs * self.iters_per_epoch))
        self.total = int(options.iters)
        base_lr = options.lr if options.lr is not None else 1e-3 * world_batch / 32
        warmup = options.warmup_iters if options.warmup_iters is not None else min(500, self.total // 20)
        self.schedule = LRSchedule(base_lr=base_lr, total_iters=self.total, warmup_iters=warmup, kind=options.schedule)
        self.optimizer = build_optimizer(self.model, base_lr, options.momentum, options.weight_decay, options.optimizer)
        self.amp = options.amp if options.amp is not None else device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp and device.type == "cuda")
        self.best_map: float | None = None
        self.last_map: float | None = None
        self.bad_steps = 0
        if ckpt is None:  # after every check on the options and data: a refused run leaves no folder behind
            self.run_dir = self._make_run_dir()
        self.log = MetricsLog(self.run_dir / "metrics.jsonl")
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.best_map = state.get("best_map")
            self.last_map = state.get("last_map")
            self.bad_steps = int(state.get("bad_steps", 0))
            restore_rng_state(state["rng"])
            if dist.is_main:
                self.log.truncate_after(self.start_iter)
            self.say(f"resumed {resume} at iteration {self.start_iter}/{self.total}")
        if options.workers is None:
            options.workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 1
        dataset = DetectionDataset(train_records, transform, seed=options.seed)
        sampler = ResumableBatchSampler(n, options.batch, options.seed, self.start_iter, self.total, dist.rank, dist.world)
        self.loader = DataLoader(
            dataset, batch_sampler=sampler, num_workers=options.workers, collate_fn=collate_detections,
            pin_memory=device.type == "cuda", persistent_workers=False, worker_init_fn=_single_thread_worker,
        )
        self.core = self.model
        self.forward_model: torch.nn.Module = self.model
        if dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.forward_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if options.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.eval_every = options.eval_every or max(1, self.total // 4)
        self.validator = Validator(self.val_records, self.classes, options.val_metric, device, options.workers) if self.val_records else None

    def _make_run_dir(self) -> Path:
        run_dir = new_run_dir(self.o.project, self.o.name) if self.dist.is_main else None
        return Path(D.broadcast_object(str(run_dir) if run_dir else None, self.dist))  # type: ignore[arg-type]

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        o = self.o
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "options.json", _json(asdict(o)))
            self.say(
                f"training {self.config.arch} ({self.config.image_size}px, {len(self.classes)} classes) on {self.device}"
                f" for {self.total} iterations ({self.iters_per_epoch} per epoch), batch {o.batch}x{self.dist.world},"
                f" lr {self.schedule.base_lr:g}, amp {'on' if self.amp else 'off'}; run folder {self.run_dir}"
            )
        started = time.monotonic()
        it = self.start_iter
        stopped = "finished"
        consecutive_bad = 0
        window_t, window_imgs, sums, count = time.monotonic(), 0, {}, 0
        self.model.train()
        progress = self.progress_factory(self.total, self.start_iter) if (self.progress_factory and self.dist.is_main) else None
        try:
            for images, boxes, labels in self.loader:
                set_lr(self.optimizer, self.schedule.lr(it))
                losses = self._step(images, boxes, labels)
                if losses is None:
                    consecutive_bad += 1
                    self.bad_steps += 1
                    if consecutive_bad >= o.max_bad_steps:
                        raise NonFiniteLoss(
                            f"{consecutive_bad} non-finite losses in a row at iteration {it}: the lr "
                            f"({self.schedule.lr(it):g}) may be too high for batch {o.batch}, or the data has degenerate "
                            f"boxes; the last good checkpoint {self.run_dir / 'last.pth'} is kept"
                        )
                else:
                    consecutive_bad = 0
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                it += 1
                window_imgs += images.shape[0] * self.dist.world
                if progress is not None:
                    progress.update(it, {k: v / max(count, 1) for k, v in sums.items()}, self.schedule.lr(it - 1))
                if it % o.log_every == 0 or it == self.total:
                    dt = time.monotonic() - window_t
                    row = {"type": "train", "iter": it, "epoch": (it - 1) // self.iters_per_epoch, "lr": self.schedule.lr(it - 1)}
                    row.update({f"loss_{k}": v / max(count, 1) for k, v in sums.items()})
                    row.update({"images_per_s": window_imgs / max(dt, 1e-9), "memory_mb": round(memory_mb(self.device), 1)})
                    if self.dist.is_main:
                        self.log.write(row)
                    if progress is not None:
                        progress.images_per_s = row["images_per_s"]
                    window_t, window_imgs, sums, count = time.monotonic(), 0, {}, 0
                out_of_time = o.time_limit is not None and time.monotonic() - started >= o.time_limit
                if out_of_time:
                    stopped = "time-limit"
                if it % self.eval_every == 0 or it == self.total or out_of_time:
                    self._validate_and_save(it)
                if out_of_time:
                    break
                if o.stop_after is not None and it - self.start_iter >= o.stop_after and it < self.total:
                    self._save("last.pth", it)
                    stopped = "interrupted"
                    break
        except KeyboardInterrupt:
            self._save("last.pth", it)
            self.say(f"interrupted at iteration {it}: saved {self.run_dir / 'last.pth'}; continue with --resume")
            stopped = "interrupted"
        finally:
            if progress is not None:
                progress.close()
        history = self.log.rows() if self.dist.is_main else []
        if self.dist.is_main and stopped != "interrupted":
            plot_curves(history, self.run_dir)
        return TrainResult(self.run_dir, it, self.total, self.best_map, self.last_map, stopped, self.bad_steps, history)

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
        if self.o.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.o.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {k: float(v.detach()) for k, v in losses.items()}

    def _validate_and_save(self, it: int) -> None:
        if self.validator is not None and self.dist.is_main:
            self.model.eval()
            value = self.validator(self.model)
            self.model.train()
            self.last_map = value
            self.log.write({"type": "val", "iter": it, "map": value, "metric": self.o.val_metric})
            improved = self.best_map is None or value > self.best_map
            if improved:
                self.best_map = value
            self.say(f"iteration {it}: val mAP@0.5 ({self.o.val_metric}) {value:.4f} (best {self.best_map:.4f})")
            self._save("last.pth", it)
            if improved:
                self._save("best.pth", it)
        else:
            self._save("last.pth", it)
        D.barrier(self.dist)

    def _save(self, name: str, it: int) -> None:
        if not self.dist.is_main:
            return
        state = {
            "iteration": it,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "options": asdict(self.o),
            "best_map": self.best_map,
            "last_map": self.last_map,
            "bad_steps": self.bad_steps,
            "rng": capture_rng_state(),
        }
        meta = {"iteration": it, "val_map": self.last_map, "val_metric": self.o.val_metric, "dataset": self.o.data}
        save_checkpoint(self.run_dir / name, self.model, train_state=state, meta=meta)


AUGMENT_KINDS: tuple[str, ...] = ("fast", "reference")


def train_transform(model: DetectorModel, zoom_out: float | None, kind: str = "fast") -> Callable:
    """The training augmentation: the model's own (``"fast"``) or, for SSD models, the plain
    ``torchvision.transforms.v2`` composition it reproduces (``"reference"``, slower; for comparisons)."""
    if kind == "fast":
        return model.train_augment(zoom_out)
    if type(model).train_augment is not DetectorModel.train_augment:
        raise SsdError(f"--augment {kind}: {model.config.arch} brings its own augmentation; the torchvision v2 "
                       "reference exists for the SSD pipeline only")
    from ssdcli.data.reference_aug import ReferenceAugment

    return ReferenceAugment(model.config.image_size, model.config.preprocess, max_zoom_out=zoom_out)


def _single_thread_worker(_worker_id: int) -> None:
    """Data workers decode and augment one image at a time: extra intra-op threads only oversubscribe the CPU."""
    torch.set_num_threads(1)


def _json(d: dict) -> str:
    import json

    return json.dumps(d, indent=2, default=str) + "\n"
