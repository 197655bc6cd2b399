"""Detection on videos, streams and cameras: :meth:`Detector.predict_video <ssdcli.inference.Detector.predict_video>`.

Decoding and the warp to the model input run in a background thread (:func:`ssdcli.data.video.prefetch`, at
most two batches ahead), the model on batches of frames in the caller's thread: the two overlap (FFmpeg and
torch's kernels release the GIL) and memory stays flat whatever the length. Each frame goes through exactly
the steps of an image (:func:`~ssdcli.data.images.resize_square`, then
:meth:`~ssdcli.inference.Detector.detect_resized`), so a frame gives the detections of the same picture passed
to :meth:`~ssdcli.inference.Detector.predict` (same batching: bit-identical).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ssdcli.data.images import resize_square
from ssdcli.data.video import DEFAULT_TIMEOUT_S, VideoFrame, VideoReader, prefetch
from ssdcli.errors import SsdError

if TYPE_CHECKING:
    from ssdcli.inference.detector import Detector, Prediction

__all__ = ["FramePrediction", "frame_batches", "predict_video"]


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


def predict_video(
    detector: Detector,
    source: str | os.PathLike | VideoReader,
    batch_size: int = 8,
    stride: int = 1,
    keep_frames: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Iterator[FramePrediction]:
    """Yield a :class:`FramePrediction` for every ``stride``-th frame of ``source``: a video file, a stream URL,
    a camera index (``"0"``) or an open :class:`~ssdcli.data.video.VideoReader` (left open; its ``error`` says
    why a damaged file or a dropped stream ended early). Opened here: closed at the end, and a decoding error
    ends the iteration after the frames decoded before it. SsdError when the source cannot be opened."""
    if batch_size < 1:
        raise SsdError(f"batch size {batch_size}: expected at least 1")
    if stride < 1:
        raise SsdError(f"--vid-stride {stride}: expected at least 1")
    reader = source if isinstance(source, VideoReader) else VideoReader(source, timeout=timeout)
    size = detector.config.image_size
    batches = prefetch(lambda: frame_batches(reader, size, batch_size, stride))
    try:
        for frames, warped in batches:
            preds = detector.detect_resized(warped, [(f.image.shape[1], f.image.shape[0]) for f in frames])
            for f, p in zip(frames, preds):
                yield FramePrediction(f.index, f.time, p, f.image if keep_frames else None)
    finally:
        batches.close()  # stops and joins the decoding thread before the container is closed
        if reader is not source:
            reader.close()
