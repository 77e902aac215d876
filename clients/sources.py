"""Frame sources for ``irtrack stream``: a video file, a folder of images, a camera, a URL.

Every source yields single-channel frames as the camera made them: 8-bit, or 16-bit where the
images are 16-bit (thermal cameras' raw counts), which go to the service unchanged (it applies
its gain control). Colour video is reduced to luma. OpenCV reads everything; a camera index is
``0``, ``1``...; anything with ``://`` (``rtsp://``, ``http://``) is a network stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from frames.preprocess import to_gray
from frames.video import gray_frames

IMAGE_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".pgm"})
STREAM_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")


@dataclass
class FrameSource:
    """Where frames come from, and what is known about them before reading."""

    name: str  # a readable name, also the default stream id
    fps: float | None  # the source's own rate; None for image folders
    frame_count: int | None  # None for cameras and network streams
    live: bool  # a camera or network stream: frames come at the device's pace
    reader: Iterator[np.ndarray]

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.reader

    @property
    def stream_id(self) -> str:
        return STREAM_ID_UNSAFE.sub("-", self.name).strip("-")[:128] or "stream"


def open_source(spec: str) -> FrameSource:
    """A source from what a user types: a path, a folder, a camera index or a URL."""
    if spec.isdigit():
        return _capture_source(cv2.VideoCapture(int(spec)), f"camera-{spec}", spec, live=True)
    if "://" in spec:
        name = spec.split("://", 1)[1].split("?", 1)[0]
        return _capture_source(cv2.VideoCapture(spec), name, spec, live=True)
    path = Path(spec)
    if path.is_dir():
        return _folder_source(path)
    if path.is_file():
        return _capture_source(cv2.VideoCapture(str(path)), path.stem, spec, live=False)
    raise FileNotFoundError(f"{spec} is no file, folder, camera index or URL")


def _capture_source(capture: cv2.VideoCapture, name: str, spec: str, live: bool) -> FrameSource:
    if not capture.isOpened():
        raise OSError(f"OpenCV cannot open {spec}")
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    return FrameSource(
        name=name,
        fps=fps if fps > 0 else None,
        frame_count=count if count > 0 and not live else None,
        live=live,
        reader=gray_frames(capture),
    )


def _folder_source(folder: Path) -> FrameSource:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return FrameSource(
        name=folder.name, fps=None, frame_count=len(paths), live=False, reader=_read_images(paths)
    )


def _read_images(paths: list[Path]) -> Iterator[np.ndarray]:
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # keeps 16-bit as 16-bit
        if image is None:
            raise OSError(f"OpenCV cannot read {path}")
        frame = to_gray(image)
        if frame.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{path}: {frame.dtype} pixels; irtrack takes 8- or 16-bit images")
        yield frame
