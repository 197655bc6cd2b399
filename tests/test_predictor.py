"""Detector.detect_resized / predict_tensors and TorchBackend's optional flip test, with a tiny fake model."""

from __future__ import annotations

import pytest
import torch

from ssdcli.boxes import relative_to_pixel
from ssdcli.data.images import resize_square
from ssdcli.inference import Detector, TorchBackend
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.postprocess import Detections, PostprocessConfig
from ssdcli.preprocess import Preprocess

S = 16
LEFT, RIGHT = torch.tensor([0.0, 0.0, 0.5, 1.0]), torch.tensor([0.5, 0.0, 1.0, 1.0])


class HalvesModel(DetectorModel):
    """Scores a box over each image half by the half's mean brightness: outputs ``([N,2] = left, right mean,)``."""

    def __init__(self) -> None:
        super().__init__()
        self.config = ModelConfig(
            arch="halves", num_classes=2, image_size=S, class_names=["thing"],
            preprocess=Preprocess(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), pixel_scale=1.0),
        )  # fmt: skip
        self.forward_batches: list[int] = []

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        self.forward_batches.append(images.shape[0])
        return (torch.stack([images[..., : S // 2].mean((1, 2, 3)), images[..., S // 2 :].mean((1, 2, 3))], 1),)

    def decode(self, outputs: tuple[torch.Tensor, ...], config: PostprocessConfig) -> list[Detections]:
        return [Detections(torch.stack([LEFT, RIGHT]), s, torch.ones(2, dtype=torch.int64)) for s in outputs[0]]


class FlipHalvesModel(HalvesModel):
    """With CenterNet's hook: one pass over the batch and its mirror image, merged to ``forward``'s format."""

    supports_flip_test = True

    def __init__(self) -> None:
        super().__init__()
        self.flip_calls = 0

    def forward_flip_test(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        self.flip_calls += 1
        both = self(torch.cat((images, images.flip(-1))))[0]
        n = images.shape[0]
        return ((both[:n] + both[n:].flip(-1)) / 2,)  # the mirror's right half is the image's left half


def _images() -> list[torch.Tensor]:
    """Two images of different sizes, dark left half (30) and bright right half (200)."""
    out = []
    for w, h in ((40, 24), (18, 30)):
        im = torch.full((3, h, w), 30, dtype=torch.uint8)
        im[..., w // 2 :] = 200
        out.append(im)
    return out


def test_detect_resized_matches_predict_tensors() -> None:
    images = _images()
    detector = Detector(TorchBackend(HalvesModel(), torch.device("cpu")))
    batch = torch.stack([resize_square(im, S) for im in images])
    sizes = [(int(im.shape[2]), int(im.shape[1])) for im in images]
    resized = detector.detect_resized(batch, sizes)
    direct = detector.predict_tensors(images)
    for a, b, (w, h) in zip(resized, direct, sizes):
        assert (a.width, a.height) == (w, h) == (b.width, b.height)
        assert (a.boxes == b.boxes).all() and (a.scores == b.scores).all() and a.names == b.names == ["thing"] * 2
        expected = relative_to_pixel(torch.stack([LEFT, RIGHT]), w, h).numpy()
        assert a.boxes == pytest.approx(expected)
        assert a.scores[0] < 0.3 < 0.7 < a.scores[1]  # the bright half scores higher


def test_detect_resized_rejects_bad_input() -> None:
    detector = Detector(TorchBackend(HalvesModel(), torch.device("cpu")))
    with pytest.raises(ValueError, match=r"\[N,3,16,16\]"):
        detector.detect_resized(torch.zeros(1, 3, 20, 20, dtype=torch.uint8), [(20, 20)])
    with pytest.raises(ValueError, match="2 images but 1 sizes"):
        detector.detect_resized(torch.zeros(2, 3, S, S, dtype=torch.uint8), [(20, 20)])


def test_flip_test_uses_the_models_hook() -> None:
    images = _images()
    model = FlipHalvesModel()
    plain = Detector(TorchBackend(FlipHalvesModel(), torch.device("cpu"))).predict_tensors(images)
    backend = TorchBackend(model, torch.device("cpu"), flip_test=True)
    assert backend.flip_test
    flipped = Detector(backend).predict_tensors(images)
    assert model.flip_calls == 1 and model.forward_batches == [4]  # one pass over images + mirrors
    for a, b in zip(flipped, plain):  # halves model is mirror-symmetric: the merge gives forward's scores
        assert a.scores == pytest.approx(b.scores) and (a.boxes == b.boxes).all()


def test_flip_test_off_by_default_and_ignored_without_hook() -> None:
    images = _images()
    model = FlipHalvesModel()
    Detector(TorchBackend(model, torch.device("cpu"))).predict_tensors(images)
    assert model.flip_calls == 0 and model.forward_batches == [2]
    plain = HalvesModel()
    backend = TorchBackend(plain, torch.device("cpu"), flip_test=True)
    assert not backend.flip_test
    assert len(Detector(backend).predict_tensors(images)) == 2 and plain.forward_batches == [2]
