"""Post-processing (ssdcli.postprocess) against a straightforward per-image, per-class reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import nms

from ssdcli.boxes import decode
from ssdcli.postprocess import Detections, PostprocessConfig, postprocess, select_detections
from ssdcli.priors import make_priors


pytestmark = pytest.mark.usefixtures("one_thread")


PRIORS = make_priors("ssd300")


def reference_select(boxes: torch.Tensor, scores: torch.Tensor, cfg: PostprocessConfig) -> list[tuple]:
    """Per image, per class: threshold, top ``pre_nms_top_k``, NMS; merge and keep the ``top_k`` best."""
    out = []
    for i in range(boxes.shape[0]):
        all_b, all_s, all_l = [], [], []
        for c in range(scores.shape[2]):
            s = scores[i, :, c]
            mask = s > cfg.score_threshold
            cs, cb = s[mask], boxes[i][mask]
            order = cs.argsort(descending=True)[: cfg.pre_nms_top_k]
            cs, cb = cs[order], cb[order]
            keep = nms(cb, cs, cfg.nms_iou)
            all_b.append(cb[keep])
            all_s.append(cs[keep])
            all_l.append(torch.full((len(keep),), c + 1, dtype=torch.long))
        b, s, l = torch.cat(all_b), torch.cat(all_s), torch.cat(all_l)
        order = s.argsort(descending=True)[: cfg.top_k]
        out.append((b[order], s[order], l[order]))
    return out


def reference_postprocess(locs, logits, priors, cfg: PostprocessConfig) -> list[tuple]:
    scores = torch.softmax(logits, dim=-1)[..., 1:]
    return reference_select(decode(locs, priors), scores, cfg)


def canonical(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows ``[label, score, box]`` sorted by label, score, then box (the order of tied scores is not part of
    the contract)."""
    rows = torch.cat((labels[:, None].double(), scores[:, None].double(), boxes.double()), dim=1)
    keys = [rows[:, j].numpy() for j in range(rows.shape[1] - 1, -1, -1)]  # lexsort: last key is primary
    return rows[torch.from_numpy(np.lexsort(keys))]


def assert_same(dets: list[Detections], ref: list[tuple]) -> None:
    assert len(dets) == len(ref)
    for d, (b, s, l) in zip(dets, ref):
        assert d.boxes.shape == (len(d), 4) and d.scores.shape == (len(d),) and d.labels.shape == (len(d),)
        assert d.labels.dtype == torch.int64
        assert len(d) == len(s)
        # per image, best first
        assert (d.scores[:-1] >= d.scores[1:]).all()
        torch.testing.assert_close(canonical(d.boxes, d.scores, d.labels), canonical(b, s, l), rtol=1e-6, atol=1e-6)


def random_outputs(seed: int, n: int, c: int = 21, peak: float = 4.0, loc_scale: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    p = PRIORS.shape[0]
    locs = torch.randn(n, p, 4, generator=gen) * loc_scale
    logits = torch.randn(n, p, c, generator=gen) * peak
    logits[..., 0] += 3.0  # mostly background, as a detector
    return locs, logits


@pytest.mark.parametrize("seed,n", [(0, 1), (1, 3), (2, 2)])
def test_equals_reference(seed: int, n: int) -> None:
    locs, logits = random_outputs(seed, n)
    cfg = PostprocessConfig()
    dets = postprocess(locs, logits, PRIORS, cfg)
    ref = reference_postprocess(locs, logits, PRIORS, cfg)
    assert_same(dets, ref)
    assert all(len(d) == cfg.top_k for d in dets)  # plenty of candidates: truncated at top_k


def test_equals_reference_few_candidates_and_settings() -> None:
    locs, logits = random_outputs(5, 2, c=4, peak=1.0)
    logits[..., 0] += 4.0
    cfg = PostprocessConfig(score_threshold=0.2, nms_threshold=0.3, top_k=50, pre_nms_top_k=30)
    dets = postprocess(locs, logits, PRIORS, cfg)
    assert_same(dets, reference_postprocess(locs, logits, PRIORS, cfg))
    assert any(0 < len(d) for d in dets)


def test_top_k_truncation() -> None:
    locs, logits = random_outputs(3, 2)
    full = postprocess(locs, logits, PRIORS, PostprocessConfig(top_k=100000))
    cut = postprocess(locs, logits, PRIORS, PostprocessConfig(top_k=7))
    for f, c in zip(full, cut):
        assert len(f) > 7 and len(c) == 7
        torch.testing.assert_close(c.scores, f.scores[:7])
    ref = reference_postprocess(locs, logits, PRIORS, PostprocessConfig(top_k=7))
    assert_same(cut, ref)


def test_image_without_candidates() -> None:
    locs, logits = random_outputs(4, 3)
    logits[1, :, 0] = 50.0  # image 1: background everywhere, no score above threshold
    dets = postprocess(locs, logits, PRIORS)
    assert len(dets) == 3
    assert len(dets[1]) == 0
    assert dets[1].boxes.shape == (0, 4) and dets[1].scores.shape == (0,) and dets[1].labels.shape == (0,)
    assert len(dets[0]) > 0 and len(dets[2]) > 0
    assert_same(dets, reference_postprocess(locs, logits, PRIORS, PostprocessConfig()))


def test_no_candidates_anywhere() -> None:
    locs = torch.zeros(2, 50, 4)
    logits = torch.zeros(2, 50, 3)
    logits[..., 0] = 30.0
    dets = postprocess(locs, logits, PRIORS[:50])
    assert [len(d) for d in dets] == [0, 0]


def test_class_aware_nms_with_boxes_outside_the_image() -> None:
    # Same box, two classes: both survive. Coordinates far below zero (an untrained model can produce
    # them) must not make boxes of different classes or images suppress each other.
    boxes = torch.tensor([[[-100.0, -100.0, -2.0, -2.0], [-100.0, -100.0, -2.5, -2.5], [-99.0, -99.0, -2.0, -2.0]]])
    scores = torch.tensor([[[0.9, 0.0], [0.0, 0.8], [0.7, 0.0]]])
    dets = select_detections(boxes.repeat(2, 1, 1), scores.repeat(2, 1, 1), PostprocessConfig())
    for d in dets:
        assert d.labels.tolist() == [1, 2]  # the third box is suppressed by the first (same class)
        torch.testing.assert_close(d.scores, torch.tensor([0.9, 0.8]))


def test_large_decoded_boxes_match_reference() -> None:
    # a diverged model: boxes 7x the prior size, centres shifted far to the top-left, out of the image
    locs, logits = random_outputs(8, 2, c=5)
    locs[:, :, :2] -= 60.0
    locs[:, :, 2:] += 10.0
    # few candidates, so that torchvision's batched_nms takes its coordinate-offset path
    cfg = PostprocessConfig(pre_nms_top_k=50)
    assert_same(postprocess(locs, logits, PRIORS, cfg), reference_postprocess(locs, logits, PRIORS, cfg))


def test_half_precision_inputs() -> None:
    locs, logits = random_outputs(9, 1)
    dets = postprocess(locs.half(), logits.half(), PRIORS.half())
    assert dets[0].boxes.dtype == torch.float32 and len(dets[0]) > 0


def test_heavy_suppression_falls_back_to_full_nms() -> None:
    # 3 clusters of near-identical boxes per image: NMS keeps ~3 per class, far fewer than top_k, so the
    # "best 4*top_k candidates" shortcut never suffices and every candidate must go through NMS
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.2, 0.2, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8], [0.1, 0.6, 0.3, 0.9]])
    pick = torch.randint(0, 3, (2, 3000), generator=gen)
    boxes = centres[pick] + torch.rand(2, 3000, 4, generator=gen) * 0.01
    scores = torch.rand(2, 3000, 4, generator=gen)
    cfg = PostprocessConfig(top_k=50, pre_nms_top_k=3000)
    dets = select_detections(boxes, scores, cfg)
    assert_same(dets, reference_select(boxes, scores, cfg))
    assert all(len(d) <= 3 * 4 for d in dets)


def test_shortcut_needs_several_rounds() -> None:
    # the 100 best candidates are one box; behind them 400 separate boxes: kept count reaches top_k only
    # once the candidate window has grown past the cluster (20 -> 80 -> 320 candidates)
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(500, 2, generator=gen) * 10  # far apart
    boxes = torch.cat((xy, xy + 0.05), dim=1)
    boxes[:100] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    scores = torch.linspace(1.0, 0.02, 500)[:, None]
    cfg = PostprocessConfig(top_k=5, pre_nms_top_k=500)
    dets = select_detections(boxes[None], scores[None], cfg)
    assert_same(dets, reference_select(boxes[None], scores[None], cfg))
    assert len(dets[0]) == 5 and dets[0].scores[0] == 1.0
    assert torch.equal(dets[0].boxes[1:], boxes[100:104])
