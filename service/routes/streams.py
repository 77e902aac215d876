"""Stream management: list, inspect, delete; a stream's detection options."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from frames.options import DetectionOptions
from service.api.sessions import StreamSession
from service.errors import NotFound
from service.routes.deps import STREAM_ID_PATTERN, EngineDep
from service.schemas import Error, FrameCounters, StreamInfo, StreamList, Track

router = APIRouter(tags=["streams"])

StreamId = Annotated[str, Path(pattern=STREAM_ID_PATTERN)]


@router.get("/v1/streams", response_model=StreamList)
async def list_streams(engine: EngineDep) -> StreamList:
    return StreamList(streams=[_info(session) for session in engine.streams])


@router.get("/v1/streams/{stream_id}", response_model=StreamInfo, responses={404: {"model": Error}})
async def get_stream(stream_id: StreamId, engine: EngineDep) -> StreamInfo:
    return _info(engine.stream(stream_id))


@router.delete("/v1/streams/{stream_id}", status_code=204, responses={404: {"model": Error}})
async def delete_stream(stream_id: StreamId, engine: EngineDep) -> Response:
    """Free the stream's state now; waiting frames are dropped and a live WebSocket closed."""
    await engine.delete_stream(stream_id)
    return Response(status_code=204)


@router.put(
    "/v1/streams/{stream_id}/options",
    response_model=DetectionOptions,
    responses={status: {"model": Error} for status in (404, 409, 422, 429, 503)},
)
async def set_options(
    stream_id: StreamId,
    options: DetectionOptions,
    engine: EngineDep,
    model: Annotated[str | None, Query(description="a new stream's model")] = None,
) -> DetectionOptions:
    """Set the stream's detection options: its threshold, regions of its frames whose detections
    are dropped (a burned-in caption, say), and whether it reports only confirmed tracks. A new
    stream id starts the stream. They apply from its next frame; its frames must then have the
    options' size."""
    engine.set_options(stream_id, model, options)
    return options


@router.get(
    "/v1/streams/{stream_id}/options",
    response_model=DetectionOptions,
    responses={404: {"model": Error}},
)
async def get_options(stream_id: StreamId, engine: EngineDep) -> DetectionOptions:
    options = engine.stream(stream_id).options
    if options is None:
        raise NotFound(f"stream {stream_id!r} has no options", code="no_options")
    return options


@router.delete(
    "/v1/streams/{stream_id}/options", status_code=204, responses={404: {"model": Error}}
)
async def delete_options(stream_id: StreamId, engine: EngineDep) -> Response:
    """Back to the service's defaults from the stream's next frame."""
    engine.stream(stream_id).options = None
    return Response(status_code=204)


def _info(session: StreamSession) -> StreamInfo:
    height, width = session.size if session.size is not None else (None, None)
    counters = session.counters
    return StreamInfo(
        stream_id=session.stream_id,
        model=session.model,
        width=width,
        height=height,
        last_seq=session.last_seq,
        created_at=session.created_at,
        last_seen=session.last_seen,
        live_connection=session.live_connection is not None,
        waiting=session.waiting,
        frames=FrameCounters(
            received=counters.received,
            processed=counters.processed,
            dropped=counters.dropped,
            failed=counters.failed,
        ),
        tracks=[
            Track(
                track_id=track.track_id,
                x=track.x,
                y=track.y,
                vx=track.vx,
                vy=track.vy,
                age=track.age,
                hits=track.hits,
                misses=track.misses,
            )
            for track in session.tracks
            if track.track_id is not None
        ],
        options=session.options,
    )
