"""The worker side of the Redis backend: shard leases, reading frames, answering them.

Runs on the event loop of an ``irtrack worker`` process, beside the inference thread, which it
feeds through the queue's in-process hand-off (``RedisFrameQueue.local``): a frame read from
Redis is submitted there as an API process's engine would submit it, and its result goes to the
results stream of the API process that sent it; then the entry is acknowledged and deleted.

Shards: a stream id hashes to one of ``redis_shards`` shards, and a shard's frames are read only
by the worker holding its lease, so a stream's window and tracker live in one worker. Each
worker holds a fair share (shards / live workers, rounded up) and gives back what it holds beyond
that once those shards' frames are answered, so a new worker gets work. A worker that dies is
seen dead at the next look (every ``MAINTAIN_PERIOD_S``): its Redis connections closed with it
(``redis_wire.live_workers``); another worker takes its leases over and claims the frames it had
read and not answered, from every stream, and answers them. A lease not renewed for
``redis_lease_ttl_s`` (a worker cut off from Redis, or one that CLIENT LIST cannot show) is free
for the taking too, and its frames are claimed once idle that long (XAUTOCLAIM). Stateless frames
come from one stream that every worker reads.

The worker counts the frames it answers in its own ``irtrack_frames_*_total`` (received =
processed + dropped + failed, as on the API side): the API processes count what callers sent,
the workers what they ran.

Cold restarts: each time a worker takes a shard it starts a new *tenure*, and the tenure is part
of every stream session the inference thread sees. A stream whose shard moved, or came back
after being lost, therefore starts with a new window and tracker (its result says ``reset``);
the worker never continues a stream from state that missed frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import random
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import Gauge
from redis.exceptions import RedisError, ResponseError
from redis.typing import KeyT, StreamIdT

from service.metrics import ServiceMetrics
from service.settings import Settings
from service.transport.inference import Inference, ModelCard
from service.transport.messages import FrameRequest, StreamRelease
from service.transport.queue import QueueClosed
from service.transport.redis_queue import RedisFrameQueue
from service.transport.redis_wire import (
    GROUP,
    RELEASE_SCRIPT,
    RENEW_SCRIPT,
    TAKEOVER_SCRIPT,
    Fields,
    decode_release,
    decode_request,
    encode_result,
    entries,
    is_release,
    live_workers,
)

log = logging.getLogger(__name__)

READ_BLOCK_MS = 200  # how soon a change of the shards held reaches the reader
RECONNECT_DELAY_S = 0.2
MAINTAIN_PERIOD_S = 0.5  # heartbeat, lease renewals, a look for dead workers (at most TTL / 4)
DEAD_CONSUMER_IDLE_MS = 1000  # a consumer of no live worker is dead once it has not read this long
RESULTS_MAXLEN = 10_000  # an API process that vanished leaves at most this many answers behind
RESULTS_TTL_MS = 600_000  # ... and for this long


@dataclass
class _Shard:
    index: int
    key: str
    tenure: int
    releasing: bool = False  # held beyond the fair share: given back once its frames are answered


class RedisWorkerPump:
    """Moves frames from Redis to the inference thread and results back, holding shard leases."""

    def __init__(
        self,
        queue: RedisFrameQueue,
        inference: Inference,
        settings: Settings,
        metrics: ServiceMetrics,
    ) -> None:
        self.queue = queue
        self.inference = inference
        self.redis = queue.redis
        self.keys = queue.keys
        self.worker_id = queue.instance_id
        self.metrics = metrics
        self.lease_ms = max(1, int(settings.redis_lease_ttl_s * 1000))
        self.tick_s = min(MAINTAIN_PERIOD_S, settings.redis_lease_ttl_s / 4)
        self.prefetch = 2 * settings.max_batch
        self.result_timeout_s = settings.redis_result_timeout_s
        self.connected = False
        self._renew = self.redis.register_script(RENEW_SCRIPT)
        self._release = self.redis.register_script(RELEASE_SCRIPT)
        self._take_over = self.redis.register_script(TAKEOVER_SCRIPT)
        self._shards: dict[int, _Shard] = {}
        self._tenures = itertools.count(1)
        self._in_flight: set[tuple[str, bytes]] = set()  # (stream key, entry id) read, unanswered
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._renewed_at = time.monotonic()
        Gauge(
            "irtrack_worker_shards", "Shard leases this worker holds.", registry=metrics.registry
        ).set_function(lambda: len(self._shards))
        Gauge(
            "irtrack_worker_frames_in_flight",
            "Frames this worker read from Redis and has not answered yet.",
            registry=metrics.registry,
        ).set_function(lambda: len(self._in_flight))

    @property
    def shards(self) -> list[int]:
        return sorted(self._shards)

    async def run(self, stopping: asyncio.Event) -> None:
        """Serve until ``stopping`` is set or the inference thread dies; then answer the frames
        in hand (if it can) and give the shards back."""
        while not self.inference.ready.is_set():
            if not self.inference.alive or stopping.is_set():
                return
            await asyncio.sleep(0.05)
        maintainer = asyncio.create_task(self._maintain_leases(stopping))
        try:
            await self._read_frames(stopping)
        finally:
            maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintainer
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self.result_timeout_s)
            await self._give_back()

    # --- reading -------------------------------------------------------------------------------
    async def _read_frames(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set() and self.inference.alive:
            room = self.prefetch - len(self._in_flight)
            if room <= 0:
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), READ_BLOCK_MS / 1000)
                continue
            streams: dict[KeyT, StreamIdT] = {
                s.key: ">" for s in self._shards.values() if not s.releasing
            }
            streams[self.keys.detect_frames] = ">"
            try:
                reply = await self.redis.xreadgroup(
                    GROUP, self.worker_id, streams, count=room, block=READ_BLOCK_MS
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._create_groups([str(key) for key in streams])  # Redis lost its data
                continue
            except RedisError as exc:
                self._lost_connection(exc)
                await asyncio.sleep(RECONNECT_DELAY_S)
                continue
            for key, entry_id, fields in entries(reply):
                self._take(key, entry_id, fields)

    def _take(self, key: str, entry_id: bytes, fields: Fields | None) -> None:
        """Start answering one entry (once: a claim may hand back an entry already in hand)."""
        if fields is None or (key, entry_id) in self._in_flight:
            return
        tenure = self._tenure(key)
        if is_release(fields):
            release = decode_release(fields)
            session = _session_in_tenure(release.session, tenure)
            self.queue.local.release_stream(StreamRelease(release.stream_id, session))
            self._spawn(self._acknowledge(key, entry_id))
            return
        try:
            request, reply_to = decode_request(fields)
        except (KeyError, ValueError, TypeError) as exc:
            log.error("dropping malformed entry %s of %s: %s", entry_id, key, exc)
            self._spawn(self._acknowledge(key, entry_id))
            return
        self._in_flight.add((key, entry_id))
        self._spawn(self._answer(key, entry_id, request, reply_to, tenure))

    def _tenure(self, key: str) -> int:
        """The tenure of the shard an entry came from; a fresh one (a cold start) if this worker
        read it just as the shard went away. Stateless frames have none."""
        if key == self.keys.detect_frames:
            return 0
        for shard in self._shards.values():
            if shard.key == key:
                return shard.tenure
        return next(self._tenures)

    async def _answer(
        self, key: str, entry_id: bytes, request: FrameRequest, reply_to: str, tenure: int
    ) -> None:
        caller_id = request.request_id  # unique per API process only: make it unique here
        request.request_id = f"{key}/{entry_id.decode()}"
        if request.session is not None:
            request.session = _session_in_tenure(request.session, tenure)
        ticket = self.metrics.ticket()
        try:
            result = await self.queue.local.submit(request)
        except QueueClosed:  # the inference thread stopped: leave the frame to the next holder
            ticket.dropped("left_to_another_worker")
            self._finished(key, entry_id)
            return
        if result.error_code is None:
            ticket.processed()
        else:
            ticket.failed(result.error_code)
        result.request_id = caller_id
        deadline = time.monotonic() + self.result_timeout_s
        while True:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xadd(reply_to, encode_result(result), maxlen=RESULTS_MAXLEN)
                    pipe.pexpire(reply_to, RESULTS_TTL_MS)
                    pipe.xack(key, GROUP, entry_id)
                    pipe.xdel(key, entry_id)
                    await pipe.execute(raise_on_error=False)  # NOGROUP after a restart: no matter
                break
            except RedisError as exc:
                if time.monotonic() > deadline:
                    log.warning("could not send the answer to %s: %s", reply_to, exc)
                    break
                await asyncio.sleep(RECONNECT_DELAY_S)
        self._finished(key, entry_id)

    async def _acknowledge(self, key: str, entry_id: bytes) -> None:
        with contextlib.suppress(RedisError):  # unacknowledged, it is claimed and skipped again
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(key, GROUP, entry_id)
                pipe.xdel(key, entry_id)
                await pipe.execute(raise_on_error=False)

    def _finished(self, key: str, entry_id: bytes) -> None:
        self._in_flight.discard((key, entry_id))
        self._room.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- leases --------------------------------------------------------------------------------
    async def _maintain_leases(self, stopping: asyncio.Event) -> None:
        await self._create_groups([self.keys.detect_frames])
        while not stopping.is_set():
            try:
                await self._heartbeat()
                workers = await live_workers(self.redis, self.keys)
                await self._renew_leases()
                alive = {worker["id"] for worker in workers} | {self.worker_id}
                fair_share = math.ceil(self.keys.shards / len(alive))
                if await self._rebalance(fair_share, alive):
                    await self._heartbeat()  # API processes see the shards held at once
                await self._claim_abandoned(alive)
                if not self.connected:
                    log.info("connected to Redis; holding shards %s", self.shards)
                self.connected = True
            except RedisError as exc:
                self._lost_connection(exc)
            except Exception:  # a bug must not stop the renewals: the shards would drift away
                log.exception("maintaining the shard leases failed; trying again")
            if time.monotonic() - self._renewed_at > self.lease_ms / 1000 and self._shards:
                log.warning("leases not renewed for a lease TTL: giving up shards %s", self.shards)
                self._shards.clear()  # another worker may hold them by now
            await asyncio.sleep(self.tick_s)

    async def _heartbeat(self) -> None:
        registration = {
            "id": self.worker_id,
            "models": [_card(model) for model in self.inference.models.values()],
            "shard_count": self.keys.shards,
            "memory_budget_bytes": self.inference.memory_budget_bytes,
            "shards": self.shards,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        await self.redis.set(
            self.keys.worker(self.worker_id), json.dumps(registration), px=self.lease_ms
        )

    async def _renew_leases(self) -> None:
        lost = []
        for index in list(self._shards):
            if not await self._renew(
                keys=[self.keys.lease(index)], args=[self.worker_id, self.lease_ms]
            ):
                lost.append(index)
                del self._shards[index]
        if lost:
            log.warning("lost the leases of shards %s; their streams restart cold", lost)
        self._renewed_at = time.monotonic()

    async def _rebalance(self, fair_share: int, alive: set[str]) -> bool:
        """Give back what is held beyond the fair share (idle shards first), take free shards
        and those of dead workers up to it; whether the shards held changed."""
        excess = len(self._shards) - fair_share
        by_load = sorted(self._shards.values(), key=lambda shard: self._frames_in(shard.key))
        given_back, taken = [], []
        for rank, shard in enumerate(by_load):
            shard.releasing = rank < excess
            if shard.releasing and not self._frames_in(shard.key):
                await self._release(keys=[self.keys.lease(shard.index)], args=[self.worker_id])
                del self._shards[shard.index]
                given_back.append(shard.index)
        holders = await self.redis.mget([self.keys.lease(i) for i in range(self.keys.shards)])
        for index in random.sample(range(self.keys.shards), self.keys.shards):
            if len(self._shards) >= fair_share:
                break
            if index in self._shards or not await self._take_lease(index, holders[index], alive):
                continue
            key = self.keys.shard_frames(index)
            await self._create_groups([key])
            self._shards[index] = _Shard(index, key, next(self._tenures))
            taken.append(index)
        if given_back or taken:
            log.info(
                "fair share %d: gave back shards %s, took %s; holding %s",
                fair_share,
                given_back,
                taken,
                self.shards,
            )
        return bool(given_back or taken)

    async def _take_lease(self, index: int, holder: str | bytes | None, alive: set[str]) -> bool:
        """Take a shard's lease if it is free, or held by a worker that is dead."""
        lease = self.keys.lease(index)
        if holder is None:
            return bool(await self.redis.set(lease, self.worker_id, nx=True, px=self.lease_ms))
        if _text(holder) == self.worker_id:  # still ours (given up while Redis was away)
            return True
        if _text(holder) in alive:
            return False
        if await self._take_over(keys=[lease], args=[holder, self.worker_id, self.lease_ms]):
            log.warning("took shard %d over from %s, which is dead", index, _text(holder))
            return True
        return False

    async def _claim_abandoned(self, alive: set[str]) -> None:
        """Claim the frames that other (dead) consumers read and never answered: at once from
        the workers known dead, after a lease TTL from any other."""
        keys = [s.key for s in self._shards.values() if not s.releasing]
        for key in [*keys, self.keys.detect_frames]:
            await self._claim_from_the_dead(key, alive)
            start: bytes | str = "0-0"
            while True:
                try:
                    start, entries, *_ = await self.redis.xautoclaim(
                        key, GROUP, self.worker_id, self.lease_ms, start, count=self.prefetch
                    )
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    await self._create_groups([key])
                    break
                for entry_id, fields in entries:
                    if (key, entry_id) not in self._in_flight:
                        log.info("claimed frame %s of %s from a dead worker", entry_id, key)
                    self._take(key, entry_id, fields)
                if start in (b"0-0", "0-0"):
                    break

    async def _claim_from_the_dead(self, key: str, alive: set[str]) -> None:
        """Claim every frame pending for a consumer of ``key`` that is not alive (and has not
        read for a while: a worker starting reads before its first heartbeat), then forget it."""
        try:
            consumers = await self.redis.xinfo_consumers(key, GROUP)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return  # created by the claims below
        for consumer in consumers:
            name = _text(consumer["name"])
            if name in alive or consumer["idle"] < DEAD_CONSUMER_IDLE_MS:
                continue
            if consumer["pending"]:
                pending = await self.redis.xpending_range(
                    key, GROUP, min="-", max="+", count=consumer["pending"], consumername=name
                )
                ids: list[bytes | str | int] = [entry["message_id"] for entry in pending]
                claimed = cast(
                    list[tuple[bytes, Fields | None]],
                    await self.redis.xclaim(key, GROUP, self.worker_id, 0, list(ids)),
                )
                log.warning(
                    "claimed %d frames of %s from %s, which is dead", len(claimed), key, name
                )
                for entry_id, fields in claimed:
                    self._take(key, entry_id, fields)
            await self.redis.xgroup_delconsumer(key, GROUP, name)

    async def _create_groups(self, keys: list[str]) -> None:
        for key in keys:
            try:
                await self.redis.xgroup_create(key, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _give_back(self) -> None:
        """Leave at once rather than after a lease TTL: another worker takes the shards now."""
        with contextlib.suppress(RedisError):
            for index in list(self._shards):
                await self._release(keys=[self.keys.lease(index)], args=[self.worker_id])
            await self.redis.delete(self.keys.worker(self.worker_id))
        self._shards.clear()

    def _frames_in(self, key: str) -> int:
        return sum(1 for frame_key, _ in self._in_flight if frame_key == key)

    def _lost_connection(self, exc: RedisError) -> None:
        if self.connected:
            log.warning("lost Redis (%s); reconnecting", exc)
        self.connected = False


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _session_in_tenure(session: str, tenure: int) -> str:
    return f"{session}/{tenure}"


def _card(model: ModelCard) -> dict[str, object]:
    """The registration API processes read back as ``ModelCard(**card)`` (no module)."""
    return {
        card_field.name: getattr(model, card_field.name)
        for card_field in dataclasses.fields(ModelCard)
    }
