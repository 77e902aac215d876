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
from typing import Any, Protocol

from frames.sizes import padded_size


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
    # a call's working memory per frame, in its dtype: these x padded pixels (and their square)
    peak_bytes_per_pixel: int
    peak_bytes_per_pixel_squared: float
    state_bytes_per_pixel: int  # what a stream keeps between frames (0: single-frame models)
    device: str  # where it runs: "cpu", "cuda:0"... (a GPU makes STD2Net the streams' default)

    @classmethod
    def from_listing(cls, listing: dict[str, Any]) -> ModelCard:
        """A card from a model's entry of ``GET /v1/models`` (which has every field and more)."""
        return cls(**{name: listing[name] for name in cls.__dataclass_fields__})

    @property
    def streaming(self) -> bool:
        """Multi-frame models keep a per-stream window of cached features."""
        return self.frames > 1

    def padded_pixels(self, size: tuple[int, int]) -> int:
        """Pixels a frame of (H, W) ``size`` runs at, padded to the size multiple."""
        height, width = padded_size(*size, self.size_multiple)
        return height * width

    def call_bytes(self, size: tuple[int, int]) -> int:
        """Peak working memory of one frame of ``size`` in a model call."""
        pixels = self.padded_pixels(size)
        return int(
            self.peak_bytes_per_pixel * pixels + self.peak_bytes_per_pixel_squared * pixels**2
        )

    def state_bytes(self, size: tuple[int, int]) -> int:
        """What a stream of frames of ``size`` keeps between frames."""
        return self.state_bytes_per_pixel * self.padded_pixels(size)


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

    @property
    def memory_budget_bytes(self) -> int:
        """What model calls and stream state may take together (0 until ``ready``)."""
        ...

    def start(self) -> None:
        """Begin (called on the event loop); loading may go on in the background."""

    def stop(self, timeout_s: float) -> None:
        """Finish the frames in hand, waiting ``timeout_s`` at most (called on a thread)."""
