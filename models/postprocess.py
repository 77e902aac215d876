"""Post-processing shared by evaluation, training and the service: logits -> targets.

Every place that turns model output into detections goes through this module, so that a target
counted by ``irtrack eval`` is exactly a target reported by the service:

- ``sigmoid`` turns logits into probabilities (threshold 0.5 on the probability = logit > 0);
- ``label_components`` labels 8-connected components of a binary map (OpenCV, fast), with labels
  renumbered into raster order of each component's first pixel: the order of
  ``skimage.measure.label`` and ``scipy.ndimage.label`` that BasicIRSTD's "first match in label
  order" relies on (OpenCV's block-based labelling does not guarantee that order by itself);
- ``find_components`` describes each component (centroid, box, area, peak probability);
  ``centroids_and_areas`` gives the same components' centroids and areas as arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


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
    count, labels, _, _ = _components_with_stats(binary)
    return count, labels


def centroids_and_areas(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (N, 2) as (x = column, y = row) and areas (N,) of the 8-connected components.

    The same components, in the same label order, as ``find_components``, as arrays: metrics
    call it for every image and threshold, where building ``Component`` objects would dominate.
    """
    _, _, stats, centroids = _components_with_stats(binary)
    return centroids.astype(np.float64, copy=False), stats[:, cv2.CC_STAT_AREA].astype(np.int64)


def _components_with_stats(
    binary: np.ndarray,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV labelling renumbered into raster order: (count, labels, stats, centroids).

    ``stats`` and ``centroids`` rows are indexed by the new label minus one (background dropped);
    ``stats`` columns are OpenCV's CC_STAT_LEFT, TOP, WIDTH, HEIGHT, AREA.
    """
    if binary.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {binary.shape}")
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(binary, dtype=np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    count -= 1  # OpenCV counts the background as label 0
    if count <= 1:
        return count, labels, stats[1:], centroids[1:]
    flat = labels.ravel()
    foreground = np.flatnonzero(flat)
    found, first_index = np.unique(flat[foreground], return_index=True)
    old_label_in_raster_order = found[np.argsort(first_index, kind="stable")]
    new_label = np.zeros(count + 1, dtype=np.int32)
    new_label[old_label_in_raster_order] = np.arange(1, count + 1, dtype=np.int32)
    return (
        count,
        new_label[labels],
        stats[old_label_in_raster_order],
        centroids[old_label_in_raster_order],
    )


def find_components(prob: np.ndarray, threshold: float = 0.5, min_area: int = 1) -> list[Component]:
    """Components of ``prob > threshold`` (8-connected) with at least ``min_area`` pixels.

    ``prob`` is a 2-D probability map (a {0,1} mask works too). The list is in label order
    (see ``label_components``); ``score`` is the largest probability inside each component.
    """
    prob = np.asarray(prob)
    count, labels, stats, centroids = _components_with_stats(prob > threshold)
    if count == 0:
        return []
    foreground = labels > 0
    peak = np.full(count, -np.inf, dtype=np.float64)
    np.maximum.at(peak, labels[foreground] - 1, prob[foreground].astype(np.float64))
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
