"""Post-processing: sigmoid, 8-connected labelling in raster order, component descriptions."""

import numpy as np
import pytest

from frames.postprocess import (
    Component,
    centroids_and_areas,
    find_components,
    label_components,
    sigmoid,
)


def test_sigmoid_is_finite_float32_and_matches_the_formula() -> None:
    logits = np.array([-1000.0, -20.0, -1.0, 0.0, 1.0, 20.0, 1000.0], dtype=np.float64)
    with np.errstate(over="raise"):
        prob = sigmoid(logits)
    assert prob.dtype == np.float32
    assert np.all(np.isfinite(prob))
    expected = 1.0 / (1.0 + np.exp(-logits[1:-1]))
    np.testing.assert_allclose(prob[1:-1], expected, rtol=1e-6)
    assert prob[0] == 0.0 and prob[-1] == 1.0
    assert prob[3] == 0.5  # threshold 0.5 on the probability is logit > 0


def test_diagonal_pixels_are_one_component_with_8_connectivity() -> None:
    binary = np.zeros((4, 4), dtype=bool)
    binary[0, 0] = binary[1, 1] = binary[2, 2] = True
    count, labels = label_components(binary)
    assert count == 1
    assert set(np.unique(labels[binary])) == {1}


def test_labels_follow_raster_order_of_first_pixel() -> None:
    # OpenCV's block-based scan would see (1, 0) before (0, 5); a raster scan sees (0, 5) first.
    binary = np.zeros((6, 8), dtype=bool)
    binary[0, 5:7] = True
    binary[1, 0] = True
    binary[4, 2:5] = True
    count, labels = label_components(binary)
    assert count == 3
    assert labels[0, 5] == 1 and labels[1, 0] == 2 and labels[4, 2] == 3
    assert labels.dtype == np.int32 and np.all(labels[~binary] == 0)


def test_empty_map_has_no_components() -> None:
    assert label_components(np.zeros((5, 5), dtype=bool))[0] == 0
    assert find_components(np.zeros((5, 5), dtype=np.float32)) == []


def test_component_centroid_box_area_and_peak_score() -> None:
    prob = np.zeros((8, 10), dtype=np.float32)
    # An L shape: pixels (row, col) = (2,3), (3,3), (4,3), (4,4); centroid = unweighted mean.
    prob[2:5, 3] = [0.6, 0.9, 0.7]
    prob[4, 4] = 0.55
    prob[6, 8] = 0.4  # below threshold: not a component
    (component,) = find_components(prob, threshold=0.5)
    assert component == Component(
        centroid_x=(3 + 3 + 3 + 4) / 4,
        centroid_y=(2 + 3 + 4 + 4) / 4,
        x0=3,
        y0=2,
        x1=4,
        y1=4,
        area=4,
        score=component.score,
    )
    assert component.score == pytest.approx(0.9)


def test_threshold_is_strict_and_min_area_drops_small_components() -> None:
    prob = np.zeros((6, 6), dtype=np.float32)
    prob[0, 0] = 0.5  # exactly at threshold: excluded (strict >)
    prob[3, 3] = 0.8
    prob[3:5, 5] = 0.8
    assert [c.area for c in find_components(prob, threshold=0.5)] == [1, 2]
    assert [c.area for c in find_components(prob, threshold=0.5, min_area=2)] == [2]


def test_mask_input_gives_the_same_components_as_probabilities() -> None:
    mask = np.zeros((5, 5), dtype=np.uint8)
    mask[1:3, 1:3] = 255
    (component,) = find_components(mask.astype(np.float32) / 255.0)
    assert (component.centroid_x, component.centroid_y, component.area) == (1.5, 1.5, 4)
    assert component.score == 1.0


def test_rejects_non_2d_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        find_components(np.zeros((1, 4, 4), dtype=np.float32))


def test_centroid_and_area_arrays_describe_the_same_components_in_the_same_order() -> None:
    rng = np.random.default_rng(1)
    prob = rng.random((40, 50)).astype(np.float32)
    components = find_components(prob, threshold=0.8)
    centroids, areas = centroids_and_areas(prob > 0.8)
    assert len(components) > 10
    np.testing.assert_allclose(centroids, [(c.centroid_x, c.centroid_y) for c in components])
    np.testing.assert_array_equal(areas, [c.area for c in components])
