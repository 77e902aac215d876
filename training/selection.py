"""``irtrack select``: keep the snapshot of a run that scores best on the validation split.

For runs trained where their validation data was not (the GPU training run carries the training
splits only): every snapshot the run kept (``--snapshot-every``) is scored here on the val split
of its own training data (the set the training loop validates on), and the best one by val mIoU
becomes the run's ``best.safetensors``, its metadata naming the epoch and its val figures. The
test split is never looked at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from data.paths import DATA_DIR
from evaluation.images import score_samples
from models.devices import resolve_device
from models.registry import build_model
from models.weights import load_weights, read_metadata, save_weights
from training.batches import build_datasets
from training.config import Hyper, TrainConfig
from training.loop import BEST_WEIGHTS, SNAPSHOTS, weights_metadata

SELECTION_LOG = "selection.jsonl"


def select_snapshot(run: Path, device: torch.device, data_dir: Path = DATA_DIR) -> dict[str, Any]:
    """Score every snapshot of ``run`` on its val split; save the best as the run's best weights."""
    snapshots = sorted((run / SNAPSHOTS).glob("epoch-*.safetensors"))
    if not snapshots:
        raise FileNotFoundError(
            f"{run / SNAPSHOTS} holds no snapshots (train with --snapshot-every)"
        )
    hyper = Hyper(**json.loads(read_metadata(snapshots[0])["hyper"]))
    config = TrainConfig(model=hyper.model, data=hyper.data, out=run, data_dir=data_dir)
    _, val_set = build_datasets(hyper, config)
    assert val_set is not None
    model = build_model(hyper.model).to(device)
    scores: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for path in snapshots:
        facts = read_metadata(path)
        epoch = int(facts["epoch"])
        earlier = json.loads(facts.get("stages", "[]"))[:-1]  # those before this run
        load_weights(model, path)
        metrics = score_samples(model, val_set, device, amp=False, batch_size=hyper.batch_size)
        figures = {k: metrics[k] for k in ("mIoU", "nIoU", "Pd", "Fa")}
        scores.append({"epoch": epoch, "snapshot": path.name, **figures})
        typer.echo(f"epoch {epoch}: val mIoU {metrics['mIoU']:.2f}", err=True)
        if best is None or metrics["mIoU"] > best["mIoU"]:  # the earliest of equals
            best = scores[-1]
            save_weights(
                model, run / BEST_WEIGHTS, weights_metadata(hyper, epoch, metrics, earlier)
            )
    assert best is not None
    with open(run / SELECTION_LOG, "a") as log:
        log.write(json.dumps({"best": best, "scores": scores}) + "\n")
    return best


def select_command(
    run: Annotated[Path, typer.Argument(help="a training run's folder (irtrack train --out)")],
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    data_dir: Annotated[Path, typer.Option(help="the shared datasets")] = DATA_DIR,
) -> None:
    """Keep the run's snapshot with the best val mIoU as its best.safetensors."""
    try:
        best = select_snapshot(run, resolve_device(device), data_dir)
    except FileNotFoundError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(f"best: epoch {best['epoch']}, val mIoU {best['mIoU']:.2f} -> {run / BEST_WEIGHTS}")
