"""``irtrack report headline``: the README's models table, from the reports the project's
commands wrote: what each shipped model does in the service, what it was trained on, what it
scores on the test splits and on real video, and how fast it runs on a CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evaluation.video import ALL, FA_BUDGET, SMALL, pd_within_budget
from models import MODEL_NAMES
from models.registry import build_model, model_info
from models.weights import file_sha256, read_metadata

ROLE = {
    "sd2net": "`/v1/detect`; streams on a CPU",
    "std2net": "streams on a GPU (5-frame window)",
    "lrrnet": "on request (`model=lrrnet`)",
}


def _accuracy(name: str, sha: str, evals: list[dict[str, Any]]) -> str:
    figures = [
        f"{e['dataset']}: mIoU {e['mIoU']:.1f}, Pd {e['Pd']:.1f}"
        for e in evals
        if e.get("model") == name and e.get("weights_sha256") == sha
    ]
    return "; ".join(figures) or "-"


def _video(name: str, sha: str, videos: list[dict[str, Any]]) -> str:
    """The model's small-target figures from the first eval-video report that scored its shipped
    weights (reports may score different models: STD2Net on the small-target clips alone)."""
    scored = (report.get("models", {}).get(name) for report in videos)
    result = next((r for r in scored if r is not None and r.get("weights_sha256") == sha), None)
    if result is None:
        return "-"
    small = result["groups"].get(SMALL) or result["groups"][ALL]
    pd_at_budget = pd_within_budget(small)
    found = (
        f"Pd {pd_at_budget:.1f} at <= {FA_BUDGET:g} FA/frame"
        if pd_at_budget is not None  # else no threshold keeps within the budget: say where it is
        else f"Pd {small['Pd']:.1f} at {small['fa_per_frame']:.2f} FA/frame (threshold 0.5)"
    )
    return f"{found}; IDF1 {small['tracking']['idf1']:.2f}"


def _cpu_fps(name: str, speeds: list[dict[str, Any]]) -> str:
    for report in speeds:
        for row in report["rows"]:
            square = row.get("height") == row.get("width") == 256 and row.get("batch") == 1
            if row.get("model") != name or not square:
                continue
            if row.get("variant") == "onnxruntime":
                return f"{row['fps']:.1f} (ONNX Runtime, 256 x 256)"
            if "cached_fps" in row:
                return f"{row['cached_fps']:.1f} (cached window, 256 x 256)"
    return "-"


def headline_table(
    evals: list[dict[str, Any]], videos: list[dict[str, Any]], speeds: list[dict[str, Any]]
) -> str:
    lines = [
        "| model | in the service | parameters | shipped weights trained on | test splits | "
        "real video (drone-ir test, small targets) | CPU frames/s |",
        "|---|---|---:|---|---|---|---:|",
    ]
    shipped: list[str] = []
    for name in MODEL_NAMES:
        path = model_info(name).default_weights_path
        sha = file_sha256(path) if path else ""
        if path:
            shipped.append(f"{path.name} ({sha[:12]})")
        trained_on = read_metadata(path).get("dataset", "?") if path else "not shipped"
        parameters = sum(p.numel() for p in build_model(name).parameters())
        lines.append(
            f"| {name} | {ROLE[name]} | {parameters:,d} | {trained_on} | "
            f"{_accuracy(name, sha, evals)} | {_video(name, sha, videos)} | "
            f"{_cpu_fps(name, speeds)} |"
        )
    machines = sorted({r["machine"]["cpu"] for r in speeds if "machine" in r})
    scored_on = sorted({str(r["machine"]) for r in [*evals, *videos] if "machine" in r})
    dated = [*evals, *videos, *(r["machine"] for r in speeds if "machine" in r)]
    days = sorted({str(report["date"])[:10] for report in dated if "date" in report})
    lines += [
        "",
        "Written by `irtrack report headline` from `irtrack eval`, `irtrack eval-video` and "
        "`irtrack bench onnx|streaming` reports of the shipped weights (details: "
        f"docs/accuracy.md, docs/performance.md), measured {', '.join(days) or '-'}; "
        f"accuracy scored on {'; '.join(scored_on) or '-'}; CPU frames/s on "
        f"{'; '.join(machines) or '-'}, 2 threads; weights {', '.join(shipped)}.",
    ]
    return "\n".join(lines) + "\n"


def read_reports(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in paths]
