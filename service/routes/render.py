"""Engine answers -> the API's messages (the only place that knows both sides)."""

from __future__ import annotations

from typing import Any

from service.errors import ServiceError
from service.schemas import (
    BBox,
    Centroid,
    Dropped,
    ErrorDetail,
    FrameError,
    LatencyMs,
    MaskRLE,
    Result,
    Target,
)
from service.transport.messages import Answer, FrameDropped, FrameResult


def result(answer: Answer, frame_result: FrameResult) -> Result:
    request = answer.request
    height, width = request.size
    return Result(
        stream_id=request.stream_id,
        seq=request.seq,
        model=request.model,
        width=width,
        height=height,
        timestamp=request.timestamp,
        reset=frame_result.reset,
        targets=[
            Target(
                track_id=detection.track_id,
                centroid=Centroid(x=c.centroid_x, y=c.centroid_y),
                bbox=BBox(x0=c.x0, y0=c.y0, x1=c.x1, y1=c.y1),
                area=c.area,
                score=c.score,
            )
            for detection in frame_result.detections
            for c in [detection.component]
        ],
        latency_ms=LatencyMs(
            queue=_ms(frame_result.batch_started_at - request.received_at),
            inference=_ms(frame_result.inference_s),
            postprocess=_ms(frame_result.postprocess_s),
            total=_ms(answer.total_s),
        ),
        mask=MaskRLE(**frame_result.mask_rle) if frame_result.mask_rle is not None else None,
    )


def live_message(answer: Answer) -> dict[str, Any]:
    """The WebSocket message for a frame's answer: a result, a drop or an error."""
    outcome = answer.outcome
    request = answer.request
    if isinstance(outcome, FrameDropped):
        return Dropped(
            stream_id=request.stream_id, seq=request.seq, reason=outcome.reason
        ).model_dump()
    if outcome.error_code is not None:
        detail = ErrorDetail(code=outcome.error_code, message=outcome.error_message or "")
        return FrameError(stream_id=request.stream_id, seq=request.seq, error=detail).model_dump()
    return result(answer, outcome).model_dump()


def error_message(stream_id: str, seq: int | None, error: ServiceError) -> dict[str, Any]:
    """The WebSocket message for a frame rejected before it reached the engine."""
    detail = ErrorDetail(code=error.code, message=error.message)
    return FrameError(stream_id=stream_id, seq=seq, error=detail).model_dump()


def _ms(seconds: float) -> float:
    return round(max(0.0, seconds) * 1000.0, 3)
