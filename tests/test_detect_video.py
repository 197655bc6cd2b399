"""`ssd detect` on videos and streams (issue 21): videos generated here with PyAV, a tiny random checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path, PurePosixPath

import av
import numpy as np
import pytest
import torch
from cli_helpers import one_line_error, ssd, tiny_checkpoint

from ssdcli.data.video import VideoReader, VideoWriter, is_stream_source, prefetch, stream_name
from ssdcli.errors import SsdError
from ssdcli.inference import Detector
from ssdcli.inference.video import default_streams, detect_batches, encoder_threads
from ssdcli.visualize import box_pixels

pytestmark = pytest.mark.usefixtures("one_thread_module")


def make_video(path: Path, frames: int, width: int = 96, height: int = 64, fps: int = 25) -> list[np.ndarray]:
    """A clip of a bright rectangle moving over a dark gradient, encoded with PyAV (MPEG-4, high quality);
    returns the frames as decoded back (what a reader sees)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps, options={"qscale": "2"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        ramp = np.linspace(20, 90, width, dtype=np.uint8)[None, :, None]
        for i in range(frames):
            image = np.repeat(np.repeat(ramp, height, axis=0), 3, axis=2).copy()
            x = (3 * i) % max(1, width - 30)
            image[10:40, x : x + 30] = (230, 200, 40)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with av.open(str(path)) as src:
        return [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]


def read_video(path: Path) -> tuple[list[np.ndarray], list[float], Fraction, tuple[int, int]]:
    with av.open(str(path)) as src:
        s = src.streams.video[0]
        frames = list(src.decode(s))
        return ([f.to_ndarray(format="rgb24") for f in frames], [float(f.time) for f in frames], s.average_rate,
                (s.codec_context.width, s.codec_context.height))


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("video_ckpt") / "tiny.pth")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return path, make_video(path, 24)


def test_video_keeps_frames_rate_size_and_timestamps(weights: Path, clip, tmp_path: Path) -> None:
    path, frames = clip
    r = ssd("detect", path, "-w", weights, "-o", tmp_path / "out", "--batch", 5)
    assert r.exit_code == 0, r.output
    out_frames, times, rate, size = read_video(tmp_path / "out" / "clip.mp4")
    _, src_times, src_rate, src_size = read_video(path)
    assert len(out_frames) == len(frames) == 24
    assert rate == src_rate == 25 and size == src_size == (96, 64)
    assert times == pytest.approx(src_times)
    lines = read_lines(tmp_path / "out" / "clip.jsonl")
    assert [line["frame"] for line in lines] == list(range(24))
    assert [line["time"] for line in lines] == pytest.approx(src_times)
    assert set(lines[0]["detections"][0]) == {"label", "score", "box"}


def test_boxes_drawn_where_the_json_says(weights: Path, clip, tmp_path: Path) -> None:
    path, frames = clip
    r = ssd("detect", path, "-w", weights, "-o", tmp_path, "--max-det", 1, "--show-conf", 0.3)
    assert r.exit_code == 0, r.output
    drawn, _, _, _ = read_video(tmp_path / "clip.mp4")
    luma = np.array([0.299, 0.587, 0.114])
    for line, src, out in zip(read_lines(tmp_path / "clip.jsonl"), frames, drawn):
        dets = line["detections"]
        top = dets[int(np.argsort([-d["score"] for d in dets], kind="stable")[0])]  # the one box drawn
        x1, y1, x2, y2 = box_pixels(np.array([top["box"]]), (96, 64), (96, 64))[0]
        diff = np.abs(out.astype(float) - src.astype(float)) @ luma
        ys = np.arange(y1, y2 + 1)
        ys = ys[ys > y1 + (y2 - y1) // 3]  # below the tag, which sits on the top edge
        edges = np.concatenate([diff[ys, x1], diff[ys, x2]])
        assert np.median(edges) > 25, (line["frame"], top)  # the outline changed the pixels on the box edges
        inside = diff[y1 + 3 : y2 - 2, x1 + 3 : x2 - 2][(y2 - y1) // 3 :]
        if inside.size:
            assert np.median(inside) < 8  # and not inside the box (below the tag)


def test_frames_detect_like_images_and_api(weights: Path, clip) -> None:
    path, frames = clip
    detector = Detector.from_checkpoint(weights, "cpu")
    results = list(detector.predict_video(path, batch_size=8))
    assert [r.index for r in results] == list(range(24))
    assert [r.time for r in results] == pytest.approx([i / 25 for i in range(24)])
    as_images = detector.predict(frames, batch_size=8)
    for r, p in zip(results, as_images):
        assert r.prediction.to_records("x") == p.to_records("x")
        np.testing.assert_array_equal(r.prediction.boxes, p.boxes)


def test_model_streams_keep_frame_order_and_detections(weights: Path, clip) -> None:
    """Two batches at once, one torch thread each (the CPU default with several cores): the same per-frame
    results as images, in order, and torch's thread count restored afterwards."""
    path, frames = clip
    detector = Detector.from_checkpoint(weights, "cpu")
    threads = torch.get_num_threads()
    assert default_streams(detector) == threads  # the CPU default: a batch per torch thread
    results = list(detector.predict_video(path, batch_size=3, streams=2))
    assert torch.get_num_threads() == threads
    assert [r.index for r in results] == list(range(24))
    for r, p in zip(results, detector.predict(frames, batch_size=3)):
        assert r.prediction.to_records("x") == p.to_records("x")


def test_detect_batches_in_order_with_bounded_flight() -> None:
    """Batches that finish out of order come back in order, never more than ``streams`` in flight."""
    lock, flight = threading.Lock(), {"now": 0, "most": 0}

    class SlowDetector:
        def detect_resized(self, warped, sizes):
            with lock:
                flight["now"] += 1
                flight["most"] = max(flight["most"], flight["now"])
            time.sleep(0.02 * (3 - int(warped[0, 0, 0, 0]) % 3))  # later batches finish sooner
            with lock:
                flight["now"] -= 1
            return [int(warped[0, 0, 0, 0])]

    batches = [(torch.full((1, 3, 2, 2), i, dtype=torch.uint8), [(2, 2)]) for i in range(10)]
    out = list(detect_batches(SlowDetector(), batches, streams=3))  # type: ignore[arg-type]
    assert out == [[i] for i in range(10)]
    assert flight["most"] == 3


def test_vid_stride(weights: Path, clip, tmp_path: Path) -> None:
    path, _ = clip
    r = ssd("detect", path, "-w", weights, "-o", tmp_path, "--vid-stride", 5)
    assert r.exit_code == 0, r.output
    out_frames, times, rate, _ = read_video(tmp_path / "clip.mp4")
    assert len(out_frames) == 5 and rate == 5  # frames 0, 5, 10, 15, 20 at 25/5 fps
    assert [line["frame"] for line in read_lines(tmp_path / "clip.jsonl")] == [0, 5, 10, 15, 20]
    assert times == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    r = ssd("detect", path, "-w", weights, "-o", tmp_path / "x", "--vid-stride", 0)
    assert r.exit_code == 2 and "--vid-stride" in r.output


def test_odd_size_and_mixed_inputs(weights: Path, tmp_path: Path) -> None:
    make_video(tmp_path / "odd.avi", 6, width=95, height=63)
    from PIL import Image

    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "pic.png")
    r = ssd("detect", tmp_path, "-w", weights, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    frames, _, _, size = read_video(tmp_path / "out" / "odd.mp4")
    assert len(frames) == 6 and size == (96, 64)  # yuv420p: padded by one replicated column and row
    assert (tmp_path / "out" / "pic.png").exists()
    line = read_lines(tmp_path / "out" / "odd.jsonl")[0]
    assert max(d["box"][2] for d in line["detections"]) <= 95  # boxes are in the source's pixels


def test_truncated_video_keeps_what_decodes(weights: Path, tmp_path: Path) -> None:
    make_video(tmp_path / "full.mkv", 40)
    data = (tmp_path / "full.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    r = ssd("detect", tmp_path / "cut.mkv", "-w", weights, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "truncated or corrupt" in r.output
    frames, _, _, _ = read_video(tmp_path / "out" / "cut.mp4")
    lines = read_lines(tmp_path / "out" / "cut.jsonl")
    assert 0 < len(frames) == len(lines) < 40


def test_unreadable_sources_give_one_clear_line(weights: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    for source, what in [(tmp_path / "junk.mp4", "cannot open"), ("rtsp://127.0.0.1:9/live", "Connection refused"),
                         ("http://127.0.0.1:9/cam.mjpg", "Connection refused")]:
        r = ssd("detect", source, "-w", weights, "-o", tmp_path / "out")
        assert r.exit_code == 2, r.output
        assert "nothing could be processed" in one_line_error(r)
        assert what in r.output
    with pytest.raises(SsdError, match="camera 63: cannot open"):
        VideoReader("63")


def test_stream_sources_parse() -> None:
    assert is_stream_source("0") and is_stream_source("RTSP://cam/live") and is_stream_source("https://x/y.m3u8")
    assert not is_stream_source("clip.mp4") and not is_stream_source("imgs/*.mp4")
    assert stream_name("2") == "camera2"
    assert stream_name("rtsp://user:pw@cam.local:554/live/1?token=x") == "rtsp_cam.local_554_live_1"


def test_prefetch_is_bounded_and_propagates_errors() -> None:
    produced: list[int] = []

    def numbers():
        for i in range(100):
            produced.append(i)
            yield i

    it = prefetch(numbers, maxsize=2)
    assert next(it) == 0
    time.sleep(0.2)
    assert len(produced) <= 4  # one consumed, two queued, one waiting to be put
    it.close()

    def failing():
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(prefetch(failing))


def test_onnx_model_on_video(weights: Path, clip, tmp_path: Path) -> None:
    from ssdcli.deploy.onnx_export import export_onnx

    path, frames = clip
    model = export_onnx(weights, tmp_path / "tiny.onnx", verify=False) and tmp_path / "tiny.onnx"
    r = ssd("detect", path, "-w", model, "-o", tmp_path / "out", "--vid-stride", 6)
    assert r.exit_code == 0, r.output
    lines = read_lines(tmp_path / "out" / "clip.jsonl")
    assert [line["frame"] for line in lines] == [0, 6, 12, 18]
    onnx_detector = Detector.from_checkpoint(model, "cpu")
    assert default_streams(onnx_detector) == 1  # ONNX Runtime keeps its own thread pool: one batch at a time
    assert encoder_threads(onnx_detector) == 1  # the model keeps the CPU busy
    expected = onnx_detector.predict(frames[::6])
    for line, p in zip(lines, expected):
        assert [d["label"] for d in line["detections"]] == p.names
        assert np.allclose([d["box"] for d in line["detections"]], p.boxes, atol=0.02)


def test_sigint_leaves_a_playable_video(weights: Path, tmp_path: Path) -> None:
    path = tmp_path / "long.mp4"
    with VideoWriter(path, 64, 48, Fraction(30), codec="mpeg4") as w:  # long enough never to finish first
        rng = np.random.default_rng(0)
        for _ in range(3000):
            w.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    out = tmp_path / "out"
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ssdcli", "detect", str(path), "-w", str(weights), "-o", str(out), "--batch", "4"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        jsonl = out / "long.jsonl"
        while time.monotonic() < deadline and proc.poll() is None:
            if jsonl.exists() and jsonl.read_text().count("\n") >= 8:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[0]
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "SIGINT received" in output and "Traceback" not in output
    frames, _, _, _ = read_video(out / "long.mp4")  # decodes to the end: flushed and closed
    lines = read_lines(jsonl)
    assert 8 <= len(frames) == len(lines) < 3000
    assert [line["frame"] for line in lines] == list(range(len(lines)))


def test_http_stream_with_unknown_length(weights: Path, tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    from ssdcli.engine.detect_video import VideoItem, run_videos
    from ssdcli.reporting import RecordingReporter

    (tmp_path / "www").mkdir()
    make_video(tmp_path / "www" / "cam.ts", 10)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cam.ts"
        assert stream_name(url) == f"http_127.0.0.1_{server.server_address[1]}_cam"
        reporter = RecordingReporter()
        detector = Detector.from_checkpoint(weights, "cpu")
        run = run_videos(detector, [VideoItem(url, PurePosixPath("cam"))], tmp_path / "out", reporter=reporter)
    finally:
        server.shutdown()
    assert run.frames == 10 and not run.skipped
    task = "video cam"
    assert reporter.totals(task) == [None] and reporter.done(task) == 10  # a live counter, no total
    assert len(read_lines(tmp_path / "out" / "cam.jsonl")) == 10


def test_existing_outputs_refused_without_force(weights: Path, clip, tmp_path: Path) -> None:
    path, _ = clip
    (tmp_path / "clip.jsonl").write_text("keep me\n")
    r = ssd("detect", path, "-w", weights, "-o", tmp_path, "--vid-stride", 12)
    assert r.exit_code == 2 and "already exists" in one_line_error(r)
    assert (tmp_path / "clip.jsonl").read_text() == "keep me\n"
    r = ssd("detect", path, "-w", weights, "-o", tmp_path, "--vid-stride", 12, "--force")
    assert r.exit_code == 0, r.output
    assert len(read_lines(tmp_path / "clip.jsonl")) == 2
    r = ssd("detect", path, "-w", weights, "--json", tmp_path / "d.json")
    assert r.exit_code == 2 and "give --out" in one_line_error(r)


def test_encoder_threads_follow_the_model_device(weights: Path, tmp_path: Path) -> None:
    assert encoder_threads(Detector.from_checkpoint(weights, "cpu")) == 1
    for threads in (0, 1):
        path = tmp_path / f"t{threads}.mp4"
        with VideoWriter(path, 64, 48, Fraction(25), threads=threads) as writer:
            for i in range(5):
                writer.write(np.full((48, 64, 3), 40 * i, dtype=np.uint8))
            assert writer.stream.codec_context.thread_count == threads  # (set when the encoder opens)
        assert len(read_video(path)[0]) == 5
