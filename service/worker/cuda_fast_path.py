"""The engine's GPU fast path: CUDA graphs of the single-frame models at their steady-state
shapes, and pinned host buffers for asynchronous copies (CUDA only; the CPU path never uses it).

A forward pass of SD2Net launches hundreds of small kernels; at a few-pixel-target frame size the
GPU finishes each faster than Python can launch the next, so eager PyTorch leaves it idle most of
the time. A CUDA graph records the launches once per input shape and replays them with one call.

Shapes are (batch bucket, padded H, padded W): a batch is padded up to the next bucket (powers of
two up to the engine's ``max_batch``, and ``max_batch`` itself), so a stream mix that batches
3, 5 or 7 frames still replays one of a handful of graphs. Samples of a batch never interact in
these models (eval-mode normalisation and the BDM's reductions are per sample), so the padding
rows change nothing in the real rows. At most ``max_graphs`` shapes are kept (least recently used
dropped); a new shape is captured on first use (once), and the worker's warm-up
captures every bucket at the warm-up sizes so a live stream never waits for a capture.

STD2Net's cached streaming step (``models.std2net.step_streams``) gathers per-stream rings in
Python and runs eagerly: graphs here are for ``frames == 1`` models.

Copies: a batch is assembled in a page-locked (pinned) host buffer and sent with
``non_blocking=True``; logits come back into another one, and an event recorded after that copy
is what the host waits on, when it needs them (``service.worker.runtime.PendingLogits``). Pageable
memory would make the driver stage every copy through its own pinned buffer, synchronously.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


def batch_buckets(max_batch: int) -> list[int]:
    """Batch sizes a graph is captured for: 1, 2, 4, ... below ``max_batch``, and ``max_batch``."""
    buckets = []
    size = 1
    while size < max_batch:
        buckets.append(size)
        size *= 2
    return [*buckets, max_batch]


def bucket_for(batch: int, max_batch: int) -> int:
    """The smallest bucket that holds ``batch`` frames."""
    if not 1 <= batch <= max_batch:
        raise ValueError(f"batch of {batch} frames outside 1..{max_batch}")
    return next(bucket for bucket in batch_buckets(max_batch) if bucket >= batch)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: torch.Tensor  # static input the graph reads
    outputs: torch.Tensor  # static output the graph writes


class GraphedForward:
    """Replays a captured CUDA graph of ``module`` for each input shape (B, 1, H, W)."""

    def __init__(
        self, module: nn.Module, max_batch: int, max_graphs: int = 16, warmup_runs: int = 3
    ) -> None:
        self.module = module
        self.max_batch = max_batch
        self.max_graphs = max_graphs
        self.warmup_runs = warmup_runs
        self._graphs: OrderedDict[tuple[int, ...], _Captured] = OrderedDict()
        self.failed = False  # a capture failed: every call runs eagerly

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Captured input shapes, least recently used first."""
        return list(self._graphs)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits of ``batch`` (on the module's CUDA device and dtype); the result is a view of
        the graph's static output, valid until the next call: copy it out before then."""
        if self.failed:
            return self.module(batch)
        count = batch.shape[0]
        shape = (bucket_for(count, self.max_batch), *batch.shape[1:])
        captured = self._graphs.get(shape)
        if captured is None:
            try:
                captured = self._capture(shape, batch.device, batch.dtype)
            except RuntimeError:
                # A module that cannot be captured (a host sync inside it, say) still serves,
                # eagerly, rather than failing the worker.
                log.exception("CUDA graph capture failed; running %s eagerly", type(self.module))
                self.failed = True
                self._graphs.clear()
                return self.module(batch)
        else:
            self._graphs.move_to_end(shape)
        captured.inputs[:count].copy_(batch)
        captured.graph.replay()
        return captured.outputs[:count]

    def _capture(
        self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
    ) -> _Captured:
        while len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
        inputs = torch.zeros(shape, device=device, dtype=dtype)
        # Lazy initialisation (cuDNN algorithm choice, allocator growth) must happen before the
        # capture, on a side stream, as torch.cuda.graphs' documentation prescribes.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(self.warmup_runs):
                self.module(inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            outputs = self.module(inputs)
        captured = _Captured(graph, inputs, outputs)
        self._graphs[shape] = captured
        return captured


class PinnedBuffers:
    """Reusable page-locked host tensors, one per (role, shape), the least recently used dropped
    beyond ``max_buffers`` (each is a frame batch: megabytes, and slow to allocate).

    The leading (batch) dimension is rounded up to a power of two and a slice handed out, so
    batches of 5, 6 or 7 frames share one buffer instead of allocating one each.
    """

    def __init__(self, max_buffers: int = 16) -> None:
        self.max_buffers = max_buffers
        self._buffers: OrderedDict[tuple[object, ...], torch.Tensor] = OrderedDict()

    def get(self, role: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        rows = shape[0]
        key = (role, (1 << (rows - 1).bit_length(), *shape[1:]), dtype)
        buffer = self._buffers.get(key)
        if buffer is None:
            while len(self._buffers) >= self.max_buffers:
                self._buffers.popitem(last=False)
            buffer = torch.empty(key[1], dtype=dtype, pin_memory=True)
            self._buffers[key] = buffer
        else:
            self._buffers.move_to_end(key)
        return buffer[:rows]
