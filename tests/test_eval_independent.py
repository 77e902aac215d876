"""``irtrack eval`` agrees with an independent re-implementation of the metrics.

The re-implementation below shares no code with ``evaluation.metrics``/``frames.postprocess``: scipy's
``ndimage.label`` with a full 3x3 structure for 8-connectivity, ``center_of_mass`` for centroids,
plain loops for the greedy matching, masks and split names read directly from disk. It rescores
the probability PNGs that ``irtrack eval`` saved (``--save-pred``) and must give the same figures as
the JSON record, to 0.1 points.

Two sources of predictions: the registry's single-frame models on a few NUDT-SIRST images (shipped
weights when there are any, else a seeded random initialisation, whose maps are nearly trivial),
and a synthetic prediction folder built from SIRST-v2 masks with perturbations (hits shifted by a
pixel, missed targets, targets displaced beyond 3 px, false-alarm blobs, target-free frames, odd
image sizes) scored with ``irtrack eval --pred``.
"""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_support import irtrack
from scipy import ndimage

from data.paths import DATA_DIR
from models.registry import MODEL_INFO

NUDT = DATA_DIR / "nudt-sirst"
SIRST_V2 = DATA_DIR / "sirst-v2"
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

pytestmark = pytest.mark.skipif(
    not (NUDT / "splits").is_dir() or not (SIRST_V2 / "splits").is_dir(),
    reason=f"shared datasets not found under {DATA_DIR} (set IRTRACK_SHARED)",
)


def first_names(dataset_dir: Path, split: str, count: int) -> list[str]:
    lines = (dataset_dir / "splits" / f"{split}.txt").read_text().split()
    return [line.removesuffix(".png") for line in lines[:count]]


def independent_scores(
    dataset_dir: Path, names: list[str], pred_dir: Path, threshold: float = 0.5
) -> dict[str, float]:
    intersection = union = pixels = targets = detected = fa_pixels = fa_objects = 0
    image_ious = []
    for name in names:
        png = cv2.imread(str(pred_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        mask_file = cv2.imread(str(dataset_dir / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert png is not None and mask_file is not None and mask_file.ndim == 2
        assert png.shape == mask_file.shape, f"{name}: prediction not at the image's size"
        predicted = png / 255.0 > threshold
        truth = mask_file > 127
        intersection += int((predicted & truth).sum())
        union += int((predicted | truth).sum())
        pixels += truth.size
        if truth.any():
            image_ious.append((predicted & truth).sum() / (predicted | truth).sum())

        truth_labels, truth_count = ndimage.label(truth, structure=EIGHT_CONNECTED)
        pred_labels, pred_count = ndimage.label(predicted, structure=EIGHT_CONNECTED)
        truth_centres = ndimage.center_of_mass(truth, truth_labels, range(1, truth_count + 1))
        pred_centres = ndimage.center_of_mass(predicted, pred_labels, range(1, pred_count + 1))
        pred_areas = ndimage.sum(predicted, pred_labels, range(1, pred_count + 1))
        used: set[int] = set()
        for truth_centre in truth_centres:
            for k, pred_centre in enumerate(pred_centres):
                if k not in used and math.dist(truth_centre, pred_centre) < 3:
                    used.add(k)
                    detected += 1
                    break
        targets += truth_count
        unmatched = [k for k in range(pred_count) if k not in used]
        fa_objects += len(unmatched)
        fa_pixels += int(sum(pred_areas[k] for k in unmatched))
    return {
        "mIoU": 100 * intersection / union,
        "nIoU": 100 * float(np.mean(image_ious)),
        "Pd": 100 * detected / targets,
        "Fa": fa_pixels / pixels * 1e6,
        "fa_per_frame": fa_objects / len(names),
        "images": len(names),
        "targets": targets,
        "detected": detected,
        "false_alarm_objects": fa_objects,
        "target_free_images": len(names) - len(image_ious),
    }


def assert_record_matches(record: dict, independent: dict[str, float]) -> None:
    for key in ("mIoU", "nIoU", "Pd", "Fa", "fa_per_frame"):
        assert record[key] == pytest.approx(independent[key], abs=0.1), key
    for key in ("images", "targets", "detected", "false_alarm_objects"):
        assert record[key] == independent[key], key
    assert record["niou_excluded_images"] == independent["target_free_images"]


def run_eval(args: list[str]) -> None:
    result = irtrack(["eval", *args])
    assert result.exit_code == 0, result.output


SINGLE_FRAME_MODELS = [name for name, info in MODEL_INFO.items() if info.frames == 1]


@pytest.mark.parametrize("model", SINGLE_FRAME_MODELS)
def test_eval_of_a_registry_model_matches_independent_scores(model: str, tmp_path: Path) -> None:
    count = 2
    weights_args = (
        [] if MODEL_INFO[model].default_weights_path else ["--random-init", "--seed", "0"]
    )
    out = tmp_path / "eval.json"
    run_eval(
        ["--model", model, "--data", str(NUDT), "--split", "test", "--limit", str(count),
         "--json", str(out), "--save-pred", str(tmp_path / "pred"), *weights_args]
    )  # fmt: skip
    record = json.loads(out.read_text())
    names = first_names(NUDT, "test", count)
    assert sorted(p.stem for p in (tmp_path / "pred").glob("*.png")) == sorted(names)
    assert_record_matches(record, independent_scores(NUDT, names, tmp_path / "pred"))
    assert (record["model"], record["dataset"], record["split"]) == (model, "nudt-sirst", "test")
    assert record["threshold"] == 0.5 and record["date"] and record["machine"]
    assert (record["weights_sha256"] is None) == bool(weights_args)


def perturbed_predictions(dataset_dir: Path, names: list[str], out_dir: Path) -> None:
    """Probability maps with known kinds of hits, misses and false alarms, from the masks."""
    rng = np.random.default_rng(7)
    out_dir.mkdir()
    for name in names:
        mask_file = cv2.imread(str(dataset_dir / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert mask_file is not None
        truth = np.asarray(mask_file > 127)
        height, width = truth.shape
        prob = rng.uniform(0.0, 0.3, size=truth.shape)  # background clutter for the ROC sweep
        labels, count = ndimage.label(truth, structure=EIGHT_CONNECTED)
        for k in range(1, count + 1):
            target = labels == k
            action = rng.integers(5)
            if action == 0:  # hit, shifted by one pixel, confident
                prob[np.roll(target, 1, axis=1)] = 0.95
            elif action == 1:  # hit, grown by a pixel, less confident
                prob[ndimage.binary_dilation(target, structure=EIGHT_CONNECTED)] = 0.6
            elif action == 2:  # displaced 6 px: a miss and a false alarm
                prob[np.roll(target, 6, axis=0)] = 0.9
            elif action == 3:  # below threshold: a miss
                prob[target] = 0.45
            # action 4: not predicted at all
        for _ in range(rng.integers(0, 3)):  # false-alarm blobs
            row, col = rng.integers(0, height - 4), rng.integers(0, width - 4)
            size = rng.integers(1, 4)
            prob[row : row + size, col : col + size] = rng.uniform(0.55, 1.0)
        png = np.rint(prob * 255).astype(np.uint8)
        assert cv2.imwrite(str(out_dir / f"{name}.png"), png)


def test_eval_of_perturbed_predictions_matches_independent_scores(tmp_path: Path) -> None:
    count = 15  # includes target-free frames and sizes that are not multiples of 16
    names = first_names(SIRST_V2, "test", count)
    pred_dir = tmp_path / "pred"
    perturbed_predictions(SIRST_V2, names, pred_dir)
    out = tmp_path / "eval.json"
    roc_png = tmp_path / "roc.png"
    run_eval(
        ["--pred", str(pred_dir), "--data", str(SIRST_V2), "--split", "test",
         "--limit", str(count), "--json", str(out), "--roc", str(roc_png)]
    )  # fmt: skip
    record = json.loads(out.read_text())
    independent = independent_scores(SIRST_V2, names, pred_dir)
    # The slice must exercise every case, or agreement would prove little.
    assert 0 < independent["detected"] < independent["targets"]
    assert independent["false_alarm_objects"] > 0 and independent["target_free_images"] > 0
    assert_record_matches(record, independent)
    roc = record["roc"]
    for threshold, pd, fa in zip(roc["thresholds"], roc["pd"], roc["fa"], strict=True):
        if 0.3 < threshold < 0.9 and threshold != 0.5:  # two other points of the sweep
            swept = independent_scores(SIRST_V2, names, pred_dir, threshold=threshold)
            assert (pd, fa) == (
                pytest.approx(swept["Pd"], abs=0.1),
                pytest.approx(swept["Fa"], abs=0.1),
            )
    assert cv2.imread(str(roc_png)) is not None
