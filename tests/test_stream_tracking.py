"""The worker's per-stream trackers: one per stream, freed with the stream, counted in metrics."""

import numpy as np

from frames.tracking import PointTracker, TrackerSettings
from service.transport.messages import FrameRequest
from service.worker.stream_state import StreamStates

SETTINGS = TrackerSettings(confirm_hits=2, max_gap=3)


def request(stream_id: str, session: str = "s1", size: tuple[int, int] = (64, 64)) -> FrameRequest:
    return FrameRequest(
        request_id=f"{stream_id}-req",
        model="sd2net",
        frame=np.zeros(size, np.uint8),
        received_at=0.0,
        timestamp=0.0,
        stream_id=stream_id,
        session=session,
    )


class TrackCounts:
    def __init__(self) -> None:
        self.started = 0
        self.ended = 0

    def __call__(self, started: int, ended: int) -> None:
        self.started += started
        self.ended += ended


def feed(states: StreamStates, stream_id: str, points: list[tuple[float, float]], frames: int):
    state, _ = states.acquire(request(stream_id), multi_frame=False, now=0.0)
    assignments = []
    for _ in range(frames):
        assignments = states.update_tracks(state, points, None, None)
    return state, assignments


def test_each_stream_has_its_own_tracker_and_ids() -> None:
    counts = TrackCounts()
    states = StreamStates(60.0, lambda: PointTracker(SETTINGS), counts)
    state_a, ids_a = feed(states, "a", [(10.0, 10.0)], frames=3)
    state_b, ids_b = feed(states, "b", [(40.0, 40.0), (20.0, 50.0)], frames=3)
    assert state_a.tracker is not state_b.tracker
    assert [a.track_id for a in ids_a] == [1]  # ids are per stream: both start at 1
    assert sorted(a.track_id for a in ids_b) == [1, 2]
    assert [t.x for t in state_a.tracker.active_tracks()] == [10.0]
    assert counts.started == 3 and counts.ended == 0


def test_deleting_a_stream_frees_its_tracker_and_ends_its_tracks() -> None:
    counts = TrackCounts()
    states = StreamStates(60.0, lambda: PointTracker(SETTINGS), counts)
    feed(states, "a", [(10.0, 10.0), (30.0, 30.0)], frames=3)
    feed(states, "b", [(5.0, 5.0)], frames=3)
    states.release("a", "s1")
    assert len(states) == 1
    assert counts.ended == 2
    assert states.active_tracks() == 1
    # the same id comes back as a new stream: a fresh tracker, nothing carried over
    state, _ = states.acquire(request("a", session="s2"), multi_frame=False, now=1.0)
    assert state.tracker.active_tracks() == []


def test_idle_streams_expire_with_their_tracks_counted_as_ended() -> None:
    counts = TrackCounts()
    states = StreamStates(5.0, lambda: PointTracker(SETTINGS), counts)
    feed(states, "a", [(10.0, 10.0)], frames=3)
    states.evict_idle(now=10.0)
    assert len(states) == 0 and counts.ended == counts.started == 1


def test_a_new_frame_size_resets_the_tracker_but_ids_keep_counting() -> None:
    states = StreamStates(60.0, lambda: PointTracker(SETTINGS))
    state, first = feed(states, "a", [(10.0, 10.0)], frames=3)
    resized, reset = states.acquire(request("a", size=(32, 48)), multi_frame=False, now=1.0)
    assert reset and resized is state and state.tracker.active_tracks() == []
    assignments = [states.update_tracks(state, [(8.0, 8.0)], None, None) for _ in range(3)][-1]
    assert assignments[0].track_id is not None
    assert assignments[0].track_id > first[0].track_id
