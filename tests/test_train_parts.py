"""Unit tests of the trainer's building blocks: schedule, sampler, parameter groups, RNG capture, run folders."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from ssdcli.engine.optim import build_optimizer, parameter_groups, set_lr
from ssdcli.engine.rng import capture_rng_state, restore_rng_state
from ssdcli.engine.runs import new_run_dir
from ssdcli.engine.sampler import ResumableBatchSampler
from ssdcli.engine.schedule import LRSchedule
from ssdcli.models import build_model
from ssdcli.models.ssd.vgg import L2Norm


def test_step_schedule_matches_paper_recipe():
    s = LRSchedule(base_lr=1e-3, total_iters=120_000, warmup_iters=0)
    assert s.lr(0) == pytest.approx(1e-3)
    assert s.lr(79_999) == pytest.approx(1e-3)
    assert s.lr(80_000) == pytest.approx(1e-4)
    assert s.lr(99_999) == pytest.approx(1e-4)
    assert s.lr(100_000) == pytest.approx(1e-5)
    # steps scale with the run length
    short = LRSchedule(base_lr=1e-3, total_iters=1200, warmup_iters=0)
    assert short.lr(799) == pytest.approx(1e-3) and short.lr(800) == pytest.approx(1e-4)


def test_warmup_is_linear_and_cosine_decays_to_floor():
    s = LRSchedule(base_lr=1.0, total_iters=100, warmup_iters=10, warmup_factor=0.1)
    assert s.lr(0) == pytest.approx(0.1)
    assert s.lr(5) == pytest.approx(0.55)
    assert s.lr(10) == pytest.approx(1.0)
    c = LRSchedule(base_lr=1.0, total_iters=110, warmup_iters=10, kind="cosine", min_factor=0.01)
    assert c.lr(10) == pytest.approx(1.0)
    assert c.lr(60) == pytest.approx(0.505)
    assert c.lr(110) == pytest.approx(0.01)
    lrs = [c.lr(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_sampler_resumes_exactly_and_shards_ranks():
    full = list(ResumableBatchSampler(50, 4, seed=3, start_iter=0, total_iters=30))
    tail = list(ResumableBatchSampler(50, 4, seed=3, start_iter=17, total_iters=30))
    assert tail == full[17:]
    # one epoch = 12 batches of distinct indices, next epoch reshuffled
    epoch0 = [i for b in full[:12] for (e, i) in b]
    assert len(set(epoch0)) == 48 and all(e == 0 for b in full[:12] for (e, _) in b)
    assert [i for (_, i) in full[12]] != [i for (_, i) in full[0]]
    r0 = list(ResumableBatchSampler(50, 4, 3, 0, 6, rank=0, world=2))
    r1 = list(ResumableBatchSampler(50, 4, 3, 0, 6, rank=1, world=2))
    for a, b in zip(r0, r1):
        assert not set(a) & set(b)


def test_parameter_groups_follow_caffe_recipe():
    model = build_model("ssd300-bn", 3)
    groups = parameter_groups(model, weight_decay=5e-4)
    ids = {id(p): g for g in groups for p in g["params"]}
    assert len(ids) == sum(1 for p in model.parameters())
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            g = ids[id(p)]
            if isinstance(m, (torch.nn.BatchNorm2d, L2Norm)):
                assert g["weight_decay"] == 0 and g["lr_factor"] == 1
            elif name == "bias":
                assert g["weight_decay"] == 0 and g["lr_factor"] == 2
            else:
                assert g["weight_decay"] == 5e-4 and g["lr_factor"] == 1
    opt = build_optimizer(model, 1e-3)
    set_lr(opt, 0.5)
    assert sorted({g["lr"] for g in opt.param_groups}) == [0.5, 1.0]


def test_rng_state_round_trips_through_weights_only_load():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = capture_rng_state()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    restore_rng_state(loaded)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_run_dirs_auto_increment(tmp_path):
    a = new_run_dir(tmp_path, "exp")
    (a / "last.pth").write_text("keep")
    b = new_run_dir(tmp_path, "exp")
    c = new_run_dir(tmp_path, "exp")
    assert [a.name, b.name, c.name] == ["exp", "exp2", "exp3"]
    assert (a / "last.pth").read_text() == "keep"


def test_zoom_out_option_reaches_the_ssd_augmentation():
    from ssdcli.errors import SsdError

    model = build_model("ssd-mini", 3)
    paper = model.train_augment()
    assert paper.zoom_out_p == 0.5 and paper.max_zoom_out == 4.0
    off = model.train_augment(1.0)
    assert off.zoom_out_p == 0.0
    two = model.train_augment(2.0)
    assert two.zoom_out_p == 0.5 and two.max_zoom_out == 2.0
    # with zoom-out off the canvas never grows: every plan keeps the source image
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[10.0, 10.0, 50.0, 40.0]])
    assert all(off.sample(80, 60, boxes, g).geometry.padding is None for _ in range(50))
    assert any(paper.sample(80, 60, boxes, g).geometry.padding is not None for _ in range(50))
    with pytest.raises(SsdError, match="zoom-out"):
        build_model("centernet-res18", 3, image_size=96).train_augment(2.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), 100.0])
def test_train_rejects_bad_zoom_out(tmp_path, bad):
    from ssdcli.engine.trainer import TrainOptions, train
    from ssdcli.errors import SsdError

    with pytest.raises(SsdError, match="--zoom-out"):
        train(TrainOptions(data=str(tmp_path), arch="ssd-mini", iters=1, zoom_out=bad, device="cpu"), report=lambda m: None)


def test_augment_option_picks_the_fast_path_or_the_v2_reference():
    from ssdcli.data.reference_aug import ReferenceAugment
    from ssdcli.data.transforms import SSDTrainAugment
    from ssdcli.engine.trainer import train_transform
    from ssdcli.errors import SsdError

    model = build_model("ssd-mini", 3)
    assert isinstance(train_transform(model, None, "fast"), SSDTrainAugment)
    ref = train_transform(model, None, "reference")
    assert isinstance(ref, ReferenceAugment) and ref.size == model.config.image_size
    zooms = [t for t in ref.transform.transforms if type(t).__name__ == "RandomZoomOut"]
    assert len(zooms) == 1 and tuple(zooms[0].side_range) == (1.0, 4.0)
    off = train_transform(model, 1.0, "reference")  # --zoom-out 1 means the same in both pipelines
    assert not [t for t in off.transform.transforms if type(t).__name__ == "RandomZoomOut"]
    image = torch.full((3, 60, 80), 100, dtype=torch.uint8)
    out, boxes, labels = ref(image, torch.tensor([[10.0, 10.0, 50.0, 40.0]]), torch.tensor([1]),
                             torch.Generator().manual_seed(0))
    assert out.shape == (3, 128, 128) and out.dtype == torch.uint8 and boxes.shape[1] == 4
    with pytest.raises(SsdError, match="its own augmentation"):
        train_transform(build_model("centernet-res18", 3, image_size=96), None, "reference")


def test_train_rejects_unknown_augment_without_creating_a_run_folder(tmp_path):
    from ssdcli.engine.trainer import TrainOptions, train
    from ssdcli.errors import SsdError

    with pytest.raises(SsdError, match="--augment"):
        train(TrainOptions(data=str(tmp_path), arch="ssd-mini", iters=1, augment="slow", device="cpu",
                           project=str(tmp_path / "runs")), report=lambda m: None)
    assert not (tmp_path / "runs").exists()
