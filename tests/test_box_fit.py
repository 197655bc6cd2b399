"""Boxes that fit (issue 23): the prior-coverage report, re-fitted priors carried by the checkpoint into detect and
ONNX export, and the IoU-aware box losses (torchvision's GIoU/DIoU/CIoU) beside the paper's smooth L1."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

from ssdcli import Detector, load_checkpoint
from ssdcli.boxes import cxcywh_to_xyxy, decode, encode
from ssdcli.deploy.onnx_export import export_onnx
from ssdcli.engine.trainer import TrainOptions, train
from ssdcli.loss import hard_negative_mask, multibox_loss
from ssdcli.matching import assign_targets
from ssdcli.models import build_model
from ssdcli.models.ssd.priors import SSD300_VOC, mini_prior_spec
from ssdcli.prior_fit import coverage, refit
from ssdcli.priors import PriorSpec, generate_priors
from tests.cli_helpers import one_line_error, ssd

pytestmark = pytest.mark.usefixtures("one_thread")

_IOU = {"giou": generalized_box_iou_loss, "diou": distance_box_iou_loss, "ciou": complete_box_iou_loss}


def _random_problem(seed: int, n: int = 2, p: int = 60, c: int = 4):
    g = torch.Generator().manual_seed(seed)
    priors = torch.cat((torch.rand(p, 2, generator=g), 0.05 + 0.5 * torch.rand(p, 2, generator=g)), dim=1)
    gt = cxcywh_to_xyxy(torch.cat((torch.rand(n, p, 2, generator=g), 0.05 + 0.4 * torch.rand(n, p, 2, generator=g)), 2))
    loc_t = encode(gt, priors)
    locs = loc_t + 0.3 * torch.randn(n, p, 4, generator=g)
    cls_t = torch.randint(0, c, (n, p), generator=g) * (torch.rand(n, p, generator=g) < 0.3)
    logits = torch.randn(n, p, c, generator=g)
    return locs, logits, loc_t, cls_t, priors


def test_paper_loss_is_unchanged_by_default():
    """Default arguments: exactly the paper's loss, written out independently here."""
    locs, logits, loc_t, cls_t, _ = _random_problem(0)
    loc, cls = multibox_loss(locs, logits, loc_t, cls_t)
    pos = cls_t > 0
    n_pos = pos.sum().float()
    ce = F.cross_entropy(logits.reshape(-1, 4), cls_t.reshape(-1), reduction="none").reshape(cls_t.shape)
    neg = hard_negative_mask(ce, pos, 3.0)
    assert torch.equal(loc, F.smooth_l1_loss(locs[pos], loc_t[pos], reduction="sum") / n_pos)
    assert torch.equal(cls, ce[pos | neg].sum() / n_pos)
    assert torch.equal(multibox_loss(locs, logits, loc_t, cls_t, box_loss="smooth_l1")[0], loc)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(sorted(_IOU)), weight=st.floats(0.1, 5.0))
def test_iou_terms_are_torchvisions_losses(seed, kind, weight):
    locs, logits, loc_t, cls_t, priors = _random_problem(seed)
    plain, cls = multibox_loss(locs, logits, loc_t, cls_t)
    with_iou, cls2 = multibox_loss(locs, logits, loc_t, cls_t, box_loss=kind, priors=priors, box_loss_weight=weight)
    pos = cls_t > 0
    p = priors.expand(2, -1, -1)[pos]
    expected = _IOU[kind](decode(locs[pos], p), decode(loc_t[pos], p), reduction="sum") / pos.sum()
    assert torch.equal(cls, cls2)
    assert torch.allclose(with_iou - plain, weight * expected, rtol=1e-5, atol=1e-6)


def test_iou_loss_without_positives_is_zero_and_finite():
    locs, logits, loc_t, cls_t, priors = _random_problem(1)
    loc, cls = multibox_loss(locs, logits, loc_t, torch.zeros_like(cls_t), box_loss="ciou", priors=priors)
    assert loc.item() == 0.0 and torch.isfinite(cls)


def test_coverage_counts_boxes_below_the_threshold():
    spec = PriorSpec(image_size=100, feature_maps=(2,), min_sizes=(50,), max_sizes=(50,), aspect_ratios=((),))
    priors = cxcywh_to_xyxy(generate_priors(spec))
    exact = priors[:1]  # a box equal to a prior: IoU 1
    tiny = torch.tensor([[0.0, 0.0, 0.05, 0.05]])  # far below any prior
    c = coverage(spec, torch.cat((exact, tiny)))
    assert c.boxes == 2 and c.below_threshold == pytest.approx(0.5)
    assert c.mean_best_iou == pytest.approx((1.0 + 0.01) / 2, abs=1e-6)
    assert c.per_map[0].boxes_best_here == 2


def test_refit_keeps_the_layout_and_fits_better():
    g = torch.Generator().manual_seed(0)
    wh = 0.1 + 0.1 * torch.rand(200, 2, generator=g) * torch.tensor([3.0, 1.0])  # wide, small boxes
    c = torch.rand(200, 2, generator=g) * 0.6 + 0.2
    boxes = cxcywh_to_xyxy(torch.cat((c, wh), 1))
    spec = mini_prior_spec(128)
    fitted = refit(spec, boxes, generations=150)
    assert fitted.feature_maps == spec.feature_maps and fitted.priors_per_location() == spec.priors_per_location()
    assert coverage(fitted, boxes).fitness() > coverage(spec, boxes).fitness()
    assert refit(spec, boxes, generations=150) == fitted  # seeded: deterministic


def test_matching_with_a_refitted_spec_equals_the_generic_matcher():
    g = torch.Generator().manual_seed(3)
    spec = dataclasses.replace(SSD300_VOC, min_sizes=(41.0, 30.0, 150.0, 99.0, 280.0, 200.0),
                               max_sizes=(60.0, 130.0, 160.0, 260.0, 290.0, 330.0),
                               aspect_ratios=((1.7,), (2.5, 1.3), (3.1, 2.0), (2.0, 4.0), (1.2,), (2.2,)))
    priors = generate_priors(spec)
    boxes = [cxcywh_to_xyxy(torch.cat((torch.rand(k, 2, generator=g), 0.05 + 0.6 * torch.rand(k, 2, generator=g)), 1))
             .clamp(0, 1) for k in (1, 5, 9)]
    labels = [torch.randint(1, 5, (len(b),), generator=g) for b in boxes]
    a = assign_targets(boxes, labels, priors, 0.5, spec.variances, prior_spec=spec)
    b = assign_targets(boxes, labels, priors, 0.5, spec.variances)
    assert torch.equal(a[1], b[1]) and torch.allclose(a[0], b[0])


def _train(data, project, **kw):
    options = TrainOptions(data=str(data), arch="ssd-mini", iters=2, batch=4, workers=0, seed=0, val_split="none",
                           project=str(project), name="fit", device="cpu", log_every=1, **kw)
    messages: list[str] = []
    result = train(options, report=messages.append)
    return result, messages


@pytest.fixture(scope="module")
def sample_data(prepared_sample):
    return prepared_sample(8, 2, image_size=(96, 128), seed=2)


def test_refitted_priors_travel_with_the_checkpoint_into_detect_and_onnx(sample_data, tmp_path):
    result, messages = _train(sample_data, tmp_path, fit_priors=True, box_loss="giou")
    assert any(m.startswith("prior fit: mean best-prior IoU") for m in messages)
    assert any(m.startswith("priors re-fitted to the training boxes") for m in messages)
    ckpt = load_checkpoint(result.run_dir / "last.pth")
    spec = PriorSpec.from_dict(ckpt.config.extra["prior_spec"])
    assert spec != mini_prior_spec(128)  # the re-fit changed something, and it is what the checkpoint carries
    model = build_model("ssd-mini", 2)
    assert not torch.equal(model.priors, generate_priors(spec))
    detector = Detector.from_checkpoint(result.run_dir / "last.pth", device="cpu")
    assert torch.equal(detector.backend.model.priors, generate_priors(spec))
    report = export_onnx(result.run_dir / "last.pth", tmp_path / "m.onnx", nms=False)
    saved = np.load(tmp_path / "m.priors.npy")
    assert np.array_equal(saved, generate_priors(spec).numpy()) and report is not None


def test_options_off_train_exactly_as_before(sample_data, tmp_path):
    """--no-fit-priors and the default --box-loss: the paper's priors and loss (same weights as an explicit run)."""
    a, messages = _train(sample_data, tmp_path / "a", fit_priors=False)
    b, _ = _train(sample_data, tmp_path / "b", box_loss="smooth_l1", fit_priors=False, box_loss_weight=1.0)
    sa, sb = (load_checkpoint(r.run_dir / "last.pth").model_state for r in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(m.startswith("prior fit:") for m in messages) and not any("re-fitted" in m for m in messages)
    spec = PriorSpec.from_dict(load_checkpoint(a.run_dir / "last.pth").config.extra["prior_spec"])
    assert spec == mini_prior_spec(128)


def test_recipe_default_refits_ssd_mini_and_the_choice_is_recorded(sample_data, tmp_path):
    """ssd-mini's recipe re-fits its priors (measured on the quickstart data); the origin is printed and stored."""
    result, messages = _train(sample_data, tmp_path)
    assert any(m.startswith("priors re-fitted") for m in messages)
    options = load_checkpoint(result.run_dir / "last.pth").train_state["options"]
    assert options["fit_priors"] is True
    assert "fit_priors" in options["recipe"]["origins"] and "measured" in options["recipe"]["origins"]["fit_priors"]


@pytest.mark.parametrize("flag", [["--fit-priors"], ["--box-loss", "giou"]])
def test_families_without_priors_refuse_the_options(sample_data, tmp_path, flag):
    r = ssd("train", "--data", sample_data, "--arch", "centernet-res18", "--img-size", "64", "--iters", "1",
            "--batch", "2", "--workers", "0", "--device", "cpu", "--project", tmp_path, "--val-split", "none", *flag)
    assert r.exit_code == 2
    assert flag[0] in one_line_error(r)
    assert not any(tmp_path.iterdir())  # refused before any run folder is made
