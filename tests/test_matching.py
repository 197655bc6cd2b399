"""Batched target assignment (ssdcli.matching) against the classic port's per-image ``match()``."""

from __future__ import annotations

import pytest
import torch

from ssdcli.boxes import cxcywh_to_xyxy, decode, encode
from ssdcli.errors import SsdError
from ssdcli.matching import assign_targets, pad_ground_truth, prior_grid
from ssdcli.models.ssd.priors import SSD300_VOC
from ssdcli.priors import PriorSpec, generate_priors, make_priors

pytestmark = pytest.mark.usefixtures("one_thread")


PRIORS = make_priors("ssd300")


def jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The classic port's ``jaccard`` (xyxy ``[A,4]`` x ``[B,4]`` -> ``[A,B]``)."""
    max_xy = torch.min(a[:, None, 2:], b[None, :, 2:])
    min_xy = torch.max(a[:, None, :2], b[None, :, :2])
    inter_wh = torch.clamp(max_xy - min_xy, min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    return inter / (area_a + area_b - inter)


def reference_match(truths: torch.Tensor, labels: torch.Tensor, priors: torch.Tensor, threshold: float = 0.5):
    """The classic port's ``match()`` for one image; labels are already 1-based here (no ``+ 1``)."""
    overlaps = jaccard(truths, cxcywh_to_xyxy(priors))
    best_prior_overlap, best_prior_idx = overlaps.max(1, keepdim=True)
    best_truth_overlap, best_truth_idx = overlaps.max(0, keepdim=True)
    best_truth_idx.squeeze_(0)
    best_truth_overlap.squeeze_(0)
    best_prior_idx.squeeze_(1)
    best_prior_overlap.squeeze_(1)
    best_truth_overlap.index_fill_(0, best_prior_idx, 2)
    for j in range(best_prior_idx.size(0)):
        best_truth_idx[best_prior_idx[j]] = j
    matches = truths[best_truth_idx]
    conf = labels[best_truth_idx].clone()
    conf[best_truth_overlap < threshold] = 0
    loc = encode(matches, priors)
    return loc, conf, best_truth_idx


def random_boxes(gen: torch.Generator, k: int) -> torch.Tensor:
    xy = torch.rand(k, 2, generator=gen) * 0.9
    wh = torch.rand(k, 2, generator=gen) * 0.6 + 0.01
    return torch.cat((xy, (xy + wh).clamp(max=1.0)), dim=1)


def check_against_reference(
    boxes: list[torch.Tensor], labels: list[torch.Tensor], priors: torch.Tensor = PRIORS, **kw: object
) -> tuple:
    loc_t, cls_t = assign_targets(boxes, labels, priors, **kw)
    n, p = len(boxes), priors.shape[0]
    assert loc_t.shape == (n, p, 4) and cls_t.shape == (n, p)
    assert cls_t.dtype == torch.int64
    assert torch.isfinite(loc_t).all()
    for i, (b, l) in enumerate(zip(boxes, labels)):
        if b.shape[0] == 0:
            assert (cls_t[i] == 0).all(), "an image without boxes is all background"
            continue
        ref_loc, ref_conf, ref_idx = reference_match(b, l, priors)
        assert torch.equal(cls_t[i], ref_conf), f"image {i}: {(cls_t[i] != ref_conf).sum()} class targets differ"
        pos = ref_conf > 0
        torch.testing.assert_close(loc_t[i][pos], ref_loc[pos], rtol=0, atol=0)
        # loc targets decode back to the matched ground truth boxes
        torch.testing.assert_close(decode(loc_t[i][pos], priors[pos]), b[ref_idx[pos]], rtol=1e-5, atol=1e-5)
        assert (loc_t[i][~pos] == 0).all()  # documented: 0 where background
        # every ground truth owns at least one prior
        assert pos.any()
    return loc_t, cls_t


@pytest.mark.parametrize("seed", range(4))
def test_random_batches_match_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 9, (1,), generator=gen))
    counts = torch.randint(0, 21, (n,), generator=gen).tolist()
    boxes = [random_boxes(gen, k) for k in counts]
    labels = [torch.randint(1, 21, (k,), generator=gen) for k in counts]
    check_against_reference(boxes, labels)


def test_many_boxes_per_image_small_prior_set() -> None:
    # few priors and many ground truths: lots of contested forced matches
    gen = torch.Generator().manual_seed(7)
    priors = make_priors("ssd300")[-30:]
    boxes = [random_boxes(gen, 20), random_boxes(gen, 13), random_boxes(gen, 1)]
    labels = [torch.arange(1, b.shape[0] + 1) for b in boxes]
    check_against_reference(boxes, labels, priors)


def test_no_boxes_anywhere() -> None:
    empty = torch.zeros(0, dtype=torch.long)
    loc_t, cls_t = assign_targets([torch.zeros(0, 4), torch.zeros(0, 4)], [empty, empty], PRIORS)
    assert loc_t.shape == (2, 8732, 4) and cls_t.shape == (2, 8732)
    assert (cls_t == 0).all()
    assert torch.isfinite(loc_t).all()


def test_one_image_without_boxes_in_batch() -> None:
    gen = torch.Generator().manual_seed(3)
    boxes = [random_boxes(gen, 5), torch.zeros(0, 4), random_boxes(gen, 2)]
    labels = [torch.tensor([1, 2, 3, 4, 5]), torch.zeros(0, dtype=torch.long), torch.tensor([7, 7])]
    _, cls_t = check_against_reference(boxes, labels)
    assert (cls_t[1] == 0).all()


def test_empty_boxes_given_flat() -> None:
    # an image without boxes may arrive as a [0] tensor rather than [0, 4]
    boxes = [torch.tensor([[0.1, 0.1, 0.5, 0.5]]), torch.zeros(0)]
    _, cls_t = assign_targets(boxes, [torch.tensor([2]), torch.zeros(0)], PRIORS)
    assert (cls_t[1] == 0).all() and (cls_t[0] == 2).any()


def test_one_box() -> None:
    boxes = [torch.tensor([[0.2, 0.3, 0.6, 0.9]])]
    _, cls_t = check_against_reference(boxes, [torch.tensor([5])])
    assert set(cls_t.unique().tolist()) == {0, 5}


def test_tiny_boxes_get_their_best_prior() -> None:
    boxes = [torch.tensor([[0.500, 0.500, 0.502, 0.503], [0.01, 0.01, 0.012, 0.011]])]
    labels = [torch.tensor([3, 4])]
    _, cls_t = check_against_reference(boxes, labels)
    # far below the IoU threshold everywhere, so exactly the forced prior of each box is positive
    assert (cls_t[0] == 3).sum() == 1 and (cls_t[0] == 4).sum() == 1


def test_duplicate_boxes_follow_reference() -> None:
    box = [0.3, 0.3, 0.6, 0.7]
    boxes = [torch.tensor([box, box, [0.0, 0.0, 0.2, 0.2]])]
    labels = [torch.tensor([1, 2, 3])]
    _, cls_t = check_against_reference(boxes, labels)
    ref_idx = reference_match(boxes[0], labels[0], PRIORS)[2]
    best_prior = jaccard(boxes[0][:1], cxcywh_to_xyxy(PRIORS))[0].argmax()
    # the forced best prior goes to the later duplicate, threshold matches to the first (as the reference)
    assert cls_t[0, best_prior] == 2 and ref_idx[best_prior] == 1
    others = (cls_t[0] > 0) & (cls_t[0] != 3)
    others[best_prior] = False
    assert others.any() and (cls_t[0][others] == 1).all()


def test_box_covering_whole_image() -> None:
    boxes = [torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.4, 0.4, 0.5, 0.5]])]
    labels = [torch.tensor([9]), torch.tensor([9, 1])]
    _, cls_t = check_against_reference(boxes, labels)
    # the full-image prior of conv11_2 (cx=cy=0.5, w=h=0.88 and the clipped sqrt(264*315)/300) matches
    assert (cls_t[0] == 9).sum() >= 2


def test_iou_threshold_is_configurable() -> None:
    boxes = [torch.tensor([[0.2, 0.3, 0.6, 0.9]])]
    labels = [torch.tensor([1])]
    _, strict = assign_targets(boxes, labels, PRIORS, iou_threshold=0.7)
    _, loose = assign_targets(boxes, labels, PRIORS, iou_threshold=0.3)
    assert 1 <= (strict > 0).sum() < (loose > 0).sum()


def test_pad_ground_truth() -> None:
    boxes, labels, valid = pad_ground_truth(
        [torch.rand(2, 4), torch.zeros(0, 4), torch.rand(3, 4)],
        [torch.tensor([1, 2]), torch.zeros(0), torch.tensor([3, 4, 5])],
    )
    assert boxes.shape == (3, 3, 4) and labels.shape == (3, 3) and valid.shape == (3, 3)
    assert valid.tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert labels.tolist() == [[1, 2, 0], [0, 0, 0], [3, 4, 5]]


def tie_heavy_boxes(gen: torch.Generator, k: int) -> torch.Tensor:
    """Coordinates on a 0.1 grid: many priors with exactly equal IoU for one box, many equal boxes."""
    b = torch.randint(0, 10, (k, 4), generator=gen).float() / 10
    return torch.cat((torch.minimum(b[:, :2], b[:, 2:]), torch.maximum(b[:, :2], b[:, 2:]) + 0.1), dim=1)


def prior_aligned_boxes(gen: torch.Generator, k: int, priors: torch.Tensor) -> torch.Tensor:
    """Boxes equal to (clipped) priors: IoU exactly 1 and exact ties between shapes."""
    idx = torch.randint(0, priors.shape[0], (k,), generator=gen)
    return cxcywh_to_xyxy(priors[idx]).clamp(0, 1)


@pytest.mark.parametrize("name", ["ssd300", "ssd512", "ssdlite320"])
@pytest.mark.parametrize("kind", ["random", "ties", "aligned"])
def test_architectures_and_tie_heavy_boxes(name: str, kind: str) -> None:
    priors = make_priors(name)
    gen = torch.Generator().manual_seed(len(name) * 10 + len(kind))
    counts = torch.randint(0, 13, (3,), generator=gen).tolist()
    make = {
        "random": lambda k: random_boxes(gen, k),
        "ties": lambda k: tie_heavy_boxes(gen, k),
        "aligned": lambda k: prior_aligned_boxes(gen, k, priors),
    }[kind]
    boxes = [make(k) for k in counts]
    labels = [torch.randint(1, 5, (k,), generator=gen) for k in counts]
    check_against_reference(boxes, labels, priors)


def test_box_outside_every_prior_claims_the_first_prior() -> None:
    # zero IoU with all priors (outside in x only, and outside in both): argmax is prior 0 in the reference
    boxes = [torch.tensor([[5.0, 0.4, 5.1, 0.5], [3.0, 3.0, 3.5, 3.5], [0.2, 0.2, 0.6, 0.6]])]
    labels = [torch.tensor([1, 2, 3])]
    _, cls_t = check_against_reference(boxes, labels)
    assert cls_t[0, 0] == 2  # both claim prior 0, the later one wins


def test_degenerate_zero_area_box() -> None:
    boxes = [torch.tensor([[0.3, 0.3, 0.3, 0.6], [0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.4, 0.4]])]
    check_against_reference(boxes, [torch.tensor([4, 5, 6])])


def test_arbitrary_priors_dense_fallback() -> None:
    gen = torch.Generator().manual_seed(5)
    priors = torch.cat((torch.rand(300, 2, generator=gen), torch.rand(300, 2, generator=gen) * 0.4 + 0.02), dim=1)
    assert prior_grid(priors).num_groups == 300  # no grid structure: one group per prior
    boxes = [random_boxes(gen, 12), tie_heavy_boxes(gen, 9), torch.zeros(0, 4)]
    labels = [torch.randint(1, 4, (b.shape[0],), generator=gen) for b in boxes]
    check_against_reference(boxes, labels, priors)


def test_custom_prior_spec() -> None:
    spec = PriorSpec(image_size=200, feature_maps=(13, 7, 3), min_sizes=(20, 70, 120), max_sizes=(70, 120, 190),
                     aspect_ratios=((2,), (2, 3), (3,)), steps=(16, 30, 70))
    priors = generate_priors(spec)
    assert prior_grid(priors, spec).num_groups == 4 + 6 + 4
    assert prior_grid(priors).num_groups == priors.shape[0]  # unknown spec, not given: dense fallback
    gen = torch.Generator().manual_seed(9)
    boxes = [random_boxes(gen, 10), tie_heavy_boxes(gen, 6)]
    labels = [torch.randint(1, 4, (b.shape[0],), generator=gen) for b in boxes]
    loc_a, cls_a = check_against_reference(boxes, labels, priors, prior_spec=spec)
    loc_b, cls_b = assign_targets(boxes, labels, priors)
    assert torch.equal(cls_a, cls_b) and torch.equal(loc_a, loc_b)


def test_wrong_prior_spec_is_not_trusted() -> None:
    # a spec that does not describe the priors must not change the result
    priors = make_priors("ssd300")
    shifted = priors.clone()
    shifted[:, 0] = (shifted[:, 0] + 0.013 * torch.arange(priors.shape[0]) % 0.1).clamp(0, 1)
    gen = torch.Generator().manual_seed(2)
    boxes = [random_boxes(gen, 8)]
    labels = [torch.arange(1, 9)]
    check_against_reference(boxes, labels, shifted, prior_spec=SSD300_VOC)
    assert prior_grid(shifted, SSD300_VOC).num_groups == shifted.shape[0]


@pytest.mark.parametrize("threshold", [0.0, 0.35, 0.7, 0.95])
def test_thresholds_match_reference(threshold: float) -> None:
    gen = torch.Generator().manual_seed(int(threshold * 100))
    priors = make_priors("ssd300")[-700:]  # keeps the threshold-0 case (every prior positive) small
    boxes = [random_boxes(gen, 6), tie_heavy_boxes(gen, 5)]
    labels = [torch.randint(1, 4, (b.shape[0],), generator=gen) for b in boxes]
    loc_t, cls_t = assign_targets(boxes, labels, priors, iou_threshold=threshold)
    for i, (b, l) in enumerate(zip(boxes, labels)):
        _, ref_conf, _ = reference_match(b, l, priors, threshold)
        assert torch.equal(cls_t[i], ref_conf)
    if threshold == 0.0:
        assert (cls_t > 0).all()


def test_non_finite_boxes_are_a_user_error() -> None:
    with pytest.raises(SsdError, match="NaN or infinite"):
        assign_targets([torch.tensor([[0.1, float("nan"), 0.5, 0.5]])], [torch.tensor([1])], PRIORS)


def test_double_precision_priors() -> None:
    gen = torch.Generator().manual_seed(4)
    priors = make_priors("ssd300").double()
    boxes = [random_boxes(gen, 7).double()]
    labels = [torch.arange(1, 8)]
    loc_t, cls_t = check_against_reference(boxes, labels, priors)
    assert loc_t.dtype == torch.float64
