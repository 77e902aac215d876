"""What goes through Redis comes back unchanged, and every process puts a stream on the same shard."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from frames.options import DetectionOptions, IgnoreRegion
from frames.postprocess import Component
from frames.tracking import TrackState
from service.transport.messages import Detection, FrameRequest, FrameResult, StreamRelease
from service.transport.redis_wire import (
    decode_release,
    decode_request,
    decode_result,
    encode_release,
    encode_request,
    encode_result,
    is_release,
    shard_of,
)


def as_read_back(entry: dict) -> dict[bytes, bytes]:
    """An entry as redis-py returns it: bytes keys and values."""
    return {
        key.encode(): value if isinstance(value, bytes) else str(value).encode()
        for key, value in entry.items()
    }


def test_a_uint16_stream_frame_and_its_metadata_round_trip() -> None:
    frame = np.arange(12 * 7, dtype=np.uint16).reshape(12, 7) * 700
    request = FrameRequest(
        request_id="41",
        model="std2net",
        frame=frame,
        received_at=1700000000.25,
        timestamp=12.5,
        want_mask=True,
        stream_id="cam-1",
        session="abc",
        seq=9,
        frames_before=3,
        threshold=0.7,
        options=DetectionOptions(
            width=7,
            height=12,
            ignore=(
                IgnoreRegion(rect=(0, 0, 6, 2)),
                IgnoreRegion(polygon=((1, 1), (5, 1), (3, 9))),
            ),
            report="confirmed",
        ),
    )
    decoded, reply_to = decode_request(as_read_back(encode_request(request, "irtrack:results:x")))
    assert reply_to == "irtrack:results:x"
    np.testing.assert_array_equal(decoded.frame, frame)
    assert decoded.frame.dtype == np.uint16 and decoded.frame.flags.writeable
    assert {**vars(decoded), "frame": None} == {**vars(request), "frame": None}


def test_a_result_with_detections_and_a_mask_round_trips() -> None:
    component = Component(3.5, 4.25, 2, 3, 5, 6, 9, 0.875)
    result = FrameResult(
        request_id="7",
        detections=[Detection(component, 12), Detection(component, None)],
        mask_rle={"size": [4, 5], "counts": [3, 2, 15]},
        reset=True,
        tracks=[
            TrackState(4, x=1.5, y=2.5, vx=0.25, vy=-0.5, age=9, hits=8, misses=1, confirmed=True)
        ],
        batch_started_at=1.5,
        inference_s=0.01,
        postprocess_s=0.002,
        finished_at=2.0,
    )
    assert decode_result(as_read_back(encode_result(result))) == result
    failed = FrameResult("8", error_code="inference_error", error_message="boom")
    assert decode_result(as_read_back(encode_result(failed))) == failed


def test_a_release_is_told_apart_from_a_frame() -> None:
    release = as_read_back(encode_release(StreamRelease("cam-2", "s1")))
    frame = as_read_back(
        encode_request(FrameRequest("1", "sd2net", np.zeros((2, 2), np.uint8), 0, 0), "r")
    )
    assert is_release(release) and not is_release(frame)
    assert decode_release(release) == StreamRelease("cam-2", "s1")


def test_shards_agree_between_processes_and_spread_streams() -> None:
    ids = [f"cam-{n}" for n in range(200)]
    here = [shard_of(stream_id, 16) for stream_id in ids]
    script = f"from service.transport.redis_wire import shard_of;print([shard_of(i, 16) for i in {ids!r}])"
    # Another interpreter, with another hash seed: Python's hash() would differ, CRC-32 does not.
    there = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    ).stdout
    assert str(here) == there.strip()
    assert set(here) == set(range(16))
