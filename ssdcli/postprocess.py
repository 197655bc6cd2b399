"""SSD post-processing: decode, score threshold, per-class top-k, class-aware NMS, top-k per image.

One ``torchvision.ops.batched_nms`` call per image (the class is the NMS group id), no Python loop over
classes or boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torchvision.ops import batched_nms

from ssdcli.boxes import VARIANCES, decode
from ssdcli.errors import SsdError

PAPER_NMS_IOU = 0.45  # the SSD paper's NMS IoU threshold


@dataclass(frozen=True)
class PostprocessConfig:
    score_threshold: float = 0.01
    # None: the model's own (ModelConfig.nms_threshold, recorded at training; see with_nms_default); a model-less
    # call of select_detections/postprocess uses PAPER_NMS_IOU
    nms_threshold: float | None = None
    top_k: int = 200  # detections kept per image
    pre_nms_top_k: int = 400  # candidates kept per class and image before NMS (Caffe SSD: 400)

    def validate(self) -> PostprocessConfig:
        """Return ``self`` when every setting is in range, else raise SsdError naming the CLI option.

        The one check behind ``--conf`` [0, 1), ``--iou`` (0, 1], ``--max-det`` >= 1 and ``--pre-nms-top-k`` >= 1
        of eval, detect, export-onnx and benchmark.
        """
        checks = (
            ("--conf (score threshold)", self.score_threshold, 0.0 <= self.score_threshold < 1.0, "[0, 1)"),
            ("--iou (NMS IoU threshold)", self.nms_threshold,
             self.nms_threshold is None or 0.0 < self.nms_threshold <= 1.0, "(0, 1]"),
            ("--max-det (detections per image)", self.top_k, self.top_k >= 1, ">= 1"),
            ("--pre-nms-top-k (candidates per class)", self.pre_nms_top_k, self.pre_nms_top_k >= 1, ">= 1"),
        )
        for name, value, ok, allowed in checks:
            if not ok:  # NaN fails every comparison, so it lands here too
                raise SsdError(f"{name} {value}: expected a value in {allowed}")
        return self

    def with_nms_default(self, nms_threshold: float) -> PostprocessConfig:
        """This config with a model's own NMS IoU threshold filled in where none was given."""
        return self if self.nms_threshold is not None else replace(self, nms_threshold=float(nms_threshold))

    @property
    def nms_iou(self) -> float:
        """The NMS IoU threshold in use: the given one, else the SSD paper's (a model fills in its own first)."""
        return PAPER_NMS_IOU if self.nms_threshold is None else self.nms_threshold


@dataclass
class Detections:
    """Detections for one image: ``boxes [K,4]`` relative xyxy, ``scores [K]``, 1-based ``labels [K]``
    (:func:`ssdcli.boxes.relative_to_pixel` maps boxes to an image's VOC pixels)."""

    boxes: torch.Tensor  # [K,4]
    scores: torch.Tensor  # [K]
    labels: torch.Tensor  # [K] 1-based class index

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def _nms_shift(boxes: torch.Tensor) -> torch.Tensor:
    """``min(0, smallest coordinate of boxes)`` as a 0-d tensor; subtracting it makes every coordinate >= 0.

    ``batched_nms`` keeps groups apart by adding ``group * (max_coordinate + 1)`` to the boxes, which only
    separates them when coordinates are >= 0; decoded boxes of an untrained or diverged model can lie far
    outside the image, and boxes of different classes would then suppress each other. IoU is unchanged by
    the translation. No data-dependent branch.
    """
    return torch.cat((boxes.reshape(-1), boxes.new_zeros(1))).min()


def candidate_mask(scores: torch.Tensor, score_threshold: float, pre_nms_top_k: int) -> torch.Tensor:
    """``[N,P,K]`` bool: scores above the threshold, at most the ``pre_nms_top_k`` best per image and class.

    Only (image, class) pairs with more than ``pre_nms_top_k`` candidates pay for a top-k over the priors
    (a trained detector has few; a random-init one has all of them).
    """
    keep = scores > score_threshold
    if pre_nms_top_k >= scores.shape[1]:
        return keep
    over = keep.sum(dim=1) > pre_nms_top_k  # [N,K]
    if bool(over.any()):
        img, cls = over.nonzero(as_tuple=True)
        top = scores[img, :, cls].topk(pre_nms_top_k, dim=1).indices  # [R,pre], all above the threshold
        keep[img, :, cls] = False
        keep[img[:, None], top, cls[:, None]] = True
    return keep


def image_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float, top_k: int
) -> torch.Tensor:
    """Class-aware NMS of one image's candidates (``[K,4]``, ``[K]``, ``[K]``): indices of the ``top_k`` best kept.

    Exact shortcut: whether a box survives depends only on higher-scoring boxes of its class, so when NMS over
    the ``L`` best candidates already keeps ``top_k`` boxes, those are the answer; ``L`` grows 4x per try.
    """
    boxes = boxes - _nms_shift(boxes)
    limit = 4 * top_k
    while limit < scores.shape[0]:
        best = scores.topk(limit).indices
        kept = batched_nms(boxes[best], scores[best], classes[best], iou_threshold)
        if kept.shape[0] >= top_k:
            return best[kept[:top_k]]
        limit *= 4
    return batched_nms(boxes, scores, classes, iou_threshold)[:top_k]  # sorted by decreasing score


def select_detections(
    boxes: torch.Tensor, scores: torch.Tensor, config: PostprocessConfig = PostprocessConfig()
) -> list[Detections]:
    """Shared selection step for any detector with per-class scores.

    Args: ``boxes [N,P,4]`` relative xyxy (class-agnostic), ``scores [N,P,K]`` per foreground class.
    Per image and class: score > threshold, the ``pre_nms_top_k`` best, NMS; then the ``top_k`` best of the
    image over all classes, sorted by decreasing score. One ``batched_nms`` call per image (class-aware
    through its group ids), no loop over classes or boxes.
    """
    n = scores.shape[0]
    keep = candidate_mask(scores, config.score_threshold, config.pre_nms_top_k)
    img_idx, prior_idx, cls_idx = keep.nonzero(as_tuple=True)  # sorted by image
    cand_scores = scores[img_idx, prior_idx, cls_idx].float()
    cand_boxes = boxes[img_idx, prior_idx].float()
    per_image = torch.bincount(img_idx, minlength=n).tolist()
    out = []
    for b, s, c in zip(cand_boxes.split(per_image), cand_scores.split(per_image), cls_idx.split(per_image)):
        kept = image_nms(b, s, c, config.nms_iou, config.top_k)
        out.append(Detections(b[kept], s[kept], c[kept] + 1))
    return out


def postprocess(
    locs: torch.Tensor,
    logits: torch.Tensor,
    priors: torch.Tensor,
    config: PostprocessConfig = PostprocessConfig(),
    variances: tuple[float, float] = VARIANCES,
) -> list[Detections]:
    """SSD raw outputs ``locs [N,P,4]``, ``logits [N,P,C]`` -> per-image :class:`Detections` (relative xyxy)."""
    boxes = decode(locs.float(), priors.to(locs.device), variances)
    scores = torch.softmax(logits.float(), dim=-1)[..., 1:]
    return select_detections(boxes, scores, config)
