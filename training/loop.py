"""Training of the three detectors with their papers' recipes, resumable in short slices.

``irtrack train --model sd2net --data nudt-sirst --out runs/sd2net`` trains with the recipe of the
model's paper (:data:`RECIPES`); every option overrides one ingredient. What a run writes in OUT:

- ``last.ckpt`` (safetensors: weights, optimizer tensors, RNG states) + ``last.ckpt.json``
  (everything else: epoch, iteration, best metric, optimizer layout, RNG scalars, the resolved
  hyper-parameters). Written every epoch and every ``checkpoint_minutes``; nothing is pickled, so
  a checkpoint from anywhere can be loaded safely. ``--resume`` continues exactly: the epoch's
  batch order, each sample's augmentation and synthesized clip, the lr and all RNG states are pure
  functions of (seed, epoch, index) or restored, so an interrupted run ends with the same
  parameters as an uninterrupted one (on the same device and thread count).
- ``best.safetensors``: weights only (``models.weights``), the epoch with the best mIoU on the
  VAL split (never test), with metadata (model, data, split, epoch, val mIoU, date, commit).
- ``log.jsonl``: one line per epoch (loss, lr, seconds, val metrics).

``--max-minutes`` stops cleanly after a checkpoint, so long trainings run as a chain of slices.

Validation runs at the training size (images resized like the training images); the published
protocol (native sizes, test split) is ``irtrack eval``'s job.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections.abc import Sized
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data.paths import REPO_ROOT
from evaluation.images import score_samples
from models.devices import autocast, resolve_device, to_channels_last
from models.registry import build_model
from models.weights import file_sha256, initialize_from, read_metadata, save_weights
from training.batches import build_datasets, epoch_batches, set_dataset_epoch
from training.checkpoints import (
    CHECKPOINT,
    Progress,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from training.config import Hyper, TrainConfig, lr_factor, resolve
from training.hard_negatives import attach, mined_points
from training.recipes import RECIPES, TrainStep, training_step

BEST_WEIGHTS = "best.safetensors"
LOG = "log.jsonl"
SNAPSHOTS = "snapshots"  # weights every --snapshot-every epochs, for selection elsewhere


@dataclass(frozen=True)
class TrainResult:
    """How a call of :func:`train` ended."""

    finished: bool  # all epochs done (else paused by --max-minutes / stop_after_iterations)
    epoch: int
    iteration: int
    best_metric: float | None
    out: Path
    seconds_per_iteration: float | None  # of the epoch in progress when paused, else the last


def git_commit() -> str:
    """HEAD of the repository, with "-dirty" when tracked files differ; "unknown" outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def train(config: TrainConfig) -> TrainResult:
    """Run (or continue) training until done, ``max_minutes`` or ``stop_after_iterations``.

    Uses ``config.threads`` torch threads (default: every core) and restores the caller's count.
    """
    callers_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    try:
        return _train(config)
    finally:
        torch.set_num_threads(callers_threads)


def _train(config: TrainConfig) -> TrainResult:
    started = time.monotonic()
    out = Path(config.out)
    has_checkpoint = (out / CHECKPOINT).exists()
    if has_checkpoint and not config.resume:
        raise FileExistsError(f"{out / CHECKPOINT} exists: pass --resume, or choose another --out")
    checkpoint = read_checkpoint(out) if config.resume and has_checkpoint else None
    out.mkdir(parents=True, exist_ok=True)
    hyper = resolve(config, Hyper(**checkpoint[1]["hyper"]) if checkpoint else None)
    device = resolve_device(config.device)
    amp = device.type == "cuda" if config.amp is None else config.amp
    workers = config.workers if config.workers is not None else (4 if device.type == "cuda" else 0)

    torch.manual_seed(hyper.seed)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model(hyper.model).to(device).train()
    if config.channels_last:
        to_channels_last(model)
    recipe = RECIPES[hyper.model]
    if hyper.freeze_backbone:
        _backbone(model).requires_grad_(False)
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=hyper.lr, betas=recipe.betas)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    progress = Progress()
    if checkpoint is None and config.init_weights is not None:
        initialised = initialize_from(model, config.init_weights)
        tqdm.write(f"initialised {len(initialised)} tensors from {config.init_weights}")
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(hyper.ema), use_buffers=True)
        if hyper.ema is not None
        else None
    )
    if checkpoint is not None:
        progress = restore_checkpoint(*checkpoint, model, optimizer, scaler, ema)
        tqdm.write(f"resumed {out} at epoch {progress.epoch}, iteration {progress.iteration}")
    if progress.earlier_stages is None:  # a fresh run, or a checkpoint from before they were kept
        progress.earlier_stages = earlier_stages(config.init_weights)
    # static shapes: a new batch shape compiles its own graph (dynamic ones hit an inductor error,
    # "cannot determine truth value of Relational", once a process had trained at another size)
    chosen_step = training_step(hyper.loss or recipe.loss, hyper.hard_background_weight)
    step = (
        cast(TrainStep, torch.compile(chosen_step, dynamic=False))
        if config.compile
        else chosen_step
    )
    validated = ema.module if ema is not None else model

    train_set, val_set = build_datasets(hyper, config, with_val=config.val_every > 0)
    if hyper.hard_negatives:
        points = mined_points(validated, train_set, device, out)
        attach(train_set, points, hyper.hard_negatives)
        tqdm.write(f"hard negatives: {sum(map(len, points.values()))} in {len(points)} samples")
    train_count = len(cast(Sized, train_set))
    batches_per_epoch = len(epoch_batches(train_count, hyper.batch_size, hyper.seed, 0))
    last_save = time.monotonic()

    def save() -> None:
        nonlocal last_save
        save_checkpoint(out, hyper, progress, model, optimizer, scaler, ema)
        last_save = time.monotonic()

    def paused() -> bool:
        out_of_iterations = (
            config.stop_after_iterations is not None
            and progress.iteration >= config.stop_after_iterations
        )
        out_of_time = (
            config.max_minutes is not None and time.monotonic() - started >= 60 * config.max_minutes
        )
        return out_of_iterations or out_of_time

    while progress.epoch < hyper.epochs:
        model.train()  # validation left it so too; a frozen backbone keeps its running statistics
        if hyper.freeze_backbone:
            _backbone(model).eval()
        epoch = progress.epoch
        done_in_epoch = progress.iteration - epoch * batches_per_epoch
        batches = epoch_batches(train_count, hyper.batch_size, hyper.seed, epoch)
        set_dataset_epoch(train_set, epoch)
        loader = DataLoader(
            train_set,
            batch_sampler=batches[done_in_epoch:],
            num_workers=workers,
            pin_memory=device.type == "cuda",
            # the loader draws its workers' base seed from this, not from the global RNG
            generator=torch.Generator().manual_seed(hyper.seed * 100_003 + epoch),
        )
        bar = tqdm(
            loader,
            total=batches_per_epoch,
            initial=done_in_epoch,
            desc=f"{hyper.model} epoch {epoch + 1}/{hyper.epochs}",
            dynamic_ncols=True,
        )
        tick = time.monotonic()
        for batch in bar:
            lr = hyper.lr * lr_factor(hyper, epoch, progress.iteration, batches_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            image = batch["image"].to(device, non_blocking=True, memory_format=memory_format)
            mask = batch["mask"].to(device, non_blocking=True, memory_format=memory_format)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, amp):
                loss = step(model, image, mask)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            progress.iteration += 1
            progress.epoch_loss_sum += loss.item()  # waits for the step: the time below is real
            progress.epoch_batches += 1
            progress.epoch_seconds += time.monotonic() - tick  # loading and training the batch
            tick = time.monotonic()
            bar.set_postfix(
                loss=f"{progress.epoch_loss_sum / progress.epoch_batches:.4f}", lr=f"{lr:.2e}"
            )
            if paused():
                bar.close()
                save()
                return _result(False, progress, out)
            if time.monotonic() - last_save >= 60 * config.checkpoint_minutes:
                save()
        bar.close()
        lr = optimizer.param_groups[0]["lr"]
        _finish_epoch(progress, hyper, config, validated, val_set, device, amp, out, lr)
        save()
        if progress.epoch < hyper.epochs and paused():
            return _result(False, progress, out)
    return _result(True, progress, out)


def _backbone(model: nn.Module) -> nn.Module:
    """The per-frame SD2Net of a multi-frame model (what ``--freeze-backbone`` freezes)."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"{type(model).__name__} has no backbone to freeze")
    return backbone


def _finish_epoch(
    progress: Progress,
    hyper: Hyper,
    config: TrainConfig,
    model: nn.Module,
    val_set: Dataset | None,
    device: torch.device,
    amp: bool,
    out: Path,
    lr: float,
) -> None:
    """Validate (every ``val_every`` epochs and after the last; never with ``val_every`` 0), keep
    the best weights, a snapshot every ``snapshot_every`` epochs, log."""
    progress.epoch += 1
    entry: dict[str, Any] = {
        "epoch": progress.epoch,
        "iteration": progress.iteration,
        "loss": progress.epoch_loss_sum / max(progress.epoch_batches, 1),
        "lr": lr,
        "seconds": round(progress.epoch_seconds, 2),
    }
    if config.snapshot_every and progress.epoch % config.snapshot_every == 0:
        save_weights(
            model,
            out / SNAPSHOTS / f"epoch-{progress.epoch:04d}.safetensors",
            weights_metadata(hyper, progress.epoch, earlier=progress.earlier_stages),
        )
    if val_set is not None and (
        progress.epoch % config.val_every == 0 or progress.epoch == hyper.epochs
    ):
        tick = time.monotonic()
        metrics = score_samples(model, val_set, device, amp, hyper.batch_size)
        entry["val"] = {k: metrics[k] for k in ("mIoU", "nIoU", "Pd", "Fa", "roc_auc", "images")}
        entry["val_seconds"] = round(time.monotonic() - tick, 2)
        miou = metrics["mIoU"]
        if not math.isnan(miou) and (progress.best_metric is None or miou > progress.best_metric):
            progress.best_metric, progress.best_epoch = miou, progress.epoch
            entry["best"] = True
            metadata = weights_metadata(hyper, progress.epoch, metrics, progress.earlier_stages)
            save_weights(model, out / BEST_WEIGHTS, metadata)
        tqdm.write(f"epoch {progress.epoch}: loss {entry['loss']:.4f}, val mIoU {miou:.2f}")
    with open(out / LOG, "a") as log:
        log.write(json.dumps(entry) + "\n")
    progress.seconds_per_iteration = progress.epoch_seconds / max(progress.epoch_batches, 1)
    progress.epoch_loss_sum, progress.epoch_batches, progress.epoch_seconds = 0.0, 0, 0.0


def earlier_stages(init_weights: Path | None) -> list[dict[str, Any]]:
    """The training behind the weights a run starts from (``--init-weights``): their own stages,
    or, for a file written before stages were recorded, one stage read from its metadata."""
    if init_weights is None:
        return []
    facts = read_metadata(init_weights)
    if "stages" in facts:
        return list(json.loads(facts["stages"]))
    return [
        {
            "dataset": facts.get("dataset", "?"),
            "epochs": int(facts.get("epoch", 0)),
            "planned": int(facts.get("epochs_planned", facts.get("epoch", 0))),
            "date": facts.get("date", "?"),
            "commit": facts.get("git_commit", "?"),
            "weights": f"{init_weights.name} (sha256 {file_sha256(init_weights)[:12]})",
        }
    ]


def weights_metadata(
    hyper: Hyper,
    epoch: int,
    metrics: dict[str, Any] | None = None,
    earlier: list[dict[str, Any]] | None = None,
) -> dict[str, str]:
    """What a weights file written by training says about itself: the run's recipe, the epoch,
    its validation figures where it was validated (``split`` = the split they come from), and
    every stage of training behind it (``earlier``: those before this run) with the total epochs."""
    date = datetime.now(UTC).isoformat(timespec="seconds")
    commit = git_commit()
    stage = {
        "dataset": hyper.data,
        "epochs": epoch,
        "planned": hyper.epochs,
        "date": date,
        "commit": commit,
    }
    stages = [*(earlier or []), stage]
    metadata = {
        "model": hyper.model,
        "dataset": hyper.data,
        "epoch": str(epoch),
        "epochs_planned": str(hyper.epochs),
        "val_size": "native" if hyper.crop else str(hyper.size),
        "hyper": json.dumps(asdict(hyper)),
        "date": date,
        "git_commit": commit,
        "stages": json.dumps(stages),
        "total_epochs": str(sum(int(past["epochs"]) for past in stages)),
    }
    if metrics is not None:
        metadata["split"] = "val"
        metadata |= {f"val_{name}": f"{metrics[name]:.4f}" for name in ("mIoU", "nIoU", "Pd", "Fa")}
    return metadata


def _result(finished: bool, progress: Progress, out: Path) -> TrainResult:
    rate = (
        progress.epoch_seconds / progress.epoch_batches
        if progress.epoch_batches
        else progress.seconds_per_iteration
    )
    return TrainResult(
        finished, progress.epoch, progress.iteration, progress.best_metric, out, rate
    )
