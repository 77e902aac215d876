"""The service's small mechanisms on their own: codecs, batcher, settings, frame accounting."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from bench.hostile_frames import (
    jpeg_with_restart_marker_after_soi,
    png_claiming,
    tiff_with_repeated_size_tags,
)
from bench.process_memory import MiB, peak_rss_growth
from service.codecs import FrameLimits, RawLayout, decode_frame, decode_rle, encode_rle
from service.errors import BadFrame, Overloaded, TooLarge, UnsupportedFormat
from service.metrics import FrameCounters, ServiceMetrics
from service.settings import Settings
from service.transport.messages import FrameRequest
from service.worker.batcher import DRAIN_ALL, Batcher
from service.worker.worker import _rounds_without_repeated_streams

LIMITS = FrameLimits(max_body_bytes=1 << 20, max_frame_pixels=512 * 512)


def encoded(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


# --- codecs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".png", ".tiff", ".jpg"])
def test_encoded_gray_frames_decode_to_their_pixels(ext):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (37, 53), dtype=np.uint8)
    frame = decode_frame(encoded(image, ext), LIMITS)
    assert frame.shape == (37, 53) and frame.dtype == np.uint8
    if ext != ".jpg":  # lossless formats give the exact pixels back
        np.testing.assert_array_equal(frame, image)


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_sixteen_bit_images_stay_sixteen_bit(ext):
    image = np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50
    frame = decode_frame(encoded(image, ext), LIMITS)
    assert frame.dtype == np.uint16
    np.testing.assert_array_equal(frame, image)


def test_colour_images_become_gray():
    gray = np.random.default_rng(1).integers(0, 255, (20, 30), dtype=np.uint8)
    frame = decode_frame(encoded(np.dstack([gray, gray, gray]), ".png"), LIMITS)
    np.testing.assert_array_equal(frame, gray)


def test_raw_frames_are_little_endian_row_major():
    image = np.arange(6 * 4, dtype=np.uint16).reshape(4, 6) * 1000
    frame = decode_frame(image.astype("<u2").tobytes(), LIMITS, RawLayout(6, 4, "uint16"))
    np.testing.assert_array_equal(frame, image)


@pytest.mark.parametrize(
    ("body", "raw", "error", "code"),
    [
        (b"", None, BadFrame, "empty_body"),
        (b"not an image at all", None, UnsupportedFormat, "unsupported_format"),
        (b"\x00" * 99, RawLayout(10, 10, "uint8"), BadFrame, "raw_size_mismatch"),
        (b"\x00" * 200, RawLayout(10, 10, "uint8"), BadFrame, "raw_size_mismatch"),
        (b"\x00" * 16, RawLayout(100_000, 100_000), TooLarge, "frame_too_large"),
        (png_claiming(100_000, 100_000), None, TooLarge, "frame_too_large"),
        (png_claiming(0, 10), None, BadFrame, "undecodable"),
        (b"\x00" * 16, RawLayout(0, 16), BadFrame, "bad_dimensions"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", None, BadFrame, "undecodable"),
    ],
)
def test_bad_frames_are_rejected_with_their_reason(body, raw, error, code):
    with pytest.raises(error) as caught:
        decode_frame(body, LIMITS, raw)
    assert caught.value.code == code


@pytest.mark.parametrize(
    "bomb",
    [tiff_with_repeated_size_tags, jpeg_with_restart_marker_after_soi],
    ids=["tiff-size-tags-twice", "jpeg-rst0-after-soi"],
)
def test_a_bomb_that_misleads_a_header_parser_is_refused_before_it_is_decoded(bomb):
    """An 8192x8192 image in a 65-70 KB body, shaped so that a parser other than the decoder's
    own reads 16x16: refused for its real size, without the pixels ever being allocated."""
    body = bomb(real=8192)
    with peak_rss_growth() as memory, pytest.raises(TooLarge) as caught:
        decode_frame(body, FrameLimits(max_body_bytes=1 << 20, max_frame_pixels=2048 * 2048))
    assert caught.value.code == "frame_too_large" and "8192x8192" in caught.value.message
    assert memory["peak"] - memory["before"] < 16 * MiB  # the image would take 64 MiB


def test_truncated_png_is_undecodable():
    body = encoded(np.full((64, 64), 7, np.uint8), ".png")
    with pytest.raises(BadFrame):
        decode_frame(body[: len(body) // 2], LIMITS)


def test_oversized_body_is_rejected_before_decoding():
    with pytest.raises(TooLarge):
        decode_frame(b"\x00" * (LIMITS.max_body_bytes + 1), LIMITS)


def test_rle_is_column_major_and_starts_with_zeros():
    mask = np.array([[0, 1, 1], [0, 1, 0]], dtype=bool)  # column-major: 0 0 1 1 1 0
    assert encode_rle(mask) == {"size": [2, 3], "counts": [2, 3, 1]}
    assert encode_rle(np.ones((2, 2), bool))["counts"] == [0, 4]
    assert encode_rle(np.zeros((3, 2), bool))["counts"] == [6]


def test_rle_round_trips():
    mask = np.random.default_rng(2).random((31, 17)) > 0.7
    np.testing.assert_array_equal(decode_rle(encode_rle(mask)), mask)


# --- batcher ---------------------------------------------------------------------------------
def test_a_full_group_is_due_at_once_and_capped_at_max_batch():
    batcher: Batcher[int] = Batcher(max_batch=3, max_wait_s=10.0)
    for item in range(4):
        batcher.add("a", item, now=0.0)
    assert batcher.seconds_until_due(0.0) == 0.0
    assert batcher.next_batch(0.0) == ("a", [0, 1, 2])
    assert batcher.next_batch(0.0) is None  # one left, not full, not old enough
    assert batcher.seconds_until_due(4.0) == pytest.approx(6.0)
    assert batcher.next_batch(10.0) == ("a", [3])
    assert len(batcher) == 0 and batcher.seconds_until_due(10.0) is None


def test_groups_never_mix_keys_and_the_oldest_due_group_goes_first():
    batcher: Batcher[str] = Batcher(max_batch=8, max_wait_s=1.0)
    batcher.add(("sd2net", 64, 64), "late", now=0.5)
    batcher.add(("sd2net", 64, 128), "early", now=0.0)
    batcher.add(("sd2net", 64, 64), "late2", now=0.6)
    assert batcher.next_batch(1.7) == (("sd2net", 64, 128), ["early"])
    assert batcher.next_batch(1.7) == (("sd2net", 64, 64), ["late", "late2"])


def test_drain_makes_every_group_due():
    batcher: Batcher[int] = Batcher(max_batch=8, max_wait_s=100.0)
    batcher.add("a", 1, now=0.0)
    batcher.add("b", 2, now=0.0)
    drained = [batcher.next_batch(DRAIN_ALL), batcher.next_batch(DRAIN_ALL)]
    assert sorted(key for key, _ in drained) == ["a", "b"]


def test_a_batch_limit_makes_a_smaller_batch_full_and_due():
    """What fits the memory budget: a key limited to 2 is due with 2 items and gives 2; the
    limit never goes below one item or above max_batch."""
    limits = {"large": 2, "huge": 0, "small": 100}
    batcher: Batcher[int] = Batcher(max_batch=8, max_wait_s=100.0, batch_limit=limits.__getitem__)
    for item in range(3):
        batcher.add("large", item, now=0.0)
    assert batcher.seconds_until_due(0.0) == 0.0
    assert batcher.next_batch(0.0) == ("large", [0, 1])
    batcher.add("huge", 9, now=0.0)
    assert batcher.full("huge") == 1 and batcher.full("small") == 8
    assert batcher.next_batch(0.0) == ("huge", [9])


def test_a_stream_never_appears_twice_in_one_model_call():
    def request(stream: str | None, n: int) -> FrameRequest:
        frame = np.zeros((4, 4), np.uint8)
        return FrameRequest(f"{stream}{n}", "sd2net", frame, 0.0, 0.0, stream_id=stream)

    batch = [request("a", 1), request("b", 1), request("a", 2), request(None, 1), request("a", 3)]
    rounds = _rounds_without_repeated_streams(batch)
    assert [[r.request_id for r in round_] for round_ in rounds] == [
        ["a1", "b1", "None1"],
        ["a2"],
        ["a3"],
    ]


# --- settings ----------------------------------------------------------------------------------
def test_settings_read_comma_separated_lists_from_the_environment(monkeypatch):
    monkeypatch.setenv("IRTRACK_API_KEYS", "k1, k2")
    monkeypatch.setenv("IRTRACK_MODELS", "sd2net,std2net")
    monkeypatch.setenv("IRTRACK_WARMUP_SIZES", "640x512")
    settings = Settings()
    assert settings.api_keys == ["k1", "k2"]
    assert settings.models == ["sd2net", "std2net"]
    assert settings.warmup_shapes() == [(512, 640)]


@pytest.mark.parametrize(
    "bad",
    [
        {"models": "sd2net,yolo"},
        {"models": "std2net", "default_model": "sd2net"},
        {"warmup_sizes": "640by512"},
        {"max_batch": 0},
    ],
)
def test_invalid_settings_fail_at_start_up(bad):
    with pytest.raises(ValidationError):
        Settings(**bad)


# --- accounting --------------------------------------------------------------------------------
def test_a_ticket_settles_exactly_once_and_exceptions_settle_it():
    metrics = ServiceMetrics()
    counters = FrameCounters()
    with metrics.ticket() as ticket:
        ticket.attach_stream(counters)
        ticket.processed()
        ticket.failed("late")  # ignored: already settled
    with pytest.raises(Overloaded), metrics.ticket():
        raise Overloaded("full")
    with pytest.raises(BadFrame), metrics.ticket():
        raise BadFrame("bad")
    handed = metrics.ticket()
    handed.handed_over = True
    with pytest.raises(RuntimeError), handed:
        raise RuntimeError("the engine settles this one")
    handed.processed()

    def total(name: str) -> float:
        return sum(
            s.value
            for metric in metrics.registry.collect()
            if metric.name == f"irtrack_frames_{name}"
            for s in metric.samples
            if s.name.endswith("_total")
        )

    assert total("received") == 4
    assert total("processed") == 2 and total("dropped") == 1 and total("failed") == 1
    assert (counters.received, counters.processed, counters.failed) == (1, 1, 0)


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_entry_point_makes_openmp_threads_wait_passively_unless_told(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    # the entry point imports the service package first; it must set the policy before torch loads
    probe = "import sys, os, service; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    shown = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert shown == [expected, "False"]
