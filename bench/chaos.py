"""``irtrack bench chaos``: faults injected into a running scale-out deployment, repeated, with the
recovery time and the frames lost each time.

The deployment: ``redis-server`` (no persistence: a restart loses its data), one ``irtrack
serve`` API process and two ``irtrack worker`` processes, all with their default leases and
timeouts, as child processes. Clients: N live streams through the Python SDK
(``clients.AsyncClient.stream``: one frame in flight, every frame sent, reconnecting as users'
clients do). Faults, each struck ``before_s`` into a run of ``before_s + after_s`` seconds:

- ``worker-kill``: SIGKILL of the worker holding the most of the streams' shards (a fresh worker
  is started after the run, so each repeat begins with two);
- ``redis-restart``: SIGKILL of redis-server, down ``redis_down_s``, started again empty;
- ``api-restart``: SIGTERM of the API process (it answers what it admitted, then closes the
  WebSockets) and a new one on the same port.

Per fault: recovery = the longest any stream went without a result from the strike on (the
fault's outage as the slowest stream saw it; the frames' own pace is the floor), lost = frames
of the run without a result: lost by the client, failed or dropped (with reasons). After each run the frame counters of the API and of every worker must balance
(received = processed + dropped + failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import redis
import torch
import typer

from bench.common import device_name, machine_info, served_weights, write_outputs
from bench.processes import (
    ChildProcess,
    counters_balance,
    frame_counters,
    free_port,
    irtrack_process,
    service_env,
    start_redis,
    wait_ready,
    wait_until,
)
from bench.service_e2e import synthetic_clip
from clients import AsyncClient, FrameEvent, Reconnected
from frames.sizes import format_size, parse_size
from service.schemas import Dropped, FrameError
from service.settings import Settings
from service.transport.redis_wire import shard_of

FAULTS = ("worker-kill", "redis-restart", "api-restart")
WORKERS = 2
STARTUP_TIMEOUT_S = 300.0


# --- the deployment --------------------------------------------------------------------------
class Cluster:
    """redis-server, one API process and ``WORKERS`` workers; each can be killed or restarted."""

    def __init__(self, workdir: Path, overrides: dict[str, str]) -> None:
        self.workdir = workdir
        self.redis_port = free_port()
        self.redis = start_redis(self.redis_port, workdir)
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env = service_env({**overrides, "IRTRACK_REDIS_URL": self.redis_url})
        self.settings = Settings(redis_url=self.redis_url)
        self.workers: list[ChildProcess] = []
        self._spawned = 0
        self.api = irtrack_process("serve", self.env, workdir, role="api")
        self.base_url = self.api.base_url
        self.ensure_workers()

    @property
    def children(self) -> list[ChildProcess]:
        return [self.redis, self.api, *self.workers]

    def ensure_workers(self) -> None:
        """Replace dead workers; wait until the API is ready and every shard is held."""
        self.workers = [worker for worker in self.workers if worker.running]
        while len(self.workers) < WORKERS:
            self._spawned += 1
            role = f"worker-{self._spawned}"
            self.workers.append(irtrack_process("worker", self.env, self.workdir, role))
        wait_ready(self.base_url, self.children, STARTUP_TIMEOUT_S)
        wait_until(self._shards_shared, 60, "the workers to share the shards")

    def shard_holders(self) -> dict[int, int]:
        """shard -> pid of the worker holding its lease."""
        keys = [
            f"{self.settings.redis_prefix}:lease:{n}" for n in range(self.settings.redis_shards)
        ]
        with redis.Redis.from_url(self.redis_url) as client:
            holders = client.mget(keys)
        return {
            shard: int(holder.decode().split(":")[1])
            for shard, holder in enumerate(holders)
            if holder is not None
        }

    def _shards_shared(self) -> bool:
        holders = self.shard_holders()
        held = [list(holders.values()).count(worker.pid) for worker in self.workers]
        return len(holders) == self.settings.redis_shards and min(held) > 0

    def worker_of_most(self, stream_ids: Sequence[str]) -> ChildProcess:
        """The worker holding the shards of most of these streams."""
        holders = self.shard_holders()
        count = Counter(holders.get(shard_of(s, self.settings.redis_shards)) for s in stream_ids)
        return max(self.workers, key=lambda worker: count[worker.pid])

    def restart_redis(self, down_s: float) -> None:
        self.redis.kill_hard()
        time.sleep(down_s)
        self.redis = start_redis(self.redis_port, self.workdir)

    def stop(self) -> None:
        for child in [self.api, *self.workers, self.redis]:
            child.stop()


# --- one run: streams through a fault --------------------------------------------------------
@dataclass
class StreamRecord:
    """What a stream's frames became, with the time (monotonic) each answer arrived."""

    stream_id: str
    answers: list[tuple[float, FrameEvent]] = field(default_factory=list)
    reconnects: int = 0

    def stall_after(self, moment: float, end: float) -> float:
        """The longest the stream went without a result from ``moment`` on (until ``end`` if
        none came after it): how long a fault at ``moment`` stopped it."""
        times = [at for at, event in self.answers if event.status == "result"]
        later = [at for at in times if at > moment]
        if not later:
            return end - moment
        earlier = [moment, *later]
        gaps = zip(earlier, later, strict=False)  # earlier: one more (the moment)
        return max(after - max(before, moment) for before, after in gaps)


async def paced_frames(
    clip: Sequence[np.ndarray], until: float, fps: float
) -> AsyncIterator[np.ndarray]:
    index = 0
    while time.monotonic() < until:
        yield clip[index % len(clip)]
        index += 1
        await asyncio.sleep(1.0 / fps)


async def record_stream(
    client: AsyncClient, record: StreamRecord, clip: Sequence[np.ndarray], until: float, fps: float
) -> None:
    stream = client.stream(
        record.stream_id, paced_frames(clip, until, fps), max_in_flight=1, when_busy="wait"
    )
    async for event in stream:
        if isinstance(event, Reconnected):
            record.reconnects += 1
        else:
            record.answers.append((time.monotonic(), event))


def strike(cluster: Cluster, fault: str, stream_ids: Sequence[str], redis_down_s: float) -> str:
    """Inject ``fault``; returns what was hit (for the report)."""
    if fault == "worker-kill":
        victim = cluster.worker_of_most(stream_ids)
        hit = sum(
            cluster.shard_holders().get(shard_of(s, cluster.settings.redis_shards)) == victim.pid
            for s in stream_ids
        )
        victim.kill_hard()
        return f"{victim.role} ({hit} of the streams)"
    if fault == "redis-restart":
        cluster.restart_redis(redis_down_s)
        return f"redis-server, down {redis_down_s:g} s"
    if fault == "api-restart":
        cluster.api.restart()
        return "the API process"
    raise ValueError(f"unknown fault {fault!r}; choose from {FAULTS}")


async def run_fault(
    cluster: Cluster,
    fault: str,
    run_id: str,
    *,
    streams: int,
    fps: float,
    clip: Sequence[np.ndarray],
    before_s: float,
    after_s: float,
    redis_down_s: float,
) -> dict[str, Any]:
    """Stream through one fault; the row of the report."""
    records = [StreamRecord(f"chaos-{run_id}-{n}") for n in range(streams)]
    until = time.monotonic() + before_s + after_s
    async with AsyncClient(cluster.base_url) as client:
        streaming = [
            asyncio.create_task(record_stream(client, record, clip, until, fps))
            for record in records
        ]
        await asyncio.sleep(before_s)
        struck_at = time.monotonic()
        hit = await asyncio.to_thread(
            strike, cluster, fault, [r.stream_id for r in records], redis_down_s
        )
        await asyncio.gather(*streaming)
        ended_at = time.monotonic()
        for record in records:
            with contextlib.suppress(Exception):
                await client.delete_stream(record.stream_id)
    outcomes = Counter(outcome_of(event) for record in records for _, event in record.answers)
    unanswered = sum(count for status, count in outcomes.items() if status != "result")
    return {
        "fault": fault,
        "hit": hit,
        "streams": streams,
        "frames": sum(outcomes.values()),
        "results": outcomes["result"],
        "lost": unanswered,
        "outcomes": dict(outcomes),
        "reconnects": sum(record.reconnects for record in records),
        "recovery_s": max(record.stall_after(struck_at, ended_at) for record in records),
        "counters_balance": counters_balance(
            [cluster.base_url, *(w.base_url for w in cluster.workers if w.running)]
        ),
        "processed_by_workers": sum(
            frame_counters(w.base_url)["processed"] for w in cluster.workers if w.running
        ),
    }


def outcome_of(event: FrameEvent) -> str:
    """result, lost, skipped, dropped:<reason> or error:<code>."""
    if isinstance(event.message, FrameError):
        return f"error:{event.message.error.code}"
    if isinstance(event.message, Dropped):
        return f"dropped:{event.message.reason}"
    return event.status


# --- the whole run ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ChaosPlan:
    faults: Sequence[str] = FAULTS
    repeats: int = 3
    streams: int = 8
    fps: float = 4.0
    size: tuple[int, int] = (64, 64)
    before_s: float = 3.0
    after_s: float = 12.0
    redis_down_s: float = 1.0
    model: str = "sd2net"
    threads: int = 1


def run_chaos(plan: ChaosPlan, on_row: Callable[[dict[str, Any]], None] | None = None) -> dict:
    """Every fault ``repeats`` times on one deployment; the report."""
    overrides = {
        "IRTRACK_MODELS": plan.model,
        "IRTRACK_DEFAULT_MODEL": plan.model,
        "IRTRACK_WARMUP_SIZES": format_size(*plan.size),
        "IRTRACK_TORCH_THREADS": str(plan.threads),
        "IRTRACK_API_KEYS": "",
        "IRTRACK_LOG_LEVEL": "warning",
    }
    clip = synthetic_clip(plan.size, 50)
    rows = []
    with tempfile.TemporaryDirectory(prefix="irtrack-chaos-") as workdir:
        cluster = Cluster(Path(workdir), overrides)
        try:
            for repeat in range(plan.repeats):
                for fault in plan.faults:
                    row = asyncio.run(
                        run_fault(
                            cluster,
                            fault,
                            f"{fault}-{repeat}",
                            streams=plan.streams,
                            fps=plan.fps,
                            clip=clip,
                            before_s=plan.before_s,
                            after_s=plan.after_s,
                            redis_down_s=plan.redis_down_s,
                        )
                    )
                    rows.append({"repeat": repeat, **row})
                    if on_row is not None:
                        on_row(rows[-1])
                    cluster.ensure_workers()
            settings = cluster.settings
        finally:
            cluster.stop()
    return {
        "plan": {
            "faults": list(plan.faults),
            "repeats": plan.repeats,
            "streams": plan.streams,
            "fps": plan.fps,
            "size": format_size(*plan.size),
            "model": plan.model,
            "redis_down_s": plan.redis_down_s,
            "lease_ttl_s": settings.redis_lease_ttl_s,
            "result_timeout_s": settings.redis_result_timeout_s,
        },
        "rows": rows,
    }


def markdown_report(report: dict[str, Any], machine: dict[str, Any]) -> str:
    plan = report["plan"]
    lines = [
        f"Measured {machine['date']} on {device_name(machine)}: redis-server (no persistence), "
        f"one API process, {WORKERS} workers ({plan['model']}, default settings: "
        f"lease TTL {plan['lease_ttl_s']:g} s), {plan['streams']} live streams of "
        f"{plan['size']} frames at {plan['fps']:g} fps through the Python SDK (one frame in "
        f"flight, every frame sent). Each fault {plan['repeats']} times; recovery = the longest "
        "any stream went without a result from the fault on (the frames' own pace, "
        f"{1 / plan['fps']:g} s, is the floor); lost = frames without a result (lost, failed or "
        "dropped); counters = received = processed + dropped + failed on the API and every "
        f"worker afterwards. {served_weights([plan['model']])}.",
        "",
        "| fault | repeat | hit | frames | results | lost | recovery s | reconnects | counters |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['fault']} | {row['repeat'] + 1} | {row['hit']} | {row['frames']} "
            f"| {row['results']} | {row['lost']} | {row['recovery_s']:.2f} | {row['reconnects']} "
            f"| {'balance' if row['counters_balance'] else '**off**'} |"
        )
    lines.append("")
    for fault in plan["faults"]:
        runs = [row for row in report["rows"] if row["fault"] == fault]
        lines.append(
            f"- {fault}: worst recovery {max(r['recovery_s'] for r in runs):.2f} s, frames lost "
            f"{sum(r['lost'] for r in runs)} of {sum(r['frames'] for r in runs)}."
        )
    return "\n".join(lines) + "\n"


def bench_chaos(
    faults: Annotated[
        list[str] | None,
        typer.Option("--fault", help=f"{', '.join(FAULTS)}; repeat (default: all)."),
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Times each fault is injected.")] = 3,
    streams: Annotated[int, typer.Option(min=1, help="Concurrent live streams.")] = 8,
    fps: Annotated[float, typer.Option(min=0.1, help="Frames/s per stream.")] = 4.0,
    size: Annotated[str, typer.Option("--frame-size", help="WIDTHxHEIGHT.")] = "64x64",
    before: Annotated[float, typer.Option(help="Seconds streamed before the fault.")] = 3.0,
    after: Annotated[float, typer.Option(help="Seconds streamed after it.")] = 12.0,
    redis_down: Annotated[float, typer.Option(help="Seconds redis-server stays down.")] = 1.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    markdown_path: Annotated[
        Path | None, typer.Option("--markdown", help="Write the table here.")
    ] = None,
) -> None:
    """Faults (worker kill -9, Redis restart, API restart) during live streams: recovery, loss."""
    plan = ChaosPlan(
        faults=faults or FAULTS,
        repeats=repeats,
        streams=streams,
        fps=fps,
        size=parse_size(size),
        before_s=before,
        after_s=after,
        redis_down_s=redis_down,
    )
    report = run_chaos(plan, on_row=lambda row: typer.echo(str(row), err=True))
    machine = machine_info(torch.device("cpu"))
    write_outputs(
        markdown_report(report, machine), {"machine": machine, **report}, json_path, markdown_path
    )
