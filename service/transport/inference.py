"""What the engine needs from whatever runs the models: the seam between one process and many.

Embedded (the default): :class:`service.worker.worker.InferenceWorker`, a thread of the API
process. Scale-out: :class:`service.transport.remote.RemoteWorkers`, ``irtrack worker`` processes
that the API process knows only through Redis. The engine admits frames and answers callers the
same way with either.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ModelCard:
    """A model as ``/v1/models`` and admission see it (no weights, no torch): what an embedded
    worker loaded, or what an ``irtrack worker`` registered in Redis."""

    name: str
    frames: int
    size_multiple: int
    parameters: int
    weights_sha256: str
    weights_source: str
    backend: (
        str  # "torch" or "onnxruntime": what runs the forward pass (Settings.inference_backend)
    )

    @property
    def streaming(self) -> bool:
        """Multi-frame models keep a per-stream window of cached features."""
        return self.frames > 1


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
