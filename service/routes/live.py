"""The live stream: frames in over a WebSocket, one JSON message per frame out, in order.

Client -> server: a binary message per frame (PNG/TIFF/JPEG bytes, or raw pixels announced by a
text message ``{"width": W, "height": H, "dtype": "uint16", "seq": 7, "timestamp": ...}`` sent
just before it; the header also gives seq/timestamp to an encoded frame).
Server -> client: ``result``, ``dropped`` (the newest-wins policy replaced a waiting frame) or
``error`` (that frame was bad; the stream goes on), in the order the frames arrived. Replies wait
for the frames before them, so a slow frame delays the drops that follow it, never reorders them.

Memory per connection is bounded: at most ``stream_queue_depth`` frames wait, and once
``OUTBOX_LIMIT`` answers are pending the server stops reading the socket (TCP backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.api.engine import Engine
from service.api.sessions import StreamSession
from service.codecs import decode_frame
from service.errors import InvalidParameter, ServiceError
from service.routes import render
from service.routes.deps import (
    api_keys_of,
    check_stream_handshake,
    frame_limits,
    raw_layout,
    refuse_handshake,
)
from service.schemas import MAX_SEQ
from service.transport.messages import Answer

router = APIRouter(tags=["live"])

OUTBOX_LIMIT = 64
FLUSH_TIMEOUT_S = 10.0  # longest a closing connection waits for the answers it owes


class FrameHeader(BaseModel):
    """Optional text message announcing the next binary frame."""

    model_config = ConfigDict(extra="forbid")

    seq: int | None = Field(default=None, ge=0, le=MAX_SEQ)
    timestamp: float | None = Field(default=None, allow_inf_nan=False)
    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    dtype: Literal["uint8", "uint16"] = "uint8"


@router.websocket("/v1/streams/{stream_id}/ws")
async def live_stream(
    websocket: WebSocket,
    stream_id: str,
    model: Annotated[str | None, Query()] = None,
    mask: Annotated[Literal["rle"] | None, Query()] = None,
    threshold: Annotated[float | None, Query(gt=0, lt=1)] = None,
) -> None:
    engine: Engine = websocket.app.state.engine
    try:
        check_stream_handshake(engine.settings, api_keys_of(websocket), stream_id)
        connection = _LiveConnection(websocket, engine, mask == "rle", threshold)
        connection.session = engine.open_live(stream_id, model, connection)
    except ServiceError as exc:
        await refuse_handshake(websocket, exc)
        return
    try:
        await websocket.accept()
        await connection.run()
    finally:
        engine.close_live(connection.session)


class _LiveConnection:
    """One accepted WebSocket: a reader that admits frames and a writer that answers in order."""

    session: StreamSession  # set once the engine attached the connection to its stream

    def __init__(
        self, websocket: WebSocket, engine: Engine, want_mask: bool, threshold: float | None
    ) -> None:
        self.websocket = websocket
        self.engine = engine
        self.want_mask = want_mask
        self.threshold = threshold  # the connection's, over the stream options' and the service's
        # Each entry answers one frame (or a bad header): a pending answer or a ready message.
        self.outbox: asyncio.Queue[asyncio.Future[Answer] | dict[str, Any]] = asyncio.Queue(
            OUTBOX_LIMIT
        )

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        try:
            await self._read()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            while not self.outbox.empty():  # undeliverable now; release anyone joining
                self.outbox.get_nowait()
                self.outbox.task_done()

    async def _read(self) -> None:
        header: FrameHeader | None = None
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            received_at = time.time()
            if message.get("text") is not None:
                try:
                    header = FrameHeader.model_validate_json(message["text"])
                except ValidationError as exc:
                    header = None
                    error = InvalidParameter(f"bad frame header: {_summary(exc)}")
                    await self.outbox.put(render.error_message(self.session.stream_id, None, error))
                continue
            entry = await self._admit(message.get("bytes") or b"", header, received_at)
            await self.outbox.put(entry)
            header = None

    async def _admit(
        self, data: bytes, header: FrameHeader | None, received_at: float
    ) -> asyncio.Future[Answer] | dict[str, Any]:
        """Decode a frame (off the event loop) and offer it; an error message if it is bad."""
        seq = header.seq if header is not None else None
        try:
            with self.engine.metrics.ticket() as ticket:
                raw = raw_layout(header.width, header.height, header.dtype) if header else None
                limits = frame_limits(self.engine.settings)
                frame = await asyncio.to_thread(decode_frame, data, limits, raw)
                return self.engine.offer_live(
                    self.session,
                    frame,
                    seq=seq,
                    want_mask=self.want_mask,
                    timestamp=header.timestamp if header is not None else None,
                    received_at=received_at,
                    ticket=ticket,
                    threshold=self.threshold,
                )
        except ServiceError as exc:
            return render.error_message(self.session.stream_id, seq, exc)

    async def finish(self, code: int, reason: str) -> None:
        """Send every answer owed (the engine stopped admitting frames), then close."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.outbox.join(), FLUSH_TIMEOUT_S)
        with contextlib.suppress(RuntimeError, OSError):  # the client may have gone already
            await self.websocket.close(code, reason)

    async def _write(self) -> None:
        deliverable = True
        while True:
            entry = await self.outbox.get()
            try:
                if deliverable:
                    message = entry if isinstance(entry, dict) else await self._message(entry)
                    await self.websocket.send_json(message)
            except (WebSocketDisconnect, RuntimeError, OSError):  # closed under us: nobody to tell
                deliverable = False
            finally:
                self.outbox.task_done()

    @staticmethod
    async def _message(answer: asyncio.Future[Answer]) -> dict[str, Any]:
        return render.live_message(await asyncio.shield(answer))


def _summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()
    )
