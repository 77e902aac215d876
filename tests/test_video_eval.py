"""irtrack eval-video: object-level scoring of real labelled clips, and the clips themselves."""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cli_support import irtrack
from conftest import require_path

from data.paths import DATA_DIR
from data.video import Box, list_clips, load_clip
from evaluation.video import FOUND_MARGIN_PX, frame_outcome, score_clip
from frames.tracking import PointTracker, TrackerSettings

DRONE_IR = DATA_DIR / "drone-ir"
CLIP = "IR_DRONE_002"  # a drone labelled in every one of its first 20 frames


def test_a_box_is_found_by_one_centroid_inside_it_grown_and_every_other_is_a_false_alarm():
    box = Box(10.0, 20.0, 4.0, 4.0)  # spans columns 10..14, rows 20..24

    def inside(x: float, y: float) -> bool:
        return box.contains(x, y, FOUND_MARGIN_PX)

    assert frame_outcome(np.array([[17.0, 27.0]]), inside) == (True, 0)  # on the grown edge
    assert frame_outcome(np.array([[17.5, 22.0]]), inside) == (False, 1)  # just outside
    assert frame_outcome(np.array([[12.0, 22.0], [13.0, 23.0]]), inside) == (True, 1)
    assert frame_outcome(np.empty((0, 2)), inside) == (False, 0)
    assert frame_outcome(np.array([[5.0, 5.0]]), None) == (False, 1)  # a frame without a target


def test_the_splits_keep_test_clips_out_of_training_and_model_selection():
    require_path(DRONE_IR, "the drone-ir clips (shared/data/drone-ir)")
    train, val, test = (set(list_clips(split)) for split in ("train", "val", "test"))
    assert train and val and test
    assert not (train & val) and not (test & (train | val))
    assert train | val == set(list_clips("train_full"))
    assert list_clips("val") == list_clips("val")  # the holdout is fixed


def box_oracle(clip, found: bool):
    """Logits that put one blob on the labelled box's centre (or nothing at all)."""
    frames = iter(range(len(clip.boxes)))

    def logits_of(frame: np.ndarray) -> np.ndarray:
        logits = np.full(frame.shape, -10.0, np.float32)
        box = clip.boxes[next(frames)]
        if found and box is not None:
            row, column = round(box.y + box.h / 2), round(box.x + box.w / 2)
            logits[row - 1 : row + 2, column - 1 : column + 2] = 10.0
        return logits

    return logits_of


@pytest.mark.parametrize("found", [True, False])
def test_scores_of_a_perfect_and_of_a_blind_detector_on_a_real_clip(found: bool):
    require_path(DRONE_IR, "the drone-ir clips (shared/data/drone-ir)")
    clip = load_clip(CLIP)
    score = score_clip(
        clip, box_oracle(clip, found), PointTracker(TrackerSettings()), frames=clip.frames(20)
    )
    labelled = sum(box is not None for box in clip.boxes[:20])
    assert score.operating.frames == 20 and score.operating.targets == labelled > 0
    assert int(score.operating.found[0]) == (labelled if found else 0)
    assert int(score.operating.false_alarms[0]) == 0
    assert score.grid.found.max() == (labelled if found else 0)
    events = score.events.mot_events
    matches = int((events["Type"] == "MATCH").sum())
    # the tracker confirms a track on its 3rd detection: from then on every frame matches
    assert matches == (labelled - 2 if found else 0)


def test_eval_video_writes_a_report_of_every_group(tmp_path: Path):
    require_path(DRONE_IR, "the drone-ir clips (shared/data/drone-ir)")
    report_path = tmp_path / "video.json"
    outcome = irtrack(
        [
            "eval-video",
            "--model",
            "sd2net",
            "--clips",
            "2",
            "--frames-per-clip",
            "4",
            "--json",
            report_path,
            "--markdown",
            tmp_path / "video.md",
        ]
    )
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(report_path.read_text())
    assert report["frames"] == 8 and report["clips"] == 2
    groups = report["models"]["sd2net"]["groups"]
    assert "all clips" in groups and all(g["frames"] <= 8 for g in groups.values())
    assert "| sd2net | all clips |" in (tmp_path / "video.md").read_text()


def test_confirmed_only_reports_a_target_from_its_third_detection():
    require_path(DRONE_IR, "the drone-ir clips (shared/data/drone-ir)")
    clip = load_clip(CLIP)
    score = score_clip(
        clip,
        box_oracle(clip, True),
        PointTracker(TrackerSettings()),
        frames=clip.frames(20),
        confirmed_only=True,
    )
    labelled = sum(box is not None for box in clip.boxes[:20])
    assert int(score.operating.found[0]) == labelled - 2  # confirm_hits = 3
    assert int(score.operating.false_alarms[0]) == 0
    # every threshold of the grid runs its own tracker: the same two frames go unreported
    assert score.grid.found.max() == labelled - 2


def test_confirmed_only_drops_one_frame_flickers_at_every_threshold():
    require_path(DRONE_IR, "the drone-ir clips (shared/data/drone-ir)")
    clip = load_clip(CLIP)

    def flicker() -> Callable[[np.ndarray], np.ndarray]:
        """Logits with a blob far from the target in one frame of every four, elsewhere each time."""
        frames = iter(range(20))

        def logits_of(frame: np.ndarray) -> np.ndarray:
            logits = np.full(frame.shape, -10.0, np.float32)
            index = next(frames)
            if index % 4 == 0:
                row, column = 10 + 2 * index, 10 + 11 * index
                logits[row : row + 3, column : column + 3] = 10.0
            return logits

        return logits_of

    def scored(confirmed_only: bool) -> int:
        score = score_clip(
            clip,
            flicker(),
            PointTracker(TrackerSettings()),
            frames=clip.frames(20),
            confirmed_only=confirmed_only,
        )
        return int(score.grid.false_alarms.max())

    assert scored(confirmed_only=False) == 5 and scored(confirmed_only=True) == 0


def test_eval_video_can_score_the_small_target_clips_alone(tmp_path: Path):
    require_path(DRONE_IR, "the drone-ir clips (shared/data/drone-ir)")
    report_path = tmp_path / "video.json"
    arguments = ["eval-video", "--model", "sd2net", "--small-only", "--clips", "2"]
    outcome = irtrack([*arguments, "--frames-per-clip", "2", "--json", report_path])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(report_path.read_text())
    assert report["clips"] == report["small_target_clips"] == 2
    groups = report["models"]["sd2net"]["groups"]
    assert groups["all clips"]["frames"] == groups["small-target clips"]["frames"] == 4
