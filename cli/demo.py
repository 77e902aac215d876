"""``irtrack demo``: the service end to end on one machine, the way a user first meets it.

Starts the service in-process on a free port with the embedded queue (no Redis), streams a real
thermal clip (``<shared>/data/videos``, read by :mod:`clients.sources`; frames synthesized from
the shared datasets where there is no clip) through the WebSocket with the client SDK
(:meth:`clients.Client.stream`: at most ``MAX_IN_FLIGHT`` frames unanswered), prints each frame's
targets as they arrive, and ends with a summary: frames, fps, latency percentiles, targets,
tracks, and the service's own frame counters.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Annotated

import cv2
import httpx
import numpy as np
import torch
import typer

from clients import Client, FrameEvent
from clients.sources import open_source
from data.paths import DATA_DIR
from data.video import Box, load_clip
from evaluation.video import FOUND_MARGIN_PX, frame_outcome
from models import MODEL_NAMES
from service.schemas import Target
from service.server import BackgroundServer
from service.settings import Settings

VIDEO_DIR = DATA_DIR / "videos"
# The clip streamed by default: a drone over a smooth sky, in view from the first frame. The shipped
# SD2Net finds it as one component in nearly every frame at 240 px wide (tests/test_demo.py checks
# that it keeps one track id). In 02_6319 the drone is lost in cloud; in 02_6321 it spans ~40 px at
# 320 wide and splits into several components; the on-screen caption of the 2019 clips fires at 320
# wide and more. `irtrack demo --video` streams any other clip.
DEMO_CLIP = "20190925_101846_1_4.mp4"
SYNTHETIC_SIZE = (512, 640)  # (H, W) of synthesized frames: the clips' size
CPU_MAX_WIDTH = 240  # on a CPU: 240x192 frames, where the demo clip's drone is a small target
MAX_IN_FLIGHT = 2  # frames sent and unanswered: one being processed, one waiting behind it


def demo_command(
    model: Annotated[str, typer.Option(help=f"one of {', '.join(MODEL_NAMES)}")] = "sd2net",
    frames: Annotated[int, typer.Option(min=1, help="frames to stream")] = 200,
    video: Annotated[
        Path | None,
        typer.Option(help=f"video file (default: data/videos/{DEMO_CLIP}, else the first clip)"),
    ] = None,
    fps: Annotated[
        float,
        typer.Option(
            help="send at this rate, skipping frames while the service is busy "
            "(0: every frame, as fast as the service answers)"
        ),
    ] = 0.0,
    max_width: Annotated[
        int | None,
        typer.Option(
            help="downscale wider frames to this width (0: native size, 640x512 for the clips); "
            f"default: native on a GPU, {CPU_MAX_WIDTH} on a CPU, where 200 frames then take "
            "about half a minute on 2 cores"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="print only the summary")] = False,
) -> None:
    """Start the service with the embedded queue and stream a thermal clip over the WebSocket."""
    clip, source = _load_clip(video, frames)
    labels = _Labels.beside(video)
    original_width = clip[0].shape[1]
    if max_width is None:
        max_width = 0 if torch.cuda.is_available() else CPU_MAX_WIDTH
    clip = [_fit_width(frame, max_width) for frame in clip]
    height, width = clip[0].shape
    typer.echo(f"streaming {len(clip)} frames of {width}x{height} from {source} with {model}")
    settings = Settings(
        host="127.0.0.1",
        port=0,
        models=[model],
        default_model=model,
        warmup_sizes=[f"{width}x{height}"],
        log_level="warning",
    )
    started = time.perf_counter()
    with BackgroundServer(settings) as server, Client(server.base_url) as client:
        _wait_until_ready(client, timeout_s=300)
        typer.echo(f"service ready at {server.base_url} in {time.perf_counter() - started:.1f} s")
        stream = client.stream(
            "demo",
            clip,
            model=model,
            max_in_flight=MAX_IN_FLIGHT,
            fps=fps or None,
            when_busy="skip" if fps > 0 else "wait",
        )
        scale = clip[0].shape[1] / original_width
        for event in stream:
            if not quiet:
                typer.echo(event.describe())
            if labels is not None and isinstance(event, FrameEvent) and event.result is not None:
                labels.count(event.seq, event.result.targets, scale)
        assert stream.stats is not None  # set when the stream started
        summary = stream.stats.summary()  # before shutting down: its fps runs to this call
        metrics = httpx.get(f"{server.base_url}/metrics").text
    typer.echo("--- summary ---")
    typer.echo(summary)
    typer.echo(_frame_counters(metrics))
    if labels is not None:
        typer.echo(labels.summary())


class _Labels:
    """A labelled clip's boxes (a drone-ir clip's JSON beside its video), scored as
    ``irtrack eval-video`` scores them: found when a target's centroid is in the box grown by
    ``FOUND_MARGIN_PX``, every other target a false alarm."""

    def __init__(self, boxes: tuple[Box | None, ...]) -> None:
        self.boxes = boxes
        self.labelled = self.found = self.false_alarms = self.frames = 0

    @classmethod
    def beside(cls, video: Path | None) -> _Labels | None:
        if video is None or not video.with_suffix(".json").is_file():
            return None
        return cls(load_clip(video.stem, video.parent.parent.parent).boxes)

    def count(self, seq: int, targets: list[Target], scale: float) -> None:
        box = self.boxes[seq] if seq < len(self.boxes) else None
        centroids = np.array([(t.centroid.x / scale, t.centroid.y / scale) for t in targets])
        contains = None if box is None else lambda x, y: box.contains(x, y, FOUND_MARGIN_PX)
        found, false_alarms = frame_outcome(centroids.reshape(-1, 2), contains)
        self.frames += 1
        self.labelled += box is not None
        self.found += found
        self.false_alarms += false_alarms

    def summary(self) -> str:
        return (
            f"labelled target found in {self.found} of {self.labelled} frames; "
            f"{self.false_alarms / max(self.frames, 1):.3f} false alarms per frame"
        )


def _load_clip(video: Path | None, count: int) -> tuple[list[np.ndarray], str]:
    """Up to ``count`` gray frames of the clip, or synthesized ones when there is no clip."""
    if video is None:
        clips = sorted(VIDEO_DIR.glob("*.mp4")) if VIDEO_DIR.is_dir() else []
        preferred = [clip for clip in clips if clip.name == DEMO_CLIP]
        video = (preferred or clips)[0] if clips else None
    if video is not None:
        try:
            source = open_source(str(video))
        except OSError as exc:  # no such file, or one OpenCV cannot open
            raise typer.BadParameter(str(exc), param_hint="--video") from None
        return list(itertools.islice(source, count)), str(video)
    return _synthesize(count), "synthesized frames (no clip in data/videos)"


def _fit_width(frame: np.ndarray, max_width: int) -> np.ndarray:
    height, width = frame.shape
    if max_width <= 0 or width <= max_width:
        return frame
    size = (max_width, round(height * max_width / width))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _synthesize(count: int) -> list[np.ndarray]:
    """A seeded clip of real targets moving over real backgrounds (data.synthesis)."""
    from data.synthesis import SequenceConfig, SequenceSource, synthesize_sequence

    datasets = tuple(name for name in ("nudt-sirst", "sirst-v2") if (DATA_DIR / name).is_dir())
    if not datasets:
        raise typer.BadParameter(f"no clip in {VIDEO_DIR} and no dataset to synthesize from")
    source = SequenceSource.from_split("test", datasets=datasets, limit=30)
    config = SequenceConfig(length=count, size=SYNTHETIC_SIZE, seed=0)
    return list(synthesize_sequence(config, source).frames)


def _wait_until_ready(client: Client, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not client.ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service was not ready within {timeout_s:.0f} s")
        time.sleep(0.2)


def _frame_counters(metrics_text: str) -> str:
    """The service's own frame accounting (received = processed + dropped + failed)."""
    totals: dict[str, float] = {}
    for line in metrics_text.splitlines():
        for name in ("received", "processed", "dropped", "failed"):
            if line.startswith(f"irtrack_frames_{name}_total"):
                totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return "service counters: " + ", ".join(f"{k} {v:.0f}" for k, v in totals.items())
