"""What routes share: the engine, API-key checks, frame query parameters, bounded body reading."""

from __future__ import annotations

import asyncio
import hmac
import re
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, Header, Query, WebSocket
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect, HTTPConnection, Request

from service.api.engine import Engine
from service.codecs import FrameLimits, RawLayout, decode_frame
from service.errors import (
    BodyTimeout,
    ClientGone,
    Forbidden,
    InvalidParameter,
    ServiceError,
    TooLarge,
    Unauthorized,
)
from service.schemas import MAX_SEQ
from service.settings import Settings

STREAM_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


def get_engine(connection: HTTPConnection) -> Engine:
    engine: Engine = connection.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def check_api_key(settings: Settings, keys: list[str]) -> None:
    """401 without a key or with more than one, 403 with a wrong one; nothing to check when no
    keys are configured. ``keys``: every X-API-Key the request carries (a proxy may add one:
    which of two counts is ambiguous, so neither does)."""
    if not settings.api_keys:
        return
    if not keys:
        raise Unauthorized("this service requires an X-API-Key header")
    if len(keys) > 1:
        raise Unauthorized(
            f"the request carries {len(keys)} X-API-Key headers; send exactly one",
            code="duplicate_api_key",
        )
    # Compare against every key in constant time, so timing reveals neither key nor position.
    key = keys[0].encode()
    matches = [hmac.compare_digest(key, valid.encode()) for valid in settings.api_keys]
    if not any(matches):
        raise Forbidden("the X-API-Key is not valid")


def api_keys_of(connection: HTTPConnection) -> list[str]:
    return connection.headers.getlist("x-api-key")


def require_api_key(
    connection: HTTPConnection,
    x_api_key: Annotated[
        str | None, Header(description="API key, when the service has keys")
    ] = None,
) -> None:
    """``x_api_key`` documents the header; the check reads every copy of it from the request."""
    check_api_key(connection.app.state.settings, api_keys_of(connection))


def check_stream_handshake(settings: Settings, keys: list[str], stream_id: str) -> None:
    """A WebSocket's keys and stream id, checked before the handshake is accepted (REST routes
    get the same checks from ``require_api_key`` and the path pattern)."""
    check_api_key(settings, keys)
    if not re.fullmatch(STREAM_ID_PATTERN, stream_id):
        raise InvalidParameter(f"stream id must match {STREAM_ID_PATTERN}")


async def refuse_handshake(websocket: WebSocket, error: ServiceError) -> None:
    """Refuse a WebSocket handshake with the same status and JSON body as the REST API."""
    await websocket.send_denial_response(
        JSONResponse(error.body(), status_code=error.status, headers=error.headers())
    )


class FrameQuery:
    """Query parameters of the frame endpoints (FastAPI answers 422 for malformed ones)."""

    def __init__(
        self,
        model: Annotated[str | None, Query(description="sd2net, std2net or lrrnet")] = None,
        mask: Annotated[Literal["rle"] | None, Query(description="rle: add the mask")] = None,
        width: Annotated[int | None, Query(ge=1, description="Raw frames: pixels per row")] = None,
        height: Annotated[int | None, Query(ge=1, description="Raw frames: rows")] = None,
        dtype: Annotated[Literal["uint8", "uint16"], Query(description="Raw pixel type")] = "uint8",
        seq: Annotated[
            int | None, Query(ge=0, le=MAX_SEQ, description="Frame number in its stream")
        ] = None,
        timestamp: Annotated[
            float | None, Query(allow_inf_nan=False, description="Capture time, Unix s")
        ] = None,
        threshold: Annotated[
            float | None,
            Query(gt=0, lt=1, description="This frame's probability threshold"),
        ] = None,
    ) -> None:
        self.model = model
        self.want_mask = mask == "rle"
        self.raw = raw_layout(width, height, dtype)
        self.seq = seq
        self.timestamp = timestamp
        self.threshold = threshold


def raw_layout(width: int | None, height: int | None, dtype: str) -> RawLayout | None:
    """Raw pixels when the caller gives the size; an encoded image otherwise."""
    if width is None and height is None:
        return None
    if width is None or height is None:
        raise InvalidParameter("raw frames need both width and height", code="invalid_parameter")
    return RawLayout(width, height, "uint16" if dtype == "uint16" else "uint8")


def frame_limits(settings: Settings) -> FrameLimits:
    return FrameLimits(settings.max_body_bytes, settings.max_frame_pixels)


async def read_frame(request: Request, query: FrameQuery, settings: Settings) -> np.ndarray:
    """Read the body, then decode it (off the event loop: other streams keep moving)."""
    body = await read_body(request, settings)
    return await asyncio.to_thread(decode_frame, body, frame_limits(settings), query.raw)


async def read_body(request: Request, settings: Settings) -> bytes:
    """The body, never holding more than ``max_body_bytes``, within ``body_timeout_s`` and with
    no silence longer than ``body_idle_timeout_s`` (408 and the connection closed otherwise)."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(
            f"the body has {declared} bytes, the limit is {limit}", code="body_too_large"
        )
    deadline = asyncio.get_running_loop().time() + settings.body_timeout_s
    chunks = request.stream()
    body = bytearray()
    try:
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            wait_s = min(settings.body_idle_timeout_s, remaining)
            try:
                chunk = await asyncio.wait_for(anext(chunks), max(0.0, wait_s))
            except StopAsyncIteration:
                return bytes(body)
            except TimeoutError:
                raise BodyTimeout(
                    f"the body did not arrive within {settings.body_timeout_s:g} s, or paused "
                    f"for more than {settings.body_idle_timeout_s:g} s"
                ) from None
            body += chunk
            if len(body) > limit:
                raise TooLarge(
                    f"the body exceeds the limit of {limit} bytes", code="body_too_large"
                )
    except ClientDisconnect:
        raise ClientGone("the client disconnected while sending the body") from None
    finally:
        await chunks.aclose()
