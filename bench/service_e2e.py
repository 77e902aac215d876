"""The service end to end: N concurrent WebSocket streams through a real service, vs the raw model.

What it runs: the service as child processes, as a deployment runs it (``irtrack serve`` on the
embedded queue; or ``redis-server`` on a free port + ``irtrack serve`` + one ``irtrack worker``
with ``--backend redis``), and N concurrent streams through the Python SDK
(``clients.AsyncClient.stream``: raw 8-bit frames, at most ``max_in_flight`` unanswered per
stream), from this process or spread over ``--client-processes`` (``bench.stream_clients``). Frames are real thermal video (the first clip of ``<shared>/data/videos``, downscaled to
cover the size and centre-cropped) or, without a clip, synthesized. Each stream sends

- at ``fps`` frames/s (a camera: a frame without a credit is skipped by the client,
  ``when_busy="skip"``), or
- with ``fps=0`` as fast as its credits allow (every frame sent, ``when_busy="wait"``): the
  service's saturation throughput.

For ``seconds`` after a ``warmup_s`` ramp, a row counts the results that arrive (delivered
frames/s), their client round trips (p50/p95/p99) and the server's own latency split; frames
still in flight at the end are drained (counted, not timed). Beside it: the mean batch the worker
ran, the CPU each process used (cores), and the raw model throughput, measured in this process
before and after the rows (the faster is the reference): the service's own ``ModelRuntime``
alone, same model, inference backend (``--inference``: ONNX Runtime or torch), torch threads and
the engine's max batch per call (``std2net``: the cached stream step). Environment variables reach the service's processes,
so ``OMP_WAIT_POLICY=PASSIVE irtrack bench service ...`` applies to the raw model and the service.
The overhead ratio of a saturation row is its delivered frames/s / the raw frames/s.

Where a frame's time goes on CPU (2-core development machine shared with two training jobs;
py-spy on ``irtrack serve``, SD2Net 256x256, 4 streams at saturation; each stage timed alone on
the same frames):

- The worker thread spends 96% of its samples in the model's forward pass, 3% waiting for the
  next frames (the event loop -> worker thread hop, and ``max_wait_ms`` for batch-mates when
  fewer streams than ``max_batch``), < 1% in post-processing; the event loop waits in uvloop's
  poll for > 99% of its samples.
- Per frame outside the model, in ms: raw decode 0.01, normalise 0.04, pad + cat 0.04, crop
  0.01, sigmoid 0.31, connected components 1.08, tracker 0.36, result + JSON 0.06: ~1.9 ms
  against 300-800 ms of model per 256x256 frame on these cores.
- So on CPU the ratio is set by threads, not per-frame work. 64x64, 8 streams: 1 torch thread,
  ratio 1.02; 2 threads with libgomp's default spin-waiting, 0.16 (the model call 10x slower:
  a spinning OpenMP thread burns the time slice its partner, the event loop and the client
  need); 2 threads with ``OMP_WAIT_POLICY=PASSIVE``, 0.98. Fewer streams than ``max_batch``
  also run smaller batches than the raw reference (std2net 32x32, 2 streams: 0.53).
- Done: ``OMP_WAIT_POLICY=PASSIVE`` (set before torch loads: images, dev.sh; or
  ``IRTRACK_TORCH_THREADS`` = cores - 1 where the service shares its cores); the sigmoid and
  components (1.4 ms above) became ``frames.postprocess.detect_in_logits``: thresholding in logit
  space and labelling the foreground's bounding box only (``irtrack bench postprocess``;
  docs/results/postprocess-cpu.md). The tracker (0.36 ms above) is now the largest
  per-frame cost outside the model.

Tables for docs/ come from ``--markdown PATH``, never typed by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import cv2
import httpx
import numpy as np
import torch
import typer

from bench.common import (
    MarkdownOption,
    device_name,
    machine_info,
    weights_label,
    weights_named,
    write_outputs,
)
from bench.processes import ServiceStack, cpu_seconds, service_stack
from bench.stream_clients import Arrival, StreamPlan, run_streams
from clients.sources import open_source
from data.paths import DATA_DIR
from frames.sizes import format_size, parse_size
from models import MODEL_NAMES
from models.std2net import StreamState
from service.settings import Settings
from service.worker.runtime import ModelRuntime

DEFAULT_STREAMS = (1, 4, 16)
DEFAULT_FPS = (25.0, 0.0)  # 0: as fast as the credits allow (saturation)
DEFAULT_SIZE = (256, 256)  # (H, W)
DEFAULT_MAX_BATCH: int = Settings.model_fields["max_batch"].default
DEFAULT_MAX_STREAMS: int = Settings.model_fields["max_streams"].default
DEFAULT_QUEUE_LIMIT: int = Settings.model_fields["global_queue_limit"].default
VIDEO_DIR = DATA_DIR / "videos"


# --- frames ------------------------------------------------------------------------------------
def load_clip(
    size: tuple[int, int], count: int = 100, video: Path | None = None
) -> tuple[list[np.ndarray], str]:
    """``count`` gray frames of (H, W) = ``size``, and where they came from.

    From ``video`` or the first clip of ``<shared>/data/videos``, each frame scaled to cover the
    size and centre-cropped; synthesized when there is no clip.
    """
    if video is None:
        clips = sorted(VIDEO_DIR.glob("*.mp4")) if VIDEO_DIR.is_dir() else []
        video = clips[0] if clips else None
    if video is None:
        return synthetic_clip(size, count), "synthesized (no clip in data/videos)"
    frames = [
        _cover_crop(frame, size) for frame in itertools.islice(open_source(str(video)), count)
    ]
    if not frames:
        raise ValueError(f"cannot read frames from {video}")
    return frames, str(video)


def _cover_crop(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    scale = max(height / frame.shape[0], width / frame.shape[1])
    scaled_size = (
        max(width, round(frame.shape[1] * scale)),
        max(height, round(frame.shape[0] * scale)),
    )
    scaled = cv2.resize(frame, scaled_size, interpolation=cv2.INTER_AREA)
    top, left = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


def synthetic_clip(size: tuple[int, int], count: int, seed: int = 0) -> list[np.ndarray]:
    """A cloudy 8-bit background with a small bright target drifting across it."""
    height, width = size
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.random((height, width)), (0, 0), 4) * 120 + 40
    frames = []
    for index in range(count):
        frame = background + rng.normal(0, 2, size)
        y = int(height / 3 + index) % (height - 3)
        x = int(width / 4 + 2 * index) % (width - 3)
        frame[y : y + 3, x : x + 3] = 250
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


# --- one row: N streams through the running service --------------------------------------------
@dataclass
class _Snapshot:
    """Counters sampled at a window edge: CPU seconds per process, the worker's batch sums."""

    cpu_s: dict[str, float]
    batches: tuple[float, float]  # (sum of batch sizes, number of batches)


async def _snapshot(stack: ServiceStack, http: httpx.AsyncClient) -> _Snapshot:
    cpu = {role: cpu_seconds(pid) for role, pid in stack.pids.items()}
    totals = {"sum": 0.0, "count": 0.0}
    with contextlib.suppress(httpx.HTTPError):
        for line in (await http.get(f"{stack.metrics_url}/metrics")).text.splitlines():
            for key in totals:
                if line.startswith(f"irtrack_batch_size_{key}"):
                    totals[key] += float(line.rsplit(" ", 1)[1])
    return _Snapshot(cpu, (totals["sum"], totals["count"]))


async def _stream_row(
    stack: ServiceStack,
    clip: Sequence[np.ndarray],
    *,
    row_id: str,
    model: str,
    streams: int,
    fps: float,
    seconds: float,
    warmup_s: float,
    drain_s: float,
    max_in_flight: int,
    client_processes: int = 1,
) -> dict[str, Any]:
    """One row: the streams run in ``client_processes`` processes (a thread of this one when 1)
    while this event loop samples the service's counters at the window's edges."""
    stream_ids = [f"bench-{row_id}-{index}" for index in range(streams)]
    started = time.perf_counter()
    window = (started + warmup_s, started + warmup_s + seconds)
    plan = StreamPlan(stack.base_url, model, fps, max_in_flight, window, drain_s)
    processes = max(1, min(client_processes, streams))
    async with httpx.AsyncClient() as http:
        clients = asyncio.create_task(
            asyncio.to_thread(run_streams, plan, clip, stream_ids, processes)
        )
        await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
        first = await _snapshot(stack, http)
        await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
        last = await _snapshot(stack, http)
        shares = await clients
    failures = [failure for share in shares for failure in share.failures]
    if failures:
        raise RuntimeError(f"{len(failures)} streams failed: {failures[0]}")
    arrivals = [arrival for share in shares for arrival in share.arrivals]
    row = _summarise(arrivals, window, first, last, seconds)
    row["cpu_cores"]["client"] = sum(share.window_cpu_s for share in shares) / seconds
    row.update(
        streams=streams,
        fps=fps,
        max_in_flight=max_in_flight,
        client_processes=processes,
        seconds=seconds,
        warmup_s=warmup_s,
        undrained_streams=sum(share.undrained for share in shares),
    )
    return row


def _summarise(
    arrivals: list[Arrival],
    window: tuple[float, float],
    first: _Snapshot,
    last: _Snapshot,
    seconds: float,
) -> dict[str, Any]:
    counts = Counter(arrival.status for arrival in arrivals)
    timed = [a for a in arrivals if a.status == "result" and window[0] <= a.at <= window[1]]
    round_trips = [a.round_trip_ms for a in timed if a.round_trip_ms is not None]
    percentiles = (
        [float(p) for p in np.percentile(round_trips, [50, 95, 99])] if round_trips else [None] * 3
    )
    stages = ("queue", "inference", "postprocess", "total")
    server = {
        stage: statistics.median(a.server_ms[stage] for a in timed if a.server_ms is not None)
        if timed
        else None
        for stage in stages
    }
    batches = last.batches[1] - first.batches[1]
    return {
        "offered": len(arrivals),
        "sent": len(arrivals) - counts["skipped"],
        "delivered": counts["result"],
        "dropped": counts["dropped"],
        "skipped": counts["skipped"],
        "errors": counts["error"],
        "lost": counts["lost"],
        "window_delivered": len(timed),
        "delivered_fps": len(timed) / seconds,
        "latency_p50_ms": percentiles[0],
        "latency_p95_ms": percentiles[1],
        "latency_p99_ms": percentiles[2],
        "server_median_ms": server,
        "mean_batch": (last.batches[0] - first.batches[0]) / batches if batches else None,
        "cpu_cores": {
            role: (last.cpu_s[role] - first.cpu_s[role]) / seconds for role in last.cpu_s
        },
    }


# --- capacity: the most streams served within a latency limit --------------------------------
@dataclass(frozen=True)
class Capacity:
    """Search for the most concurrent ``fps`` streams the service serves with p99 round trip
    under ``p99_limit_ms`` and no frame lost (none dropped, skipped for want of a credit,
    failed or lost): double the stream count from 1 until a row fails or ``max_streams``, then
    bisect between the last passing and the first failing count. Every probe is a row."""

    fps: float = 25.0
    p99_limit_ms: float = 50.0
    max_streams: int = 256

    def passes(self, row: dict[str, Any]) -> bool:
        lost = row["dropped"] + row["skipped"] + row["errors"] + row["lost"]
        p99 = row["latency_p99_ms"]
        return lost == 0 and p99 is not None and p99 < self.p99_limit_ms

    def search(self, measure: Callable[[float, int], dict[str, Any]]) -> dict[str, Any]:
        """``measure(fps, streams)`` runs one row; returns the largest passing count (0: none)
        and the row that showed it."""
        best: dict[str, Any] | None = None
        failing: int | None = None
        count = 1
        while count <= self.max_streams:
            row = measure(self.fps, count)
            if not self.passes(row):
                failing = count
                break
            best = row
            count *= 2
        low = best["streams"] if best else 0
        high = failing if failing is not None else low
        while high - low > max(1, low // 8):  # to within 1/8 of the answer
            middle = (low + high) // 2
            row = measure(self.fps, middle)
            if self.passes(row):
                best, low = row, middle
            else:
                high = middle
        return {
            "fps": self.fps,
            "p99_limit_ms": self.p99_limit_ms,
            "streams": best["streams"] if best else 0,
            "first_failing_streams": failing,
            "latency_p99_ms": best["latency_p99_ms"] if best else None,
            "delivered_fps": best["delivered_fps"] if best else None,
        }


# --- the whole run ------------------------------------------------------------------------------
def raw_model_throughput(
    runtime: ModelRuntime,
    size: tuple[int, int],
    batch: int,
    repeats: int = 3,
    row_budget_s: float = 10.0,
) -> dict[str, Any]:
    """The model alone, as the service's worker runs it: a loaded ``ModelRuntime`` (model,
    inference backend, torch threads), a full batch of ``size`` frames per call (STD2Net: the
    cached stream step, one state per frame), median of the timed calls."""
    model = runtime.settings.default_model
    generator = np.random.default_rng(0)
    frames = [generator.random(size, dtype=np.float32) for _ in range(batch)]
    states = [StreamState() for _ in frames] if runtime.models[model].streaming else None
    runtime.infer(model, frames, states)  # warm-up
    durations: list[float] = []
    started = time.perf_counter()
    while len(durations) < repeats or time.perf_counter() - started < row_budget_s:
        begin = time.perf_counter()
        runtime.infer(model, frames, states)
        durations.append(time.perf_counter() - begin)
    median_s = statistics.median(durations)
    return {
        "model": model,
        "weights": weights_label(runtime.weights[model].path),
        "backend": runtime.models[model].backend,
        "batch": batch,
        "height": size[0],
        "width": size[1],
        "runs": len(durations),
        "median_ms": median_s * 1000,
        "fps": batch / median_s,
    }


def run_service_benchmark(
    model: str = "sd2net",
    size: tuple[int, int] = DEFAULT_SIZE,
    streams: Sequence[int] = DEFAULT_STREAMS,
    fps: Sequence[float] = DEFAULT_FPS,
    seconds: float = 20.0,
    warmup_s: float = 5.0,
    drain_s: float = 60.0,
    backends: Sequence[str] = ("embedded",),
    max_in_flight: int = 2,
    max_batch: int = DEFAULT_MAX_BATCH,
    threads: int | None = None,
    clip: Sequence[np.ndarray] | None = None,
    clip_source: str = "given frames",
    raw_repeats: int = 3,
    weights_dir: Path | None = None,
    startup_timeout_s: float = 300.0,
    inference: str = "auto",
    device: str = "cpu",
    dtype: str = "float32",
    capacity: Capacity | None = None,
    client_processes: int = 1,
) -> dict[str, Any]:
    """Raw model throughput, then a row per (backend, fps, streams), then per backend the
    ``capacity`` search's rows if asked; returns the whole report."""
    if model not in MODEL_NAMES:
        raise ValueError(f"model must be one of {MODEL_NAMES}, got {model!r}")
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if clip is None:
        clip, clip_source = load_clip(size)
    if clip[0].shape != size:
        raise ValueError(f"frames are {clip[0].shape}, the benchmark's size is {size}")
    raw_settings = Settings.model_validate(
        {
            "models": [model],
            "default_model": model,
            "device": device,
            "dtype": dtype,
            "max_batch": max_batch,
            "inference_backend": inference,
            "torch_threads": threads,
            "weights_dir": weights_dir,
        }
    )
    torch.set_flush_denormal(True)  # as the service's worker does
    raw_runtime = ModelRuntime(raw_settings)  # loaded once, timed before and after the rows
    raw_runtime.load()
    raw_before = raw_model_throughput(raw_runtime, size, max_batch, raw_repeats)
    most_streams = max([*streams, capacity.max_streams if capacity else 0])
    service_env = {
        "IRTRACK_DEVICE": device,
        "IRTRACK_DTYPE": dtype,
        "IRTRACK_INFERENCE_BACKEND": inference,
        "IRTRACK_MODELS": model,
        "IRTRACK_DEFAULT_MODEL": model,
        "IRTRACK_WARMUP_SIZES": format_size(*size),
        "IRTRACK_TORCH_THREADS": str(threads),
        "IRTRACK_MAX_BATCH": str(max_batch),
        "IRTRACK_MAX_STREAMS": str(max(DEFAULT_MAX_STREAMS, most_streams)),
        # every stream's credits fit: refusals then come from the service's speed, not a limit
        "IRTRACK_GLOBAL_QUEUE_LIMIT": str(max(DEFAULT_QUEUE_LIMIT, most_streams * max_in_flight)),
        "IRTRACK_API_KEYS": "",
        "IRTRACK_LOG_LEVEL": "warning",
    }
    if weights_dir is not None:
        service_env["IRTRACK_WEIGHTS_DIR"] = str(weights_dir)
    rows: list[dict[str, Any]] = []
    capacities: dict[str, dict[str, Any]] = {}
    for backend in backends:
        with service_stack(backend, service_env, startup_timeout_s) as stack:

            def measure(
                rate: float, count: int, stack: ServiceStack = stack, backend: str = backend
            ) -> dict[str, Any]:
                row = asyncio.run(
                    _stream_row(
                        stack,
                        clip,
                        row_id=f"{backend}-{rate:g}-{count}-{len(rows)}",
                        model=model,
                        streams=count,
                        fps=rate,
                        seconds=seconds,
                        warmup_s=warmup_s,
                        drain_s=drain_s,
                        max_in_flight=max_in_flight,
                        client_processes=client_processes,
                    )
                )
                rows.append({"backend": backend, **row})
                return rows[-1]

            for rate in fps:
                for count in streams:
                    measure(rate, count)
            if capacity is not None:
                capacities[backend] = capacity.search(measure)
    # Measured again once the service is gone: a machine whose load drifted shows it here, and
    # the faster of the two (the stricter reference) is the one the ratio uses.
    raw_after = raw_model_throughput(raw_runtime, size, max_batch, raw_repeats)
    raw = max(raw_before, raw_after, key=lambda measured: float(measured["fps"]))
    for row in rows:
        row["overhead_ratio"] = row["delivered_fps"] / raw["fps"] if row["fps"] == 0 else None
    return {
        "machine": machine_info(raw_runtime.device),
        "config": {
            "model": model,
            "height": size[0],
            "width": size[1],
            "frames": clip_source,
            "max_batch": max_batch,
            "torch_threads": threads,
            "inference_backend": raw["backend"],
            "device": str(raw_runtime.device),
            "dtype": dtype,
            "max_in_flight": max_in_flight,
            # the worker's pipeline (IRTRACK_PIPELINE, inherited by the service's processes)
            "pipeline": raw_settings.pipeline,
            "client_processes": client_processes,
            "weights_dir": str(weights_dir) if weights_dir else None,
            # libgomp's default (spinning) stalls torch on a CPU shared with other processes
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "raw": raw,
        "raw_before": raw_before,
        "raw_after": raw_after,
        "rows": rows,
        "summary": _saturation_summary(rows),
        "capacity": capacities,
    }


def _saturation_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per backend: the best delivered frames/s over the saturation rows, and its ratio."""
    summary: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["overhead_ratio"] is None:
            continue
        best = summary.get(row["backend"])
        if best is None or row["delivered_fps"] > best["delivered_fps"]:
            summary[row["backend"]] = {
                "streams": row["streams"],
                "delivered_fps": row["delivered_fps"],
                "overhead_ratio": row["overhead_ratio"],
            }
    return summary


def markdown_report(report: dict[str, Any]) -> str:
    """The docs table: the raw model, a row per (backend, fps, streams), the overhead ratio."""
    machine, config, raw = report["machine"], report["config"], report["raw"]
    lines = [
        f"Measured {machine['date']} on {device_name(machine)} ({config['torch_threads']} torch "
        f"threads, load average {machine['load_average_1min']}), torch {machine['torch']}: "
        f"{config['model']} at {config['width']} x {config['height']}, frames from "
        f"{Path(config['frames']).name}, max batch {config['max_batch']}, at most "
        f"{config['max_in_flight']} frames in flight per stream, inference on "
        f"{config['inference_backend']} ({config.get('dtype', 'float32')}), worker pipeline "
        f"{'on' if config.get('pipeline', True) else 'off'}, {weights_named([raw])}. Raw model (the service's ModelRuntime alone, same run, batch "
        f"{raw['batch']}, the faster of before and after the service rows): {raw['fps']:.2f} "
        f"frames/s ({raw['median_ms']:.1f} ms per batch; before {report['raw_before']['fps']:.2f}, "
        f"after {report['raw_after']['fps']:.2f}). OMP_WAIT_POLICY={config['omp_wait_policy'] or 'unset'}. "
        "fps 0 = as fast as the credits allow; ratio = delivered / raw frames/s; clients in "
        f"up to {config.get('client_processes', 1)} process(es).",
        "",
        "| backend | streams | fps / stream | sent | delivered | dropped | skipped | errors | "
        "delivered frames/s | p50 ms | p95 ms | p99 ms | mean batch | ratio | CPU cores: "
        "model process / clients |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        cells = [
            row["backend"],
            row["streams"],
            f"{row['fps']:g}",
            row["sent"],
            row["delivered"],
            row["dropped"],
            row["skipped"],
            row["errors"],
            f"{row['delivered_fps']:.2f}",
            *(_number(row[f"latency_{p}_ms"], ".0f") for p in ("p50", "p95", "p99")),
            _number(row["mean_batch"], ".1f"),
            _number(row["overhead_ratio"], ".2f"),
            f"{row['cpu_cores'].get('worker', row['cpu_cores'].get('api', 0.0)):.2f} / "
            f"{row['cpu_cores']['client']:.2f}",
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    for backend, found in report.get("capacity", {}).items():
        lines.append("")
        lines.append(
            f"Capacity ({backend}): {found['streams']} concurrent {found['fps']:g}-fps streams "
            f"with p99 < {found['p99_limit_ms']:g} ms and no frame lost"
            + (
                f" (p99 {found['latency_p99_ms']:.1f} ms; {found['first_failing_streams']} "
                "streams failed)."
                if found["streams"] and found["first_failing_streams"]
                else "."
            )
        )
    for backend, best in report["summary"].items():
        lines.append("")
        lines.append(
            f"Overhead ratio ({backend}): {best['overhead_ratio']:.2f} = "
            f"{best['delivered_fps']:.2f} delivered frames/s with {best['streams']} streams / "
            f"{raw['fps']:.2f} raw."
        )
    return "\n".join(lines) + "\n"


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def bench_service(
    model: Annotated[str, typer.Option(help=f"one of {', '.join(MODEL_NAMES)}")] = "sd2net",
    size: Annotated[
        str, typer.Option("--frame-size", help="WIDTHxHEIGHT of the frames.")
    ] = "256x256",
    streams: Annotated[
        list[int] | None,
        typer.Option("--streams", "-n", help="Concurrent streams; repeat (default: 1, 4, 16)."),
    ] = None,
    fps: Annotated[
        list[float] | None,
        typer.Option(help="Frames/s per stream; 0 = as fast as credits allow (default: 25, 0)."),
    ] = None,
    seconds: Annotated[float, typer.Option(help="Measured seconds per row.")] = 20.0,
    warmup: Annotated[float, typer.Option(help="Seconds streamed before measuring.")] = 5.0,
    drain: Annotated[
        float, typer.Option(help="Longest wait for the answers owed after a row.")
    ] = 60.0,
    backends: Annotated[
        list[str] | None,
        typer.Option("--backend", help="embedded or redis; repeat (default: embedded)."),
    ] = None,
    max_in_flight: Annotated[int, typer.Option(min=1, help="Credits per stream.")] = 2,
    max_batch: Annotated[int, typer.Option(min=1, help="The engine's max batch.")] = (
        DEFAULT_MAX_BATCH
    ),
    threads: Annotated[
        int | None, typer.Option(help="torch threads of the service and the raw model.")
    ] = None,
    video: Annotated[
        Path | None, typer.Option(help="Video file (default: the first clip in data/videos).")
    ] = None,
    synthetic: Annotated[bool, typer.Option(help="Synthesized frames, not video.")] = False,
    weights_dir: Annotated[
        Path | None, typer.Option(help="IRTRACK_WEIGHTS_DIR of the service (default: shipped).")
    ] = None,
    inference: Annotated[
        str, typer.Option(help="IRTRACK_INFERENCE_BACKEND: auto, torch or onnxruntime.")
    ] = "auto",
    device: Annotated[str, typer.Option(help="IRTRACK_DEVICE: cpu, cuda, cuda:1, auto.")] = "cpu",
    dtype: Annotated[
        str, typer.Option(help="IRTRACK_DTYPE: float32, float16 or bfloat16.")
    ] = "float32",
    client_processes: Annotated[
        int, typer.Option(min=1, help="Processes the streams are spread over (client side).")
    ] = 1,
    capacity_fps: Annotated[
        float,
        typer.Option(
            help="Also search the most streams at this fps with p99 under --p99-limit and "
            "no frame lost; 0 = no search."
        ),
    ] = 0.0,
    p99_limit: Annotated[float, typer.Option(help="p99 round trip limit (ms).")] = 50.0,
    max_capacity_streams: Annotated[
        int, typer.Option(min=1, help="Most streams the search tries.")
    ] = 256,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    markdown_path: MarkdownOption = None,
) -> None:
    """The service end to end: N WebSocket streams, delivered fps, latency, drops, overhead."""
    frame_size = parse_size(size)
    if synthetic:
        clip, source = synthetic_clip(frame_size, 100), "synthesized"
    else:
        clip, source = load_clip(frame_size, video=video)
    typer.echo(f"frames: {source}", err=True)
    report = run_service_benchmark(
        model=model,
        size=frame_size,
        streams=streams or DEFAULT_STREAMS,
        fps=DEFAULT_FPS if fps is None else fps,
        seconds=seconds,
        warmup_s=warmup,
        drain_s=drain,
        backends=backends or ("embedded",),
        max_in_flight=max_in_flight,
        max_batch=max_batch,
        threads=threads,
        clip=clip,
        clip_source=source,
        weights_dir=weights_dir,
        inference=inference,
        device=device,
        dtype=dtype,
        capacity=Capacity(capacity_fps, p99_limit, max_capacity_streams) if capacity_fps else None,
        client_processes=client_processes,
    )
    write_outputs(markdown_report(report), report, json_path, markdown_path)


if __name__ == "__main__":
    typer.run(bench_service)
