"""Accuracy tables and cards carry the measured figures, the papers' beside them, and the training."""

import json
from pathlib import Path

from models import build_model
from models.report import accuracy_table, weights_card
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
