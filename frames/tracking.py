"""Per-stream multi-target tracking of point-like infrared targets: stable ids from centroids.

A detector reports, per frame, the centroids of the 8-connected components it found
(:func:`frames.postprocess.find_components`); :class:`PointTracker` links them over frames into
tracks with ids that stay the same while a target is followed. The engine holds one tracker per
stream and calls :meth:`PointTracker.update` with each frame's centroids.

How it works (SORT-style, for targets of a few pixels that carry no appearance worth matching):

- every track is a constant-velocity Kalman filter on (x, vx, y, vy) in pixels and pixels/frame;
  a frame first advances all tracks to its time (the prediction carries a track through misses);
- detections are assigned to predictions by the Hungarian algorithm on squared centroid distance,
  a pair farther apart than ``gate_px`` never matching. Confirmed tracks choose first, tentative
  tracks get what is left, so a burst of clutter cannot take a followed target's detection;
- a confirmed track that was detected in the previous frame and found nothing within the gate
  may then take a detection that no track wanted, up to ``jump_gate_px`` away: a pan-tilt camera
  that slews to re-centre its target moves it 10-20 px in a frame (40 at 640 px wide), against
  the filter's prediction. Only a track that just lost its target jumps, and only to what no other
  track, confirmed or tentative, took: a target fading for frames never jumps onto clutter;
- a detection that no track takes starts a *tentative* track. A tentative track is *confirmed*
  after ``confirm_hits`` detections and only then gets its id, so ids are dense (1, 2, 3...) and
  a one-frame false alarm never shows one. Detections of tentative tracks are reported with
  ``track_id=None`` (the result's ``track_id`` is null: unconfirmed);
- a confirmed track survives up to ``max_gap`` frames without a detection (a dim target fading
  for a few frames keeps its id) and ends after that; a tentative one after ``tentative_max_gap``.

Time is counted in frames. Frames dropped upstream (the live-stream policy drops frames) are seen
from gaps in ``seq``, or else from timestamps relative to the stream's typical frame interval;
without either every update is one frame.

Ids are unique per tracker: they start at 1 and are never reused, not even after :meth:`reset`
(a client that keys on ids across a frame-size change cannot confuse an old target with a new
one). A stream that is deleted and created again gets a new tracker, whose ids start at 1.

Why these libraries: the filter is ``filterpy.kalman.KalmanFilter`` (with filterpy's discrete
white-noise process model) and the assignment ``scipy.optimize.linear_sum_assignment``, the usual
parts of SORT-family trackers, maintained, numpy-2 compatible and light. The issue's first choice,
``norfair`` (built for point tracking, same design: Kalman filter, distance threshold,
initialization delay, hit counter), was evaluated and rejected: its latest release (2.3.0) requires
``numpy<2`` and ``rich<15``, so installing it would downgrade the project's numpy 2 (and rich)
majors. What is written here is only the bookkeeping around the two library parts: confirmation,
gaps, the confirmed-first cascade and the frame clock.

Not thread-safe: one stream's frames are processed in order by one worker.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from filterpy.common import Q_discrete_white_noise
from filterpy.kalman import KalmanFilter
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import linear_sum_assignment


class TrackerSettings(BaseModel):
    """Tracker parameters; distances in pixels, times in frames."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    confirm_hits: int = Field(
        default=3,
        ge=1,
        description="Detections a new track needs before it is confirmed and gets an id.",
    )
    max_gap: int = Field(
        default=10,
        ge=0,
        description="Consecutive frames without a detection a confirmed track survives (coasting "
        "on its predicted motion); one frame more ends it.",
    )
    tentative_max_gap: int = Field(
        default=1, ge=0, description="The same for a tentative (not yet confirmed) track."
    )
    gate_px: float = Field(
        default=8.0,
        gt=0,
        description="Largest distance between a track's predicted position and a detection that "
        "can be linked; must exceed a target's motion in one frame (a new track has no velocity).",
    )
    jump_gate_px: float = Field(
        default=48.0,
        ge=0.0,
        description="A confirmed track that was detected in the previous frame and finds no "
        "detection within gate_px may take a detection no other track took up to this far from "
        "its prediction (a camera that slews after its target moves it 10-20 px in a frame); "
        "a value not above gate_px turns this off.",
    )
    measurement_noise_px: float = Field(
        default=1.0,
        gt=0,
        description="Std of a detected centroid around the true one (incl. camera jitter).",
    )
    acceleration_noise_px: float = Field(
        default=0.3, gt=0, description="Std of a target's change of velocity per frame (px/frame²)."
    )
    initial_velocity_px: float = Field(
        default=3.0, gt=0, description="Prior std of a new track's velocity (px/frame)."
    )
    max_tracks: int = Field(
        default=256,
        ge=1,
        description="Most live tracks (confirmed + tentative) per stream; beyond it unmatched "
        "detections start no track (bounds the cost of a frame full of clutter).",
    )


@dataclass(frozen=True, slots=True)
class TrackAssignment:
    """What the tracker says about one detection of the frame."""

    track_id: int | None  # None: the detection belongs to a tentative track (or started one)

    @property
    def confirmed(self) -> bool:
        return self.track_id is not None


UNCONFIRMED = TrackAssignment(None)


@dataclass(frozen=True, slots=True)
class TrackState:
    """A live track as reported in a stream's state (position and velocity are the filter's)."""

    track_id: int | None  # None while tentative
    x: float  # column, px
    y: float  # row, px
    vx: float  # px/frame
    vy: float  # px/frame
    age: int  # frames since the track's first detection
    hits: int  # frames in which it had a detection
    misses: int  # frames since its last detection (0: detected in the latest frame)
    confirmed: bool


class _Track:
    """One target hypothesis: its Kalman filter and bookkeeping in frame-clock units."""

    def __init__(self, x: float, y: float, now: float, settings: TrackerSettings) -> None:
        self.filter = KalmanFilter(dim_x=4, dim_z=2)  # state (x, vx, y, vy)
        self.filter.x = np.array([[x], [0.0], [y], [0.0]])
        self.filter.H = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
        self.filter.R = np.eye(2) * settings.measurement_noise_px**2
        position_var = settings.measurement_noise_px**2
        velocity_var = settings.initial_velocity_px**2
        self.filter.P = np.diag([position_var, velocity_var, position_var, velocity_var])
        self.track_id: int | None = None
        self.born = now
        self.last_hit = now
        self.hits = 1

    @property
    def position(self) -> tuple[float, float]:
        return float(self.filter.x[0, 0]), float(self.filter.x[2, 0])

    def frames_missed(self, now: float) -> int:
        """Frames since the last detection, ``now`` included."""
        return round(now - self.last_hit)

    def state(self, now: float) -> TrackState:
        x, vx, y, vy = (float(v) for v in self.filter.x[:, 0])
        return TrackState(
            track_id=self.track_id,
            x=x,
            y=y,
            vx=vx,
            vy=vy,
            age=round(now - self.born),
            hits=self.hits,
            misses=self.frames_missed(now),
            confirmed=self.track_id is not None,
        )


class _FrameClock:
    """Turns optional sequence numbers and timestamps into frames elapsed since the last update.

    ``seq`` gaps are exact. Timestamps are divided by the stream's typical frame interval (the
    median of recent intervals, robust to the occasional dropped frame). Anything missing, or not
    increasing (a client that restarted its numbering), counts as one frame.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self._last_seq: int | None = None
        self._last_timestamp: float | None = None
        self._frame_intervals: deque[float] = deque(maxlen=32)

    def advance(self, seq: int | None, timestamp: float | None) -> float:
        frames = 1.0
        seq_step = (
            seq - self._last_seq
            if seq is not None and self._last_seq is not None and seq > self._last_seq
            else None
        )
        interval = (
            timestamp - self._last_timestamp
            if timestamp is not None
            and self._last_timestamp is not None
            and timestamp > self._last_timestamp
            else None
        )
        if seq_step is not None:
            frames = float(seq_step)
            if interval is not None:
                self._frame_intervals.append(interval / seq_step)
        elif interval is not None:
            typical = (
                statistics.median(self._frame_intervals) if self._frame_intervals else interval
            )
            self._frame_intervals.append(interval)
            frames = interval / typical
        self._last_seq, self._last_timestamp = seq, timestamp
        self.now += frames
        return frames


def _associate(
    predicted: np.ndarray, detected: np.ndarray, gate_px: float
) -> list[tuple[int, int]]:
    """Pairs (track row, detection row) of the assignment with the most pairs within the gate and,
    among those, the smallest sum of squared distances."""
    if len(predicted) == 0 or len(detected) == 0:
        return []
    squared = ((predicted[:, None, :] - detected[None, :, :]) ** 2).sum(axis=-1)
    gate = gate_px**2
    # An out-of-gate pair costs more than any set of in-gate pairs, so it is only ever chosen
    # where nothing in the gate is left, and then dropped.
    cost = np.where(squared <= gate, squared, gate * (min(squared.shape) + 1))
    rows, cols = linear_sum_assignment(cost)
    return [
        (r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if squared[r, c] <= gate
    ]


class PointTracker:
    """Tracks of one stream. ``update`` once per frame, in order, with the frame's centroids."""

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self.tracks_started = 0  # confirmed tracks, cumulative (tentative ones never count)
        self.tracks_ended = 0  # confirmed tracks that ended (gap or reset), cumulative
        self._next_id = 1
        self._tracks: list[_Track] = []
        self._clock = _FrameClock()

    @property
    def confirmed_count(self) -> int:
        """Live confirmed tracks (= tracks_started - tracks_ended)."""
        return sum(track.track_id is not None for track in self._tracks)

    def update(
        self,
        centroids: Sequence[tuple[float, float]] | np.ndarray,
        *,
        seq: int | None = None,
        timestamp: float | None = None,
    ) -> list[TrackAssignment]:
        """Advance to the next frame and link its detections (x, y = column, row) to tracks.

        Returns one assignment per centroid, in the input order. A frame without detections still
        advances time, so tracks age and end. ``seq`` / ``timestamp`` (seconds) are optional and
        only tell how many frames passed since the previous update.
        """
        points = np.asarray(centroids, dtype=np.float64).reshape(-1, 2)
        dt = self._clock.advance(seq, timestamp)
        now = self._clock.now
        self._predict(dt)
        # A track that already missed too many frames before this one may not take a detection.
        self._end_tracks(lambda track: track.frames_missed(now) - 1 > self._gap_limit(track))

        assignments = [UNCONFIRMED] * len(points)
        free = list(range(len(points)))
        confirmed = [t for t in self._tracks if t.track_id is not None]
        tentative = [t for t in self._tracks if t.track_id is None]
        free = self._assign(confirmed, points, free, self.settings.gate_px, now, assignments)
        free = self._assign(tentative, points, free, self.settings.gate_px, now, assignments)
        if self.settings.jump_gate_px > self.settings.gate_px:
            jumped = [t for t in confirmed if t.last_hit < now and t.frames_missed(now) <= 1]
            free = self._assign(jumped, points, free, self.settings.jump_gate_px, now, assignments)

        self._end_tracks(lambda track: track.frames_missed(now) > self._gap_limit(track))
        for detection in free[: max(0, self.settings.max_tracks - len(self._tracks))]:
            x, y = points[detection]
            track = _Track(float(x), float(y), now, self.settings)
            self._tracks.append(track)
            self._confirm_if_due(track)
            assignments[detection] = TrackAssignment(track.track_id)
        return assignments

    def active_tracks(self) -> list[TrackState]:
        """Live tracks: confirmed ones by id, then tentative ones (track_id None)."""
        now = self._clock.now
        states = [track.state(now) for track in self._tracks]
        return sorted(states, key=lambda s: (s.track_id is None, s.track_id or 0))

    def reset(self) -> None:
        """Forget every track and the frame clock (the stream restarted, e.g. a new frame size).

        Live confirmed tracks count as ended; ids continue from where they were.
        """
        self._end_tracks(lambda track: True)
        self._clock = _FrameClock()

    def _assign(
        self,
        tracks: list[_Track],
        points: np.ndarray,
        free: list[int],
        gate_px: float,
        now: float,
        assignments: list[TrackAssignment],
    ) -> list[int]:
        """Link ``tracks`` to the ``free`` detections within ``gate_px``; the detections left."""
        predicted = np.array([t.position for t in tracks]).reshape(-1, 2)
        pairs = _associate(predicted, points[free], gate_px)
        for track_row, free_row in pairs:
            detection = free[free_row]
            self._correct(tracks[track_row], points[detection], now)
            assignments[detection] = TrackAssignment(tracks[track_row].track_id)
        taken = {free[free_row] for _, free_row in pairs}
        return [d for d in free if d not in taken]

    def _gap_limit(self, track: _Track) -> int:
        if track.track_id is None:
            return self.settings.tentative_max_gap
        return self.settings.max_gap

    def _predict(self, dt: float) -> None:
        if not self._tracks:
            return
        transition = np.array(
            [[1.0, dt, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, dt], [0.0, 0.0, 0.0, 1.0]]
        )
        process_noise = Q_discrete_white_noise(
            dim=2, dt=dt, var=self.settings.acceleration_noise_px**2, block_size=2
        )
        for track in self._tracks:
            track.filter.predict(F=transition, Q=process_noise)

    def _correct(self, track: _Track, point: np.ndarray, now: float) -> None:
        track.filter.update(point.reshape(2, 1))
        track.last_hit = now
        track.hits += 1
        self._confirm_if_due(track)

    def _confirm_if_due(self, track: _Track) -> None:
        if track.track_id is None and track.hits >= self.settings.confirm_hits:
            track.track_id = self._next_id
            self._next_id += 1
            self.tracks_started += 1

    def _end_tracks(self, should_end: Callable[[_Track], bool]) -> None:
        kept: list[_Track] = []
        for track in self._tracks:
            if not should_end(track):
                kept.append(track)
            elif track.track_id is not None:
                self.tracks_ended += 1
        self._tracks = kept
