"""What travels between the API side and the inference worker.

Plain dataclasses of numbers, strings and numpy arrays, so that a queue backend that crosses
process boundaries (Redis) can serialise them; nothing here refers to torch, asyncio or HTTP.
Times are Unix seconds (``time.time()``) because they are compared across processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from frames.options import DetectionOptions
from frames.postprocess import Component
from frames.tracking import TrackState


@dataclass
class FrameRequest:
    """One frame for the model, already decoded and validated by the API side."""

    request_id: str
    model: str
    frame: np.ndarray  # (H, W) uint8 or uint16, as the client sent it
    received_at: float
    timestamp: float
    want_mask: bool = False
    threshold: float | None = None  # this frame's probability threshold; None: the service's
    # Stream frames only (None for stateless detection):
    stream_id: str | None = None
    session: str | None = None  # changes when a stream id is deleted and reused: state restarts
    seq: int | None = None
    frames_before: int = 0  # frames of this session sent to the engine earlier
    options: DetectionOptions | None = None  # the stream's ignore regions and report policy

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)"""
        height, width = self.frame.shape
        return int(height), int(width)


@dataclass
class Detection:
    """A component, and the track it was assigned to (None without a tracker)."""

    component: Component
    track_id: int | None = None


@dataclass
class FrameResult:
    """The worker's answer to one request: detections, or the error that stopped it."""

    request_id: str
    detections: list[Detection] = field(default_factory=list)
    mask_rle: dict[str, list[int]] | None = None
    reset: bool = False  # the stream's window and tracker restarted with this frame
    tracks: list[TrackState] = field(default_factory=list)  # the stream's live tracks after it
    batch_started_at: float = 0.0
    inference_s: float = 0.0
    postprocess_s: float = 0.0
    finished_at: float = 0.0
    error_code: str | None = None
    error_message: str | None = None


@dataclass
class FrameDropped:
    """A frame that never reached the model, and why (newest_wins, overloaded, shutdown...)."""

    reason: str


@dataclass
class StreamRelease:
    """Tells the worker to free a stream's state (the stream was deleted or expired)."""

    stream_id: str
    session: str


@dataclass
class Answer:
    """A stream or detect request and its outcome, as the engine hands it to a route."""

    request: FrameRequest
    outcome: FrameResult | FrameDropped
    total_s: float  # from receipt of the frame to its outcome, measured on the API side
