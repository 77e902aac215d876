"""``irtrack eval`` refuses what it cannot score honestly, with messages that say what to do."""

from pathlib import Path

import numpy as np
import pytest
from cli_support import irtrack

from evaluation.images import read_probability_png, save_probability_png
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
