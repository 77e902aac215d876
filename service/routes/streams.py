"""Stream management: list, inspect, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from service.api.sessions import StreamSession
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
    )
