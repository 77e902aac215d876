"""What the engine needs from whatever runs the models: the seam between one process and many.

Embedded (the default): :class:`service.engine.worker.InferenceWorker`, a thread of the API
process. Scale-out: :class:`service.engine.remote.RemoteWorkers`, ``irtrack worker`` processes
that the API process knows only through Redis. The engine admits frames and answers callers the
same way with either.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol


class ModelCard(Protocol):
    """A model as ``/v1/models`` and admission see it (no weights, no torch)."""

    @property
    def name(self) -> str: ...

    @property
    def frames(self) -> int: ...

    @property
    def size_multiple(self) -> int: ...

    @property
    def parameters(self) -> int: ...

    @property
    def weights_sha256(self) -> str: ...

    @property
    def weights_source(self) -> str: ...

    @property
    def streaming(self) -> bool: ...


class Inference(Protocol):
    """Runs the models; ``ready`` is set while frames can be served."""

    ready: threading.Event
    load_error: BaseException | None

    @property
    def alive(self) -> bool:
        """False once it can no longer serve (the process should be restarted)."""
        ...

    @property
    def models(self) -> Mapping[str, ModelCard]: ...

    def start(self) -> None:
        """Begin (called on the event loop); loading may go on in the background."""

    def stop(self, timeout_s: float) -> None:
        """Finish the frames in hand, waiting ``timeout_s`` at most (called on a thread)."""
