"""The inference side as an API process sees it in scale-out mode: workers known through Redis.

An API process with ``IRTRACK_REDIS_URL`` loads no model. It is ready while Redis answers, the
live ``irtrack worker`` processes have registered every configured model and at least one of
them holds shards (a frame of a shard nobody holds would only wait); ``/v1/models`` lists
what the workers registered. A watcher looks at Redis twice a second: worker heartbeats, the
backlog of the frame streams (``irtrack_queue_depth{stage="redis"}``) and whether Redis lost its
data (:meth:`RedisFrameQueue.check_boot`). A Redis outage makes the process not ready, never
dead: it reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from prometheus_client import Gauge
from redis.exceptions import RedisError

from service.metrics import ServiceMetrics
from service.settings import Settings
from service.transport.inference import ModelCard
from service.transport.redis_queue import RedisFrameQueue
from service.transport.redis_wire import live_workers

log = logging.getLogger(__name__)

WATCH_PERIOD_S = 0.5
SHUTDOWN_TIMEOUT_S = 5.0


class RemoteWorkers:
    """The :class:`service.transport.inference.Inference` of an API process in scale-out mode."""

    def __init__(self, queue: RedisFrameQueue, settings: Settings, metrics: ServiceMetrics) -> None:
        self.queue = queue
        self.settings = settings
        self.ready = threading.Event()
        self.load_error: BaseException | None = None  # nothing to load here
        self._models: dict[str, ModelCard] = {}
        self._memory_budget_bytes = 0
        self._backlog = 0
        self._misfits: set[str] = set()
        self._unreadable: set[str] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers = Gauge(
            "irtrack_workers",
            "Inference workers alive (heartbeat in Redis), as this API process sees them.",
            registry=metrics.registry,
        )
        metrics.queue_depth.labels("redis").set_function(lambda: self._backlog)

    @property
    def alive(self) -> bool:
        return self._watcher is not None and not self._watcher.done()

    @property
    def models(self) -> dict[str, ModelCard]:
        return self._models

    @property
    def memory_budget_bytes(self) -> int:
        """The smallest budget of the live workers: a frame any of them may get must fit."""
        return self._memory_budget_bytes

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.queue.start()
        self._watcher = self._loop.create_task(self._watch())

    def stop(self, timeout_s: float) -> None:
        """Admit nothing more, wait for the answers of the frames in flight, then disconnect."""
        self.queue.close()
        deadline = time.monotonic() + timeout_s
        while self.queue.waiting and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._loop is not None:
            done = asyncio.run_coroutine_threadsafe(self._disconnect(), self._loop)
            done.result(SHUTDOWN_TIMEOUT_S)

    async def _disconnect(self) -> None:
        self.ready.clear()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        self.queue.abandon()  # whatever is still waiting ends now, as dropped("shutdown")
        await self.queue.aclose()

    async def _watch(self) -> None:
        reachable = True
        while True:
            try:
                await self.queue.check_boot()
                workers = await live_workers(self.queue.redis, self.queue.keys)
                self._backlog = await self.queue.backlog()
                self._update(workers)
                if not reachable:
                    log.info("Redis answers again")
                reachable = True
            except RedisError as exc:
                self.ready.clear()
                if reachable:
                    log.warning("Redis does not answer (%s); not ready until it does", exc)
                reachable = False
            except Exception:  # e.g. a malformed registration: keep watching
                log.exception("watching the workers failed; trying again")
            await asyncio.sleep(WATCH_PERIOD_S)

    def _update(self, workers: list[dict[str, Any]]) -> None:
        parsed = [(worker, self._cards(worker)) for worker in workers]
        readable = [(worker, cards) for worker, cards in parsed if cards is not None]
        workers = [worker for worker, _ in readable]
        self._workers.set(len(workers))
        registered: dict[str, ModelCard] = {}
        for _, cards in readable:
            for card in cards:
                registered.setdefault(card.name, card)
        self._warn_about_misfits(workers)
        holding_shards = any(worker["shards"] for worker in workers)
        if holding_shards and set(self.settings.models) <= set(registered):
            self._models = registered
            self._memory_budget_bytes = min(w["memory_budget_bytes"] for w in workers)
            self.ready.set()
        else:
            self.ready.clear()

    def _cards(self, worker: dict[str, Any]) -> list[ModelCard] | None:
        """The model cards of a registration, or None where it lacks what this process needs (a
        worker of another irtrack version): that worker is left out, said once, the others serve."""
        identity = str(worker.get("id", "?"))
        try:
            cards = [ModelCard(**card) for card in worker["models"]]
            worker["shards"], worker["shard_count"], worker["memory_budget_bytes"]
        except (KeyError, TypeError) as exc:
            if identity not in self._unreadable:
                log.error(
                    "worker %s registered what this API cannot read (%s): left out", identity, exc
                )
            self._unreadable.add(identity)
            return None
        self._unreadable.discard(identity)
        return cards

    def _warn_about_misfits(self, workers: list[dict[str, Any]]) -> None:
        """Say so (once) when a worker's configuration differs from this process's: frames on
        its shards would fail (unknown_model) or never be read (worker_timeout)."""
        misfits = {
            worker["id"]
            for worker in workers
            if worker["shard_count"] != self.queue.keys.shards
            or not set(self.settings.models) <= {card["name"] for card in worker["models"]}
        }
        if misfits - self._misfits:
            log.error(
                "workers %s do not load all of %s or do not use %d shards: check their settings",
                sorted(misfits - self._misfits),
                self.settings.models,
                self.queue.keys.shards,
            )
        self._misfits = misfits
