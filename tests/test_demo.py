"""The main job, ``irtrack demo``, on the real clip it streams by default: every frame answered,
and the drone followed by the pan-tilt camera keeps one track id through the camera's slews."""

from __future__ import annotations

import re

import pytest
from cli_support import irtrack
from conftest import require_path

from cli.demo import DEMO_CLIP, VIDEO_DIR
from data.paths import DATA_DIR

pytestmark = pytest.mark.timeout(300)

FRAMES = 80  # the clip's camera slews after the drone four times in these frames


def run_demo(monkeypatch: pytest.MonkeyPatch, jump_gate_px: float | None) -> tuple[int, int]:
    """(results, confirmed tracks) from the demo's summary line."""
    require_path(VIDEO_DIR / DEMO_CLIP, "the demo's thermal clip")
    if jump_gate_px is not None:
        monkeypatch.setenv("IRTRACK_TRACKER__JUMP_GATE_PX", str(jump_gate_px))
    outcome = irtrack(["demo", "--quiet", "--frames", str(FRAMES), "--max-width", "240"])
    assert outcome.exit_code == 0, outcome.output
    summary = re.search(r"(\d+) results, .* (\d+) confirmed tracks?$", outcome.output, re.M)
    assert summary is not None, outcome.output
    return int(summary.group(1)), int(summary.group(2))


def test_the_demo_follows_the_drone_under_one_track_id(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_demo(monkeypatch, None) == (FRAMES, 1)


def test_without_the_jump_rule_the_slews_break_the_track(monkeypatch: pytest.MonkeyPatch) -> None:
    results, tracks = run_demo(monkeypatch, 0.0)
    assert results == FRAMES and tracks > 1


def test_the_demo_streams_a_labelled_drone_ir_clip_and_scores_it_against_its_boxes() -> None:
    clip = DATA_DIR / "drone-ir" / "sequences" / "IR_DRONE_006.mp4"  # a small drone
    require_path(clip, "the drone-ir clips (shared/data/drone-ir)")
    outcome = irtrack(["demo", "--quiet", "--video", clip, "--max-width", "0", "--frames", "40"])
    assert outcome.exit_code == 0, outcome.output
    assert "streaming 40 frames of 320x256" in outcome.output
    scored = re.search(r"found in (\d+) of (\d+) frames; ([\d.]+) false alarms", outcome.output)
    assert scored is not None, outcome.output
    found, labelled = int(scored.group(1)), int(scored.group(2))
    assert labelled == 40 and found >= 30  # the shipped default finds this drone
