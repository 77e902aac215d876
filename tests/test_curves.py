"""irtrack report curves: learning curves and the best epoch from training logs."""

import json
from pathlib import Path

from cli_support import irtrack


def write_log(path: Path, mious: list[float | None]) -> Path:
    lines = []
    for epoch, miou in enumerate(mious, start=1):
        entry = {"epoch": epoch, "loss": 0.5, "lr": 1e-3, "seconds": 1800.0}
        if miou is not None:
            entry |= {"val": {"mIoU": miou}, "val_seconds": 1800.0}
        lines.append(json.dumps(entry))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_table_names_each_runs_best_validated_epoch_and_when(tmp_path: Path):
    fast = write_log(tmp_path / "fast.jsonl", [50.0, None, 70.0, 65.0])
    png, markdown = tmp_path / "curves.png", tmp_path / "curves.md"
    outcome = irtrack(
        ["report", "curves", "--run", f"fast={fast}", "--png", png, "--markdown", markdown]
    )
    assert outcome.exit_code == 0, outcome.output
    # epoch 3: three epochs of 0.5 h training plus two validations of 0.5 h = 2.5 h
    assert "| fast | 4 | 70.00 | 3 | 2.50 |" in markdown.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_given_without_its_log_is_refused(tmp_path: Path):
    outcome = irtrack(["report", "curves", "--run", "x", "--png", tmp_path / "c.png"])
    assert outcome.exit_code == 2 and "LABEL=PATH" in outcome.output
