"""Input normalisation: 8-bit scaling, 16-bit gain control, float checks, gray conversion."""

import numpy as np
import pytest

from frames.preprocess import (
    AGC_HIGH_PERCENTILE,
    AGC_LOW_PERCENTILE,
    normalize_frame,
    to_gray,
)


def test_uint8_is_divided_by_255() -> None:
    frame = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    out = normalize_frame(frame)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, frame.astype(np.float32) / 255.0)


def test_uint16_percentile_stretch_maps_the_robust_range_to_0_1() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(1000, 5000, size=(64, 80)).astype(np.uint16)
    frame[10, 10] = 65535  # a dead-hot pixel must not squash the background
    low, high = np.percentile(frame, [AGC_LOW_PERCENTILE, AGC_HIGH_PERCENTILE])
    out = normalize_frame(frame)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    middle = (frame > low) & (frame < high)
    np.testing.assert_allclose(out[middle], (frame[middle] - low) / (high - low), rtol=1e-5)
    assert np.median(out) == pytest.approx(0.5, abs=0.05)


def test_uint16_small_hot_target_on_flat_background_stays_visible() -> None:
    frame = np.full((100, 100), 3000, dtype=np.uint16)
    frame[50:52, 50:52] = 3400  # 4 px = 0.04% of the frame, above the 99.9th percentile's reach
    out = normalize_frame(frame)
    assert np.all(out[50:52, 50:52] == 1.0)
    assert np.all(out[:50] == 0.0)


def test_flat_uint16_frame_gives_zeros_without_nan() -> None:
    out = normalize_frame(np.full((8, 8), 1234, dtype=np.uint16))
    assert out.dtype == np.float32 and not np.isnan(out).any() and np.all(out == 0.0)


def test_float_frames_are_validated() -> None:
    good = np.array([[0.0, 0.25, 1.0]], dtype=np.float64)
    out = normalize_frame(good)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, good.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        normalize_frame(np.array([[0.0, 1.5]], dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        normalize_frame(np.array([[np.nan]], dtype=np.float32))


def test_unsupported_dtype_and_shape_are_rejected() -> None:
    with pytest.raises(TypeError, match="int32"):
        normalize_frame(np.zeros((4, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="to_gray"):
        normalize_frame(np.zeros((4, 4, 3), dtype=np.uint8))


def test_to_gray_uses_bt601_luma_in_the_given_channel_order() -> None:
    blue, green, red = 10, 200, 90
    bgr = np.zeros((2, 3, 3), dtype=np.uint8)
    bgr[...] = (blue, green, red)
    expected = round(0.299 * red + 0.587 * green + 0.114 * blue)
    assert np.all(to_gray(bgr) == expected)
    assert np.all(to_gray(bgr[:, :, ::-1], channel_order="rgb") == expected)
    bgra = np.concatenate([bgr, np.zeros((2, 3, 1), dtype=np.uint8)], axis=2)
    assert np.all(to_gray(bgra) == expected)  # alpha ignored


def test_to_gray_passes_single_channel_through() -> None:
    gray = np.arange(12, dtype=np.uint16).reshape(3, 4)
    assert to_gray(gray) is gray
    np.testing.assert_array_equal(to_gray(gray[:, :, None]), gray)
    with pytest.raises(ValueError, match="channel"):
        to_gray(np.zeros((3, 4, 2), dtype=np.uint8))
