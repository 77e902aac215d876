"""Input normalisation shared by training, evaluation and serving: a frame -> float32 in [0, 1].

All models were trained on 8-bit frames scaled by 1/255, so every input is brought to that range:

- ``uint8``: ``frame / 255``, exactly the training normalisation;
- ``uint16`` (thermal cameras deliver 14/16-bit raw counts): automatic gain control, a robust
  percentile stretch per frame. The ``AGC_LOW_PERCENTILE`` .. ``AGC_HIGH_PERCENTILE`` range of the
  frame's values is mapped linearly to [0, 1] and clipped, which is what a camera's 8-bit video
  output does: a few hot pixels or a bright target saturate instead of compressing the background
  into a handful of grey levels. When that range is empty (a small hot target on a flat background
  leaves the 99.9th percentile at the background level) the frame's maximum is used as the top, so
  the target still stands out; a completely flat frame becomes all zeros;
- floating point: taken as already normalised, checked to be finite and within [0, 1].

Colour images (the shared data has RGB, RGBA and palette PNGs) are reduced to one channel with
``to_gray``, the ITU-R BT.601 luma of OpenCV's ``cvtColor`` (what PIL's ``convert("L")`` computes,
within one grey level).
"""

from __future__ import annotations

import cv2
import numpy as np

AGC_LOW_PERCENTILE = 0.5
AGC_HIGH_PERCENTILE = 99.9


def normalize_frame(frame: np.ndarray) -> np.ndarray:
    """One single-channel frame (H, W) -> float32 (H, W) in [0, 1]; see the module docstring."""
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise ValueError(
            f"expected one single-channel frame (H, W), got shape {frame.shape}; use to_gray first"
        )
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) / np.float32(255.0)
    if frame.dtype == np.uint16:
        return _automatic_gain_control(frame)
    if np.issubdtype(frame.dtype, np.floating):
        if not np.all(np.isfinite(frame)):
            raise ValueError("float frame contains NaN or infinity")
        if frame.size and (frame.min() < 0.0 or frame.max() > 1.0):
            raise ValueError(
                f"float frames must already be in [0, 1], got [{frame.min()}, {frame.max()}]"
            )
        return frame.astype(np.float32, copy=False)
    raise TypeError(f"unsupported frame dtype {frame.dtype}: expected uint8, uint16 or float")


def _automatic_gain_control(frame: np.ndarray) -> np.ndarray:
    """Percentile stretch of one 16-bit frame to float32 [0, 1] (never NaN)."""
    low, high = np.percentile(frame, [AGC_LOW_PERCENTILE, AGC_HIGH_PERCENTILE])
    if high <= low:
        high = float(frame.max())
    if high <= low:
        return np.zeros(frame.shape, dtype=np.float32)
    stretched = (frame.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(stretched, 0.0, 1.0)


def to_gray(image: np.ndarray, channel_order: str = "bgr") -> np.ndarray:
    """An (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image -> (H, W), same dtype.

    ``channel_order`` is "bgr" for OpenCV-decoded images (the default) or "rgb"; alpha is ignored.
    """
    if channel_order not in ("bgr", "rgb"):
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        conversion = {
            ("bgr", 3): cv2.COLOR_BGR2GRAY,
            ("bgr", 4): cv2.COLOR_BGRA2GRAY,
            ("rgb", 3): cv2.COLOR_RGB2GRAY,
            ("rgb", 4): cv2.COLOR_RGBA2GRAY,
        }[(channel_order, image.shape[2])]
        return cv2.cvtColor(np.ascontiguousarray(image), conversion)
    raise ValueError(f"expected a gray, 3- or 4-channel image, got shape {image.shape}")
