"""The sequence synthesizer: reproducible, exact masks, true sub-pixel motion, real crossings."""

from dataclasses import replace

import cv2
import numpy as np
import pytest

from data.paths import DATA_DIR
from data.synthesis import (
    EVAL_SCENARIOS,
    WINDOW,
    SequenceConfig,
    SequenceDataset,
    SequenceSource,
    SyntheticWindowDataset,
    fixed_eval_set,
    synthesize_sequence,
)

pytestmark = pytest.mark.skipif(
    not (DATA_DIR / "nudt-sirst").is_dir() or not (DATA_DIR / "sirst-v2").is_dir(),
    reason=f"shared datasets not found under {DATA_DIR}",
)

# Everything that is not the targets held still: what changes between frames is target motion.
STILL = SequenceConfig(
    length=24,
    size=(128, 160),
    noise_sigma=(0.0, 0.0),
    fixed_pattern_sigma=(0.0, 0.0),
    jitter=(0.0, 0.0),
    pan_speed=(0.0, 0.0),
    flicker=0.0,
    gain_drift=0.0,
    fade_prob=0.0,
    target_scale=(1.0, 1.0),
)


@pytest.fixture(scope="module")
def source() -> SequenceSource:
    return SequenceSource.from_split("train", limit=25)


def test_same_seed_gives_identical_sequence_and_another_seed_does_not(source):
    config = SequenceConfig(length=12, size=(96, 128), seed=7, crossing=True, fade_prob=0.5)
    first, again = synthesize_sequence(config, source), synthesize_sequence(config, source)
    other = synthesize_sequence(replace(config, seed=8), source)
    assert np.array_equal(first.frames, again.frames)
    assert np.array_equal(first.masks, again.masks)
    assert first.targets == again.targets
    assert not np.array_equal(first.frames, other.frames)


def test_masks_cover_exactly_the_pixels_the_targets_changed(source):
    noisy = replace(SequenceConfig(length=10), clutter_count=(2, 2), n_targets=(2, 3))
    with_targets = synthesize_sequence(replace(noisy, contrast=(1.0, 1.0), seed=3), source)
    without = synthesize_sequence(replace(noisy, contrast=(0.0, 0.0), seed=3), source)
    change = with_targets.frames.astype(int) - without.frames.astype(int)
    masks = with_targets.masks
    assert masks.any(axis=(1, 2)).all()
    for t in range(len(masks)):
        # bilinear edges of a warped patch reach at most one pixel beyond its binarised mask
        near_mask = cv2.dilate(masks[t].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert np.abs(change[t][~near_mask]).max() <= 2
        assert change[t][masks[t]].mean() > 5.0
        for state in with_targets.targets[t]:  # the centroid is on (or next to) its mask
            row, column = round(state.y), round(state.x)
            assert masks[t][row - 1 : row + 2, column - 1 : column + 2].any()


def test_sub_pixel_motion_moves_the_mask_centroid_at_the_configured_velocity(source):
    speed = 0.37
    config = replace(STILL, n_targets=(1, 1), speeds=(speed, speed), clutter_count=(0, 0), seed=11)
    sequence = synthesize_sequence(config, source)
    truth = np.array([[s.x, s.y] for frame in sequence.targets for s in frame])
    measured = np.array([np.argwhere(mask)[:, ::-1].mean(axis=0) for mask in sequence.masks])
    steps = np.diff(truth, axis=0)
    assert np.allclose(np.hypot(*steps.T), speed)
    assert not np.allclose(truth, np.round(truth))  # positions really are sub-pixel
    assert np.abs(measured - truth).max() < 0.75
    fitted_velocity = np.polyfit(np.arange(len(measured)), measured, 1)[0]
    assert np.allclose(fitted_velocity, steps[0], atol=0.03)


def test_crossing_targets_meet_and_swap_sides(source):
    for seed in range(3):
        config = replace(STILL, n_targets=(2, 2), crossing=True, seed=seed, jitter=(0.5, 0.5))
        sequence = synthesize_sequence(config, source)
        first, second = (np.array([[f[i].x, f[i].y] for f in sequence.targets]) for i in (0, 1))
        offset = first - second
        assert np.hypot(*offset.T).min() < 1e-6
        assert np.dot(offset[0], offset[-1]) < 0  # they end up on opposite sides


def test_background_and_clutter_stay_locked_while_targets_move(source):
    config = replace(STILL, clutter_count=(5, 5), speeds=(1.0, 2.0), seed=5)
    sequence = synthesize_sequence(config, source)
    ever_masked = np.any(sequence.masks, axis=0).astype(np.uint8)
    ever_target = cv2.dilate(ever_masked, np.ones((3, 3), np.uint8)) > 0
    assert (sequence.frames[:, ~ever_target] == sequence.frames[0, ~ever_target]).all()
    assert not (sequence.frames[:, ever_target] == sequence.frames[0, ever_target]).all()


def test_target_free_stretch_and_fades_are_in_the_ground_truth(source):
    config = SequenceConfig(length=30, fade_prob=1.0, target_free_prob=1.0, seed=2)
    sequence = synthesize_sequence(config, source)
    free = np.array([not frame for frame in sequence.targets])
    assert free.any() and not free.all()
    assert not sequence.masks[free].any()
    assert sequence.masks[~free].any(axis=(1, 2)).all()
    gains = [state.gain for frame in sequence.targets for state in frame]
    assert min(gains) < 0.5


def test_sequence_dataset_windows_repeat_the_first_frame_at_the_start(source):
    sequence = synthesize_sequence(replace(STILL, length=8, seed=1), source)
    dataset = SequenceDataset([sequence])
    assert len(dataset) == 8
    start, later = dataset[1], dataset[7]
    assert start["image"].shape == (WINDOW, 128, 160)
    expected_start = sequence.frames[[0, 0, 0, 0, 1]] / 255.0
    assert np.allclose(start["image"].numpy(), expected_start)
    assert np.allclose(later["image"].numpy(), sequence.frames[3:8] / 255.0)
    assert np.array_equal(later["mask"][0].numpy() > 0, sequence.masks[7])


def test_synthetic_windows_depend_only_on_seed_epoch_and_index(source):
    config = SequenceConfig(length=6, size=(64, 64))
    dataset = SyntheticWindowDataset(source, config, epoch_size=4, seed=3)
    first = dataset[2]["image"]
    assert dataset[1]["image"].shape == (WINDOW, 64, 64)
    assert np.array_equal(dataset[2]["image"], first)
    dataset.epoch = 1
    assert not np.array_equal(dataset[2]["image"], first)


def test_fixed_eval_set_has_every_scenario_from_test_images():
    sequences = fixed_eval_set(length=20, size=(128, 128))
    assert [s.name for s in sequences] == list(EVAL_SCENARIOS)
    assert all(s.frames.shape == (20, 128, 128) for s in sequences)
    by_name = {s.name: s for s in sequences}
    assert any(not frame for frame in by_name["target-free"].targets)
    assert min(st.gain for f in by_name["fading"].targets for st in f) < 0.5
