"""Scale-out against a real redis-server: two API processes (``irtrack serve``) and two workers
(``irtrack worker``), with faults (a worker killed with SIGKILL, Redis restarted) and a real
Prometheus scraping them. Each test prints its figures (``pytest -s`` shows them).

The workers run SD2Net with its seeded random initialisation and a threshold in the middle of
its output, so each answer's mask identifies the frame it was computed from.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import torch
import yaml
from scale_out_support import (
    REPO,
    Exchange,
    PrometheusServer,
    RedisServer,
    ServiceProcess,
    StreamRun,
    assert_one_answer_per_frame_in_order,
    figures_line,
    prometheus_config,
    require_binary,
    run_with_fault,
    stream_ids_per_owner,
    wait_for,
    websocket_stream,
)
from service_support import (
    assert_frames_accounted,
    metric_value,
    noise_frame,
    png,
    running_server,
)

from frames.postprocess import sigmoid
from models.padding import run_padded
from models.registry import load_model
from service.codecs import decode_rle

pytestmark = pytest.mark.timeout(300)

SHARDS = 8
LEASE_TTL_S = 2.0
SIZE = 64


# --- the cluster ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd2net() -> torch.nn.Module:
    """SD2Net as the workers build it: no shipped weights, random initialisation with seed 0."""
    torch.manual_seed(0)
    model, _ = load_model("sd2net")
    return model


@contextmanager
def torch_as_on_the_workers() -> Iterator[None]:
    """One thread and subnormals flushed, as on the workers: on two busy cores this is ten
    times faster than torch's default. Restored afterwards for the other tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def probabilities(model: torch.nn.Module, frames: list[np.ndarray]) -> list[np.ndarray]:
    with torch_as_on_the_workers(), torch.inference_mode():
        return [
            sigmoid(
                run_padded(model, torch.from_numpy(f / np.float32(255))[None, None])[0, 0].numpy()
            )
            for f in frames
        ]


@pytest.fixture(scope="module")
def threshold(sd2net: torch.nn.Module) -> float:
    """The median probability: about half of each mask is on, and masks differ between frames."""
    return float(np.median(probabilities(sd2net, [noise_frame(SIZE, SIZE, seed=0)])[0]))


class Cluster:
    """redis-server, API processes and workers; the workers of a test are replaced if it killed
    one, so each test starts with two."""

    def __init__(self, workdir: Path, threshold: float) -> None:
        self.workdir = workdir
        self.redis = RedisServer(workdir)
        self.redis.start()
        self.env = {
            "IRTRACK_REDIS_URL": self.redis.url,
            "IRTRACK_MODELS": "sd2net",
            "IRTRACK_WARMUP_SIZES": f"{SIZE}x{SIZE}",
            "IRTRACK_TORCH_THREADS": "1",
            "IRTRACK_REDIS_SHARDS": str(SHARDS),
            "IRTRACK_REDIS_LEASE_TTL_S": str(LEASE_TTL_S),
            "IRTRACK_REDIS_RESULT_TIMEOUT_S": "20",
            "IRTRACK_THRESHOLD": repr(threshold),
            "IRTRACK_LOG_LEVEL": "info",
        }
        self.apis: list[ServiceProcess] = []
        self.workers: list[ServiceProcess] = []
        self._started = 0

    def start(self, apis: int, workers: int) -> None:
        self.apis += [self._spawn("serve") for _ in range(apis)]
        self.ensure_workers(workers)
        for api in self.apis:
            api.wait_ready()

    def _spawn(self, command: str) -> ServiceProcess:
        self._started += 1
        return ServiceProcess(command, self.env, self.workdir / f"{command}-{self._started}.log")

    def ensure_workers(self, count: int) -> None:
        self.workers = [w for w in self.workers if w.process.poll() is None]
        self.workers += [self._spawn("worker") for _ in range(count - len(self.workers))]
        for worker in self.workers:
            worker.wait_ready()
        wait_for(self.balanced, 30, "the workers to share the shards evenly", 0.1)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def shard_owners(self) -> dict[int, int]:
        """shard -> pid of the worker holding its lease."""
        with self.client() as client:
            holders = [client.get(f"irtrack:lease:{shard}") for shard in range(SHARDS)]
        return {
            shard: int(holder.decode().split(":")[1])
            for shard, holder in enumerate(holders)
            if holder is not None
        }

    def balanced(self) -> bool:
        owners = self.shard_owners()
        held = [list(owners.values()).count(w.pid) for w in self.workers]
        return len(owners) == SHARDS and max(held) - min(held) <= 1

    def stop(self) -> None:
        for process in [*self.apis, *self.workers]:
            process.stop()
        self.redis.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, threshold: float) -> Any:
    require_binary("redis-server")
    running = Cluster(tmp_path_factory.mktemp("scale-out"), threshold)
    try:
        running.start(apis=2, workers=2)
        yield running
    except BaseException:
        for process in [*running.apis, *running.workers]:
            print(f"--- {process.role} log ---\n{process.log_tail()}")
        raise
    finally:
        running.stop()


def stream_ids_per_worker(cluster: Cluster, per_worker: int, prefix: str) -> dict[int, list[str]]:
    """New stream ids whose shards the workers hold, ``per_worker`` each (worker pid -> ids)."""
    pids = [w.pid for w in cluster.workers]
    return stream_ids_per_owner(cluster.shard_owners(), pids, per_worker, prefix, SHARDS)


# --- clients -------------------------------------------------------------------------------------
def noise_stream(index: int, stream_id: str, api: ServiceProcess) -> StreamRun:
    """A client streaming frames ``noise_frame(seed=1000 * index + seq)`` through one API."""
    return StreamRun(
        stream_id, api.base_url, lambda seq: noise_frame(SIZE, SIZE, seed=1000 * index + seq)
    )


async def rest_stream(run: StreamRun, count: int) -> None:
    async with httpx.AsyncClient(base_url=run.base_url, timeout=40) as client:
        for seq in range(count):
            sent_at = time.monotonic()
            response = await client.post(
                f"/v1/streams/{run.stream_id}/frames",
                content=png(run.frame(seq)),
                params={"seq": seq, "mask": "rle"},
            )
            assert response.status_code == 200, response.text
            run.exchanges.append(Exchange(seq, sent_at, time.monotonic(), response.json()))


def print_figures(title: str, runs: list[StreamRun], **extra: object) -> None:
    print(f"\n{figures_line(title, runs, **extra)}")


def eight_streams(cluster: Cluster, prefix: str) -> tuple[list[StreamRun], dict[int, list[str]]]:
    """Eight streams, four on each worker's shards, alternating between the APIs."""
    by_worker = stream_ids_per_worker(cluster, per_worker=4, prefix=prefix)
    ids = [sid for ids in by_worker.values() for sid in ids]
    runs = [noise_stream(i, sid, cluster.apis[i % 2]) for i, sid in enumerate(ids)]
    return runs, by_worker


def with_fault(runs: list[StreamRun], seconds: float, fault: Any) -> float:
    """Stream (one frame in flight per stream, 8 fps each) while ``fault`` runs after 2 s;
    returns when the fault struck."""
    return asyncio.run(run_with_fault(runs, seconds, fault, period_s=0.125, strike_after_s=2.0))


# --- tests ---------------------------------------------------------------------------------------
def test_two_apis_two_workers_eight_streams_every_frame_answered_once_in_order(
    cluster: Cluster, sd2net: torch.nn.Module, threshold: float
) -> None:
    """Half the streams over WebSockets, half over REST; each answer's mask must be that of its
    own frame: a result routed to the wrong API, stream or frame would not match."""
    frames_per_stream = 10
    runs, _ = eight_streams(cluster, "routing")
    started = time.monotonic()

    async def all_streams() -> None:
        await asyncio.gather(
            *(
                websocket_stream(run, count=frames_per_stream, window=2)
                if index % 4 < 2
                else rest_stream(run, frames_per_stream)
                for index, run in enumerate(runs)
            )
        )

    asyncio.run(all_streams())
    elapsed = time.monotonic() - started

    assert_one_answer_per_frame_in_order(runs)
    keys = [(run.stream_id, seq) for run in runs for seq in range(frames_per_stream)]
    frames = [run.frame(seq) for run in runs for seq in range(frames_per_stream)]
    masks = [prob > threshold for prob in probabilities(sd2net, frames)]
    expected = dict(zip(keys, masks, strict=True))
    for run in runs:
        assert len(run.exchanges) == frames_per_stream
        for exchange in run.exchanges:
            assert exchange.answer["type"] == "result" and not exchange.answer["reset"]
            mask = decode_rle(exchange.answer["mask"])
            own = np.mean(mask == expected[(run.stream_id, exchange.seq)])
            best_other = max(
                np.mean(mask == expected[(other.stream_id, exchange.seq)])
                for other in runs
                if other is not run
            )
            assert own > 0.97 and own > best_other + 0.1, (run.stream_id, exchange.seq, own)
    for api in cluster.apis:
        assert assert_frames_accounted(api.base_url)["processed"] >= 4 * frames_per_stream
    model_calls = [
        metric_value(w.base_url, 'irtrack_batch_size_count{model="sd2net"}')
        for w in cluster.workers
    ]
    assert all(calls > 0 for calls in model_calls)
    print_figures(
        "2 APIs x 2 workers",
        runs,
        seconds=elapsed,
        fps=len(runs) * frames_per_stream / elapsed,
        model_calls_per_worker=model_calls,
    )


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/irtrack.json").read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m"))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def test_prometheus_scrapes_apis_and_workers_and_every_dashboard_query_has_data(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A real Prometheus with deploy/'s configuration (the targets swapped for the test's
    processes, a 1 s scrape) and alert rules; then every query of the Grafana dashboard."""
    require_binary("prometheus")
    processes = {"irtrack-api": cluster.apis, "irtrack-worker": cluster.workers}
    targets = {job: [f"127.0.0.1:{p.port}" for p in group] for job, group in processes.items()}
    config = prometheus_config(targets, REPO / "deploy/prometheus")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = PrometheusServer(tmp_path / "prometheus.yml", tmp_path)
    try:
        wait_for(
            lambda: prometheus.scalar('count(up{job=~"irtrack-.*"} == 1)') == 4, 30, "targets up"
        )
        # Traffic with every outcome: results, drops (a burst on a live stream) and failures.
        burst = noise_stream(0, "prometheus-burst", cluster.apis[0])
        asyncio.run(websocket_stream(burst, count=12, window=12))
        assert burst.of_type("dropped"), "a burst of 12 frames on one live stream dropped none"
        for api in cluster.apis:
            assert httpx.post(f"{api.base_url}/v1/detect", content=b"no image").status_code == 415
            assert httpx.post(f"{api.base_url}/v1/detect", content=png(burst.frame(0))).is_success
        wait_for(
            lambda: (
                prometheus.scalar("sum(irtrack_frames_failed_total)") >= 2
                and prometheus.scalar("sum(irtrack_frames_dropped_total)") >= 1
            ),
            20,
            "Prometheus to scrape the traffic",
        )
        time.sleep(2.5)  # a few more scrapes: every rate() window holds two samples after it
        queries = dashboard_queries()
        empty = [(title, expr) for title, expr in queries if not prometheus.query(expr)]
        assert not empty, f"dashboard queries without data: {empty}"
        assert prometheus.scalar(queries[0][1]) > 0  # frames in / s
        groups = httpx.get(f"{prometheus.api}/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert {rule["name"] for rule in rules} >= {"IrtrackWorkerDown", "IrtrackNoFrames"}
        assert all(rule["health"] == "ok" for rule in rules), rules
    finally:
        prometheus.stop()
    print(f"\n[prometheus] {len(queries)} dashboard queries with data; {len(rules)} alert rules ok")


def test_full_shard_queue_gives_429_and_an_overloaded_drop(cluster: Cluster) -> None:
    """An API process whose Redis queue limit is one frame per shard stream: concurrent detect
    requests beyond it are refused with 429 + Retry-After, counted as dropped (overloaded)."""
    settings = {
        "redis_url": cluster.redis.url,
        "redis_shards": SHARDS,
        "redis_queue_limit": 1,
        "warmup_sizes": [f"{SIZE}x{SIZE}"],
    }
    with running_server(**settings) as server:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=40) as client:
                frame = png(noise_frame(SIZE, SIZE, seed=5))
                return await asyncio.gather(
                    *(client.post("/v1/detect", content=frame) for _ in range(12))
                )

        responses = asyncio.run(burst())
        statuses = [r.status_code for r in responses]
        refused = [r for r in responses if r.status_code == 429]
        assert set(statuses) <= {200, 429} and 200 in statuses and refused, statuses
        assert all(r.json()["error"]["code"] == "overloaded" for r in refused)
        assert all(r.headers["Retry-After"] == "1" for r in refused)
        dropped = metric_value(server.base_url, 'irtrack_frames_dropped_total{reason="overloaded"}')
        assert dropped == len(refused)
        assert_frames_accounted(server.base_url)
    print(
        f"\n[backpressure] 12 concurrent detect requests: {statuses.count(200)} answered, {len(refused)} refused (429)"
    )


def test_redis_restart_mid_run_recovers_without_restarting_any_process(cluster: Cluster) -> None:
    cluster.ensure_workers(2)
    pids = [p.pid for p in [*cluster.apis, *cluster.workers]]
    runs, _ = eight_streams(cluster, "restart")
    outage: list[float] = []

    def restart_redis() -> None:
        began = time.monotonic()
        cluster.redis.kill()
        time.sleep(1.0)  # down for a second: frames sent meanwhile wait, nothing hangs
        cluster.redis.start()
        outage.append(time.monotonic() - began)

    struck = with_fault(runs, 9.0, restart_redis)

    assert_one_answer_per_frame_in_order(runs)
    for run in runs:  # the frames in Redis when it died are sent again: none lost
        assert not run.of_type("error") and not run.of_type("dropped"), run.stream_id
        assert [e.answer["type"] for e in run.exchanges[-3:]] == ["result"] * 3, run.stream_id
    recovery = max(run.first_result_after(struck) for run in runs) - struck
    assert recovery < 10, recovery
    assert [p.process.poll() for p in [*cluster.apis, *cluster.workers]] == [None] * len(pids)
    assert [p.pid for p in [*cluster.apis, *cluster.workers]] == pids
    for api in cluster.apis:
        api.wait_ready(10)
        assert_frames_accounted(api.base_url)
    print_figures("Redis restarted", runs, redis_down_seconds=outage[0], recovery_seconds=recovery)


def test_worker_killed_mid_stream_its_streams_continue_on_the_other(cluster: Cluster) -> None:
    cluster.ensure_workers(2)
    runs, by_worker = eight_streams(cluster, "kill")
    victim, survivor = cluster.workers
    moved = set(by_worker[victim.pid])

    struck = with_fault(runs, 10.0, victim.kill_hard)

    assert_one_answer_per_frame_in_order(runs)
    assert all(not run.of_type("dropped") for run in runs)
    for run in runs:
        assert [e.answer["type"] for e in run.exchanges[-3:]] == ["result"] * 3, run.stream_id
        resets = [e for e in run.of_type("result") if e.answer["reset"]]
        if run.stream_id in moved:  # restarted cold on the survivor, once
            assert len(resets) == 1 and resets[0].answered_at > struck, run.stream_id
        else:  # untouched
            assert not resets, run.stream_id
    recovery = (
        max(run.first_result_after(struck) for run in runs if run.stream_id in moved) - struck
    )
    assert recovery < 2 * LEASE_TTL_S + 3, recovery
    assert set(cluster.shard_owners().values()) == {survivor.pid}
    for api in cluster.apis:
        assert_frames_accounted(api.base_url)
    print_figures(
        "worker killed (SIGKILL)",
        runs,
        streams_moved=len(moved),
        recovery_seconds=recovery,
        lease_ttl_seconds=LEASE_TTL_S,
    )
