"""Core performance figures (CPU): target assignment, post-processing, SSD300 forward.

    python benchmarks/bench_core.py [--repeats 15] [--forward-repeats 7] [--threads N]

1. ``assign_targets`` for 32 images with 1-20 boxes each (SSD300 priors) vs a per-image loop running the
   classic PyTorch SSD port's ``match()`` (written out below). Target: >= 5x faster.
2. ``postprocess`` for 8 SSD300 outputs (21 classes, score threshold 0.01) vs the classic port's ``Detect``:
   per image, per class, a pure-torch greedy NMS (``nms()`` with top_k=200 per class). Target: >= 20x.
   Two kinds of scores: "peaky" random logits shaped like a trained detector's (background logit +8, others
   N(0, 2^2): a few hundred candidates per class above 0.01) and a random-init SSD300 (flat softmax, every
   prior is a candidate for every class: the worst case). Plus postprocess at batch 1 as a fraction of the
   SSD300 forward at batch 1 (target < 10%).
3. SSD300 forward at batch 1: ours vs torchvision's ``ssd300_vgg16`` backbone + head (same architecture,
   21 classes), interleaved, medians. Target: ours no slower.

All timings are medians over repeats; the reference and ours alternate in each repeat.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ssdcli.boxes import cxcywh_to_xyxy, decode, encode
from ssdcli.matching import assign_targets
from ssdcli.models import build_model
from ssdcli.postprocess import PostprocessConfig, postprocess
from ssdcli.priors import make_priors

# ----------------------------------------------------------------------------- classic-port references


def classic_jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    max_xy = torch.min(a[:, None, 2:], b[None, :, 2:])
    min_xy = torch.max(a[:, None, :2], b[None, :, :2])
    inter = torch.clamp(max_xy - min_xy, min=0).prod(-1)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    return inter / (area_a + area_b - inter)


def classic_match(truths, labels, priors, threshold=0.5):
    """The classic port's ``match()`` for one image (labels already 1-based), returning (loc, conf)."""
    overlaps = classic_jaccard(truths, cxcywh_to_xyxy(priors))
    _, best_prior_idx = overlaps.max(1)
    best_truth_overlap, best_truth_idx = overlaps.max(0)
    best_truth_overlap.index_fill_(0, best_prior_idx, 2)
    for j in range(best_prior_idx.size(0)):
        best_truth_idx[best_prior_idx[j]] = j
    conf = labels[best_truth_idx]
    conf[best_truth_overlap < threshold] = 0
    return encode(truths[best_truth_idx], priors), conf


def loop_assign(gt_boxes, gt_labels, priors):
    """The classic training loop's target step: one ``match()`` per image into preallocated tensors."""
    n, p = len(gt_boxes), priors.shape[0]
    loc_t = torch.zeros(n, p, 4)
    conf_t = torch.zeros(n, p, dtype=torch.long)
    for i in range(n):
        loc_t[i], conf_t[i] = classic_match(gt_boxes[i], gt_labels[i], priors)
    return loc_t, conf_t


def classic_nms(boxes: torch.Tensor, scores: torch.Tensor, overlap: float = 0.45, top_k: int = 200):
    """Greedy NMS as in the classic port: the ``top_k`` best, one Python iteration per kept box."""
    keep = []
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    idx = scores.argsort()[-top_k:]
    while idx.numel() > 0:
        i = idx[-1]
        keep.append(int(i))
        idx = idx[:-1]
        if idx.numel() == 0:
            break
        xx1 = torch.index_select(x1, 0, idx).clamp(min=float(x1[i]))
        yy1 = torch.index_select(y1, 0, idx).clamp(min=float(y1[i]))
        xx2 = torch.index_select(x2, 0, idx).clamp(max=float(x2[i]))
        yy2 = torch.index_select(y2, 0, idx).clamp(max=float(y2[i]))
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        union = torch.index_select(area, 0, idx) - inter + area[i]
        idx = idx[(inter / union).le(overlap)]
    return torch.tensor(keep, dtype=torch.long)


def classic_detect(locs, logits, priors, conf_thresh=0.01, nms_thresh=0.45, top_k=200):
    """The classic port's ``Detect.forward``: output ``[N, C, top_k, 5]`` (score, box) per class."""
    n, p, c = logits.shape
    conf = torch.softmax(logits, -1).transpose(2, 1)
    output = torch.zeros(n, c, top_k, 5)
    for i in range(n):
        boxes = decode(locs[i], priors)
        for cl in range(1, c):
            mask = conf[i, cl] > conf_thresh
            scores = conf[i, cl][mask]
            if scores.numel() == 0:
                continue
            cb = boxes[mask]
            ids = classic_nms(cb, scores, nms_thresh, top_k)
            output[i, cl, : len(ids)] = torch.cat((scores[ids, None], cb[ids]), 1)
    flat = output.view(n, -1, 5)
    _, order = flat[:, :, 0].sort(1, descending=True)
    return flat.gather(1, order[:, :top_k, None].expand(n, top_k, 5))


# ----------------------------------------------------------------------------- timing helpers


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000.0


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


# ----------------------------------------------------------------------------- benchmarks


def bench_matching(priors: torch.Tensor, repeats: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    boxes, labels = [], []
    for _ in range(32):
        k = int(torch.randint(1, 21, (1,), generator=gen))
        xy = torch.rand(k, 2, generator=gen) * 0.8
        wh = torch.rand(k, 2, generator=gen) * 0.5 + 0.02
        boxes.append(torch.cat((xy, (xy + wh).clamp(max=1)), 1))
        labels.append(torch.randint(1, 21, (k,), generator=gen))
    ours, ref = assign_targets(boxes, labels, priors), loop_assign(boxes, labels, priors)
    assert torch.equal(ours[1], ref[1]), "assign_targets disagrees with the reference loop"
    return interleaved(
        {"ours": lambda: assign_targets(boxes, labels, priors), "loop": lambda: loop_assign(boxes, labels, priors)},
        repeats,
    )


def peaky_logits(n: int, p: int, c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, p, c, generator=gen) * 2.0
    logits[..., 0] += 8.0
    return torch.randn(n, p, 4, generator=gen), logits


def bench_postprocess(priors, locs, logits, repeats: int, ref_repeats: int) -> dict[str, float]:
    """Ours ``repeats`` times and the classic loop ``ref_repeats`` times, interleaved; medians."""
    cfg = PostprocessConfig()
    postprocess(locs, logits, priors, cfg)
    ours: list[float] = []
    ref: list[float] = []
    per_round = max(1, repeats // max(ref_repeats, 1))
    for _ in range(ref_repeats):
        ours.extend(timed(lambda: postprocess(locs, logits, priors, cfg)) for _ in range(per_round))
        ref.append(timed(lambda: classic_detect(locs, logits, priors)))
    cands = (torch.softmax(logits, -1)[..., 1:] > cfg.score_threshold).sum(1).float().mean().item()
    return {"ours": statistics.median(ours), "ref": statistics.median(ref), "candidates_per_class": cands}


def bench_forward(repeats: int) -> tuple[dict[str, float], tuple[torch.Tensor, torch.Tensor]]:
    """SSD300 forward at batch 1, ours vs torchvision backbone+head, interleaved. Also returns the raw outputs
    of our random-init model for 8 random images (input of the "random-init" post-processing case)."""
    from torchvision.models.detection import ssd300_vgg16

    torch.manual_seed(0)
    ours = build_model("ssd300", 21).eval()
    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).eval()
    x = torch.randn(1, 3, 300, 300)

    def run_tv() -> object:
        return tv.head(list(tv.backbone(x).values()))

    with torch.inference_mode():
        assert ours(x)[0].shape[1] == run_tv()["bbox_regression"].shape[1] == 8732
        res = interleaved({"ours": lambda: ours(x), "torchvision": run_tv}, repeats)
        outputs = ours(torch.randn(8, 3, 300, 300))
    res["params_ours"] = sum(p.numel() for p in ours.parameters())
    res["params_tv"] = sum(p.numel() for p in list(tv.backbone.parameters()) + list(tv.head.parameters()))
    return res, outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--forward-repeats", type=int, default=7)
    ap.add_argument("--ref-repeats", type=int, default=3, help="repeats of the slow classic post-processing")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    priors = make_priors("ssd300")
    rows: list[tuple[str, str, str, str]] = []

    m = bench_matching(priors, args.repeats)
    rows.append((
        "assign_targets, 32 images x 1-20 boxes",
        f"{m['ours']:.1f} ms",
        f"{m['loop']:.1f} ms (per-image classic match)",
        f"{m['loop'] / m['ours']:.1f}x (target >= 5x)",
    ))

    fwd, (locs_r8, logits_r8) = bench_forward(args.forward_repeats)
    rows.append((
        "ssd300 forward, batch 1",
        f"{fwd['ours']:.0f} ms",
        f"{fwd['torchvision']:.0f} ms (torchvision ssd300_vgg16)",
        f"{fwd['torchvision'] / fwd['ours']:.2f}x (target >= 1x)",
    ))

    locs8, logits8 = peaky_logits(8, priors.shape[0], 21)
    for label, (locs, logits) in (("peaky logits", (locs8, logits8)), ("random-init ssd300", (locs_r8, logits_r8))):
        pp = bench_postprocess(priors, locs, logits, args.repeats, args.ref_repeats)
        rows.append((
            f"postprocess, batch 8, {label} (~{pp['candidates_per_class']:.0f} cand./class)",
            f"{pp['ours']:.1f} ms",
            f"{pp['ref']:.0f} ms (classic per-class NMS)",
            f"{pp['ref'] / pp['ours']:.0f}x (target >= 20x)",
        ))

    cfg = PostprocessConfig()
    b1 = interleaved(
        {
            "peaky": lambda: postprocess(locs8[:1], logits8[:1], priors, cfg),
            "random": lambda: postprocess(locs_r8[:1], logits_r8[:1], priors, cfg),
        },
        args.repeats,
    )
    rows.append((
        "postprocess, batch 1, peaky / random-init",
        f"{b1['peaky']:.2f} / {b1['random']:.2f} ms",
        f"{fwd['ours']:.0f} ms (ssd300 forward, batch 1)",
        f"{100 * b1['peaky'] / fwd['ours']:.1f}% / {100 * b1['random'] / fwd['ours']:.1f}% (target < 10%)",
    ))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ssdcli core benchmark (CPU, {torch.get_num_threads()} threads, torch {torch.__version__})")
    for col in ("what", "ours", "reference", "ratio"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    print(f"parameters: ours {fwd['params_ours']:,} / torchvision backbone+head {fwd['params_tv']:,}")


if __name__ == "__main__":
    main()
