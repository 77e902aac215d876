"""Hard negatives: the places where the weights a run starts from report targets that are not there.

A run with ``--hard-negatives F`` first runs its starting model over every training sample at
native size and keeps, per sample, the centres of up to :data:`MAX_POINTS` false alarms (the
components above 0.5 whose boxes stay clear of the sample's mask grown by :data:`MASK_MARGIN` px),
the most confident first. Training crops are then centred near one of them in a share F of the draws of a
sample that has any (``data.datasets.FrameSamples``), so that the lamps, edges and glints the model
takes for targets are shown to it as background far more often than uniform random crops would.

The points are written to the run folder (:data:`HARD_NEGATIVES`) before the first step and read
back on resume, so that a resumed run draws the same crops. Sample names key them: names are
unique across the shared datasets, and a dataset named twice in ``--data`` is mined once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from data.datasets import FrameSamples
from evaluation.images import predict_probability
from frames.postprocess import find_components
from training.batches import dataset_parts

HARD_NEGATIVES = "hard_negatives.json"
MAX_POINTS = 8  # per sample: the most confident false alarms
MASK_MARGIN = 3  # px: a component this close to a labelled target is part of it, not a false alarm
THRESHOLD = 0.5  # the service's default

Points = dict[str, list[tuple[float, float]]]  # sample name -> (row, col) / (height, width)


def frame_parts(dataset: Dataset) -> Iterator[FrameSamples]:
    """The frame datasets of a training set (one, or the parts of a mix)."""
    return (part for part in dataset_parts(dataset) if isinstance(part, FrameSamples))


def false_alarms(prob: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """Centres of the components of ``prob`` above :data:`THRESHOLD` whose bounding boxes stay
    clear of ``mask`` grown by :data:`MASK_MARGIN` px, most confident first, as fractions of the
    frame's size."""
    kernel = np.ones((2 * MASK_MARGIN + 1, 2 * MASK_MARGIN + 1), np.uint8)
    near_target = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    height, width = prob.shape
    found = []
    for component in find_components(prob, THRESHOLD):
        box = near_target[component.y0 : component.y1 + 1, component.x0 : component.x1 + 1]
        if not box.any():
            found.append(
                (component.score, component.centroid_y / height, component.centroid_x / width)
            )
    found.sort(key=lambda item: -item[0])
    return [(row, col) for _, row, col in found[:MAX_POINTS]]


def mine(model: nn.Module, dataset: Dataset, device: torch.device) -> Points:
    """The false alarms of ``model`` (in eval mode) on every sample of the training set."""
    was_training = model.training
    model.eval()
    points: Points = {}
    parts = list(frame_parts(dataset))
    with tqdm(total=sum(len(part) for part in parts), desc="mining hard negatives") as bar:
        for part in parts:
            for index in range(len(part)):
                bar.update()
                name = part.name(index)
                if name in points:
                    continue
                image, mask = part.native(index)
                frames = torch.from_numpy(image if image.ndim == 3 else image[None])
                points[name] = false_alarms(predict_probability(model, frames, device), mask)
    model.train(was_training)
    return {name: found for name, found in points.items() if found}


def attach(dataset: Dataset, points: Points, fraction: float) -> None:
    """Let the training set's crops use the mined ``points`` in a share ``fraction`` of draws."""
    for part in frame_parts(dataset):
        part.hard_negatives = points
        part.hard_negative_fraction = fraction


def mined_points(model: nn.Module, dataset: Dataset, device: torch.device, out: Path) -> Points:
    """The run's hard negatives: read back from ``out`` (a resumed run), else mined and written."""
    path = out / HARD_NEGATIVES
    if path.exists():
        stored = json.loads(path.read_text())
        return {name: [(row, col) for row, col in found] for name, found in stored.items()}
    points = mine(model, dataset, device)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(points))
    temporary.replace(path)
    return points
