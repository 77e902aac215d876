"""The papers' training recipes and learning-rate schedules: the defaults of ``irtrack train``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from training.losses import (
    HARD_BACKGROUND_WEIGHT,
    hard_background_segmentation_step,
    lrrnet_step,
    mixed_segmentation_step,
    per_sample_segmentation_step,
    segmentation_step,
)


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


def cosine_schedule(epoch: int, iteration: int, epochs: int, iterations: int) -> float:
    """Cosine decay set every iteration, from 1 to 1% of the base lr at the last iteration."""
    done = iteration / (epochs * iterations)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * done))


Schedule = Callable[[int, int, int, int], float]  # (epoch, global iteration, epochs, it/epoch)
TrainStep = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
SCHEDULES: dict[str, Schedule] = {
    "multistep": multistep_schedule,
    "poly": poly_schedule,
    "step": step_schedule,
    "cosine": cosine_schedule,
}

HARD_BACKGROUND_LOSS = "soft-iou-hard-background"
LOSSES: dict[str, TrainStep] = {  # --loss: a training step (forward + loss) by name
    "soft-iou": segmentation_step,  # SD2Net's and STD2Net's: over the batch as one set
    "soft-iou-per-sample": per_sample_segmentation_step,
    "soft-iou-mixed": mixed_segmentation_step,  # the mean of the two above
    HARD_BACKGROUND_LOSS: hard_background_segmentation_step,  # + BCE of confident false px
    "lrrnet": lrrnet_step,
}


def training_step(loss: str, hard_background_weight: float = HARD_BACKGROUND_WEIGHT) -> TrainStep:
    """The training step of a ``--loss`` name, with the hard-background term's weight bound."""
    if loss == HARD_BACKGROUND_LOSS:
        return partial(hard_background_segmentation_step, weight=hard_background_weight)
    return LOSSES[loss]


@dataclass(frozen=True)
class Recipe:
    """A paper's training recipe: the defaults of ``irtrack train`` for one model."""

    epochs: int
    batch_size: int
    lr: float
    size: int
    seed: int
    schedule: Schedule
    loss: str  # a name of LOSSES: the training step (forward + loss)
    betas: tuple[float, float] = (0.9, 0.999)


RECIPES: dict[str, Recipe] = {
    # sd2net.md §9: Adam 5e-4, MultiStepLR [200, 300] x0.1, 400 epochs, batch 4, batch SoftIoU.
    "sd2net": Recipe(400, 4, 5e-4, 256, 42, multistep_schedule, "soft-iou"),
    # lrrnet.md §5: Adam 1e-4, poly 0.9 per iteration, batch 8, 400 epochs, 512x512 (--size 256
    # on CPU: 4x cheaper; the model is fully convolutional).
    "lrrnet": Recipe(400, 8, 1e-4, 512, 1, poly_schedule, "lrrnet"),
    # std2net.md §4: Adam 1e-3 betas (0.9, 0.99), StepLR 3 x0.5, 20 epochs, batch 4, SoftIoU.
    "std2net": Recipe(20, 4, 1e-3, 256, 42, step_schedule, "soft-iou", (0.9, 0.99)),
}
