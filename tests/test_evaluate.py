"""``irtrack eval`` refuses what it cannot score honestly, with messages that say what to do."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_support import irtrack

from evaluation.images import evaluate, read_probability_png, save_probability_png
from models.registry import MODEL_INFO


def run_eval(args: list[str]) -> tuple[int, str]:
    result = irtrack(["eval", *args])
    return result.exit_code, result.output


def test_multi_frame_model_is_refused_on_single_images(tmp_path: Path) -> None:
    code, output = run_eval(["--model", "std2net", "--data", str(tmp_path)])
    assert code == 2 and "sequences" in output


@pytest.mark.skipif(
    MODEL_INFO["sd2net"].default_weights_path is not None, reason="sd2net weights are shipped"
)
def test_missing_weights_are_an_error_not_a_silent_random_model(tmp_path: Path) -> None:
    code, output = run_eval(["--model", "sd2net", "--data", str(tmp_path)])
    assert code == 2 and "--weights" in output and "--random-init" in output


def test_nonexistent_weights_file_and_conflicting_sources_are_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    code, output = run_eval(
        ["--model", "sd2net", "--data", str(tmp_path), "--weights", str(missing)]
    )
    assert code == 2 and "does not exist" in output
    code, output = run_eval(["--model", "sd2net", "--pred", str(tmp_path), "--data", str(tmp_path)])
    assert code == 2 and "exactly one" in output


def test_probability_png_round_trip_is_within_half_a_grey_level(tmp_path: Path) -> None:
    prob = np.linspace(0.0, 1.0, 64 * 3, dtype=np.float32).reshape(3, 64)
    path = tmp_path / "p.png"
    save_probability_png(prob, path)
    restored = read_probability_png(path)
    assert restored.shape == prob.shape
    assert np.abs(restored - prob).max() <= 0.5 / 255 + 1e-7


def test_false_alarms_on_target_free_images_are_counted_apart(tmp_path: Path) -> None:
    """A tiny dataset of two images, one target-free; predictions with one stray blob in each
    image: the target-free image's blob is its false alarm, counted on its own."""
    for folder in ("images", "masks", "splits", "pred"):
        (tmp_path / folder).mkdir()
    masks = {"with": np.zeros((32, 32), np.uint8), "free": np.zeros((32, 32), np.uint8)}
    masks["with"][10:13, 10:13] = 255
    for name, mask in masks.items():
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), np.full((32, 32), 90, np.uint8))
        cv2.imwrite(str(tmp_path / "masks" / f"{name}.png"), mask)
        prediction = (mask > 0).astype(np.float32)
        prediction[25:27, 25:27] = 1.0  # a stray detection far from any target
        save_probability_png(prediction, tmp_path / "pred" / f"{name}.png")
    (tmp_path / "splits" / "test.txt").write_text("with\nfree\n")
    result = evaluate(tmp_path, "test", predictions_dir=tmp_path / "pred")
    assert result["images"] == 2 and result["fa_per_frame"] == 1.0
    assert result["target_free"] == {"images": 1, "fa_per_frame": 1.0}
