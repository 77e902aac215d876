"""A training run's options, and the resolved hyper-parameters that fix its trajectory."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from data.datasets import IMAGE_DATASETS, TARGET_CROPS, data_parts
from data.paths import DATA_DIR
from data.synthesis import SEQUENCE_DATA
from data.video import DRONE_IR
from models.registry import model_info
from training.losses import HARD_BACKGROUND_WEIGHT
from training.recipes import HARD_BACKGROUND_LOSS, LOSSES, RECIPES, SCHEDULES


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
    jitter: bool | None = None  # random gain, offset and sensor noise (datasets.IRSTDDataset)
    schedule: str | None = None  # a name of SCHEDULES; default: the paper's
    warmup_epochs: int | None = None  # linear lr warm-up over this many epochs (default 0)
    ema: float | None = None  # decay of an exponential moving average of the weights (validated)
    freeze_backbone: bool | None = None  # STD2Net: train the temporal head on a fixed backbone
    hard_negatives: float | None = None  # share of crops on mined false alarms (hard_negatives)
    target_crops: float | None = None  # share of crops centred near a target (default 0.75)
    loss: str | None = None  # a name of LOSSES; default: the paper's
    hard_background_weight: float | None = None  # the hard-background loss's term (default 0.1)
    unlabelled_box_rest: bool | None = None  # drone-ir: box pixels off the pseudo-mask unlabelled
    limit: int | None = None  # first N images of each split (smoke runs and tests)
    epoch_size: int | None = None  # synthesized windows per epoch (sequences only)
    device: str = "auto"
    amp: bool | None = None  # default: on with CUDA
    workers: int | None = None  # default: 0 on CPU (cached data is cheap), 4 with CUDA
    threads: int | None = None  # torch CPU threads; default: all cores (os.cpu_count())
    compile: bool = False  # torch.compile the training step (~2 min once; ~1.4x on this CPU)
    channels_last: bool = False  # NHWC weights and batches (faster convolutions on CPU)
    resume: bool = False
    max_minutes: float | None = None
    checkpoint_minutes: float = 5.0
    val_every: int = 1  # 0: never validate (and need no validation data)
    snapshot_every: int | None = None  # also keep the weights every N epochs (SNAPSHOTS)
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
    jitter: bool = False  # these four added in session 5: absent in older checkpoints
    schedule: str | None = None  # None: the recipe's
    warmup_epochs: int = 0
    ema: float | None = None
    freeze_backbone: bool = False
    hard_negatives: float = 0.0  # these two added in session 7: absent in older checkpoints
    loss: str | None = None  # None: the recipe's
    unlabelled_box_rest: bool = False  # added in session 12: absent in older checkpoints
    target_crops: float = TARGET_CROPS  # added in session 14: older runs all used the default
    hard_background_weight: float = HARD_BACKGROUND_WEIGHT  # added in session 18: likewise


TRAJECTORY_FIELDS = tuple(f.name for f in fields(Hyper))
DEFAULT_EPOCH_SIZE = 2000


def lr_factor(hyper: Hyper, epoch: int, iteration: int, iterations: int) -> float:
    """The base lr's multiplier at a global iteration: the chosen (or the paper's) schedule, times
    a linear ramp over the first ``warmup_epochs``."""
    schedule = SCHEDULES[hyper.schedule] if hyper.schedule else RECIPES[hyper.model].schedule
    factor = schedule(epoch, iteration, hyper.epochs, iterations)
    warmup = hyper.warmup_epochs * iterations
    return factor * min(1.0, (iteration + 1) / warmup) if warmup else factor


def resolve(config: TrainConfig, stored: Hyper | None = None) -> Hyper:
    """Fill unset options from a resumed checkpoint, else from the recipe; refuse to resume with
    an option that would change the trajectory."""
    if config.model not in RECIPES:
        raise ValueError(f"unknown model {config.model!r}; known: {', '.join(RECIPES)}")
    parts = data_parts(config.data)
    known = (*IMAGE_DATASETS, DRONE_IR, SEQUENCE_DATA)
    if unknown := [part for part in parts if part not in known]:
        raise ValueError(f"unknown data {unknown}; known: {', '.join(known)} (join with '+')")
    sequences = SEQUENCE_DATA in parts
    multi_frame = model_info(config.model).frames > 1
    if multi_frame and not set(parts) <= {SEQUENCE_DATA, DRONE_IR}:
        raise ValueError(f"{config.model} trains on windows: --data {SEQUENCE_DATA}, {DRONE_IR}")
    if not multi_frame and sequences:
        raise ValueError(f"{config.model} trains on single frames: not --data {SEQUENCE_DATA}")
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
    if hyper.schedule is not None and hyper.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {hyper.schedule!r}; known: {', '.join(SCHEDULES)}")
    if hyper.loss is not None and hyper.loss not in LOSSES:
        raise ValueError(f"unknown loss {hyper.loss!r}; known: {', '.join(LOSSES)}")
    if hyper.ema is not None and not 0.0 < hyper.ema < 1.0:
        raise ValueError(f"--ema is a decay in (0, 1), got {hyper.ema}")
    if not 0.0 <= hyper.hard_negatives < 1.0:
        raise ValueError(
            f"--hard-negatives is a share of the crops in [0, 1), got {hyper.hard_negatives}"
        )
    if not 0.0 <= hyper.target_crops <= 1.0:
        raise ValueError(
            f"--target-crops is a share of the crops in [0, 1], got {hyper.target_crops}"
        )
    if hyper.hard_background_weight != HARD_BACKGROUND_WEIGHT and (
        (hyper.loss or RECIPES[hyper.model].loss) != HARD_BACKGROUND_LOSS
    ):
        raise ValueError(f"--hard-background-weight weighs a term of --loss {HARD_BACKGROUND_LOSS}")
    if hyper.hard_background_weight < 0.0:
        raise ValueError(
            f"--hard-background-weight must be >= 0, got {hyper.hard_background_weight}"
        )
    if hyper.target_crops != TARGET_CROPS and hyper.crop is None:
        raise ValueError("--target-crops chooses where crops are centred: it needs --crop")
    if hyper.hard_negatives and hyper.crop is None:
        raise ValueError("--hard-negatives centres crops on false alarms: it needs --crop")
    if hyper.hard_negatives and not config.resume and config.init_weights is None:
        raise ValueError("--hard-negatives mines the false alarms of --init-weights: give them")
    multiple = model_info(hyper.model).size_multiple
    for option, value in (("size", hyper.size), ("crop", hyper.crop or multiple)):
        if value % multiple:
            raise ValueError(f"--{option} must be a multiple of {multiple} for {hyper.model}")
    return hyper
