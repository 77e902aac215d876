"""The models as the worker runs them: loading, warm-up, and one batched forward pass.

This is the only part of the service that touches torch (and ONNX Runtime: on a CPU the
single-frame models run as their ONNX export, see ``Settings.inference_backend``). Frames of a batch may differ in size as
long as they pad to the same size: each is replicate-padded to the batch's padded size (exactly
what ``models.padding`` would do to it alone), run in one call, and its logits cropped back.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime
import torch
from torch import nn

from frames.sizes import padded_size
from models.devices import resolve_device, to_channels_last
from models.export import export_onnx, onnx_cpu_session
from models.padding import crop_to, pad_to_multiple
from models.registry import load_model, model_info
from models.std2net import STD2Net, StreamState, step_streams
from models.weights import file_sha256
from service.settings import Settings
from service.transport.inference import ModelCard
from service.worker.cuda_fast_path import GraphedForward, PinnedBuffers, batch_buckets

log = logging.getLogger(__name__)

# Sets of pinned buffers on CUDA: a batch's logits are read on the host while the next one runs.
PIPELINE_SLOTS = 2

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

CPU_MEMORY_BUDGET_BYTES = 1 << 30  # Settings.memory_budget_bytes unset, on a CPU
CUDA_MEMORY_BUDGET_SHARE = 0.8  # ... on CUDA: this share of the GPU's memory

# After a call larger than the steady ones, ONNX Runtime's arena gives back what it holds beyond
# the call's own tensors, instead of keeping its peak for good.
_SHRINK_ARENA = onnxruntime.RunOptions()
_SHRINK_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


@dataclass(frozen=True)
class WeightsChoice:
    """Which file a model loads, decided before anything is built."""

    path: Path | None  # None: random initialisation
    source: str  # "file" (weights_dir), "shipped" (models/weights) or "random-init"


@dataclass(frozen=True)
class LoadedModel(ModelCard):
    """A model card with the module it describes, on the worker's device."""

    module: nn.Module
    onnx: onnxruntime.InferenceSession | None = None  # the module's export, where ORT runs it
    # CUDA-graph replay of the module (single-frame models on CUDA, Settings.cuda_graphs)
    graphed: Callable[[torch.Tensor], torch.Tensor] | None = None


def choose_weights(settings: Settings) -> dict[str, WeightsChoice]:
    """The weights file of every configured model; raises if a configured folder lacks one.

    Called at start-up, before the (slow) loading, so a wrong path stops ``irtrack serve`` at once.
    """
    choices = {}
    for name in settings.models:
        if settings.weights_dir is not None:
            path = settings.weights_dir / f"{name}.safetensors"
            if not path.is_file():
                raise FileNotFoundError(f"IRTRACK_WEIGHTS_DIR has no {path.name} for model {name}")
            choices[name] = WeightsChoice(path, "file")
        elif (shipped := model_info(name).default_weights_path) is not None:
            choices[name] = WeightsChoice(shipped, "shipped")
        else:
            choices[name] = WeightsChoice(None, "random-init")
    return choices


def runs_on_onnxruntime(settings: Settings, device: torch.device, model: str) -> bool:
    """Whether ``model`` runs as its ONNX export: only single-frame models, on a CPU in float32
    (where ONNX Runtime beats torch, ``irtrack bench onnx``); ``inference_backend='onnxruntime'`` elsewhere
    is a configuration error, raised at start-up."""
    if settings.inference_backend == "torch" or model_info(model).frames != 1:
        return False
    possible = device.type == "cpu" and settings.dtype == "float32"
    if settings.inference_backend == "onnxruntime" and not possible:
        raise ValueError(
            f"IRTRACK_INFERENCE_BACKEND=onnxruntime runs on a CPU in float32, not on {device} in "
            f"{settings.dtype}: use IRTRACK_INFERENCE_BACKEND=auto or torch"
        )
    return possible


def memory_budget_bytes(settings: Settings, device: torch.device) -> int:
    """``Settings.memory_budget_bytes``, or its default for ``device``."""
    if settings.memory_budget_bytes is not None:
        return settings.memory_budget_bytes
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(total * CUDA_MEMORY_BUDGET_SHARE)
    return CPU_MEMORY_BUDGET_BYTES


def _malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)``: hand the free pages of every malloc arena back to the system
    (torch's CPU tensors and ONNX Runtime's buffers come from malloc; glibc keeps what they free
    for reuse, up to the largest call ever made). A no-op where the C library has none."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


malloc_trim = _malloc_trim()


class PendingLogits:
    """A submitted batch's logits: each frame's (H, W) float32, cropped to the frame.

    On CUDA they may still be on their way into a pinned buffer that a later batch reuses;
    ``result()`` waits for them (once) and keeps them in memory of their own. ``oversized``: the
    call was larger than the steady ones (``ModelRuntime.give_back_memory`` after it).
    """

    def __init__(
        self,
        logits: torch.Tensor,
        shapes: list[tuple[int, int]],
        landed: torch.cuda.Event | None = None,
        oversized: bool = False,
    ) -> None:
        self._logits = logits  # (B, 1, Hp, Wp) on the host
        self._shapes = shapes
        self._landed = landed
        self.oversized = oversized
        self._frames: list[np.ndarray] | None = None

    def result(self) -> list[np.ndarray]:
        if self._frames is None:
            if self._landed is not None:
                self._landed.synchronize()
            # Half-precision logits crossed as they are (half the bytes). Either way the
            # frames get a tensor of their own, off the reused pinned buffer.
            logits = self._logits.float()
            if logits is self._logits and self._landed is not None:
                logits = logits.clone()
            self._frames = [
                crop_to(logits[i, 0], shape).numpy() for i, shape in enumerate(self._shapes)
            ]
        return self._frames


class ModelRuntime:
    """Every configured model, on one device, in one dtype."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.dtype = DTYPES[settings.dtype]
        self.weights = choose_weights(settings)
        self.onnxruntime = {
            name: runs_on_onnxruntime(settings, self.device, name) for name in settings.models
        }
        self.models: dict[str, LoadedModel] = {}
        self.on_cuda = self.device.type == "cuda"
        self.memory_budget_bytes = memory_budget_bytes(settings, self.device)
        # Per model, the calls whose memory is kept for the next ones: a full batch of the
        # largest warm-up size. Larger calls give their memory back once answered.
        self._steady_call_pixels: dict[str, int] = {}
        self._pinned = PinnedBuffers()  # allocates on first use: on CUDA only
        self._next_slot = 0
        self._in_slot: list[PendingLogits | None] = [None] * PIPELINE_SLOTS

    def load(self) -> None:
        for name, choice in self.weights.items():
            with torch.random.fork_rng(devices=[]):  # leave the process's RNG as it was
                torch.manual_seed(self.settings.seed)  # a random init is the same every start
                module, _ = load_model(name, choice.path)
            module = module.to(device=self.device, dtype=self.dtype).eval()
            if self.settings.channels_last:
                module = to_channels_last(module)
            if choice.path is None:
                log.warning(
                    "NO TRAINED WEIGHTS for %s: serving a RANDOMLY INITIALISED model; its "
                    "detections are meaningless. Ship models/weights/%s or set IRTRACK_WEIGHTS_DIR",
                    name,
                    model_info(name).default_weights,
                )
                sha = _state_sha256(module)
            else:
                sha = file_sha256(choice.path)
                log.info("loaded %s from %s (sha256 %s)", name, choice.path, sha[:12])
            element_bytes = torch.finfo(self.dtype).bits // 8
            info = model_info(name)
            self._steady_call_pixels[name] = self.settings.max_batch * max(
                height * width
                for shape in self.settings.warmup_shapes()
                for height, width in [padded_size(*shape, info.size_multiple)]
            )
            self.models[name] = LoadedModel(
                name=name,
                module=module,
                backend="onnxruntime" if self.onnxruntime[name] else "torch",
                onnx=self._onnx_session(module) if self.onnxruntime[name] else None,
                graphed=self._graphed(name, module),
                frames=model_info(name).frames,
                size_multiple=model_info(name).size_multiple,
                parameters=sum(p.numel() for p in module.parameters()),
                weights_sha256=sha,
                weights_source=choice.source,
                peak_bytes_per_pixel=info.peak_bytes_per_pixel * element_bytes // 4,
                peak_bytes_per_pixel_squared=info.peak_bytes_per_pixel_squared * element_bytes / 4,
                state_bytes_per_pixel=info.state_values_per_pixel * element_bytes,
                device=str(self.device),
            )

    @staticmethod
    def _onnx_session(module: nn.Module) -> onnxruntime.InferenceSession:
        """ONNX Runtime session of ``module``'s export (a second or two per model at start-up)."""
        with tempfile.TemporaryDirectory(prefix="irtrack-onnx-") as folder:
            path = export_onnx(module, f"{folder}/model.onnx")
            return onnx_cpu_session(path.read_bytes(), threads=torch.get_num_threads())

    def _graphed(self, name: str, module: nn.Module) -> GraphedForward | None:
        if not (self.on_cuda and self.settings.cuda_graphs and model_info(name).frames == 1):
            return None
        return GraphedForward(module, self.settings.max_batch)

    def warm_up(self) -> None:
        """Run every model at every warm-up size so first requests do not pay for allocation,
        kernel selection and lazy initialisation; on CUDA once per batch bucket too, which
        captures the CUDA graphs of the steady-state shapes."""
        batches = batch_buckets(self.settings.max_batch) if self.on_cuda else [1]
        for model in self.models.values():
            for height, width in self.settings.warmup_shapes():
                frame = np.zeros((height, width), dtype=np.float32)
                for batch in batches:
                    states = [StreamState() for _ in range(batch)] if model.streaming else None
                    self.infer(model.name, [frame] * batch, states)
                log.info("warmed up %s (%s) at %dx%d", model.name, model.backend, width, height)

    def padded_size(self, model: str, size: tuple[int, int]) -> tuple[int, int]:
        """The (H, W) a frame of ``size`` runs at: frames sharing it can share a batch."""
        return padded_size(*size, self.models[model].size_multiple)

    def infer(
        self,
        model_name: str,
        frames: Sequence[np.ndarray],
        states: Sequence[StreamState] | None = None,
    ) -> list[np.ndarray]:
        """Logits (H, W) float32 for each normalised frame (H, W) float32 of one padded size.

        ``states`` (one per frame, multi-frame models only) are advanced by one frame each.
        """
        return self.submit(model_name, frames, states).result()

    def submit(
        self,
        model_name: str,
        frames: Sequence[np.ndarray],
        states: Sequence[StreamState] | None = None,
    ) -> PendingLogits:
        """Start :meth:`infer`'s work and return without waiting for the GPU: the logits come
        from the result's ``result()``. A CPU has computed them by the time this returns."""
        model = self.models[model_name]
        if model.streaming and (states is None or len(states) != len(frames)):
            raise ValueError(f"{model_name} needs one stream state per frame")
        shapes = [(frame.shape[0], frame.shape[1]) for frame in frames]
        padded = [
            pad_to_multiple(torch.from_numpy(frame)[None, None], model.size_multiple)
            for frame in frames
        ]
        call_pixels = len(frames) * model.padded_pixels(shapes[0])
        oversized = call_pixels > self._steady_call_pixels[model_name]
        if model.onnx is not None:
            run_options = _SHRINK_ARENA if oversized else None
            inputs = {"frames": torch.cat(padded).numpy()}
            (onnx_logits,) = model.onnx.run(None, inputs, run_options)
            return PendingLogits(torch.from_numpy(onnx_logits), shapes, oversized=oversized)
        if not self.on_cuda:
            batch = torch.cat(padded).to(device=self.device, dtype=self.dtype)
            logits = self._forward(model, batch, states).cpu()
            return PendingLogits(logits, shapes, oversized=oversized)
        return self._submit_on_cuda(model, padded, shapes, states, oversized)

    def _forward(
        self, model: LoadedModel, batch: torch.Tensor, states: Sequence[StreamState] | None
    ) -> torch.Tensor:
        if self.settings.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if model.streaming:
                assert states is not None
                return step_streams(cast(STD2Net, model.module), states, batch)
            if model.graphed is not None:
                return model.graphed(batch)
            return cast(torch.Tensor, model.module(batch))

    def _submit_on_cuda(
        self,
        model: LoadedModel,
        padded: list[torch.Tensor],
        shapes: list[tuple[int, int]],
        states: Sequence[StreamState] | None,
        oversized: bool,
    ) -> PendingLogits:
        """Frames -> pinned buffer -> GPU (asynchronous copy), the model's launches, logits ->
        pinned buffer (asynchronous copy), an event after them: nothing here waits for the GPU.

        Each submission takes the next of ``PIPELINE_SLOTS`` sets of pinned buffers, so one
        batch can be read on the host while the next runs; a set is reused only once the batch
        that last used it has landed (its logits are then kept in memory of their own).
        """
        slot = self._next_slot
        self._next_slot = (slot + 1) % PIPELINE_SLOTS
        if (previous := self._in_slot[slot]) is not None:
            self._in_slot[slot] = None
            previous.result()
        stream = torch.cuda.current_stream(self.device)
        try:
            staging_shape = (len(padded), *padded[0].shape[1:])
            staging = self._pinned.get(f"frames{slot}", staging_shape, torch.float32)
            torch.cat(padded, out=staging)
            batch = staging.to(self.device, non_blocking=True).to(self.dtype)
            logits = self._forward(model, batch, states)
            host = self._pinned.get(f"logits{slot}", tuple(logits.shape), logits.dtype)
            host.copy_(logits, non_blocking=True)
            landed = torch.cuda.Event()
            landed.record(stream)
        except BaseException:
            # Copies from this slot's buffers may still be in flight: let them end before the
            # slot is used again (after a sticky CUDA error this raises too; the first one wins).
            with contextlib.suppress(RuntimeError):
                stream.synchronize()
            raise
        pending = PendingLogits(host, shapes, landed, oversized)
        self._in_slot[slot] = pending
        return pending

    def give_back_memory(self) -> None:
        """Return the memory the calls freed (and the windows of streams that ended) to the
        system, so a process's RSS (or its GPU's) goes back down instead of keeping its peak.
        ONNX Runtime shrinks its arena only at the end of a run that asks for it: each model it
        runs gets one of a single frame of its size multiple (a millisecond)."""
        for model in self.models.values():
            if model.onnx is not None:
                side = model.size_multiple
                frame = np.zeros((1, 1, side, side), dtype=np.float32)
                model.onnx.run(None, {"frames": frame}, _SHRINK_ARENA)
        malloc_trim()
        if self.on_cuda:
            torch.cuda.empty_cache()

    def gpu_memory_bytes(self) -> float:
        if self.device.type != "cuda":
            return 0.0
        return float(torch.cuda.memory_allocated(self.device))


def _state_sha256(module: nn.Module) -> str:
    """A digest of a model's tensors: names random-init weights as a file hash names a file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()
