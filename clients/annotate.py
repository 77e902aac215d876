"""Annotated video of a stream: boxes, track ids, short trails and the frame's latency.

One output frame per source frame, whatever became of it (a frame that was skipped, dropped or
lost says so), so the video lines up with the source frame for frame. 16-bit frames are shown
through the same gain control as the model's input.
"""

from __future__ import annotations

import colorsys
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from clients.live import FrameEvent
from frames.preprocess import normalize_frame
from service.schemas import Target

TRAIL_LENGTH = 12  # centroids drawn behind a track
FORGET_AFTER = 30  # frames without its track before a trail is dropped
BOX_PADDING = 3  # pixels around a box: targets are a few pixels, a tight box would hide them
UNCONFIRMED = (190, 190, 190)
WARNING = (60, 60, 255)
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


class Annotator:
    """Draws results onto their frames, remembering each track's recent centroids."""

    def __init__(self) -> None:
        self._trails: dict[int, deque[tuple[float, float]]] = {}
        self._last_seen: dict[int, int] = {}
        self._frames = 0

    def draw(self, event: FrameEvent) -> np.ndarray:
        """The event's frame as BGR uint8 with its overlay."""
        self._frames += 1
        image = cv2.cvtColor(_display_gray(event.frame), cv2.COLOR_GRAY2BGR)
        scale = max(0.4, image.shape[1] / 1000)
        result = event.result
        if result is not None:
            self._remember(result.targets)
            self._draw_trails(image)
            for target in result.targets:
                colour = UNCONFIRMED if target.track_id is None else _track_colour(target.track_id)
                box = target.bbox
                top_left = (box.x0 - BOX_PADDING, box.y0 - BOX_PADDING)
                bottom_right = (box.x1 + BOX_PADDING, box.y1 + BOX_PADDING)
                cv2.rectangle(image, top_left, bottom_right, colour, 1)
                if target.track_id is not None:
                    label_at = (top_left[0], top_left[1] - 4)
                    _text(image, f"#{target.track_id}", label_at, colour, scale)
            latency = f"{event.round_trip_ms or 0:.0f} ms (server {result.latency_ms.total:.0f})"
            status = f"seq {event.seq}  {len(result.targets)} targets  {latency}"
            _text(image, status, (6, image.shape[0] - 8), (255, 255, 255), scale)
        else:
            status = f"seq {event.seq}  {event.status.upper()}: {event.reason or ''}"
            _text(image, status, (6, image.shape[0] - 8), WARNING, scale)
        return image

    def _remember(self, targets: list[Target]) -> None:
        for target in targets:
            if target.track_id is None:
                continue
            trail = self._trails.setdefault(target.track_id, deque(maxlen=TRAIL_LENGTH))
            trail.append((target.centroid.x, target.centroid.y))
            self._last_seen[target.track_id] = self._frames
        for track_id, seen in list(self._last_seen.items()):
            if self._frames - seen > FORGET_AFTER:
                del self._trails[track_id], self._last_seen[track_id]

    def _draw_trails(self, image: np.ndarray) -> None:
        for track_id, trail in self._trails.items():
            points = np.round(np.array(trail)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(image, [points], False, _track_colour(track_id), 1, cv2.LINE_AA)


class VideoOut:
    """An OpenCV video writer opened on the first frame (whose size it takes)."""

    def __init__(self, path: Path, fps: float) -> None:
        if path.suffix.lower() not in VIDEO_CODECS:
            raise ValueError(f"{path}: the name must end in one of {', '.join(VIDEO_CODECS)}")
        self.path = path
        self.fps = fps
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter.fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
            size = (image.shape[1], image.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, size)
            if not self._writer.isOpened():
                raise OSError(f"OpenCV cannot write {self.path}")
        self._writer.write(image)
        self.frames += 1

    def __enter__(self) -> VideoOut:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def _display_gray(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    return np.round(normalize_frame(frame) * 255).astype(np.uint8)


def _track_colour(track_id: int) -> tuple[int, int, int]:
    """Well separated, stable colours: the golden-angle walk around the hue circle."""
    red, green, blue = colorsys.hsv_to_rgb((track_id * 0.381966) % 1.0, 0.8, 1.0)
    return int(blue * 255), int(green * 255), int(red * 255)


def _text(
    image: np.ndarray,
    text: str,
    origin: tuple[int, int],
    colour: tuple[int, int, int],
    scale: float,
) -> None:
    """Text with a dark outline, legible on any background."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, text, origin, font, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, font, scale, colour, 1, cv2.LINE_AA)
