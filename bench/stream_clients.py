"""The client side of ``irtrack bench service``: N WebSocket streams, in one or several processes.

One Python process sending many large frames (a 640x512 frame is 320 KiB) saturates its core
before a GPU-backed service does, and then the benchmark measures the client. So streams can be
spread over ``client_processes`` processes (spawned; this module imports no torch), each running
its share through ``clients.AsyncClient.stream`` on its own event loop. Times are
``time.perf_counter`` (CLOCK_MONOTONIC on Linux: one clock for every process of the machine), so
arrivals from every process fall into the same measurement window. Each process also reports the
CPU seconds it used inside the window, which tells whether the clients were the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np

from clients import AsyncClient, IrtrackError, Reconnected


@dataclass
class Arrival:
    """What came back for one source frame, and when (perf_counter)."""

    at: float
    status: str
    round_trip_ms: float | None
    server_ms: dict[str, float] | None


@dataclass(frozen=True)
class StreamPlan:
    """What every client process is told: where, what, how fast, and the window."""

    base_url: str
    model: str
    fps: float
    max_in_flight: int
    window: tuple[float, float]  # perf_counter start and end of the measured seconds
    drain_s: float


@dataclass
class ClientShare:
    """One client process's streams' outcome."""

    arrivals: list[Arrival]
    failures: list[str]
    undrained: int  # streams still owed answers after the drain wait
    window_cpu_s: float


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_streams(
    plan: StreamPlan,
    clip: Sequence[np.ndarray],
    stream_ids: Sequence[str],
    client_processes: int = 1,
) -> list[ClientShare]:
    """Stream ``clip`` on every stream id until the window ends, then drain; one share per
    client process (stream ``i`` goes to process ``i % client_processes``)."""
    shares = [
        (plan, clip, [(i, s) for i, s in enumerate(stream_ids) if i % client_processes == k])
        for k in range(client_processes)
    ]
    if client_processes == 1:
        return [_share_in_process(*shares[0])]
    with multiprocessing.get_context("spawn").Pool(client_processes) as pool:
        return pool.starmap(_share_in_process, shares)


def _share_in_process(
    plan: StreamPlan, clip: Sequence[np.ndarray], streams: list[tuple[int, str]]
) -> ClientShare:
    return asyncio.run(_share(plan, clip, streams))


async def _share(
    plan: StreamPlan, clip: Sequence[np.ndarray], streams: list[tuple[int, str]]
) -> ClientShare:
    arrivals: list[Arrival] = []
    cpu_at: dict[str, float] = {}

    async def mark(name: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        cpu_at[name] = own_cpu_seconds()

    async with AsyncClient(plan.base_url) as client:
        marks = [
            asyncio.create_task(mark("start", plan.window[0])),
            asyncio.create_task(mark("end", plan.window[1])),
        ]
        tasks = [
            asyncio.create_task(
                _consume(
                    client,
                    stream_id,
                    _frames_until(clip, 17 * index, plan.window[1]),
                    arrivals,
                    plan,
                )
            )
            for index, stream_id in streams
        ]
        await asyncio.gather(*marks)
        done, unfinished = await asyncio.wait(tasks, timeout=plan.drain_s) if tasks else ((), ())
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        failures = [str(task.exception()) for task in done if task.exception() is not None]
        for _, stream_id in streams:  # free the streams' state for the next row
            with contextlib.suppress(IrtrackError):
                await client.delete_stream(stream_id)
    return ClientShare(arrivals, failures, len(unfinished), cpu_at["end"] - cpu_at["start"])


async def _frames_until(
    clip: Sequence[np.ndarray], offset: int, until: float
) -> AsyncIterator[np.ndarray]:
    """The clip in a loop from ``offset`` until the deadline (an async source: no thread hop)."""
    index = offset
    while time.perf_counter() < until:
        yield clip[index % len(clip)]
        index += 1


async def _consume(
    client: AsyncClient,
    stream_id: str,
    frames: AsyncIterator[np.ndarray],
    arrivals: list[Arrival],
    plan: StreamPlan,
) -> None:
    stream = client.stream(
        stream_id,
        frames,
        model=plan.model,
        max_in_flight=plan.max_in_flight,
        fps=plan.fps or None,
        when_busy="skip" if plan.fps else "wait",
    )
    async for event in stream:
        if isinstance(event, Reconnected):
            continue  # its frames come back as "lost"
        result = event.result
        server = result.latency_ms.model_dump() if result is not None else None
        arrivals.append(Arrival(time.perf_counter(), event.status, event.round_trip_ms, server))
