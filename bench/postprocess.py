"""Post-processing per frame: the whole frame's sigmoid vs thresholding in logit space.

On a GPU the model takes a millisecond or two per batch, and the worker thread then spends its
time on each frame's post-processing, serially: that cost caps the frames/s one worker delivers.
This times, on the same logits, the two ways of turning them into targets and a mask:

- ``sigmoid``: ``sigmoid`` of the whole frame, ``find_components`` on it, the mask
  ``prob > threshold`` (the worker's path until 2026-11-30);
- ``logits``: ``detect_in_logits`` (the exact sigmoid only near the threshold's logit, the peak
  score as the sigmoid of the peak logit), the worker's path now;

and checks that both give the same components and mask. Logits come from the shipped SD2Net
weights run on real frames (the first clip of ``<shared>/data/videos``, scaled to each size), so
the share of pixels near the threshold is what a real scene gives. Each row: median ms per frame
of each path over ``repeats`` passes over the frames.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import torch
import typer

from bench.common import (
    JsonRowsOption,
    MarkdownOption,
    SizesOption,
    machine_info,
    sizes_or_default,
    weights_label,
    weights_named,
    write_outputs,
)
from bench.service_e2e import load_clip
from frames.postprocess import Component, detect_in_logits, find_components, sigmoid
from frames.preprocess import normalize_frame
from service.codecs import encode_rle
from service.settings import Settings
from service.worker.runtime import ModelRuntime

PATHS = ("sigmoid", "logits")
Detector = Callable[[np.ndarray], tuple[list[Component], dict[str, list[int]]]]


def _by_sigmoid(threshold: float) -> Detector:
    def detect(logits: np.ndarray) -> tuple[list[Component], dict[str, list[int]]]:
        prob = sigmoid(logits)
        return find_components(prob, threshold), encode_rle(prob > threshold)

    return detect


def _by_logits(threshold: float) -> Detector:
    def detect(logits: np.ndarray) -> tuple[list[Component], dict[str, list[int]]]:
        components, binary = detect_in_logits(logits, threshold)
        return components, encode_rle(binary)

    return detect


def run_postprocess_benchmark(
    sizes: list[tuple[int, int]], frames: int = 8, repeats: int = 5, threshold: float = 0.5
) -> list[dict[str, Any]]:
    runtime = ModelRuntime(Settings(models=["sd2net"], device="cpu"))
    runtime.load()
    rows = []
    for size in sizes:
        clip, source = load_clip(size, count=frames)
        logits = [runtime.infer("sd2net", [normalize_frame(frame)])[0] for frame in clip]
        detectors = {"sigmoid": _by_sigmoid(threshold), "logits": _by_logits(threshold)}
        outputs = {path: [detectors[path](x) for x in logits] for path in PATHS}
        if outputs["sigmoid"] != outputs["logits"]:
            raise AssertionError(f"the two paths disagree at {size}")
        timings: dict[str, list[float]] = {path: [] for path in PATHS}
        for _ in range(repeats):
            for path in PATHS:
                start = time.perf_counter()
                for x in logits:
                    detectors[path](x)
                timings[path].append((time.perf_counter() - start) / len(logits))
        sigmoid_ms, logits_ms = (statistics.median(timings[p]) * 1000 for p in PATHS)
        rows.append(
            {
                "model": "sd2net",
                "weights": weights_label(runtime.weights["sd2net"].path),
                "height": size[0],
                "width": size[1],
                "frames": len(logits),
                "frames_from": source,
                "targets_per_frame": sum(len(o[0]) for o in outputs["logits"]) / len(logits),
                "near_threshold_share": float(
                    np.mean([np.mean(np.abs(x) < 1.0) for x in logits])
                ),  # |logit| < 1: pixels a threshold of 0.5 +- 0.23 would decide
                "sigmoid_ms": sigmoid_ms,
                "logits_ms": logits_ms,
                "speedup": sigmoid_ms / logits_ms,
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [
        f"Measured {machine['date']} on {machine['cpu']}, on the calling thread (as in the worker), shipped "
        "SD2Net logits of real frames; per frame: components + mask, median of the passes. Both "
        f"paths gave the same components and masks; {weights_named(rows)}.",
        "",
        "| W x H | frames | targets / frame | sigmoid path ms | logits path ms | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['width']} x {row['height']} | {row['frames']} | "
            f"{row['targets_per_frame']:.1f} | {row['sigmoid_ms']:.2f} | {row['logits_ms']:.2f} "
            f"| {row['speedup']:.1f}x |"
        )
    return "\n".join(lines) + "\n"


def bench_postprocess(
    sizes: SizesOption = None,
    frames: Annotated[int, typer.Option(min=1, help="Frames of the clip per size.")] = 8,
    repeats: Annotated[int, typer.Option(min=1, help="Timed passes over the frames.")] = 5,
    json_path: JsonRowsOption = None,
    markdown_path: MarkdownOption = None,
) -> None:
    """Post-processing per frame: whole-frame sigmoid vs thresholding in logit space."""
    rows = run_postprocess_benchmark(list(sizes_or_default(sizes)), frames, repeats)
    machine = machine_info(torch.device("cpu"))
    write_outputs(
        markdown_table(rows, machine), {"machine": machine, "rows": rows}, json_path, markdown_path
    )
