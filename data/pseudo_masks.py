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

from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from data.video import Box, LabelledClip

BOX_MARGIN_PX = 2
RING_INNER_PX = 4
RING_OUTER_PX = 10
NOISE_SIGMAS = 3.0
PEAK_FRACTION = 0.35
MIN_CONTRAST_SIGMAS = 5.0
MIN_CONTRAST = 8.0  # grey levels of an 8-bit frame


def box_window(box: Box, margin: float, shape: tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns of a frame of ``shape`` that ``box`` grown by ``margin`` px covers."""
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
    inner[box_window(box, RING_INNER_PX, shape)] = True
    ring = np.zeros(shape, bool)
    ring[box_window(box, RING_OUTER_PX, shape)] = True
    ring &= ~inner
    if ring.sum() < 8:
        return None
    level = float(np.median(image[ring]))
    noise = max(1.4826 * float(np.median(np.abs(image[ring] - level))), 0.5)
    rows, columns = box_window(box, BOX_MARGIN_PX, shape)
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


def examples_png(clips: list[LabelledClip], path: Path, per_row: int = 6, tile: int = 96) -> int:
    """A sheet of examples: per clip, the middle labelled frame around its box, as it is and
    with its pseudo-mask in red (or "no mask"). Returns the number of examples drawn."""
    tiles = []
    for clip in clips:
        labelled = [i for i, box in enumerate(clip.boxes) if box is not None]
        if not labelled:
            continue
        index = labelled[len(labelled) // 2]
        frame = next(islice(clip.frames(), index, None))
        box = clip.boxes[index]
        assert box is not None
        mask = pseudo_mask(frame, box)
        half = max(24, int(1.5 * max(box.w, box.h)))
        row, column = int(box.y + box.h / 2), int(box.x + box.w / 2)
        window = (
            slice(max(row - half, 0), row + half),
            slice(max(column - half, 0), column + half),
        )
        crop = cv2.resize(frame[window], (tile, tile), interpolation=cv2.INTER_NEAREST)
        plain = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
        marked = plain.copy()
        if mask is not None:
            on = cv2.resize(
                mask[window].astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST
            )
            marked[on > 0] = (0, 0, 255)
        label = f"{clip.object_class}{'' if mask is not None else ': no mask'}"
        pair = np.hstack([plain, marked])
        cv2.putText(pair, label, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 0), 1)
        tiles.append(pair)
    blank = np.zeros_like(tiles[0])
    rows = [
        np.hstack(tiles[i : i + per_row] + [blank] * (per_row - len(tiles[i : i + per_row])))
        for i in range(0, len(tiles), per_row)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.vstack(rows)):
        raise OSError(f"cannot write {path}")
    return len(tiles)
