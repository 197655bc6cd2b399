"""Comparing two engines' outputs: raw-tensor differences and detection-list agreement.

Detections are compared as sets, not position by position: two engines whose scores differ by float rounding
may order near-equal detections differently, or keep a different one of several candidates whose scores tie at
a cut-off (``top_k``, ``pre_nms_top_k``). Such differences are tolerated; anything else is a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ssdcli.postprocess import Detections

SCORE_TOL = 1e-3  # absolute, scores are 0..1
BOX_TOL = 1e-3  # relative coordinates (0.3 px on a 300 px input)


def raw_tolerance(reference: np.ndarray, half: bool = False) -> float:
    """Allowed largest absolute difference of a raw output: relative to its magnitude (fp32 1e-3, fp16 5e-2)."""
    scale = max(1.0, float(np.abs(reference).max())) if reference.size else 1.0
    return (5e-2 if half else 1e-3) * scale


@dataclass
class DetectionAgreement:
    images: int = 0
    reference: int = 0  # detections in the reference lists
    matched: int = 0  # reference detections with a counterpart (same label, close score and box)
    tie_tolerated: int = 0  # unmatched detections (either side) explained by a score tie at a cut-off
    mismatched: int = 0  # unmatched detections (either side) not explained by a tie
    max_score_diff: float = 0.0  # over matched pairs
    max_box_diff: float = 0.0

    @property
    def equal(self) -> bool:
        return self.mismatched == 0

    def merge(self, other: "DetectionAgreement") -> None:
        self.images += other.images
        self.reference += other.reference
        self.matched += other.matched
        self.tie_tolerated += other.tie_tolerated
        self.mismatched += other.mismatched
        self.max_score_diff = max(self.max_score_diff, other.max_score_diff)
        self.max_box_diff = max(self.max_box_diff, other.max_box_diff)

    def summary(self) -> str:
        if self.reference == 0:
            return f"{self.images} images, no detections on either side"
        text = f"{self.matched}/{self.reference} detections equal on {self.images} images"
        if self.tie_tolerated:
            text += f" ({self.tie_tolerated} swapped at a score tie)"
        if self.mismatched:
            text += f", {self.mismatched} DIFFER"
        return text


def _one_sided(a: Detections, b: Detections, score_tol: float, box_tol: float) -> tuple[int, int, float, float]:
    """For each detection of ``a`` whether ``b`` has a counterpart; unmatched ones count as ties when their score
    is within ``score_tol`` of ``b``'s lowest kept score (they fell on the other side of a cut-off)."""
    if len(a) == 0:
        return 0, 0, 0.0, 0.0
    if len(b) == 0:
        return 0, 0, 0.0, 0.0
    ds = (a.scores.float()[:, None] - b.scores.float()[None, :]).abs()  # [Ka,Kb]
    db = (a.boxes.float()[:, None, :] - b.boxes.float()[None, :, :]).abs().amax(-1)
    ok = (a.labels[:, None] == b.labels[None, :]) & (ds <= score_tol) & (db <= box_tol)
    has = ok.any(dim=1)
    tie = ~has & (a.scores.float() <= b.scores.float().min() + score_tol)
    big = torch.finfo(torch.float32).max
    best_s = torch.where(ok, ds, torch.full_like(ds, big)).amin(1)[has]
    best_b = torch.where(ok, db, torch.full_like(db, big)).amin(1)[has]
    return (
        int(has.sum()),
        int(tie.sum()),
        float(best_s.max()) if best_s.numel() else 0.0,
        float(best_b.max()) if best_b.numel() else 0.0,
    )


def compare_detections(
    reference: list[Detections], other: list[Detections], score_tol: float = SCORE_TOL, box_tol: float = BOX_TOL
) -> DetectionAgreement:
    """Agreement of ``other`` with ``reference`` (both per-image lists, relative xyxy boxes), checked both ways."""
    out = DetectionAgreement(images=len(reference))
    for ref, oth in zip(reference, other):
        ref, oth = _cpu(ref), _cpu(oth)
        m1, t1, s1, b1 = _one_sided(ref, oth, score_tol, box_tol)
        m2, t2, _, _ = _one_sided(oth, ref, score_tol, box_tol)
        out.reference += len(ref)
        out.matched += m1
        out.tie_tolerated += t1 + t2
        out.mismatched += (len(ref) - m1 - t1) + (len(oth) - m2 - t2)
        out.max_score_diff = max(out.max_score_diff, s1)
        out.max_box_diff = max(out.max_box_diff, b1)
    if len(reference) != len(other):
        out.mismatched += abs(len(reference) - len(other))
    return out


def _cpu(d: Detections) -> Detections:
    return Detections(d.boxes.detach().cpu(), d.scores.detach().cpu(), d.labels.detach().cpu())
