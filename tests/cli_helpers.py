"""Small builders shared by the command-line tests: a tiny checkpoint, a tiny prepared split, noise images."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from ssdcli.checkpoint import save_checkpoint
from ssdcli.cli.main import app
from ssdcli.data.records import ImageRecord, write_split
from ssdcli.models import build_model

CLASSES = ["cat", "dog"]
ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def ssd(*args: object):
    """Run ``ssd ARGS`` in-process; the result has ``exit_code``, ``output``, ``stdout``, ``stderr``."""
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tiny_checkpoint(path: Path) -> Path:
    """A random-weight SSDLite at 128 px (fast on CPU) with two classes and spread-out scores (0 to 1)."""
    torch.manual_seed(0)
    model = build_model("ssdlite320", 3, class_names=CLASSES, image_size=128)
    with torch.no_grad():  # a fresh head scores every class ~1/3: spread the class scores
        for name, p in model.named_parameters():
            if name.startswith("conf.") and name.endswith("bias"):
                p.copy_(torch.randn(p.shape) * 2)
    save_checkpoint(path, model)
    return path


def noise_images(folder: Path, n: int, ext: str = "jpg") -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"img{i}.{ext}")
        Image.fromarray(rng.integers(0, 255, (60 + 8 * i, 80, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def tiny_prepared(root: Path) -> Path:
    """A prepared dataset (manifest.json + test.jsonl) of two noise images with one object each."""
    images = noise_images(root / "images", 2, "png")
    records = [
        ImageRecord(id=p.stem, path=str(p), width=80, height=60 + 8 * i,
                    boxes=np.array([[5, 5, 40, 30]], dtype=np.float32), labels=np.array([1 + i]),
                    difficult=np.array([False]))
        for i, p in enumerate(images)
    ]
    data = root / "prepared"
    data.mkdir(parents=True)
    write_split(data / "test.jsonl", records, str(root / "images"))
    manifest = {"format": "ssdcli-prepared", "version": 1, "classes": CLASSES, "image_root": str(root / "images"),
                "splits": {"test": {"file": "test.jsonl", "images": 2, "objects": 2}}}
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data


def one_line_error(result) -> str:
    """The single error line of a refused command (asserts there is exactly one line on stderr)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]
