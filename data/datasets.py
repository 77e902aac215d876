"""Single-frame infrared datasets with pixel masks: NUDT-SIRST and SIRST-v2 (``../shared/data``).

Both share one layout: ``images/<name>.png``, ``masks/<name>.png`` (0 / 255) and
``splits/<split>.txt`` with one name per line (without extension here; a listed ``.png`` suffix is
accepted too).

Splits. ``"test"`` is the published test list and is for the final report only: model
selection must never look at it. ``"val"`` is ``splits/val.txt`` where the dataset has one
(SIRST-v2); where it has none (NUDT-SIRST), ``"val"`` is a fixed 10% holdout of ``train.txt``,
drawn with ``HOLDOUT_SEED`` (a module constant, not an argument, so that every run holds out the
same images), and ``"train"`` is the rest of ``train.txt``. ``"train_full"`` is the whole of
``train.txt`` (the published training list, for a final run once the recipe is chosen).

Images. The files are 8-bit PNGs in gray, RGB, RGBA or palette modes: each is read unchanged and
reduced to one channel with ``frames.preprocess.to_gray`` (BT.601 luma, PIL's ``convert("L")``
within one grey level), then scaled by ``frames.preprocess.normalize_frame`` (uint8 / 255), the
very functions the service applies to its frames. OpenCV's ``IMREAD_GRAYSCALE`` is not used: its
libpng conversion differs from ``cvtColor`` by up to 3 grey levels on SIRST-v2's colour files.
Masks are target where the value is > 127.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from frames.preprocess import normalize_frame, to_gray

IMAGE_DATASETS = ("nudt-sirst", "sirst-v2")  # folders of DATA_DIR with images, masks, splits
SPLITS = ("train", "val", "test", "train_full")
HOLDOUT_SEED = 0
HOLDOUT_FRACTION = 0.1
UNLABELLED = -1  # a mask value: pixels of unknown label (losses leave them out, metrics count
# them as background), e.g. the rest of a box around its pseudo-mask (data.pseudo_masks)
TARGET_CROPS = 0.75  # the share of training crops centred near a target pixel, unless chosen


def data_parts(data: str) -> list[str]:
    """The datasets of a training ``--data`` value: one name, or several joined with ``+``."""
    return [part.strip() for part in data.split("+")]


class Sample(TypedDict):
    image: torch.Tensor  # float32 (T, H, W) in [0, 1]: one frame (T = 1) or a window, oldest first
    mask: torch.Tensor  # float32 (1, H, W) in {0, 1}, or UNLABELLED where the label is unknown
    name: str  # image name without extension, e.g. "000001"


def _read_split_file(dataset_dir: Path, split_file: str) -> list[str]:
    path = dataset_dir / "splits" / split_file
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [name if name.endswith(".png") else f"{name}.png" for name in names]


def _holdout(names: list[str]) -> tuple[list[str], list[str]]:
    """Split a training list into (train, val) with the fixed seeded holdout; order kept."""
    held_out_count = round(len(names) * HOLDOUT_FRACTION)
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(names))
    held_out = set(order[:held_out_count].tolist())
    train = [name for i, name in enumerate(names) if i not in held_out]
    val = [name for i, name in enumerate(names) if i in held_out]
    return train, val


def list_split(dataset_dir: Path | str, split: str) -> list[str]:
    """Image file names (``"<name>.png"``) of ``split`` in the dataset; see the module docstring."""
    dataset_dir = Path(dataset_dir)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split == "test":
        return _read_split_file(dataset_dir, "test.txt")
    train_full = _read_split_file(dataset_dir, "train.txt")
    if split == "train_full":
        return train_full
    if (dataset_dir / "splits" / "val.txt").exists():
        return train_full if split == "train" else _read_split_file(dataset_dir, "val.txt")
    train, val = _holdout(train_full)
    return train if split == "train" else val


def read_gray(path: Path | str) -> np.ndarray:
    """An image file as one channel (H, W) in its own bit depth (uint8 for the shared data)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return to_gray(image)


def read_mask(path: Path | str) -> np.ndarray:
    """A mask file as bool (H, W): target where the value is > 127."""
    return read_gray(path) > 127


class FrameSamples(Dataset[Sample]):
    """Training and validation samples from (frames, mask) pairs: normalised frames, native size
    unless ``resize`` is given, with the random transforms training asks for.

    A sample's frames are one (H, W) frame, or a window (T, H, W) of consecutive frames whose
    mask is the last frame's: every transform treats a window's frames alike.

    ``resize`` (training only: evaluation runs native sizes padded by ``models.padding``) scales to
    ``resize x resize``, image bilinear and mask nearest, as the papers' training code does. Note
    that nearest downscaling can drop a 1-2 px target from the mask.
    ``augment`` applies a random horizontal flip, vertical flip and transpose, drawn from
    ``(seed, epoch, index)`` so that a run is reproducible whatever the number of loader workers;
    call ``set_epoch`` each epoch to draw new ones.
    ``jitter`` (training only) changes the frames' gain (x0.75..1.25), offset (+-0.1) and adds
    Gaussian sensor noise (sigma 0..0.02), clipped to [0, 1]: other cameras calibrate and amplify
    differently. Drawn from ``(seed, epoch, index)`` too.
    ``crop`` (training only) cuts a random ``crop x crop`` window at native scale (after ``resize``
    if both are given), centred near a random target pixel in a share ``target_crops`` of the draws
    (default three in four; uniform otherwise) so that few-pixel targets are seen at the size the
    service sees them; frames smaller than the crop are padded
    by edge replication (mask padded with background). Drawn from ``(seed, epoch, index)`` too.
    With ``hard_negatives`` set (:mod:`training.hard_negatives`), a share of a sample's crops is
    centred near one of the false alarms mined on it instead.
    """

    def __init__(
        self,
        resize: int | None = None,
        augment: bool = False,
        seed: int = 0,
        crop: int | None = None,
        jitter: bool = False,
        target_crops: float = TARGET_CROPS,
    ) -> None:
        self.resize = resize
        self.augment = augment
        self.seed = seed
        self.crop = crop
        self.target_crops = target_crops
        self.jitter = jitter
        self.epoch = 0
        # training.hard_negatives: sample name -> false alarms (row, col) as fractions of the
        # frame's height and width, and the share of a crop's draws centred on one of them
        self.hard_negatives: dict[str, list[tuple[float, float]]] = {}
        self.hard_negative_fraction = 0.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The native-size (frames, bool mask) pair of sample ``index``."""
        raise NotImplementedError

    def name(self, index: int) -> str:
        raise NotImplementedError

    def native(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as the model sees it before any transform: normalised frames (H, W)
        or (T, H, W) at native size, and the bool mask."""
        frames, bool_mask = self.load(index)
        image = (
            normalize_frame(frames)
            if frames.ndim == 2
            else np.stack([normalize_frame(frame) for frame in frames])
        )
        return image, bool_mask

    def __getitem__(self, index: int) -> Sample:
        image, bool_mask = self.native(index)
        mask: np.ndarray = bool_mask.astype(np.float32)
        if self.resize is not None:
            size = (self.resize, self.resize)
            image = _resize(image, size)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        if self.crop is not None:
            image, mask = self._crop(image, mask, index, self.crop)
        if self.augment:
            image, mask = self._augment(image, mask, index)
        if self.jitter:
            image = self._jitter(image, index)
        image = np.ascontiguousarray(image)
        return Sample(
            image=torch.from_numpy(image if image.ndim == 3 else image[None]),
            mask=torch.from_numpy(np.ascontiguousarray(mask))[None],
            name=self.name(index),
        )

    def _augment(
        self, image: np.ndarray, mask: np.ndarray, index: int
    ) -> tuple[np.ndarray, np.ndarray]:
        flip_h, flip_v, transpose = np.random.default_rng((self.seed, self.epoch, index)).random(3)
        if flip_h < 0.5:
            image, mask = image[..., ::-1], mask[:, ::-1]
        if flip_v < 0.5:
            image, mask = image[..., ::-1, :], mask[::-1]
        if transpose < 0.5:
            image, mask = image.swapaxes(-1, -2), mask.T
        return image, mask

    def _jitter(self, image: np.ndarray, index: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.epoch, index, 2))
        gain, offset, sigma = rng.uniform(0.75, 1.25), rng.uniform(-0.1, 0.1), rng.uniform(0, 0.02)
        noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
        jittered = image * np.float32(gain) + np.float32(offset) + noise
        return np.clip(jittered, 0.0, 1.0, out=jittered)

    def _crop(
        self, image: np.ndarray, mask: np.ndarray, index: int, size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        hard = self._hard_negative(index, mask.shape)  # before padding: of the frame itself
        pad_rows, pad_cols = max(size - mask.shape[0], 0), max(size - mask.shape[1], 0)
        if pad_rows or pad_cols:
            leading = [(0, 0)] * (image.ndim - 2)
            image = np.pad(image, [*leading, (0, pad_rows), (0, pad_cols)], mode="edge")
            mask = np.pad(mask, ((0, pad_rows), (0, pad_cols)))
        rng = np.random.default_rng((self.seed, self.epoch, index, 1))
        height, width = mask.shape
        rows, cols = np.nonzero(mask > 0)
        centre = hard
        if centre is None and len(rows) and rng.random() < self.target_crops:
            pick = rng.integers(len(rows))
            centre = int(rows[pick]), int(cols[pick])
        if centre is not None:
            top = centre[0] - size // 2 + int(rng.integers(-size // 4, size // 4 + 1))
            left = centre[1] - size // 2 + int(rng.integers(-size // 4, size // 4 + 1))
        else:
            top, left = int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))
        top = int(np.clip(top, 0, height - size))
        left = int(np.clip(left, 0, width - size))
        window = (slice(top, top + size), slice(left, left + size))
        return image[(..., *window)], mask[window]

    def _hard_negative(self, index: int, shape: tuple[int, ...]) -> tuple[int, int] | None:
        """A mined false alarm (row, col) to centre this draw's crop on, scaled to ``shape``, in
        ``hard_negative_fraction`` of the draws of a sample that has any; else None."""
        points = self.hard_negatives.get(self.name(index))
        if not points:
            return None
        rng = np.random.default_rng((self.seed, self.epoch, index, 3))
        if rng.random() >= self.hard_negative_fraction:
            return None
        row, col = points[rng.integers(len(points))]
        return int(row * shape[0]), int(col * shape[1])


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.ndim == 2:
        return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    return np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR) for frame in image])


class IRSTDDataset(FrameSamples):
    """The images and masks of one split of an image dataset, read from disk (see
    :class:`FrameSamples` for the transforms)."""

    def __init__(
        self,
        dataset_dir: Path | str,
        split: str,
        resize: int | None = None,
        augment: bool = False,
        seed: int = 0,
        crop: int | None = None,
        jitter: bool = False,
    ) -> None:
        super().__init__(resize, augment, seed, crop, jitter)
        self.dataset_dir = Path(dataset_dir)
        self.split = split
        self.file_names = list_split(self.dataset_dir, split)

    def __len__(self) -> int:
        return len(self.file_names)

    def name(self, index: int) -> str:
        return Path(self.file_names[index]).stem

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The native-size (gray image, bool mask) pair, as stored on disk."""
        file_name = self.file_names[index]
        image = read_gray(self.dataset_dir / "images" / file_name)
        mask = read_mask(self.dataset_dir / "masks" / file_name)
        if image.shape != mask.shape:
            raise ValueError(f"{file_name}: image {image.shape} and mask {mask.shape} differ")
        return image, mask


class InMemorySamples(FrameSamples):
    """Samples held in memory as ``(name, frames, mask)``: decoded once, up front (the shared
    datasets are small, and decoding every epoch would cost more than the transforms)."""

    def __init__(
        self, samples: list[tuple[str, np.ndarray, np.ndarray]], **transforms: Any
    ) -> None:
        super().__init__(**transforms)
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, index: int) -> str:
        return self.samples[index][0]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.samples[index][1], self.samples[index][2]
