"""``irtrack stream SOURCE --server URL``: stream a video, folder, camera or URL to a service.

Prints each frame's targets as its answer arrives under a progress bar; ``--jsonl`` keeps every
answer (one line per source frame, plus one per reconnection), ``--out`` writes an annotated
video with the same frames as the source. The connection is the SDK's live stream
(:mod:`clients.live`): bounded frames in flight, reconnection to the same stream id, every frame
accounted for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import numpy as np
import typer
from tqdm import tqdm

from clients.annotate import VIDEO_CODECS, Annotator, VideoOut
from clients.client import AsyncClient
from clients.live import FrameEvent, Reconnected, StreamFailed, StreamStats, WhenBusy
from clients.sources import open_source

DEFAULT_VIDEO_FPS = 10.0  # the annotated video's rate when the source has none (image folders)
Pace = Literal["source", "max"]


def stream_command(
    source: Annotated[
        str,
        typer.Argument(help="video file, folder of images (8/16-bit), camera index, or URL"),
    ],
    server: Annotated[str, typer.Option(help="the service's base URL")] = "http://127.0.0.1:8000",
    key: Annotated[
        str | None, typer.Option(envvar="IRTRACK_API_KEY", help="API key (X-API-Key)")
    ] = None,
    stream_id: Annotated[
        str | None, typer.Option(help="stream id (default: from the source's name)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="sd2net, std2net or lrrnet")] = None,
    pace: Annotated[
        Pace,
        typer.Option(
            help="source: at the source's frame rate, skipping frames the service cannot keep "
            "up with (cameras and URLs always come at their own pace); max: every frame, as "
            "fast as the service answers"
        ),
    ] = "source",
    fps: Annotated[
        float | None, typer.Option(min=0.1, help="frame rate for --pace source (folders have none)")
    ] = None,
    max_frames: Annotated[
        int | None, typer.Option(min=1, help="stop after this many source frames")
    ] = None,
    max_in_flight: Annotated[int, typer.Option(min=1, help="frames sent and unanswered")] = 2,
    jsonl: Annotated[Path | None, typer.Option(help="write every answer here (JSON lines)")] = None,
    out: Annotated[
        Path | None, typer.Option(help="write an annotated video here (.mp4, .avi, .mkv)")
    ] = None,
    png: Annotated[
        bool, typer.Option(help="send frames as PNG (slow links) instead of raw")
    ] = False,
    reconnect_timeout: Annotated[
        float, typer.Option(min=0, help="seconds to keep reconnecting before giving up")
    ] = 30.0,
    quiet: Annotated[bool, typer.Option(help="only the progress bar and the summary")] = False,
) -> None:
    """Stream a video source to the service and print the targets of every frame live."""
    try:
        frames = open_source(source)
    except OSError as exc:  # no such file, an unreadable video, a camera that is not there
        raise typer.BadParameter(str(exc), param_hint="SOURCE") from None
    rate = fps or (None if frames.live else frames.fps)
    # Live means not waiting: a camera or a paced file skips what the service cannot take.
    when_busy: WhenBusy = "skip" if pace == "source" and (frames.live or rate) else "wait"
    stream = stream_id or frames.stream_id
    total = min(filter(None, (frames.frame_count, max_frames)), default=None)
    if when_busy == "wait":
        pacing = "every frame, as fast as the service answers"
    else:
        pacing = f"{rate:g} fps" if rate else "at the device's pace"
        pacing += ", skipping frames while the service is busy"
    typer.echo(f"streaming {source} to {server} as stream {stream!r}: {pacing}", err=True)
    options: dict[str, Any] = {
        "model": model,
        "max_in_flight": max_in_flight,
        "fps": rate if when_busy == "skip" and not frames.live else None,
        "when_busy": when_busy,
        "encoding": "png" if png else "raw",
        "reconnect_timeout_s": reconnect_timeout,
    }
    if out is not None and out.suffix.lower() not in VIDEO_CODECS:
        raise typer.BadParameter(
            f"must end in one of {', '.join(VIDEO_CODECS)}", param_hint="--out"
        )
    outputs = _Outputs(jsonl, out, frames.fps or fps or DEFAULT_VIDEO_FPS, stream)
    source_frames = itertools.islice(frames, max_frames)
    try:
        asyncio.run(_stream(server, key, stream, source_frames, options, outputs, total, quiet))
    except StreamFailed as exc:
        typer.echo(f"stream failed: {exc}", err=True)
        raise typer.Exit(1) from None


class _Outputs:
    """The JSON lines file and the annotated video, both optional."""

    def __init__(self, jsonl: Path | None, video: Path | None, fps: float, stream_id: str) -> None:
        self.jsonl_path = jsonl
        self.video = VideoOut(video, fps) if video is not None else None
        self.stream_id = stream_id
        self.annotator = Annotator()
        self._jsonl: TextIO | None = None

    def __enter__(self) -> _Outputs:
        if self.jsonl_path is not None:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = self.jsonl_path.open("w", encoding="utf-8")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self.video is not None:
            self.video.close()

    def write(self, event: FrameEvent | Reconnected) -> None:
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(event.to_json(self.stream_id)) + "\n")
        if self.video is not None and isinstance(event, FrameEvent):
            self.video.write(self.annotator.draw(event))


async def _stream(
    server: str,
    key: str | None,
    stream_id: str,
    frames: Iterable[np.ndarray],
    options: dict[str, Any],
    outputs: _Outputs,
    total: int | None,
    quiet: bool,
) -> None:
    """Stream, write every event out, and print the summary (also when the stream fails)."""
    async with AsyncClient(server, api_key=key) as client:
        live = client.stream(stream_id, frames, **options)
        with outputs, tqdm(total=total, unit="frame", dynamic_ncols=True) as progress:
            try:
                async for event in live:
                    outputs.write(event)
                    if isinstance(event, FrameEvent):
                        progress.update()
                        progress.set_postfix_str(_postfix(live.stats, event), refresh=False)
                    if not quiet or isinstance(event, Reconnected):
                        progress.write(describe(event), file=sys.stdout)
            finally:
                progress.close()
                typer.echo(live.stats.summary())
                for path in (outputs.jsonl_path, outputs.video.path if outputs.video else None):
                    if path is not None:
                        typer.echo(f"wrote {path}")


def _postfix(stats: StreamStats, event: FrameEvent) -> str:
    latency = f"{event.round_trip_ms:.0f} ms" if event.round_trip_ms is not None else event.status
    return f"{stats.fps:.1f} fps, {latency}, {len(stats.track_ids)} tracks"


def describe(event: FrameEvent | Reconnected) -> str:
    """One line per event, for printing as answers arrive; reconnections stand out."""
    if isinstance(event, Reconnected):
        return f"!! {event.describe()}"
    return event.describe()
