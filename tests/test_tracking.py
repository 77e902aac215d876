"""The per-stream point tracker: ids survive short misses and crossings, and nothing leaks between
streams. Trajectories are generated here; the assertions are about behaviour, not fixed numbers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from frames.tracking import PointTracker, TrackAssignment, TrackerSettings

Point = tuple[float, float]


def straight_path(start: Point, velocity: Point, frames: int) -> list[Point]:
    return [(start[0] + velocity[0] * t, start[1] + velocity[1] * t) for t in range(frames)]


def ids_of(assignments: list[list[TrackAssignment]]) -> list[int | None]:
    """The track id of the single detection of each frame."""
    assert all(len(frame) == 1 for frame in assignments)
    return [frame[0].track_id for frame in assignments]


def feed(tracker: PointTracker, frames: list[list[Point]]) -> list[list[TrackAssignment]]:
    result = [tracker.update(points) for points in frames]
    assert tracker.tracks_started - tracker.tracks_ended == tracker.confirmed_count
    return result


@pytest.mark.parametrize("confirm_hits", [1, 3, 5])
def test_a_track_is_confirmed_and_gets_its_id_after_k_hits(confirm_hits: int) -> None:
    tracker = PointTracker(TrackerSettings(confirm_hits=confirm_hits))
    path = straight_path((20.0, 30.0), (1.2, -0.5), confirm_hits + 4)
    ids = ids_of(feed(tracker, [[p] for p in path]))
    assert ids[: confirm_hits - 1] == [None] * (confirm_hits - 1)
    assert ids[confirm_hits - 1 :] == [1] * (len(path) - confirm_hits + 1)
    assert tracker.tracks_started == 1


@pytest.mark.parametrize("max_gap", [2, 6])
def test_a_target_missing_for_up_to_max_gap_frames_keeps_its_id(max_gap: int) -> None:
    tracker = PointTracker(TrackerSettings(max_gap=max_gap))
    path = straight_path((10.0, 10.0), (1.5, 0.7), 10 + max_gap + 10)
    seen = [[p] if not 10 <= t < 10 + max_gap else [] for t, p in enumerate(path)]
    assignments = feed(tracker, seen)
    ids = {a.track_id for frame in assignments[5:] for a in frame}
    assert ids == {1}
    assert tracker.tracks_ended == 0
    coasting = PointTracker(TrackerSettings(max_gap=max_gap))
    feed(coasting, seen[: 10 + max_gap])
    (state,) = coasting.active_tracks()
    assert state.misses == max_gap
    assert state.x == pytest.approx(path[10 + max_gap - 1][0], abs=0.5)


@pytest.mark.parametrize("max_gap", [2, 6])
def test_a_target_missing_for_longer_than_max_gap_gets_a_new_id(max_gap: int) -> None:
    settings = TrackerSettings(max_gap=max_gap)
    tracker = PointTracker(settings)
    path = straight_path((10.0, 10.0), (1.5, 0.7), 10 + max_gap + 1 + 10)
    seen = [[p] if not 10 <= t < 10 + max_gap + 1 else [] for t, p in enumerate(path)]
    ids = [frame[0].track_id for frame in feed(tracker, seen) if frame]
    before, after = ids[:10], ids[10:]
    assert before[-1] == 1
    assert after[: settings.confirm_hits - 1] == [None] * (settings.confirm_hits - 1)
    assert set(after[settings.confirm_hits - 1 :]) == {2}
    assert tracker.tracks_ended == 1


@pytest.mark.parametrize("merged", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_crossing_targets_keep_their_ids(merged: bool, seed: int) -> None:
    """Two targets whose straight paths meet at one point in the same frame. While they are closer
    than a few pixels which is which is undecidable (and, with ``merged``, they are a single
    detection, as one connected component would be); on either side each keeps its id."""
    rng = np.random.default_rng(seed)
    frames, meet_at, meeting_point, close_px = 30, 15, np.array([60.0, 40.0]), 3.0
    angle_a = rng.uniform(0, 2 * np.pi)
    angle_b = angle_a + rng.uniform(np.pi / 4, 3 * np.pi / 4) * rng.choice([-1, 1])
    velocity = [
        rng.uniform(1.0, 2.0) * np.array([np.cos(a), np.sin(a)]) for a in (angle_a, angle_b)
    ]
    tracker = PointTracker()
    ids_seen: dict[int, set[int | None]] = {0: set(), 1: set()}
    for t in range(frames):
        true = [meeting_point + v * (t - meet_at) for v in velocity]
        noisy = [p + rng.normal(0, 0.3, size=2) for p in true]
        close = bool(np.linalg.norm(true[0] - true[1]) < close_px)
        if merged and close:
            tracker.update([tuple((noisy[0] + noisy[1]) / 2)])
            continue
        order = rng.permutation(2)  # the detector's order says nothing about identity
        assignments = tracker.update([tuple(noisy[k]) for k in order])
        if t >= 5 and not close:
            for k, assignment in zip(order, assignments, strict=True):
                ids_seen[int(k)].add(assignment.track_id)
    assert len(ids_seen[0]) == 1 and len(ids_seen[1]) == 1
    assert ids_seen[0] != ids_seen[1] and None not in ids_seen[0] | ids_seen[1]
    assert tracker.tracks_started == 2


def test_single_frame_false_alarms_never_become_confirmed() -> None:
    rng = np.random.default_rng(7)
    settings = TrackerSettings()
    tracker = PointTracker(settings)
    path = straight_path((20.0, 20.0), (1.0, 1.0), 40)
    false_alarm_ids = []
    for t, target in enumerate(path):
        # each false alarm appears once, far (> gate) from the target and from every other one
        alarm = (200.0 + 3 * settings.gate_px * t, float(rng.uniform(0, 200)))
        assignments = tracker.update([target, alarm])
        false_alarm_ids.append(assignments[1].track_id)
    assert false_alarm_ids == [None] * len(path)
    assert tracker.tracks_started == 1
    assert len(tracker.active_tracks()) <= 1 + settings.tentative_max_gap + 1


def test_trackers_of_different_streams_share_no_state() -> None:
    first, second = PointTracker(), PointTracker()
    feed(first, [[p] for p in straight_path((10.0, 10.0), (1.0, 0.0), 10)])
    before = first.active_tracks()
    ids = ids_of(feed(second, [[p] for p in straight_path((100.0, 50.0), (0.0, 1.0), 10)]))
    assert {i for i in ids if i is not None} == {1}  # its own numbering
    assert first.active_tracks() == before
    assert [s.x for s in second.active_tracks()] == [pytest.approx(100.0, abs=0.5)]
    assert first.tracks_started == second.tracks_started == 1


def test_reset_forgets_tracks_ends_them_and_never_reuses_an_id() -> None:
    settings = TrackerSettings()
    tracker = PointTracker(settings)
    path = straight_path((10.0, 10.0), (1.0, 0.5), 20)
    feed(tracker, [[p] for p in path[:10]])
    assert tracker.confirmed_count == 1
    tracker.reset()
    assert tracker.active_tracks() == []
    assert tracker.tracks_ended == 1 and tracker.confirmed_count == 0
    ids = ids_of(feed(tracker, [[p] for p in path[10:]]))
    assert ids[: settings.confirm_hits - 1] == [None] * (settings.confirm_hits - 1)
    assert set(ids[settings.confirm_hits - 1 :]) == {2}


def test_empty_frames_age_tracks_until_they_end() -> None:
    settings = TrackerSettings(max_gap=4)
    tracker = PointTracker(settings)
    feed(tracker, [[p] for p in straight_path((10.0, 10.0), (1.0, 0.0), 5)])
    for missed in range(1, settings.max_gap + 1):
        assert tracker.update([]) == []
        assert [s.misses for s in tracker.active_tracks()] == [missed]
    tracker.update([])
    assert tracker.active_tracks() == []
    assert tracker.tracks_ended == 1


@pytest.mark.parametrize("clock", ["seq", "timestamp"])
def test_frames_dropped_upstream_are_bridged_by_seq_or_timestamp(clock: str) -> None:
    """The live-stream policy drops frames; the frames that arrive say how much time passed, so
    the prediction lands where the target is even though it moved far beyond the gate."""
    settings = TrackerSettings(gate_px=4.0)
    velocity = (2.0, 1.0)
    frame_numbers = [*range(10), 14, 15, 16, 20, 21]  # two bursts of drops
    tracker = PointTracker(settings)
    ids = []
    for n in frame_numbers:
        position = (5.0 + velocity[0] * n, 5.0 + velocity[1] * n)
        stamp = {"seq": n} if clock == "seq" else {"timestamp": 1000.0 + n / 25.0}
        ids.append(tracker.update([position], **stamp)[0].track_id)
    assert set(ids[settings.confirm_hits - 1 :]) == {1}


def test_a_frame_full_of_clutter_starts_at_most_max_tracks_tracks() -> None:
    tracker = PointTracker(TrackerSettings(max_tracks=16))
    grid = [(float(x), float(y)) for x in range(0, 400, 20) for y in range(0, 400, 20)]
    assert len(tracker.update(grid)) == len(grid)
    assert len(tracker.active_tracks()) == 16


def test_settings_reject_meaningless_values() -> None:
    with pytest.raises(ValidationError):
        TrackerSettings(confirm_hits=0)
    with pytest.raises(ValidationError):
        TrackerSettings(gate_px=-1.0)


def slewed_path(frames: int, slew_at: int, slew: Point) -> list[Point]:
    """A target drifting 2 px a frame that jumps by ``slew`` over two frames (a camera that
    slews to re-centre it), then drifts on."""
    path = straight_path((60.0, 40.0), (-2.0, 0.5), frames)
    done = [min(max(t - slew_at + 1, 0), 2) / 2 for t in range(frames)]  # share of the slew
    return [(x + slew[0] * f, y + slew[1] * f) for (x, y), f in zip(path, done, strict=True)]


def test_a_confirmed_target_keeps_its_id_through_a_camera_slew() -> None:
    path = slewed_path(20, slew_at=8, slew=(34.0, -6.0))  # 15 px a frame, the gate is 8
    gate = TrackerSettings().gate_px
    assert max(np.hypot(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(path)) > 1.5 * gate
    with_jumps = ids_of(feed(PointTracker(TrackerSettings()), [[p] for p in path]))
    without = ids_of(feed(PointTracker(TrackerSettings(jump_gate_px=0.0)), [[p] for p in path]))
    confirm = TrackerSettings().confirm_hits
    assert set(with_jumps[confirm - 1 :]) == {1}
    assert len({i for i in without if i is not None}) >= 2  # the slew breaks the plain tracker


def test_a_jump_never_takes_a_detection_from_a_track_within_the_normal_gate() -> None:
    """Two confirmed targets 20 px apart; the first vanishes: its track must not jump onto the
    second target, which its own track takes."""
    tracker = PointTracker(TrackerSettings())
    first = straight_path((50.0, 50.0), (1.0, 0.0), 12)
    second = straight_path((50.0, 70.0), (1.0, 0.0), 12)
    frames = [[a, b] for a, b in zip(first[:6], second[:6], strict=True)] + [
        [b] for b in second[6:]
    ]
    result = feed(tracker, frames)
    assert [frame[-1].track_id for frame in result[2:]] == [2] * 10
    assert result[2][0].track_id == 1


def test_only_a_track_detected_in_the_frame_before_may_jump() -> None:
    """A target that faded for two frames is not matched to a far-away detection (clutter)."""
    tracker = PointTracker(TrackerSettings())
    path = straight_path((50.0, 50.0), (1.0, 0.0), 5)
    feed(tracker, [[p] for p in path] + [[], []])
    (assignment,) = tracker.update([(path[-1][0] + 20.0, 50.0)])
    assert assignment.track_id is None  # a new tentative track, not track 1
