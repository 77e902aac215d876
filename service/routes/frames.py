"""REST frames: one image in, its result out (stateless detection, or one frame of a stream)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from service.api.engine import raise_for_outcome
from service.routes import render
from service.routes.deps import STREAM_ID_PATTERN, EngineDep, FrameQuery, read_frame
from service.schemas import Error, Result

router = APIRouter(tags=["frames"])

FRAME_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": Error} for status in (400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503)
}
FRAME_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "image/png": {},
            "image/tiff": {},
            "image/jpeg": {},
            "application/octet-stream": {"description": "raw pixels; give width and height"},
        },
    }
}


@router.post("/v1/detect", response_model=Result, responses=FRAME_ERRORS, openapi_extra=FRAME_BODY)
async def detect(
    request: Request, query: Annotated[FrameQuery, Depends()], engine: EngineDep
) -> Result:
    """Detect targets in one image; stateless (no window, no tracker)."""
    received_at = time.time()
    with engine.metrics.ticket() as ticket:
        frame = await read_frame(request, query, engine.settings)
        answer = await engine.detect(
            frame,
            query.model,
            want_mask=query.want_mask,
            timestamp=query.timestamp,
            received_at=received_at,
            ticket=ticket,
            threshold=query.threshold,
        )
    return render.result(answer, raise_for_outcome(answer, engine.settings.retry_after_s))


@router.post(
    "/v1/streams/{stream_id}/frames",
    response_model=Result,
    responses=FRAME_ERRORS,
    openapi_extra=FRAME_BODY,
)
async def stream_frame(
    request: Request,
    stream_id: Annotated[str, Path(pattern=STREAM_ID_PATTERN)],
    query: Annotated[FrameQuery, Depends()],
    engine: EngineDep,
) -> Result:
    """One frame of a stream; the stream's window and tracker are used and updated."""
    received_at = time.time()
    with engine.metrics.ticket() as ticket:
        frame = await read_frame(request, query, engine.settings)
        answer = await engine.stream_frame(
            stream_id,
            frame,
            query.model,
            seq=query.seq,
            want_mask=query.want_mask,
            timestamp=query.timestamp,
            received_at=received_at,
            ticket=ticket,
            threshold=query.threshold,
        )
    return render.result(answer, raise_for_outcome(answer, engine.settings.retry_after_s))
