"""Accuracy tables and cards carry the measured figures, the papers' beside them, and the training."""

import json
from pathlib import Path

from evaluation.report import accuracy_table, floor_dataset, weights_card
from models.registry import build_model
from models.weights import save_weights


def eval_result(weights: Path, model: str, dataset: str, miou: float) -> dict:
    return {
        "model": model, "weights": str(weights), "weights_sha256": "ab" * 32,
        "dataset": dataset, "split": "test", "images": 12, "targets": 15,
        "mIoU": miou, "nIoU": 50.5, "Pd": 80.0, "Fa": 12.5, "fa_per_frame": 0.25,
        "date": "2026-11-22T03:00:00+00:00", "machine": "test CPU",
    }  # fmt: skip


def test_table_puts_paper_figures_beside_ours_with_training_facts(tmp_path: Path) -> None:
    weights = tmp_path / "sd2net.safetensors"
    hyper = {"epochs": 20, "model": "sd2net"}
    metadata = {
        "dataset": "nudt-sirst",
        "epoch": "7",
        "date": "2026-11-22",
        "hyper": json.dumps(hyper),
    }
    save_weights(build_model("sd2net"), weights, metadata)
    table = accuracy_table([eval_result(weights, "sd2net", "nudt-sirst", 61.234)])
    ours, paper = [line for line in table.splitlines() if line.startswith("| sd2net")]
    assert "61.23" in ours and "best val epoch 7 of 20" in ours
    assert "95.13" in paper
    assert "test CPU" in table


def test_each_row_names_its_weights_and_the_paper_row_comes_once(tmp_path: Path) -> None:
    staged = tmp_path / "sd2net_all.safetensors"
    stages = [{"epochs": 8}, {"epochs": 3}]
    metadata = {"dataset": "nudt-sirst+sirst-v2", "epoch": "3", "date": "2026-11-30",
                "hyper": json.dumps({"epochs": 3}), "stages": json.dumps(stages),
                "total_epochs": "11"}  # fmt: skip
    save_weights(build_model("sd2net"), staged, metadata)
    results = [
        eval_result(tmp_path / "sd2net_nudt-sirst.safetensors", "sd2net", "nudt-sirst", 70.0),
        eval_result(staged, "sd2net", "nudt-sirst", 50.0),
    ]
    rows = [line for line in accuracy_table(results).splitlines() if line.startswith("| sd2net")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| sd2net (ours: `sd2net_nudt-sirst`)",
        "| sd2net (paper)",
        "| sd2net (ours: `sd2net_all`)",
    ]
    assert "(2 stages, 11 epochs in all)" in rows[2]


def test_models_without_published_figures_get_no_paper_row(tmp_path: Path) -> None:
    table = accuracy_table(
        [eval_result(tmp_path / "missing.safetensors", "sd2net", "sirst-v2", 40.0)]
    )
    assert len([line for line in table.splitlines() if line.startswith("| sd2net")]) == 1
    assert "untrained" in table


def test_card_names_the_training_and_the_test_figures(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    metadata = {"dataset": "sirst-v2", "epoch": "3", "val_mIoU": "40.1", "git_commit": "abc123",
                "hyper": json.dumps({"epochs": 15})}  # fmt: skip
    save_weights(build_model("sd2net"), weights, metadata)
    card = weights_card(weights, [eval_result(weights, "sd2net", "sirst-v2", 42.0)])
    assert "`sirst-v2` train split" in card and "abc123" in card and "42.00" in card


def test_weights_trained_on_several_datasets_say_so_and_are_guarded_on_an_image_dataset(
    tmp_path: Path,
) -> None:
    weights = tmp_path / "w.safetensors"
    metadata = {"dataset": "drone-ir+sirst-v2", "epoch": "2", "hyper": json.dumps({"epochs": 3})}
    save_weights(build_model("sd2net"), weights, metadata)
    card = weights_card(weights, [eval_result(weights, "sd2net", "sirst-v2", 42.0)])
    assert "`drone-ir`, `sirst-v2`" in card and "together" in card
    assert floor_dataset("drone-ir+sirst-v2+nudt-sirst") == "sirst-v2"
    assert floor_dataset("nudt-sirst") == "nudt-sirst"
    assert floor_dataset("sequences") == "sequences"
    assert floor_dataset("drone-ir") == floor_dataset("drone-ir+sequences") == "drone-ir"


def sequence_result(model: str, pd_tight: float) -> dict:
    clips = {
        "crossing": {"Pd": 75.0, "fa_per_frame": 0.5},
        "fading": {"Pd": None, "fa_per_frame": 0.0},
    }
    matched = [
        {"fa_per_frame_limit": 0.05, "Pd": pd_tight, "threshold": 0.9, "fa_per_frame": 0.04},
        {"fa_per_frame_limit": 0.2, "Pd": None, "threshold": None, "fa_per_frame": None},
    ]
    return {
        "model": model, "weights": f"{model}.safetensors", "weights_sha256": "cd" * 32,
        "matched": matched, "roc_auc": 0.5, "mIoU": 33.3, "Pd": 70.0, "fa_per_frame": 0.3,
        "images": 24, "targets": 30, "clips": clips,
    }  # fmt: skip


def test_a_sequence_trained_card_shows_the_sequence_figures_of_every_model(tmp_path: Path) -> None:
    weights = tmp_path / "std2net.safetensors"
    metadata = {"dataset": "sequences", "epoch": "4", "hyper": json.dumps({"epochs": 12})}
    save_weights(build_model("sd2net"), weights, metadata)
    report = {
        "dataset": "synthesized clips", "clips": ["crossing", "fading"], "date": "2026-11-22",
        "machine": "test CPU",
        "models": {"sd2net": sequence_result("sd2net", 61.5), "std2net": sequence_result("std2net", 77.25)},
    }  # fmt: skip
    card = weights_card(weights, [report])
    assert "sequences synthesized from the nudt-sirst and sirst-v2 train splits" in card
    assert "kept epoch 4" in card
    assert "Sequence figures" in card and "Test figures" not in card
    rows = {line.split(" | ")[0]: line for line in card.splitlines() if line.startswith("| s")}
    assert "61.50" in rows["| sd2net"] and "77.25" in rows["| std2net"]
    assert "| crossing | 75.0 / 0.500 | 75.0 / 0.500 |" in card  # per-clip Pd / FA per frame
    assert "| fading | - / 0.000 |" in card  # a clip without targets has no Pd


def test_a_card_says_which_datasets_a_mix_drew_more_often(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    mix = "nudt-sirst+nudt-sirst+sirst-v2+drone-ir"
    metadata = {"dataset": mix, "epoch": "1", "hyper": json.dumps({"epochs": 1})}
    save_weights(build_model("sd2net"), weights, metadata)
    card = weights_card(weights, [eval_result(weights, "sd2net", "nudt-sirst", 50.0)])
    assert "`nudt-sirst` (drawn 2x), `sirst-v2`, `drone-ir` together" in card


def test_a_video_trained_card_shows_the_real_video_figures(tmp_path: Path) -> None:
    weights = tmp_path / "std2net_drone-ir.safetensors"
    metadata = {"dataset": "drone-ir", "epoch": "3", "hyper": json.dumps({"epochs": 3}),
                "val_mIoU": "24.2", "selected_by": "eval-video on the val clips"}  # fmt: skip
    save_weights(build_model("std2net"), weights, metadata)
    matched = [
        {"fa_per_frame_limit": limit, "Pd": pd, "threshold": 0.9, "fa_per_frame": 0.0}
        for limit, pd in ((0.01, None), (0.05, 71.25), (0.2, 88.5))
    ]
    tracking = {"mota": 0.5, "idf1": 0.75, "num_switches": 2.0}
    group = {"Pd": 90.0, "fa_per_frame": 0.125, "matched": matched, "tracking": tracking}
    report = {
        "dataset": "drone-ir test split", "clips": 2, "small_target_clips": 1,
        "frames_per_clip": 30, "frames": 60, "threshold": 0.5, "report": "all",
        "date": "2026-12-01", "machine": "test CPU",
        "models": {"std2net": {"weights": str(weights), "weights_sha256": "ef" * 32,
                               "groups": {"small-target clips": group}}},
    }  # fmt: skip
    card = weights_card(weights, [report])
    assert "Real-video figures" in card and "Sequence figures" not in card
    assert "the `drone-ir` training clips (pseudo-masks" in card
    assert "kept epoch 3 (selected by eval-video on the val clips; its val mIoU 24.2)" in card
    row = next(line for line in card.splitlines() if line.startswith("| std2net"))
    assert "| small-target clips | 90.0 | 0.125 | - | 71.2 | 88.5 |" in row
