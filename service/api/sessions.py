"""The API side of a stream: identity, counters, and the bounded queue of its waiting frames.

A stream has at most one frame in the engine at a time (its window must see frames in order) and
at most ``depth`` frames waiting behind it. What happens to a frame that finds the queue full is
the caller's policy: a live stream (WebSocket) drops its oldest waiting frame, *newest wins*,
and that frame's outcome is an explicit ``FrameDropped``; REST callers are refused with 429
before anything is queued (see the engine).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from frames.options import DetectionOptions
from frames.tracking import TrackState
from service.metrics import FrameCounters
from service.transport.messages import FrameDropped, FrameRequest, FrameResult

Outcome = FrameResult | FrameDropped
Runner = Callable[[FrameRequest], Awaitable[Outcome]]


class LiveConnection(Protocol):
    """The WebSocket attached to a stream, as the engine sees it."""

    async def finish(self, code: int, reason: str) -> None:
        """Send the answers of the frames already admitted, then close with ``code``."""
        ...


@dataclass
class _Pending:
    request: FrameRequest
    outcome: asyncio.Future[Outcome]


@dataclass
class StreamSession:
    """One stream, from its first frame until it is deleted or expires."""

    stream_id: str
    model: str
    run: Runner  # sends one request to the engine and waits for its outcome
    depth: int
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    last_seq: int | None = None
    size: tuple[int, int] | None = None  # (H, W) of the latest frame
    counters: FrameCounters = field(default_factory=FrameCounters)
    live_connection: LiveConnection | None = None
    closed: bool = False  # deleted or expired: frames still arriving are dropped
    tracks: list[TrackState] = field(default_factory=list)  # as of the latest result
    options: DetectionOptions | None = None  # ignore regions, threshold, report policy
    frames_sent: int = 0
    _waiting: deque[_Pending] = field(default_factory=deque, init=False, repr=False)
    _in_flight: _Pending | None = field(default=None, init=False, repr=False)
    _pump: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        """A frame is in the engine or waiting for it."""
        return self._in_flight is not None

    @property
    def full(self) -> bool:
        return len(self._waiting) >= self.depth

    def next_seq(self, seq: int | None) -> int:
        """The frame's sequence number: the client's, which must increase, or the next one."""
        if seq is None:
            return 0 if self.last_seq is None else self.last_seq + 1
        if self.last_seq is not None and seq <= self.last_seq:
            raise ValueError(f"seq {seq} does not follow the stream's last seq {self.last_seq}")
        return seq

    def enqueue(self, request: FrameRequest) -> asyncio.Future[Outcome]:
        """Queue a frame (the caller checked ``full``); the future resolves with its outcome."""
        pending = _Pending(request, asyncio.get_running_loop().create_future())
        self.last_seen = time.time()
        self.last_seq = request.seq
        self.size = request.size
        if self._in_flight is None:
            self._in_flight = pending
            self._pump = asyncio.create_task(self._send_in_order())
        else:
            self._waiting.append(pending)
        return pending.outcome

    def drop_oldest_waiting(self, reason: str) -> None:
        self._waiting.popleft().outcome.set_result(FrameDropped(reason))

    def drop_all_waiting(self, reason: str) -> None:
        while self._waiting:
            self.drop_oldest_waiting(reason)

    async def _send_in_order(self) -> None:
        while self._in_flight is not None:
            pending = self._in_flight
            pending.request.frames_before = self.frames_sent
            self.frames_sent += 1
            outcome = await self.run(pending.request)
            if isinstance(outcome, FrameResult) and outcome.error_code is None:
                self.tracks = outcome.tracks
            if not pending.outcome.done():
                pending.outcome.set_result(outcome)
            self._in_flight = self._waiting.popleft() if self._waiting else None
        self._pump = None


class StreamRegistry:
    """The streams this API process serves, bounded in number, idle ones expiring."""

    def __init__(self, max_streams: int, idle_ttl_s: float) -> None:
        self.max_streams = max_streams
        self.idle_ttl_s = idle_ttl_s
        self._sessions: dict[str, StreamSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def full(self) -> bool:
        return len(self._sessions) >= self.max_streams

    def __iter__(self) -> Iterator[StreamSession]:
        return iter(list(self._sessions.values()))

    def get(self, stream_id: str) -> StreamSession | None:
        return self._sessions.get(stream_id)

    def add(self, session: StreamSession) -> None:
        self._sessions[session.stream_id] = session

    def remove(self, stream_id: str) -> StreamSession | None:
        return self._sessions.pop(stream_id, None)

    def waiting_frames(self) -> int:
        return sum(session.waiting for session in self._sessions.values())

    def frames_in_flight(self) -> int:
        return sum(session.busy for session in self._sessions.values())

    def live_connections(self) -> int:
        return sum(s.live_connection is not None for s in self._sessions.values())

    def expired(self, now: float) -> list[StreamSession]:
        """Streams silent for longer than the TTL, with no connection and no frame in flight."""
        return [
            s
            for s in self._sessions.values()
            if now - s.last_seen > self.idle_ttl_s and s.live_connection is None and not s.busy
        ]
