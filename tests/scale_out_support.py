"""Shared by the scale-out tests (processes, and containers in test_containers.py): a real
redis-server, API and worker processes on free ports, a Prometheus, and clients that stream frames
over WebSockets and record when and what each frame was answered."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
import websockets
import yaml
from service_support import receive_json, send_frame

from bench.processes import (
    ChildProcess,
    free_port,
    irtrack_command,
    redis_answers,
    redis_url,
    service_env,
    start_redis,
    wait_until,
)
from service.transport.redis_wire import shard_of

REPO = Path(__file__).resolve().parents[1]


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (./dev.sh installs it where apt is available)")
    return path


def wait_for(condition: Any, timeout_s: float, what: str, period_s: float = 0.05) -> None:
    """bench's ``wait_until`` (RuntimeError on a timeout), polling every 50 ms by default."""
    wait_until(condition, timeout_s, what, period_s)


class RedisServer:
    """bench's ``redis-server`` (no persistence) on a free port, logging to ``<workdir>/redis.log``;
    ``kill`` then ``start`` (or ``restart``) keeps the port and the URL, its data gone."""

    def __init__(self, workdir: Path) -> None:
        require_binary("redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.url = redis_url(self.port)
        self.child: ChildProcess | None = None

    def start(self) -> None:
        self.child = start_redis(self.port, self.workdir)

    def answers(self) -> bool:
        return redis_answers(self.port)

    def kill(self) -> None:
        if self.child is not None:
            self.child.kill_hard()
            self.child = None

    def restart(self) -> None:
        self.kill()
        self.start()


class ServiceProcess(ChildProcess):
    """``irtrack serve`` or ``irtrack worker`` as bench runs it (its environment without an
    inherited Redis URL, plus ``env``), logging to ``log_path``.

    It listens on a free port, or on ``port`` (a restarted server taking over its predecessor's).
    """

    def __init__(
        self, command: str, env: dict[str, str], log_path: Path, port: int | None = None
    ) -> None:
        port = free_port() if port is None else port
        super().__init__(command, irtrack_command(command, port), service_env(env), log_path, port)

    def wait_ready(self, timeout_s: float = 90) -> None:
        super().wait_ready(timeout_s)


class PrometheusClient:
    """Queries to a Prometheus listening on a loopback port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.api = f"http://127.0.0.1:{port}/api/v1"

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/-/ready", timeout=1).is_success
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.api}/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else 0.0


class PrometheusServer(PrometheusClient):
    """The ``prometheus`` binary on a free port with a given configuration file."""

    def __init__(self, config: Path, workdir: Path) -> None:
        binary = require_binary("prometheus")
        super().__init__(free_port())
        self._log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self.ready, 30, "Prometheus to start", 0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)
        self._log.close()


def prometheus_config(targets: dict[str, list[str]], rules_dir: Path | str) -> dict[str, Any]:
    """deploy/'s Prometheus configuration with each job's DNS discovery swapped for ``targets``
    (job -> host:port), rule files read from ``rules_dir`` and a 1 s scrape."""
    config: dict[str, Any] = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [f"{rules_dir}/{name}" for name in config["rule_files"]]
    for job in config["scrape_configs"]:
        del job["dns_sd_configs"]
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    return config


# --- clients -------------------------------------------------------------------------------------
Owner = TypeVar("Owner", bound=Hashable)


def stream_ids_per_owner(
    owners: dict[int, Any], wanted: list[Owner], per_owner: int, prefix: str, shards: int
) -> dict[Owner, list[str]]:
    """New stream ids, ``per_owner`` on the shards of each wanted owner (``owners``: shard ->
    the worker holding its lease)."""
    chosen: dict[Owner, list[str]] = {owner: [] for owner in wanted}
    for n in range(10_000):
        stream_id = f"{prefix}-{n}"
        owner = owners.get(shard_of(stream_id, shards))
        if owner in chosen and len(chosen[owner]) < per_owner:
            chosen[owner].append(stream_id)
    assert all(len(ids) == per_owner for ids in chosen.values()), chosen
    return chosen


@dataclass
class Exchange:
    """One frame of a client's stream: when it was sent, when and what was answered."""

    seq: int
    sent_at: float
    answered_at: float
    answer: dict[str, Any]


@dataclass
class StreamRun:
    """A client streaming ``frame(seq)`` through the API at ``base_url`` (http://host:port)."""

    stream_id: str
    base_url: str
    frame: Callable[[int], np.ndarray]
    headers: dict[str, str] = field(default_factory=dict)
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws{self.base_url.removeprefix('http')}/v1/streams/{self.stream_id}/ws?mask=rle"

    def of_type(self, kind: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.answer["type"] == kind]

    def first_result_after(self, moment: float) -> float:
        """When the first frame sent after ``moment`` was answered with a result (a frame sent
        before a fault and answered after it says nothing about recovery)."""
        return min(e.answered_at for e in self.of_type("result") if e.sent_at > moment)


async def websocket_stream(
    run: StreamRun,
    *,
    count: int | None = None,
    until: float = float("inf"),
    period_s: float = 0.0,
    window: int = 1,
) -> None:
    """Send frames over one WebSocket (``count`` of them, or until the deadline), at most
    ``window`` unanswered; then check that nothing beyond one answer per frame arrives."""
    sent_at: list[float] = []

    async def receive() -> None:
        answer = await receive_json(socket, timeout_s=40)
        seq = len(run.exchanges)
        run.exchanges.append(Exchange(seq, sent_at[seq], time.monotonic(), answer))

    async with websockets.connect(
        run.ws_url, max_size=None, additional_headers=run.headers
    ) as socket:
        while (count is None or len(sent_at) < count) and time.monotonic() < until:
            sent_at.append(time.monotonic())
            await send_frame(socket, run.frame(len(sent_at) - 1))
            while len(sent_at) - len(run.exchanges) >= window:
                await receive()
            await asyncio.sleep(max(0.0, sent_at[-1] + period_s - time.monotonic()))
        while len(run.exchanges) < len(sent_at):
            await receive()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(socket.recv(), 0.3)


async def run_with_fault(
    runs: list[StreamRun], seconds: float, fault: Any, period_s: float, strike_after_s: float
) -> float:
    """Stream (one frame in flight per stream, one every ``period_s``) while ``fault`` runs after
    ``strike_after_s``; returns when the fault struck."""
    until = time.monotonic() + seconds
    struck: list[float] = []

    async def strike() -> None:
        await asyncio.sleep(strike_after_s)
        struck.append(time.monotonic())
        await asyncio.to_thread(fault)

    await asyncio.gather(
        strike(), *(websocket_stream(run, until=until, period_s=period_s) for run in runs)
    )
    return struck[0]


def assert_one_answer_per_frame_in_order(runs: list[StreamRun]) -> None:
    for run in runs:
        assert run.exchanges, run.stream_id
        for exchange in run.exchanges:
            assert exchange.answer["stream_id"] == run.stream_id
            assert exchange.answer["seq"] == exchange.seq, (run.stream_id, exchange)


def figures_line(title: str, runs: list[StreamRun], **extra: object) -> str:
    """'[title] streams=.. frames sent=.. answered=.. dropped=.. failed=.. [codes] key=value'."""
    exchanges = [e for run in runs for e in run.exchanges]
    kinds = [e.answer["type"] for e in exchanges]
    errors = sorted({e.answer["error"]["code"] for e in exchanges if e.answer["type"] == "error"})
    details = " ".join(
        f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}"
        for key, value in extra.items()
    )
    return (
        f"[{title}] streams={len(runs)} frames sent={len(exchanges)} "
        f"answered={kinds.count('result')} dropped={kinds.count('dropped')} "
        f"failed={kinds.count('error')}{' ' + str(errors) if errors else ''} {details}"
    )
