"""Labelled real thermal video: the drone-ir clips (``DATA_DIR/drone-ir``).

243 clips of drones, birds, airplanes and helicopters, 320x256 at 30 fps, with one box or none
per frame, split by clip into ``splits/train.txt`` and ``splits/test.txt``. As with the image
datasets, ``"test"`` is for the final report only; ``"val"`` is a fixed holdout of the training
clips (``HOLDOUT_FRACTION``, drawn with ``HOLDOUT_SEED``, the same for every run) for model
selection, ``"train"`` the rest and ``"train_full"`` all training clips.

Boxes are stored as the authors labelled them: ``[x, y, w, h]`` with x, y the top-left corner in
MATLAB's 1-based pixel coordinates. :class:`Box` holds them 0-based, in the coordinates of
centroids (a pixel's centre is at its integer index), so the labelled box spans
``x .. x + w`` and ``y .. y + h``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from data.paths import DATA_DIR
from frames.video import gray_frames

DRONE_IR = "drone-ir"
VIDEO_SPLITS = ("train", "val", "test", "train_full")
HOLDOUT_SEED = 0
HOLDOUT_FRACTION = 0.15
SMALL_TARGET_PX = 16  # a clip is a small-target clip when its median box fits in 16 x 16 px


@dataclass(frozen=True)
class Box:
    """A labelled target, 0-based: top-left corner ``(x, y)``, width and height, in pixels."""

    x: float
    y: float
    w: float
    h: float

    def contains(self, column: float, row: float, margin: float = 0.0) -> bool:
        """Whether a point lies inside the box grown by ``margin`` pixels on every side."""
        return (
            self.x - margin <= column <= self.x + self.w + margin
            and self.y - margin <= row <= self.y + self.h + margin
        )


@dataclass(frozen=True)
class LabelledClip:
    """One clip: its frames on disk and a box (or None) per frame."""

    name: str
    object_class: str  # drone, bird, airplane or helicopter
    fps: float
    width: int
    height: int
    boxes: tuple[Box | None, ...]  # one per frame
    video: Path

    @property
    def small_target(self) -> bool:
        """The median labelled box fits in ``SMALL_TARGET_PX`` x ``SMALL_TARGET_PX``."""
        sizes = [max(box.w, box.h) for box in self.boxes if box is not None]
        return bool(sizes) and statistics.median(sizes) <= SMALL_TARGET_PX

    def frames(self, limit: int | None = None) -> Iterator[np.ndarray]:
        """The clip's frames as 8-bit (H, W) arrays, the first ``limit`` of them if given."""
        capture = cv2.VideoCapture(str(self.video))
        if not capture.isOpened():
            raise OSError(f"OpenCV cannot open {self.video}")
        for index, frame in enumerate(gray_frames(capture)):
            if index == (len(self.boxes) if limit is None else min(limit, len(self.boxes))):
                return
            yield frame


def _read_split_file(directory: Path, split_file: str) -> list[str]:
    path = directory / "splits" / split_file
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def list_clips(split: str, data_dir: Path = DATA_DIR) -> list[str]:
    """Clip names of ``split`` (see the module docstring), in the split file's order."""
    if split not in VIDEO_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {VIDEO_SPLITS}")
    directory = data_dir / DRONE_IR
    if split == "test":
        return _read_split_file(directory, "test.txt")
    names = _read_split_file(directory, "train.txt")
    if split == "train_full":
        return names
    held_out = set(
        np.random.default_rng(HOLDOUT_SEED)
        .permutation(len(names))[: round(len(names) * HOLDOUT_FRACTION)]
        .tolist()
    )
    return [n for i, n in enumerate(names) if (i in held_out) == (split == "val")]


def load_clips(
    split: str, data_dir: Path = DATA_DIR, small_only: bool = False, clips: int | None = None
) -> list[LabelledClip]:
    """The first ``clips`` (all if None) labelled clips of ``split`` in order; ``small_only``:
    of its small-target clips. Only the clips needed are loaded."""
    loaded = (load_clip(name, data_dir) for name in list_clips(split, data_dir))
    return list(islice((clip for clip in loaded if clip.small_target or not small_only), clips))


def load_clip(name: str, data_dir: Path = DATA_DIR) -> LabelledClip:
    """A clip's labels (the JSON beside its video); the frames are read when iterated."""
    directory = data_dir / DRONE_IR / "sequences"
    record = json.loads((directory / f"{name}.json").read_text())
    boxes = tuple(
        None if box is None else Box(box[0] - 1.0, box[1] - 1.0, box[2], box[3])
        for box in record["boxes"]
    )
    return LabelledClip(
        name=record["name"],
        object_class=record["class"],
        fps=float(record["fps"]),
        width=int(record["width"]),
        height=int(record["height"]),
        boxes=boxes,
        video=directory / f"{name}.mp4",
    )
