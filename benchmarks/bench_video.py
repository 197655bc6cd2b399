"""`ssd detect` on a video: end-to-end frames/s vs the model's own batch throughput, and peak memory vs length.

    .venv/bin/python benchmarks/bench_video.py [--archs ssdlite320 ssd300] [--seconds 10] [--size 640x480]
        [--batch 8] [--conf 0.25] [--threads N] [--rounds 3] [--memory] [--json out.json]

Random-init models (speed does not depend on the weights; 21 classes). A video of moving rectangles over a
textured background is generated with PyAV (MPEG-4, 30 fps, ``--seconds`` long, ``--size``).

* model alone: the same frames decoded and warped beforehand, held in memory, then
  ``Detector.detect_resized`` on batches of ``--batch`` (normalise, forward, decode + NMS, pixel boxes): what the
  model does with no video work around it, measured both ways the model can run
  (:func:`ssdcli.inference.video.detect_batches`): one batch at a time on all torch threads, and one batch per
  thread at once (the video path's default on a CPU).
* rounds (``--rounds``, default 3): each round times the model alone both ways, then the end-to-end run; the
  figures are medians over the rounds, and the reference is the faster of the two model-alone medians.
* end-to-end: :func:`ssdcli.engine.detect_video.run_videos` on the file (decode thread, model, drawing +
  H.264 encoding + JSON lines thread), frames / wall time. Target (issue 21): >= 0.85x the model alone.
* ``--memory``: peak RSS (``ru_maxrss``) of a fresh process running the end-to-end path on a 10 s and on a
  5 min video (generated at 160x120, 10 fps; ``--vid-stride 10`` so the long one stays quick: every frame is
  still decoded, one in ten goes through the model, drawing and encoding), SSDLite320.
  Target: flat (the 5 min run within a few MB of the 10 s one).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ssdcli.checkpoint import save_checkpoint
from ssdcli.data.video import VideoReader, VideoWriter
from ssdcli.engine.detect_video import VideoItem, run_videos
from ssdcli.inference import Detector
from ssdcli.inference.video import default_streams, detect_batches, frame_batches
from ssdcli.models.registry import build_model
from ssdcli.postprocess import PostprocessConfig


def make_video(path: Path, seconds: float, width: int, height: int, fps: int) -> int:
    """Moving rectangles over a fixed noisy texture; MPEG-4 (fast to write). Returns the frame count."""
    rng = np.random.default_rng(0)
    background = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)
    n = round(seconds * fps)
    with VideoWriter(path, width, height, Fraction(fps), codec="mpeg4") as w:
        for i in range(n):
            frame = background.copy()
            for k in range(3):
                x = (i * (3 + k) + 50 * k) % max(1, width - width // 4)
                y = (height // 5) * (k + 1) % max(1, height - height // 4)
                frame[y : y + height // 4, x : x + width // 4] = (60 * k + 50, 200 - 50 * k, 120)
            w.write(frame)
    return n


def detector_for(arch: str, folder: Path, conf: float) -> Detector:
    torch.manual_seed(0)
    path = folder / f"{arch}.pth"
    if not path.exists():
        save_checkpoint(path, build_model(arch, 21))
    return Detector.from_checkpoint(path, "cpu", PostprocessConfig(score_threshold=conf))


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (a figure a busy machine disturbs less than wall time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def model_alone(detector: Detector, video: Path, batch: int, streams: int) -> tuple[float, int, float]:
    """Frames/s of ``detect_resized`` on the video's frames, decoded and warped beforehand, ``streams`` batches at
    a time, and CPU ms/frame."""
    with VideoReader(video) as reader:
        batches = [(warped, [(f.image.shape[1], f.image.shape[0]) for f in frames])
                   for frames, warped in frame_batches(reader, detector.config.image_size, batch, 1)]
    for _ in detect_batches(detector, batches[:streams], streams):  # warm-up
        pass
    t0, c0 = time.perf_counter(), cpu_seconds()
    for _ in detect_batches(detector, batches, streams):
        pass
    n = sum(len(s) for _, s in batches)
    return n / (time.perf_counter() - t0), n, (cpu_seconds() - c0) * 1000 / n


def end_to_end(detector: Detector, video: Path, out: Path, batch: int, stride: int = 1) -> tuple[float, int, float]:
    """Frames/s of the whole ``ssd detect`` video path, frames processed, CPU ms/frame."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    run = run_videos(detector, [VideoItem(str(video), video.with_suffix("").relative_to(video.parent))], out,
                     batch_size=batch, stride=stride, conf=0.5)
    return run.frames / (time.perf_counter() - t0), run.frames, (cpu_seconds() - c0) * 1000 / max(1, run.frames)


def rss_child(video: str, folder: str, batch: int) -> None:
    """(In a fresh process) run the end-to-end path, print the peak RSS in MB as JSON."""
    detector = detector_for("ssdlite320", Path(folder), 0.25)
    out = Path(tempfile.mkdtemp(dir=folder))
    fps, frames, _ = end_to_end(detector, Path(video), out, batch, stride=10)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    status = Path("/proc/self/status")
    now_kb = next((int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS:")), 0) \
        if status.exists() else 0
    print(json.dumps({"frames": frames, "fps": fps, "peak_rss_mb": peak_mb, "end_rss_mb": now_kb / 1024}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["ssdlite320", "ssd300"])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--conf", type=float, default=0.25, help="the detector's score threshold")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are reported)")
    ap.add_argument("--memory", action="store_true", help="also peak RSS for a 10 s vs a 5 min video")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args.rss_child[0], args.rss_child[1], args.batch)
        return 0
    width, height = (int(v) for v in args.size.split("x"))
    report: dict = {"threads": torch.get_num_threads(), "size": args.size, "batch": args.batch, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        video = folder / "clip.mp4"
        n = make_video(video, args.seconds, width, height, 30)
        print(f"video: {n} frames {width}x{height} @ 30 fps; torch threads {torch.get_num_threads()}")
        for arch in args.archs:
            detector = detector_for(arch, folder, args.conf)
            ways = sorted({1, default_streams(detector)})  # 1 batch on all threads; a batch per thread
            alone_runs: dict[int, list] = {k: [] for k in ways}
            e2e_runs = []
            for _ in range(args.rounds):
                for k in ways:
                    alone_runs[k].append(model_alone(detector, video, args.batch, k))
                e2e_runs.append(end_to_end(detector, video, Path(tempfile.mkdtemp(dir=tmp)), args.batch))
            fps = {k: statistics.median(r[0] for r in alone_runs[k]) for k in ways}
            cpu = {k: statistics.median(r[2] for r in alone_runs[k]) for k in ways}
            e2e = statistics.median(r[0] for r in e2e_runs)
            cpu_e = statistics.median(r[2] for r in e2e_runs)
            frames = e2e_runs[0][1]
            alone = max(fps.values())
            row = {"arch": arch, "model_fps": round(alone, 2), "end_to_end_fps": round(e2e, 2),
                   "ratio": round(e2e / alone, 3), "frames": frames, "end_to_end_cpu_ms_per_frame": round(cpu_e, 1),
                   "model_fps_by_streams": {k: round(v, 2) for k, v in fps.items()},
                   "model_cpu_ms_per_frame_by_streams": {k: round(v, 1) for k, v in cpu.items()},
                   "end_to_end_fps_runs": [round(r[0], 2) for r in e2e_runs],
                   "model_fps_runs": {k: [round(r[0], 2) for r in v] for k, v in alone_runs.items()}}
            report["runs"].append(row)
            shown = "   ".join(f"{k} stream(s) {fps[k]:6.2f} frame/s ({cpu[k]:.0f} CPU ms/frame)" for k in ways)
            print(f"{arch:12s} model alone: {shown}   end-to-end {e2e:7.2f} frame/s ({cpu_e:.0f} CPU ms/frame)   "
                  f"ratio to the faster {e2e / alone:.3f}")
        if args.memory:
            report["memory"] = []
            for seconds in (10, 300):
                path = folder / f"mem{seconds}.mp4"
                make_video(path, seconds, 160, 120, 10)
                out = subprocess.run([sys.executable, __file__, "--rss-child", str(path), tmp, "--batch",
                                      str(args.batch), "--threads", str(args.threads)],
                                     capture_output=True, text=True, check=True)
                row = {"video_s": seconds, **json.loads(out.stdout.strip().splitlines()[-1])}
                report["memory"].append(row)
                print(f"memory: {seconds:4d} s video, {row['frames']} frames processed: peak RSS "
                      f"{row['peak_rss_mb']:.0f} MB, at the end {row['end_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
