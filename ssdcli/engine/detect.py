"""`ssd detect` as a library function: images and folders in; pictures, detection JSON and text files out.

Thresholds (two on purpose):

* ``json_path`` gets every detection the detector keeps: score above its ``PostprocessConfig.score_threshold``
  (``--score``, 0.01 by default, the evaluation setting), at most ``top_k`` per image, in the backend's order,
  only filtered by ``classes``. So ``detect --json`` then ``eval --detections`` gives the numbers of
  ``eval --weights`` (same decode, warp and rounding; bit-identical for the same batching, and for images up
  to :data:`~ssdcli.visualize.MAX_DRAW_SIDE` px on their longest side). ``image_id`` is the file stem.
* ``conf`` (display threshold) and ``max_det`` (highest scores first) only select what is drawn, written by
  ``save_txt`` (``OUT/<name>.txt``, one ``label score xmin ymin xmax ymax`` line per box, VOC pixels, spaces in
  class names written as ``_``; an empty file for an image without boxes) and counted per class in the summary.

Inputs (files, folders, glob patterns) and output names: :mod:`ssdcli.engine.detect_inputs`; outputs never
overwrite inputs, and ``out`` inside an input folder is not scanned by ``recursive``. Unreadable image files
(empty, truncated, not an image, a FIFO, a header claiming too many pixels) are skipped with one warning
each; decoding goes through :mod:`ssdcli.data.images`, made to survive any file. Inputs larger than
``MAX_DRAW_SIDE`` are decoded reduced (JPEG draft mode) and drawn capped at that size under the same file name (no scale marker; the
summary counts them); their boxes, like all boxes, are in original-image pixels.

Video files (by extension, also found in folders and glob matches), camera indices (``0``) and stream URLs
(``rtsp://``, ``http(s)://`` ...) go to :mod:`ssdcli.engine.detect_video` after the images (``vid_stride``):
an annotated ``OUT/NAME.mp4`` and per-frame ``OUT/NAME.jsonl`` each; ``summary.videos`` reports them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ssdcli.data.images import (
    IMAGE_EXTENSIONS,
    decode_image_bytes,
    pil_to_tensor,
    probe_image,
    read_image_bytes,
    resize_square,
)
from ssdcli.data.video import is_stream_source
from ssdcli.detections_io import write_detections
from ssdcli.engine.detect_inputs import DetectItem, check_outputs, collect_inputs, picture_path
from ssdcli.engine.detect_video import VideoRun, check_video_outputs, run_videos, split_videos
from ssdcli.errors import SsdError, first_line
from ssdcli.inference import Detector, Prediction
from ssdcli.io_utils import atomic_write, atomic_write_text
from ssdcli.reporting import Reporter, as_reporter
from ssdcli.visualize import MAX_DRAW_SIDE, draw_prediction

__all__ = [
    "DetectItem", "DetectSummary", "LoadedImage", "collect_inputs", "load_for_detect",
    "picture_path", "run_detect",
]


@dataclass
class DetectSummary:
    processed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    ignored: int = 0  # files in input folders without an image extension, or hidden
    per_class: dict[str, int] = field(default_factory=dict)  # detections >= conf (drawn/txt) per class name
    json_detections: int = 0  # detections >= the detector's score threshold (what --json holds)
    downscaled: int = 0  # inputs larger than MAX_DRAW_SIDE, drawn on a downscaled copy
    seconds: float = 0.0
    out: Path | None = None
    json_path: Path | None = None
    videos: VideoRun | None = None  # videos, streams and cameras (ssdcli.engine.detect_video)

    @property
    def images_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


@dataclass
class LoadedImage:
    net: torch.Tensor  # uint8 [3,S,S] network input
    picture: Image.Image | None  # RGB, original size or capped at max_side; None when not drawing
    width: int  # original width/height after EXIF orientation
    height: int
    downscaled: bool


def load_for_detect(path: Path, size: int, draw: bool, max_side: int = MAX_DRAW_SIDE) -> LoadedImage:
    """Decode one input through :mod:`ssdcli.data.images` (regular files only, header size checked first). Up
    to ``max_side`` px: as ``Detector.predict`` and ``eval`` (full decode, warp to ``size``). Larger: Pillow with
    JPEG draft mode (reduced DCT decode) capped at ``max_side``; the original (EXIF-oriented) size is recorded
    for the box mapping. Other formats are decoded fully, then reduced. Any failure: SsdError naming the file."""
    data = read_image_bytes(path)
    header, im = probe_image(data, path)
    if max(header.raw_size) <= max_side:
        image = decode_image_bytes(data, path)
        picture = Image.fromarray(image.permute(1, 2, 0).numpy()) if draw else None
        return LoadedImage(resize_square(image, size), picture, int(image.shape[2]), int(image.shape[1]), False)
    w, h = header.width, header.height
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = max_side / max(w, h)
            im.draft("RGB", (int(im.size[0] * s) + 1, int(im.size[1] * s) + 1))
            im = ImageOps.exif_transpose(im)
            im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
            small = im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - decoders raise many types on hostile files; all name the file
        raise SsdError(f"{path}: not a readable image ({first_line(e)})") from None
    finally:
        im.close()
    return LoadedImage(resize_square(pil_to_tensor(small), size), small if draw else None, w, h, True)


def _subset(pred: Prediction, idx: np.ndarray) -> Prediction:
    names = [pred.names[i] for i in idx]
    return Prediction(pred.boxes[idx], pred.scores[idx], pred.labels[idx], names, pred.width, pred.height)


def _save_outputs(loaded: LoadedImage, shown: Prediction, item: DetectItem, out: Path, save_txt: bool) -> None:
    if loaded.picture is not None:
        path = picture_path(out, item.rel)
        fmt = Image.registered_extensions()[path.suffix.lower()]
        picture = draw_prediction(loaded.picture, shown)
        options = {"quality": 92} if fmt in ("JPEG", "WEBP") else {}
        atomic_write(path, lambda f: picture.save(f, format=fmt, **options))
    if save_txt:
        lines = [
            f"{name.replace(' ', '_')} {s:.4f} {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f}\n"
            for name, s, b in zip(shown.names, shown.scores.tolist(), shown.boxes.tolist())
        ]
        atomic_write_text(out / Path(*item.rel.with_suffix(".txt").parts), "".join(lines))


def run_detect(
    detector: Detector,
    inputs: list[str],
    out: Path | None,
    *,
    recursive: bool = False,
    batch_size: int = 8,
    conf: float = 0.5,
    classes: list[str] | None = None,
    max_det: int = 100,
    json_path: Path | None = None,
    save_txt: bool = False,
    reporter: Reporter | None = None,
    warn: Callable[[str], None] | None = None,
    force: bool = False,
    protected: Sequence[str | Path] = (),
    vid_stride: int = 1,
) -> DetectSummary:
    """Run ``detector`` on ``inputs`` (files, folders, glob patterns); see the module docstring for outputs.

    ``reporter`` gets task ``"detect"`` (one unit per input file, skipped ones too) once the inputs and outputs are
    checked; ``warn(message)``
    once per skipped file. Existing output files are replaced only with ``force``; outputs landing on an input
    or on a ``protected`` file (the weights in use) are refused even then. Raises :class:`SsdError` for bad
    options, unusable outputs, or when no image at all could be processed.
    """
    if batch_size < 1:
        raise SsdError(f"--batch {batch_size}: expected at least 1")
    if max_det < 1:
        raise SsdError(f"--max-det {max_det}: expected at least 1")
    if not 0.0 <= conf <= 1.0:
        raise SsdError(f"--conf {conf}: expected a value in [0, 1]")
    if save_txt and out is None:
        raise SsdError("--save-txt: needs --out (the text files go next to the pictures)")
    names = detector.class_names
    class_ids = _class_ids(classes, names)
    out = Path(out) if out is not None else None
    json_path = Path(json_path) if json_path is not None else None
    streams = [s for s in inputs if is_stream_source(s) and not Path(s).expanduser().exists()]
    files = [s for s in inputs if s not in streams]
    items, ignored, folders = collect_inputs(files, recursive, exclude=out) if files else ([], 0, [])
    items, videos = split_videos(items, streams)
    if not items and not videos:
        hint = "" if recursive else " (use --recursive to include subfolders)"
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise SsdError(f"{' '.join(inputs)}: no image files found{hint}; extensions read: {exts}")
    check_outputs(items, folders, out, json_path, force=force, protected=protected, save_txt=save_txt)
    check_video_outputs(videos, out, force=force, protected=protected)
    warn = warn or (lambda message: None)
    summary = DetectSummary(ignored=ignored, out=out, json_path=json_path)
    counts = np.zeros(len(names) + 1, dtype=np.int64)
    records: list[dict] = []
    size, draw = detector.config.image_size, out is not None
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    start = time.perf_counter()
    reporter = as_reporter(reporter)
    if items:
        reporter.start("detect", len(items), unit="img")
    with ThreadPoolExecutor(max_workers=2) as pool:  # decode the next batch and save pictures while the model runs
        pending = pool.submit(_load_batch, batches[0], size, draw) if batches else None
        writes: list[Future] = []
        done = 0
        for b in range(len(batches)):
            loaded = pending.result()
            if b + 1 < len(batches):
                pending = pool.submit(_load_batch, batches[b + 1], size, draw)
            ok = [(item, x) for item, x in zip(batches[b], loaded) if isinstance(x, LoadedImage)]
            for item, x in zip(batches[b], loaded):
                if isinstance(x, str):
                    summary.skipped.append((str(item.path), x))
                    warn(f"skipped {x}")
            if ok:
                nets, sizes = torch.stack([x.net for _, x in ok]), [(x.width, x.height) for _, x in ok]
                preds = detector.detect_resized(nets, sizes)
                for f in writes:
                    f.result()  # surface write errors, and keep at most one batch of pictures in memory
                writes = []
                for (item, x), pred in zip(ok, preds):
                    if class_ids is not None:
                        pred = _subset(pred, np.flatnonzero(np.isin(pred.labels, class_ids)))
                    records += pred.to_records(item.image_id)  # backend order, exactly as `ssd eval --weights`
                    order = np.argsort(-pred.scores, kind="stable")
                    shown = _subset(pred, order[pred.scores[order] >= conf][:max_det])
                    counts += np.bincount(shown.labels, minlength=len(counts))
                    summary.processed += 1
                    summary.downscaled += x.downscaled
                    if out is not None:
                        writes.append(pool.submit(_save_outputs, x, shown, item, out, save_txt))
            done += len(batches[b])
            reporter.advance("detect", len(batches[b]))
        for f in writes:
            f.result()
    if items:
        reporter.end("detect")
    summary.seconds = time.perf_counter() - start
    summary.per_class = {name: int(c) for name, c in zip(names, counts[1:])}
    summary.json_detections = len(records)
    if summary.processed == 0 and items and not videos:
        n = len(summary.skipped)
        raise SsdError(f"no image could be processed: all {n} input file(s) were skipped (see the warnings above)")
    if json_path is not None:
        write_detections(json_path, records)
    if videos:
        assert out is not None  # check_video_outputs refused videos without --out
        summary.videos = run_videos(detector, videos, out, batch_size=batch_size, stride=vid_stride, conf=conf,
                                    max_det=max_det, class_ids=class_ids, reporter=reporter, warn=warn)
        summary.per_class = {k: v + int(c) for (k, v), c in zip(summary.per_class.items(), summary.videos.counts[1:])}
        if summary.processed == 0 and summary.videos.frames == 0 and summary.videos.stopped_by is None:
            n = len(summary.skipped) + len(summary.videos.skipped)
            raise SsdError(f"nothing could be processed: all {n} input(s) were skipped (see the warnings above)")
    return summary


def _class_ids(classes: list[str] | None, names: list[str]) -> np.ndarray | None:
    if not classes:
        return None
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise SsdError(f"--classes {','.join(unknown)}: not a class of this model (classes: {', '.join(names)})")
    return np.array([names.index(c) + 1 for c in classes], dtype=np.int64)


def _load_batch(batch: list[DetectItem], size: int, draw: bool) -> list[LoadedImage | str]:
    """Decoded inputs, or the reason (one line) a file is skipped."""
    out: list[LoadedImage | str] = []
    for item in batch:
        try:
            out.append(load_for_detect(item.path, size, draw))
        except SsdError as e:
            out.append(str(e))
        except (OSError, ValueError, RuntimeError, MemoryError) as e:  # decoder failures on hostile files
            out.append(f"{item.path}: not a readable image ({first_line(e)})")
    return out
