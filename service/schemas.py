"""What the API sends back, as pydantic models (FastAPI documents them in the OpenAPI schema).

A frame's answer is one of three messages, told apart by ``type``: ``result`` (the contract's
result object), ``dropped`` (the live-stream policy or shutdown discarded it) or ``error`` (that
frame failed; the stream goes on). REST returns a result as the body and the other two as HTTP
errors; a WebSocket sends all three, one per frame, in the order the frames were sent.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from frames.options import DetectionOptions

# The largest integer a JSON number holds exactly (JavaScript's Number.MAX_SAFE_INTEGER): a
# stream's seq must increase, so one beyond it could never be followed.
MAX_SEQ = 2**53 - 1


class Centroid(BaseModel):
    x: float = Field(description="Column, in pixels of the frame as sent.")
    y: float = Field(description="Row, in pixels of the frame as sent.")


class BBox(BaseModel):
    """Inclusive pixel box."""

    x0: int
    y0: int
    x1: int
    y1: int


class Target(BaseModel):
    track_id: int | None = Field(
        description="Confirmed track id, unique within the stream; null while the detection "
        "belongs to a tentative (not yet confirmed) track."
    )
    centroid: Centroid
    bbox: BBox
    area: int = Field(description="Pixels in the 8-connected component.")
    score: float = Field(description="Peak probability inside the component.")


class LatencyMs(BaseModel):
    queue: float = Field(description="From receipt to the start of the frame's batch.")
    inference: float = Field(
        description="The model call of the frame's batch: from its start until the logits are "
        "on the host (on a pipelined GPU this spans the batch before it being post-processed)."
    )
    postprocess: float = Field(description="Threshold, components, tracker, mask.")
    total: float = Field(description="From receipt of the frame to its result being ready.")


class MaskRLE(BaseModel):
    """Uncompressed COCO RLE: column-major runs, the first run counts zeros."""

    size: list[int] = Field(description="[height, width]")
    counts: list[int]


class Result(BaseModel):
    type: Literal["result"] = "result"
    stream_id: str | None = Field(description="null for stateless /v1/detect.")
    seq: int | None = Field(description="The frame's sequence number within its stream.")
    model: str
    width: int
    height: int
    timestamp: float = Field(description="Client-given timestamp, else the receive time (Unix s).")
    reset: bool = Field(
        default=False, description="The stream's window and tracker restarted with this frame."
    )
    targets: list[Target]
    latency_ms: LatencyMs
    mask: MaskRLE | None = None


class Dropped(BaseModel):
    type: Literal["dropped"] = "dropped"
    stream_id: str | None
    seq: int | None
    reason: str = Field(description="newest_wins, overloaded, stream_deleted or shutdown.")


class ErrorDetail(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    """The body of every HTTP error response."""

    error: ErrorDetail


class FrameError(BaseModel):
    """A WebSocket message: this frame failed, the stream goes on."""

    type: Literal["error"] = "error"
    stream_id: str | None
    seq: int | None
    error: ErrorDetail


class FrameCounters(BaseModel):
    received: int
    processed: int
    dropped: int
    failed: int


class Track(BaseModel):
    """A confirmed track of a stream, as the tracker's filter sees it after the latest frame."""

    track_id: int
    x: float = Field(description="Column, px (filtered position).")
    y: float = Field(description="Row, px.")
    vx: float = Field(description="Velocity, px per frame.")
    vy: float
    age: int = Field(description="Frames since the track's first detection.")
    hits: int = Field(description="Frames with a detection.")
    misses: int = Field(description="Frames since its last detection (0: seen in the latest).")


class StreamInfo(BaseModel):
    stream_id: str
    model: str
    width: int | None = Field(description="Frame size fixed by the stream's latest frame.")
    height: int | None
    last_seq: int | None
    created_at: float
    last_seen: float
    live_connection: bool = Field(description="A WebSocket is attached to the stream.")
    waiting: int = Field(description="Frames waiting behind the one being processed.")
    frames: FrameCounters
    tracks: list[Track] = Field(
        description="Confirmed tracks after the latest frame; cleared when the stream resets."
    )
    options: DetectionOptions | None = Field(
        default=None, description="The stream's detection options (PUT .../options), if set."
    )


class StreamList(BaseModel):
    streams: list[StreamInfo]


class ModelInfo(BaseModel):
    name: str
    parameters: int
    frames: int = Field(description="Frames per window (5 for std2net, else 1).")
    size_multiple: int = Field(description="Frames are padded to this multiple internally.")
    weights_sha256: str
    weights_source: str = Field(description="shipped, file, or random-init (untrained!).")
    backend: str = Field(
        description="What runs it: torch or onnxruntime (IRTRACK_INFERENCE_BACKEND)."
    )
    peak_bytes_per_pixel: int = Field(
        description="Working memory of a call per frame and pixel of its padded size: what the "
        "memory budget admits frames by (with the next figure)."
    )
    peak_bytes_per_pixel_squared: float = Field(
        description="... plus this times the square of the padded pixels (LRRNet's attention "
        "over all pixels), 0 for the others."
    )
    state_bytes_per_pixel: int = Field(
        description="What a stream keeps between frames, per padded pixel (0: single-frame)."
    )
    device: str = Field(description="Where the model runs: cpu, cuda:0, ...")
    default: bool = Field(description="The model of /v1/detect when a request names none.")
    stream_default: bool = Field(
        description="The model of a new stream whose first frame names none."
    )


class ModelList(BaseModel):
    models: list[ModelInfo]
    memory_budget_bytes: int = Field(
        description="What a model call and the streams' state may take together "
        "(IRTRACK_MEMORY_BUDGET_BYTES): larger frames are refused with 413."
    )


class Health(BaseModel):
    status: str


class Preview(BaseModel):
    """A downscaled 8-bit JPEG of a frame, for people watching a stream (16-bit frames through
    the same gain control as the model's input)."""

    width: int
    height: int
    jpeg_base64: str


class WatchedResult(Result):
    """A message of ``WS /v1/streams/{id}/watch``: a stream's result, with its frame's preview."""

    preview: Preview | None = None
    watch_dropped: int = Field(
        default=0, description="Results this watcher missed so far because it fell behind."
    )
