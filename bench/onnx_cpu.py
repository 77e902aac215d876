"""PyTorch vs ONNX Runtime (and torch channels_last) on CPU for the single-frame detectors.

Decides whether the service should run SD2Net / LRRNet through ONNX Runtime on a CPU: a row per
(model, size, batch, variant), where the variants are

- ``torch``: the eval-mode model as the service runs it (contiguous NCHW, ``inference_mode``);
- ``torch-channels-last``: the same weights and input in ``torch.channels_last`` memory format;
- ``onnxruntime``: the model exported by ``models.export.export_onnx`` (dynamic batch and size)
  in the session the service runs it in (``models.export.onnx_cpu_session``: intra-op threads =
  torch's threads, no spinning, denormals flushed to zero like the service's torch worker).

Variants of a row are timed round-robin (one run of each in turn) on the same input, so a
machine whose load changes during the row penalises them alike. Each row reports the median
latency per batch, frames/s, the speed-up over ``torch`` and the max |difference| of its logits
from ``torch``'s.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import onnxruntime
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
    machine_info,
    sizes_or_default,
    weights_label,
    weights_named,
    write_outputs,
)
from models.devices import to_channels_last
from models.export import export_onnx, onnx_cpu_session
from models.registry import load_model, model_info

DEFAULT_MODELS = ("sd2net", "lrrnet")
VARIANTS = ("torch", "torch-channels-last", "onnxruntime")

Runner = Callable[[], np.ndarray]


def run_onnx_benchmark(
    models: Sequence[str] = DEFAULT_MODELS,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    batches: Sequence[int] = DEFAULT_BATCHES,
    repeats: int = 5,
    warmup: int = 1,
    row_budget_s: float = 4.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """A row per (model, size, batch, variant); timing of a row stops after ``row_budget_s``
    seconds per variant (at least one run of each)."""
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="irtrack-onnx-") as workdir:
        for name in models:
            if model_info(name).frames != 1:
                raise ValueError(f"{name} is not a single-frame model; ONNX covers sd2net, lrrnet")
            model, weights = load_model(
                name
            )  # shipped weights if any; speed does not depend on them
            model = model.eval()
            label = weights_label(weights)
            channels_last = to_channels_last(copy.deepcopy(model))
            sizes = sorted(sizes, key=lambda hw: hw[0] * hw[1])
            exported = export_onnx(model, Path(workdir) / f"{name}.onnx", *sizes[0])  # dynamic axes
            session = onnx_cpu_session(exported, threads)
            multiple = model_info(name).size_multiple
            for height, width in sizes:
                if height % multiple or width % multiple:
                    raise ValueError(
                        f"{name} needs sizes that are multiples of {multiple}, got {height}x{width}"
                    )
                for batch in sorted(batches):
                    frames = torch.rand(batch, 1, height, width, generator=generator)
                    runners = _runners(model, channels_last, session, frames)
                    timed = _time_round_robin(runners, repeats, warmup, row_budget_s)
                    reference = timed["torch"]
                    for variant, (durations, logits) in timed.items():
                        median_s = statistics.median(durations)
                        rows.append(
                            {
                                "model": name,
                                "variant": variant,
                                "weights": label,
                                "threads": threads,
                                "height": height,
                                "width": width,
                                "batch": batch,
                                "runs": len(durations),
                                "median_ms": median_s * 1000,
                                "fps": batch / median_s,
                                "speedup": statistics.median(reference[0]) / median_s,
                                "max_abs_diff": float(np.abs(logits - reference[1]).max()),
                            }
                        )
    return rows


def _runners(
    model: nn.Module,
    channels_last: nn.Module,
    session: onnxruntime.InferenceSession,
    frames: torch.Tensor,
) -> dict[str, Runner]:
    frames_channels_last = frames.contiguous(memory_format=torch.channels_last)
    frames_numpy = frames.numpy()

    def run_torch() -> np.ndarray:
        with torch.inference_mode():
            return model(frames).numpy()

    def run_channels_last() -> np.ndarray:
        with torch.inference_mode():
            return channels_last(frames_channels_last).contiguous().numpy()

    def run_onnx() -> np.ndarray:
        (logits,) = session.run(None, {"frames": frames_numpy})
        return np.asarray(logits)

    return dict(zip(VARIANTS, (run_torch, run_channels_last, run_onnx), strict=True))


def _time_round_robin(
    runners: dict[str, Runner], repeats: int, warmup: int, row_budget_s: float
) -> dict[str, tuple[list[float], np.ndarray]]:
    """Per variant: the timed runs' durations and its logits. One run of each variant in turn,
    until ``repeats`` rounds or ``row_budget_s`` seconds per variant (at least one round)."""
    logits = {variant: run() for variant, run in runners.items()}  # also the first warm-up
    for _ in range(warmup - 1):
        for run in runners.values():
            run()
    durations: dict[str, list[float]] = {variant: [] for variant in runners}
    spent = 0.0
    while spent < row_budget_s * len(runners) and len(durations["torch"]) < max(repeats, 1):
        for variant, run in runners.items():
            start = time.perf_counter()
            run()
            durations[variant].append(time.perf_counter() - start)
            spent += durations[variant][-1]
    return {variant: (durations[variant], logits[variant]) for variant in runners}


def markdown_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """The docs table, with the machine it was measured on."""
    lines = [
        f"Measured {machine['date']} on {machine['cpu']} ({machine['torch_threads']} torch "
        f"threads = ONNX Runtime intra-op threads, load average {machine['load_average_1min']}), "
        f"torch {machine['torch']}, onnxruntime {onnxruntime.__version__}; forward only, median of "
        "the timed runs (variants timed in turn); speed-up and max abs diff against `torch`; "
        f"random frames; {weights_named(rows)}.",
        "",
        "| model | variant | batch | W x H | runs | median ms / batch | frames/s | speed-up | "
        "max abs diff |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['variant']} | {row['batch']} | "
            f"{row['width']} x {row['height']} | {row['runs']} | {row['median_ms']:.1f} | "
            f"{row['fps']:.2f} | {row['speedup']:.2f}x | {row['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def bench_onnx(
    models: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="sd2net or lrrnet; repeat (default: both)."),
    ] = None,
    sizes: SizesOption = None,
    batches: BatchesOption = None,
    repeats: Annotated[int, typer.Option(min=1, help="Most timed runs per variant.")] = 5,
    warmup: Annotated[int, typer.Option(min=1, help="Untimed runs per variant.")] = 1,
    row_budget: Annotated[
        float, typer.Option(help="Seconds of timed runs per variant and row (>= 1 run).")
    ] = 4.0,
    threads: Annotated[
        int | None,
        typer.Option(help="torch and ONNX Runtime CPU threads (default: torch's own choice)."),
    ] = None,
    json_path: JsonRowsOption = None,
    markdown_path: MarkdownOption = None,
) -> None:
    """PyTorch vs torch channels_last vs ONNX Runtime on CPU: latency, frames/s, max |diff|."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as the service's worker does
    rows = run_onnx_benchmark(
        models=models or DEFAULT_MODELS,
        sizes=sizes_or_default(sizes),
        batches=batches or DEFAULT_BATCHES,
        repeats=repeats,
        warmup=warmup,
        row_budget_s=row_budget,
    )
    machine = machine_info(torch.device("cpu")) | {"onnxruntime": onnxruntime.__version__}
    write_outputs(
        markdown_table(rows, machine), {"machine": machine, "rows": rows}, json_path, markdown_path
    )


if __name__ == "__main__":
    typer.run(bench_onnx)
