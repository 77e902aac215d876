"""The papers' reported speed beside ours, from the benchmark reports in docs/results.

The papers' figures are quotations (the paper, its table or section, its GPU), not
measurements of ours; ours come from ``irtrack bench models`` JSON reports: CPU fp32 eager
(``speed-cpu.json``), and on a GPU the eager fp32 and the fastest dtype/mode at the paper's size
and batch 1 (``speed-gpu.json``, ``speed-gpu-fast-path.json``). A report that does not exist
shows as "not measured"; ``python -m bench.papers`` writes ``docs/results/papers-fps.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from bench.common import device_name

RESULTS_DIR = Path(__file__).resolve().parents[1] / "docs" / "results"


@dataclass(frozen=True)
class PaperSpeed:
    model: str
    fps: float
    gpu: str
    size: tuple[int, int]  # (H, W)
    batch: int
    source: str


PAPER_SPEEDS = (
    PaperSpeed(
        "sd2net", 217.06, "RTX 4080", (256, 256), 1, "DDNet paper, ablation tables (NUDT-SIRST)"
    ),
    PaperSpeed("lrrnet", 82.34, "RTX 3080 Ti", (512, 512), 1, "LRRNet paper, Tab. III and text"),
)


def _rows(name: str) -> list[dict[str, Any]]:
    path = RESULTS_DIR / name
    return json.loads(path.read_text())["rows"] if path.exists() else []


def _best(rows: list[dict[str, Any]], paper: PaperSpeed, **match: str) -> dict[str, Any] | None:
    """The fastest measured row of the paper's model, size and batch (and ``match``)."""
    candidates = [
        row
        for row in rows
        if row["model"] == paper.model
        and (row["height"], row["width"]) == paper.size
        and row["batch"] == paper.batch
        and row["fps"] is not None
        and all(row.get(key, "eager") == value for key, value in match.items())
    ]
    return max(candidates, key=lambda row: row["fps"], default=None)


def _cell(row: dict[str, Any] | None, describe: bool = False) -> str:
    if row is None:
        return "not measured"
    text = f"{row['fps']:.1f}"
    return f"{text} ({row['dtype']}, {row.get('mode', 'eager')})" if describe else text


def comparison_table() -> str:
    cpu = _rows("speed-cpu.json")
    gpu = _rows("speed-gpu.json") + _rows("speed-gpu-fast-path.json")
    gpu_name = "no GPU report yet"
    if (RESULTS_DIR / "speed-gpu.json").exists():
        gpu_name = device_name(json.loads((RESULTS_DIR / "speed-gpu.json").read_text())["machine"])
    lines = [
        f"frames/s at batch 1; ours from docs/results/speed-cpu.json and speed-gpu*.json "
        f"({gpu_name}; randomly initialised weights: speed does not depend on their values); the "
        "papers' as they report them.",
        "",
        "| model | W x H | paper frames/s (GPU, source) | ours CPU fp32 | ours GPU fp32 eager | "
        "ours GPU fastest |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for paper in PAPER_SPEEDS:
        lines.append(
            f"| {paper.model} | {paper.size[1]} x {paper.size[0]} | {paper.fps:.2f} "
            f"({paper.gpu}, {paper.source}) | {_cell(_best(cpu, paper, dtype='fp32'))} | "
            f"{_cell(_best(gpu, paper, dtype='fp32', mode='eager'))} | "
            f"{_cell(_best(gpu, paper), describe=True)} |"
        )
    return "\n".join(lines) + "\n"


def main(output: Path = RESULTS_DIR / "papers-fps.md") -> None:
    """Write the papers-vs-ours speed table."""
    table = comparison_table()
    output.write_text(table)
    typer.echo(table)


if __name__ == "__main__":
    typer.run(main)
