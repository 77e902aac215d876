"""``irtrack bench training``: training throughput of the real training loop, variant by variant.

Each row runs :func:`training.loop.train` itself (data in memory, the loss, the optimizer step,
EMA where asked) on the first ``--images`` training images of NUDT-SIRST for ``--epochs`` epochs
without validation until the last, and reads the seconds the loop logged per epoch (validation
excluded). The first epoch is left out (it holds ``torch.compile``'s compilation); the median of
the others gives images/s and the seconds a whole epoch of the training split takes.

The variants add one ingredient at a time to the papers' recipe as the shipped weights were trained
(frames resized to 256 x 256, eager PyTorch, NCHW): channels_last, then ``torch.compile`` of the
training step, then more threads; and, apart, training on 128 x 128 crops (more, smaller samples).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from bench.common import JsonRowsOption, MarkdownOption, device_name, machine_info, write_outputs
from data.datasets import list_split
from data.paths import DATA_DIR
from training.config import TrainConfig
from training.loop import LOG, train
from training.recipes import RECIPES


@dataclass(frozen=True)
class Variant:
    name: str
    batch_size: int
    threads: int
    channels_last: bool = False
    compile: bool = False
    crop: int | None = None  # None: frames resized to 256 x 256, as the papers train


VARIANTS = (
    Variant("paper recipe: resize 256, eager", 4, 1),
    Variant("+ channels_last", 4, 1, channels_last=True),
    Variant("+ torch.compile, batch 8", 8, 1, channels_last=True, compile=True),
    Variant("+ 2 threads", 8, 2, channels_last=True, compile=True),
    Variant(
        "crops 128 x 128, batch 16, compiled", 16, 1, channels_last=True, compile=True, crop=128
    ),
)


def measure(
    model: str, variant: Variant, images: int, epochs: int, data_dir: Path
) -> dict[str, Any]:
    """One row: the loop's seconds per epoch after the first, as images/s."""
    with tempfile.TemporaryDirectory(prefix="irtrack-bench-train-") as folder:
        out = Path(folder)
        train(
            TrainConfig(
                model=model,
                data="nudt-sirst",
                out=out,
                epochs=epochs,
                batch_size=variant.batch_size,
                size=256,
                crop=variant.crop,
                limit=images,
                threads=variant.threads,
                channels_last=variant.channels_last,
                compile=variant.compile,
                val_every=epochs,
                data_dir=data_dir,
            )
        )
        log = [line for line in (out / LOG).read_text().splitlines() if line]
    entries = [json.loads(line) for line in log]
    steps = images // variant.batch_size
    seconds = statistics.median(entry["seconds"] for entry in entries[1:])
    per_second = steps * variant.batch_size / seconds
    split_images = len(list_split(data_dir / "nudt-sirst", "train"))
    return {
        "model": model,
        "variant": variant.name,
        "batch": variant.batch_size,
        "threads": variant.threads,
        "input": f"{variant.crop} x {variant.crop} crops" if variant.crop else "256 x 256",
        "epochs_timed": len(entries) - 1,
        "images_per_s": per_second,
        "pixels_per_s": per_second * (variant.crop or 256) ** 2,
        "epoch_s": split_images / per_second,
    }


def markdown_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [
        f"Measured {machine['date']} on {device_name(machine)}, torch {machine['torch']}, by "
        "`irtrack bench training`: the training loop itself on NUDT-SIRST training images, "
        "median seconds of the epochs after the first (validation excluded); an epoch = the "
        "split's training images; speed-up against the paper recipe's row of the same model.",
        "",
        "| model | variant | input | batch | threads | images/s | Mpx/s | s / epoch | speed-up |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    baseline: dict[str, float] = {}
    for row in rows:
        base = baseline.setdefault(row["model"], row["images_per_s"])
        lines.append(
            f"| {row['model']} | {row['variant']} | {row['input']} | {row['batch']} | "
            f"{row['threads']} | {row['images_per_s']:.2f} | {row['pixels_per_s'] / 1e6:.2f} | "
            f"{row['epoch_s']:.0f} | {row['images_per_s'] / base:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def bench_training(
    model: Annotated[
        list[str] | None, typer.Option(help="Models (repeat); default: sd2net and lrrnet.")
    ] = None,
    images: Annotated[int, typer.Option(min=16, help="Training images per timed epoch.")] = 64,
    epochs: Annotated[int, typer.Option(min=2, help="Epochs per row (the first untimed).")] = 3,
    data_dir: Annotated[Path, typer.Option(help="The shared datasets.")] = DATA_DIR,
    json_path: JsonRowsOption = None,
    markdown_path: MarkdownOption = None,
) -> None:
    """Training throughput (images/s, s/epoch) of the real loop, one ingredient at a time."""
    rows = []
    for name in model or ("sd2net", "lrrnet"):
        if name not in RECIPES:
            raise typer.BadParameter(f"unknown model {name!r}; known: {', '.join(RECIPES)}")
        for variant in VARIANTS:
            rows.append(measure(name, variant, images, epochs, data_dir))
            typer.echo(f"{name}: {variant.name}: {rows[-1]['images_per_s']:.2f} images/s", err=True)
    machine = machine_info(torch.device("cpu"))
    write_outputs(
        markdown_table(rows, machine), {"machine": machine, "rows": rows}, json_path, markdown_path
    )
