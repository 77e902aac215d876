"""``irtrack bench soak``: N live streams for a long time through a running service: every frame
accounted for, memory flat, latency steady.

What it runs: the service as child processes (``irtrack serve`` on the embedded queue, or
``redis-server`` + ``irtrack worker`` + ``irtrack serve`` with ``--backend redis``), N streams
through the Python SDK as cameras send (``fps`` each, a frame that finds no credit is skipped by
the client), from ``bench.stream_clients``. Every ``sample_s`` it reads each service process's
RSS and the API's frame counters.

Figures per backend: frames sent, answered (results, drops, errors), unaccounted (sent and never
answered: the SDK's ``lost``, or still owed when the run ended), whether the counters of every
service process balance (received = processed + dropped + failed), RSS at the end of the warm-up
and at the end, and the growth between (per process), and the round-trip latency percentiles
(p50/p95/p99/max) of the results after the warm-up.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from bench.common import device_name, machine_info, served_weights, write_outputs
from bench.process_memory import MiB, rss_bytes
from bench.processes import (
    BACKENDS,
    ServiceStack,
    counters_balance,
    frame_counters,
    service_stack,
)
from bench.service_e2e import synthetic_clip
from bench.stream_clients import StreamPlan, run_streams
from frames.sizes import format_size, parse_size

DRAIN_S = 60.0


def sample(stack: ServiceStack, started: float) -> dict[str, Any]:
    """RSS of every service process and the API's frame counters, now."""
    return {
        "at_s": time.perf_counter() - started,
        "rss_bytes": {role: rss_bytes(pid) for role, pid in stack.pids.items() if role != "redis"},
        "counters": frame_counters(stack.base_url),
    }


async def _sample_until(
    stack: ServiceStack, started: float, until: float, every_s: float
) -> list[dict[str, Any]]:
    samples = []
    while True:
        samples.append(await asyncio.to_thread(sample, stack, started))
        if time.perf_counter() >= until:
            return samples
        await asyncio.sleep(min(every_s, max(0.0, until - time.perf_counter())))


def soak_backend(
    backend: str,
    *,
    streams: int,
    seconds: float,
    warmup_s: float,
    fps: float,
    size: tuple[int, int],
    model: str,
    threads: int,
    sample_s: float,
) -> dict[str, Any]:
    """One backend's soak; its row of the report (with the RSS samples)."""
    env = {
        "IRTRACK_MODELS": model,
        "IRTRACK_DEFAULT_MODEL": model,
        "IRTRACK_WARMUP_SIZES": format_size(*size),
        "IRTRACK_TORCH_THREADS": str(threads),
        "IRTRACK_MAX_STREAMS": str(max(64, streams)),
        "IRTRACK_API_KEYS": "",
        "IRTRACK_LOG_LEVEL": "warning",
    }
    clip = synthetic_clip(size, 100)
    with service_stack(backend, env) as stack:
        started = time.perf_counter()
        window = (started + warmup_s, started + warmup_s + seconds)
        plan = StreamPlan(stack.base_url, model, fps, 2, window, DRAIN_S)
        stream_ids = [f"soak-{backend}-{n}" for n in range(streams)]

        async def run() -> tuple[list[Any], list[dict[str, Any]]]:
            clients = asyncio.to_thread(run_streams, plan, clip, stream_ids)
            sampling = _sample_until(stack, started, window[1], sample_s)
            return await asyncio.gather(clients, sampling)

        shares, samples = asyncio.run(run())
        samples.append(sample(stack, started))  # after the drain
        balanced = counters_balance([stack.base_url, stack.metrics_url])
    arrivals = [arrival for share in shares for arrival in share.arrivals]
    statuses = Counter(arrival.status for arrival in arrivals)
    sent = len(arrivals) - statuses["skipped"]
    undrained = sum(share.undrained for share in shares)
    failures = [failure for share in shares for failure in share.failures]
    measured = [
        a.round_trip_ms
        for a in arrivals
        if a.status == "result" and a.round_trip_ms is not None and a.at >= window[0]
    ]
    after_warmup = next(s for s in samples if s["at_s"] >= warmup_s)
    at_end = [s for s in samples if s["at_s"] <= warmup_s + seconds][-1]
    growth = {
        role: at_end["rss_bytes"][role] / after_warmup["rss_bytes"][role] - 1.0
        for role in at_end["rss_bytes"]
    }
    percentiles = np.percentile(measured, [50, 95, 99, 100]) if measured else [float("nan")] * 4
    return {
        "backend": backend,
        "streams": streams,
        "fps": fps,
        "size": format_size(*size),
        "model": model,
        "seconds": seconds,
        "warmup_s": warmup_s,
        "sent": sent,
        "skipped": statuses["skipped"],
        "results": statuses["result"],
        "dropped": statuses["dropped"],
        "errors": statuses["error"],
        "unaccounted": statuses["lost"] + undrained,
        "stream_failures": failures,
        "server_received": samples[-1]["counters"]["received"],
        "counters_balance": balanced,
        "rss_after_warmup_bytes": after_warmup["rss_bytes"],
        "rss_end_bytes": at_end["rss_bytes"],
        "rss_max_after_warmup_bytes": {
            role: max(s["rss_bytes"][role] for s in samples if s["at_s"] >= warmup_s)
            for role in at_end["rss_bytes"]
        },
        "rss_growth": growth,
        "latency_ms": dict(zip(("p50", "p95", "p99", "max"), map(float, percentiles), strict=True)),
        "samples": samples,
    }


def per_process(values: dict[str, float], spec: str, scale: float = 1.0) -> str:
    """'api 512, worker 840': one figure per service process."""
    return ", ".join(f"{role} {values[role] * scale:{spec}}" for role in sorted(values))


def markdown_report(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    first = rows[0]
    lines = [
        f"Measured {machine['date']} on {device_name(machine)} (load average "
        f"{machine['load_average_1min']}): {first['streams']} live streams of {first['size']} "
        f"frames at {first['fps']:g} fps each through the Python SDK ({first['model']}), "
        f"{first['seconds'] / 60:g} minutes after a {first['warmup_s']:g} s warm-up, "
        "per backend. Unaccounted = frames sent and never answered; counters = received = "
        "processed + dropped + failed on every service process at the end; RSS growth = from "
        "the end of the warm-up to the end, per process; latency = client round trip of the "
        f"results after the warm-up. {served_weights([first['model']])}.",
        "",
        "| backend | sent | results | dropped | errors | skipped by clients | unaccounted "
        "| counters | RSS after warm-up MiB | RSS at end MiB | RSS growth | p50 ms | p95 ms "
        "| p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        latency = row["latency_ms"]
        lines.append(
            f"| {row['backend']} | {row['sent']} | {row['results']} | {row['dropped']} "
            f"| {row['errors']} | {row['skipped']} | {row['unaccounted']} "
            f"| {'balance' if row['counters_balance'] else '**off**'} "
            f"| {per_process(row['rss_after_warmup_bytes'], '.0f', 1 / MiB)} "
            f"| {per_process(row['rss_end_bytes'], '.0f', 1 / MiB)} "
            f"| {per_process(row['rss_growth'], '+.1%')} "
            f"| {latency['p50']:.0f} | {latency['p95']:.0f} | {latency['p99']:.0f} "
            f"| {latency['max']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def bench_soak(
    backends: Annotated[
        list[str] | None,
        typer.Option("--backend", help="embedded or redis; repeat (default: both)."),
    ] = None,
    streams: Annotated[int, typer.Option(min=1, help="Concurrent live streams.")] = 16,
    minutes: Annotated[float, typer.Option(help="Measured minutes per backend.")] = 30.0,
    warmup: Annotated[float, typer.Option(help="Seconds streamed before measuring.")] = 60.0,
    fps: Annotated[float, typer.Option(min=0.1, help="Frames/s per stream.")] = 2.0,
    size: Annotated[str, typer.Option("--frame-size", help="WIDTHxHEIGHT.")] = "128x128",
    model: Annotated[str, typer.Option(help="The model the streams use.")] = "sd2net",
    threads: Annotated[int, typer.Option(min=1, help="torch threads of the service.")] = 1,
    sample_every: Annotated[float, typer.Option(help="Seconds between RSS samples.")] = 10.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    markdown_path: Annotated[
        Path | None, typer.Option("--markdown", help="Write the table here.")
    ] = None,
) -> None:
    """N live streams for a long time, per backend: frames accounted, RSS growth, latency."""
    chosen = backends or list(BACKENDS)
    unknown = set(chosen) - set(BACKENDS)
    if unknown:
        raise typer.BadParameter(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")
    machine = machine_info(torch.device("cpu"))
    rows = [
        soak_backend(
            backend,
            streams=streams,
            seconds=minutes * 60,
            warmup_s=warmup,
            fps=fps,
            size=parse_size(size),
            model=model,
            threads=threads,
            sample_s=sample_every,
        )
        for backend in chosen
    ]
    write_outputs(
        markdown_report(rows, machine), {"machine": machine, "rows": rows}, json_path, markdown_path
    )
