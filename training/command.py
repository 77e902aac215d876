"""``irtrack train``: the command line of :func:`training.loop.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from data.datasets import TARGET_CROPS
from data.paths import DATA_DIR
from training.config import TrainConfig
from training.loop import train
from training.losses import HARD_BACKGROUND_WEIGHT
from training.recipes import HARD_BACKGROUND_LOSS, LOSSES, SCHEDULES


def train_command(
    model: Annotated[str, typer.Option(help="sd2net | std2net | lrrnet")],
    data: Annotated[
        str,
        typer.Option(
            help="nudt-sirst | sirst-v2 | drone-ir | sequences (std2net), or several joined with "
            "'+' (one named twice is drawn twice as often)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="run folder: checkpoints, best weights, log")],
    epochs: Annotated[int | None, typer.Option(help="default: the paper's")] = None,
    batch_size: Annotated[int | None, typer.Option(help="default: the paper's")] = None,
    lr: Annotated[
        float | None, typer.Option(help="base learning rate; default: the paper's")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    amp: Annotated[
        bool | None, typer.Option("--amp/--no-amp", help="default: on with CUDA")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue OUT/last.ckpt exactly")] = False,
    max_minutes: Annotated[
        float | None, typer.Option(help="stop cleanly after a checkpoint")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="loader workers; default 0 CPU, 4 CUDA")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch CPU threads; default all cores (1 on a busy host)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="default: the paper's")] = None,
    size: Annotated[
        int | None, typer.Option(help="train/val resize; lrrnet: 512, 256 on CPU")
    ] = None,
    crop: Annotated[
        int | None,
        typer.Option(help="train on native-scale random crops of this size, validate native"),
    ] = None,
    val_every: Annotated[
        int, typer.Option(min=0, help="validate every N epochs (val split); 0 = never")
    ] = 1,
    snapshot_every: Annotated[
        int | None, typer.Option(min=1, help="also keep the weights every N epochs (snapshots/)")
    ] = None,
    augment: Annotated[bool | None, typer.Option("--augment/--no-augment")] = None,
    jitter: Annotated[
        bool | None,
        typer.Option("--jitter/--no-jitter", help="random gain, offset and sensor noise"),
    ] = None,
    schedule: Annotated[
        str | None, typer.Option(help=f"{' | '.join(SCHEDULES)}; default: the paper's")
    ] = None,
    warmup_epochs: Annotated[int | None, typer.Option(help="linear lr warm-up epochs")] = None,
    ema: Annotated[
        float | None, typer.Option(help="validate an EMA of the weights with this decay")
    ] = None,
    freeze_backbone: Annotated[
        bool | None,
        typer.Option(
            "--freeze-backbone/--train-backbone",
            help="std2net: keep the per-frame backbone (from --init-weights) fixed",
        ),
    ] = None,
    hard_negatives: Annotated[
        float | None,
        typer.Option(
            help="share of the crops centred on the false alarms of --init-weights, mined at the "
            "start (needs --crop)"
        ),
    ] = None,
    target_crops: Annotated[
        float | None,
        typer.Option(
            help="share of the crops centred near a target (needs --crop; default "
            f"{TARGET_CROPS}); the rest are uniform"
        ),
    ] = None,
    loss: Annotated[
        str | None, typer.Option(help=f"{' | '.join(LOSSES)}; default: the paper's")
    ] = None,
    hard_background_weight: Annotated[
        float | None,
        typer.Option(
            help=f"weight of the {HARD_BACKGROUND_LOSS} loss's cross-entropy term "
            f"(default {HARD_BACKGROUND_WEIGHT})"
        ),
    ] = None,
    unlabelled_box_rest: Annotated[
        bool | None,
        typer.Option(
            "--unlabelled-box-rest/--background-box-rest",
            help="drone-ir: leave a box's pixels outside its pseudo-mask out of the loss "
            "(default: background)",
        ),
    ] = None,
    compile: Annotated[bool, typer.Option(help="torch.compile the training step")] = False,
    channels_last: Annotated[bool, typer.Option(help="NHWC weights and batches")] = False,
    limit: Annotated[int | None, typer.Option(help="first N images per split (smoke runs)")] = None,
    epoch_size: Annotated[int | None, typer.Option(help="sequences: windows per epoch")] = None,
    checkpoint_minutes: Annotated[float, typer.Option(help="also checkpoint this often")] = 5.0,
    data_dir: Annotated[Path, typer.Option(help="the shared datasets")] = DATA_DIR,
    init_weights: Annotated[
        Path | None,
        typer.Option(help="start from these weights (matching names; std2net: its backbone)"),
    ] = None,
) -> None:
    """Train a detector with its paper's recipe; resumable, validated on the val split."""
    config = TrainConfig(
        model=model,
        data=data,
        out=out,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        size=size,
        crop=crop,
        seed=seed,
        augment=augment,
        jitter=jitter,
        schedule=schedule,
        warmup_epochs=warmup_epochs,
        ema=ema,
        freeze_backbone=freeze_backbone,
        hard_negatives=hard_negatives,
        target_crops=target_crops,
        loss=loss,
        hard_background_weight=hard_background_weight,
        unlabelled_box_rest=unlabelled_box_rest,
        compile=compile,
        channels_last=channels_last,
        limit=limit,
        epoch_size=epoch_size,
        device=device,
        amp=amp,
        workers=workers,
        threads=threads,
        resume=resume,
        max_minutes=max_minutes,
        checkpoint_minutes=checkpoint_minutes,
        val_every=val_every,
        snapshot_every=snapshot_every,
        data_dir=data_dir,
        init_weights=init_weights,
    )
    try:
        result = train(config)
    except (ValueError, FileExistsError) as error:
        raise typer.BadParameter(str(error)) from error
    state = "finished" if result.finished else "paused (continue with --resume)"
    typer.echo(
        f"{state}: epoch {result.epoch}, iteration {result.iteration}, "
        f"best val mIoU {result.best_metric}, in {result.out}"
    )
