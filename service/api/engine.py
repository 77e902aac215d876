"""The engine: the one object routes talk to. It admits frames, keeps the streams, and reaches the
worker through the queue.

A frame's way through it: ``detect`` / ``stream_frame`` (REST) or ``offer_live`` (WebSocket) ->
admission (readiness, model, stream limits, sequence number, the live-stream policy, the global
limit) -> the stream's queue -> ``FrameQueue.submit`` -> worker -> outcome -> the frame's ticket
is settled (metrics and stream counters) -> ``Answer`` for the route.

Admission counts frames: at most ``global_queue_limit`` frames are waiting or in the engine at
any time (plus, per stream, the frame a newest-wins replacement briefly displaces), so memory
stays bounded however fast clients send. And it counts the memory a frame will take where it
runs: its model call (estimated from the padded size and the model) beside the state that the
streams keep (STD2Net's windows) must fit the workers' memory budget.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import numpy as np

from frames.options import DetectionOptions
from frames.sizes import format_size
from models import MODEL_NAMES
from service.api.sessions import LiveConnection, Outcome, StreamRegistry, StreamSession
from service.api.watchers import WatcherRegistry
from service.errors import (
    BadFrame,
    Conflict,
    InferenceFailed,
    InvalidParameter,
    NotFound,
    NotReady,
    Overloaded,
    TooLarge,
    Unavailable,
)
from service.metrics import FrameTicket, ServiceMetrics
from service.settings import Settings
from service.transport.inference import Inference, ModelCard
from service.transport.messages import (
    Answer,
    FrameDropped,
    FrameRequest,
    FrameResult,
    StreamRelease,
)
from service.transport.queue import TRANSPORT_FAILURES, FrameQueue, QueueClosed, QueueFull

log = logging.getLogger(__name__)

MiB = 1 << 20

CLOSE_GOING_AWAY = 1001  # WebSocket close code: the server is shutting down
CLOSE_STREAM_DELETED = 4410  # application close code: the stream was deleted (HTTP 410 Gone)


class Engine:
    """Admission, streams and the way to the inference worker; routes know nothing else."""

    def __init__(
        self,
        settings: Settings,
        metrics: ServiceMetrics,
        queue: FrameQueue,
        inference: Inference,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.queue = queue
        self.worker = inference
        self.streams = StreamRegistry(settings.max_streams, settings.stream_idle_ttl_s)
        self.watchers = WatcherRegistry()  # read-only followers of streams (the viewer)
        self._detect_in_flight = 0
        self._request_ids = itertools.count()
        self._closing = False
        self._expiry: asyncio.Task[None] | None = None
        self._unsettled: set[asyncio.Future[Outcome]] = set()  # admitted, outcome pending
        metrics.queue_depth.labels("stream_buffer").set_function(self.streams.waiting_frames)
        metrics.queue_depth.labels("engine").set_function(self._frames_in_engine)
        metrics.active_streams.set_function(lambda: len(self.streams))
        metrics.websocket_connections.set_function(self.streams.live_connections)
        metrics.ready.set_function(lambda: float(self.ready))

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker (it loads and warms up the models in the background)."""
        self.worker.start()
        self._expiry = asyncio.create_task(self._expire_idle_streams())

    async def close(self, drain_timeout_s: float = 10.0) -> None:
        """Stop admitting, answer every waiting frame, let the worker finish what it holds."""
        self._closing = True
        if self._expiry is not None:
            self._expiry.cancel()
        for session in self.streams:
            session.drop_all_waiting("shutdown")
        await asyncio.to_thread(self.worker.stop, drain_timeout_s)
        if self.worker.alive:
            log.warning("the inference worker did not finish within %.1f s", drain_timeout_s)
        self.queue.abandon()  # anything still unanswered now ends as dropped("shutdown")
        if self._unsettled:
            await asyncio.wait(set(self._unsettled), timeout=drain_timeout_s)

    @property
    def ready(self) -> bool:
        return self.worker.ready.is_set() and self.worker.alive and not self._closing

    async def not_ready_reason(self) -> str | None:
        """Why /readyz is 503, or None when it is 200."""
        if self.worker.load_error is not None:
            return f"loading the models failed: {self.worker.load_error}"
        if self._closing:
            return "shutting down"
        if not self.worker.ready.is_set():
            return "loading and warming up the models"
        if not self.worker.alive:
            return "the inference worker stopped"
        if not await self.queue.healthy():
            return "the queue backend does not answer"
        return None

    @property
    def alive(self) -> bool:
        """False once the worker can no longer serve (for /healthz: restart the process)."""
        return self.worker.load_error is None and (self.worker.alive or self._closing)

    def models(self) -> list[ModelCard]:
        self._require_ready()
        return list(self.worker.models.values())

    # --- frames ------------------------------------------------------------------------------
    async def detect(
        self,
        frame: np.ndarray,
        model: str | None,
        *,
        want_mask: bool,
        timestamp: float | None,
        received_at: float,
        ticket: FrameTicket,
        threshold: float | None = None,
    ) -> Answer:
        """One stateless frame (no window, no tracker)."""
        self._require_ready()
        model = self.resolve_model(model, stateless=True)
        self._require_capacity()
        self._require_memory(model, frame.shape, None)
        request = self._request(frame, model, want_mask, timestamp, received_at, threshold)
        self._detect_in_flight += 1
        outcome = asyncio.ensure_future(self._run(request))
        outcome.add_done_callback(lambda _: self._detect_done())
        return await self._answer(request, outcome, ticket)

    async def stream_frame(
        self,
        stream_id: str,
        frame: np.ndarray,
        model: str | None,
        *,
        seq: int | None,
        want_mask: bool,
        timestamp: float | None,
        received_at: float,
        ticket: FrameTicket,
        threshold: float | None = None,
    ) -> Answer:
        """One frame of a stream over REST: 429 rather than a drop when the stream is full."""
        self._require_ready()
        self._require_capacity()
        session = self._session(stream_id, model)
        ticket.attach_stream(session.counters)
        _require_same_model(session, model)
        if session.live_connection is not None:
            raise Conflict(
                f"stream {stream_id} has a live WebSocket; send its frames there",
                code="stream_in_use",
            )
        if session.full:
            raise Overloaded(
                f"stream {stream_id} already has {session.waiting} frames waiting",
                retry_after_s=self.settings.retry_after_s,
            )
        request = self._stream_request(
            session, frame, seq, want_mask, timestamp, received_at, threshold
        )
        return await self._answer(request, session.enqueue(request), ticket)

    def open_live(
        self, stream_id: str, model: str | None, connection: LiveConnection
    ) -> StreamSession:
        """Attach a WebSocket to a stream (one at a time)."""
        self._require_ready()
        session = self._session(stream_id, model)
        _require_same_model(session, model)
        if session.live_connection is not None:
            raise Conflict(f"stream {stream_id} already has a live WebSocket", code="stream_in_use")
        session.live_connection = connection
        return session

    def close_live(self, session: StreamSession) -> None:
        """The WebSocket went away: its waiting frames will never be read by anyone."""
        session.live_connection = None
        session.drop_all_waiting("client_gone")

    def offer_live(
        self,
        session: StreamSession,
        frame: np.ndarray,
        *,
        seq: int | None,
        want_mask: bool,
        timestamp: float | None,
        received_at: float,
        ticket: FrameTicket,
        threshold: float | None = None,
    ) -> asyncio.Future[Answer]:
        """Queue a WebSocket frame under the newest-wins policy; never waits, never refuses.

        Raises only for a frame that is itself wrong (a sequence number going backwards).
        """
        ticket.attach_stream(session.counters)
        request = self._stream_request(
            session, frame, seq, want_mask, timestamp, received_at, threshold
        )
        session.last_seq = request.seq  # even a frame dropped at once uses up its number
        outcome: asyncio.Future[Outcome]
        if self._closing or session.closed:
            reason = "shutdown" if self._closing else "stream_deleted"
            outcome = _resolved(FrameDropped(reason))
        elif session.full:
            session.drop_oldest_waiting("newest_wins")
            outcome = session.enqueue(request)
        elif self._frames_admitted() >= self.settings.global_queue_limit:
            if session.waiting:
                session.drop_oldest_waiting("newest_wins")
                outcome = session.enqueue(request)
            else:
                outcome = _resolved(FrameDropped("overloaded"))
        else:
            outcome = session.enqueue(request)
        return asyncio.ensure_future(self._answer(request, outcome, ticket))

    # --- stream management -------------------------------------------------------------------
    def set_options(
        self, stream_id: str, model: str | None, options: DetectionOptions | None
    ) -> StreamSession:
        """Set (or with None, clear) a stream's detection options; a new stream id starts a
        stream, as its first frame would. They apply from the stream's next frame on."""
        self._require_ready()
        session = self._session(stream_id, model)
        _require_same_model(session, model)
        session.options = options
        return session

    def stream(self, stream_id: str) -> StreamSession:
        session = self.streams.get(stream_id)
        if session is None:
            raise NotFound(f"no stream {stream_id!r}", code="unknown_stream")
        return session

    async def delete_stream(self, stream_id: str) -> None:
        """Free a stream now: waiting frames are dropped, a live WebSocket gets the answers of
        its admitted frames and is closed (code 4410)."""
        session = self.stream(stream_id)
        connection = session.live_connection
        self._forget(session, "stream_deleted")
        if connection is not None:
            await connection.finish(CLOSE_STREAM_DELETED, "stream deleted")

    async def finish_live_streams(self) -> None:
        """The first step of shutting down, before the server closes its sockets: admit no more
        frames, drop the waiting ones, and let each WebSocket send every answer it owes."""
        self._closing = True
        for session in self.streams:
            session.drop_all_waiting("shutdown")
        connections = [s.live_connection for s in self.streams if s.live_connection is not None]
        await asyncio.gather(
            *(c.finish(CLOSE_GOING_AWAY, "server shutting down") for c in connections),
            return_exceptions=True,
        )

    def stream_model(self) -> str:
        """The model of a new stream that names none: ``stream_model``, else STD2Net where its
        worker has a GPU, else ``default_model``."""
        if self.settings.stream_model is not None:
            return self.settings.stream_model
        std2net = self.worker.models.get("std2net")
        if std2net is not None and std2net.device.startswith("cuda"):
            return "std2net"
        return self.settings.default_model

    def resolve_model(self, name: str | None, *, stateless: bool) -> str:
        """The model a request means: 404 if unknown, 422 if it needs a stream and has none."""
        name = name or (self.settings.default_model if stateless else self.stream_model())
        if name not in self.settings.models:
            known = ", ".join(self.settings.models)
            detail = "is not loaded" if name in MODEL_NAMES else "does not exist"
            raise NotFound(f"model {name!r} {detail}; loaded: {known}", code="unknown_model")
        if stateless and self.worker.models[name].streaming:
            raise InvalidParameter(
                f"{name} detects from a window of frames; send them to /v1/streams/{{id}}/frames",
                code="model_needs_stream",
            )
        return name

    # --- internals ---------------------------------------------------------------------------
    def _require_ready(self) -> None:
        if not self.ready:
            raise NotReady(
                "the service is not ready (loading models or shutting down)",
                retry_after_s=self.settings.retry_after_s,
            )

    def _require_capacity(self) -> None:
        if self._frames_admitted() >= self.settings.global_queue_limit:
            raise Overloaded(
                f"{self.settings.global_queue_limit} frames are already waiting",
                retry_after_s=self.settings.retry_after_s,
            )

    def _require_memory(
        self, model: str, shape: tuple[int, ...], session: StreamSession | None
    ) -> None:
        """Refuse a frame whose model call, beside the state of the streams (its own at this
        frame's size), would not fit the memory budget: for good (413) when it cannot fit even
        alone, for now (429) when the other streams' state leaves no room."""
        card = self.worker.models[model]
        budget = self.worker.memory_budget_bytes
        size = (shape[0], shape[1])
        need = card.call_bytes(size) + (card.state_bytes(size) if session is not None else 0)
        if need > budget:
            raise TooLarge(
                f"a {format_size(*size)} frame needs about {need / MiB:.0f} MiB to run {model} "
                f"(padded to a multiple of {card.size_multiple}), more than the memory budget of "
                f"{budget / MiB:.0f} MiB (IRTRACK_MEMORY_BUDGET_BYTES)",
                code="frame_too_large",
            )
        held = sum(self._state_bytes(s) for s in self.streams if s is not session)
        if held + need > budget:
            raise Overloaded(
                f"the open streams hold {held / MiB:.0f} MiB of state; with this frame's "
                f"{need / MiB:.0f} MiB that exceeds the memory budget of {budget / MiB:.0f} MiB: "
                "DELETE streams or wait for idle ones to expire",
                code="memory_full",
                retry_after_s=self.settings.retry_after_s,
            )

    def _state_bytes(self, session: StreamSession) -> int:
        if session.size is None:
            return 0
        return self.worker.models[session.model].state_bytes(session.size)

    def _frames_in_engine(self) -> int:
        return self.streams.frames_in_flight() + self._detect_in_flight

    def _frames_admitted(self) -> int:
        return self._frames_in_engine() + self.streams.waiting_frames()

    def _detect_done(self) -> None:
        self._detect_in_flight -= 1

    def _session(self, stream_id: str, model: str | None) -> StreamSession:
        """The stream's session, created on its first frame; its model is fixed from then on."""
        session = self.streams.get(stream_id)
        if session is not None:
            return session
        model = self.resolve_model(model, stateless=False)
        if self.streams.full:
            raise Overloaded(
                f"{self.settings.max_streams} streams are open; DELETE one or wait for idle ones "
                f"to expire ({self.settings.stream_idle_ttl_s:g} s)",
                code="too_many_streams",
                retry_after_s=self.settings.retry_after_s,
            )
        session = StreamSession(
            stream_id=stream_id, model=model, run=self._run, depth=self.settings.stream_queue_depth
        )
        self.streams.add(session)
        return session

    def _request(
        self,
        frame: np.ndarray,
        model: str,
        want_mask: bool,
        timestamp: float | None,
        received_at: float,
        threshold: float | None,
    ) -> FrameRequest:
        return FrameRequest(
            request_id=str(next(self._request_ids)),
            model=model,
            frame=frame,
            received_at=received_at,
            timestamp=received_at if timestamp is None else timestamp,
            want_mask=want_mask,
            threshold=threshold,
        )

    def _stream_request(
        self,
        session: StreamSession,
        frame: np.ndarray,
        seq: int | None,
        want_mask: bool,
        timestamp: float | None,
        received_at: float,
        threshold: float | None,
    ) -> FrameRequest:
        """A stream's frame, with the stream's options (a request's threshold overrides theirs)."""
        self._require_memory(session.model, frame.shape, session)
        options = session.options
        if options is not None and frame.shape != (options.height, options.width):
            raise InvalidParameter(
                f"stream {session.stream_id}'s options (ignore regions) are for "
                f"{options.width}x{options.height} frames, not {frame.shape[1]}x{frame.shape[0]}; "
                "set options for the new size, or DELETE them",
                code="options_size_mismatch",
            )
        try:
            seq = session.next_seq(seq)
        except ValueError as exc:
            raise BadFrame(str(exc), code="seq_not_increasing") from None
        if threshold is None and options is not None:
            threshold = options.threshold
        request = self._request(frame, session.model, want_mask, timestamp, received_at, threshold)
        request.stream_id = session.stream_id
        request.session = session.session
        request.seq = seq
        request.options = options
        return request

    async def _run(self, request: FrameRequest) -> Outcome:
        """Send one request to the worker; every failure becomes an outcome, never an exception."""
        try:
            return await self.queue.submit(request)
        except QueueClosed:
            return FrameDropped("shutdown")
        except QueueFull:
            return FrameDropped("overloaded")
        except Exception as exc:
            log.exception("request %s failed on its way to the worker", request.request_id)
            return FrameResult(request.request_id, error_code="internal", error_message=str(exc))

    async def _answer(
        self, request: FrameRequest, outcome: asyncio.Future[Outcome], ticket: FrameTicket
    ) -> Answer:
        """Hand the frame's ticket to its outcome, and wait for that outcome.

        The outcome is shielded: a caller that goes away (client disconnect) does not cancel a
        frame already in the engine, and its ticket is still settled when it finishes.
        """
        ticket.handed_over = True
        self._unsettled.add(outcome)
        outcome.add_done_callback(lambda done: self._settle(request, done, ticket))
        result = await asyncio.shield(outcome)
        return Answer(request, result, time.time() - request.received_at)

    def _settle(
        self, request: FrameRequest, done: asyncio.Future[Outcome], ticket: FrameTicket
    ) -> None:
        self._unsettled.discard(done)
        if done.cancelled():
            ticket.dropped("cancelled")
            return
        outcome = done.result()
        if request.stream_id is not None:
            self.watchers.publish(Answer(request, outcome, time.time() - request.received_at))
        if isinstance(outcome, FrameDropped):
            ticket.dropped(outcome.reason)
            return
        if outcome.error_code is not None:
            ticket.failed(outcome.error_code)
            return
        ticket.processed()
        latency = self.metrics.latency
        latency.labels("queue").observe(max(0.0, outcome.batch_started_at - request.received_at))
        latency.labels("inference").observe(outcome.inference_s)
        latency.labels("postprocess").observe(outcome.postprocess_s)
        latency.labels("total").observe(time.time() - request.received_at)
        self.metrics.targets_per_frame.observe(len(outcome.detections))

    def _forget(self, session: StreamSession, reason: str) -> None:
        self.streams.remove(session.stream_id)
        session.closed = True
        session.live_connection = None
        session.drop_all_waiting(reason)
        self.queue.release_stream(StreamRelease(session.stream_id, session.session))

    async def _expire_idle_streams(self) -> None:
        period = min(self.settings.stream_idle_ttl_s / 2, 10.0)
        while True:
            await asyncio.sleep(period)
            for session in self.streams.expired(time.time()):
                log.info(
                    "stream %s expired after %.0f s idle",
                    session.stream_id,
                    self.streams.idle_ttl_s,
                )
                self._forget(session, "stream_expired")


def raise_for_outcome(answer: Answer, retry_after_s: int) -> FrameResult:
    """The result of a REST frame, or the HTTP error its outcome means."""
    outcome = answer.outcome
    if isinstance(outcome, FrameDropped):
        if outcome.reason == "shutdown":
            raise NotReady("shut down before the frame ran", retry_after_s=retry_after_s)
        if outcome.reason == "overloaded":
            raise Overloaded(
                "too many frames are waiting for a worker", retry_after_s=retry_after_s
            )
        raise Conflict(f"the frame was dropped: {outcome.reason}", code=outcome.reason)
    if outcome.error_code in TRANSPORT_FAILURES:
        raise Unavailable(
            outcome.error_message or outcome.error_code,
            code=outcome.error_code,
            retry_after_s=retry_after_s,
        )
    if outcome.error_code is not None:
        raise InferenceFailed(outcome.error_message or outcome.error_code, code=outcome.error_code)
    return outcome


def _require_same_model(session: StreamSession, model: str | None) -> None:
    if model is not None and model != session.model:
        raise Conflict(
            f"stream {session.stream_id} runs {session.model}, not {model}; "
            "DELETE it or use another stream id to switch models",
            code="model_mismatch",
        )


def _resolved(outcome: Outcome) -> asyncio.Future[Outcome]:
    future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    future.set_result(outcome)
    return future
