"""The Redis Streams backend of :class:`FrameQueue`: API processes and workers in other processes.

API side (``submit``, ``release_stream``): a frame becomes an entry of its shard's Redis stream
(stateless frames: the shared detect stream), added only while that stream holds fewer than
``redis_queue_limit`` entries (else ``QueueFull``: 429 or a dropped message, as in the embedded
mode); the caller then waits on a future that the results reader resolves when the answer
arrives on this process's own results stream. A Redis outage loses nothing: the API process
holds every frame until it is answered, so a frame that Redis did not take is offered again until
it answers, and the frames that were in a Redis that lost its data (a restart without
persistence, see :meth:`check_boot`) are sent again once it is back. Nothing waits forever:
``redis_result_timeout_s`` after it was submitted, a frame still unanswered fails
(``worker_timeout``, or ``queue_unavailable`` if Redis never took it).

Worker side (``receive``, ``reply``): the inference thread talks to :attr:`local`, an in-process
hand-off that :class:`service.worker.redis_pump.RedisWorkerPump` feeds from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Literal

from redis.exceptions import RedisError

from service.settings import Settings
from service.transport.messages import FrameRequest, FrameResult, StreamRelease
from service.transport.queue import (
    FrameQueue,
    InProcessQueue,
    QueueClosed,
    QueueFull,
    WorkerMessage,
)
from service.transport.redis_wire import (
    ADMIT_SCRIPT,
    BOOT_SCRIPT,
    Entry,
    RedisKeys,
    api_client_name,
    connect,
    decode_result,
    encode_release,
    encode_request,
    entries,
    fresh_token,
    instance_id,
    worker_client_name,
)

log = logging.getLogger(__name__)

RESULTS_PER_READ = 256
READ_BLOCK_MS = 1000
RECONNECT_DELAY_S = 0.2
PING_TIMEOUT_S = 1.0

# What a waiting frame's future is given when Redis lost the frame: send it again.
_LOST_IN_REDIS = FrameResult(request_id="", error_code="lost_in_redis")


@dataclass
class _Waiter:
    """A submitted frame waiting for its answer; ``boot`` names the Redis data it went into."""

    request_id: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[FrameResult]
    boot: str | None = None


class RedisFrameQueue(FrameQueue):
    """One per process: the API side talks to Redis itself, the worker side through ``local``."""

    def __init__(self, settings: Settings, role: Literal["api", "worker"]) -> None:
        if settings.redis_url is None:
            raise ValueError("the Redis queue needs IRTRACK_REDIS_URL")
        self.settings = settings
        self.keys = RedisKeys(settings.redis_prefix, settings.redis_shards)
        self.instance_id = instance_id()
        client_name = worker_client_name if role == "worker" else api_client_name
        self.redis = connect(settings.redis_url, client_name(self.instance_id))
        self.results_key = self.keys.results(self.instance_id)
        self.local = InProcessQueue()
        self._admit = self.redis.register_script(ADMIT_SCRIPT)
        self._boot_script = self.redis.register_script(BOOT_SCRIPT)
        self._waiting: dict[str, _Waiter] = {}
        self._closed = False
        self._results_from = b"0"  # the id after which this process's answers are unread
        self._reader: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self._outage_logged = False

    # --- API side ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start reading this process's answers (on the running event loop)."""
        self._reader = asyncio.get_running_loop().create_task(self._read_results())

    @property
    def waiting(self) -> int:
        """Frames submitted and not yet answered."""
        return len(self._waiting)

    async def submit(self, request: FrameRequest) -> FrameResult:
        if self._closed:
            raise QueueClosed("the inference queue is closed")
        loop = asyncio.get_running_loop()
        timeout_s = self.settings.redis_result_timeout_s
        deadline = loop.time() + timeout_s
        waiter = _Waiter(request.request_id, loop, loop.create_future())
        self._waiting[request.request_id] = waiter
        fields = encode_request(request, self.results_key)
        try:
            while True:
                if not await self._add(waiter, request.stream_id, fields, deadline):
                    return _failure(
                        request, "queue_unavailable", f"Redis did not answer for {timeout_s:g} s"
                    )
                try:
                    outcome = await asyncio.wait_for(waiter.future, deadline - loop.time())
                except TimeoutError:
                    return _failure(
                        request, "worker_timeout", f"no worker answered in {timeout_s:g} s"
                    )
                if outcome is not _LOST_IN_REDIS:
                    return outcome
                waiter.future = loop.create_future()  # Redis lost it: send it again
        finally:
            self._waiting.pop(request.request_id, None)

    async def _add(
        self, waiter: _Waiter, stream_id: str | None, fields: Entry, deadline: float
    ) -> bool:
        """Add the frame to its Redis stream, trying again while Redis does not answer; False
        once ``deadline`` passed without Redis taking it. Raises QueueFull at the limit."""
        limit = self.settings.redis_queue_limit
        args = [limit, fresh_token(), *(item for pair in fields.items() for item in pair)]
        while True:
            try:
                entry_id, boot = await self._admit(
                    keys=[self.keys.frames_for(stream_id), self.keys.boot], args=args
                )
                break
            except RedisError:
                if asyncio.get_running_loop().time() + RECONNECT_DELAY_S > deadline:
                    return False
                await asyncio.sleep(RECONNECT_DELAY_S)
        if entry_id is None:
            raise QueueFull(f"{limit} frames are already waiting for this shard's worker")
        waiter.boot = boot.decode()
        return True

    def release_stream(self, release: StreamRelease) -> None:
        task = asyncio.get_running_loop().create_task(self._send_release(release))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def healthy(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), PING_TIMEOUT_S))
        except (RedisError, TimeoutError):
            return False

    async def check_boot(self) -> None:
        """Send again the frames that went into a Redis whose data is gone since (a restart
        without persistence, a flush): no worker will ever see them. Called periodically."""
        boot = (await self._boot_script(keys=[self.keys.boot], args=[fresh_token()])).decode()
        lost = [w for w in self._waiting.values() if w.boot is not None and w.boot != boot]
        if not lost:
            return
        log.warning("Redis lost its data (restarted?): sending %d frames again", len(lost))
        self._results_from = b"0"  # this process's results stream starts over too
        for waiter in lost:
            waiter.boot = None
            _settle(waiter, _LOST_IN_REDIS)

    async def backlog(self) -> int:
        """Frames in Redis, waiting for a worker or being processed, over all shards."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys.all_frames():
                pipe.xlen(key)
            return sum(await pipe.execute())

    async def _read_results(self) -> None:
        while True:
            try:
                reply = await self.redis.xread(
                    {self.results_key: self._results_from},
                    count=RESULTS_PER_READ,
                    block=READ_BLOCK_MS,
                )
                answers = entries(reply)
                for _, entry_id, fields in answers:
                    self._results_from = entry_id
                    self._deliver(decode_result(fields))
                if answers:
                    await self.redis.xdel(
                        self.results_key, *(entry_id for _, entry_id, _ in answers)
                    )
                self._outage_logged = False
            except RedisError as exc:
                if not self._outage_logged:
                    log.warning("reading results from Redis failed (%s); retrying", exc)
                    self._outage_logged = True
                await asyncio.sleep(RECONNECT_DELAY_S)

    def _deliver(self, result: FrameResult) -> None:
        waiter = self._waiting.get(result.request_id)
        if waiter is not None:  # else its caller stopped waiting (timeout, lost, shutdown)
            _settle(waiter, result)

    async def _send_release(self, release: StreamRelease) -> None:
        try:
            await self.redis.xadd(self.keys.frames_for(release.stream_id), encode_release(release))
        except RedisError as exc:  # the worker frees the state after its idle TTL anyway
            log.warning("could not tell the workers to free stream %s: %s", release.stream_id, exc)

    async def aclose(self) -> None:
        """Stop the reader and close the connections (after ``abandon``)."""
        for task in [self._reader, *self._releases]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(RedisError):
            await self.redis.delete(self.results_key)
        await self.redis.aclose()

    # --- worker side -----------------------------------------------------------------------------
    def receive(self, timeout_s: float) -> list[WorkerMessage]:
        return self.local.receive(timeout_s)

    def reply(self, result: FrameResult) -> None:
        self.local.reply(result)

    # --- both ----------------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True
        self.local.close()

    def abandon(self) -> None:
        self.close()
        self.local.abandon()
        for waiter in list(self._waiting.values()):
            with contextlib.suppress(RuntimeError):  # that event loop is already closed
                waiter.loop.call_soon_threadsafe(_shut_down, waiter.future)


def _failure(request: FrameRequest, code: str, message: str) -> FrameResult:
    now = time.time()
    return FrameResult(
        request.request_id,
        batch_started_at=now,
        finished_at=now,
        error_code=code,
        error_message=message,
    )


def _settle(waiter: _Waiter, result: FrameResult) -> None:
    if not waiter.future.done():
        waiter.future.set_result(result)


def _shut_down(future: asyncio.Future[FrameResult]) -> None:
    if not future.done():
        future.set_exception(QueueClosed("the service shut down before the frame ran"))
