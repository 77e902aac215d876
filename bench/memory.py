"""``irtrack bench memory``: what frames cost in memory, and whether the limits' defaults hold.

Three parts, each a table (``--part``):

- ``calls``: each model on each backend (a fresh process per pair, the service's own
  ``ModelRuntime``): the peak RSS a call of one frame adds per frame size (``/proc`` high-water
  mark, reset before the call), in bytes per padded pixel, beside the registry's estimate that
  the memory budget admits frames by; and the RSS left once the runtime gave the memory back.
- ``streams``: STD2Net's per-stream windows: RSS held per stream after 5 frames, beside the
  estimate, and what is left once the streams are freed.
- ``service``: a real ``irtrack serve`` at its default settings (every model, default limits and
  memory budget): RSS loaded, warm (after a few frames of the warm-up size), the peak while
  serving the largest frame each model admits (the worst admissible request), and RSS afterwards
  (``--limit-gb`` is the memory it must fit; back within 10% of warm is the other target).

Tables go to ``--markdown`` (docs/results/memory-*.md, the blocks of docs/reliability.md).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import numpy as np
import torch
import typer

from bench.common import SizesOption, device_name, machine_info, served_weights, write_outputs
from bench.process_memory import MiB, peak_rss_bytes, peak_rss_growth, reset_peak_rss, rss_bytes
from bench.processes import service_stack
from frames.sizes import format_size, parse_size
from models import MODEL_NAMES
from models.std2net import StreamState
from service.transport.inference import ModelCard

PARTS = ("calls", "streams", "service")
CALL_SIZES = ((256, 256), (1, 16384), (512, 512), (512, 640), (768, 768), (1024, 1024))
STREAM_SIZES = ((128, 128), (256, 256), (512, 640))
STREAMS_MEASURED = 4
STEADY_FRAMES = 5
SETTLE_S = 4.0  # the worker gives memory back once idle (2 s): wait for it before reading RSS


# --- calls -----------------------------------------------------------------------------------
def backends_of(model: str) -> list[Literal["onnxruntime", "torch"]]:
    """STD2Net's stream step runs in torch only; the single-frame models on both backends."""
    return ["torch"] if model == "std2net" else ["onnxruntime", "torch"]


def measure_calls(
    model: str,
    backend: Literal["onnxruntime", "torch"],
    sizes: Sequence[tuple[int, int]],
    threads: int,
) -> list[dict[str, Any]]:
    """One row per size (ascending): one frame through the service's ModelRuntime. Runs in the
    calling process: give it a fresh one (:func:`in_fresh_process`)."""
    from service.settings import Settings
    from service.worker.runtime import ModelRuntime

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as the worker does
    settings = Settings(
        models=[model],
        default_model=model,
        inference_backend=backend,
        warmup_sizes=["32x32"],
        torch_threads=threads,
    )
    runtime = ModelRuntime(settings)
    runtime.load()
    runtime.warm_up()
    card = runtime.models[model]
    rows = []
    for height, width in sorted(sizes, key=lambda hw: hw[0] * hw[1]):
        frame = np.random.default_rng(0).random((height, width), dtype=np.float32)
        states = [StreamState()] if card.streaming else None
        runtime.give_back_memory()
        with peak_rss_growth() as memory:
            started = time.perf_counter()
            runtime.infer(model, [frame], states)
            seconds = time.perf_counter() - started
        del states
        runtime.give_back_memory()
        padded = card.padded_pixels((height, width))
        rows.append(
            {
                "model": model,
                "backend": card.backend,
                "width": width,
                "height": height,
                "padded_pixels": padded,
                "peak_growth_bytes": memory["peak"] - memory["before"],
                "estimate_bytes": card.call_bytes((height, width)),
                "left_after_bytes": rss_bytes() - memory["before"],
                "seconds": seconds,
            }
        )
    return rows


def in_fresh_process(function: Any, *args: Any) -> Any:
    """``function(*args)`` in a new interpreter (spawned): a measurement that must not see the
    memory an earlier one left behind."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def calls_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [
        f"Measured {machine['date']} on {device_name(machine)}, torch {machine['torch']}, "
        f"{machine['torch_threads']} threads, one frame per call, "
        f"{served_weights(sorted({row['model'] for row in rows}))}. Peak = the RSS high-water mark the call "
        "added; estimate = what the memory budget admits the frame by (models/registry.py); "
        "left = RSS above the level before the call once the runtime gave memory back.",
        "",
        "| model | backend | frame | padded Mpx | peak MiB | bytes / padded px | estimate MiB "
        "| estimate covers peak | left MiB | s |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['backend']} | {format_size(row['height'], row['width'])} "
            f"| {row['padded_pixels'] / 1e6:.2f} | {row['peak_growth_bytes'] / MiB:.0f} "
            f"| {row['peak_growth_bytes'] / row['padded_pixels']:.0f} "
            f"| {row['estimate_bytes'] / MiB:.0f} "
            f"| {'yes' if row['estimate_bytes'] >= row['peak_growth_bytes'] else '**no**'} "
            f"| {row['left_after_bytes'] / MiB:.0f} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


# --- streams ---------------------------------------------------------------------------------
def measure_streams(sizes: Sequence[tuple[int, int]], streams: int, threads: int) -> list[dict]:
    """STD2Net windows of ``streams`` streams per size, 5 frames each (every slot its own
    features), as the worker keeps them; then freed. Runs in the calling process."""
    from service.settings import Settings
    from service.worker.runtime import ModelRuntime

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    settings = Settings(
        models=["std2net"], default_model="std2net", warmup_sizes=["32x32"], torch_threads=threads
    )
    runtime = ModelRuntime(settings)
    runtime.load()
    card = runtime.models["std2net"]
    rows = []
    for height, width in sorted(sizes, key=lambda hw: hw[0] * hw[1]):
        frames = np.random.default_rng(0).random((streams, height, width), dtype=np.float32)
        runtime.infer("std2net", list(frames), [StreamState() for _ in frames])  # sizes the heap
        runtime.give_back_memory()
        before = rss_bytes()
        states = [StreamState() for _ in range(streams)]
        for _ in range(card.frames):
            runtime.infer("std2net", list(frames), states)
        runtime.give_back_memory()
        held = rss_bytes() - before
        del states
        runtime.give_back_memory()
        rows.append(
            {
                "width": width,
                "height": height,
                "streams": streams,
                "held_per_stream_bytes": held / streams,
                "estimate_per_stream_bytes": card.state_bytes((height, width)),
                "left_after_bytes": rss_bytes() - before,
            }
        )
    return rows


def streams_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [
        f"Measured {machine['date']} on {device_name(machine)}: STD2Net windows (5 frames of "
        "cached backbone features per stream) held by the worker's runtime, RSS after 5 frames "
        "of every stream, per stream; left = RSS above the level before once the streams were "
        "freed and the runtime gave memory back.",
        "",
        "| frame | streams | held MiB / stream | estimate MiB / stream | left MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {format_size(row['height'], row['width'])} | {row['streams']} "
            f"| {row['held_per_stream_bytes'] / MiB:.1f} "
            f"| {row['estimate_per_stream_bytes'] / MiB:.1f} | {row['left_after_bytes'] / MiB:.0f} |"
        )
    return "\n".join(lines) + "\n"


# --- the service at its defaults -------------------------------------------------------------
def largest_admissible(card: ModelCard, budget: int, max_pixels: int) -> tuple[int, int]:
    """The largest square frame (H, W) a model admits: its call and (for a stream model) its
    window within the memory budget, its pixels within the frame limit."""
    step = card.size_multiple
    side = step
    while True:
        larger = (side + step, side + step)
        need = card.call_bytes(larger) + card.state_bytes(larger)
        if need > budget or larger[0] * larger[1] > max_pixels:
            return side, side
        side += step


def measure_service(limit_bytes: int, service_env: dict[str, str]) -> dict[str, Any]:
    """``irtrack serve`` with its defaults (plus ``service_env``): RSS loaded and warm, then per
    model the peak while serving its largest admissible frame, and the RSS after it."""
    from service.settings import Settings

    defaults = Settings()
    env = {"IRTRACK_API_KEYS": "", "IRTRACK_LOG_LEVEL": "warning", **service_env}
    with service_stack("embedded", env) as stack, httpx.Client(timeout=600) as http:
        pid = stack.pids["api"]
        listing = http.get(f"{stack.base_url}/v1/models").json()
        cards = {card["name"]: ModelCard.from_listing(card) for card in listing["models"]}
        budget = listing["memory_budget_bytes"]
        loaded = rss_bytes(pid)
        warm_height, warm_width = defaults.warmup_shapes()[0]

        def send(model: str, height: int, width: int, stream: str) -> None:
            frame = np.random.default_rng(0).integers(0, 255, (height, width), dtype=np.uint8)
            path = f"/v1/streams/{stream}/frames" if cards[model].streaming else "/v1/detect"
            response = http.post(
                f"{stack.base_url}{path}",
                content=frame.tobytes(),
                params={"model": model, "width": width, "height": height},
            )
            response.raise_for_status()

        for model, card in cards.items():
            for _ in range(STEADY_FRAMES):
                send(model, warm_height, warm_width, f"warm-{model}")
            if card.streaming:  # its window would count against the largest frames' budget
                http.delete(f"{stack.base_url}/v1/streams/warm-{model}")
        time.sleep(SETTLE_S)
        warm = rss_bytes(pid)
        rows = []
        for model, card in cards.items():
            height, width = largest_admissible(card, budget, defaults.max_frame_pixels)
            reset_peak_rss(pid)
            started = time.perf_counter()
            send(model, height, width, f"largest-{model}")
            seconds = time.perf_counter() - started
            peak = peak_rss_bytes(pid)
            if card.streaming:
                http.delete(f"{stack.base_url}/v1/streams/largest-{model}")
            time.sleep(SETTLE_S)
            after = rss_bytes(pid)
            rows.append(
                {
                    "model": model,
                    "backend": card.backend,
                    "width": width,
                    "height": height,
                    "estimate_bytes": card.call_bytes((height, width))
                    + card.state_bytes((height, width)),
                    "peak_bytes": peak,
                    "after_bytes": after,
                    "seconds": seconds,
                    "fits": peak <= limit_bytes,
                    "returned": after <= warm * 1.10,
                }
            )
    return {
        "budget_bytes": budget,
        "max_frame_pixels": defaults.max_frame_pixels,
        "models": list(cards),
        "loaded_bytes": loaded,
        "warm_bytes": warm,
        "warm_size": format_size(warm_height, warm_width),
        "limit_bytes": limit_bytes,
        "rows": rows,
    }


def service_table(report: dict[str, Any], machine: dict[str, Any]) -> str:
    lines = [
        f"Measured {machine['date']} on {device_name(machine)}: `irtrack serve` at its default "
        f"settings (models {', '.join(report['models'])}, memory budget "
        f"{report['budget_bytes'] / MiB:.0f} MiB, frame limit {report['max_frame_pixels']:,} px). "
        f"RSS loaded {report['loaded_bytes'] / MiB:.0f} MiB, warm "
        f"{report['warm_bytes'] / MiB:.0f} MiB (after {STEADY_FRAMES} frames of "
        f"{report['warm_size']} per model). Then per model its largest admissible frame "
        f"(square; the budget decides): peak RSS while serving it and RSS {SETTLE_S:g} s "
        f"after; the targets: peak within {report['limit_bytes'] / 1e9:g} GB, after within 10% "
        f"of warm. {served_weights(report['models'])}.",
        "",
        "| model | backend | largest frame | estimate MiB | peak RSS MiB | fits | RSS after MiB "
        "| within 10% of warm | s |",
        "|---|---|---|---:|---:|---|---:|---|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['model']} | {row['backend']} | {format_size(row['height'], row['width'])} "
            f"| {row['estimate_bytes'] / MiB:.0f} | {row['peak_bytes'] / MiB:.0f} "
            f"| {'yes' if row['fits'] else '**no**'} | {row['after_bytes'] / MiB:.0f} "
            f"| {'yes' if row['returned'] else '**no**'} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


# --- the command -----------------------------------------------------------------------------
def bench_memory(
    part: Annotated[str, typer.Option(help=f"One of {', '.join(PARTS)}.")] = "calls",
    models: Annotated[
        list[str] | None, typer.Option("--model", help="calls: models; repeat (default: all).")
    ] = None,
    sizes: SizesOption = None,
    streams: Annotated[int, typer.Option(min=1, help="streams: streams per size.")] = (
        STREAMS_MEASURED
    ),
    threads: Annotated[int, typer.Option(min=1, help="torch / ONNX Runtime threads.")] = (
        os.cpu_count() or 1
    ),
    limit_gb: Annotated[float, typer.Option(help="service: memory the service must fit.")] = 2.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    markdown_path: Annotated[
        Path | None, typer.Option("--markdown", help="Write the table here.")
    ] = None,
) -> None:
    """Memory per frame size, model and stream, and the service's worst admissible request."""
    if part not in PARTS:
        raise typer.BadParameter(f"--part must be one of {', '.join(PARTS)}")
    machine = machine_info(torch.device("cpu"))
    machine["torch_threads"] = threads
    chosen_sizes = [parse_size(size) for size in sizes] if sizes else None
    if part == "calls":
        rows = [
            row
            for model in models or MODEL_NAMES
            for backend in backends_of(model)
            for row in in_fresh_process(
                measure_calls, model, backend, chosen_sizes or CALL_SIZES, threads
            )
        ]
        report: dict[str, Any] = {"machine": machine, "rows": rows}
        table = calls_table(rows, machine)
    elif part == "streams":
        rows = in_fresh_process(measure_streams, chosen_sizes or STREAM_SIZES, streams, threads)
        report, table = {"machine": machine, "rows": rows}, streams_table(rows, machine)
    else:
        env = {"IRTRACK_TORCH_THREADS": str(threads)}
        service = measure_service(int(limit_gb * 1e9), env)
        report, table = {"machine": machine, **service}, service_table(service, machine)
    write_outputs(table, report, json_path, markdown_path)
