"""What a training run reads: in-memory datasets, synthesized windows, each epoch's batches."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from data.datasets import IRSTDDataset
from data.synthesis import (
    SEQUENCE_DATA,
    SequenceConfig,
    SequenceDataset,
    SequenceSource,
    SyntheticWindowDataset,
    scenario_sequences,
)
from training.config import Hyper, TrainConfig

VAL_SEQUENCE_SEED = 31_337  # the validation sequences are fixed: the same for every run


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
        directory,
        "train",
        resize,
        hyper.augment,
        hyper.seed,
        hyper.crop,
        jitter=hyper.jitter,
        limit=hyper.limit,
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
