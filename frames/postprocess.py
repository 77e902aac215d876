"""Post-processing shared by evaluation, training and the service: logits -> targets.

Every place that turns model output into detections goes through this module, so that a target
counted by ``irtrack eval`` is exactly a target reported by the service:

- ``sigmoid`` turns logits into probabilities (threshold 0.5 on the probability = logit > 0);
- ``label_components`` labels 8-connected components of a binary map (OpenCV, fast), with labels
  renumbered into raster order of each component's first pixel: the order of
  ``skimage.measure.label`` and ``scipy.ndimage.label`` that BasicIRSTD's "first match in label
  order" relies on (OpenCV's block-based labelling does not guarantee that order by itself);
- ``find_components`` describes each component (centroid, box, area, peak probability);
  ``detect_in_logits`` gives the same components (and binary map) straight from logits, without
  the whole frame's sigmoid: the service's per-frame path;
  ``centroids_and_areas`` gives the same components' centroids and areas as arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_THRESHOLD = 0.5  # probability above which a pixel is on (logit > 0): the service's default
DEFAULT_MIN_AREA = 1  # smallest component, in pixels, reported as a target


@dataclass(frozen=True)
class Component:
    """One 8-connected component, in pixel coordinates of the frame."""

    centroid_x: float  # column; unweighted mean of the pixels' column indices
    centroid_y: float  # row; unweighted mean of the pixels' row indices
    x0: int  # inclusive bounding box
    y0: int
    x1: int
    y1: int
    area: int  # pixels
    score: float  # peak probability inside the component


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function in float32 that never overflows (exp of a non-positive number only)."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32, copy=False)


def label_components(binary: np.ndarray) -> tuple[int, np.ndarray]:
    """Label the 8-connected components of a 2-D binary map.

    Returns ``(count, labels)``: ``labels`` is an int32 array of the map's shape with 0 for
    background and 1..count for components, numbered in raster order of their first pixel.
    """
    labelled = _components_with_stats(binary)
    labels = np.zeros(binary.shape, dtype=np.int32)
    labels.flat[labelled.foreground] = labelled.foreground_labels
    return labelled.count, labels


def centroids_and_areas(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (N, 2) as (x = column, y = row) and areas (N,) of the 8-connected components.

    The same components, in the same label order, as ``find_components``, as arrays: metrics
    call it for every image and threshold, where building ``Component`` objects would dominate.
    """
    labelled = _components_with_stats(binary)
    return (
        labelled.centroids.astype(np.float64, copy=False),
        labelled.stats[:, cv2.CC_STAT_AREA].astype(np.int64),
    )


@dataclass(frozen=True)
class _Labelled:
    """Components of a binary map, labelled 1..count in raster order of their first pixel.

    Only the foreground is listed (few pixels in a small-target map): ``foreground`` holds the
    flat indices of its pixels in raster order, ``foreground_labels`` their labels; ``stats``
    (OpenCV's CC_STAT_LEFT, TOP, WIDTH, HEIGHT, AREA) and ``centroids`` (x, y) rows are indexed
    by label minus one, in the map's coordinates.
    """

    count: int
    foreground: np.ndarray
    foreground_labels: np.ndarray
    stats: np.ndarray
    centroids: np.ndarray


def _components_with_stats(binary: np.ndarray) -> _Labelled:
    """OpenCV labelling of the map's foreground bounding box, renumbered into raster order.

    Labelling the box rather than the whole map (and never building a whole-map label array)
    keeps a 640x512 frame with a few targets well under a millisecond.
    """
    if binary.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {binary.shape}")
    binary = np.asarray(binary, dtype=bool)
    rows = np.flatnonzero(binary.any(axis=1))
    if rows.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Labelled(
            0, empty, empty.astype(np.int32), np.zeros((0, 5), np.int32), np.zeros((0, 2))
        )
    columns = np.flatnonzero(binary.any(axis=0))
    top, left = int(rows[0]), int(columns[0])
    box = binary[top : int(rows[-1]) + 1, left : int(columns[-1]) + 1]
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(box, dtype=np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    count -= 1  # OpenCV counts the background as label 0
    box_flat = labels.ravel()
    in_box = np.flatnonzero(box_flat)  # raster order of the box = raster order of the map
    old_labels = box_flat[in_box]
    found, first_index = np.unique(old_labels, return_index=True)
    old_label_in_raster_order = found[np.argsort(first_index, kind="stable")]
    new_label = np.zeros(count + 1, dtype=np.int32)
    new_label[old_label_in_raster_order] = np.arange(1, count + 1, dtype=np.int32)
    box_rows, box_columns = np.divmod(in_box, box.shape[1])
    stats = stats[old_label_in_raster_order].copy()
    stats[:, cv2.CC_STAT_LEFT] += left
    stats[:, cv2.CC_STAT_TOP] += top
    return _Labelled(
        count=count,
        foreground=(box_rows + top) * binary.shape[1] + box_columns + left,
        foreground_labels=new_label[old_labels],
        stats=stats,
        centroids=centroids[old_label_in_raster_order] + np.array([left, top], dtype=np.float64),
    )


def find_components(prob: np.ndarray, threshold: float = 0.5, min_area: int = 1) -> list[Component]:
    """Components of ``prob > threshold`` (8-connected) with at least ``min_area`` pixels.

    ``prob`` is a 2-D probability map (a {0,1} mask works too). The list is in label order
    (see ``label_components``); ``score`` is the largest probability inside each component.
    """
    prob = np.asarray(prob)
    return _describe(prob > threshold, prob, sigmoid_peaks=False, min_area=min_area)


def detect_in_logits(
    logits: np.ndarray, threshold: float = 0.5, min_area: int = 1
) -> tuple[list[Component], np.ndarray]:
    """``find_components(sigmoid(logits), threshold, min_area)`` and its binary map
    ``sigmoid(logits) > threshold``, bit for bit, without the sigmoid of the whole frame.

    The service's per-frame path: a frame of few-pixel targets has almost no pixel near the
    threshold, so only pixels within ``CANDIDATE_MARGIN`` of its logit go through the (exact,
    float32) sigmoid; the sigmoid being monotonic, a component's peak probability is the
    sigmoid of its peak logit.
    """
    logits = np.asarray(logits, dtype=np.float32)
    threshold_logit = math.log(threshold) - math.log1p(-threshold)
    candidates = np.flatnonzero(logits > threshold_logit - CANDIDATE_MARGIN)
    binary = np.zeros(logits.shape, dtype=bool)
    binary.flat[candidates] = sigmoid(logits.flat[candidates]) > threshold
    return _describe(binary, logits, sigmoid_peaks=True, min_area=min_area), binary


# Far wider than float32 sigmoid's rounding error in logit space (~1e-7 relative), far narrower
# than anything a model outputs between background and target.
CANDIDATE_MARGIN = 1e-2


def _describe(
    binary: np.ndarray, values: np.ndarray, sigmoid_peaks: bool, min_area: int
) -> list[Component]:
    """Components of ``binary`` with the peak of ``values`` inside each (through the sigmoid
    when ``values`` are logits)."""
    labelled = _components_with_stats(binary)
    count, stats, centroids = labelled.count, labelled.stats, labelled.centroids
    if count == 0:
        return []
    peak = np.full(count, -np.inf, dtype=np.float64)
    np.maximum.at(
        peak,
        labelled.foreground_labels - 1,
        values.flat[labelled.foreground].astype(np.float64),
    )
    if sigmoid_peaks:
        peak = sigmoid(peak.astype(np.float32)).astype(np.float64)
    components = []
    for k in range(count):
        left, top, width, height, area = (int(v) for v in stats[k])
        if area < min_area:
            continue
        components.append(
            Component(
                centroid_x=float(centroids[k, 0]),
                centroid_y=float(centroids[k, 1]),
                x0=left,
                y0=top,
                x1=left + width - 1,
                y1=top + height - 1,
                area=area,
                score=float(peak[k]),
            )
        )
    return components
