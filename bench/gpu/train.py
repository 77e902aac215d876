"""The GPU training run: the papers' recipes on one lent GPU, in one device command of <= 9 minutes.

``bench/gpu/train.sh`` runs this on the device machine (``bench/gpu/prepare_training.sh`` carries
the data there first). Three jobs, in order, each in its own time slot:

1. SD2Net on NUDT-SIRST: the paper's recipe (Adam, MultiStepLR at 50% / 75% x0.1, 400 epochs,
   SoftIoU, frames resized to 256 x 256, no augmentation), batch 16 with lr 1e-3 instead of 4
   with 5e-4 (the GPU is idle at batch 4); validated on NUDT-SIRST's val holdout on the device.
2. SD2Net on SIRST-v2: the same recipe. SIRST-v2's val images do not fit the device tool's
   carry beside the training images, so the run keeps snapshots (``--snapshot-every``) and
   ``irtrack select`` picks the best on the val split back home.
3. LRRNet on NUDT-SIRST: the paper's recipe (Adam 1e-4, poly 0.9 per iteration, batch 8, 512 x
   512) for as many epochs as fit, from the shipped weights.

Each job first times ``CALIBRATION_ITERATIONS`` iterations, then trains the number of epochs
that fits its slot (at most the recipe's), with fp16 autocast (the loop's default on CUDA); a
hard ``max_minutes`` stop backs the estimate. After each job its run folder is packed into
``$OUT/<job>.tar``, so a device command stopped early still returns what finished.
``--smoke`` runs the same jobs at toy sizes on the CPU: a check of the script before device time.
"""

from __future__ import annotations

import math
import tarfile
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import torch
import typer

from data.datasets import list_split
from data.paths import DATA_DIR
from models.weights import WEIGHTS_DIR
from training.config import TrainConfig
from training.loop import train

CALIBRATION_ITERATIONS = 25
SNAPSHOTS_KEPT = 12  # SD2Net snapshots are ~1 MB: a job's tar stays under the tool's 16 MiB a file


@dataclass(frozen=True)
class Job:
    name: str
    model: str
    data: str
    batch_size: int
    lr: float
    size: int
    epochs: int  # the recipe's; fewer when they do not fit the slot
    slot_s: float
    validate_here: bool  # False: snapshots, selected on the val split back home
    init_weights: Path | None = None


JOBS = (
    Job("sd2net-nudt-sirst", "sd2net", "nudt-sirst", 16, 1e-3, 256, 400, 140, True),
    Job("sd2net-sirst-v2", "sd2net", "sirst-v2", 16, 1e-3, 256, 400, 110, False),
    Job(
        "lrrnet-nudt-sirst",
        "lrrnet",
        "nudt-sirst",
        8,
        1e-4,
        512,
        400,
        200,
        True,
        WEIGHTS_DIR / "lrrnet_nudt-sirst.safetensors",
    ),
)


def config(job: Job, out: Path, epochs: int, smoke: bool, data_dir: Path) -> TrainConfig:
    """The job's training run (``smoke``: 8 images at 32 x 32 on the CPU)."""
    validations = max(epochs // 25, 1)
    return TrainConfig(
        model=job.model,
        data=job.data,
        out=out,
        epochs=epochs,
        batch_size=2 if smoke else job.batch_size,
        lr=job.lr,
        size=32 if smoke else job.size,
        limit=8 if smoke else None,
        device="cpu" if smoke else "cuda",
        threads=1 if smoke else None,
        val_every=validations if job.validate_here else 0,
        snapshot_every=None if job.validate_here else max(math.ceil(epochs / SNAPSHOTS_KEPT), 1),
        max_minutes=job.slot_s / 60,
        init_weights=job.init_weights,
        data_dir=data_dir,
    )


def fitting_epochs(job: Job, seconds_per_iteration: float, iterations_per_epoch: int) -> int:
    """Epochs of the job that fit 85% of its slot (the rest: validation, saving, start-up)."""
    fitting = int(0.85 * job.slot_s / (seconds_per_iteration * iterations_per_epoch))
    return max(1, min(job.epochs, fitting))


def run_job(job: Job, out_dir: Path, runs_dir: Path, smoke: bool, data_dir: Path) -> str:
    """Calibrate, train, pack; returns a line for the log."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"calibrate-{job.name}-") as scratch:
        calibration = train(
            replace(
                config(job, Path(scratch), job.epochs, smoke, data_dir),
                val_every=0,
                snapshot_every=None,
                stop_after_iterations=CALIBRATION_ITERATIONS,
            )
        )
    assert calibration.seconds_per_iteration is not None
    images = len(list_split(data_dir / job.data, "train"))
    per_epoch = max((8 if smoke else images) // (2 if smoke else job.batch_size), 1)
    epochs = 2 if smoke else fitting_epochs(job, calibration.seconds_per_iteration, per_epoch)
    run = runs_dir / job.name  # $OUT gets the tar only
    result = train(config(job, run, epochs, smoke, data_dir))
    with tarfile.open(out_dir / f"{job.name}.tar", "w") as archive:
        for path in sorted(run.rglob("*")):
            if path.is_file() and path.name != "last.ckpt":  # the checkpoint's tensors stay
                archive.add(path, arcname=f"{job.name}/{path.relative_to(run)}")
    return (
        f"{job.name}: {calibration.seconds_per_iteration * 1000:.1f} ms/iteration, "
        f"{epochs} of {job.epochs} epochs planned, finished {result.finished} at epoch "
        f"{result.epoch}, best val mIoU {result.best_metric}, {time.monotonic() - started:.0f} s"
    )


def main(
    out: Annotated[Path, typer.Option(help="where the job tars go ($OUT)")],
    smoke: Annotated[bool, typer.Option(help="toy sizes on the CPU: check the script")] = False,
    data_dir: Annotated[Path, typer.Option(help="the carried datasets")] = DATA_DIR,
) -> None:
    """Run the jobs in order, each packed as it finishes."""
    torch.backends.cudnn.benchmark = True  # fixed-size batches: let cuDNN pick its kernels once
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = Path(tempfile.mkdtemp(prefix="irtrack-gpu-train-"))
    for job in JOBS:
        typer.echo(run_job(job, out, runs_dir, smoke, data_dir))


if __name__ == "__main__":
    typer.run(main)
