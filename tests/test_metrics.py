"""Metrics on hand-built masks; every expected value is counted by hand in the test."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from evaluation.metrics import FA_UNIT, ROC_FA_LIMIT, SegmentationMetrics, plot_roc, roc_area


def _two_targets_one_hit_one_false_alarm() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((10, 10), dtype=bool)
    mask[2, 2] = True  # target A, centroid (2, 2)
    mask[6:8, 6:8] = True  # target B, centroid (6.5, 6.5), 4 px
    prob = np.zeros((10, 10), dtype=np.float32)
    prob[2, 2:4] = 0.9  # hits A: centroid (x 2.5, y 2), 0.5 px away
    prob[8:10, 0] = 0.8  # false alarm, 3 px, far from B: B is missed
    prob[9, 1] = 0.8
    return prob, mask


def test_one_hit_one_miss_and_a_false_alarm_blob() -> None:
    prob, mask = _two_targets_one_hit_one_false_alarm()
    metrics = SegmentationMetrics()
    metrics.update(prob, mask)
    result = metrics.compute()
    # |P & G| = 1 (pixel (2, 2)); |P | G| = 5 predicted + 5 target - 1 = 9.
    assert result["mIoU"] == pytest.approx(100 * 1 / 9)
    assert result["nIoU"] == pytest.approx(100 * 1 / 9)
    assert result["Pd"] == pytest.approx(50.0)
    assert result["Fa"] == pytest.approx(3 / 100 / FA_UNIT)
    assert result["fa_per_frame"] == pytest.approx(1.0)
    assert (result["images"], result["targets"], result["detected"]) == (1, 2, 1)
    assert (result["false_alarm_pixels"], result["false_alarm_objects"]) == (3, 1)


def test_image_without_targets_is_excluded_from_niou_but_counts_in_fa_and_miou() -> None:
    prob, mask = _two_targets_one_hit_one_false_alarm()
    empty_prob = np.zeros((10, 10), dtype=np.float32)
    empty_prob[0, 8:10] = 0.7  # 2 false-alarm pixels on a target-free frame
    metrics = SegmentationMetrics()
    metrics.update(prob, mask)
    metrics.update(empty_prob, np.zeros((10, 10), dtype=np.uint8))
    result = metrics.compute()
    assert result["mIoU"] == pytest.approx(100 * 1 / (9 + 2))
    assert result["nIoU"] == pytest.approx(100 * 1 / 9)  # the empty frame's IoU of 0 is not in it
    assert (result["niou_images"], result["niou_excluded_images"]) == (1, 1)
    assert result["Fa"] == pytest.approx((3 + 2) / 200 / FA_UNIT)
    assert result["fa_per_frame"] == pytest.approx(2 / 2)
    assert result["Pd"] == pytest.approx(50.0)


def _single_target_with_prediction_at(prediction_pixels: list[tuple[int, int]]) -> float:
    mask = np.zeros((20, 20), dtype=bool)
    mask[5, 5] = True
    prob = np.zeros((20, 20), dtype=np.float32)
    for row, col in prediction_pixels:
        prob[row, col] = 1.0
    metrics = SegmentationMetrics()
    metrics.update(prob, mask)
    return float(metrics.compute()["Pd"])


def test_a_component_exactly_3_px_away_is_not_a_hit() -> None:
    assert _single_target_with_prediction_at([(8, 5)]) == 0.0


def test_a_component_2_9_px_away_is_a_hit() -> None:
    # Nine pixels in row 7 (cols 3..11) and one in row 8: centroid (x 7, y 7.1);
    # the target is at (5, 5): distance = hypot(2, 2.1) = 2.9.
    pixels = [(7, col) for col in range(3, 12)] + [(8, 7)]
    assert np.hypot(2.0, 2.1) == pytest.approx(2.9)
    assert _single_target_with_prediction_at(pixels) == 100.0


def test_greedy_matching_in_label_order_uses_each_prediction_once() -> None:
    mask = np.zeros((12, 12), dtype=bool)
    mask[4, 2] = True  # first target in raster order
    mask[4, 6] = True  # second target, 4 px to the right
    prob = np.zeros((12, 12), dtype=np.float32)
    prob[4, 4] = 0.9  # 2 px from both targets: only the first target gets it
    metrics = SegmentationMetrics()
    metrics.update(prob, mask)
    result = metrics.compute()
    assert (result["targets"], result["detected"], result["false_alarm_objects"]) == (2, 1, 0)


def test_fa_counts_real_unmatched_pixels_not_components_of_the_same_area() -> None:
    # BasicIRSTD drops every unmatched component whose area equals a matched one's; we do not.
    mask = np.zeros((12, 12), dtype=bool)
    mask[2, 2] = True
    prob = np.zeros((12, 12), dtype=np.float32)
    prob[2, 2:4] = 0.9  # matched, 2 px
    prob[9, 8:10] = 0.9  # unmatched, also 2 px
    metrics = SegmentationMetrics()
    metrics.update(prob, mask)
    result = metrics.compute()
    assert (result["false_alarm_pixels"], result["false_alarm_objects"]) == (2, 1)


def test_roc_sweep_counts_per_threshold() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[2, 2] = True
    prob = np.zeros((10, 10), dtype=np.float32)
    prob[2, 2] = 0.9  # the target, confident
    prob[7:9, 7] = 0.3  # a 2-px false alarm, unsure
    metrics = SegmentationMetrics(roc_thresholds=(0.95, 0.2, 0.5))
    metrics.update(prob, mask)
    roc = metrics.compute()["roc"]
    assert roc["thresholds"] == [0.2, 0.5, 0.95]
    assert roc["pd"] == [100.0, 100.0, 0.0]
    assert roc["fa"] == pytest.approx([2 / 100 / FA_UNIT, 0.0, 0.0])


def test_roc_area_by_hand() -> None:
    limit = ROC_FA_LIMIT / FA_UNIT
    assert limit == 100.0
    # Points (Fa, Pd): origin, (0, .5), (50, 1), (200, 1) cut at 100:
    # area = 50 * (0.5 + 1) / 2 + 50 * 1 = 87.5, normalised by 100.
    assert roc_area([200.0, 0.0, 50.0], [100.0, 50.0, 100.0]) == pytest.approx(0.875)
    # Curve ending before the limit: its last Pd is carried to the limit.
    assert roc_area([0.0], [40.0]) == pytest.approx(0.4)


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be equal"):
        SegmentationMetrics().update(np.zeros((4, 4)), np.zeros((4, 5), dtype=bool))


def test_roc_plot_is_a_png(tmp_path: Path) -> None:
    prob, mask = _two_targets_one_hit_one_false_alarm()
    metrics = SegmentationMetrics()
    metrics.update(prob, mask)
    path = tmp_path / "roc.png"
    plot_roc(metrics.compute(), path, title="hand-built")
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
