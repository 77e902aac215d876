"""Dataset loading: split lists and holdout, gray conversion, masks, resize and augmentation."""

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data.datasets import (
    HOLDOUT_FRACTION,
    InMemorySamples,
    IRSTDDataset,
    list_split,
    read_gray,
    read_mask,
)
from data.paths import DATA_DIR

NUDT = DATA_DIR / "nudt-sirst"
SIRST_V2 = DATA_DIR / "sirst-v2"
needs_data = pytest.mark.skipif(
    not (NUDT / "splits").is_dir() or not (SIRST_V2 / "splits").is_dir(),
    reason=f"shared datasets not found under {DATA_DIR} (set IRTRACK_SHARED)",
)


def make_dataset(root: Path, count: int, split_lines: list[str]) -> Path:
    """A tiny dataset on disk: colour images, 0/255 masks, one train split file."""
    rng = np.random.default_rng(0)
    for folder in ("images", "masks", "splits"):
        (root / folder).mkdir(parents=True)
    for i in range(count):
        image = rng.integers(0, 256, size=(6, 10, 3), dtype=np.uint8)
        mask = np.zeros((6, 10), dtype=np.uint8)
        mask[i % 6, i % 10] = 255
        cv2.imwrite(str(root / "images" / f"im{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), mask)
    (root / "splits" / "train.txt").write_text("\n".join(split_lines) + "\n")
    (root / "splits" / "test.txt").write_text("im0\n")
    return root


def test_holdout_is_a_fixed_disjoint_part_of_train_when_there_is_no_val_file(
    tmp_path: Path,
) -> None:
    names = [f"im{i}" for i in range(30)]
    # Split files may list names with or without ".png", and end with blank lines.
    root = make_dataset(tmp_path, 30, [*names[:15], *(f"{n}.png" for n in names[15:]), ""])
    train, val = list_split(root, "train"), list_split(root, "val")
    full = list_split(root, "train_full")
    assert full == [f"{n}.png" for n in names]
    assert len(val) == round(30 * HOLDOUT_FRACTION)
    assert sorted(train + val) == sorted(full) and not set(train) & set(val)
    assert train == [n for n in full if n in set(train)]  # the file's order is kept
    assert (list_split(root, "train"), list_split(root, "val")) == (train, val)  # deterministic
    assert list_split(root, "test") == ["im0.png"]
    with pytest.raises(ValueError, match="unknown split"):
        list_split(root, "validation")


def test_sample_is_one_channel_float_in_0_1_with_binary_mask(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, 3, ["im0", "im1", "im2"])
    sample = IRSTDDataset(root, "train_full")[1]
    colour = cv2.imread(str(root / "images" / "im1.png"), cv2.IMREAD_UNCHANGED)
    assert colour is not None
    expected = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    assert sample["name"] == "im1"
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (1, 6, 10)
    np.testing.assert_array_equal(sample["image"][0].numpy(), expected)
    expected_mask = np.zeros((6, 10), dtype=np.float32)
    expected_mask[1, 1] = 1.0
    np.testing.assert_array_equal(sample["mask"][0].numpy(), expected_mask)


def test_resize_scales_image_bilinear_and_mask_nearest(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, 1, ["im0"])
    sample = IRSTDDataset(root, "train_full", resize=16)[0]
    assert sample["image"].shape == (1, 16, 16) and sample["mask"].shape == (1, 16, 16)
    assert set(np.unique(sample["mask"].numpy())) <= {0.0, 1.0}
    assert sample["mask"].sum() > 0
    gray = read_gray(root / "images" / "im0.png").astype(np.float32) / 255.0
    expected = cv2.resize(gray, (16, 16), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(sample["image"][0].numpy(), expected, atol=1e-6)


def test_augmentation_moves_image_and_mask_together_and_is_reproducible(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, 6, [f"im{i}" for i in range(6)])
    plain = IRSTDDataset(root, "train_full", resize=8)
    augmented = IRSTDDataset(root, "train_full", resize=8, augment=True, seed=3)
    transforms_seen = set()
    for epoch in range(4):
        augmented.set_epoch(epoch)
        for index in range(len(plain)):
            original, moved = plain[index], augmented[index]
            image, mask = original["image"][0], original["mask"][0]
            matched = []
            for flip_h, flip_v, transpose in itertools.product((False, True), repeat=3):
                im, ma = image, mask
                if flip_h:
                    im, ma = im.flip(1), ma.flip(1)
                if flip_v:
                    im, ma = im.flip(0), ma.flip(0)
                if transpose:
                    im, ma = im.T, ma.T
                if torch.equal(im, moved["image"][0]) and torch.equal(ma, moved["mask"][0]):
                    matched.append((flip_h, flip_v, transpose))
            assert matched, "augmented sample is not a flip/transpose of the original"
            transforms_seen.add(matched[0])
            assert torch.equal(augmented[index]["image"], moved["image"])  # reproducible
    assert len(transforms_seen) > 2


@needs_data
def test_shared_splits_match_their_files_and_keep_test_apart() -> None:
    for dataset_dir in (NUDT, SIRST_V2):
        lines = {
            split: (dataset_dir / "splits" / f"{split}.txt").read_text().split()
            for split in ("train", "test")
        }
        full = list_split(dataset_dir, "train_full")
        assert len(full) == len(lines["train"])
        assert len(list_split(dataset_dir, "test")) == len(lines["test"])
        train, val = list_split(dataset_dir, "train"), list_split(dataset_dir, "val")
        assert not set(list_split(dataset_dir, "test")) & (set(train) | set(val))
        assert not set(train) & set(val)
        for name in train[:2] + val[:2]:
            assert (dataset_dir / "images" / name).is_file()
    assert sorted(list_split(NUDT, "train") + list_split(NUDT, "val")) == sorted(
        list_split(NUDT, "train_full")
    )
    val_lines = (SIRST_V2 / "splits" / "val.txt").read_text().split()
    assert list_split(SIRST_V2, "val") == [f"{n}.png" for n in val_lines]


@needs_data
def test_colour_files_become_one_channel_and_target_free_masks_are_empty() -> None:
    colour_file = next(
        path
        for path in sorted((SIRST_V2 / "images").glob("*.png"))
        if (image := cv2.imread(str(path), cv2.IMREAD_UNCHANGED)) is not None and image.ndim == 3
    )
    gray = read_gray(colour_file)
    assert gray.ndim == 2 and gray.dtype == np.uint8
    dataset = IRSTDDataset(SIRST_V2, "train_full")
    index = next(
        i
        for i, name in enumerate(dataset.file_names)
        if not read_mask(SIRST_V2 / "masks" / name).any()
    )
    sample = dataset[index]
    assert sample["mask"].sum() == 0
    assert (
        sample["image"].shape[1:]
        == read_gray(SIRST_V2 / "images" / dataset.file_names[index]).shape
    )


def test_crops_centre_near_a_target_in_the_asked_share_of_draws() -> None:
    mask = np.zeros((256, 256), bool)
    mask[200:203, 30:33] = True  # a 3 px target: a uniform 32 px crop holds it ~1 time in 40
    frame = np.where(mask, 250, 40).astype(np.uint8)
    samples = [(f"frame-{i}", frame, mask) for i in range(200)]

    def with_target(share: float) -> int:
        dataset = InMemorySamples(samples, crop=32, seed=3, target_crops=share)
        return sum(bool(dataset[i]["mask"].any()) for i in range(len(samples)))

    assert with_target(1.0) == 200
    assert 30 <= with_target(0.25) <= 75
    assert with_target(0.0) < 20
