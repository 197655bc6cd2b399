"""CenterNet: Gaussian radius, heatmap drawing, focal loss, decoding, model contract, checkpoints, ONNX graph."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

import ssdcli.models.centernet  # noqa: F401  (registers the architectures)
from ssdcli.checkpoint import load_model, save_checkpoint
from ssdcli.errors import SsdError
from ssdcli.models import available_models, build_model
from ssdcli.models.centernet.decode import decode, decode_fixed, max_filter, merge_flip
from ssdcli.models.centernet.loss import focal_loss, gather_at
from ssdcli.models.centernet.targets import draw_gaussians, encode_centernet_targets, gaussian_radius
from ssdcli.postprocess import PostprocessConfig

S = 128  # input size in tests; output map 32 x 32
O = S // 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on the shared 2-core machine multi-threaded OpenMP under oversubscription makes the
    small training steps 10x slower. Restored after this module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(size: int = S, num_classes: int = 3, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("centernet-res18", num_classes, image_size=size, extra=extra or None)


# ---------------------------------------------------------------- radius and drawing


def test_gaussian_radius_reference_rule_hand_values() -> None:
    # o = 0.7, 10 x 10: case 3 of the reference code, (b3 + sqrt(b3^2 - 4 a3 c3)) / 2 with
    # a3 = 4o = 2.8, b3 = -2o(h+w) = -28, c3 = (o-1)wh = -30  ->  (-28 + sqrt(784 + 336)) / 2 = 2.73320...
    # (cases 1 and 2 give (20 + sqrt(400 - 70.588)) / 2 = 19.07 and (40 + sqrt(1120)) / 2 = 36.73).
    # 20 x 10: a3 = 2.8, b3 = -42, c3 = -60 -> (-42 + sqrt(1764 + 672)) / 2 = 3.67793...
    r = gaussian_radius(torch.tensor([10.0, 20.0]), torch.tensor([10.0, 10.0]))
    assert r[0].item() == pytest.approx(2.733201, abs=1e-4)
    assert r[1].item() == pytest.approx(3.677925, abs=1e-4)


def test_gaussian_radius_exact_rule_hand_values() -> None:
    # exact, 10 x 10: case 2 (both corners inside) binds: 4 r^2 - 40 r + 30 = 0 -> r = (40 - sqrt(1120)) / 8
    r = gaussian_radius(torch.tensor([10.0]), torch.tensor([10.0]), exact=True)
    assert r.item() == pytest.approx(0.816700, abs=1e-5)
    # a box shrunk by r on every side has IoU exactly min_overlap with the original
    shrunk = torch.tensor([[r.item(), r.item(), 10 - r.item(), 10 - r.item()]])
    assert box_iou(shrunk, torch.tensor([[0.0, 0.0, 10.0, 10.0]])).item() == pytest.approx(0.7, abs=1e-5)


def test_draw_single_gaussian_peak_and_shape() -> None:
    heat = draw_gaussians(torch.tensor([[5, 6]]), torch.tensor([2]), torch.tensor([0]), 1, 12, 10)[0]
    assert heat.shape == (12, 10)
    assert heat[6, 5].item() == 1.0  # exactly 1 at the integer centre (y=6, x=5)
    assert heat.max().item() == 1.0
    sigma = (2 * 2 + 1) / 6
    assert heat[6, 6].item() == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-6)
    assert heat[8, 7].item() == pytest.approx(math.exp(-8 / (2 * sigma**2)), rel=1e-6)
    assert heat[6, 8].item() == 0.0 and heat[9, 5].item() == 0.0  # outside the radius-2 window
    assert int((heat > 0).sum()) == 25


def test_draw_overlap_is_max_not_sum_and_classes_separate() -> None:
    centers = torch.tensor([[4, 4], [6, 4], [5, 4]])
    heat = draw_gaussians(centers, torch.tensor([3, 3, 3]), torch.tensor([0, 0, 1]), 2, 9, 11)
    one = draw_gaussians(centers[:1], torch.tensor([3]), torch.tensor([0]), 1, 9, 11)[0]
    two = draw_gaussians(centers[1:2], torch.tensor([3]), torch.tensor([0]), 1, 9, 11)[0]
    assert torch.equal(heat[0], torch.maximum(one, two))
    assert heat[0, 4, 5].item() < 1.0  # between the two centres: max of both, not their sum
    assert heat[0, 4, 4].item() == 1.0 and heat[0, 4, 6].item() == 1.0
    assert heat[1, 4, 5].item() == 1.0 and heat[1].max().item() == 1.0  # own channel


def test_encode_targets_values() -> None:
    # box in cells: x 4..10.5, y 8..12 -> centre (7.25, 10), size (6.5, 4)
    box = torch.tensor([[4 / 32, 8 / 32, 10.5 / 32, 12 / 32]])
    no_labels = torch.zeros(0, dtype=torch.long)
    t = encode_centernet_targets([box, torch.zeros(0, 4)], [torch.tensor([2]), no_labels], 3, (32, 32))
    assert t["heatmap"].shape == (2, 3, 32, 32)
    assert t["heatmap"][0, 1, 10, 7].item() == 1.0
    assert t["heatmap"][0, 0].max().item() == 0.0 and t["heatmap"][1].max().item() == 0.0
    assert t["index"][0, 0].item() == 10 * 32 + 7
    assert torch.allclose(t["size"][0, 0], torch.tensor([6.5, 4.0]))
    assert torch.allclose(t["offset"][0, 0], torch.tensor([0.25, 0.0]))
    assert t["mask"].tolist() == [[1.0], [0.0]]
    r = int(gaussian_radius(torch.tensor(6.5), torch.tensor(4.0)).floor())
    assert int((t["heatmap"][0, 1] > 0).sum()) == (2 * r + 1) ** 2
    with pytest.raises(SsdError):
        encode_centernet_targets([box], [torch.tensor([4])], 3, (32, 32))


# ---------------------------------------------------------------- loss


def _direct_focal(logits: torch.Tensor, gt: torch.Tensor, n_obj: float) -> torch.Tensor:
    p = torch.sigmoid(logits.double()).clamp(1e-4, 1 - 1e-4)
    g = gt.double()
    pos = g == 1
    pos_loss = ((1 - p) ** 2 * torch.log(p))[pos].sum()
    neg_loss = ((1 - g) ** 4 * p**2 * torch.log(1 - p))[~pos].sum()
    return -(pos_loss + neg_loss) / max(n_obj, 1)


def test_focal_loss_matches_direct_formula() -> None:
    torch.manual_seed(1)
    boxes = [torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8]]), torch.tensor([[0.2, 0.3, 0.7, 0.9]])]
    labels = [torch.tensor([1, 2]), torch.tensor([2])]
    t = encode_centernet_targets(boxes, labels, 2, (16, 16))
    logits = torch.randn(2, 2, 16, 16) * 3
    logits[0, 0, 0, 0] = 30.0  # saturated: the clamp keeps it finite
    logits[1, 1, 3, 3] = -30.0
    got = focal_loss(logits, t["heatmap"], t["mask"].sum())
    assert got.item() == pytest.approx(_direct_focal(logits, t["heatmap"], 3).item(), rel=1e-5)
    assert focal_loss(logits, t["heatmap"]).item() == pytest.approx(got.item(), rel=1e-6)  # 3 peaks == 3 objects


def test_loss_terms_and_zero_objects() -> None:
    model = _model(64)
    out = model(torch.randn(2, 3, 64, 64))
    empty = model.encode_targets([torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2)
    losses = model.compute_loss(out, empty)
    assert set(losses) == {"heatmap", "size", "offset", "total"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["size"].item() == 0.0 and losses["offset"].item() == 0.0
    losses["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # weighted total: heatmap + 0.1 * size + 1 * offset (paper's lambda_size, lambda_off)
    t = model.encode_targets([torch.tensor([[0.1, 0.2, 0.6, 0.7]])] * 2, [torch.tensor([1])] * 2)
    losses = model.compute_loss(out, t)
    expected = losses["heatmap"] + 0.1 * losses["size"] + losses["offset"]
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    pred_size = gather_at(out[1].detach(), t["index"])
    assert losses["size"].item() == pytest.approx((pred_size - t["size"]).abs().mean().item(), rel=1e-5)


# ---------------------------------------------------------------- decode


def _outputs_from_targets(t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The outputs of a perfect model: heatmap = target heatmap, size/offset written at the centres."""
    heat = torch.logit(t["heatmap"], eps=1e-6)
    n, _, h, w = heat.shape
    size = torch.zeros(n, 2, h * w)
    offset = torch.zeros(n, 2, h * w)
    idx = t["index"][:, None, :].expand(-1, 2, -1)
    size.scatter_(2, idx, t["size"].permute(0, 2, 1))
    offset.scatter_(2, idx, t["offset"].permute(0, 2, 1))
    return heat, size.reshape(n, 2, h, w), offset.reshape(n, 2, h, w)


@pytest.mark.parametrize("kernel", [3, 5])
def test_max_filter_equals_max_pool(kernel: int) -> None:
    x = torch.randn(2, 3, 9, 7)
    x[0, 0, 4, 4] = x[0, 0, 4, 5]  # a tie
    ref = torch.nn.functional.max_pool2d(x, kernel, stride=1, padding=kernel // 2)
    assert torch.equal(max_filter(x, kernel), ref)


def test_decode_hand_made_heatmap() -> None:
    heat = torch.full((1, 2, 8, 8), -10.0)
    heat[0, 0, 2, 3] = 2.0  # class 1 peak at (x=3, y=2)
    heat[0, 0, 2, 4] = 1.0  # its neighbour: suppressed by the 3x3 max-pool
    heat[0, 1, 5, 6] = 0.0  # class 2 peak at (x=6, y=5), score 0.5
    size = torch.zeros(1, 2, 8, 8)
    offset = torch.zeros(1, 2, 8, 8)
    size[0, :, 2, 3] = torch.tensor([2.0, 4.0])
    offset[0, :, 2, 3] = torch.tensor([0.5, 0.25])
    size[0, :, 5, 6] = torch.tensor([1.0, 1.0])
    dets = decode((heat, size, offset), PostprocessConfig(score_threshold=0.1))
    assert len(dets) == 1 and len(dets[0]) == 2
    d = dets[0]
    assert d.labels.tolist() == [1, 2]
    assert d.scores.tolist() == pytest.approx([torch.sigmoid(torch.tensor(2.0)).item(), 0.5])
    # centre (3.5, 2.25) +- (1, 2) -> (2.5, 0.25, 4.5, 4.25) / 8; (6, 5) +- 0.5 -> (5.5, 4.5, 6.5, 5.5) / 8
    expected = torch.tensor([[2.5, 0.25, 4.5, 4.25], [5.5, 4.5, 6.5, 5.5]]) / 8
    assert torch.allclose(d.boxes, expected)
    assert len(decode((heat, size, offset), PostprocessConfig(score_threshold=0.6))[0]) == 1
    boxes, scores, labels = decode_fixed((heat, size, offset), k=100)
    assert boxes.shape == (1, 100, 4) and scores.shape == (1, 100) and labels.dtype == torch.int64


def test_encode_decode_round_trip() -> None:
    gt = [
        torch.tensor([[0.10, 0.12, 0.43, 0.50], [0.52, 0.31, 0.97, 0.88], [0.20, 0.55, 0.37, 0.93]]),
        torch.tensor([[0.05, 0.05, 0.95, 0.95]]),
    ]
    labels = [torch.tensor([1, 2, 1]), torch.tensor([2])]
    model = _model()
    t = model.encode_targets(gt, labels)
    dets = model.decode(_outputs_from_targets(t), PostprocessConfig(score_threshold=0.9))
    for d, b, l in zip(dets, gt, labels):
        assert len(d) == len(b)
        order = torch.argsort(d.boxes[:, 0])
        ref = torch.argsort(b[:, 0])
        assert torch.allclose(d.boxes[order], b[ref], atol=1e-5)
        assert torch.equal(d.labels[order], l[ref])


def test_flip_merge_of_mirrored_outputs_keeps_boxes() -> None:
    gt = [torch.tensor([[0.11, 0.2, 0.43, 0.61]])]
    mirrored = [torch.tensor([[1 - 0.43, 0.2, 1 - 0.11, 0.61]])]
    labels = [torch.tensor([2])]
    t = encode_centernet_targets(gt, labels, 2, (O, O))
    tf = encode_centernet_targets(mirrored, labels, 2, (O, O))
    merged = merge_flip(_outputs_from_targets(t), _outputs_from_targets(tf))
    d = decode(merged, PostprocessConfig(score_threshold=0.9))[0]
    assert len(d) == 1 and torch.allclose(d.boxes, gt[0], atol=1e-5) and d.labels.tolist() == [2]


# ---------------------------------------------------------------- model


def test_registry_and_sizes() -> None:
    assert {"centernet-res18", "centernet-res50"} <= set(available_models())
    assert build_model("centernet-res18", 2).config.image_size == 384
    with pytest.raises(SsdError, match="divisible by 32"):
        build_model("centernet-res18", 2, image_size=200)


@pytest.mark.parametrize("size,batch", [(128, 1), (160, 2)])
def test_output_shapes_train_and_eval(size: int, batch: int) -> None:
    model = _model(size)
    assert model.output_names == ("heatmap", "size", "offset")
    x = torch.randn(batch, 3, size, size)
    for mode in (True, False):
        model.train(mode)
        if mode and batch == 1:  # BatchNorm cannot train on one image: a clear error, not a cryptic one
            with pytest.raises(SsdError, match="at least 2 images"):
                model(x)
            continue
        with torch.no_grad():
            heat, wh, off = model(x)
        o = size // 4
        assert heat.shape == (batch, 2, o, o) and wh.shape == (batch, 2, o, o) and off.shape == (batch, 2, o, o)
    dets = model.decode((heat, wh, off), PostprocessConfig())
    assert len(dets) == batch and all(len(d) <= 100 for d in dets)
    assert all(((d.boxes >= 0) & (d.boxes <= 1)).all() for d in dets)
    with pytest.raises(SsdError):
        model(torch.randn(1, 3, size + 32, size))


def test_heads_init_and_prefixes() -> None:
    model = _model()
    assert torch.allclose(model.head_heatmap[2].bias, torch.full((2,), -2.19))
    prefixes = model.head_parameter_prefixes()
    head_keys = [k for k in model.state_dict() if k.startswith(prefixes)]
    assert head_keys and all(k.startswith("head_heatmap.") for k in head_keys)


def test_backbone_loads_torchvision_state_dict() -> None:
    import torchvision

    model = _model()
    ref = torchvision.models.resnet18(weights=None)
    model.load_backbone_state(ref.state_dict())
    assert torch.equal(model.backbone.body.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    assert set(model.backbone.body.state_dict()) == {k for k in ref.state_dict() if not k.startswith("fc.")}


def test_a_few_steps_reduce_the_loss() -> None:
    model = _model(64)
    model.train()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 64)
    t = model.encode_targets(
        [torch.tensor([[0.1, 0.1, 0.5, 0.6]]), torch.tensor([[0.4, 0.3, 0.9, 0.9], [0.05, 0.6, 0.3, 0.95]])],
        [torch.tensor([1]), torch.tensor([2, 1])],
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        loss = model.compute_loss(model(x), t)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses


@pytest.mark.parametrize("extra", [{}, {"deform": True}])
def test_checkpoint_round_trip(tmp_path, extra: dict) -> None:
    model = _model(160, **extra).eval()
    path = tmp_path / "cn.pth"
    save_checkpoint(path, model)
    loaded = load_model(path, "cpu")
    assert loaded.config.arch == "centernet-res18" and loaded.config.image_size == 160
    assert loaded.config.extra["deform"] == bool(extra)
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x)):
            assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_onnx_graph_matches_decode(tmp_path) -> None:
    """Peak extraction + top-k inside the ONNX graph == :func:`decode` of the same raw outputs.

    The graph's raw outputs are compared to PyTorch with a tolerance; the detections are compared against
    ``decode`` of the ONNX raw outputs (decoding PyTorch's outputs could differ by a near-tie of neighbouring
    heatmap values that the ~1e-6 backend difference flips)."""
    ort = pytest.importorskip("onnxruntime")
    from ssdcli.models.export_graph import DETECTION_OUTPUTS, detections_from_outputs

    model = _model().eval()
    with torch.no_grad():  # a less flat heatmap than the initialisation
        model.head_heatmap[2].weight.normal_(std=0.05)
        model.head_size[2].bias.fill_(4.0)
    config = PostprocessConfig(score_threshold=0.05, top_k=50)
    graph = model.export_graph(config, with_raw=True).eval()
    path = tmp_path / "cn.onnx"
    torch.onnx.export(
        graph, (torch.randn(1, 3, S, S),), str(path), input_names=["images"],
        output_names=list(DETECTION_OUTPUTS) + list(model.output_names),
        dynamic_axes={"images": {0: "n"}}, opset_version=17, dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, S, S)
    outs = session.run(None, {"images": x.numpy()})
    assert outs[1].shape == (2, 50, 4) and outs[3].dtype.name == "int64" and outs[0].dtype.name == "int64"
    with torch.no_grad():
        raw = model(x)
    for a, b in zip(raw, outs[4:]):
        assert torch.allclose(a, torch.from_numpy(b), atol=1e-4)
    ref = model.decode(tuple(torch.from_numpy(o) for o in outs[4:]), config)
    for r, g in zip(ref, detections_from_outputs(*outs[:4])):
        assert len(r) == len(g) > 0
        assert torch.allclose(r.boxes, g.boxes, atol=1e-5) and torch.equal(r.labels, g.labels)
        assert torch.allclose(r.scores, g.scores, atol=1e-6)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_deformable_variant_exports_at_opset_19(tmp_path) -> None:
    """torchvision DeformConv2d -> ONNX DeformConv through the symbolic registered by the package; opset < 19
    is refused with a clear exporter error."""
    ort = pytest.importorskip("onnxruntime")
    model = _model(64, deform=True).eval()
    with torch.no_grad():
        for stage in model.neck:
            stage.conv.offset_mask.weight.normal_(std=0.01)  # non-trivial offsets and masks
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(torch.onnx.errors.OnnxExporterError, match="opset 19"):
        torch.onnx.export(model, (x,), str(tmp_path / "old.onnx"), opset_version=17, dynamo=False)
    path = tmp_path / "deform.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["images"], opset_version=19, dynamo=False)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    with torch.no_grad():
        for a, b in zip(model(x), got):
            assert torch.allclose(a, torch.from_numpy(b), atol=1e-4)


# ---------------------------------------------------------------- training augmentation

AUG_COLORS = ((230, 20, 20), (20, 220, 30), (30, 40, 235))


def _scene(w: int = 150, h: int = 110) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grey noisy background with three filled rectangles (red, green, blue; labels 1..3), VOC pixel boxes."""
    g = torch.Generator().manual_seed(3)
    img = torch.randint(110, 150, (3, h, w), generator=g, dtype=torch.uint8)
    rects = ((10, 12, 60, 50), (70, 30, 140, 100), (20, 70, 45, 105))  # x0, y0, x1, y1 (exclusive), 0-based
    for (x0, y0, x1, y1), c in zip(rects, AUG_COLORS):
        img[:, y0:y1, x0:x1] = torch.tensor(c, dtype=torch.uint8).view(3, 1, 1)
    boxes = torch.tensor([[x0 + 1, y0 + 1, x1, y1] for x0, y0, x1, y1 in rects], dtype=torch.float32)
    return img, boxes, torch.tensor([1, 2, 3])


def _colour_box(img: torch.Tensor, label: int) -> torch.Tensor | None:
    """Continuous xyxy pixel box of the pixels of rectangle ``label`` in an augmented image (None if absent)."""
    c = label - 1
    others = [i for i in range(3) if i != c]
    mask = (img[c] > 170) & (img[others[0]] < 90) & (img[others[1]] < 90)
    if int(mask.sum()) == 0:
        return None
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)


def test_augment_boxes_stay_on_their_objects() -> None:
    from ssdcli.models.centernet.augment import CenterNetTrainAugment

    img, boxes, labels = _scene()
    aug = CenterNetTrainAugment(128, color=0.0, lighting_std=0.0)
    flips = checked = 0
    for seed in range(40):
        out, b, l = aug(img, boxes, labels, torch.Generator().manual_seed(seed))
        flips += aug.sample(150, 110, boxes, torch.Generator().manual_seed(seed)).flip
        found = {int(lab): bb * 128 for bb, lab in zip(b, l)}
        for lab in (1, 2, 3):
            seen = _colour_box(out, lab)
            big = seen is not None and min(seen[0, 2] - seen[0, 0], seen[0, 3] - seen[0, 1]) >= 6
            if not big:
                continue
            assert lab in found, (seed, lab)  # a visible object keeps its box
            iou = box_iou(found[lab][None], seen).item()
            assert iou > 0.9, (seed, lab, found[lab].tolist(), seen.tolist(), iou)
            checked += 1
    assert checked >= 80 and 8 <= flips <= 32


def test_augment_shapes_dtypes_and_determinism() -> None:
    from ssdcli.models.centernet.augment import CenterNetTrainAugment

    img, boxes, labels = _scene()
    aug = CenterNetTrainAugment(96)
    a = aug(img, boxes, labels, torch.Generator().manual_seed(5))
    b = aug(img, boxes, labels, torch.Generator().manual_seed(5))
    c = aug(img, boxes, labels, torch.Generator().manual_seed(6))
    assert a[0].shape == (3, 96, 96) and a[0].dtype == torch.uint8
    assert a[1].dtype == torch.float32 and a[1].shape[1] == 4 and a[2].dtype == torch.int64
    assert a[1].shape[0] == a[2].shape[0] >= 1
    assert bool((a[1] >= 0).all() and (a[1] <= 1).all() and (a[1][:, 2:] > a[1][:, :2]).all())
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    # the colour steps do not move boxes: same draws with colour off give the same geometry
    plain = CenterNetTrainAugment(96, color=0.0, lighting_std=0.0)
    d = plain(img, boxes, labels, torch.Generator().manual_seed(5))
    assert torch.equal(a[1], d[1]) and torch.equal(a[2], d[2]) and not torch.equal(a[0], d[0])


def test_augment_without_boxes() -> None:
    from ssdcli.models.centernet.augment import CenterNetTrainAugment

    img, _, _ = _scene()
    out, b, l = CenterNetTrainAugment(64)(img, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.Generator())
    assert out.shape == (3, 64, 64) and b.shape == (0, 4) and b.dtype == torch.float32
    assert l.shape == (0,) and l.dtype == torch.int64


def test_augment_plan_ranges_and_identity_plan_is_the_eval_warp() -> None:
    from ssdcli.data.images import resize_square
    from ssdcli.models.centernet.augment import CenterNetPlan, CenterNetTrainAugment, centre_border

    assert centre_border(128, 640) == 128 and centre_border(128, 200) == 64 and centre_border(128, 96) == 32
    assert centre_border(128, 1) == 0
    aug = CenterNetTrainAugment(128)
    for seed in range(50):
        p = aug.sample(150, 110, None, torch.Generator().manual_seed(seed))
        x0, y0, x1, y1 = p.window
        scale = (x1 - x0) / 150
        assert 0.6 <= scale <= 1.4 and (y1 - y0) / 110 == pytest.approx(scale)  # the image's own aspect
        assert 32 <= (x0 + x1) / 2 <= 150 - 32 and 32 <= (y0 + y1) / 2 <= 110 - 32
        b, c, s = p.photometric.brightness, p.photometric.contrast, p.photometric.saturation
        assert all(0.6 <= v <= 1.4 for v in (b, c, s)) and p.photometric.hue is None
    img, boxes, labels = _scene()
    identity = CenterNetPlan(150, 110, (0.0, 0.0, 150.0, 110.0), False, None, None)
    out, b, l = aug.render(img, boxes, labels, identity)
    assert (out.int() - resize_square(img, 128).int()).abs().max() <= 1
    rel = (boxes - torch.tensor([1.0, 1.0, 0.0, 0.0])) / torch.tensor([150.0, 110.0, 150.0, 110.0])
    assert torch.allclose(b, rel, atol=1e-6) and torch.equal(l, labels)


def test_augment_clips_and_drops_boxes_outside_the_window() -> None:
    from ssdcli.models.centernet.augment import CenterNetPlan, CenterNetTrainAugment

    img, boxes, labels = _scene()
    aug = CenterNetTrainAugment(100, color=0.0, lighting_std=0.0)
    # window = the right half of the image, mirrored: the red box (x 10..60) is gone, the green one is cut at x=75
    plan = CenterNetPlan(150, 110, (75.0, 0.0, 150.0, 110.0), True, None, None)
    out, b, l = aug.render(img, boxes, labels, plan)
    assert l.tolist() == [2]
    expect = torch.tensor([150 - 140, 30, 150 - 75, 100]) / torch.tensor([75.0, 110.0, 75.0, 110.0])
    assert torch.allclose(b[0], expect, atol=1e-6)
    # zoomed out far to the top left: the image covers a corner, the rest is the mean-pixel fill
    plan = CenterNetPlan(150, 110, (-150.0, -110.0, 150.0, 110.0), False, None, None)
    out, b, l = aug.render(img, boxes, labels, plan)
    assert out[:, :, 0].eq(torch.tensor(aug.fill, dtype=torch.uint8).view(3, 1)).all()
    assert bool((b >= 0.5 - 1e-6).all()) and l.tolist() == [1, 2, 3]


def test_augment_render_from_a_reduced_decode_matches_full() -> None:
    """A source decoded at 1/2 scale (as JPEG DCT scaling gives) renders the same geometry as the full one."""
    from torchvision.transforms.v2 import functional as TF

    from ssdcli.models.centernet.augment import CenterNetPlan, CenterNetTrainAugment

    img, boxes, labels = _scene(300, 220)
    boxes = boxes * 2
    aug = CenterNetTrainAugment(64, color=0.0, lighting_std=0.0)
    plan = CenterNetPlan(300, 220, (20.0, 10.0, 290.0, 208.0), False, None, None)
    assert aug.max_reduction(plan) == 2
    half = TF.resize(img, [110, 150], antialias=True)
    full_out, full_b, _ = aug.render(img, boxes, labels, plan)
    red_out, red_b, _ = aug.render(half, boxes, labels, plan, reduction=2)
    assert torch.allclose(full_b, red_b, atol=1.5 / 64)
    assert (full_out.float() - red_out.float()).abs().mean() < 6
    with pytest.raises(ValueError):
        aug.render(half, boxes, labels, plan)


def test_model_trains_with_the_centernet_augmentation() -> None:
    from ssdcli.models.centernet.augment import CenterNetTrainAugment

    aug = _model(96).train_augment()
    assert isinstance(aug, CenterNetTrainAugment) and aug.size == 96
