"""Shared by the service tests: a real uvicorn server on a free port, frames, metrics, WebSocket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cv2
import httpx
import numpy as np
import websockets

from service.server import BackgroundServer
from service.settings import Settings

FAST_SETTINGS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "models": ["sd2net"],
    "warmup_sizes": ["64x64"],
    "log_level": "warning",
}


@contextmanager
def running_server(
    wait_ready: bool = True, before_start: Any = None, **overrides: Any
) -> Iterator[BackgroundServer]:
    """A real server in this process; ``before_start(app)`` may look inside before it starts."""
    server = BackgroundServer(Settings(**{**FAST_SETTINGS, **overrides}))
    if before_start is not None:
        before_start(server.app)
    with server:
        if wait_ready:
            wait_until_ready(server.base_url)
        yield server


def wait_until_ready(base_url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{base_url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the service never became ready"
        time.sleep(0.05)


def noise_frame(height: int, width: int, seed: int, dtype: type = np.uint8) -> np.ndarray:
    """A cloudy background with a few bright dots: something for a detector to look at."""
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 16383
    background = cv2.GaussianBlur(rng.random((height, width)), (0, 0), 4) * 0.5 * top
    for _ in range(3):
        y, x = rng.integers(2, height - 2), rng.integers(2, width - 2)
        background[y - 1 : y + 2, x - 1 : x + 2] = top
    return background.astype(dtype)


def png(frame: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", frame)
    assert ok
    return data.tobytes()


def frame_totals(base_url: str) -> dict[str, float]:
    """received / processed / dropped / failed from /metrics, summed over labels."""
    totals = dict.fromkeys(("received", "processed", "dropped", "failed"), 0.0)
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        for name in totals:
            if line.startswith(f"irtrack_frames_{name}_total"):
                totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def metric_value(base_url: str, sample: str) -> float:
    """One sample of /metrics by its exact name and labels, e.g. 'irtrack_batch_size_count{...}'."""
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {sample} in /metrics")


def assert_frames_accounted(base_url: str) -> dict[str, float]:
    """The contract's invariant, once nothing is in flight: received = processed+dropped+failed."""
    deadline = time.monotonic() + 10
    while True:
        totals = frame_totals(base_url)
        balance = totals["processed"] + totals["dropped"] + totals["failed"]
        if totals["received"] == balance or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert totals["received"] == balance, totals
    return totals


async def exchange(
    url: str,
    frames: list[np.ndarray | bytes],
    *,
    window: int = 1,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Send frames over one WebSocket, at most ``window`` unanswered; return all answers in order.

    Arrays go as a JSON header + raw pixels, bytes as they are (encoded images or garbage);
    ``window=len(frames)`` sends everything at once.
    """
    answers: list[dict[str, Any]] = []
    async with websockets.connect(url, additional_headers=headers) as socket:
        for sent, frame in enumerate(frames, start=1):
            await send_frame(socket, frame)
            while sent - len(answers) >= window:
                answers.append(await receive_json(socket))
        while len(answers) < len(frames):
            answers.append(await receive_json(socket))
    return answers


async def send_frame(socket: Any, frame: np.ndarray | bytes) -> None:
    if isinstance(frame, np.ndarray):
        header = {"width": frame.shape[1], "height": frame.shape[0], "dtype": str(frame.dtype)}
        await socket.send(json.dumps(header))
        await socket.send(frame.astype(frame.dtype.newbyteorder("<")).tobytes())
    else:
        await socket.send(frame)


async def receive_json(socket: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), timeout_s))
    return message
