"""MultiBox loss (ssdcli.loss) against a direct per-image reference, plus an overfit-one-batch run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssdcli.loss import hard_negative_mask, multibox_loss
from ssdcli.matching import assign_targets
from ssdcli.models import build_model


pytestmark = pytest.mark.usefixtures("one_thread")



def reference_loss(locs, logits, loc_t, cls_t, neg_pos_ratio: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: smooth L1 over positives; CE over positives + the top ``3 * num_pos`` negatives by CE
    (explicit sort); both summed over the batch and divided by the total number of positives."""
    loc_sum = torch.zeros((), dtype=torch.float64)
    cls_sum = torch.zeros((), dtype=torch.float64)
    total_pos = 0
    for i in range(locs.shape[0]):
        pos = cls_t[i] > 0
        num_pos = int(pos.sum())
        total_pos += num_pos
        loc_sum = loc_sum + F.smooth_l1_loss(locs[i][pos].double(), loc_t[i][pos].double(), reduction="sum")
        ce = F.cross_entropy(logits[i].double(), cls_t[i], reduction="none")
        neg_ce = ce[~pos]
        num_neg = min(neg_pos_ratio * num_pos, int(neg_ce.shape[0]))
        hardest = torch.sort(neg_ce, descending=True).values[:num_neg]
        cls_sum = cls_sum + ce[pos].sum() + hardest.sum()
    denom = max(total_pos, 1)
    return loc_sum / denom, cls_sum / denom


def random_problem(seed: int, n: int = 3, p: int = 500, c: int = 6, pos_frac: float = 0.03):
    gen = torch.Generator().manual_seed(seed)
    locs = torch.randn(n, p, 4, generator=gen)
    logits = torch.randn(n, p, c, generator=gen) * 2
    loc_t = torch.randn(n, p, 4, generator=gen)
    cls_t = torch.randint(1, c, (n, p), generator=gen)
    cls_t[torch.rand(n, p, generator=gen) > pos_frac] = 0
    return locs, logits, loc_t, cls_t


@pytest.mark.parametrize("seed", range(5))
def test_matches_reference(seed: int) -> None:
    locs, logits, loc_t, cls_t = random_problem(seed)
    cls_t[0] = 0  # one image without positives: contributes no negatives either
    loc_l, cls_l = multibox_loss(locs, logits, loc_t, cls_t)
    ref_loc, ref_cls = reference_loss(locs, logits, loc_t, cls_t)
    torch.testing.assert_close(loc_l.double(), ref_loc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cls_l.double(), ref_cls, rtol=1e-5, atol=1e-6)


def test_many_positives_uses_all_negatives() -> None:
    # 3 * num_pos exceeds the number of negatives: every negative is used, positives never double count
    locs, logits, loc_t, cls_t = random_problem(11, n=2, p=40, pos_frac=0.5)
    loc_l, cls_l = multibox_loss(locs, logits, loc_t, cls_t)
    ref_loc, ref_cls = reference_loss(locs, logits, loc_t, cls_t)
    torch.testing.assert_close(cls_l.double(), ref_cls, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loc_l.double(), ref_loc, rtol=1e-5, atol=1e-6)
    full = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), cls_t.reshape(-1), reduction="sum") / (cls_t > 0).sum()
    torch.testing.assert_close(cls_l, full)


def test_neg_pos_ratio_parameter() -> None:
    locs, logits, loc_t, cls_t = random_problem(5)
    _, cls_l = multibox_loss(locs, logits, loc_t, cls_t, neg_pos_ratio=1)
    _, ref_cls = reference_loss(locs, logits, loc_t, cls_t, neg_pos_ratio=1)
    torch.testing.assert_close(cls_l.double(), ref_cls, rtol=1e-5, atol=1e-6)


def test_hard_negative_mask_counts() -> None:
    ce = torch.rand(2, 100)
    positive = torch.zeros(2, 100, dtype=torch.bool)
    positive[0, :5] = True
    neg = hard_negative_mask(ce, positive, 3)
    assert neg[0].sum() == 15 and neg[1].sum() == 0
    assert not (neg & positive).any()
    assert ce[0][neg[0]].min() >= ce[0][~positive[0] & ~neg[0]].max()


def test_zero_positives_is_finite_zero_with_finite_gradients() -> None:
    locs = torch.randn(2, 300, 4, requires_grad=True)
    logits = torch.randn(2, 300, 5, requires_grad=True)
    loc_t = torch.randn(2, 300, 4)
    cls_t = torch.zeros(2, 300, dtype=torch.long)
    loc_l, cls_l = multibox_loss(locs, logits, loc_t, cls_t)
    assert loc_l.item() == 0.0 and cls_l.item() == 0.0
    (loc_l + cls_l).backward()
    assert torch.isfinite(locs.grad).all() and torch.isfinite(logits.grad).all()
    assert (locs.grad == 0).all() and (logits.grad == 0).all()


def test_gradients_finite_with_positives() -> None:
    locs, logits, loc_t, cls_t = random_problem(2)
    locs.requires_grad_(True)
    logits.requires_grad_(True)
    loc_l, cls_l = multibox_loss(locs, logits, loc_t, cls_t)
    (loc_l + cls_l).backward()
    assert torch.isfinite(locs.grad).all() and torch.isfinite(logits.grad).all()
    # gradients reach positives only for the localisation term
    assert (locs.grad[cls_t == 0] == 0).all() and (locs.grad[cls_t > 0] != 0).any()


def test_overfit_one_batch() -> None:
    torch.manual_seed(0)
    model = build_model("ssdlite320", 3).train()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 320, 320, generator=gen)
    gt_boxes = [torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.55, 0.2, 0.95, 0.9]]), torch.tensor([[0.3, 0.3, 0.8, 0.7]])]
    gt_labels = [torch.tensor([1, 2]), torch.tensor([2])]
    targets = model.encode_targets(gt_boxes, gt_labels)
    loc_t, cls_t = assign_targets(gt_boxes, gt_labels, model.priors)
    assert torch.equal(targets["cls_targets"], cls_t)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = model.compute_loss(model(images), targets)
        assert torch.isfinite(loss["total"])
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
        losses.append(loss["total"].item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_matches_reference_with_real_targets() -> None:
    from ssdcli.priors import make_priors

    priors = make_priors("ssd300")
    gt_boxes = [
        torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.95]]),
        torch.zeros(0, 4),
        torch.tensor([[0.0, 0.0, 1.0, 1.0]]),
    ]
    gt_labels = [torch.tensor([3, 7]), torch.zeros(0, dtype=torch.long), torch.tensor([1])]
    loc_t, cls_t = assign_targets(gt_boxes, gt_labels, priors)
    gen = torch.Generator().manual_seed(3)
    locs = torch.randn(3, priors.shape[0], 4, generator=gen)
    logits = torch.randn(3, priors.shape[0], 21, generator=gen)
    loc_l, cls_l = multibox_loss(locs, logits, loc_t, cls_t)
    ref_loc, ref_cls = reference_loss(locs, logits, loc_t, cls_t)
    torch.testing.assert_close(loc_l.double(), ref_loc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cls_l.double(), ref_cls, rtol=1e-5, atol=1e-6)
