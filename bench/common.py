"""What every ``irtrack bench`` command shares: sizes, the machine description, the common CLI
options and the output tail (print the table, write the JSON report, write the markdown table).

Kept in one place so the benchmarks agree on how a size is spelled, what a report records about
the machine, and what ``--json`` / ``--markdown`` write.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeAlias

import torch
import typer

from evaluation.machine import cpu_model
from frames.sizes import parse_size
from models.registry import model_info
from models.weights import file_sha256

DEFAULT_SIZES = ((256, 256), (512, 640))  # (H, W)
DEFAULT_BATCHES = (1, 8)

SizesOption: TypeAlias = Annotated[
    list[str] | None,
    typer.Option("--frame-size", help="WIDTHxHEIGHT; repeat (default: 256x256, 640x512)."),
]
BatchesOption: TypeAlias = Annotated[
    list[int] | None,
    typer.Option("--batch", "-b", help="Batch size; repeat (default: 1 and 8)."),
]
ThreadsOption: TypeAlias = Annotated[
    int | None, typer.Option(help="torch CPU threads (default: torch's own choice).")
]
JsonRowsOption: TypeAlias = Annotated[Path | None, typer.Option("--json", help="Write rows here.")]
MarkdownOption: TypeAlias = Annotated[
    Path | None, typer.Option("--markdown", help="Write the markdown table here.")
]


def sizes_or_default(sizes: list[str] | None) -> Sequence[tuple[int, int]]:
    """The ``--frame-size`` options as (H, W), or the default sizes when none was given."""
    return [parse_size(size) for size in sizes] if sizes else DEFAULT_SIZES


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        # Other processes on the machine slow every row; the 1-minute load average says how much.
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def device_name(machine: dict[str, Any]) -> str:
    """The processor a report's figures come from, as its tables name it."""
    return f"GPU {machine['gpu']} (CPU {machine['cpu']})" if "gpu" in machine else machine["cpu"]


def weights_label(path: Path | None) -> str:
    """How a report names the weights its figures come from."""
    return "random init" if path is None else f"{path.name} (sha256 {file_sha256(path)[:12]})"


def served_weights(models: Sequence[str]) -> str:
    """'weights: <model> = <file> (sha256 ...); ...' of a service started without
    IRTRACK_WEIGHTS_DIR: the files shipped in models/weights/ (or random init)."""
    return weights_named(
        [{"model": m, "weights": weights_label(model_info(m).default_weights_path)} for m in models]
    )


def weights_named(rows: Sequence[dict[str, Any]]) -> str:
    """'weights: <model> = <label>; ...' over a report's rows, each model once."""
    labels = {row["model"]: row["weights"] for row in rows}
    return "weights: " + "; ".join(f"{model} = {label}" for model, label in labels.items())


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a timer read afterwards includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_outputs(
    table: str, report: dict[str, Any], json_path: Path | None, markdown_path: Path | None
) -> None:
    """Print the markdown table, then write the JSON report and the table where asked: the docs
    tables are generated from these files, never typed by hand."""
    typer.echo(table)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if markdown_path is not None:
        markdown_path.write_text(table)
