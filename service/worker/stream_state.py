"""What the worker keeps per stream: the STD2Net window of cached features and the tracker.

The tracker is a replaceable part behind a small interface (the Frigate way); the default is
:class:`frames.tracking.PointTracker`. A stream's window restarts (the result says
``reset: true``) when its frame size changes (the tracker is reset too, its ids keep counting up),
and a stream whose id is reused after a DELETE, or that was evicted after ``stream_idle_ttl_s`` of
silence, starts over with a new window and a new tracker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from frames.tracking import PointTracker, TrackAssignment, TrackState
from models.std2net import StreamState
from service.transport.messages import FrameRequest


class Tracker(Protocol):
    """Links one stream's detections over frames into tracks with stable ids."""

    tracks_started: int  # confirmed tracks, cumulative
    tracks_ended: int

    @property
    def confirmed_count(self) -> int: ...

    def active_tracks(self) -> list[TrackState]: ...

    def update(
        self,
        centroids: Sequence[tuple[float, float]] | np.ndarray,
        *,
        seq: int | None = None,
        timestamp: float | None = None,
    ) -> list[TrackAssignment]: ...

    def reset(self) -> None: ...


_T = TypeVar("_T")
TrackerFactory = Callable[[], Tracker]
TrackCountsListener = Callable[[int, int], None]  # (tracks started, tracks ended) since last call
WindowBytes = Callable[[str, tuple[int, int]], int]  # (model, frame size) -> a window's bytes


@dataclass
class StreamModelState:
    session: str
    model: str
    size: tuple[int, int]  # (H, W) of the frames the window holds
    window: StreamState | None  # multi-frame models only
    tracker: Tracker
    last_used: float


class StreamStates:
    """The worker's per-stream state, created on a stream's first frame, freed on release or
    after ``idle_ttl_s`` without frames. ``on_window_freed`` is told when a freed state held a
    window (its memory can go back to the system)."""

    def __init__(
        self,
        idle_ttl_s: float,
        tracker_factory: TrackerFactory = PointTracker,
        on_track_counts: TrackCountsListener | None = None,
        window_bytes: WindowBytes | None = None,
        on_window_freed: Callable[[], None] | None = None,
    ) -> None:
        self._tracker_factory = tracker_factory
        self._idle_ttl_s = idle_ttl_s
        self._on_track_counts = on_track_counts
        self._window_bytes = window_bytes
        self._on_window_freed = on_window_freed
        self._states: dict[str, StreamModelState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def acquire(
        self, request: FrameRequest, multi_frame: bool, now: float
    ) -> tuple[StreamModelState, bool]:
        """The state this stream frame continues, and whether it had to restart (``reset``)."""
        assert request.stream_id is not None and request.session is not None
        state = self._states.get(request.stream_id)
        if state is not None and state.session == request.session and state.model == request.model:
            state.last_used = now
            if state.size == request.size:
                return state, False
            state.size = request.size
            state.window = StreamState() if multi_frame else None
            self._counting_tracks(state.tracker, state.tracker.reset)
            return state, True
        self._states[request.stream_id] = StreamModelState(
            session=request.session,
            model=request.model,
            size=request.size,
            window=StreamState() if multi_frame else None,
            tracker=self._tracker_factory(),
            last_used=now,
        )
        # A stream's first frame starts cold by definition; a later one starting over is news.
        return self._states[request.stream_id], request.frames_before > 0

    def update_tracks(
        self,
        state: StreamModelState,
        centroids: Sequence[tuple[float, float]],
        seq: int | None,
        timestamp: float | None,
    ) -> list[TrackAssignment]:
        """Feed the frame's centroids to the stream's tracker; one assignment per centroid."""
        return self._counting_tracks(
            state.tracker, lambda: state.tracker.update(centroids, seq=seq, timestamp=timestamp)
        )

    def restart(self, stream_id: str) -> None:
        """Forget a stream's window and tracker (after a failed call left them in doubt)."""
        self._free(stream_id)

    def release(self, stream_id: str, session: str) -> None:
        state = self._states.get(stream_id)
        if state is not None and state.session == session:
            self._free(stream_id)

    def evict_idle(self, now: float) -> None:
        expired = [sid for sid, s in self._states.items() if now - s.last_used > self._idle_ttl_s]
        for stream_id in expired:
            self._free(stream_id)

    def _free(self, stream_id: str) -> None:
        """Drop a stream's state; its live tracks end (and are counted as ended) with it."""
        state = self._states.pop(stream_id, None)
        if state is not None:
            self._counting_tracks(state.tracker, state.tracker.reset)
            if state.window is not None and self._on_window_freed is not None:
                state.window = None
                self._on_window_freed()

    def window_bytes(self) -> int:
        """What the streams' windows hold (as estimated for the memory budget)."""
        if self._window_bytes is None:
            return 0
        measure = self._window_bytes
        return sum(measure(s.model, s.size) for s in self._states.values() if s.window is not None)

    def _counting_tracks(self, tracker: Tracker, change: Callable[[], _T]) -> _T:
        """Run a tracker change and report how many tracks it started and ended."""
        started, ended = tracker.tracks_started, tracker.tracks_ended
        outcome = change()
        if self._on_track_counts is not None:
            self._on_track_counts(tracker.tracks_started - started, tracker.tracks_ended - ended)
        return outcome

    def active_tracks(self) -> int:
        """Confirmed tracks alive over all streams."""
        return sum(state.tracker.confirmed_count for state in self._states.values())
