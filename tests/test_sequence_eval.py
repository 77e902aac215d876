"""Sequence evaluation: Pd at matched false alarms on hand-built ROC points and hand-built clips,
and the command on the fixed synthesized clips."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from data.paths import DATA_DIR
from data.synthesis import Sequence, SequenceConfig, TargetState
from evaluation.sequences import eval_sequences, pd_at_matched_false_alarms, score_clips


def test_matched_pd_is_the_best_threshold_within_each_false_alarm_limit() -> None:
    roc = {
        "thresholds": [0.1, 0.3, 0.5, 0.7, 0.9],
        "pd": [100.0, 95.0, 90.0, 60.0, 20.0],
        "fa_per_frame": [2.0, 0.3, 0.1, 0.04, 0.0],
    }
    rows = pd_at_matched_false_alarms({"roc": roc}, limits=(0.0, 0.05, 0.2, 1.0, 5.0))
    assert [row["Pd"] for row in rows] == [20.0, 60.0, 90.0, 95.0, 100.0]
    assert [row["threshold"] for row in rows] == [0.9, 0.7, 0.5, 0.3, 0.1]
    assert all(row["fa_per_frame"] <= row["fa_per_frame_limit"] for row in rows)  # type: ignore[operator]


def test_no_threshold_within_the_limit_gives_no_pd() -> None:
    roc = {"thresholds": [0.5], "pd": [80.0], "fa_per_frame": [0.5]}
    (row,) = pd_at_matched_false_alarms({"roc": roc}, limits=(0.1,))
    assert row["Pd"] is None and row["threshold"] is None


def walker_clip(frames: int = 10, size: int = 48) -> Sequence:
    """One 3x3 target walking right; its masks."""
    masks = np.zeros((frames, size, size), dtype=bool)
    targets = []
    for t in range(frames):
        col = 5 + 2 * t
        masks[t, 20:23, col - 1 : col + 2] = True
        targets.append([TargetState(0, float(col), 21.0, gain=1.0)])
    frames_u8 = (masks * 200).astype(np.uint8)
    return Sequence(frames_u8, masks, targets, SequenceConfig(length=frames), name="walker")


def scored_detector(target_p: float, clutter_p: float):  # type: ignore[no-untyped-def]
    """Probability maps: the target at ``target_p`` and a fixed 2x2 false blob at ``clutter_p``."""

    def detect(clip: Sequence) -> Iterator[np.ndarray]:
        for mask in clip.masks:
            prob = mask.astype(np.float32) * target_p
            prob[40:42, 40:42] = clutter_p
            yield prob

    return detect


def test_a_confident_detector_keeps_its_pd_under_a_tight_false_alarm_budget() -> None:
    clip = walker_clip()
    result = score_clips(scored_detector(target_p=0.9, clutter_p=0.3), [clip])
    assert result["Pd"] == 100.0 and result["fa_per_frame"] == 0.0
    assert result["images"] == len(clip.frames) and result["targets"] == len(clip.frames)
    assert all(row["Pd"] == 100.0 for row in result["matched"])
    assert result["clips"]["walker"]["Pd"] == 100.0


def test_a_detector_whose_clutter_outshines_its_targets_finds_nothing_within_budget() -> None:
    clip = walker_clip()
    result = score_clips(scored_detector(target_p=0.3, clutter_p=0.8), [clip])
    assert result["Pd"] == 0.0 and result["fa_per_frame"] == 1.0  # at 0.5: only the clutter
    # any threshold that keeps the target also keeps the clutter: 1 false alarm in every frame,
    # so under a budget of less than one per frame nothing is found, and at one per frame all
    tight, loose = pd_at_matched_false_alarms(result, limits=(0.5, 1.0))
    assert tight["Pd"] == 0.0 and loose["Pd"] == 100.0
    roc = result["roc"]
    below_target = [
        fa for t, fa in zip(roc["thresholds"], roc["fa_per_frame"], strict=True) if t < 0.3
    ]
    assert below_target and all(fa == 1.0 for fa in below_target)


@pytest.mark.skipif(not DATA_DIR.exists(), reason=f"shared data not found at {DATA_DIR}")
def test_eval_sequences_command_writes_table_and_report(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(eval_sequences)
    report_path, table_path = tmp_path / "seq.json", tmp_path / "seq.md"
    args = ["--random-init", "--length", "3", "--device", "cpu"]
    args += ["--json", str(report_path), "--markdown", str(table_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert set(report["models"]) == {"sd2net", "std2net"}
    for model in report["models"].values():
        assert model["images"] == 3 * len(report["clips"])
        assert {"crossing", "fading", "clutter"} <= set(model["clips"])
        assert len(model["matched"]) == 3
        assert model["weights"].startswith("random-init")
    table = table_path.read_text()
    assert "| sd2net |" in table and "| std2net |" in table and table.strip() in result.output


def test_eval_sequences_refuses_a_model_without_weights(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(eval_sequences)
    result = CliRunner().invoke(
        app, ["--model", "sd2net", "--weights-dir", str(tmp_path), "--length", "1"]
    )
    assert result.exit_code == 2
    assert "no weights for sd2net" in result.output
