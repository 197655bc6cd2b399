"""Detection on videos, streams and cameras: :meth:`Detector.predict_video <ssdcli.inference.Detector.predict_video>`.

Decoding and the warp to the model input run in a background thread (:func:`ssdcli.data.video.prefetch`, at
most two batches ahead), the model on batches of frames (:func:`detect_batches`): the two overlap (FFmpeg and
torch's kernels release the GIL) and memory stays flat whatever the length. Each frame goes through exactly
the steps of an image (:func:`~ssdcli.data.images.resize_square`, then
:meth:`~ssdcli.inference.Detector.detect_resized`), so a frame gives the detections of the same picture passed
to :meth:`~ssdcli.inference.Detector.predict` (same batching: bit-identical).

Model streams (PyTorch on a CPU with several cores): instead of one batch at a time spread over every core
(torch's intra-op threads, which meet at a barrier after every operator: a core taken by the decoder or the video
writer for a moment stalls all of them), ``streams`` batches run at once, each in its own thread on one core.
Measured on 2 cores (``benchmarks/bench_video.py``, SSDLite320, 640x480, two runs): the model alone 37-43 frame/s
one batch on 2 threads, 50-55 two batches on 1 thread each; end to end 28 -> 35-42 frame/s. Results come back in
frame order. While streams run, torch's intra-op thread count is 1 for the whole process (restored afterwards).
For the same reason the video encoder gets one thread when the model runs on the CPU (:func:`encoder_threads`;
measured, same benchmark, interleaved medians of 3: end to end 43.2 -> 45.5 frame/s, 44.1 -> 42.0 CPU ms/frame).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ssdcli.data.images import resize_square
from ssdcli.data.video import DEFAULT_TIMEOUT_S, VideoFrame, VideoReader, prefetch
from ssdcli.errors import SsdError

if TYPE_CHECKING:
    from ssdcli.inference.detector import Detector, Prediction

__all__ = ["FramePrediction", "default_streams", "detect_batches", "encoder_threads", "frame_batches", "predict_video"]


@dataclass(frozen=True)
class FramePrediction:
    index: int  # frame index in the source (0-based, strided frames counted)
    time: float  # timestamp in seconds (the frame's pts * the stream's time_base)
    prediction: Prediction  # boxes in the frame's pixels (VOC convention)
    image: np.ndarray | None = None  # the RGB frame [H,W,3] uint8 when asked for (``keep_frames``)


def frame_batches(
    reader: VideoReader, size: int, batch_size: int, stride: int
) -> Iterator[tuple[list[VideoFrame], torch.Tensor]]:
    """Batches of every ``stride``-th frame with the frames warped to the model input (uint8 ``[N,3,S,S]``)."""
    batch: list[VideoFrame] = []
    for frame in reader.frames(stride):
        batch.append(frame)
        if len(batch) == batch_size:
            yield batch, _warp(batch, size)
            batch = []
    if batch:
        yield batch, _warp(batch, size)


def _warp(batch: list[VideoFrame], size: int) -> torch.Tensor:
    return torch.stack([resize_square(torch.from_numpy(f.image).permute(2, 0, 1), size) for f in batch])


def default_streams(detector: Detector) -> int:
    """Batches the model runs at once (see the module docstring): one per torch thread for a PyTorch model on a
    CPU, else 1 (CUDA runs one batch at a time; ONNX Runtime has its own thread pool)."""
    backend = detector.backend
    if getattr(backend, "uses_torch_threads", False) and backend.device.type == "cpu":  # type: ignore[attr-defined]
        return max(1, torch.get_num_threads())
    return 1


def encoder_threads(detector: Detector) -> int:
    """Threads for the video encoder beside ``detector``: 1 when the model runs on the CPU (its streams already
    keep every core busy; more encoder threads only contend with them), 0 (FFmpeg's choice) on a GPU."""
    return 0 if detector.backend.device.type == "cuda" else 1  # type: ignore[attr-defined]


@contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def detect_batches(
    detector: Detector, batches: Iterable[tuple[torch.Tensor, Sequence[tuple[int, int]]]], streams: int = 1
) -> Iterator[list[Prediction]]:
    """``detector.detect_resized`` on each ``(warped uint8 [N,3,S,S], (width, height) per image)`` batch, in order,
    ``streams`` batches at a time (each in its own thread on one torch thread; 1: in this thread as it is).
    At most ``streams`` batches are in flight, so memory stays flat."""
    if streams <= 1:
        for warped, sizes in batches:
            yield detector.detect_resized(warped, sizes)
        return
    with _intra_op_threads(1), ThreadPoolExecutor(streams, thread_name_prefix="ssd-model") as pool:
        pending: deque[Future] = deque()
        try:
            for warped, sizes in batches:
                pending.append(pool.submit(detector.detect_resized, warped, sizes))
                if len(pending) >= streams:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def predict_video(
    detector: Detector,
    source: str | os.PathLike | VideoReader,
    batch_size: int = 8,
    stride: int = 1,
    keep_frames: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    streams: int | None = None,
) -> Iterator[FramePrediction]:
    """Yield a :class:`FramePrediction` for every ``stride``-th frame of ``source``: a video file, a stream URL,
    a camera index (``"0"``) or an open :class:`~ssdcli.data.video.VideoReader` (left open; its ``error`` says
    why a damaged file or a dropped stream ended early). Opened here: closed at the end, and a decoding error
    ends the iteration after the frames decoded before it. SsdError when the source cannot be opened.
    ``streams``: batches the model runs at once (default :func:`default_streams`; see the module docstring)."""
    if batch_size < 1:
        raise SsdError(f"batch size {batch_size}: expected at least 1")
    if stride < 1:
        raise SsdError(f"--vid-stride {stride}: expected at least 1")
    streams = default_streams(detector) if streams is None else streams
    if streams < 1:
        raise SsdError(f"streams {streams}: expected at least 1")
    reader = source if isinstance(source, VideoReader) else VideoReader(source, timeout=timeout)
    size = detector.config.image_size
    batches = prefetch(lambda: frame_batches(reader, size, batch_size, stride), maxsize=streams + 1)
    inputs: deque[list[VideoFrame]] = deque()  # the frames of the batches handed to the model, oldest first

    def model_inputs() -> Iterator[tuple[torch.Tensor, list[tuple[int, int]]]]:
        for frames, warped in batches:
            inputs.append(frames)
            yield warped, [(f.image.shape[1], f.image.shape[0]) for f in frames]

    results = detect_batches(detector, model_inputs(), streams)
    try:
        for preds in results:
            for f, p in zip(inputs.popleft(), preds):
                yield FramePrediction(f.index, f.time, p, f.image if keep_frames else None)
    finally:
        results.close()  # waits for the batches in flight
        batches.close()  # stops and joins the decoding thread before the container is closed
        if reader is not source:
            reader.close()
