"""Pseudo-masks from boxes and the samples the detectors learn from the real clips."""

import cv2
import numpy as np
import pytest
import torch
from conftest import require_path

from data.datasets import UNLABELLED, InMemorySamples
from data.paths import DATA_DIR
from data.pseudo_masks import BOX_MARGIN_PX, box_window, examples_png, pseudo_mask
from data.video import Box, load_clip
from data.video_samples import box_labels, clip_samples
from training.batches import build_datasets
from training.config import TrainConfig, resolve


def frame_with_blob(level: float, blob: float, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = rng.normal(level, noise, (64, 80))
    frame[30:33, 40:44] = blob  # 3 x 4 px target
    return np.clip(frame, 0, 255).astype(np.uint8)


BOX = Box(37.0, 27.0, 10.0, 9.0)  # a loose box around the blob, as labellers draw them


def test_a_hot_target_gets_exactly_its_pixels():
    mask = pseudo_mask(frame_with_blob(level=80, blob=160, noise=2), BOX)
    assert mask is not None
    expected = np.zeros((64, 80), bool)
    expected[30:33, 40:44] = True
    assert np.array_equal(mask, expected)


def test_a_cold_target_on_a_warm_sky_is_found_by_its_polarity():
    mask = pseudo_mask(frame_with_blob(level=160, blob=60, noise=2), BOX)
    assert mask is not None and mask[31, 41] and mask.sum() == 12


def test_a_box_with_nothing_standing_out_gives_no_mask():
    assert pseudo_mask(frame_with_blob(level=80, blob=83, noise=2), BOX) is None


def test_windows_end_at_their_labelled_frame_and_start_a_clip_like_a_stream():
    require_path(DATA_DIR / "drone-ir", "the drone-ir clips (shared/data/drone-ir)")
    clip = load_clip("IR_DRONE_002")
    frames = np.stack(list(clip.frames()))
    samples = clip_samples(clip, stride=10, window=5)
    names = [name for name, _, _ in samples]
    first_name, first_window, first_mask = samples[0]
    assert first_name.endswith("-0000")
    assert all(np.array_equal(frame, frames[0]) for frame in first_window)  # repeated, as a stream
    later = names.index("IR_DRONE_002-0020")
    assert np.array_equal(samples[later][1], frames[16:21])
    assert samples[later][2].any() and not samples[later][2][0, 0]
    assert first_mask.shape == frames.shape[1:]


def test_the_rest_of_a_box_can_be_left_unlabelled_around_its_pseudo_mask():
    frame = frame_with_blob(level=80, blob=160, noise=2)
    mask = pseudo_mask(frame, BOX)
    assert mask is not None
    labels = box_labels(mask, BOX)
    assert labels.dtype == np.int8 and np.array_equal(labels == 1, mask)
    rows, columns = box_window(BOX, BOX_MARGIN_PX, labels.shape)
    in_box = np.zeros(labels.shape, bool)
    in_box[rows, columns] = True
    assert (labels[in_box & ~mask] == UNLABELLED).all() and (labels[in_box & ~mask]).size > 0
    assert (labels[~in_box] == 0).all()
    sample = InMemorySamples([("blob", frame, labels)], crop=32, seed=1)
    for epoch in range(8):  # crops centre on the target, never on an unlabelled pixel alone
        sample.set_epoch(epoch)
        cropped = sample[0]["mask"]
        assert set(cropped.unique().tolist()) <= {float(UNLABELLED), 0.0, 1.0}
        assert cropped.max() == 1.0 or not (cropped == UNLABELLED).any()


def test_real_clips_give_unlabelled_box_rests_only_when_asked():
    require_path(DATA_DIR / "drone-ir", "the drone-ir clips (shared/data/drone-ir)")
    clip = load_clip("IR_DRONE_002")
    plain = clip_samples(clip, stride=10, window=None)
    marked = clip_samples(clip, stride=10, window=None, unlabelled_box_rest=True)
    assert [name for name, _, _ in plain] == [name for name, _, _ in marked]
    assert all(mask.dtype == bool for _, _, mask in plain)
    with_box = [(p, m) for (_, _, p), (_, _, m) in zip(plain, marked, strict=True) if p.any()]
    assert with_box
    for plain_mask, labels in with_box:
        assert np.array_equal(labels == 1, plain_mask) and (labels == UNLABELLED).any()


def test_training_data_must_fit_the_model():
    with pytest.raises(ValueError, match="windows"):
        resolve(TrainConfig(model="std2net", data="nudt-sirst", out=DATA_DIR))
    with pytest.raises(ValueError, match="single frames"):
        resolve(TrainConfig(model="sd2net", data="nudt-sirst+sequences", out=DATA_DIR))
    with pytest.raises(ValueError, match="unknown data"):
        resolve(TrainConfig(model="sd2net", data="nudt-sirst+imagenet", out=DATA_DIR))
    mixed = resolve(TrainConfig(model="sd2net", data="nudt-sirst+sirst-v2+drone-ir", out=DATA_DIR))
    assert mixed.data == "nudt-sirst+sirst-v2+drone-ir"


def test_the_examples_sheet_draws_one_example_per_clip(tmp_path):
    require_path(DATA_DIR / "drone-ir", "the drone-ir clips (shared/data/drone-ir)")
    sheet = tmp_path / "sheet.png"
    assert (
        examples_png([load_clip("IR_DRONE_002"), load_clip("IR_AIRPLANE_001")], sheet, per_row=2)
        == 2
    )
    image = cv2.imread(str(sheet))
    assert image.shape == (96, 2 * 2 * 96, 3)
    assert (image[..., 2] == 255).any()  # a pseudo-mask drawn in red


def test_a_dataset_named_twice_is_drawn_twice_as_often_and_validated_once(tmp_path):
    require_path(DATA_DIR / "sirst-v2", "the SIRST-v2 images (shared/data/sirst-v2)")
    config = TrainConfig(
        model="sd2net", data="sirst-v2+sirst-v2", out=tmp_path, limit=4, crop=32, augment=True
    )
    train, val = build_datasets(resolve(config), config)
    assert val is not None and len(val) == 4
    assert len(train) == 8
    first, repeat = train[0], train[4]
    assert first["name"] == repeat["name"]
    assert not torch.equal(first["image"], repeat["image"])  # its own crop and flips
