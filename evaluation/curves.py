"""Learning curves from training logs (``log.jsonl`` of ``irtrack train``): validation mIoU per
epoch and against the hours the training loop ran, one line per run; and the figures of every
snapshot ``irtrack select`` scored (its ``selection.jsonl``)."""

from __future__ import annotations

import json
from itertools import accumulate
from pathlib import Path
from typing import Any

from evaluation.tables import figure_cell

TARGET_FREE_FIGURE = "target_free_fa_per_frame"  # a selection log's false alarms per empty frame


def read_log(path: Path) -> list[dict[str, Any]]:
    """The epochs of a training log, in order."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def validated(entries: list[dict[str, Any]]) -> tuple[list[int], list[float], list[float]]:
    """(epochs, hours of training and validation so far, val mIoU) of the validated epochs."""
    hours = list(accumulate((e["seconds"] + e.get("val_seconds", 0.0)) / 3600.0 for e in entries))
    points = [
        (e["epoch"], h, e["val"]["mIoU"]) for e, h in zip(entries, hours, strict=True) if "val" in e
    ]
    return [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]


def plot_learning_curves(runs: dict[str, Path], path: Path, title: str = "") -> None:
    """Save val mIoU per epoch (left) and per hour of training (right), one line per run."""
    from matplotlib.figure import Figure  # imported here: only the report command draws

    figure = Figure(figsize=(10, 4), dpi=120)
    by_epoch, by_hour = figure.subplots(1, 2, sharey=True)
    for label, log in runs.items():
        epochs, hours, miou = validated(read_log(log))
        by_epoch.plot(epochs, miou, marker="o", markersize=2, label=label)
        by_hour.plot(hours, miou, marker="o", markersize=2, label=label)
    by_epoch.set_xlabel("epoch")
    by_hour.set_xlabel("hours of training and validation (this machine)")
    by_epoch.set_ylabel("val mIoU (%)")
    for axes in (by_epoch, by_hour):
        axes.grid(True, alpha=0.3)
    by_hour.legend(loc="lower right", fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(str(path))


def curves_table(runs: dict[str, Path]) -> str:
    """Markdown: per run, the epochs logged, the best val mIoU and when it came."""
    lines = [
        "| run | epochs logged | best val mIoU % | at epoch | after hours |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, log in runs.items():
        entries = read_log(log)
        epochs, hours, miou = validated(entries)
        if not miou:
            lines.append(f"| {label} | {len(entries)} | - | - | - |")
            continue
        best = max(range(len(miou)), key=miou.__getitem__)
        lines.append(
            f"| {label} | {len(entries)} | {miou[best]:.2f} | {epochs[best]} | {hours[best]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def selection_table(runs: dict[str, Path]) -> str:
    """Markdown: per run, each snapshot's val figures, false alarms per target-free frame and
    verdict, under a row for the gate's weights (their val figures where the log has them), from
    the last selection of its log."""
    lines = [
        "| run | weights | val mIoU % | val Pd % | val Fa (1e-6) | FA / target-free val frame "
        "| verdict |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for label, log in runs.items():
        selection = read_log(log)[-1]
        gate = selection.get("gate") or {}
        rows = [(f"gate: `{Path(gate['weights']).name}`", gate, "-")] if gate else []
        best_epoch = (selection.get("best") or {}).get("epoch")
        for score in selection["scores"]:
            verdict = "refused" if score.get("refused") else "passed" if gate else "-"
            if score["epoch"] == best_epoch:
                verdict = f"{verdict}, kept as best" if gate else "kept as best"
            rows.append((f"epoch {score['epoch']}", score, verdict))
        for weights, figures, verdict in rows:
            cells = [figure_cell(figures.get(name), "{:.2f}") for name in ("mIoU", "Pd", "Fa")]
            free = figure_cell(figures.get(TARGET_FREE_FIGURE), "{:.3f}")
            lines.append(f"| {label} | {weights} | {' | '.join(cells)} | {free} | {verdict} |")
    return "\n".join(lines) + "\n"
