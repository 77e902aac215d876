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

__all__ = [
    "AsyncClient",
    "BlockingStream",
    "Client",
    "FrameEvent",
    "IrtrackError",
    "LiveStream",
    "Reconnected",
    "StreamEvent",
    "StreamFailed",
    "StreamStats",
]
