"""Seeded fuzz test of the one image-reading path (:mod:`ssdcli.data.images`), through the real CLI.

A folder of good images plus bit-flipped and truncated PNG, JPEG, WebP, BMP and GIF files and header bombs
(huge sizes claimed in a tiny file). The CLI runs in a subprocess, so a native crash (libpng's segfault on a
PNG with short pixel data, exit 139 / -11) shows as a negative return code instead of killing pytest.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import tiny_checkpoint
from PIL import Image

from ssdcli.data.dataset import DetectionDataset
from ssdcli.data.images import MAX_IMAGE_PIXELS, read_image
from ssdcli.data.records import load_prepared
from ssdcli.data.transforms import SSDTrainAugment
from ssdcli.errors import SsdError

FORMATS = (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("BMP", "bmp"), ("GIF", "gif"))
PER_FORMAT = 8  # damaged variants per format
GOOD = 3
SIZE = (48, 40)  # width, height of every generated image


def encoded(fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((SIZE[1], SIZE[0], 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def png_claiming(width: int, height: int, pixel_bytes: int = 64) -> bytes:
    """A valid-looking PNG whose header claims ``width x height`` but holds only ``pixel_bytes`` of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * pixel_bytes)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) is patched to claim ``width x height``."""
    data = bytearray(encoded("JPEG", 99))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def damaged_files() -> dict[str, bytes]:
    """name -> bytes: seeded bit flips and truncations of every format, plus header bombs."""
    rng = random.Random(17)
    files = {}
    for fmt, ext in FORMATS:
        for i in range(PER_FORMAT):
            data = bytearray(encoded(fmt, 100 + i))
            if i % 3 == 0:
                data = data[: rng.randrange(8, len(data) - 1)]
            else:
                for _ in range(rng.randint(1, 6)):
                    pos = rng.randrange(len(data))
                    data[pos] ^= 1 << rng.randrange(8)
            files[f"bad_{fmt.lower()}_{i}.{ext}"] = bytes(data)
    files["bomb_30000.png"] = png_claiming(30000, 30000)  # 167 bytes, 2.7 GB of pixels
    files["bomb_60000.png"] = png_claiming(60000, 60000)  # over Pillow's own decompression-bomb limit
    files["short_100.png"] = png_claiming(100, 100, pixel_bytes=10)  # libpng: "Not enough image data", segfault
    files["bomb_65000.jpg"] = jpeg_claiming(65000, 65000)
    return files


def write_good(folder: Path) -> list[str]:
    names = []
    for i in range(GOOD):
        fmt, ext = FORMATS[i % len(FORMATS)]
        names.append(f"good_{i}.{ext}")
        (folder / names[-1]).write_bytes(encoded(fmt, i))
    return names


def run_cli(*args: object, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "300", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ssdcli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def test_corpus_really_is_damaged() -> None:
    """Sanity: the bombs are tiny and most variants fail to decode (else the test would prove little)."""
    files = damaged_files()
    assert len(files) == PER_FORMAT * len(FORMATS) + 4
    assert len(files["bomb_30000.png"]) < 200 and 30000 * 30000 > MAX_IMAGE_PIXELS
    failures = 0
    for name, data in files.items():
        path = Path("/nonexistent") / name
        try:
            from ssdcli.data.images import decode_image_bytes

            decode_image_bytes(data, path)
        except SsdError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e)
            failures += 1
    assert failures >= len(files) // 2


def test_detect_survives_every_damaged_file(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = write_good(folder)
    bad = damaged_files()
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    weights = tiny_checkpoint(tmp_path / "w.pth")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    res = run_cli("detect", folder, "--weights", weights, "--device", "cpu", "--json", tmp_path / "d.json",
                  "--out", tmp_path / "vis", "--batch", "4")  # fmt: skip
    output = res.stdout + res.stderr
    assert res.returncode == 0, output[-3000:]  # a native crash would be negative (-11: segfault)
    records = json.loads((tmp_path / "d.json").read_text())
    ids = {r["image_id"] for r in records}
    assert {Path(g).stem for g in good} <= ids  # the good images' results are written
    drawn = {p.name for p in (tmp_path / "vis").iterdir()}
    assert set(good) <= drawn
    skipped = [name for name in bad if f"{name}: " in output]  # one warning line per skipped file, naming it
    undecodable = [name for name in bad if Path(name).stem not in ids and name not in drawn]
    assert sorted(skipped) == sorted(undecodable)
    for bomb in ("bomb_30000.png", "bomb_60000.png", "bomb_65000.jpg"):
        assert bomb in skipped
    assert "short_100.png" in skipped
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # inputs untouched


def test_prepare_verify_images_flags_what_training_cannot_decode(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    images = {name: encoded(FORMATS[i % len(FORMATS)][0], i) for i, name in enumerate(write_good(tmp_path))}
    images.update(damaged_files())
    ids = []
    for name, data in images.items():
        image_id = Path(name).stem
        ids.append(image_id)
        (root / "JPEGImages" / name).write_bytes(data)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{name}</filename><size><width>{SIZE[0]}</width><height>{SIZE[1]}</height>"
            "</size><object><name>obj</name><difficult>0</difficult><bndbox><xmin>5</xmin><ymin>5</ymin>"
            "<xmax>30</xmax><ymax>30</ymax></bndbox></object></annotation>"
        )
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    out = tmp_path / "prepared"
    res = run_cli("prepare-voc", root, "--out", out, "--classes", "obj", "--verify-images", "--val-fraction", "0")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    records = load_prepared(out).split("train")
    kept = {r.id for r in records}
    assert {Path(g).stem for g in images if g.startswith("good_")} <= kept
    reasons = {s["id"]: s["reason"] for s in json.loads((out / "manifest.json").read_text())["skipped"]["images"]}
    skipped = set(reasons)
    assert kept | skipped == set(ids) and not kept & skipped
    dataset = DetectionDataset(records, SSDTrainAugment(64), seed=0)
    for i, record in enumerate(records):  # whatever passed --verify-images decodes in training
        image, _, _ = dataset[(0, i)]
        assert image.shape == (3, 64, 64)
        assert tuple(read_image(record.path).shape) == (3, record.height, record.width)
    for image_id in (i for i in skipped if reasons[i] in ("unreadable_image", "truncated_image")):
        path = next((root / "JPEGImages").glob(f"{image_id}.*"))  # what was flagged really cannot be decoded
        with pytest.raises(SsdError):
            read_image(path)
    assert {reasons[b] for b in ("bomb_30000", "bomb_60000", "short_100", "bomb_65000")} <= {
        "unreadable_image", "truncated_image"}  # fmt: skip
