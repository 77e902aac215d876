"""Prometheus metrics of one service instance, in a registry of its own (tests run several apps).

The frame counters obey ``received = processed + sum(dropped) + sum(failed)`` once in-flight frames
have finished: every frame handler takes a :class:`FrameTicket`, which records exactly one outcome.
Base units throughout (seconds, bytes); no stream ids in labels, so label cardinality is bounded by
the code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from service.errors import ServiceError

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STAGES = ("queue", "inference", "postprocess", "total")

disable_created_metrics()  # the *_created series only double the exposition; nothing reads them


class ServiceMetrics:
    """The metrics the contract lists; a fresh registry per instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames_received = Counter(
            "irtrack_frames_received_total", "Frames that reached a frame endpoint.", registry=r
        )
        self.frames_processed = Counter(
            "irtrack_frames_processed_total", "Frames answered with a result.", registry=r
        )
        self.frames_dropped = Counter(
            "irtrack_frames_dropped_total",
            "Frames discarded by the live-stream policy, overload or shutdown.",
            ["reason"],
            registry=r,
        )
        self.frames_failed = Counter(
            "irtrack_frames_failed_total",
            "Frames answered with an error (bad input or a failed model call).",
            ["reason"],
            registry=r,
        )
        self.latency = Histogram(
            "irtrack_frame_latency_seconds",
            "Per-frame latency by stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "irtrack_batch_size",
            "Frames per model call.",
            ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=r,
        )
        self.queue_depth = Gauge(
            "irtrack_queue_depth",
            "Frames admitted and not yet answered: waiting in stream buffers or in the engine.",
            ["stage"],
            registry=r,
        )
        self.active_streams = Gauge("irtrack_active_streams", "Streams holding state.", registry=r)
        self.websocket_connections = Gauge(
            "irtrack_websocket_connections", "Open WebSocket streams.", registry=r
        )
        self.targets_per_frame = Histogram(
            "irtrack_targets_per_frame",
            "Targets reported per processed frame.",
            buckets=(0, 1, 2, 3, 5, 10, 20, 50, 100),
            registry=r,
        )
        self.active_tracks = Gauge(
            "irtrack_active_tracks", "Confirmed tracks alive, all streams.", registry=r
        )
        self.tracks_started = Counter(
            "irtrack_tracks_started", "Tracks confirmed (a new track id), all streams.", registry=r
        )
        self.tracks_ended = Counter(
            "irtrack_tracks_ended",
            "Confirmed tracks ended: gap, stream reset, deletion or expiry.",
            registry=r,
        )
        self.gpu_memory = Gauge(
            "irtrack_gpu_memory_allocated_bytes",
            "Memory allocated by torch on the inference GPU (0 on CPU).",
            registry=r,
        )
        self.model_info = Gauge(
            "irtrack_model_info",
            "Loaded models (value 1), with their weights and settings as labels.",
            ["model", "parameters", "frames", "weights_sha256", "weights_source", "default"],
            registry=r,
        )
        self.ready = Gauge("irtrack_ready", "1 when /readyz answers 200.", registry=r)
        for stage in STAGES:
            self.latency.labels(stage)  # export every stage from the start
        for stage in ("stream_buffer", "engine"):
            self.queue_depth.labels(stage)

    def track_gpu_memory(self, read_bytes: Callable[[], float]) -> None:
        """Read GPU memory at scrape time rather than after every batch."""
        self.gpu_memory.set_function(read_bytes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def ticket(self) -> FrameTicket:
        """Count one received frame; the ticket records its single outcome."""
        self.frames_received.inc()
        return FrameTicket(self)


@dataclass
class FrameCounters:
    """One stream's frame outcomes (the same invariant as the global counters)."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    failed: int = 0


class FrameTicket:
    """One received frame's bookkeeping: exactly one of processed / dropped / failed.

    A frame handler opens the ticket as a context manager; an exception escaping it settles the
    ticket (as the error's ``counted_as`` says, with its code) unless the engine
    took the frame over (``handed_over``): from then on the engine settles it when it finishes.
    """

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics
        self._stream: FrameCounters | None = None
        self.outcome: str | None = None
        self.handed_over = False

    def __enter__(self) -> FrameTicket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and not self.handed_over:
            self.reject(exc)

    def attach_stream(self, counters: FrameCounters) -> None:
        """Count this frame in its stream's counters too (once the stream is known)."""
        if self._stream is None:
            self._stream = counters
            counters.received += 1
            if self.outcome is not None:
                setattr(counters, self.outcome, getattr(counters, self.outcome) + 1)

    def processed(self) -> None:
        if self._settle("processed"):
            self._metrics.frames_processed.inc()

    def dropped(self, reason: str) -> None:
        if self._settle("dropped"):
            self._metrics.frames_dropped.labels(reason).inc()

    def failed(self, reason: str) -> None:
        if self._settle("failed"):
            self._metrics.frames_failed.labels(reason).inc()

    def reject(self, exc: BaseException) -> None:
        """Settle from the exception that stopped the frame before it reached the engine."""
        if isinstance(exc, ServiceError):
            settle = self.dropped if exc.counted_as == "dropped" else self.failed
            settle(exc.code)
        elif isinstance(exc, asyncio.CancelledError):
            self.dropped("cancelled")
        else:
            self.failed("internal")

    def _settle(self, outcome: str) -> bool:
        if self.outcome is not None:
            return False
        self.outcome = outcome
        if self._stream is not None:
            setattr(self._stream, outcome, getattr(self._stream, outcome) + 1)
        return True
