"""How raw pixels become model input. Stored in every checkpoint and ONNX model.

``input = (pixels[channel_order] * pixel_scale - mean) / std`` where ``pixels`` are uint8 RGB values 0..255
resized (warped, no letterbox, as in SSD) to ``image_size x image_size``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Preprocess:
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: str = "RGB"  # "RGB" or "BGR": order of channels fed to the network
    pixel_scale: float = 1.0 / 255.0  # multiplies 0..255 pixel values before mean/std

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(
            mean=tuple(float(x) for x in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in d["std"]),  # type: ignore[arg-type]
            channel_order=str(d.get("channel_order", "RGB")),
            pixel_scale=float(d.get("pixel_scale", 1.0 / 255.0)),
        )

    def fill_value_uint8(self) -> tuple[int, int, int]:
        """RGB 0..255 pixel whose normalised value is the mean (used to fill zoom-out canvases)."""
        rgb = self.mean if self.channel_order == "RGB" else tuple(reversed(self.mean))
        return tuple(int(round(m / self.pixel_scale)) for m in rgb)  # type: ignore[return-value]

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0..255) RGB batch ``[N,3,H,W]`` or ``[3,H,W]`` -> normalised float32 network input."""
        x = images_uint8.float()
        if self.channel_order == "BGR":
            x = x.flip(-3)
        shape = (3, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x * self.pixel_scale - mean) / std


IMAGENET = Preprocess()
CAFFE_BGR = Preprocess(mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), channel_order="BGR", pixel_scale=1.0)
