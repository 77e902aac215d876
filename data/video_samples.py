"""Training and validation samples from the labelled drone-ir clips, with pseudo-masks.

Every ``stride``-th frame of a split's clips becomes a sample: single frames for the single-frame
detectors, windows of the frame and the four before it (oldest first; at a clip's start the first
frame is repeated, as a stream starts) for STD2Net. A frame with a box gets the box's pseudo-mask
(:mod:`data.pseudo_masks`) and is left out when the box holds no trustworthy mask; a frame without
a box is a negative (an empty mask): the sky, clouds and ground of real cameras, with nothing to
report. Frames outside the labelled object are never marked, so every other bright spot a frame
holds is a negative too. With ``unlabelled_box_rest``, the pixels of a box (grown by
``BOX_MARGIN_PX``) outside its pseudo-mask are ``UNLABELLED`` rather than background: the
pseudo-mask keeps a target's clearly bright core, and its dim fringe is left out of the loss
instead of taught as "no target".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.datasets import UNLABELLED
from data.paths import DATA_DIR
from data.pseudo_masks import BOX_MARGIN_PX, box_window, pseudo_mask
from data.video import Box, LabelledClip, list_clips, load_clip

VIDEO_STRIDE = 15  # every 15th frame, 2 a second: neighbouring frames teach little more

Sample = tuple[
    str, np.ndarray, np.ndarray
]  # (name, frames, mask) for data.datasets.InMemorySamples


def box_labels(mask: np.ndarray, box: Box) -> np.ndarray:
    """int8 labels of a frame: 1 on ``mask`` (the box's pseudo-mask), ``UNLABELLED`` on the rest
    of the box grown by ``BOX_MARGIN_PX``, 0 elsewhere."""
    shape = (mask.shape[0], mask.shape[1])
    labels = np.zeros(shape, np.int8)
    labels[box_window(box, BOX_MARGIN_PX, shape)] = UNLABELLED
    labels[mask] = 1
    return labels


def clip_samples(
    clip: LabelledClip, stride: int, window: int | None, unlabelled_box_rest: bool = False
) -> list[Sample]:
    frames = np.stack(list(clip.frames()))
    samples = []
    for index in range(0, len(frames), stride):
        box = clip.boxes[index]
        mask = np.zeros(frames.shape[1:], bool) if box is None else pseudo_mask(frames[index], box)
        if mask is None:
            continue
        if unlabelled_box_rest and box is not None:
            mask = box_labels(mask, box)
        if window is None:
            image = frames[index].copy()  # not a view: the clip's other frames can go
        else:
            first = index - window + 1
            image = (
                frames[first : index + 1]
                if first >= 0
                else np.concatenate([np.repeat(frames[:1], -first, axis=0), frames[: index + 1]])
            )
        samples.append((f"{clip.name}-{index:04d}", image, mask))
    return samples


def video_samples(
    split: str,
    window: int | None = None,
    stride: int = VIDEO_STRIDE,
    data_dir: Path = DATA_DIR,
    limit: int | None = None,
    unlabelled_box_rest: bool = False,
) -> list[Sample]:
    """Samples of every ``stride``-th frame of the split's clips (the first ``limit`` clips):
    single frames, or ``window``-frame windows ending at that frame."""
    samples: list[Sample] = []
    for name in list_clips(split, data_dir)[:limit]:
        samples.extend(clip_samples(load_clip(name, data_dir), stride, window, unlabelled_box_rest))
    return samples
