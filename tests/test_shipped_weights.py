"""Every shipped weights file still scores at least its floor on a slice of its test split.

Floors are written by ``irtrack report floors`` when weights are shipped (just under what they
measured then), so a broken weights file, a changed preprocessing or post-processing, or a model
change that silently alters the function fails here.
"""

import json
from pathlib import Path

import pytest

from evaluation.report import FLOORS_FILE, floor_figures
from models.weights import WEIGHTS_DIR, file_sha256

FLOORS = json.loads(FLOORS_FILE.read_text()) if FLOORS_FILE.exists() else {}


def test_every_shipped_weights_file_has_a_floor() -> None:
    shipped = {path.name for path in WEIGHTS_DIR.glob("*.safetensors")}
    assert shipped, "no weights shipped in models/weights/"
    assert set(FLOORS) == shipped, "re-measure the floors: irtrack report floors"


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_shipped_weights_score_at_least_their_floor(name: str, data_dir: Path) -> None:
    entry = FLOORS[name]
    weights = WEIGHTS_DIR / name
    assert file_sha256(weights) == entry["weights_sha256"], "weights changed: re-measure floors"
    result = floor_figures(entry, weights, data_dir)
    for metric, floor in entry["floor"].items():
        assert result[metric] >= floor, (metric, result[metric], entry)
