"""What a training run reads: its datasets (one or several, mixed), and each epoch's batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from data.datasets import FrameSamples, InMemorySamples, IRSTDDataset, data_parts
from data.synthesis import (
    SEQUENCE_DATA,
    SequenceConfig,
    SequenceDataset,
    SequenceSource,
    SyntheticWindowDataset,
    scenario_sequences,
)
from data.video import DRONE_IR
from data.video_samples import video_samples
from models.registry import model_info
from training.config import Hyper, TrainConfig

VAL_SEQUENCE_SEED = 31_337  # the validation sequences are fixed: the same for every run
PART_SEED_STEP = 1_000  # each mixed-in dataset draws its random transforms from its own seed


def build_datasets(
    hyper: Hyper, config: TrainConfig, with_val: bool = True
) -> tuple[Dataset, Dataset | None]:
    """(train, val) datasets; samples are dicts with ``image`` (model input) and ``mask``;
    ``with_val=False`` builds no validation set (its data need not be there).

    ``hyper.data`` names one dataset or several joined with ``+`` (e.g.
    ``nudt-sirst+sirst-v2+drone-ir``): training draws from all of them in every epoch, and the
    model is selected on the union of their validation splits. A dataset named twice is drawn
    twice as often (each time with its own random transforms) and validated once."""
    parts = data_parts(hyper.data)
    pairs = [
        _part(
            part,
            hyper,
            config,
            hyper.seed + PART_SEED_STEP * index,
            with_val and part not in parts[:index],
        )
        for index, part in enumerate(parts)
    ]
    trains = [train for train, _ in pairs]
    vals = [val for _, val in pairs if val is not None]
    train = trains[0] if len(trains) == 1 else ConcatDataset(trains)
    if not with_val:
        return train, None
    return train, vals[0] if len(vals) == 1 else ConcatDataset(vals)


def _part(
    name: str, hyper: Hyper, config: TrainConfig, seed: int, with_val: bool
) -> tuple[Dataset, Dataset | None]:
    if name == SEQUENCE_DATA:
        clips = SequenceConfig(length=8, size=(hyper.size, hyper.size), target_free_prob=0.15)
        train_source = SequenceSource.from_split("train", config.data_dir, limit=hyper.limit)
        assert hyper.epoch_size is not None
        train: Dataset = SyntheticWindowDataset(train_source, clips, hyper.epoch_size, seed)
        if not with_val:
            return train, None
        val_source = SequenceSource.from_split("val", config.data_dir, limit=hyper.limit)
        val_sequences = scenario_sequences(
            val_source, VAL_SEQUENCE_SEED, config.val_sequence_length, (hyper.size, hyper.size)
        )
        return train, SequenceDataset(val_sequences)
    resize = None if hyper.crop else hyper.size
    transforms: dict[str, Any] = {
        "resize": resize,
        "augment": hyper.augment,
        "seed": seed,
        "crop": hyper.crop,
        "target_crops": hyper.target_crops,
        "jitter": hyper.jitter,
    }
    if name == DRONE_IR:
        frames = model_info(hyper.model).frames
        window = frames if frames > 1 else None

        def labelled_clips(
            split: str, unlabelled_box_rest: bool = False, **options: Any
        ) -> InMemorySamples:
            samples = video_samples(
                split,
                window,
                data_dir=config.data_dir,
                limit=hyper.limit,
                unlabelled_box_rest=unlabelled_box_rest,
            )
            return InMemorySamples(samples, **options)

        return (
            labelled_clips("train", hyper.unlabelled_box_rest, **transforms),
            labelled_clips("val", resize=resize) if with_val else None,
        )
    directory = config.data_dir / name
    return (
        _in_memory(IRSTDDataset(directory, "train"), hyper.limit, **transforms),
        _in_memory(IRSTDDataset(directory, "val"), hyper.limit, resize=resize)
        if with_val
        else None,
    )


def _in_memory(source: IRSTDDataset, limit: int | None, **transforms: Any) -> InMemorySamples:
    """The split's files decoded once, up front (cheaper than decoding PNGs every epoch)."""
    indices = range(min(len(source), limit or len(source)))
    return InMemorySamples(
        [(source.name(i), *source.load(i)) for i in indices],
        **transforms,
    )


def dataset_parts(dataset: Dataset) -> Iterator[Dataset]:
    """The datasets a training set is made of: itself, or every part of a mix."""
    if isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            yield from dataset_parts(part)
    else:
        yield dataset


def set_dataset_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell a dataset which epoch is starting (its per-sample randomness depends on it)."""
    for part in dataset_parts(dataset):
        if isinstance(part, FrameSamples):
            part.set_epoch(epoch)
        elif isinstance(part, SyntheticWindowDataset):
            part.epoch = epoch


def epoch_batches(count: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's shuffled batches, a pure function of (seed, epoch); the incomplete last batch
    is dropped (the reference skips batches of one: BatchNorm needs two samples)."""
    order = np.random.default_rng((seed, epoch)).permutation(count).tolist()
    if count <= batch_size:
        return [order]
    return [order[i : i + batch_size] for i in range(0, count - batch_size + 1, batch_size)]
