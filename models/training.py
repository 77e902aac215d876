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
import random
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sized
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import numpy as np
import torch
import typer
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from models.datasets import IRSTDDataset
from models.lrrnet import LRRNet
from models.metrics import SegmentationMetrics
from models.padding import SizedModel, run_padded
from models.paths import DATA_DIR, REPO_ROOT
from models.registry import build_model, model_info
from models.synthesis import (
    SequenceConfig,
    SequenceDataset,
    SequenceSource,
    SyntheticWindowDataset,
    scenario_sequences,
)
from models.weights import initialize_from, save_weights

IMAGE_DATASETS = ("nudt-sirst", "sirst-v2")
SEQUENCE_DATA = "sequences"
CHECKPOINT = "last.ckpt"
BEST_WEIGHTS = "best.safetensors"
LOG = "log.jsonl"
VAL_SEQUENCE_SEED = 31_337  # the validation sequences are fixed: the same for every run


# ----------------------------------------------------------------------------- losses


def soft_iou_loss(
    logits: torch.Tensor, mask: torch.Tensor, per_sample: bool = False
) -> torch.Tensor:
    """1 - (sum p*g + 1) / (sum p + sum g - sum p*g + 1) on p = sigmoid(logits).

    SD2Net and STD2Net sum over the whole batch as one set (``per_sample=False``); LRRNet sums per
    sample and averages the per-sample IoUs.
    """
    prob = torch.sigmoid(logits.float())
    dims = tuple(range(1, prob.dim())) if per_sample else tuple(range(prob.dim()))
    intersection = (prob * mask).sum(dims)
    union = prob.sum(dims) + mask.sum(dims) - intersection
    return 1.0 - ((intersection + 1.0) / (union + 1.0)).mean()


def lrrnet_loss(
    logits: torch.Tensor, reconstruction: torch.Tensor, image: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The official LRRNet total: SoftIoU + SegL1 + 0.1 * MSE(reconstruction, image) (lrrnet.md §5).

    SegL1 = 0.8 * SoftIoU + 0.2 * mean(1[logit > 0]); the indicator is a hard threshold and gives
    no gradient, so the effective gradient is 1.8 * grad SoftIoU + 0.1 * grad MSE. It is kept
    (rather than dropped) so that logged losses are comparable with the paper's logs.
    """
    soft_iou = soft_iou_loss(logits, mask, per_sample=True)
    predicted_fraction = (logits > 0).float().mean()
    mse = torch.mean((reconstruction.float() - image) ** 2)
    return soft_iou + (0.8 * soft_iou + 0.2 * predicted_fraction) + 0.1 * mse


def _segmentation_step(model: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return soft_iou_loss(model(image), mask)


def _lrrnet_step(model: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if not isinstance(model, LRRNet):
        raise TypeError(f"the LRRNet loss needs an LRRNet, got {type(model).__name__}")
    logits, reconstruction = model.forward_with_reconstruction(image)
    return lrrnet_loss(logits, reconstruction, image, mask)


# ----------------------------------------------------------------------------- recipes


def multistep_schedule(epoch: int, iteration: int, epochs: int, iterations: int) -> float:
    """SD2Net: x0.1 at 50% and 75% of the epochs (MultiStepLR [200, 300] of 400 epochs)."""
    milestones = (round(0.5 * epochs), round(0.75 * epochs))
    return 0.1 ** sum(epoch >= milestone for milestone in milestones)


def poly_schedule(epoch: int, iteration: int, epochs: int, iterations: int) -> float:
    """LRRNet: (1 - iteration / total iterations) ** 0.9, set every iteration, no warm-up."""
    return (1.0 - iteration / (epochs * iterations)) ** 0.9


def step_schedule(epoch: int, iteration: int, epochs: int, iterations: int) -> float:
    """STD2Net: x0.5 every 3 epochs (StepLR), floored at 1% of the base lr (the reference's
    ``lrate_min``, whose value is not published)."""
    return max(0.5 ** (epoch // 3), 0.01)


Schedule = Callable[[int, int, int, int], float]  # (epoch, global iteration, epochs, it/epoch)
TrainStep = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Recipe:
    """A paper's training recipe: the defaults of ``irtrack train`` for one model."""

    epochs: int
    batch_size: int
    lr: float
    size: int
    seed: int
    schedule: Schedule
    step: TrainStep  # forward + loss
    betas: tuple[float, float] = (0.9, 0.999)


RECIPES: dict[str, Recipe] = {
    # sd2net.md §9: Adam 5e-4, MultiStepLR [200, 300] x0.1, 400 epochs, batch 4, batch SoftIoU.
    "sd2net": Recipe(400, 4, 5e-4, 256, 42, multistep_schedule, _segmentation_step),
    # lrrnet.md §5: Adam 1e-4, poly 0.9 per iteration, batch 8, 400 epochs, 512x512 (--size 256
    # on CPU: 4x cheaper; the model is fully convolutional).
    "lrrnet": Recipe(400, 8, 1e-4, 512, 1, poly_schedule, _lrrnet_step),
    # std2net.md §4: Adam 1e-3 betas (0.9, 0.99), StepLR 3 x0.5, 20 epochs, batch 4, SoftIoU.
    "std2net": Recipe(20, 4, 1e-3, 256, 42, step_schedule, _segmentation_step, (0.9, 0.99)),
}


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TrainConfig:
    """One training run as asked for; ``None`` means "the model's recipe" (or, on resume, "as
    the checkpoint was trained")."""

    model: str
    data: str
    out: Path
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    size: int | None = None
    crop: int | None = (
        None  # native-scale random crops (and native-size validation) instead of resize
    )
    seed: int | None = None
    augment: bool | None = None  # random flips/transpose; the papers use none on these datasets
    limit: int | None = None  # first N images of each split (smoke runs and tests)
    epoch_size: int | None = None  # synthesized windows per epoch (sequences only)
    device: str = "auto"
    amp: bool | None = None  # default: on with CUDA
    workers: int | None = None  # default: 0 on CPU (cached data is cheap), 4 with CUDA
    threads: int | None = None  # torch CPU threads; default: all cores (os.cpu_count())
    resume: bool = False
    max_minutes: float | None = None
    checkpoint_minutes: float = 5.0
    val_every: int = 1
    val_sequence_length: int = 20  # frames per validation sequence (8 scenarios)
    stop_after_iterations: int | None = None  # stop (with a checkpoint) after this many in total
    init_weights: Path | None = (
        None  # a fresh run starts from these (models.weights.initialize_from)
    )
    data_dir: Path = DATA_DIR


@dataclass(frozen=True)
class Hyper:
    """The resolved choices that determine the training trajectory (stored in checkpoints)."""

    model: str
    data: str
    epochs: int
    batch_size: int
    lr: float
    size: int
    seed: int
    augment: bool
    limit: int | None
    epoch_size: int | None
    crop: int | None = None  # added after the first runs: absent in their checkpoints


TRAJECTORY_FIELDS = tuple(f.name for f in fields(Hyper))
DEFAULT_EPOCH_SIZE = 2000


def resolve(config: TrainConfig, stored: Hyper | None = None) -> Hyper:
    """Fill unset options from a resumed checkpoint, else from the recipe; refuse to resume with
    an option that would change the trajectory."""
    if config.model not in RECIPES:
        raise ValueError(f"unknown model {config.model!r}; known: {', '.join(RECIPES)}")
    sequences = config.data == SEQUENCE_DATA
    if (config.model == "std2net") != sequences:
        raise ValueError(
            f"{config.model} trains on "
            + (
                f"--data {SEQUENCE_DATA}"
                if config.model == "std2net"
                else "--data nudt-sirst|sirst-v2"
            )
        )
    if not sequences and config.data not in IMAGE_DATASETS:
        raise ValueError(f"unknown data {config.data!r}; known: {(*IMAGE_DATASETS, SEQUENCE_DATA)}")
    recipe = RECIPES[config.model]
    defaults = Hyper(
        model=config.model,
        data=config.data,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        size=recipe.size,
        seed=recipe.seed,
        augment=False,
        limit=None,
        crop=None,
        epoch_size=DEFAULT_EPOCH_SIZE if sequences else None,
    )
    base = stored or defaults
    chosen = {name: getattr(config, name) for name in TRAJECTORY_FIELDS}
    if stored is not None:
        changed = [
            f"{name}={value!r} (checkpoint: {getattr(stored, name)!r})"
            for name, value in chosen.items()
            if value is not None and value != getattr(stored, name)
        ]
        if changed:
            raise ValueError(
                "cannot resume with a different trajectory: "
                + ", ".join(changed)
                + "; drop those options or train into a new --out"
            )
    hyper = replace(base, **{k: v for k, v in chosen.items() if v is not None})
    multiple = model_info(hyper.model).size_multiple
    for option, value in (("size", hyper.size), ("crop", hyper.crop or multiple)):
        if value % multiple:
            raise ValueError(f"--{option} must be a multiple of {multiple} for {hyper.model}")
    return hyper


# ----------------------------------------------------------------------------- data


class InMemoryIRSTD(IRSTDDataset):
    """An ``IRSTDDataset`` whose files are decoded once, up front: the datasets are small, and
    decoding PNGs every epoch would cost more than the resize and flips. Loaded in the main
    process, so loader workers share the arrays (fork)."""

    def __init__(self, *args: Any, limit: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if limit is not None:
            self.file_names = self.file_names[:limit]
        self._decoded = [super(InMemoryIRSTD, self).load(i) for i in range(len(self))]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self._decoded[index]


def build_datasets(hyper: Hyper, config: TrainConfig) -> tuple[Dataset, Dataset]:
    """(train, val) datasets; samples are dicts with ``image`` (model input) and ``mask``."""
    if hyper.data == SEQUENCE_DATA:
        clips = SequenceConfig(length=8, size=(hyper.size, hyper.size), target_free_prob=0.15)
        train_source = SequenceSource.from_split("train", config.data_dir, limit=hyper.limit)
        val_source = SequenceSource.from_split("val", config.data_dir, limit=hyper.limit)
        assert hyper.epoch_size is not None
        train: Dataset = SyntheticWindowDataset(train_source, clips, hyper.epoch_size, hyper.seed)
        val_sequences = scenario_sequences(
            val_source, VAL_SEQUENCE_SEED, config.val_sequence_length, (hyper.size, hyper.size)
        )
        return train, SequenceDataset(val_sequences)
    directory = config.data_dir / hyper.data
    resize = None if hyper.crop else hyper.size
    train = InMemoryIRSTD(
        directory, "train", resize, hyper.augment, hyper.seed, hyper.crop, limit=hyper.limit
    )
    return train, InMemoryIRSTD(directory, "val", resize, limit=hyper.limit)


def set_dataset_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell a dataset which epoch is starting (its per-sample randomness depends on it)."""
    if isinstance(dataset, IRSTDDataset):
        dataset.set_epoch(epoch)
    elif isinstance(dataset, SyntheticWindowDataset):
        dataset.epoch = epoch


def epoch_batches(count: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's shuffled batches, a pure function of (seed, epoch); the incomplete last batch
    is dropped (the reference skips batches of one: BatchNorm needs two samples)."""
    order = np.random.default_rng((seed, epoch)).permutation(count).tolist()
    if count <= batch_size:
        return [order]
    return [order[i : i + batch_size] for i in range(0, count - batch_size + 1, batch_size)]


# ----------------------------------------------------------------------------- checkpoints


@dataclass
class Progress:
    """Where a run stands; the JSON half of a checkpoint."""

    epoch: int = 0  # completed epochs
    iteration: int = 0  # completed iterations over all epochs
    best_metric: float | None = None  # best val mIoU so far
    best_epoch: int | None = None
    epoch_loss_sum: float = 0.0  # running sums of the epoch in progress
    epoch_batches: int = 0
    epoch_seconds: float = 0.0


def save_checkpoint(
    out: Path,
    hyper: Hyper,
    progress: Progress,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> None:
    """Write last.ckpt (tensors) and last.ckpt.json (the rest), each atomically (temp + rename);
    a shared random id pairs them, so a crash between the two renames is detected on load."""
    checkpoint_id = uuid.uuid4().hex
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{index}"] = state
    numpy_kind, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(numpy_keys, dtype=np.int64))
    python_version, python_state, python_gauss = random.getstate()
    sidecar = {
        "format": "irtrack-checkpoint-1",
        "checkpoint_id": checkpoint_id,
        "hyper": asdict(hyper),
        "progress": asdict(progress),
        "optimizer": {"param_groups": optimizer_state["param_groups"], "scalars": scalars},
        "scaler": scaler.state_dict(),
        "rng": {
            "numpy": [numpy_kind, numpy_pos, numpy_has_gauss, numpy_gauss],
            "python": [python_version, list(python_state), python_gauss],
        },
        "saved": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.mkdir(parents=True, exist_ok=True)
    tensor_path, json_path = out / CHECKPOINT, out / f"{CHECKPOINT}.json"
    save_file(tensors, str(tensor_path) + ".tmp", metadata={"checkpoint_id": checkpoint_id})
    Path(str(json_path) + ".tmp").write_text(json.dumps(sidecar, indent=1))
    os.replace(str(tensor_path) + ".tmp", tensor_path)
    os.replace(str(json_path) + ".tmp", json_path)


def read_checkpoint(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, sidecar) of OUT/last.ckpt; checks that the two files belong together."""
    tensor_path, json_path = out / CHECKPOINT, out / f"{CHECKPOINT}.json"
    sidecar = json.loads(json_path.read_text())
    with safe_open(str(tensor_path), framework="pt") as handle:
        tensor_id = (handle.metadata() or {}).get("checkpoint_id")
    if tensor_id != sidecar.get("checkpoint_id"):
        raise ValueError(f"{tensor_path} and {json_path} come from different saves")
    return load_file(str(tensor_path)), sidecar


def restore_checkpoint(
    tensors: dict[str, torch.Tensor],
    sidecar: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> Progress:
    """Load weights, optimizer, scaler and RNG states saved by :func:`save_checkpoint`."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in sidecar["optimizer"]["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in sidecar["optimizer"]["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scaler.load_state_dict(sidecar["scaler"])
    torch.set_rng_state(tensors["rng/torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    kind, pos, has_gauss, gauss = sidecar["rng"]["numpy"]
    np.random.set_state(
        (kind, tensors["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss)
    )
    version, python_state, python_gauss = sidecar["rng"]["python"]
    random.setstate((version, tuple(python_state), python_gauss))
    return Progress(**sidecar["progress"])


# ----------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class TrainResult:
    """How a call of :func:`train` ended."""

    finished: bool  # all epochs done (else paused by --max-minutes / stop_after_iterations)
    epoch: int
    iteration: int
    best_metric: float | None
    out: Path


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but CUDA is not available")
    return torch.device(name)


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


def evaluate(
    model: nn.Module, dataset: Dataset, device: torch.device, amp: bool, batch_size: int
) -> dict[str, Any]:
    """Metrics (models.metrics) of ``model`` on ``dataset`` at threshold 0.5."""
    metrics = SegmentationMetrics()
    model.eval()
    native_sizes = isinstance(dataset, IRSTDDataset) and dataset.resize is None
    loader = DataLoader(dataset, batch_size=1 if native_sizes else batch_size, shuffle=False)
    with torch.inference_mode(), _autocast(device, amp):
        for batch in loader:
            logits = run_padded(cast(SizedModel, model), batch["image"].to(device))
            prob = torch.sigmoid(logits.float()).cpu().numpy()
            for image_prob, mask in zip(prob, batch["mask"].numpy(), strict=True):
                metrics.update(image_prob[0], mask[0])
    model.train()
    return metrics.compute()


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    """fp16 autocast on CUDA (with a GradScaler), bf16 on CPU (no scaler needed)."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=amp)


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
    hyper = resolve(config, Hyper(**checkpoint[1]["hyper"]) if checkpoint else None)
    device = resolve_device(config.device)
    amp = device.type == "cuda" if config.amp is None else config.amp
    workers = config.workers if config.workers is not None else (4 if device.type == "cuda" else 0)

    torch.manual_seed(hyper.seed)
    model = build_model(hyper.model).to(device).train()
    recipe = RECIPES[hyper.model]
    optimizer = torch.optim.Adam(model.parameters(), lr=hyper.lr, betas=recipe.betas)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    progress = Progress()
    if checkpoint is not None:
        progress = restore_checkpoint(*checkpoint, model, optimizer, scaler)
        tqdm.write(f"resumed {out} at epoch {progress.epoch}, iteration {progress.iteration}")
    elif config.init_weights is not None:
        initialised = initialize_from(model, config.init_weights)
        tqdm.write(f"initialised {len(initialised)} tensors from {config.init_weights}")

    train_set, val_set = build_datasets(hyper, config)
    train_count = len(cast(Sized, train_set))
    batches_per_epoch = len(epoch_batches(train_count, hyper.batch_size, hyper.seed, 0))
    last_save = time.monotonic()

    def save() -> None:
        nonlocal last_save
        save_checkpoint(out, hyper, progress, model, optimizer, scaler)
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
            _timed(loader, progress),
            total=batches_per_epoch,
            initial=done_in_epoch,
            desc=f"{hyper.model} epoch {epoch + 1}/{hyper.epochs}",
            dynamic_ncols=True,
        )
        for batch in bar:
            lr = hyper.lr * recipe.schedule(
                epoch, progress.iteration, hyper.epochs, batches_per_epoch
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            image = batch["image"].to(device, non_blocking=True)
            mask = batch["mask"].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, amp):
                loss = recipe.step(model, image, mask)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            progress.iteration += 1
            progress.epoch_loss_sum += loss.item()
            progress.epoch_batches += 1
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
        _finish_epoch(progress, hyper, config, model, val_set, device, amp, out, lr)
        save()
        if progress.epoch < hyper.epochs and paused():
            return _result(False, progress, out)
    return _result(True, progress, out)


def _timed(loader: DataLoader, progress: Progress) -> Iterator[dict[str, Any]]:
    """Yield the loader's batches, adding the time spent (loading + training) to the epoch."""
    tick = time.monotonic()
    for batch in loader:
        yield batch
        now = time.monotonic()
        progress.epoch_seconds += now - tick
        tick = now


def _finish_epoch(
    progress: Progress,
    hyper: Hyper,
    config: TrainConfig,
    model: nn.Module,
    val_set: Dataset,
    device: torch.device,
    amp: bool,
    out: Path,
    lr: float,
) -> None:
    """Validate (every ``val_every`` epochs and after the last), keep the best weights, log."""
    progress.epoch += 1
    entry: dict[str, Any] = {
        "epoch": progress.epoch,
        "iteration": progress.iteration,
        "loss": progress.epoch_loss_sum / max(progress.epoch_batches, 1),
        "lr": lr,
        "seconds": round(progress.epoch_seconds, 2),
    }
    if progress.epoch % config.val_every == 0 or progress.epoch == hyper.epochs:
        tick = time.monotonic()
        metrics = evaluate(model, val_set, device, amp, hyper.batch_size)
        entry["val"] = {k: metrics[k] for k in ("mIoU", "nIoU", "Pd", "Fa", "roc_auc", "images")}
        entry["val_seconds"] = round(time.monotonic() - tick, 2)
        miou = metrics["mIoU"]
        if not math.isnan(miou) and (progress.best_metric is None or miou > progress.best_metric):
            progress.best_metric, progress.best_epoch = miou, progress.epoch
            entry["best"] = True
            save_weights(model, out / BEST_WEIGHTS, _best_metadata(hyper, progress, metrics))
        tqdm.write(f"epoch {progress.epoch}: loss {entry['loss']:.4f}, val mIoU {miou:.2f}")
    with open(out / LOG, "a") as log:
        log.write(json.dumps(entry) + "\n")
    progress.epoch_loss_sum, progress.epoch_batches, progress.epoch_seconds = 0.0, 0, 0.0


def _best_metadata(hyper: Hyper, progress: Progress, metrics: dict[str, Any]) -> dict[str, str]:
    return {
        "model": hyper.model,
        "dataset": hyper.data,
        "split": "val",
        "epoch": str(progress.epoch),
        "epochs_planned": str(hyper.epochs),
        "val_mIoU": f"{metrics['mIoU']:.4f}",
        "val_nIoU": f"{metrics['nIoU']:.4f}",
        "val_Pd": f"{metrics['Pd']:.4f}",
        "val_Fa": f"{metrics['Fa']:.4f}",
        "val_size": "native" if hyper.crop else str(hyper.size),
        "hyper": json.dumps(asdict(hyper)),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
    }


def _result(finished: bool, progress: Progress, out: Path) -> TrainResult:
    return TrainResult(finished, progress.epoch, progress.iteration, progress.best_metric, out)


# ----------------------------------------------------------------------------- CLI


def train_command(
    model: Annotated[str, typer.Option(help="sd2net | std2net | lrrnet")],
    data: Annotated[str, typer.Option(help="nudt-sirst | sirst-v2 | sequences (std2net)")],
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
    val_every: Annotated[int, typer.Option(help="validate every N epochs (val split)")] = 1,
    augment: Annotated[bool | None, typer.Option("--augment/--no-augment")] = None,
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
