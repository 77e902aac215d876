"""irtrack select: a run's snapshots scored on a validation split, the best kept as its weights."""

import json
from pathlib import Path

import torch
from cli_support import irtrack
from conftest import require_path

from data.paths import DATA_DIR
from models.registry import build_model, model_info
from models.weights import load_weights, read_metadata, save_weights
from training.config import Hyper
from training.loop import BEST_WEIGHTS, SNAPSHOTS, weights_metadata
from training.selection import SELECTION_LOG


def test_selection_by_video_keeps_the_snapshot_that_finds_targets_not_the_earliest(
    tmp_path: Path,
):
    require_path(DATA_DIR / "drone-ir", "the drone-ir clips (shared/data/drone-ir)")
    shipped = model_info("std2net").default_weights_path
    assert shipped is not None
    hyper = Hyper(**json.loads(read_metadata(shipped)["hyper"]))
    model = build_model("std2net")
    load_weights(model, shipped)
    # epoch 1: the shipped weights made blind (the output layer's bias far below any threshold);
    # epoch 2: the shipped weights as they are
    with torch.no_grad():
        model.head.out.bias -= 100.0
    save_weights(model, tmp_path / SNAPSHOTS / "epoch-0001.safetensors", weights_metadata(hyper, 1))
    load_weights(model, shipped)
    save_weights(model, tmp_path / SNAPSHOTS / "epoch-0002.safetensors", weights_metadata(hyper, 2))

    result = irtrack(
        ["select", tmp_path, "--by", "video", "--clips", 1, "--frames-per-clip", 12,
         "--device", "cpu"]
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    (entry,) = [json.loads(line) for line in (tmp_path / SELECTION_LOG).read_text().splitlines()]
    blind, seeing = entry["scores"]
    assert (blind["epoch"], seeing["epoch"]) == (1, 2)
    assert blind["Pd"] == 0.0 and seeing["Pd"] > 0.0
    assert entry["best"]["epoch"] == 2
    facts = read_metadata(tmp_path / BEST_WEIGHTS)
    assert facts["epoch"] == "2"
    assert "--by video" in facts["selected_by"] and "small-target clips" in facts["selected_by"]
    kept, expected = build_model("std2net"), build_model("std2net")
    load_weights(kept, tmp_path / BEST_WEIGHTS)
    load_weights(expected, shipped)
    for (name, value), reference in zip(
        kept.state_dict().items(), expected.state_dict().values(), strict=True
    ):
        assert torch.equal(value, reference), name


def test_selection_refuses_a_run_without_snapshots_and_an_unknown_method(tmp_path: Path):
    result = irtrack(["select", tmp_path])
    assert result.exit_code == 2 and "--snapshot-every" in result.output
    result = irtrack(["select", tmp_path, "--by", "luck"])
    assert result.exit_code == 2 and "pixels or video" in result.output
