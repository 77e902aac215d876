"""Track metrics: the motmetrics wiring (gate, switches) on hand-built tracks, the detector ->
tracker -> metrics path on a hand-built clip, and the command on the fixed synthesized clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from data.paths import DATA_DIR
from data.synthesis import Sequence, SequenceConfig, TargetState
from evaluation.metrics import MATCH_DISTANCE
from evaluation.tracks import (
    MASKS,
    TrackPoint,
    accumulate,
    eval_tracks,
    evaluate,
    mask_detector,
    summarize,
)
from frames.tracking import TrackerSettings


def two_walkers(frames: int) -> list[list[TrackPoint]]:
    return [
        [TrackPoint(0, 10.0 + t, 20.0), TrackPoint(1, 60.0, 10.0 + 2 * t)] for t in range(frames)
    ]


def overall(truth: list[list[TrackPoint]], hyps: list[list[TrackPoint]]) -> dict[str, float]:
    return summarize({"clip": accumulate(truth, hyps)})["overall"]


def relabel(frames: list[list[TrackPoint]], ids: dict[int, int]) -> list[list[TrackPoint]]:
    return [[TrackPoint(ids[p.track_id], p.x, p.y) for p in frame] for frame in frames]


def test_perfect_tracks_score_one() -> None:
    truth = two_walkers(20)
    scores = overall(truth, relabel(truth, {0: 7, 1: 3}))  # hypothesis ids are arbitrary labels
    assert scores["mota"] == 1.0 and scores["idf1"] == 1.0
    assert scores["num_switches"] == 0
    assert scores["num_objects"] == sum(len(frame) for frame in truth)


def test_an_id_swap_is_one_switch_per_target() -> None:
    truth = two_walkers(20)
    hyps = relabel(truth[:10], {0: 1, 1: 2}) + relabel(truth[10:], {0: 2, 1: 1})
    scores = overall(truth, hyps)
    assert scores["num_switches"] == 2
    assert scores["idf1"] < 1.0
    assert scores["mota"] == pytest.approx(1.0 - 2 / scores["num_objects"])


@pytest.mark.parametrize(
    "offset, matched", [(MATCH_DISTANCE - 0.1, True), (MATCH_DISTANCE + 0.1, False)]
)
def test_a_hypothesis_counts_only_within_the_gate(offset: float, matched: bool) -> None:
    truth = two_walkers(5)
    hyps = [[TrackPoint(p.track_id, p.x + offset, p.y) for p in frame] for frame in truth]
    scores = overall(truth, hyps)
    objects = scores["num_objects"]
    assert scores["num_misses"] == (0 if matched else objects)
    assert scores["num_false_positives"] == (0 if matched else objects)


def blob_clip(frames: int, size: int = 64) -> Sequence:
    """Two 3x3 blobs moving in straight lines, masks = what a perfect detector would output."""
    starts, velocities = [(8.0, 10.0), (50.0, 40.0)], [(1.5, 0.5), (-1.0, 0.8)]
    masks = np.zeros((frames, size, size), dtype=bool)
    targets = []
    for t in range(frames):
        states = []
        for target_id, ((x0, y0), (vx, vy)) in enumerate(zip(starts, velocities, strict=True)):
            col, row = round(x0 + vx * t), round(y0 + vy * t)
            masks[t, row - 1 : row + 2, col - 1 : col + 2] = True
            states.append(TargetState(target_id, float(col), float(row), gain=1.0))
        targets.append(states)
    frames_u8 = (masks * 200).astype(np.uint8)
    return Sequence(frames_u8, masks, targets, SequenceConfig(length=frames), name="blobs")


@pytest.mark.parametrize("confirm_hits", [1, 3])
def test_perfect_detections_lose_only_the_confirmation_delay(confirm_hits: int) -> None:
    clip = blob_clip(25)
    scores = evaluate(mask_detector, [clip], TrackerSettings(confirm_hits=confirm_hits))
    assert set(scores) == {"blobs", "overall"}
    result = scores["overall"]
    targets = len(clip.targets[0])
    assert result["num_misses"] == targets * (confirm_hits - 1)
    assert result["num_switches"] == 0 and result["num_false_positives"] == 0
    assert result["mota"] == pytest.approx(1.0 - result["num_misses"] / result["num_objects"])


@pytest.mark.skipif(not DATA_DIR.exists(), reason=f"shared data not found at {DATA_DIR}")
def test_eval_tracks_command_writes_table_and_report(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(eval_tracks)
    report_path, table_path = tmp_path / "tracks.json", tmp_path / "tracks.md"
    result = CliRunner().invoke(
        app,
        [
            "--model",
            MASKS,
            "--length",
            "8",
            "--json",
            str(report_path),
            "--markdown",
            str(table_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    scores = report["detectors"][MASKS]["scores"]
    assert {"crossing", "fading", "clutter", "overall"} <= set(scores)
    assert report["frames"] == 8 * len(report["clips"])
    assert 0.0 < scores["overall"]["mota"] <= 1.0
    table = table_path.read_text()
    assert f"| {MASKS} |" in table and table.strip() in result.output
