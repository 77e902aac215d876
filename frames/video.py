"""Video as single-channel frames: what every reader of clips and cameras in the project uses."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from frames.preprocess import to_gray


def gray_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """The capture's frames as (H, W) arrays in their own bit depth (colour reduced to luma);
    the capture is released when the frames run out or the iterator is closed."""
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield to_gray(frame)
    finally:
        capture.release()
