"""Cross-caller batching as one small mechanism (the idea of Ray Serve's ``@serve.batch``).

Items are grouped by a key (the worker uses (model, padded height, padded width): frames that can
share one model call). A group is *due* when it holds a full batch or its oldest item has waited
``max_wait_s``; due groups are served oldest-first, so no key starves another. A full batch is
``max_batch`` items, or fewer where ``batch_limit(key)`` says so (the worker: what fits its
memory budget). The batcher keeps no clock and starts no thread: the caller passes ``now``, which
keeps it easy to test.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class Batcher(Generic[Item]):
    """Pending items grouped by key, released in batches of at most ``max_batch``."""

    def __init__(
        self,
        max_batch: int,
        max_wait_s: float,
        batch_limit: Callable[[Hashable], int] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._batch_limit = batch_limit
        self._groups: dict[Hashable, deque[tuple[float, Item]]] = {}

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def add(self, key: Hashable, item: Item, now: float) -> None:
        self._groups.setdefault(key, deque()).append((now, item))

    def seconds_until_due(self, now: float) -> float | None:
        """0 when a batch is due, the wait until the next one otherwise, None when empty."""
        if not self._groups:
            return None
        if any(len(group) >= self.full(key) for key, group in self._groups.items()):
            return 0.0
        oldest = min(group[0][0] for group in self._groups.values())
        return max(0.0, oldest + self.max_wait_s - now)

    def full(self, key: Hashable) -> int:
        """Items in a full batch of ``key``: ``max_batch``, or fewer where the limit says so."""
        limit = self.max_batch if self._batch_limit is None else self._batch_limit(key)
        return max(1, min(self.max_batch, limit))

    def next_batch(self, now: float) -> tuple[Hashable, list[Item]] | None:
        """Pop the due group whose oldest item waited longest (up to a full batch).

        ``now=math.inf`` makes every group due: how the worker drains at shutdown.
        """
        due = [
            (group[0][0], key)
            for key, group in self._groups.items()
            if len(group) >= self.full(key) or now - group[0][0] >= self.max_wait_s
        ]
        if not due:
            return None
        _, key = min(due, key=lambda entry: entry[0])
        group = self._groups[key]
        batch = [group.popleft()[1] for _ in range(min(self.full(key), len(group)))]
        if not group:
            del self._groups[key]
        return key, batch


DRAIN_ALL = math.inf
