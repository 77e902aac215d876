"""Pixel masks from boxes: the labelled drone-ir clips have a box per frame, the detectors learn
from masks. A box's pseudo-mask is the connected set of pixels inside it that stand out from the
local background, on the target's side (hot or cold):

1. the background is the ring between the box grown by ``RING_INNER_PX`` and by
   ``RING_OUTER_PX``: its median is the level, 1.4826 x its median absolute deviation the noise;
2. the target's polarity is the side (above or below the level) of the box's larger deviation;
3. a pixel of the box grown by ``BOX_MARGIN_PX`` is on when its deviation on that side exceeds
   ``max(NOISE_SIGMAS x noise, PEAK_FRACTION x the peak deviation)``;
4. the mask is the 8-connected component of on-pixels that holds the peak.

A frame whose peak deviation is below ``MIN_CONTRAST_SIGMAS`` x noise or ``MIN_CONTRAST`` grey
levels has no trustworthy mask (``None``): training skips it rather than teach "no target here".
"""

from __future__ import annotations

import cv2
import numpy as np

from data.video import Box

BOX_MARGIN_PX = 2
RING_INNER_PX = 4
RING_OUTER_PX = 10
NOISE_SIGMAS = 3.0
PEAK_FRACTION = 0.35
MIN_CONTRAST_SIGMAS = 5.0
MIN_CONTRAST = 8.0  # grey levels of an 8-bit frame


def _window(box: Box, margin: float, shape: tuple[int, int]) -> tuple[slice, slice]:
    height, width = shape
    top = max(int(np.floor(box.y - margin)), 0)
    left = max(int(np.floor(box.x - margin)), 0)
    bottom = min(int(np.ceil(box.y + box.h + margin)) + 1, height)
    right = min(int(np.ceil(box.x + box.w + margin)) + 1, width)
    return slice(top, bottom), slice(left, right)


def pseudo_mask(frame: np.ndarray, box: Box) -> np.ndarray | None:
    """A bool mask of ``frame``'s shape with the target inside ``box``, or None (see above)."""
    image = frame.astype(np.float32)
    shape = (image.shape[0], image.shape[1])
    inner = np.zeros(shape, bool)
    inner[_window(box, RING_INNER_PX, shape)] = True
    ring = np.zeros(shape, bool)
    ring[_window(box, RING_OUTER_PX, shape)] = True
    ring &= ~inner
    if ring.sum() < 8:
        return None
    level = float(np.median(image[ring]))
    noise = max(1.4826 * float(np.median(np.abs(image[ring] - level))), 0.5)
    rows, columns = _window(box, BOX_MARGIN_PX, shape)
    deviation = image[rows, columns] - level
    if deviation.size == 0:
        return None
    polarity = 1.0 if deviation.max() >= -deviation.min() else -1.0
    deviation *= polarity
    peak = float(deviation.max())
    if peak < max(MIN_CONTRAST_SIGMAS * noise, MIN_CONTRAST):
        return None
    on = (deviation > max(NOISE_SIGMAS * noise, PEAK_FRACTION * peak)).astype(np.uint8)
    _, labels = cv2.connectedComponents(on, connectivity=8)
    peak_row, peak_column = np.unravel_index(int(np.argmax(deviation)), deviation.shape)
    mask = np.zeros(shape, bool)
    mask[rows, columns] = labels == labels[peak_row, peak_column]
    return mask
