"""Clients of the irtrack service: the Python SDK (blocking and asyncio) and ``irtrack stream``.

The SDK needs no torch: ``from clients import Client`` loads httpx, websockets, pydantic and
OpenCV only.
"""

from clients.client import AsyncClient, BlockingStream, Client, IrtrackError
from clients.live import (
    FrameEvent,
    LiveStream,
    Reconnected,
    StreamEvent,
    StreamFailed,
    StreamStats,
)
from frames.options import DetectionOptions, IgnoreRegion

__all__ = [
    "AsyncClient",
    "BlockingStream",
    "Client",
    "DetectionOptions",
    "FrameEvent",
    "IgnoreRegion",
    "IrtrackError",
    "LiveStream",
    "Reconnected",
    "StreamEvent",
    "StreamFailed",
    "StreamStats",
]
