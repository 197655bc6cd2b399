"""Video files, streams and cameras in; annotated videos out (PyAV).

Why PyAV: it binds FFmpeg's own libraries and ships them in its wheels (decoders for every common container,
the libx264 and mpeg4 encoders), so ``pip install`` is all it takes on Linux, macOS and Windows. It gives each
frame's exact ``pts`` and ``time_base`` (true timestamps, also for variable frame rates), full control of the
encoder (codec, pixel format, options), one ``av.open`` for files, ``rtsp://``/``http://`` streams (with
timeouts) and capture devices, and it releases the GIL while decoding and encoding, so a decode thread and an
encode thread overlap with the model. OpenCV's ``VideoCapture`` hides timestamps and encoder settings and its
pip wheels cannot write H.264; ``torchvision.io`` no longer decodes video (removed in torchvision 0.22);
imageio goes through PyAV itself or an ``ffmpeg`` subprocess.

* :class:`VideoReader` opens a source (a file, a URL, a camera index) and yields RGB frames with their index and
  timestamp; a decoding error (corrupt or truncated file, dropped stream) ends the iteration cleanly and is kept
  in :attr:`VideoReader.error` (one line), so whatever could be decoded is processed.
* :class:`VideoWriter` encodes RGB frames: H.264 (libx264, yuv420p, ``+faststart`` not used so a stopped run
  only needs the final flush) in ``.mp4`` when the FFmpeg build has it, else MPEG-4 part 2; odd widths/heights
  are padded by one replicated row/column (yuv420p needs even sizes). ``close()`` flushes the encoder and
  writes the container index: a video stopped early is playable.
* :func:`prefetch` runs an iterator in a background thread behind a bounded queue (flat memory).
"""

from __future__ import annotations

import os
import queue
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import av
import numpy as np

from ssdcli.errors import SsdError, first_line

__all__ = [
    "STREAM_PREFIXES",
    "VIDEO_EXTENSIONS",
    "VideoFrame",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "is_stream_source",
    "is_video_name",
    "prefetch",
    "stream_name",
    "video_codec",
]

VIDEO_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv",
    ".3gp", ".ogv",
}
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://", "udp://", "tcp://", "srt://")
DEFAULT_TIMEOUT_S = 10.0  # opening and reading a stream: give up after this long without data
_FALLBACK_FPS = Fraction(30)

T = TypeVar("T")


def is_video_name(name: str) -> bool:
    """A visible file name with a video extension (any case)."""
    return not name.startswith(".") and Path(name).suffix.lower() in VIDEO_EXTENSIONS


def is_stream_source(spec: str) -> bool:
    """A camera index (``0``, ``1`` ...) or a stream URL (``rtsp://``, ``http(s)://`` ...)."""
    return spec.isdigit() or spec.lower().startswith(STREAM_PREFIXES)


def stream_name(spec: str) -> str:
    """A file-name stem for the outputs of a stream: ``camera0``, ``rtsp_cam.local_live`` ..."""
    if spec.isdigit():
        return f"camera{int(spec)}"
    scheme, _, rest = spec.partition("://")
    rest = rest.split("?", 1)[0].split("@", 1)[-1]  # no query string, no user:password
    if Path(rest).suffix.lower() in VIDEO_EXTENSIONS:  # http://host/clip.mp4 -> http_host_clip
        rest = rest[: -len(Path(rest).suffix)]
    return (scheme.lower() + "_" + re.sub(r"[^A-Za-z0-9.-]+", "_", rest).strip("_"))[:80].rstrip("_.")


@dataclass(frozen=True)
class VideoFrame:
    index: int  # position in the source (0-based, counting every decoded frame, strided ones too)
    time: float  # seconds: pts * time_base of the stream (index / fps when the frame has no pts)
    image: np.ndarray  # RGB uint8 [H,W,3]


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: Fraction  # average (else guessed) frame rate; 30 when the source says nothing
    frames: int | None  # frame count when the container knows it (or can estimate it from the duration)
    live: bool  # a stream or camera: no known end


def _open_args(source: str) -> tuple[str, dict]:
    """``av.open`` arguments for a camera index (platform capture device) or a path/URL."""
    if not source.isdigit():
        return source, {}
    if sys.platform.startswith("linux"):
        return f"/dev/video{int(source)}", {"format": "v4l2"}
    if sys.platform == "darwin":
        return source, {"format": "avfoundation"}
    raise SsdError(f"camera {source}: camera indices are supported on Linux (v4l2) and macOS (avfoundation); "
                   "on Windows pass a stream URL")


class VideoReader:
    """Frames of a video file, stream URL or camera index (``"0"``); a context manager. SsdError when it cannot be
    opened or has no video stream (one line naming the source)."""

    def __init__(self, source: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.source = str(source)
        self.error: str | None = None  # why decoding stopped early (one line), None after a clean end
        self.decoded = 0  # frames decoded so far
        live = is_stream_source(self.source) and not Path(self.source).exists()
        what = "camera" if live and self.source.isdigit() else ("stream" if live else "video")
        target, kwargs = _open_args(self.source) if live else (self.source, {})
        try:
            self.container = av.open(target, "r", timeout=timeout if live else None, **kwargs)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise SsdError(f"{what} {self.source}: cannot open ({first_line(e)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise SsdError(f"{what} {self.source}: no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"  # frame + slice threads in the decoder (FFmpeg releases the GIL)
        ctx = self.stream.codec_context
        rate = self.stream.average_rate or self.stream.guessed_rate or _FALLBACK_FPS
        frames = int(self.stream.frames or 0) or None
        self._frames_exact = frames is not None  # from the index (mp4, avi); else estimated or unknown
        if frames is None and not live and self.container.duration:  # e.g. mkv/webm: estimate from the duration
            frames = max(1, round(self.container.duration / av.time_base * float(rate)))
        self.info = VideoInfo(int(ctx.width), int(ctx.height), Fraction(rate), frames, live)
        if self.info.width <= 0 or self.info.height <= 0:
            self.close()
            raise SsdError(f"{what} {self.source}: no frame size in the stream header (not a readable video)")

    def frames(self, stride: int = 1) -> Iterator[VideoFrame]:
        """Every ``stride``-th decoded frame (indices 0, stride, 2*stride ...) as RGB. A decoding error ends the
        iteration and is kept in :attr:`error`."""
        if stride < 1:
            raise SsdError(f"--vid-stride {stride}: expected at least 1")
        fps = float(self.info.fps)
        try:
            for frame in self.container.decode(self.stream):
                index = self.decoded
                self.decoded += 1
                if index % stride:
                    continue  # decoded (inter-frame codecs need it) but not converted
                time = float(frame.time) if frame.time is not None else index / fps
                yield VideoFrame(index, time, frame.to_ndarray(format="rgb24"))
        except (av.FFmpegError, OSError, ValueError) as e:
            self.error = f"decoding stopped after {self.decoded} frames ({first_line(e)})"
            return
        expected = self.info.frames
        if expected and not self.info.live and self.decoded < (expected if self._frames_exact else 0.98 * expected - 1):
            self.error = f"ended after {self.decoded} of {expected} frames (truncated or corrupt file)"

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# H.264 quality 23 (x264's default) at the "veryfast" preset: 2.8 CPU ms per 640x480 frame on the development CPU;
# "ultrafast" saves 1.1 ms for 3x the file size, "superfast" gave nothing end to end (measured for issue 21)
X264_OPTIONS: dict[str, str] = {"crf": "23", "preset": "veryfast"}


def video_codec() -> str:
    """The encoder :class:`VideoWriter` uses: ``libx264`` when this FFmpeg build has it, else ``mpeg4``."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class VideoWriter:
    """Encode RGB ``[H,W,3]`` uint8 frames of one size into ``path`` (container from the extension, else mp4) at a
    constant ``fps``: frame ``n`` is shown at ``n / fps`` s. ``threads``: encoder threads (0: FFmpeg's choice).
    Always :meth:`close` it (a context manager)."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: Fraction,
                 codec: str | None = None, threads: int = 0) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.written = 0
        codec = codec or video_codec()
        fmt = None if self.path.suffix.lower() in VIDEO_EXTENSIONS else "mp4"
        try:
            self.container = av.open(str(self.path), "w", format=fmt)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise SsdError(f"{self.path}: cannot write a video there ({first_line(e)})") from None
        options = dict(X264_OPTIONS) if codec == "libx264" else {"qscale": "3"}
        options["threads"] = str(int(threads))  # 0: FFmpeg's choice (x264: about 1.5 per core)
        self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000), options=options)
        self.stream.width = self.width + self.width % 2  # yuv420p: even sizes (one replicated column/row added)
        self.stream.height = self.height + self.height % 2
        self.stream.pix_fmt = "yuv420p"

    def write(self, image: np.ndarray) -> None:
        if image.shape != (self.height, self.width, 3):
            raise ValueError(f"VideoWriter: expected frames of {self.height}x{self.width}x3, got {image.shape}")
        pad = ((0, self.height % 2), (0, self.width % 2), (0, 0))
        if any(p[1] for p in pad):
            image = np.pad(image, pad, mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.written
        self.container.mux(self.stream.encode(frame))
        self.written += 1

    def close(self) -> None:
        """Flush the encoder and write the container index (safe to call twice)."""
        if self.container is None:
            return
        try:
            self.container.mux(self.stream.encode(None))
        finally:
            self.container.close()
            self.container = None

    def __enter__(self) -> VideoWriter:  # noqa: PYI034
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


_END = object()


def prefetch(make: Callable[[], Iterable[T]], maxsize: int = 2) -> Iterator[T]:
    """Iterate ``make()`` in a background thread, at most ``maxsize`` items ahead (memory stays flat).

    Exceptions of the producer are re-raised here; closing this generator early (``break``, an exception in the
    consumer) stops the producer at its next item and waits for it.
    """
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()
    failure: list[BaseException] = []

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in make():
                if not put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, re-raised there
            failure.append(e)
        put(_END)

    thread = threading.Thread(target=produce, name="ssd-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                if failure:
                    raise failure[0]
                return
            yield item
    finally:
        stop.set()
        thread.join()
