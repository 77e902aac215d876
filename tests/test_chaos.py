"""The chaos part of the reliability suite, short, and what scale-out owes under faults: a
killed worker's streams flow again well within the lease TTL, frames in flight during a Redis
restart are sent again (none lost), an API restart loses nothing, workers count the frames they
answer, and an API process is ready only once a worker holds shards (``irtrack bench chaos``
repeats each fault; docs/reliability.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis
from scale_out_support import RedisServer, require_binary, wait_for
from service_support import noise_frame, png, running_server

from bench.chaos import FAULTS, ChaosPlan, run_chaos
from service.settings import Settings
from service.transport.redis_wire import worker_client_name

pytestmark = pytest.mark.timeout(300)

LEASE_TTL_S = Settings().redis_lease_ttl_s  # the default the deployment runs with


@pytest.fixture(scope="module")
def chaos_report():
    require_binary("redis-server")
    plan = ChaosPlan(repeats=1, streams=4, fps=4.0, size=(32, 32), before_s=2.0, after_s=8.0)
    return {row["fault"]: row for row in run_chaos(plan)["rows"]}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_loses_no_frame_and_every_process_counts_right(chaos_report, fault):
    row = chaos_report[fault]
    assert row["results"] > 0 and row["lost"] == 0, row["outcomes"]
    assert row["counters_balance"]
    assert row["processed_by_workers"] > 0  # workers count what they run, not only the API


def test_a_killed_worker_is_replaced_well_within_the_lease_ttl(chaos_report):
    """Its death is seen when its Redis connections close, not when its lease expires."""
    assert chaos_report["worker-kill"]["recovery_s"] < LEASE_TTL_S / 2


def test_streams_flow_again_soon_after_a_redis_restart(chaos_report):
    assert chaos_report["redis-restart"]["recovery_s"] < 10


SD2NET_CARD = {
    "name": "sd2net",
    "frames": 1,
    "size_multiple": 16,
    "parameters": 1,
    "weights_sha256": "0" * 64,
    "weights_source": "shipped",
    "backend": "onnxruntime",
    "peak_bytes_per_pixel": 3072,
    "peak_bytes_per_pixel_squared": 0.0,
    "state_bytes_per_pixel": 0,
    "device": "cpu",
}


@contextmanager
def a_worker_in_name_only(
    redis_url: str, shards: list[int], name: str = "nobody", card: dict | None = None
) -> Iterator[Callable[..., None]]:
    """A worker's registration and connection (what API processes look at), reading nothing;
    yields a function that re-registers it with other shards."""
    connection = redis.Redis.from_url(redis_url, client_name=worker_client_name(name))

    def register(held: list[int]) -> None:
        registration = {
            "id": name,
            "models": [SD2NET_CARD if card is None else card],
            "shard_count": Settings().redis_shards,
            "memory_budget_bytes": 1 << 30,
            "shards": held,
        }
        connection.set(f"irtrack:worker:{name}", json.dumps(registration))

    register(shards)
    try:
        yield register
    finally:
        connection.close()


@pytest.fixture
def redis_url(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server.url
    server.kill()


def test_an_api_process_is_ready_only_once_a_worker_holds_shards(redis_url):
    """A worker registers before it takes shards; an API that counted it as ready sent frames
    to shards nobody read. A worker whose connections closed is dead at once."""
    with running_server(wait_ready=False, redis_url=redis_url) as api:
        readyz = f"{api.base_url}/readyz"
        with a_worker_in_name_only(redis_url, shards=[]) as register:
            time.sleep(2.0)  # the API looks at Redis twice a second
            assert httpx.get(readyz).status_code == 503
            register([0])
            wait_for(lambda: httpx.get(readyz).status_code == 200, 5, "ready with a shard held")
        wait_for(lambda: httpx.get(readyz).status_code == 503, 5, "not ready once it is gone")


def test_a_registration_the_api_cannot_read_leaves_out_that_worker_only(redis_url):
    """A worker of another irtrack version (its card lacks a field) must not stop the API from
    seeing the workers it can read."""
    old_card = {key: value for key, value in SD2NET_CARD.items() if key != "device"}
    all_shards = list(range(Settings().redis_shards))
    with (
        running_server(wait_ready=False, redis_url=redis_url) as api,
        a_worker_in_name_only(redis_url, shards=all_shards, name="old", card=old_card),
    ):
        readyz = f"{api.base_url}/readyz"
        time.sleep(2.0)
        assert httpx.get(readyz).status_code == 503  # the unreadable one alone serves nothing
        with a_worker_in_name_only(redis_url, shards=all_shards, name="new"):
            wait_for(lambda: httpx.get(readyz).status_code == 200, 5, "ready beside the old one")
            models = httpx.get(f"{api.base_url}/v1/models").json()
            assert [model["device"] for model in models["models"]] == ["cpu"]


def test_a_frame_no_worker_answers_in_time_is_503_with_retry_after(redis_url):
    """Not a 500 (nothing failed in the frame): the caller may send it again."""
    with (
        running_server(wait_ready=False, redis_url=redis_url, redis_result_timeout_s=1.0) as api,
        a_worker_in_name_only(redis_url, shards=list(range(Settings().redis_shards))),
    ):
        wait_for(lambda: httpx.get(f"{api.base_url}/readyz").status_code == 200, 5, "ready")
        response = httpx.post(f"{api.base_url}/v1/detect", content=png(noise_frame(32, 32, 0)))
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert response.json()["error"]["code"] == "worker_timeout"
