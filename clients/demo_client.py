"""A small WebSocket client: stream frames to one irtrack stream and collect the answers.

Each frame goes as a JSON header (size, pixel type, sequence number) followed by its raw pixels,
so the client needs no image encoder. At most ``window`` frames are outstanding (sent, not yet
answered): the client follows the server's pace instead of flooding it; set ``fps`` to send at a
camera's rate instead and watch the newest-wins policy drop what the server cannot keep up with.

Example:
    >>> report = asyncio.run(stream_frames("ws://127.0.0.1:8000/v1/streams/cam-1/ws", frames))
    >>> print(report.summary())
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets


@dataclass
class StreamReport:
    """What came back for a streamed clip; latencies are client round trips in ms."""

    sent: int = 0
    results: int = 0
    dropped: int = 0
    errors: int = 0
    targets: int = 0
    frames_with_targets: int = 0
    track_ids: set[int] = field(default_factory=set)
    round_trip_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.round_trip_ms, q)) if self.round_trip_ms else float("nan")

    def summary(self) -> str:
        fps = self.results / self.wall_s if self.wall_s > 0 else 0.0
        return (
            f"frames sent {self.sent}: {self.results} results, {self.dropped} dropped, "
            f"{self.errors} errors in {self.wall_s:.1f} s ({fps:.1f} fps)\n"
            f"latency ms p50 {self.percentile(50):.1f}  p95 {self.percentile(95):.1f}  "
            f"p99 {self.percentile(99):.1f}\n"
            f"targets {self.targets} in {self.frames_with_targets} frames, "
            f"{len(self.track_ids)} confirmed tracks"
        )


async def stream_frames(
    url: str,
    frames: Iterable[np.ndarray],
    *,
    api_key: str | None = None,
    window: int = 2,
    fps: float = 0.0,
    on_message: Callable[[dict[str, Any], float], None] | None = None,
) -> StreamReport:
    """Send every frame (2-D uint8/uint16) over one WebSocket; return when all are answered.

    ``fps=0`` keeps at most ``window`` frames unanswered; ``fps > 0`` sends on a camera's clock
    whatever the answers do. ``on_message(message, round_trip_ms)`` sees each server message as
    it arrives.
    """
    report = StreamReport()
    sent_at: dict[int, float] = {}
    outstanding = asyncio.Semaphore(window)
    headers = {"X-API-Key": api_key} if api_key else None
    started = time.perf_counter()
    async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:

        async def send_all() -> None:
            for seq, frame in enumerate(frames):
                if fps > 0:
                    await asyncio.sleep(max(0.0, started + seq / fps - time.perf_counter()))
                else:
                    await outstanding.acquire()
                header = {"seq": seq, "width": frame.shape[1], "height": frame.shape[0]}
                header["dtype"] = str(frame.dtype)
                sent_at[seq] = time.perf_counter()
                await socket.send(json.dumps(header))
                little_endian = frame.dtype.newbyteorder("<")
                await socket.send(np.ascontiguousarray(frame, dtype=little_endian).tobytes())
                report.sent += 1

        sender = asyncio.create_task(send_all())
        answered = 0
        while not (sender.done() and answered == report.sent):
            try:
                raw = await asyncio.wait_for(socket.recv(), timeout=0.5)
            except TimeoutError:
                continue
            message = json.loads(raw)
            answered += 1
            if fps <= 0:
                outstanding.release()
            round_trip_ms = (time.perf_counter() - sent_at.pop(message.get("seq"), started)) * 1e3
            _count(report, message, round_trip_ms)
            if on_message is not None:
                on_message(message, round_trip_ms)
        await sender
    report.wall_s = time.perf_counter() - started
    return report


def _count(report: StreamReport, message: dict[str, Any], round_trip_ms: float) -> None:
    kind = message.get("type")
    if kind == "result":
        report.results += 1
        report.round_trip_ms.append(round_trip_ms)
        targets = message["targets"]
        report.targets += len(targets)
        report.frames_with_targets += bool(targets)
        report.track_ids.update(t["track_id"] for t in targets if t["track_id"] is not None)
    elif kind == "dropped":
        report.dropped += 1
    else:
        report.errors += 1


def describe(message: dict[str, Any], round_trip_ms: float) -> str:
    """One line per server message, for printing as frames come back."""
    seq = message.get("seq")
    if message.get("type") == "dropped":
        return f"frame {seq}: dropped ({message['reason']})"
    if message.get("type") == "error":
        return f"frame {seq}: error {message['error']['code']}: {message['error']['message']}"
    targets = ", ".join(
        f"#{t['track_id'] if t['track_id'] is not None else '-'} "
        f"({t['centroid']['x']:.1f},{t['centroid']['y']:.1f}) a={t['area']} s={t['score']:.2f}"
        for t in message["targets"][:5]
    )
    more = f" +{len(message['targets']) - 5} more" if len(message["targets"]) > 5 else ""
    return (
        f"frame {seq}: {len(message['targets'])} targets [{targets}{more}] "
        f"{round_trip_ms:.0f} ms (server {message['latency_ms']['total']:.0f} ms)"
    )
