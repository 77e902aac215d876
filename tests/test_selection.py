"""irtrack select: a run's snapshots scored on a validation split, the best kept as its weights."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_support import irtrack
from conftest import require_path

from data.paths import DATA_DIR
from models.registry import build_model, model_info
from models.weights import load_weights, read_metadata, save_weights
from training.config import Hyper
from training.loop import BEST_WEIGHTS, SNAPSHOTS, weights_metadata
from training.selection import SELECTION_LOG, TARGET_FREE_FIGURE


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


def target_free_run(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A run over two real target-free SIRST-v2 val frames, with two snapshots: epoch 1 the
    shipped default with its output negated (the sky becomes one false target per frame), epoch 2
    the default as shipped (which reports nothing on these two). Returns (run, data_dir, shipped
    weights)."""
    source = require_path(DATA_DIR / "sirst-v2", "the SIRST-v2 images (shared/data/sirst-v2)")
    names = ["S7_60", "S7_8"]
    data_dir = tmp_path / "data"
    for folder in ("images", "masks"):
        (data_dir / "sirst-v2" / folder).mkdir(parents=True)
        for name in names:
            (data_dir / "sirst-v2" / folder / f"{name}.png").symlink_to(
                source / folder / f"{name}.png"
            )
    (data_dir / "sirst-v2" / "splits").mkdir()
    for split in ("train", "val"):
        (data_dir / "sirst-v2" / "splits" / f"{split}.txt").write_text("\n".join(names) + "\n")
    shipped = model_info("sd2net").default_weights_path
    assert shipped is not None
    hyper = replace(Hyper(**json.loads(read_metadata(shipped)["hyper"])), data="sirst-v2")
    run = tmp_path / "run"
    model = build_model("sd2net")
    load_weights(model, shipped)
    with torch.no_grad():
        model.head.out.weight.neg_()
    save_weights(model, run / SNAPSHOTS / "epoch-0001.safetensors", weights_metadata(hyper, 1))
    load_weights(model, shipped)
    save_weights(model, run / SNAPSHOTS / "epoch-0002.safetensors", weights_metadata(hyper, 2))
    return run, data_dir, shipped


def test_the_target_free_gate_refuses_snapshots_with_more_false_alarms_than_its_weights(
    tmp_path: Path,
):
    run, data_dir, shipped = target_free_run(tmp_path)
    select = ["select", run, "--data-dir", data_dir, "--device", "cpu"]

    ungated = irtrack(select)  # no targets: mIoU ties, and the earliest snapshot wins
    assert ungated.exit_code == 0, ungated.output
    assert read_metadata(run / BEST_WEIGHTS)["epoch"] == "1"

    gated = irtrack([*select, "--target-free-gate", shipped])
    assert gated.exit_code == 0, gated.output
    entry = json.loads((run / SELECTION_LOG).read_text().splitlines()[-1])
    negated, as_shipped = entry["scores"]
    assert negated["refused"] and not as_shipped["refused"]
    assert negated[TARGET_FREE_FIGURE] == 1.0 and entry["gate"][TARGET_FREE_FIGURE] == 0.0
    assert as_shipped[TARGET_FREE_FIGURE] == 0.0
    facts = read_metadata(run / BEST_WEIGHTS)
    assert facts["epoch"] == "2" and str(shipped) in facts["target_free_gate"]
    table = tmp_path / "selections.md"
    report = ["report", "selections", "--run", f"gated={run / SELECTION_LOG}"]
    reported = irtrack([*report, "--markdown", table])
    assert reported.exit_code == 0, reported.output
    rows = [line for line in table.read_text().splitlines() if line.startswith("| gated |")]
    gate = entry["gate"]  # the gate's weights scored on the run's val data too
    assert rows[0].endswith(
        f"| gate: `{shipped.name}` | {gate['mIoU']:.2f} | {gate['Pd']:.2f} | {gate['Fa']:.2f} "
        "| 0.000 | - |"
    )
    same_weights = {key: as_shipped[key] for key in ("mIoU", "nIoU", "Pd", "Fa")}
    assert {key: gate[key] for key in same_weights} == pytest.approx(same_weights, nan_ok=True)
    assert rows[1].startswith("| gated | epoch 1 |") and rows[1].endswith("| 1.000 | refused |")
    assert rows[2].endswith("| 0.000 | passed, kept as best |") and len(rows) == 3

    (run / SNAPSHOTS / "epoch-0002.safetensors").unlink()
    (run / BEST_WEIGHTS).unlink()
    refused = irtrack([*select, "--target-free-gate", shipped])
    assert refused.exit_code == 1 and "none kept" in refused.output
    assert not (run / BEST_WEIGHTS).exists()


def test_the_target_free_gate_is_for_single_frame_models(tmp_path: Path):
    shipped = model_info("std2net").default_weights_path
    assert shipped is not None
    hyper = Hyper(**json.loads(read_metadata(shipped)["hyper"]))
    save_weights(
        build_model("std2net"),
        tmp_path / SNAPSHOTS / "epoch-0001.safetensors",
        weights_metadata(hyper, 1),
    )
    result = irtrack(["select", tmp_path, "--target-free-gate", shipped])
    assert result.exit_code == 2 and "single frames" in result.output
