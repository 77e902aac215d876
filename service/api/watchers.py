"""Watchers: read-only followers of a stream (the /viewer page), handed every answer of it.

A watcher never slows down the stream it watches: it has a small queue that drops its oldest
answer when the watcher falls behind, and counts what it dropped. The engine publishes each
answer of a stream frame, WebSocket or REST, once the frame is settled. Watchers are keyed by
stream id, not by session, so a viewer opened before the camera starts, or kept open while the
stream restarts, goes on showing it. At most ``max_watchers`` exist at once.
"""

from __future__ import annotations

import asyncio
from collections import deque

from service.errors import Overloaded
from service.transport.messages import Answer

WATCHER_QUEUE_DEPTH = 2  # answers a watcher may be behind before its oldest is dropped
MAX_WATCHERS = 32


class Watcher:
    """One follower of one stream: the newest few answers, and how many it missed."""

    def __init__(self, stream_id: str, depth: int) -> None:
        self.stream_id = stream_id
        self.dropped = 0
        self._answers: deque[Answer] = deque(maxlen=depth)
        self._arrived = asyncio.Event()

    def push(self, answer: Answer) -> None:
        if len(self._answers) == self._answers.maxlen:
            self.dropped += 1
        self._answers.append(answer)
        self._arrived.set()

    async def next(self) -> Answer:
        while not self._answers:
            self._arrived.clear()
            await self._arrived.wait()
        return self._answers.popleft()


class WatcherRegistry:
    def __init__(self, max_watchers: int = MAX_WATCHERS, depth: int = WATCHER_QUEUE_DEPTH) -> None:
        self.max_watchers = max_watchers
        self.depth = depth
        self._by_stream: dict[str, set[Watcher]] = {}

    def __len__(self) -> int:
        return sum(len(watchers) for watchers in self._by_stream.values())

    def add(self, stream_id: str) -> Watcher:
        if len(self) >= self.max_watchers:
            raise Overloaded(
                f"{self.max_watchers} watchers are connected", code="too_many_watchers"
            )
        watcher = Watcher(stream_id, self.depth)
        self._by_stream.setdefault(stream_id, set()).add(watcher)
        return watcher

    def remove(self, watcher: Watcher) -> None:
        watchers = self._by_stream.get(watcher.stream_id, set())
        watchers.discard(watcher)
        if not watchers:
            self._by_stream.pop(watcher.stream_id, None)

    def publish(self, answer: Answer) -> None:
        """Hand a stream frame's answer to the stream's watchers (never waits)."""
        stream_id = answer.request.stream_id
        for watcher in self._by_stream.get(stream_id, ()) if stream_id is not None else ():
            watcher.push(answer)
