"""Model throughput: median latency per batch and frames/s of each detector, model alone.

Measures the network's forward pass only (no decoding, padding or post-processing), in eval mode
under ``torch.inference_mode``, on random frames in [0, 1] of each model's input layout
((B, 1, H, W), or (B, 5, H, W) windows for STD2Net, where one "frame" = one output frame). Each
row: warm-up runs (they absorb allocator and kernel-selection costs), then timed runs until
``repeats`` runs or ``row_budget_s`` seconds, whichever comes first (at least one). Rows whose
predicted single-run time (scaled linearly in pixels x batch from the largest row already measured
for that model) exceeds ``max_run_s`` are reported as skipped rather than stalling the run; this
keeps the default CPU run of ``irtrack bench models`` to a few minutes on a 2-core machine.

Modes (``--mode``, repeatable): ``eager`` (the module called as is), ``channels-last`` (weights
and input in ``torch.channels_last``), ``cuda-graph`` (CUDA only: the engine's
``GraphedForward``, one captured graph replayed per call; not for ``std2net-stream``, whose
per-stream rings live in Python). The default is ``eager`` on CPU and all three on CUDA.

Tables for docs/ come from ``--markdown PATH``, never typed by hand.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import torch
import typer
from torch import nn

from bench.common import (
    DEFAULT_BATCHES,
    DEFAULT_SIZES,
    BatchesOption,
    JsonRowsOption,
    MarkdownOption,
    SizesOption,
    ThreadsOption,
    device_name,
    machine_info,
    sizes_or_default,
    synchronize,
    write_outputs,
)
from models.devices import to_channels_last
from models.registry import build_model, model_info
from models.std2net import STD2Net, StreamState, step_streams
from service.worker.cuda_fast_path import GraphedForward

STREAMING = "std2net-stream"  # STD2Net's per-frame cost in a stream: cached ring, one backbone pass
DEFAULT_MODELS = ("sd2net", "std2net", STREAMING, "lrrnet")
WINDOW_FRAMES = {"std2net": 5, STREAMING: 5}  # frames the temporal head holds per sample
DEFAULT_MAX_WINDOW_PIXELS = 8e6
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MODES = ("eager", "channels-last", "cuda-graph")


def _timed_run(model: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor) -> float:
    """Seconds for one forward pass, including the wait for the GPU."""
    synchronize(frames.device)
    start = time.perf_counter()
    model(frames)
    synchronize(frames.device)
    return time.perf_counter() - start


class StreamingStep(nn.Module):
    """STD2Net as the service runs it: each call advances B streams by one frame (one backbone
    pass per frame + the temporal head), their rings already full, so it times the steady state."""

    frames = 1
    size_multiple = STD2Net.size_multiple

    def __init__(self, model: STD2Net) -> None:
        super().__init__()
        self.model = model
        self.states: list[StreamState] = []

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if len(self.states) != frames.shape[0] or self.states[0].feature_shape is None:
            self.states = [StreamState(self.model.window) for _ in range(frames.shape[0])]
        elif self.states[0].feature_shape[-2:] != frames.shape[-2:]:
            for state in self.states:
                state.reset()
        return step_streams(self.model, self.states, frames)


def build_benchmarked(name: str) -> tuple[nn.Module, int, int]:
    """(model, frames per sample, size multiple) of a registry model or of STD2Net's stream step."""
    if name == STREAMING:
        return StreamingStep(STD2Net()), StreamingStep.frames, StreamingStep.size_multiple
    info = model_info(name)
    return build_model(name), info.frames, info.size_multiple


def _predicted_run_s(measured: list[dict[str, Any]], workload: int) -> float | None:
    """Linear extrapolation from the largest measured workload (pixels x batch) of one model."""
    done = [row for row in measured if row["median_ms"] is not None]
    if not done:
        return None
    largest = max(done, key=lambda row: row["height"] * row["width"] * row["batch"])
    scale = workload / (largest["height"] * largest["width"] * largest["batch"])
    return float(largest["median_ms"]) / 1000 * scale


def run_model_benchmark(
    models: Sequence[str] = DEFAULT_MODELS,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    batches: Sequence[int] = DEFAULT_BATCHES,
    repeats: int = 5,
    warmup: int = 1,
    device: str = "cpu",
    dtypes: Sequence[str] | None = None,
    modes: Sequence[str] | None = None,
    row_budget_s: float = 4.0,
    max_run_s: float | None = 15.0,
    max_window_pixels: float | None = DEFAULT_MAX_WINDOW_PIXELS,
) -> list[dict[str, Any]]:
    """One row per (model, dtype, mode, size, batch), smallest workloads first.

    ``dtypes`` defaults to fp32 on CPU and fp32 + fp16 + bf16 on CUDA (weights and input cast to
    the dtype); ``modes`` to eager on CPU and every mode on CUDA. ``max_run_s=None`` measures every row however long it takes. Rows whose batch holds
    more than ``max_window_pixels`` pixels (batch x window frames x H x W) are skipped: STD2Net's
    full-resolution 96-channel head at 640x512 x 8 windows needs more than 20 GB of host memory.
    """
    torch_device = torch.device(device)
    on_cuda = torch_device.type == "cuda"
    dtypes = dtypes or (tuple(DTYPES) if on_cuda else ("fp32",))
    modes = modes or (MODES if on_cuda else ("eager",))
    unknown = sorted((set(dtypes) - set(DTYPES)) | (set(modes) - set(MODES)))
    if unknown:
        raise ValueError(f"unknown dtype or mode {unknown}: dtypes {list(DTYPES)}, modes {MODES}")
    if "cuda-graph" in modes and not on_cuda:
        raise ValueError("--mode cuda-graph needs --device cuda")
    generator = torch.Generator().manual_seed(0)
    rows: list[dict[str, Any]] = []
    for name, dtype_name, mode in itertools.product(models, dtypes, modes):
        dtype = DTYPES[dtype_name]
        model, frames_per_sample, size_multiple = build_benchmarked(name)
        model = model.eval().to(device=torch_device, dtype=dtype)
        if mode == "channels-last":
            model = to_channels_last(model)
        measured: list[dict[str, Any]] = []
        for height, width in sorted(sizes, key=lambda hw: hw[0] * hw[1]):
            if height % size_multiple or width % size_multiple:
                raise ValueError(
                    f"{name} needs sizes that are multiples of {size_multiple}, "
                    f"got {height}x{width}"
                )
            for batch in sorted(batches):
                row: dict[str, Any] = {
                    "model": name,
                    "device": str(torch_device),
                    "dtype": dtype_name,
                    "mode": mode,
                    "batch": batch,
                    "frames_per_sample": frames_per_sample,
                    "height": height,
                    "width": width,
                    "warmup": 0,
                    "runs": 0,
                    "median_ms": None,
                    "fps": None,
                    "skipped": None,
                }
                predicted = _predicted_run_s(measured, height * width * batch)
                window_pixels = batch * WINDOW_FRAMES.get(name, 1) * height * width
                if mode == "cuda-graph" and name == STREAMING:
                    row["skipped"] = "per-stream rings are Python state: not capturable"
                elif max_window_pixels is not None and window_pixels > max_window_pixels:
                    row["skipped"] = (
                        f"{window_pixels / 1e6:.1f} Mpx of windows > "
                        f"{max_window_pixels / 1e6:g} Mpx memory limit"
                    )
                elif max_run_s is not None and predicted is not None and predicted > max_run_s:
                    row["skipped"] = f"predicted {predicted:.0f} s per run > {max_run_s:g} s limit"
                else:
                    frames = torch.rand(
                        batch, frames_per_sample, height, width, generator=generator
                    ).to(device=torch_device, dtype=dtype)
                    if mode == "channels-last":
                        frames = frames.contiguous(memory_format=torch.channels_last)
                    runner = GraphedForward(model, batch) if mode == "cuda-graph" else model
                    row.update(_measure(runner, frames, repeats, warmup, row_budget_s))
                    measured.append(row)
                rows.append(row)
    return rows


def _measure(
    model: Callable[[torch.Tensor], torch.Tensor],
    frames: torch.Tensor,
    repeats: int,
    warmup: int,
    row_budget_s: float,
) -> dict[str, Any]:
    with torch.inference_mode():
        for _ in range(warmup):
            _timed_run(model, frames)
        durations: list[float] = []
        while len(durations) < max(repeats, 1) and (not durations or sum(durations) < row_budget_s):
            durations.append(_timed_run(model, frames))
    median_s = statistics.median(durations)
    return {
        "warmup": warmup,
        "runs": len(durations),
        "median_ms": median_s * 1000,
        "fps": frames.shape[0] / median_s,
    }


def markdown_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """The docs table, with the machine it was measured on."""
    lines = [
        f"Measured {machine['date']} on {device_name(machine)} ({machine['torch_threads']} torch "
        f"threads, load average {machine['load_average_1min']}), torch {machine['torch']}; "
        "model forward only, eval mode, median of the timed runs; randomly initialised weights "
        "(speed does not depend on their values).",
        "",
        "| model | device | dtype | mode | batch | W x H | runs | median ms / batch | frames/s |",
        "|---|---|---|---|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        size = f"{row['width']} x {row['height']}"
        head = (
            f"| {row['model']} | {row['device']} | {row['dtype']} | {row.get('mode', 'eager')} "
            f"| {row['batch']} | {size} |"
        )
        if row["skipped"]:
            lines.append(f"{head} 0 | skipped: {row['skipped']} | - |")
        else:
            lines.append(f"{head} {row['runs']} | {row['median_ms']:.1f} | {row['fps']:.2f} |")
    return "\n".join(lines) + "\n"


def bench_models(
    models: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model name; repeat for several (default: all three)."),
    ] = None,
    sizes: SizesOption = None,
    batches: BatchesOption = None,
    repeats: Annotated[int, typer.Option(help="Most timed runs per row.")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing each row.")] = 1,
    device: Annotated[str, typer.Option(help="'cpu', 'cuda' or 'auto'.")] = "cpu",
    dtypes: Annotated[
        list[str] | None,
        typer.Option(
            "--dtype", help="fp32, fp16, bf16; repeat (default: fp32 on CPU, all on CUDA)."
        ),
    ] = None,
    modes: Annotated[
        list[str] | None,
        typer.Option(
            "--mode", help=f"{', '.join(MODES)}; repeat (default: eager on CPU, all on CUDA)."
        ),
    ] = None,
    row_budget: Annotated[
        float, typer.Option(help="Stop timing a row after this many seconds (>= 1 run).")
    ] = 4.0,
    max_run_seconds: Annotated[
        float,
        typer.Option(help="Skip rows predicted to need longer per run; 0 = measure everything."),
    ] = 15.0,
    max_window_mpx: Annotated[
        float,
        typer.Option(help="Skip rows holding more Mpx (batch x window x H x W); 0 = no limit."),
    ] = DEFAULT_MAX_WINDOW_PIXELS / 1e6,
    threads: ThreadsOption = None,
    json_path: JsonRowsOption = None,
    markdown_path: MarkdownOption = None,
) -> None:
    """Benchmark the detectors' forward pass: median latency per batch and frames/s."""
    if threads is not None:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = run_model_benchmark(
        models=models or DEFAULT_MODELS,
        sizes=sizes_or_default(sizes),
        batches=batches or DEFAULT_BATCHES,
        repeats=repeats,
        warmup=warmup,
        device=device,
        dtypes=dtypes,
        modes=modes,
        row_budget_s=row_budget,
        max_run_s=max_run_seconds or None,
        max_window_pixels=max_window_mpx * 1e6 or None,
    )
    machine = machine_info(torch.device(device))
    write_outputs(
        markdown_table(rows, machine), {"machine": machine, "rows": rows}, json_path, markdown_path
    )


if __name__ == "__main__":
    typer.run(bench_models)
