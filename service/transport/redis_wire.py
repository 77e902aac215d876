"""What the Redis backend keeps in Redis, under which keys, and how its messages are written.

Keys (``<p>`` is ``IRTRACK_REDIS_PREFIX``):

- ``<p>:frames:<shard>``: a Redis stream per shard with the frames (and stream releases) of the
  stream ids hashing to that shard, read through the consumer group ``workers`` by the one worker
  holding the shard's lease, so a stream's state lives in one worker.
- ``<p>:frames:detect``: stateless frames, read by every worker (the group shares them out).
- ``<p>:lease:<shard>``: the id of the worker holding the shard (SET NX PX, renewed by it).
- ``<p>:worker:<id>``: a worker's heartbeat, with its models (expires with the lease TTL).
  A worker is alive while it has one as long as its Redis connections, which carry its id as
  their client name, are open: a killed worker is seen dead by the next look at CLIENT LIST,
  not a lease TTL later (where CLIENT LIST is refused, the TTL alone decides).
- ``<p>:results:<api id>``: the answers for one API process, which reads and deletes them.
- ``<p>:boot``: a token naming the data of this Redis; when it changes (a restart without
  persistence), the frames queued before are gone and their callers are told so.

A frame entry holds ``kind=frame``, ``meta`` (JSON: the request's fields and the results stream
to answer on) and ``pixels`` (little-endian raw bytes). Workers acknowledge *and delete* the
entries they answered, so a stream's length is its backlog: frames waiting or being processed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import socket
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from frames.options import DetectionOptions
from frames.postprocess import Component
from frames.tracking import TrackState
from service.transport.messages import Detection, FrameRequest, FrameResult, StreamRelease

GROUP = "workers"
Fields = dict[bytes, bytes]  # an entry as read back
Entry = dict[FieldT, EncodableT]  # an entry to write

# Admit a frame unless its stream already holds ``limit`` entries; also returns the boot token of
# the data the frame went into (creating it if this Redis has none yet).
# KEYS: frames stream, boot key. ARGV: limit, a fresh boot token, field, value, field, value...
ADMIT_SCRIPT = """
local boot = redis.call('GET', KEYS[2])
if not boot then
  boot = ARGV[2]
  redis.call('SET', KEYS[2], boot)
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return {false, boot}
end
return {redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3)), boot}
"""
# KEYS: boot key. ARGV: a fresh token, used if there is none.
BOOT_SCRIPT = """
local boot = redis.call('GET', KEYS[1])
if not boot then
  boot = ARGV[1]
  redis.call('SET', KEYS[1], boot)
end
return boot
"""
# Take a lease over from a worker known dead, only if that worker still holds it.
# KEYS: lease. ARGV: the dead worker's id, this worker's id, ms.
TAKEOVER_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return false
"""
# Renew / give back a lease only if this worker still holds it. KEYS: lease. ARGV: worker id, ms.
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def connect(url: str, client_name: str) -> Redis:
    """An asyncio client that retries a command briefly (a dropped connection is re-opened) and
    otherwise fails fast, so an outage reaches the callers as errors they can report. Its
    connections carry ``client_name`` (CLIENT LIST shows who is connected)."""
    return Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        socket_connect_timeout=2.0,
        socket_timeout=5.0,  # longer than any blocking read of the backend (1 s)
        client_name=client_name,
    )


def worker_client_name(worker_id: str) -> str:
    return f"irtrack-worker:{worker_id}"


def api_client_name(api_id: str) -> str:
    return f"irtrack-api:{api_id}"


def instance_id() -> str:
    """A process's name in Redis: host and pid (for people), and a random part (for restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def fresh_token() -> str:
    return secrets.token_hex(8)


def shard_of(stream_id: str, shards: int) -> int:
    """The shard of a stream id: the same on every process (CRC-32, not Python's salted hash)."""
    return zlib.crc32(stream_id.encode()) % shards


@dataclass(frozen=True)
class RedisKeys:
    prefix: str
    shards: int

    @property
    def detect_frames(self) -> str:
        return f"{self.prefix}:frames:detect"

    @property
    def boot(self) -> str:
        return f"{self.prefix}:boot"

    def shard_frames(self, shard: int) -> str:
        return f"{self.prefix}:frames:{shard}"

    def frames_for(self, stream_id: str | None) -> str:
        """Where a frame or release goes: its stream's shard, or the shared detect stream."""
        if stream_id is None:
            return self.detect_frames
        return self.shard_frames(shard_of(stream_id, self.shards))

    def all_frames(self) -> list[str]:
        return [self.shard_frames(shard) for shard in range(self.shards)] + [self.detect_frames]

    def lease(self, shard: int) -> str:
        return f"{self.prefix}:lease:{shard}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    def results(self, api_id: str) -> str:
        return f"{self.prefix}:results:{api_id}"


# --- messages ------------------------------------------------------------------------------------
def encode_request(request: FrameRequest, reply_to: str) -> Entry:
    frame = np.ascontiguousarray(request.frame)
    meta = {
        "request_id": request.request_id,
        "reply_to": reply_to,
        "model": request.model,
        "dtype": frame.dtype.name,
        "height": frame.shape[0],
        "width": frame.shape[1],
        "received_at": request.received_at,
        "timestamp": request.timestamp,
        "want_mask": request.want_mask,
        "threshold": request.threshold,
        "options": None if request.options is None else request.options.model_dump(mode="json"),
        "stream_id": request.stream_id,
        "session": request.session,
        "seq": request.seq,
        "frames_before": request.frames_before,
    }
    pixels = frame.astype(frame.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"kind": "frame", "meta": json.dumps(meta), "pixels": pixels}


def decode_request(fields: Fields) -> tuple[FrameRequest, str]:
    """The request and the results stream its answer goes to."""
    meta = json.loads(fields[b"meta"])
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    if dtype.name not in ("uint8", "uint16"):
        raise ValueError(f"unexpected pixel type {dtype.name}")
    frame = np.frombuffer(fields[b"pixels"], dtype=dtype).reshape(meta["height"], meta["width"])
    request = FrameRequest(
        request_id=meta["request_id"],
        model=meta["model"],
        frame=frame.astype(dtype.newbyteorder("="), copy=True),
        received_at=meta["received_at"],
        timestamp=meta["timestamp"],
        want_mask=meta["want_mask"],
        threshold=meta.get("threshold"),
        options=None if meta.get("options") is None else DetectionOptions(**meta["options"]),
        stream_id=meta["stream_id"],
        session=meta["session"],
        seq=meta["seq"],
        frames_before=meta["frames_before"],
    )
    return request, meta["reply_to"]


def encode_release(release: StreamRelease) -> Entry:
    return {"kind": "release", "meta": json.dumps(dataclasses.asdict(release))}


def decode_release(fields: Fields) -> StreamRelease:
    return StreamRelease(**json.loads(fields[b"meta"]))


def entries(reply: Any) -> list[tuple[str, bytes, Fields]]:
    """(stream key, entry id, fields) of an XREAD / XREADGROUP reply, in order."""
    return [
        (key.decode(), entry_id, fields)
        for key, stream_entries in reply or []
        for entry_id, fields in stream_entries
    ]


def is_release(fields: Fields) -> bool:
    return fields.get(b"kind") == b"release"


def encode_result(result: FrameResult) -> Entry:
    return {"result": json.dumps(dataclasses.asdict(result))}


def decode_result(fields: Fields) -> FrameResult:
    data: dict[str, Any] = json.loads(fields[b"result"])
    data["detections"] = [
        Detection(Component(**d["component"]), d["track_id"]) for d in data["detections"]
    ]
    data["tracks"] = [TrackState(**track) for track in data["tracks"]]
    return FrameResult(**data)


# --- workers -------------------------------------------------------------------------------------
async def live_workers(redis: Redis, keys: RedisKeys) -> list[dict[str, Any]]:
    """The registrations of the workers alive: heartbeat not expired, and connected to Redis."""
    names = [name async for name in redis.scan_iter(match=keys.worker("*"), count=1000)]
    if not names:
        return []
    values = await redis.mget(names)
    registrations = [json.loads(value) for value in values if value is not None]
    connected = await connected_client_names(redis)
    if connected is None:
        return registrations
    return [r for r in registrations if worker_client_name(r["id"]) in connected]


async def connected_client_names(redis: Redis) -> set[str] | None:
    """The names of the clients connected to Redis now; None where CLIENT LIST is refused
    (a managed Redis may rename or forbid it): then heartbeats alone tell who is alive."""
    try:
        clients = await redis.client_list()
    except ResponseError:
        return None
    return {client["name"] for client in clients if client.get("name")}
