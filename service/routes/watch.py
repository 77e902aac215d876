"""Watching a stream: a read-only WebSocket that follows what another client streams.

``WS /v1/streams/{stream_id}/watch?preview_width=480``: the server sends every answer of the
stream as it is settled: a result with a downscaled JPEG ``preview`` of its frame
(``WatchedResult``), or the stream's ``dropped`` / ``error`` message. A watcher that reads too
slowly misses answers (the oldest go first, ``watch_dropped`` counts them); the stream itself never
waits for its watchers. The stream id need not exist yet: watching starts with its next frame.
A watcher sees the frames that reach this API process (with several behind a load balancer, a
stream's sender and its watchers must reach the same one).

Browsers cannot set headers on a WebSocket, so besides ``X-API-Key`` the key may come as the
``key`` query parameter here (it then appears in access logs: prefer the header elsewhere).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, Query, WebSocket

from frames.preprocess import normalize_frame
from service.api.engine import Engine
from service.api.watchers import Watcher
from service.errors import ServiceError
from service.routes import render
from service.routes.deps import api_keys_of, check_stream_handshake, refuse_handshake
from service.schemas import Preview, WatchedResult
from service.transport.messages import Answer, FrameDropped

router = APIRouter(tags=["live"])

JPEG_QUALITY = 80


@router.websocket("/v1/streams/{stream_id}/watch")
async def watch_stream(
    websocket: WebSocket,
    stream_id: str,
    key: Annotated[str | None, Query(description="API key, for browsers")] = None,
    preview_width: Annotated[int, Query(ge=0, le=1920, description="0: no preview")] = 480,
) -> None:
    engine: Engine = websocket.app.state.engine
    try:
        keys = api_keys_of(websocket) or ([key] if key is not None else [])
        check_stream_handshake(engine.settings, keys, stream_id)
        watcher = engine.watchers.add(stream_id)
    except ServiceError as exc:
        await refuse_handshake(websocket, exc)
        return
    try:
        await websocket.accept()
        forward = asyncio.create_task(_forward(websocket, watcher, preview_width))
        notice_close = asyncio.create_task(_until_closed(websocket))
        await asyncio.wait({forward, notice_close}, return_when=asyncio.FIRST_COMPLETED)
        for task in (forward, notice_close):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    finally:
        engine.watchers.remove(watcher)


async def _until_closed(websocket: WebSocket) -> None:
    """A watcher sends nothing; reading is how its going away is noticed."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _forward(websocket: WebSocket, watcher: Watcher, preview_width: int) -> None:
    while True:
        answer = await watcher.next()
        # Only answers actually sent are encoded: one a slow watcher misses costs nothing.
        message = await asyncio.to_thread(_message, answer, watcher.dropped, preview_width)
        await websocket.send_json(message)


def _message(answer: Answer, dropped: int, preview_width: int) -> dict[str, Any]:
    outcome = answer.outcome
    if isinstance(outcome, FrameDropped) or outcome.error_code is not None:
        return render.live_message(answer)
    preview = _preview(answer.request.frame, preview_width) if preview_width else None
    result = render.result(answer, outcome)
    watched = WatchedResult(**dict(result), preview=preview, watch_dropped=dropped)
    return watched.model_dump(mode="json")


def _preview(frame: np.ndarray, max_width: int) -> Preview:
    """Downscale (never up), then bring 16-bit frames to 8 bits the way the model sees them."""
    height, width = frame.shape
    if width > max_width:
        size = (max_width, max(1, round(height * max_width / width)))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    if frame.dtype != np.uint8:
        frame = np.round(normalize_frame(frame) * 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the preview")
    return Preview(
        width=frame.shape[1],
        height=frame.shape[0],
        jpeg_base64=base64.b64encode(jpeg.tobytes()).decode("ascii"),
    )
