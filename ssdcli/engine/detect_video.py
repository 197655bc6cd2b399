"""``ssd detect`` on videos, streams and cameras: an annotated video and per-frame JSON lines per source.

Pipeline (three stages that overlap, joined by bounded queues, so memory is flat whatever the length):
decode + warp to the model input (a background thread, :func:`ssdcli.inference.video.predict_video`), the model
on batches of frames (the calling thread, which also polls Ctrl-C), drawing + encoding + JSON lines (a writer
thread). FFmpeg and torch's kernels release the GIL.

Outputs for a source named ``NAME`` (a file's relative output path without extension, ``camera0`` or a name
made from a URL, see :func:`ssdcli.data.video.stream_name`), in ``out``:

* ``NAME.mp4``: every processed frame with the boxes >= ``conf`` drawn (at most ``max_det``), the source's size
  (odd sizes padded by one pixel) at ``fps / stride`` (H.264 yuv420p, else MPEG-4; :class:`VideoWriter`).
* ``NAME.jsonl``: one line per processed frame, ``{"frame": 12, "time": 0.48, "detections": [{"label": "cat",
  "score": 0.93, "box": [xmin, ymin, xmax, ymax]}, ...]}``: ``frame`` is the index in the source (strided frames
  counted), ``time`` its timestamp in seconds (pts * time_base), the detections those of image ``--json``
  (every detection >= the detector's score threshold, ``classes`` applied, VOC pixel boxes).

Ctrl-C / SIGTERM (first one): the current batch is finished, the writer drains its queue, the encoder is flushed
and the container closed (the video plays, the JSON lines end with the last frame written), later sources are
not started; :attr:`VideoRun.stopped_by` holds the signal. A second Ctrl-C aborts at once (the files are still
closed). A damaged file or a dropped stream: one warning line and the frames decoded before are kept.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
from PIL import Image

from ssdcli.data.video import VIDEO_EXTENSIONS, VideoReader, VideoWriter, stream_name
from ssdcli.engine.detect_inputs import DetectItem
from ssdcli.engine.interrupts import StopRequests, signal_name
from ssdcli.errors import SsdError, first_line
from ssdcli.inference import Detector, Prediction
from ssdcli.inference.video import FramePrediction, encoder_threads, predict_video
from ssdcli.reporting import Reporter, as_reporter
from ssdcli.visualize import draw_prediction

__all__ = ["VideoItem", "VideoResult", "VideoRun", "check_video_outputs", "run_videos", "split_videos",
           "stream_items", "video_outputs"]

_QUEUE_BATCHES = 2  # frames waiting for the writer: at most this many batches


@dataclass
class VideoItem:
    source: str  # a file path, a URL or a camera index
    rel: PurePosixPath  # output path relative to out, without extension


@dataclass
class VideoResult:
    source: str
    video: Path
    jsonl: Path
    frames: int = 0  # frames processed and written
    decoded: int = 0  # frames decoded (strided ones too)
    problem: str | None = None  # why the source ended early (damaged file, dropped stream), one line
    seconds: float = 0.0  # wall time, opening to closing

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class VideoRun:
    results: list[VideoResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason): could not be opened
    counts: np.ndarray | None = None  # drawn detections per label index (0 unused)
    stopped_by: int | None = None  # the signal that stopped the run early (SIGINT, SIGTERM)

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.results)


def split_videos(items: list[DetectItem], streams: Sequence[str]) -> tuple[list[DetectItem], list[VideoItem]]:
    """(image items, video items): files with a video extension, then the stream sources (unique names)."""
    videos = [VideoItem(str(it.path), it.rel.with_suffix("")) for it in items if _is_video(it)]
    images = [it for it in items if not _is_video(it)]
    taken = {str(it.rel.with_suffix("")).lower() for it in images} | {str(v.rel).lower() for v in videos}
    return images, videos + stream_items(streams, taken)


def _is_video(item: DetectItem) -> bool:
    return item.path.suffix.lower() in VIDEO_EXTENSIONS


def stream_items(specs: Sequence[str], taken: set[str]) -> list[VideoItem]:
    """Output names for stream sources, unique among themselves and the (lower-case) names in ``taken``."""
    items = []
    for spec in specs:
        base, n = stream_name(spec), 1
        while (base if n == 1 else f"{base}_{n}").lower() in taken:
            n += 1
        name = base if n == 1 else f"{base}_{n}"
        taken.add(name.lower())
        items.append(VideoItem(spec, PurePosixPath(name)))
    return items


def video_outputs(out: Path, rel: PurePosixPath) -> tuple[Path, Path]:
    """The annotated video and the JSON lines of a source."""
    base = out / Path(*rel.parts)
    return base.with_name(base.name + ".mp4"), base.with_name(base.name + ".jsonl")


def check_video_outputs(items: Sequence[VideoItem], out: Path | None, *, force: bool,
                        protected: Sequence[str | Path] = ()) -> None:
    """Refuse outputs that would overwrite an input or a protected file (even with ``force``) or an existing
    file (without ``force``). SsdError naming the option and the file."""
    if not items:
        return
    if out is None:
        raise SsdError("--out: videos and streams write OUT/<name>.mp4 and OUT/<name>.jsonl; give --out "
                       "(or leave out --json to get a new runs/detect/exp folder)")
    inputs = {Path(it.source).resolve() for it in items if Path(it.source).exists()}
    inputs |= {Path(p).resolve() for p in protected}
    for it in items:
        for path in video_outputs(out, it.rel):
            if path.resolve() in inputs:
                raise SsdError(f"--out {out}: the output {path} of {it.source} would overwrite an input; "
                               "use another folder")
            if not force and (path.exists() or path.is_symlink()):
                raise SsdError(f"--out {out}: {path} already exists (use --force to replace it, or another --out)")


def _shown(pred: Prediction, conf: float, max_det: int) -> Prediction:
    order = np.argsort(-pred.scores, kind="stable")
    idx = order[pred.scores[order] >= conf][:max_det]
    return Prediction(pred.boxes[idx], pred.scores[idx], pred.labels[idx], [pred.names[i] for i in idx],
                      pred.width, pred.height)


def _only(pred: Prediction, class_ids: np.ndarray | None) -> Prediction:
    if class_ids is None:
        return pred
    idx = np.flatnonzero(np.isin(pred.labels, class_ids))
    return Prediction(pred.boxes[idx], pred.scores[idx], pred.labels[idx], [pred.names[i] for i in idx],
                      pred.width, pred.height)


class _Writer:
    """The writer thread: draws, encodes and writes the JSON line of each frame, in order."""

    _END = object()

    def __init__(self, video: VideoWriter, lines: IO[str], maxsize: int) -> None:
        self.video, self.lines = video, lines
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.failure: BaseException | None = None
        self.written = 0
        self.thread = threading.Thread(target=self._run, name="ssd-video-writer", daemon=True)
        self.thread.start()

    def put(self, item: tuple[FramePrediction, Prediction]) -> None:
        while True:
            self.check()
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def check(self) -> None:
        """Re-raise a failure of the writer thread (a full disk, an encoder error: one line naming the file)."""
        if isinstance(self.failure, (OSError, ValueError)):
            raise SsdError(f"{self.video.path}: cannot write the video ({first_line(self.failure)})") from None
        if self.failure is not None:
            raise self.failure

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if self.failure is not None:
                continue  # drain so that put() never blocks
            frame, shown = item
            try:
                picture = draw_prediction(Image.fromarray(frame.image), shown)
                self.video.write(np.asarray(picture))
                records = [{k: v for k, v in r.items() if k != "image_id"} for r in frame.prediction.to_records("")]
                line = {"frame": frame.index, "time": round(frame.time, 6), "detections": records}
                self.lines.write(json.dumps(line, separators=(", ", ": ")) + "\n")
                self.written += 1
            except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                self.failure = e

    def finish(self) -> None:
        """Write what is queued, then stop the thread (also after a failure)."""
        self.queue.put(self._END)
        self.thread.join()


def _run_one(detector: Detector, item: VideoItem, out: Path, stops: StopRequests, *, batch_size: int, stride: int,
             conf: float, max_det: int, class_ids: np.ndarray | None, reporter: Reporter, counts: np.ndarray,
             open_timeout: float) -> VideoResult:
    video_path, jsonl_path = video_outputs(out, item.rel)
    reader = VideoReader(item.source, timeout=open_timeout)
    result = VideoResult(item.source, video_path, jsonl_path)
    task = f"video {item.rel}"
    try:
        info = reader.info
        total = None if info.frames is None else -(-info.frames // stride)
        video_path.parent.mkdir(parents=True, exist_ok=True)
        with VideoWriter(video_path, info.width, info.height, info.fps / stride,
                         threads=encoder_threads(detector)) as writer, \
                open(jsonl_path, "w", encoding="utf-8") as lines:
            sink = _Writer(writer, lines, maxsize=_QUEUE_BATCHES * batch_size)
            frames = predict_video(detector, reader, batch_size=batch_size, stride=stride, keep_frames=True)
            reporter.start(task, total, unit="frame")  # type: ignore[arg-type] - None: unknown length (a stream)
            pending = 0  # frames not yet reported: the bar advances once per batch (a steady frames/s)
            try:
                for frame in frames:
                    pred = _only(frame.prediction, class_ids)
                    frame = FramePrediction(frame.index, frame.time, pred, frame.image)
                    shown = _shown(pred, conf, max_det)
                    counts += np.bincount(shown.labels, minlength=len(counts))
                    sink.put((frame, shown))
                    pending += 1
                    if pending == batch_size:
                        reporter.advance(task, pending)
                        pending = 0
                        if stops.requested:
                            break  # at a batch boundary: every frame the model saw is queued for writing
            finally:
                frames.close()  # stops the decoding thread
                sink.finish()  # the writer drains its queue (also on a second Ctrl-C)
                reporter.advance(task, pending)
                reporter.end(task)
            result.frames = sink.written
            sink.check()
    finally:
        result.decoded = reader.decoded
        result.problem = reader.error
        reader.close()
    return result


def run_videos(
    detector: Detector,
    items: Sequence[VideoItem],
    out: Path,
    *,
    batch_size: int = 8,
    stride: int = 1,
    conf: float = 0.5,
    max_det: int = 100,
    class_ids: np.ndarray | None = None,
    reporter: Reporter | None = None,
    warn: Callable[[str], None] | None = None,
    open_timeout: float = 10.0,
) -> VideoRun:
    """Detect on each video/stream/camera in turn (see the module docstring). ``reporter`` gets one task per
    source (``"video NAME"``, unit ``frame``; total ``None`` for streams); ``warn(message)`` once per source that
    cannot be opened (skipped) or ends early. Ctrl-C/SIGTERM: see the module docstring."""
    if stride < 1:
        raise SsdError(f"--vid-stride {stride}: expected at least 1")
    reporter = as_reporter(reporter)
    warn = warn or (lambda message: None)
    run = VideoRun(counts=np.zeros(len(detector.class_names) + 1, dtype=np.int64))

    def notify(_message: str) -> None:
        name = signal_name(stops.signum) if stops.signum is not None else "signal"
        reporter.message(f"{name} received: finishing the current batch and closing the video "
                         "(press Ctrl-C again to stop at once)")

    with StopRequests(notify) as stops:
        for item in items:
            if stops.requested:
                break
            start = time.perf_counter()
            try:
                result = _run_one(detector, item, out, stops, batch_size=batch_size, stride=stride, conf=conf,
                                  max_det=max_det, class_ids=class_ids, reporter=reporter, counts=run.counts,
                                  open_timeout=open_timeout)
            except SsdError as e:
                run.skipped.append((item.source, str(e)))
                warn(f"skipped {e}")
                continue
            result.seconds = time.perf_counter() - start
            run.results.append(result)
            if result.problem:
                warn(f"{item.source}: {result.problem}; kept the {result.frames} frames processed before")
        run.stopped_by = stops.signum
    return run
