"""The inference worker: one thread that owns the models and the per-stream model state.

Loop: receive messages from the queue -> group frames by (model, padded size) in the batcher ->
submit a due batch (normalise, pad, start the model) -> post-process each frame of the batch before
it (threshold in logit space, 8-connected components, tracker, optional RLE mask) -> reply. Torch
runs only on this thread, so the API's event loop never blocks on it.

Pipelining (``Settings.pipeline``): on a GPU, submitting a batch only queues its copies and kernels,
so while the GPU runs batch k+1 this thread post-processes batch k. A submitted batch is finished
as soon as no further batch is due, so a result never waits for frames that have not arrived. Two
batches in flight never share a stream (its window and tracker advance frame by frame), and a
stream's release waits for its frame in flight. On a CPU the model has run by the time ``submit``
returns; the order of work is the same, nothing overlaps.

Failures stay with the frames they belong to: a failed model call answers its batch's frames with
``inference_error`` and restarts their streams' windows (their contents are unknown after it); a
failed post-processing answers that one frame. The loop itself never dies on a frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from frames.postprocess import detect_in_logits
from frames.preprocess import normalize_frame
from frames.tracking import PointTracker
from service.codecs import encode_rle
from service.metrics import ServiceMetrics
from service.settings import Settings
from service.transport.messages import Detection, FrameRequest, FrameResult, StreamRelease
from service.transport.queue import FrameQueue
from service.worker.batcher import DRAIN_ALL, Batcher
from service.worker.runtime import LoadedModel, ModelRuntime, PendingLogits
from service.worker.stream_state import StreamModelState, StreamStates, TrackerFactory

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5  # how often an idle worker looks at its stop flag and idle streams
# Idle this long after a call, the worker gives the calls' memory back to the system (arenas
# keep it for the next call while frames keep coming).
IDLE_GIVE_BACK_S = 2.0


@dataclass
class _Job:
    """A request in a batch, with the stream state it continues."""

    request: FrameRequest
    state: StreamModelState | None
    reset: bool


@dataclass
class _Round:
    """A submitted model call whose frames are not answered yet."""

    model: str
    jobs: list[_Job]
    logits: PendingLogits
    started_at: float  # wall clock, when the batch started
    submitted_tick: float  # perf_counter, when its submission started

    def has_stream(self, stream_id: str | None) -> bool:
        return stream_id is not None and any(
            job.request.stream_id == stream_id for job in self.jobs
        )


class InferenceWorker:
    """Runs on its own thread; ``ready`` is set once the models are loaded and warmed up."""

    def __init__(
        self,
        queue: FrameQueue,
        runtime: ModelRuntime,
        settings: Settings,
        metrics: ServiceMetrics,
        tracker_factory: TrackerFactory | None = None,
    ) -> None:
        self.queue = queue
        self.runtime = runtime
        self.settings = settings
        self.metrics = metrics
        self.ready = threading.Event()
        self.load_error: BaseException | None = None
        self._stopping = threading.Event()
        self._states = StreamStates(
            settings.stream_idle_ttl_s,
            tracker_factory or (lambda: PointTracker(settings.tracker)),
            self._count_tracks,
            window_bytes=lambda model, size: self.runtime.models[model].state_bytes(size),
            on_window_freed=self._memory_freed,
        )
        self._batcher: Batcher[FrameRequest] = Batcher(
            settings.max_batch, settings.max_wait_ms / 1000.0, self._frames_that_fit
        )
        self._in_flight: _Round | None = None
        self._give_back_at: float | None = None  # when to hand freed memory back (monotonic)
        self._thread = threading.Thread(target=self._run, name="irtrack-inference", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def models(self) -> dict[str, LoadedModel]:
        """The loaded models (empty until ``ready``)."""
        return self.runtime.models

    @property
    def memory_budget_bytes(self) -> int:
        return self.runtime.memory_budget_bytes

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Finish the frames already received, then end the thread (waits ``timeout_s`` at most)."""
        self._stopping.set()
        self.queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            if self.settings.torch_threads is not None:
                torch.set_num_threads(self.settings.torch_threads)
            # Subnormal floats (below 1e-38) arise inside the BDM layers and cost a CPU up to 10x
            # per frame; flushing them to zero changes no detection. Set before the first torch
            # call of this thread, so the intra-op threads it starts inherit it.
            torch.set_flush_denormal(True)
            self.runtime.load()
            self.runtime.warm_up()
        except Exception as exc:
            log.exception("loading the models failed; the service stays not ready")
            self.load_error = exc
            return
        self._publish_models()
        self.ready.set()
        log.info("inference worker ready on %s (%s)", self.runtime.device, self.settings.dtype)
        try:
            self._serve()
        except Exception:
            # A bug, not a bad frame (those are answered one by one): fail loudly, answer every
            # waiting caller, and let /healthz tell the orchestrator to restart the process.
            log.exception("the inference worker crashed")
            self.queue.abandon()

    def _publish_models(self) -> None:
        """Model info and per-model series exist from the start, before the first frame."""
        self.metrics.track_gpu_memory(self.runtime.gpu_memory_bytes)
        for model in self.runtime.models.values():
            self.metrics.model_info.labels(
                model=model.name,
                parameters=str(model.parameters),
                frames=str(model.frames),
                weights_sha256=model.weights_sha256,
                weights_source=model.weights_source,
                default=str(model.name == self.settings.default_model).lower(),
            ).set(1)
            self.metrics.batch_size.labels(model.name)

    def _serve(self) -> None:
        next_eviction = time.monotonic() + IDLE_POLL_S
        while True:
            stopping = self._stopping.is_set()
            wait = self._batcher.seconds_until_due(time.monotonic())
            # With a batch in flight only look for what has arrived meanwhile: that batch's
            # callers are waiting.
            look_only = stopping or self._in_flight is not None
            messages = self.queue.receive(0.0 if look_only else (wait or IDLE_POLL_S))
            now = time.monotonic()
            for message in messages:
                self._accept(message, now)
            horizon = DRAIN_ALL if stopping else now
            submitted = False
            while (due := self._batcher.next_batch(horizon)) is not None:
                self._run_batch(*due)
                submitted = True
            if not submitted:
                self._finish_in_flight()
            if stopping and not messages and not self._batcher and self._in_flight is None:
                return
            if now >= next_eviction:
                self._states.evict_idle(now)
                self.metrics.active_tracks.set(self._states.active_tracks())
                next_eviction = now + IDLE_POLL_S
            idle = self._in_flight is None and not self._batcher
            if idle and self._give_back_at is not None and now >= self._give_back_at:
                self._give_back_at = None
                self.runtime.give_back_memory()

    def _memory_freed(self) -> None:
        """A call larger than the steady ones or a stream's window ended: its memory goes back
        as soon as nothing runs."""
        self._give_back_at = time.monotonic()

    def _call_answered(self) -> None:
        """The memory of steady calls goes back once the worker has been idle a while."""
        if self._give_back_at is None or self._give_back_at > time.monotonic():
            self._give_back_at = time.monotonic() + IDLE_GIVE_BACK_S

    def _frames_that_fit(self, key: Hashable) -> int:
        """Frames of a batch key (model, padded H, padded W) that one call can take within the
        memory budget, beside the windows the streams hold."""
        model, height, width = cast(tuple[str, int, int], key)
        room = self.runtime.memory_budget_bytes - self._states.window_bytes()
        return room // self.runtime.models[model].call_bytes((height, width))

    def _count_tracks(self, started: int, ended: int) -> None:
        self.metrics.tracks_started.inc(started)
        self.metrics.tracks_ended.inc(ended)

    def _accept(self, message: FrameRequest | StreamRelease, now: float) -> None:
        if isinstance(message, StreamRelease):
            if self._in_flight is not None and self._in_flight.has_stream(message.stream_id):
                self._finish_in_flight()
            self._states.release(message.stream_id, message.session)
            return
        if message.model not in self.runtime.models:  # the API side checks; a peer might not
            self._reply_error(message, "unknown_model", f"model {message.model} is not loaded")
            return
        key = (message.model, *self.runtime.padded_size(message.model, message.size))
        self._batcher.add(key, message, now)

    def _run_batch(self, _key: Hashable, requests: list[FrameRequest]) -> None:
        for round_ in _rounds_without_repeated_streams(requests):
            self._run_round(requests[0].model, round_)

    def _run_round(self, model: str, requests: list[FrameRequest]) -> None:
        """Submit one model call, then finish the one submitted before it (the GPU runs this
        one meanwhile)."""
        if self._in_flight is not None and any(
            self._in_flight.has_stream(request.stream_id) for request in requests
        ):
            self._finish_in_flight()  # a stream's frames go through the model one at a time
        started_at = time.time()
        multi_frame = self.runtime.models[model].streaming
        jobs = [self._job(request, multi_frame) for request in requests]
        tick = time.perf_counter()
        try:
            frames = [normalize_frame(request.frame) for request in requests]
            windows = [w for job in jobs if job.state and (w := job.state.window) is not None]
            logits = self.runtime.submit(model, frames, windows if multi_frame else None)
        except Exception as exc:
            self._fail_round(model, jobs, exc)
            return
        previous, self._in_flight = self._in_flight, _Round(model, jobs, logits, started_at, tick)
        if previous is not None:
            self._finish(previous)
        if not self.settings.pipeline:
            self._finish_in_flight()

    def _finish_in_flight(self) -> None:
        if self._in_flight is not None:
            round_, self._in_flight = self._in_flight, None
            self._finish(round_)

    def _finish(self, round_: _Round) -> None:
        """Wait for a submitted call's logits, then post-process and answer each of its frames."""
        try:
            logits = round_.logits.result()
        except Exception as exc:
            self._fail_round(round_.model, round_.jobs, exc)
            return
        inference_s = time.perf_counter() - round_.submitted_tick
        if round_.logits.oversized:
            self._memory_freed()
        else:
            self._call_answered()
        self.metrics.batch_size.labels(round_.model).observe(len(round_.jobs))
        for job, frame_logits in zip(round_.jobs, logits, strict=True):
            self.queue.reply(self._postprocess(job, frame_logits, round_.started_at, inference_s))

    def _fail_round(self, model: str, jobs: list[_Job], exc: Exception) -> None:
        log.error("model call failed for a batch of %d %s frames", len(jobs), model, exc_info=exc)
        for job in jobs:
            if job.request.stream_id is not None:
                self._states.restart(job.request.stream_id)
            self._reply_error(job.request, "inference_error", f"the model call failed: {exc}")

    def _job(self, request: FrameRequest, multi_frame: bool) -> _Job:
        if request.stream_id is None:
            return _Job(request, None, False)
        state, reset = self._states.acquire(request, multi_frame, time.monotonic())
        return _Job(request, state, reset)

    def _postprocess(
        self, job: _Job, logits: np.ndarray, started_at: float, inference_s: float
    ) -> FrameResult:
        request = job.request
        tick = time.perf_counter()
        try:
            threshold = request.threshold or self.settings.threshold
            components, binary = detect_in_logits(logits, threshold, self.settings.min_area)
            options = request.options
            if options is not None:
                components = options.kept(components)  # the stream's ignore regions
            track_ids: list[int | None] = [None] * len(components)
            tracks = []
            if job.state is not None:
                assignments = self._states.update_tracks(
                    job.state,
                    [(c.centroid_x, c.centroid_y) for c in components],
                    request.seq,
                    request.timestamp,
                )
                track_ids = [assignment.track_id for assignment in assignments]
                tracks = job.state.tracker.active_tracks()
            detections = [Detection(c, t) for c, t in zip(components, track_ids, strict=True)]
            if options is not None and options.report == "confirmed":
                detections = [d for d in detections if d.track_id is not None]
            mask = encode_rle(binary) if request.want_mask else None
        except Exception as exc:
            log.exception("post-processing failed for request %s", request.request_id)
            if request.stream_id is not None:
                self._states.restart(request.stream_id)
            return self._error(request, "postprocess_error", f"post-processing failed: {exc}")
        return FrameResult(
            request_id=request.request_id,
            detections=detections,
            mask_rle=mask,
            reset=job.reset,
            tracks=tracks,
            batch_started_at=started_at,
            inference_s=inference_s,
            postprocess_s=time.perf_counter() - tick,
            finished_at=time.time(),
        )

    def _error(self, request: FrameRequest, code: str, message: str) -> FrameResult:
        return FrameResult(
            request_id=request.request_id,
            batch_started_at=time.time(),
            finished_at=time.time(),
            error_code=code,
            error_message=message,
        )

    def _reply_error(self, request: FrameRequest, code: str, message: str) -> None:
        self.queue.reply(self._error(request, code, message))


def _rounds_without_repeated_streams(requests: list[FrameRequest]) -> list[list[FrameRequest]]:
    """Split a batch so no stream appears twice in one model call, keeping each stream's order.

    A stream's window must see its frames one after the other; the API side sends one frame per
    stream at a time, so this only matters for a misbehaving peer.
    """
    rounds: list[list[FrameRequest]] = []
    for request in requests:
        for round_ in rounds:
            if request.stream_id is None or all(r.stream_id != request.stream_id for r in round_):
                round_.append(request)
                break
        else:
            rounds.append([request])
    return rounds
