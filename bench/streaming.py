"""STD2Net streaming: the cached ring of backbone features vs recomputing the 5-frame window.

A stream's STD2Net result needs the backbone features of its last 5 frames. The service keeps them
in a per-stream ring (``models.std2net.StreamState``) and runs the backbone once per new frame
(``step_streams``); the naive alternative runs the full model on the 5-frame window of every
frame, i.e. the backbone 5 times per frame. This benchmark times both on the same frames, in the
same run, step by step: at each step B streams advance by one frame, first through the cached
path, then through the window recomputation (the order alternates between steps so neither path
always runs on a warmer cache), and it checks that both give the same logits.

Each row: median ms per step (B frames) of each path, frames/s, the speed-up of the ring, and the
max |difference| of their logits over every step (the two paths are the same function, so it is
~1e-6). Rows whose recomputed windows would hold more than ``max_window_pixels`` pixels are
skipped (STD2Net's full-resolution head needs tens of GB there).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Annotated, Any

import torch
import typer

from bench.common import (
    DEFAULT_BATCHES,
    DEFAULT_SIZES,
    JsonRowsOption,
    MarkdownOption,
    SizesOption,
    ThreadsOption,
    device_name,
    machine_info,
    sizes_or_default,
    synchronize,
    weights_label,
    weights_named,
    write_outputs,
)
from bench.model_throughput import DEFAULT_MAX_WINDOW_PIXELS, DTYPES
from models.registry import load_model
from models.std2net import STD2Net, StreamState, step_streams


def run_streaming_benchmark(
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    batches: Sequence[int] = DEFAULT_BATCHES,
    steps: int = 5,
    warmup: int = 1,
    row_budget_s: float = 60.0,
    max_window_pixels: float | None = DEFAULT_MAX_WINDOW_PIXELS,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "fp32",
) -> list[dict[str, Any]]:
    """One row per (size, batch): both paths timed over the same ``warmup + steps`` frames.

    Warm-up steps are run (and compared) but not timed; timing stops after ``row_budget_s``
    seconds of timed steps (at least one step), which bounds the slow CPU rows.
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    model, weights = load_model("std2net")  # shipped weights if any; speed does not depend on them
    torch_device = torch.device(device)
    model = model.eval().to(device=torch_device, dtype=DTYPES[dtype])
    if not isinstance(model, STD2Net):
        raise TypeError("the std2net registry entry is not an STD2Net")
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for height, width in sorted(sizes, key=lambda hw: hw[0] * hw[1]):
        if height % model.size_multiple or width % model.size_multiple:
            raise ValueError(
                f"std2net needs sizes that are multiples of {model.size_multiple}, "
                f"got {height}x{width}"
            )
        for batch in sorted(batches):
            row: dict[str, Any] = {
                "model": "std2net",
                "weights": weights_label(weights),
                "device": str(torch_device),
                "dtype": dtype,
                "height": height,
                "width": width,
                "batch": batch,
                "window": model.window,
                "warmup": warmup,
                "steps": 0,
                "cached_ms": None,
                "recompute_ms": None,
                "cached_fps": None,
                "recompute_fps": None,
                "speedup": None,
                "max_abs_diff": None,
                "skipped": None,
            }
            window_pixels = batch * model.window * height * width
            if max_window_pixels is not None and window_pixels > max_window_pixels:
                row["skipped"] = (
                    f"{window_pixels / 1e6:.1f} Mpx of windows > "
                    f"{max_window_pixels / 1e6:g} Mpx memory limit"
                )
            else:
                frames = torch.rand(warmup + steps, batch, 1, height, width, generator=generator)
                frames = frames.to(device=torch_device, dtype=DTYPES[dtype])
                row.update(_compare_paths(model, frames, warmup, row_budget_s))
            rows.append(row)
    return rows


def _compare_paths(
    model: STD2Net, frames: torch.Tensor, warmup: int, row_budget_s: float
) -> dict[str, Any]:
    """Advance ``B`` streams through ``T`` steps of frames (T, B, 1, H, W) along both paths."""
    batch = frames.shape[1]
    states = [StreamState(model.window) for _ in range(batch)]
    durations: dict[str, list[float]] = {"cached": [], "recompute": []}
    max_diff = 0.0
    with torch.inference_mode():
        for step in range(frames.shape[0]):
            window = _window_at(frames, step, model.window)  # (B, window, H, W)
            logits = {}
            for path in ("cached", "recompute") if step % 2 == 0 else ("recompute", "cached"):
                synchronize(frames.device)
                start = time.perf_counter()
                if path == "cached":
                    logits[path] = step_streams(model, states, frames[step])
                else:
                    logits[path] = model(window)
                synchronize(frames.device)
                if step >= warmup:
                    durations[path].append(time.perf_counter() - start)
            difference = (logits["cached"].float() - logits["recompute"].float()).abs().max()
            max_diff = max(max_diff, float(difference))
            if sum(map(sum, durations.values())) >= row_budget_s and durations["cached"]:
                break
    cached_s, recompute_s = durations["cached"], durations["recompute"]
    cached_median = statistics.median(cached_s)
    recompute_median = statistics.median(recompute_s)
    return {
        "steps": len(cached_s),
        "cached_ms": cached_median * 1000,
        "recompute_ms": recompute_median * 1000,
        "cached_fps": batch / cached_median,
        "recompute_fps": batch / recompute_median,
        "speedup": recompute_median / cached_median,
        "max_abs_diff": max_diff,
    }


def _window_at(frames: torch.Tensor, step: int, window: int) -> torch.Tensor:
    """Each stream's window ending at ``step``, oldest first, the first frame repeated before
    the stream has ``window`` frames (``StreamState``'s convention): (B, window, H, W)."""
    index = [max(0, step - offset) for offset in range(window - 1, -1, -1)]
    return frames[index, :, 0].transpose(0, 1).contiguous()


def markdown_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """The docs table, with the machine it was measured on."""
    lines = [
        f"Measured {machine['date']} on {device_name(machine)} ({machine['torch_threads']} torch "
        f"threads, load average {machine['load_average_1min']}), torch {machine['torch']}; "
        f"STD2Net in {rows[0]['dtype'] if rows else 'fp32'}, one step = each of `batch` streams "
        "advances by one frame; median of the timed "
        "steps. cached: one backbone pass per frame + the temporal head on the ring "
        "(`step_streams`); recompute: the full model on the 5-frame window; random frames; "
        f"{weights_named(rows)}.",
        "",
        "| W x H | batch | steps | cached ms / step | recompute ms / step | cached frames/s | "
        "recompute frames/s | speed-up | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        head = f"| {row['width']} x {row['height']} | {row['batch']} |"
        if row["skipped"]:
            lines.append(f"{head} 0 | skipped: {row['skipped']} | - | - | - | - | - |")
        else:
            lines.append(
                f"{head} {row['steps']} | {row['cached_ms']:.1f} | {row['recompute_ms']:.1f} | "
                f"{row['cached_fps']:.2f} | {row['recompute_fps']:.2f} | "
                f"{row['speedup']:.2f}x | {row['max_abs_diff']:.1e} |"
            )
    return "\n".join(lines) + "\n"


def bench_streaming(
    sizes: SizesOption = None,
    batches: Annotated[
        list[int] | None,
        typer.Option("--batch", "-b", help="Streams advanced together; repeat (default: 1, 8)."),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Timed steps per row.")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps before timing.")] = 1,
    row_budget: Annotated[
        float, typer.Option(help="Stop timing a row after this many seconds (>= 1 step).")
    ] = 60.0,
    max_window_mpx: Annotated[
        float,
        typer.Option(help="Skip rows holding more Mpx (batch x 5 x H x W); 0 = no limit."),
    ] = DEFAULT_MAX_WINDOW_PIXELS / 1e6,
    threads: ThreadsOption = None,
    device: Annotated[str, typer.Option(help="'cpu', 'cuda' or 'cuda:1'.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="fp32, fp16 or bf16.")] = "fp32",
    json_path: JsonRowsOption = None,
    markdown_path: MarkdownOption = None,
) -> None:
    """STD2Net streaming: cached feature ring vs recomputing the 5-frame window, same frames."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as the service's worker does: subnormals cost a CPU dearly
    rows = run_streaming_benchmark(
        sizes=sizes_or_default(sizes),
        batches=batches or DEFAULT_BATCHES,
        steps=steps,
        warmup=warmup,
        row_budget_s=row_budget,
        max_window_pixels=max_window_mpx * 1e6 or None,
        device=device,
        dtype=dtype,
    )
    machine = machine_info(torch.device(device))
    write_outputs(
        markdown_table(rows, machine), {"machine": machine, "rows": rows}, json_path, markdown_path
    )


if __name__ == "__main__":
    typer.run(bench_streaming)
