"""Streaming a source's frames over the contract's WebSocket: bounded in flight, reconnecting.

The server answers every frame with one message, in order; each answer is the credit to send the
next frame. At most ``max_in_flight`` frames are sent and unanswered, so a slow link or a slow
service never builds up a queue of stale frames anywhere: what happens to a frame that finds no
credit is the caller's choice,

- ``when_busy="wait"``: the source waits (files, folders: every frame is sent, as fast as the
  service answers);
- ``when_busy="skip"``: the frame is not sent and comes back as ``skipped`` (cameras, RTSP, or a
  file paced at its frame rate: the client stays live, the way the server's newest-wins policy
  does for clients that do not hold back).

When the connection drops (network, server restart) the frames in flight come back as ``lost``
and the client reconnects to the same stream id with exponential back-off; the caller gets a
``Reconnected`` event that measures the gap. Every frame taken from the source comes back exactly
once, as a ``FrameEvent``, in source order: a result, a server drop or error, skipped, or lost.

Frames go as a JSON header (seq, capture time, size, pixel type) and raw little-endian pixels, or
as PNG for slow links; ``seq`` is the frame's index in the source, so it keeps increasing across
reconnects (the server requires that) and gaps in it are the frames the client skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import Field, TypeAdapter
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from service.schemas import Dropped, FrameError, Result, StreamInfo

ServerMessage = Annotated[Result | Dropped | FrameError, Field(discriminator="type")]
SERVER_MESSAGE: TypeAdapter[Result | Dropped | FrameError] = TypeAdapter(ServerMessage)

FrameStatus = Literal["result", "dropped", "error", "skipped", "lost"]
WhenBusy = Literal["wait", "skip"]
Encoding = Literal["raw", "png"]

# Handshake statuses worth retrying: not ready (loading models, restarting), the old connection
# still attached (409), too many streams or frames for now (429).
RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
# Close codes after which reconnecting cannot help: policy violation (bad key), message too big,
# the stream was deleted (4410).
TERMINAL_CLOSE_CODES = frozenset({1008, 1009, 4410})
CLOSE_ABNORMAL = 1006  # no close frame: the peer or the network went away
FIRST_RETRY_DELAY_S = 0.1
MAX_RETRY_DELAY_S = 2.0
MAX_BUFFERED_EVENTS = 64  # events waiting behind an unanswered frame before the source waits


class StreamFailed(ConnectionError):
    """The stream cannot go on: the server refused it, or it stayed unreachable too long."""


@dataclass
class FrameEvent:
    """What became of one source frame."""

    seq: int
    status: FrameStatus
    frame: np.ndarray = field(repr=False)
    message: Result | Dropped | FrameError | None = None  # the server's answer, if it came
    round_trip_ms: float | None = None  # send -> answer, on the client's clock
    reason: str | None = None  # why it was dropped, skipped or lost

    @property
    def result(self) -> Result | None:
        return self.message if isinstance(self.message, Result) else None

    def to_json(self, stream_id: str) -> dict[str, Any]:
        """One JSON-able record: the server's message, with the client's round trip added."""
        if self.message is not None:
            record = self.message.model_dump(mode="json")
        else:
            record = {"type": self.status, "stream_id": stream_id, "seq": self.seq}
            record["reason"] = self.reason
        record["round_trip_ms"] = self.round_trip_ms
        return record

    def describe(self) -> str:
        """One line, for printing as answers arrive: the first targets with their track ids
        (``#-`` while unconfirmed), or what became of the frame."""
        if isinstance(self.message, FrameError):
            return (
                f"frame {self.seq}: error {self.message.error.code}: {self.message.error.message}"
            )
        result = self.result
        if result is None:
            return f"frame {self.seq}: {self.status} ({self.reason})"
        shown = ", ".join(
            f"#{'-' if t.track_id is None else t.track_id} ({t.centroid.x:.1f},{t.centroid.y:.1f}) "
            f"a={t.area} s={t.score:.2f}"
            for t in result.targets[:5]
        )
        more = f" +{len(result.targets) - 5} more" if len(result.targets) > 5 else ""
        return (
            f"frame {self.seq}: {len(result.targets)} targets [{shown}{more}] "
            f"{self.round_trip_ms or 0:.0f} ms (server {result.latency_ms.total:.0f} ms)"
        )


@dataclass
class Reconnected:
    """The connection dropped and is back; what the outage cost."""

    cause: str
    outage_s: float
    attempts: int
    lost: list[int]  # seqs sent but never answered
    skipped: int  # frames not sent while disconnected (when_busy="skip")
    state_restarted: bool | None  # the server had lost the stream: new window, new track ids

    def describe(self) -> str:
        restarted = {True: "stream state restarted", False: "stream state kept", None: ""}
        return (
            f"reconnected after {self.outage_s:.1f} s ({self.attempts} attempts, {self.cause}): "
            f"{len(self.lost)} frames lost {self.lost}, {self.skipped} skipped; "
            f"{restarted[self.state_restarted]}"
        ).rstrip("; ")

    def to_json(self, stream_id: str) -> dict[str, Any]:
        return {"type": "reconnect", "stream_id": stream_id, **dataclasses.asdict(self)}


StreamEvent = FrameEvent | Reconnected


@dataclass
class StreamStats:
    """Running totals of a stream, readable while it runs."""

    frames: int = 0
    results: int = 0
    dropped: int = 0
    errors: int = 0
    skipped: int = 0
    lost: int = 0
    reconnects: int = 0
    targets: int = 0
    frames_with_targets: int = 0
    track_ids: set[int] = field(default_factory=set)  # confirmed tracks (unconfirmed have none)
    round_trip_ms: list[float] = field(default_factory=list)
    started_at: float = field(default_factory=time.perf_counter)

    def count(self, event: StreamEvent) -> None:
        if isinstance(event, Reconnected):
            self.reconnects += 1
            return
        self.frames += 1
        if event.status == "result":
            self.results += 1
        elif event.status == "dropped":
            self.dropped += 1
        elif event.status == "error":
            self.errors += 1
        elif event.status == "skipped":
            self.skipped += 1
        else:
            self.lost += 1
        if event.round_trip_ms is not None and event.status == "result":
            self.round_trip_ms.append(event.round_trip_ms)
        if event.result is not None:
            targets = event.result.targets
            self.targets += len(targets)
            self.frames_with_targets += bool(targets)
            self.track_ids.update(t.track_id for t in targets if t.track_id is not None)

    @property
    def fps(self) -> float:
        elapsed = time.perf_counter() - self.started_at
        return self.results / elapsed if elapsed > 0 else 0.0

    def summary(self) -> str:
        latency = (
            "round trip ms p50 {:.0f}, p95 {:.0f}, p99 {:.0f}".format(
                *np.percentile(self.round_trip_ms, [50, 95, 99])
            )
            if self.round_trip_ms
            else "no results"
        )
        return (
            f"{self.frames} frames: {self.results} results, {self.dropped} dropped, "
            f"{self.errors} errors, {self.skipped} skipped, {self.lost} lost; "
            f"{self.reconnects} reconnects; {self.fps:.1f} fps; {latency}; "
            f"{self.targets} targets in {self.frames_with_targets} frames, "
            f"{len(self.track_ids)} confirmed track{'' if len(self.track_ids) == 1 else 's'}"
        )


@dataclass
class _Entry:
    """A source frame on its way: unresolved until its event is known."""

    seq: int
    frame: np.ndarray
    sent_at: float = 0.0
    event: FrameEvent | None = None


Connector = Callable[[], Awaitable[ClientConnection]]
StreamLookup = Callable[[], Awaitable[StreamInfo | None]]


class LiveStream:
    """An async iterator of ``StreamEvent``; build it with ``AsyncClient.stream``.

    ``stats`` is updated as events are yielded. Iteration raises ``StreamFailed`` when the
    server refuses the stream or stays unreachable for ``reconnect_timeout_s``.
    """

    def __init__(
        self,
        connect: Connector,
        lookup: StreamLookup,
        frames: Iterable[np.ndarray] | AsyncIterable[np.ndarray],
        *,
        max_in_flight: int = 2,
        fps: float | None = None,
        when_busy: WhenBusy = "wait",
        encoding: Encoding = "raw",
        reconnect_timeout_s: float = 30.0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._connect = connect
        self._lookup = lookup
        self._frames = frames
        self.max_in_flight = max_in_flight
        self.fps = fps
        self.when_busy = when_busy
        self.encoding = encoding
        self.reconnect_timeout_s = reconnect_timeout_s
        self.stats = StreamStats()
        self._socket: ClientConnection | None = None
        self._in_flight: deque[_Entry] = deque()  # sent, unanswered, in send order
        self._pending: deque[_Entry | Reconnected] = deque()  # not yet yielded, in order
        self._changed = asyncio.Condition()
        self._source_done = False
        self._failure: BaseException | None = None
        self._skipped_while_down = 0
        self._stream_created_at: float | None = None

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        self._socket, _ = await self._connect_with_retries(first=True, cause="first connection")
        self._stream_created_at = await self._created_at()
        tasks = [asyncio.create_task(self._keep_connected()), asyncio.create_task(self._send())]
        self.stats.started_at = time.perf_counter()
        try:
            while True:
                async with self._changed:
                    await self._changed.wait_for(self._can_yield)
                    event = _ready(self._pending[0]) if self._pending else None
                    if event is not None:
                        self._pending.popleft()
                        self._changed.notify_all()  # room in the buffer for the source
                if event is not None:
                    self.stats.count(event)
                    yield event
                elif self._failure is not None:
                    raise self._failure
                else:
                    return  # the source is done and every frame came back
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._socket is not None:
                await self._socket.close()

    def _can_yield(self) -> bool:
        head_ready = bool(self._pending) and _ready(self._pending[0]) is not None
        finished = self._source_done and not self._pending
        return head_ready or finished or self._failure is not None

    # --- sending -----------------------------------------------------------------------------
    async def _send(self) -> None:
        try:
            started = time.perf_counter()
            seq = 0
            async for frame in _frames_off_the_loop(self._frames):
                _check_frame(frame)
                if self.fps:
                    await asyncio.sleep(max(0.0, started + seq / self.fps - time.perf_counter()))
                await self._send_frame(seq, frame)
                seq += 1
        except Exception as exc:  # a broken source ends the stream with its error
            self._failure = exc
        finally:
            self._source_done = True
            async with self._changed:
                self._changed.notify_all()

    async def _send_frame(self, seq: int, frame: np.ndarray) -> None:
        entry = _Entry(seq, frame)
        async with self._changed:
            await self._changed.wait_for(self._may_take_frame)
            self._pending.append(entry)
            if not self._has_credit():
                reason = "window_full" if self._socket is not None else "disconnected"
                self._skipped_while_down += self._socket is None
                self._resolve(entry, FrameEvent(seq, "skipped", frame, reason=reason))
                return
            socket = self._socket
            assert socket is not None
            self._in_flight.append(entry)
        header, payload = await asyncio.to_thread(_encode, seq, frame, self.encoding)
        entry.sent_at = time.perf_counter()
        try:
            await socket.send(header)
            await socket.send(payload)
        except (ConnectionClosed, OSError):
            pass  # the connection keeper notices too, and reports the frame lost

    def _may_take_frame(self) -> bool:
        """Room to buffer its event, and a credit unless frames without one are skipped."""
        room = len(self._pending) < MAX_BUFFERED_EVENTS
        return room and (self.when_busy == "skip" or self._has_credit())

    def _has_credit(self) -> bool:
        return self._socket is not None and len(self._in_flight) < self.max_in_flight

    # --- receiving and reconnecting ----------------------------------------------------------
    async def _keep_connected(self) -> None:
        try:
            while True:
                socket = self._socket
                assert socket is not None
                cause = await self._receive(socket)
                disconnected = time.perf_counter()
                async with self._changed:
                    self._socket = None
                    lost = self._lose_in_flight()
                    self._skipped_while_down = 0
                socket, attempts = await self._connect_with_retries(first=False, cause=cause)
                restarted = await self._state_restarted()
                async with self._changed:
                    self._pending.append(
                        Reconnected(
                            cause=cause,
                            outage_s=time.perf_counter() - disconnected,
                            attempts=attempts,
                            lost=lost,
                            skipped=self._skipped_while_down,
                            state_restarted=restarted,
                        )
                    )
                    self._socket = socket
                    self._changed.notify_all()
        except Exception as exc:  # refused, unreachable too long, or an unreadable answer
            async with self._changed:
                self._failure = exc
                self._lose_in_flight()
                self._changed.notify_all()

    async def _receive(self, socket: ClientConnection) -> str:
        """Match answers to frames until the connection ends; returns why it ended."""
        try:
            async for raw in socket:
                message = SERVER_MESSAGE.validate_json(raw)
                async with self._changed:
                    if not self._in_flight:
                        continue  # an answer to a frame already reported lost
                    # The server answers in the order frames were sent: the oldest is this one.
                    entry = self._in_flight.popleft()
                    event = FrameEvent(
                        entry.seq,
                        message.type,
                        entry.frame,
                        message,
                        (time.perf_counter() - entry.sent_at) * 1e3,
                        reason=message.reason if isinstance(message, Dropped) else None,
                    )
                    self._resolve(entry, event)
        except ConnectionClosed:
            pass
        except OSError as exc:
            return f"connection error: {exc}"
        code = socket.close_code
        if code in TERMINAL_CLOSE_CODES:
            raise StreamFailed(f"the server closed the stream: {code} {socket.close_reason}")
        if code is None or code == CLOSE_ABNORMAL:
            return "connection lost"
        return f"closed by the server ({code} {socket.close_reason})"

    def _lose_in_flight(self) -> list[int]:
        """Called with the condition held: the frames in flight will never be answered."""
        lost = []
        while self._in_flight:
            entry = self._in_flight.popleft()
            lost.append(entry.seq)
            self._resolve(entry, FrameEvent(entry.seq, "lost", entry.frame, reason="disconnected"))
        return lost

    def _resolve(self, entry: _Entry, event: FrameEvent) -> None:
        """Called with the condition held."""
        entry.event = event
        self._changed.notify_all()

    async def _connect_with_retries(self, first: bool, cause: str) -> tuple[ClientConnection, int]:
        """Connect, retrying what may pass (refused, not ready, in use) until the deadline.

        The first connection retries only answers of a live server (a wrong URL fails at once);
        a reconnection also retries a server that is down, since it is probably restarting.
        """
        deadline = time.perf_counter() + self.reconnect_timeout_s
        delay = FIRST_RETRY_DELAY_S
        attempts = 0
        while True:
            attempts += 1
            try:
                return await self._connect(), attempts
            except InvalidStatus as exc:
                if exc.response.status_code not in RETRYABLE_STATUSES:
                    raise StreamFailed(_refusal(exc)) from None
                last_error = _refusal(exc)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                if first:
                    raise StreamFailed(f"cannot connect: {exc}") from None
                last_error = f"{type(exc).__name__}: {exc}"
            if time.perf_counter() + delay > deadline:
                raise StreamFailed(
                    f"no connection within {self.reconnect_timeout_s:g} s after {cause} "
                    f"({attempts} attempts; last: {last_error})"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_S)

    async def _created_at(self) -> float | None:
        with contextlib.suppress(Exception):  # only a report; never a reason to stop the stream
            info = await self._lookup()
            return info.created_at if info is not None else None
        return None

    async def _state_restarted(self) -> bool | None:
        before = self._stream_created_at
        self._stream_created_at = await self._created_at()
        if before is None or self._stream_created_at is None:
            return None
        return self._stream_created_at != before


def _ready(item: _Entry | Reconnected) -> StreamEvent | None:
    return item if isinstance(item, Reconnected) else item.event


def _check_frame(frame: np.ndarray) -> None:
    if frame.ndim != 2 or frame.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frames must be 2-D uint8 or uint16, got {frame.shape} {frame.dtype}")


async def _frames_off_the_loop(
    frames: Iterable[np.ndarray] | AsyncIterable[np.ndarray],
) -> AsyncIterator[np.ndarray]:
    """Iterate a source; a blocking one (OpenCV reading a camera) is read on a thread."""
    if isinstance(frames, AsyncIterable):
        async for item in frames:
            yield item
        return
    iterator = iter(frames)
    while (frame := await asyncio.to_thread(_next_or_none, iterator)) is not None:
        yield frame


def _next_or_none(iterator: Iterator[np.ndarray]) -> np.ndarray | None:
    return next(iterator, None)


def _encode(seq: int, frame: np.ndarray, encoding: Encoding) -> tuple[str, bytes]:
    """The header message and the frame message for one frame."""
    header: dict[str, Any] = {"seq": seq, "timestamp": time.time()}
    if encoding == "png":
        ok, png = cv2.imencode(".png", frame)
        if not ok:
            raise ValueError("OpenCV could not encode the frame as PNG")
        return json.dumps(header), png.tobytes()
    header.update(width=frame.shape[1], height=frame.shape[0], dtype=str(frame.dtype))
    return json.dumps(header), raw_bytes(frame)


def raw_bytes(frame: np.ndarray) -> bytes:
    """The contract's raw pixel layout: row-major, little-endian."""
    return np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<")).tobytes()


def _refusal(exc: InvalidStatus) -> str:
    response = exc.response
    try:
        error = json.loads(response.body or b"")["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
