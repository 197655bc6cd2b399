"""CenterNet-DLA-34 (deformable and plain): shapes, parameter counts, ImageNet weights, learning, ONNX export,
flip testing and multi-scale testing on a trained tiny model. Inputs of 32-96 px, one thread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from cli_helpers import noise_images, one_line_error, ssd, tiny_checkpoint, tiny_prepared
from torchvision.ops import box_iou

from ssdcli.checkpoint import save_checkpoint
from ssdcli.convert.backbones import identify_backbone, load_backbone_state, load_pretrained_backbone
from ssdcli.data.images import read_image, resize_square
from ssdcli.data.records import load_prepared
from ssdcli.data.transforms import voc_to_continuous
from ssdcli.deploy.onnx_export import export_onnx
from ssdcli.errors import SsdError
from ssdcli.inference import Detector, TorchBackend
from ssdcli.models import build_model
from ssdcli.models.centernet.dla import DLA34
from ssdcli.models.centernet.multiscale import scaled_size
from ssdcli.postprocess import PostprocessConfig

pytestmark = pytest.mark.usefixtures("one_thread_module")

ARCHS = ("centernet-dla34", "centernet-dla34-plain")


def _model(arch: str = "centernet-dla34-plain", size: int = 64, num_classes: int = 3, seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    return build_model(arch, num_classes, image_size=size)


# ---------------------------------------------------------------- architecture


@pytest.mark.parametrize("arch", ARCHS)
def test_output_shapes_and_stride_4(arch: str) -> None:
    model = _model(arch, 96).eval()
    assert model.config.extra["deform"] == (arch == "centernet-dla34")
    with torch.no_grad():
        heat, size, offset = model(torch.randn(2, 3, 96, 96))
    assert heat.shape == (2, 2, 24, 24) and size.shape == (2, 2, 24, 24) and offset.shape == (2, 2, 24, 24)
    with torch.no_grad():  # other sizes only through raw_outputs (multi-scale); forward checks the size
        assert model.raw_outputs(torch.randn(1, 3, 64, 128))[0].shape == (1, 2, 16, 32)
    with pytest.raises(SsdError, match=r"\[N, 3, 96, 96\]"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(SsdError, match="divisible by 32"):
        build_model(arch, 3, image_size=100)


def test_deformable_model_trains_under_cpu_bf16_autocast() -> None:
    """`ssd train --amp` on a CPU: torchvision's deformable kernel has no bfloat16, so it runs in float32 inside
    the autocast region, the rest of the network in bf16: gradients flow, and the outputs are float32's within
    bf16 rounding."""
    model = _model("centernet-dla34", 64).train()
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        heat, size, offset = model(x)
    (heat.float().sum() + size.float().sum() + offset.float().sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = model(x)
    for a, b in zip(exact, rounded):
        assert (a - b.float()).abs().max() <= 0.05 * a.abs().max() + 1e-3


def test_dla34_levels_strides_and_channels() -> None:
    with torch.no_grad():
        feats = DLA34().eval().features(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [16, 32, 64, 128, 256, 512]
    assert [64 // f.shape[-1] for f in feats] == [1, 2, 4, 8, 16, 32]


def test_parameter_counts() -> None:
    """DLA-34 without its classifier: 15.23 M (the DLA paper's 15.7 M counts the 1000-class classifier,
    0.51 M; the authors' file also holds two unused projections, 0.04 M). The whole VOC detector (20 classes,
    head_conv 256): 19.6 M with deformable convolutions, 19.0 M plain."""
    deform, plain = (build_model(a, 21, image_size=64) for a in ARCHS)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(deform.backbone) == count(plain.backbone) == 15_229_104
    assert count(deform) == 19_617_080 and count(plain) == 18_979_016
    # 16 deformable 3x3 convs in the up-sampling path, each with its 27-channel offset/mask conv: proj + node per
    # merged map, DLA-up stages merging 1, 2 and 3 maps (12) and the final IDA-up merging 2 (4)
    offsets = [m for n, m in deform.named_modules() if n.endswith("offset_mask")]
    assert len(offsets) == 16


# ---------------------------------------------------------------- ImageNet weights


def _authors_layout_state() -> dict[str, torch.Tensor]:
    """A state dict laid out as the DLA authors' dla34-ba72cf86.pth: our names + classifier + the two unused
    depth-2 tree projections; random values."""
    torch.manual_seed(5)
    net = DLA34()
    for p in net.parameters():
        p.data.normal_()
    state = dict(net.state_dict())
    state.update({"fc.weight": torch.randn(1000, 512, 1, 1), "fc.bias": torch.randn(1000)})
    for level, cin, cout in (("level3", 64, 128), ("level4", 128, 256)):
        state[f"{level}.project.0.weight"] = torch.randn(cout, cin, 1, 1)
        for k in ("weight", "bias", "running_mean", "running_var"):
            state[f"{level}.project.1.{k}"] = torch.randn(cout)
    return state


def test_backbone_weights_in_the_authors_layout_load() -> None:
    state = _authors_layout_state()
    assert identify_backbone(state) == "dla34"
    model = _model("centernet-dla34")
    text = load_backbone_state(model, state, "dla34.pth")
    assert "dla34 ImageNet weights -> backbone" in text
    assert torch.equal(model.backbone.level4.tree2.root.conv.weight, state["level4.tree2.root.conv.weight"])
    assert torch.equal(model.backbone.base_layer[1].running_var, state["base_layer.1.running_var"])
    with pytest.raises(SsdError, match="do not fit"):
        load_backbone_state(_model("centernet-dla34-plain"), torchvision.models.resnet18().state_dict(), "r18.pth")


def test_pretrained_backbone_offline_is_one_clear_line(monkeypatch) -> None:
    def offline(url, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(SsdError) as err:
        load_pretrained_backbone(_model("centernet-dla34"))
    msg = str(err.value)
    assert "\n" not in msg and "dla34-ba72cf86.pth" in msg and "--backbone-weights FILE" in msg


# ---------------------------------------------------------------- learning


@pytest.mark.parametrize("arch", ARCHS)
def test_both_variants_learn_the_sample_data(arch: str, prepared_sample) -> None:  # type: ignore[no-untyped-def]
    root = prepared_sample(4, 0)
    records = load_prepared(root).split("train")[:2]
    images = torch.stack([resize_square(read_image(r.path), 64) for r in records])
    model = _model(arch, 64, num_classes=len(load_prepared(root).classes) + 1)
    x = model.config.preprocess.normalize(images)
    boxes = [torch.from_numpy(voc_to_continuous(r.boxes) / np.array([r.width, r.height] * 2)).float() for r in records]
    targets = model.encode_targets(boxes, [torch.from_numpy(r.labels) for r in records])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(6):
        loss = model.compute_loss(model(x), targets)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    if arch == "centernet-dla34":  # the offsets/masks of the deformable convolutions took gradient steps
        assert any(float(m.weight.detach().abs().sum()) > 0 for n, m in model.named_modules()
                   if n.endswith("offset_mask"))


# ---------------------------------------------------------------- ONNX export


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_plain_variant_exports_with_detections_equal_to_pytorch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = _model("centernet-dla34-plain", 64).eval()
    with torch.no_grad():  # a peaky heatmap, so there are detections to compare
        model.head_heatmap[2].weight.normal_(std=0.05)
        model.head_size[2].bias.fill_(4.0)
    ckpt = tmp_path / "plain.pth"
    save_checkpoint(ckpt, model)
    pp = PostprocessConfig(score_threshold=0.05, top_k=50)
    report = export_onnx(ckpt, tmp_path / "plain.onnx", postprocess=pp)  # raises when ORT disagrees
    assert report.checked and report.onnx_vs_torch is not None
    images = [torch.randint(0, 255, (3, 70, 90), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(3)]
    torch_preds = Detector(TorchBackend(model, torch.device("cpu")), pp).predict_tensors(images)
    onnx_preds = Detector.from_checkpoint(tmp_path / "plain.onnx", "cpu", pp).predict_tensors(images)
    for a, b in zip(torch_preds, onnx_preds):
        assert len(a) == len(b) > 0
        assert np.array_equal(a.labels, b.labels)
        assert np.allclose(a.boxes, b.boxes, atol=1e-3) and np.allclose(a.scores, b.scores, atol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_deformable_variant_needs_opset_19_and_then_runs_in_onnx_runtime(tmp_path: Path) -> None:
    """The installed ONNX Runtime runs ONNX DeformConv on CPU: opset 19 exports pass the parity check; older
    opsets are refused before exporting, naming the plain variant."""
    pytest.importorskip("onnxruntime")
    model = _model("centernet-dla34", 64).eval()
    with torch.no_grad():
        for name, m in model.named_modules():
            if name.endswith("offset_mask"):
                m.weight.normal_(std=0.01)  # non-trivial offsets and masks
        model.head_heatmap[2].weight.normal_(std=0.05)
    ckpt = tmp_path / "deform.pth"
    save_checkpoint(ckpt, model)
    with pytest.raises(SsdError, match="centernet-dla34-plain") as err:
        export_onnx(ckpt, tmp_path / "old.onnx", opset=17)
    assert "--opset 19" in str(err.value) and not (tmp_path / "old.onnx").exists()
    report = export_onnx(ckpt, tmp_path / "deform.onnx", opset=19, postprocess=PostprocessConfig(score_threshold=0.05))
    assert report.checked and (tmp_path / "deform.onnx").is_file()


# ---------------------------------------------------------------- flip and multi-scale testing


def _squares(n: int, side: int, generator: torch.Generator, size: int = 64) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Normalised-looking noise images with one red ``side``-pixel square each, and its relative box."""
    x = torch.rand(n, 3, size, size, generator=generator) * 0.3 - 0.15
    boxes = []
    for i in range(n):
        x0, y0 = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=generator))
        x[i, :, y0 : y0 + side, x0 : x0 + side] = torch.tensor([1.5, -1.0, -1.0]).view(3, 1, 1)
        boxes.append(torch.tensor([[x0, y0, x0 + side, y0 + side]], dtype=torch.float32) / size)
    return x, boxes


@pytest.fixture(scope="module")
def square_model():  # type: ignore[no-untyped-def]
    """centernet-dla34-plain at 64 px trained (50 steps of 6 images, ~45 s on a busy 2-core machine) to find
    16-pixel red squares (it finds 8 of 8 test squares then; with 30 steps none yet)."""
    model = _model("centernet-dla34-plain", 64, num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(50):
        x, boxes = _squares(6, 16, g)
        loss = model.compute_loss(model(x), model.encode_targets(boxes, [torch.tensor([1])] * 6))["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _best_iou(dets, boxes) -> list[float]:  # type: ignore[no-untyped-def]
    """IoU of each image's top-scoring detection with its square (0 without detections)."""
    return [float(box_iou(d.boxes[:1], b).max()) if len(d) else 0.0 for d, b in zip(dets, boxes)]


def test_multi_scale_finds_squares_that_the_single_scale_misses(square_model) -> None:  # type: ignore[no-untyped-def]
    """Trained on 16 px squares, the model's size head says "16 px": a 32 px square at scale 1 gets a box of
    IoU ~0.25 (missed at IoU 0.5); at scale 0.5 the square is 16 px again. Multi-scale (0.5, 1) finds them."""
    pp = PostprocessConfig(score_threshold=0.05)
    x, boxes = _squares(8, 32, torch.Generator().manual_seed(5))
    with torch.no_grad():
        single = _best_iou(square_model.decode(square_model(x), pp), boxes)
        multi = _best_iou(square_model.detect_multi_scale(x, (0.5, 1.0), pp), boxes)
    assert sum(v >= 0.5 for v in single) <= 1, single
    assert sum(v >= 0.5 for v in multi) >= 5, multi
    # at the training size, adding a second scale keeps the hits (NMS merges the duplicates)
    x16, boxes16 = _squares(8, 16, torch.Generator().manual_seed(6))
    with torch.no_grad():
        single16 = _best_iou(square_model.decode(square_model(x16), pp), boxes16)
        merged = square_model.detect_multi_scale(x16, (1.0, 1.25), pp)
    assert sum(v >= 0.5 for v in _best_iou(merged, boxes16)) >= sum(v >= 0.5 for v in single16) - 1
    for d in merged:  # one box per square survives NMS among the confident ones
        confident = d.boxes[d.scores > 0.3]
        assert len(confident) <= 1 or float(box_iou(confident, confident).fill_diagonal_(0).max()) < pp.nms_threshold


def test_flip_test_changes_scores_and_keeps_the_hits(square_model) -> None:  # type: ignore[no-untyped-def]
    pp = PostprocessConfig(score_threshold=0.05)
    x, boxes = _squares(8, 16, torch.Generator().manual_seed(7))
    plain = TorchBackend(square_model, torch.device("cpu")).detect(x, pp)
    flipped = TorchBackend(square_model, torch.device("cpu"), flip_test=True).detect(x, pp)
    hits = lambda dets: sum(v >= 0.5 for v in _best_iou(dets, boxes))
    assert hits(flipped) >= hits(plain) - 1 and hits(flipped) >= 5, (hits(plain), hits(flipped))
    assert not torch.allclose(plain[0].scores[:1], flipped[0].scores[:1])


def test_flip_test_heatmap_is_mirror_equivariant() -> None:
    """The merged heatmap of an image is the mirror of the merged heatmap of its mirror image."""
    model = _model("centernet-dla34", 64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model.forward_flip_test(x)[0]
        b = model.forward_flip_test(x.flip(-1))[0]
    assert torch.allclose(torch.sigmoid(a), torch.sigmoid(b.flip(-1)), atol=1e-5)


def test_scaled_sizes_and_refusals(tmp_path: Path) -> None:
    assert [scaled_size(512, s) for s in (0.5, 0.75, 1, 1.25, 1.5)] == [256, 384, 512, 640, 768]
    assert scaled_size(64, 0.25) == 32
    ssd_ckpt = tiny_checkpoint(tmp_path / "ssd.pth")
    with pytest.raises(SsdError, match="--test-scales: .* has no multi-scale testing"):
        Detector.from_checkpoint(ssd_ckpt, "cpu", test_scales=(0.5, 1.0))
    with pytest.raises(SsdError, match="--flip-test: .* has no flip test"):
        Detector.from_checkpoint(ssd_ckpt, "cpu", flip_test=True)


def test_cli_flip_test_and_test_scales(tmp_path: Path) -> None:
    model = _model("centernet-dla34-plain", 64, num_classes=3)
    model.config.class_names = ["cat", "dog"]
    ckpt = tmp_path / "dla.pth"
    save_checkpoint(ckpt, model)
    images = noise_images(tmp_path / "imgs", 2)
    result = ssd("detect", images[0], "-w", ckpt, "--json", tmp_path / "d.json", "--flip-test",
                 "--test-scales", "0.5,1,1.5")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d.json").is_file()
    data = tiny_prepared(tmp_path / "data")
    evaluated = ssd("eval", "--data", data, "-w", ckpt, "--flip-test", "--test-scales", "0.5,1",
                    "--json", tmp_path / "eval.json")
    assert evaluated.exit_code == 0, evaluated.output
    assert "flip test, scales 0.5,1" in evaluated.stdout
    settings = json.loads((tmp_path / "eval.json").read_text())["settings"]
    assert settings["flip_test"] is True and settings["test_scales"] == [0.5, 1.0]
    bad = ssd("detect", images[0], "-w", ckpt, "--json", tmp_path / "e.json", "--test-scales", "0,1")
    assert bad.exit_code == 2 and "--test-scales" in one_line_error(bad)
    ssd_ckpt = tiny_checkpoint(tmp_path / "ssd.pth")
    refused = ssd("detect", images[0], "-w", ssd_ckpt, "--json", tmp_path / "f.json", "--test-scales", "0.5,1")
    assert refused.exit_code == 2 and "has no multi-scale testing" in one_line_error(refused)
