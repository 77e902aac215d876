"""The seam between the API side and the inference worker.

The API side ``submit``s a request and awaits its result; the worker ``receive``s messages and
``reply``s. :class:`InProcessQueue` connects an asyncio event loop to the worker thread in one
process (the embedded default, no Redis). A Redis Streams backend implements the same interface
with the worker in another process: ``submit`` becomes XADD + waiting on a reply stream,
``receive`` XREADGROUP, ``reply`` XADD; the messages are plain dataclasses for that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from collections import deque

from service.transport.messages import FrameRequest, FrameResult, StreamRelease

WorkerMessage = FrameRequest | StreamRelease


class QueueClosed(RuntimeError):
    """The queue no longer accepts work (the service is shutting down)."""


class QueueFull(RuntimeError):
    """The backend refuses a frame because too many are waiting (backpressure, e.g. Redis)."""


# Error codes of frames that the backend could not get answered (Redis did not take the frame,
# no worker answered in time): nothing was wrong with the frame, sending it again may succeed.
TRANSPORT_FAILURES = frozenset({"queue_unavailable", "worker_timeout"})


class FrameQueue(ABC):
    """Carries requests to the worker and results back. One instance per process side."""

    # --- API side (async, event loop) -------------------------------------------------------
    @abstractmethod
    async def submit(self, request: FrameRequest) -> FrameResult:
        """Send one request; return its result. Raises QueueClosed when shutting down."""

    @abstractmethod
    def release_stream(self, release: StreamRelease) -> None:
        """Ask the worker to free a stream's state (fire and forget)."""

    @abstractmethod
    async def healthy(self) -> bool:
        """Whether the backend answers (for /readyz)."""

    # --- worker side (blocking, worker thread) ----------------------------------------------
    @abstractmethod
    def receive(self, timeout_s: float) -> list[WorkerMessage]:
        """Every message waiting, or an empty list after ``timeout_s`` without any."""

    @abstractmethod
    def reply(self, result: FrameResult) -> None:
        """Deliver a result to whoever submitted its request (ignored if they stopped waiting)."""

    # --- both ----------------------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None:
        """Refuse new submissions and wake a waiting ``receive``."""

    @abstractmethod
    def abandon(self) -> None:
        """Stop waiting for results: every ``submit`` still waiting raises QueueClosed."""


class InProcessQueue(FrameQueue):
    """Event loop -> worker thread -> event loop, within one process.

    Unbounded by itself on purpose: admission (per-stream buffers, the global limit) happens
    before ``submit``, in the engine, the same for every backend.
    """

    def __init__(self) -> None:
        self._messages: deque[WorkerMessage] = deque()
        self._wakeup = threading.Condition()
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[FrameResult]]] = {}
        self._closed = False

    async def submit(self, request: FrameRequest) -> FrameResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[FrameResult] = loop.create_future()
        with self._wakeup:
            if self._closed:
                raise QueueClosed("the inference queue is closed")
            self._waiting[request.request_id] = (loop, future)
            self._messages.append(request)
            self._wakeup.notify()
        try:
            return await future
        finally:
            with self._wakeup:
                self._waiting.pop(request.request_id, None)

    def release_stream(self, release: StreamRelease) -> None:
        with self._wakeup:
            self._messages.append(release)
            self._wakeup.notify()

    async def healthy(self) -> bool:
        return not self._closed

    def receive(self, timeout_s: float) -> list[WorkerMessage]:
        with self._wakeup:
            if not self._messages and not self._closed:
                self._wakeup.wait(timeout_s)
            messages = list(self._messages)
            self._messages.clear()
        return messages

    def reply(self, result: FrameResult) -> None:
        with self._wakeup:
            waiter = self._waiting.pop(result.request_id, None)
        if waiter is None:
            return
        loop, future = waiter
        with contextlib.suppress(RuntimeError):  # the submitter's event loop is already closed
            loop.call_soon_threadsafe(_resolve, future, result)

    def close(self) -> None:
        with self._wakeup:
            self._closed = True
            self._wakeup.notify_all()

    def abandon(self) -> None:
        self.close()
        with self._wakeup:
            waiters = list(self._waiting.values())
            self._waiting.clear()
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that event loop is already closed
                loop.call_soon_threadsafe(_fail, future)


def _resolve(future: asyncio.Future[FrameResult], result: FrameResult) -> None:
    if not future.done():  # the submitter may have been cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[FrameResult]) -> None:
    if not future.done():
        future.set_exception(QueueClosed("the service shut down before the frame ran"))
