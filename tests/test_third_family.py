"""A detector family defined and registered in this module only runs through train, eval, detect and
export-onnx: the shared code asks the family through :class:`ssdcli.models.base.DetectorModel` and the registry,
never by name or type.

The family ("tinygrid") predicts, for each cell of an 8x8 grid, class logits and one sigmoid box: the cell that
holds a ground truth's centre is responsible for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ssdcli.data.images import resize_square
from ssdcli.data.records import load_prepared
from ssdcli.data.transforms import TrainAugment, voc_to_continuous
from ssdcli.deploy.onnx_export import export_onnx, read_metadata
from ssdcli.engine.detect import run_detect
from ssdcli.engine.evaluator import evaluate_detector, load_detector
from ssdcli.engine.trainer import TrainOptions, train
from ssdcli.models import registry
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.export_graph import select_in_graph
from ssdcli.postprocess import PostprocessConfig, select_detections

ARCH, SIZE, GRID = "tinygrid", 64, 8


class ResizeAugment(TrainAugment):
    """Warp to ``size`` x ``size``, random horizontal flip (the plan is the flip)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def sample(self, width, height, boxes, generator):  # type: ignore[no-untyped-def]
        return bool(torch.rand((), generator=generator) < 0.5)

    def render(self, image, boxes, labels, plan, reduction=1):  # type: ignore[no-untyped-def]
        h, w = image.shape[-2:]
        rel = torch.from_numpy((voc_to_continuous(boxes) / [w, h, w, h]).clip(0, 1).astype(np.float32)).reshape(-1, 4)
        out = resize_square(image, self.size)
        if plan:
            out, rel = out.flip(-1), torch.stack((1 - rel[:, 2], rel[:, 1], 1 - rel[:, 0], rel[:, 3]), dim=1)
        return out, rel, torch.as_tensor(labels, dtype=torch.int64).reshape(-1)


class TinyGridGraph(nn.Module):
    def __init__(self, model: TinyGrid, config: PostprocessConfig) -> None:
        super().__init__()
        self.model, self.post = model, config

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        boxes, logits = self.model(images)
        return select_in_graph(boxes.float(), torch.softmax(logits.float(), -1)[..., 1:], self.post)


class TinyGrid(DetectorModel):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1)
        )
        self.box = nn.Conv2d(16, 4, 1)
        self.cls = nn.Conv2d(16, config.num_classes, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(images)
        f = F.relu(self.body(images))
        n = images.shape[0]
        cxcy_wh = torch.sigmoid(self.box(f)).permute(0, 2, 3, 1).reshape(n, -1, 4)
        boxes = torch.cat((cxcy_wh[..., :2] - cxcy_wh[..., 2:] / 2, cxcy_wh[..., :2] + cxcy_wh[..., 2:] / 2), -1)
        return boxes, self.cls(f).permute(0, 2, 3, 1).reshape(n, -1, self.config.num_classes)

    def encode_targets(self, gt_boxes, gt_labels):  # type: ignore[no-untyped-def]
        cls_t = torch.zeros(len(gt_boxes), GRID * GRID, dtype=torch.int64)
        box_t = torch.zeros(len(gt_boxes), GRID * GRID, 4)
        for i, (b, lab) in enumerate(zip(gt_boxes, gt_labels)):
            centre = ((b[:, :2] + b[:, 2:]) / 2 * GRID).long().clamp(0, GRID - 1)
            cell = centre[:, 1] * GRID + centre[:, 0]
            cls_t[i, cell], box_t[i, cell] = lab, b
        return {"cls_targets": cls_t, "box_targets": box_t}

    def compute_loss(self, outputs, targets):  # type: ignore[no-untyped-def]
        boxes, logits = outputs
        cls_t, pos = targets["cls_targets"].to(logits.device), targets["cls_targets"].to(logits.device) > 0
        cls = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), cls_t.reshape(-1))
        loc = F.l1_loss(boxes[pos], targets["box_targets"].to(boxes.device)[pos]) if pos.any() else boxes.sum() * 0
        return {"loc": loc, "cls": cls, "total": loc + cls}

    def decode(self, outputs, config=PostprocessConfig()):  # type: ignore[no-untyped-def]
        boxes, logits = outputs
        return select_detections(boxes.float(), torch.softmax(logits.float(), -1)[..., 1:], config)

    def train_augment(self, max_zoom_out=None):  # type: ignore[no-untyped-def]
        return ResizeAugment(self.config.image_size)

    def export_graph(self, config: PostprocessConfig) -> nn.Module:
        return TinyGridGraph(self, config)

    def head_parameter_prefixes(self) -> tuple[str, ...]:
        return ("cls.",)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("grid_boxes", "grid_logits")  # distinct from the contract outputs (num_detections, boxes, ...)


@pytest.fixture(scope="module")
def tinygrid():
    registry.register(ARCH, SIZE)(TinyGrid)
    yield ARCH
    registry.unregister(ARCH)


@pytest.fixture(scope="module")
def data(prepared_sample) -> Path:
    return prepared_sample(8, 4, image_size=(64, 80), seed=3)


def test_a_family_from_a_test_module_trains_evaluates_detects_and_exports(tinygrid, data, tmp_path, one_thread):
    options = TrainOptions(
        data=str(data), arch=tinygrid, iters=4, batch=4, workers=0, seed=1,
        project=str(tmp_path / "runs"), name="t", device="cpu", log_every=1,
    )
    result = train(options, report=lambda m: None)
    weights = result.run_dir / "last.pth"
    assert weights.is_file()

    detector = load_detector(weights, "cpu", PostprocessConfig(score_threshold=0.0))
    assert detector.config.arch == tinygrid
    dataset = load_prepared(data, splits=["test"])
    report = evaluate_detector(detector, dataset.split("test"), dataset.classes)
    assert 0.0 <= float(report.map) <= 1.0 or np.isnan(float(report.map))

    images = sorted(str(p) for p in (data.parent / "voc").rglob("*.jpg"))[:2]
    summary = run_detect(detector, images, tmp_path / "detect", conf=0.0)
    assert summary is not None and (tmp_path / "detect").is_dir()

    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(weights, onnx_path, postprocess=PostprocessConfig(score_threshold=0.0))
    meta = read_metadata(onnx.load(str(onnx_path)))
    assert meta is not None and meta["config"]["arch"] == tinygrid and meta["decoder"] == tinygrid
    raw_path = tmp_path / "tiny_raw.onnx"
    export_onnx(weights, raw_path, nms=False)
    onnx_detector = load_detector(raw_path, "cpu", PostprocessConfig(score_threshold=0.0))
    torch_dets = detector.predict(images)
    onnx_dets = onnx_detector.predict(images)
    for a, b in zip(torch_dets, onnx_dets):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
