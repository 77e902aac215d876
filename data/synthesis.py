"""Seeded multi-frame infrared sequences built from real targets and real backgrounds.

No multi-frame infrared dataset with masks is available to this project, so STD2Net (and the
trackers) are trained and evaluated on sequences composed here:

- **targets** are real target patches cut out with the masks of NUDT-SIRST / SIRST-v2 images: the
  patch keeps the target's intensity *above its local background* (an additive signal, as a hot
  object adds radiance to the scene), inside its annotated mask only;
- **backgrounds** are real frames: SIRST-v2's target-free frames and real images whose targets were
  inpainted away;
- targets move with **sub-pixel** motion (a bilinear affine warp of the patch and its mask; the
  exact per-frame mask is the warped mask binarised at 0.5), optionally scaled and rotated;
- the **camera** pans and jitters (the whole background is warped sub-pixel each frame), so
  **clutter** (bright target-like blobs pasted into the background) moves with the background while
  targets move on their own: the cue a multi-frame model must learn;
- **photometry**: slow gain drift and per-frame flicker, temporal Gaussian noise and sensor-locked
  fixed-pattern noise (column offsets + per-pixel offsets);
- **scenarios**: per-target fading (a dim target fades for a few frames, its mask stays: it is
  still there), target-free stretches (no target rendered, empty masks and ground truth), and
  crossing targets (two targets reach the same point at the same frame; for tracking tests).

Everything random comes from one ``numpy`` generator seeded by ``SequenceConfig.seed``, so a config
and a source define a sequence exactly. Training sequences take patches and backgrounds from the
*train* split only; :func:`fixed_eval_set` draws them from the *test* split (and validation from
the val split), so evaluation never sees a training patch or background.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data.datasets import IMAGE_DATASETS, IRSTDDataset, Sample
from data.paths import DATA_DIR

WINDOW = 5  # STD2Net's temporal window: the current frame and the four before it
SEQUENCE_DATA = "sequences"  # the name training and cards give synthesized sequences


@dataclass(frozen=True)
class SequenceConfig:
    """What one synthesized sequence looks like. Pairs ``(lo, hi)`` are sampled uniformly per
    sequence (integers inclusive); intensities are in grey levels of the 8-bit output."""

    length: int = 30
    size: tuple[int, int] = (256, 256)  # (H, W)
    n_targets: tuple[int, int] = (1, 3)
    speeds: tuple[float, float] = (0.3, 2.0)  # target speed, px/frame (relative to the scene)
    target_scale: tuple[float, float] = (0.8, 1.25)  # resize factor of a target patch
    contrast: tuple[float, float] = (0.6, 1.3)  # factor on the patch's real signal
    noise_sigma: tuple[float, float] = (0.5, 3.0)  # temporal Gaussian noise std
    fixed_pattern_sigma: tuple[float, float] = (0.0, 1.5)  # sensor-locked offsets std
    jitter: tuple[float, float] = (0.0, 0.6)  # camera shake std, px
    pan_speed: tuple[float, float] = (0.0, 0.8)  # camera pan, px/frame
    flicker: float = 0.02  # per-frame global gain std
    gain_drift: float = 0.05  # amplitude of a slow sinusoidal global gain drift
    fade_prob: float = 0.2  # chance that a target fades once during the sequence
    fade_frames: tuple[int, int] = (3, 8)  # duration of a fade
    fade_min_gain: tuple[float, float] = (0.1, 0.4)  # brightness factor at the fade's bottom
    clutter_count: tuple[int, int] = (0, 4)  # background-locked bright blobs
    crossing: bool = False  # targets 0 and 1 meet at one point at the same frame
    target_free_prob: float = 0.0  # chance of one stretch of frames without any target
    target_free_fraction: tuple[float, float] = (0.15, 0.3)  # its length, fraction of the sequence
    seed: int = 0


@dataclass(frozen=True)
class TargetState:
    """Ground truth of one target in one frame; (x, y) is the centroid of its mask, in pixels."""

    target_id: int
    x: float  # column
    y: float  # row
    gain: float  # brightness factor this frame (below 1 while fading)


@dataclass
class Sequence:
    """A synthesized clip: frames, exact per-frame masks and per-frame target ground truth."""

    frames: np.ndarray  # uint8 (T, H, W)
    masks: np.ndarray  # bool (T, H, W)
    targets: list[list[TargetState]]  # per frame; empty in target-free frames
    config: SequenceConfig
    name: str = ""


@dataclass(frozen=True)
class TargetPatch:
    """A real target: its signal above the local background, zero outside its mask."""

    signal: np.ndarray  # float32 (h, w)
    mask: np.ndarray  # float32 (h, w), 1 inside the annotated target
    center: tuple[float, float]  # (x, y) mask centroid in patch coordinates


@dataclass
class SequenceSource:
    """Target patches and target-free backgrounds that sequences are composed from."""

    patches: list[TargetPatch]
    backgrounds: list[np.ndarray]  # uint8 (h, w), no target in them
    description: str = ""

    @classmethod
    def from_pairs(
        cls,
        pairs: Iterable[tuple[np.ndarray, np.ndarray]],
        min_contrast: float = 8.0,
        description: str = "",
    ) -> SequenceSource:
        """Cut target patches out of (image uint8 (H,W), mask bool (H,W)) pairs, and keep each
        image, its targets inpainted, as a background.

        Targets whose mean signal above the local background is below ``min_contrast`` grey levels
        are skipped: pasted, they would be invisible yet masked.
        """
        patches: list[TargetPatch] = []
        backgrounds: list[np.ndarray] = []
        for image, mask in pairs:
            count, labels, stats, _ = cv2.connectedComponentsWithStats(
                mask.astype(np.uint8), connectivity=8
            )
            patches.extend(_cut_patches(image, labels, stats[1:count], min_contrast))
            backgrounds.append(_inpaint_targets(image, labels, stats[1:count]))
        if not patches or not backgrounds:
            raise ValueError("a sequence source needs at least one target and one background")
        return cls(patches, backgrounds, description)

    @classmethod
    def from_split(
        cls,
        split: str,
        data_dir: Path = DATA_DIR,
        datasets: tuple[str, ...] = IMAGE_DATASETS,
        limit: int | None = None,
    ) -> SequenceSource:
        """Patches and backgrounds from one split (train / val / test) of the shared datasets, at
        native resolution; ``limit`` keeps the first images of each dataset (for quick tests)."""

        def pairs() -> Iterable[tuple[np.ndarray, np.ndarray]]:
            for name in datasets:
                dataset = IRSTDDataset(data_dir / name, split)
                count = len(dataset) if limit is None else min(limit, len(dataset))
                for index in range(count):
                    yield dataset.load(index)

        return cls.from_pairs(pairs(), description=f"{'+'.join(datasets)}:{split}")


def _cut_patches(
    image: np.ndarray, labels: np.ndarray, boxes: np.ndarray, min_contrast: float
) -> list[TargetPatch]:
    """One patch per 8-connected target (``boxes``: its OpenCV stats row, label = row + 1):
    signal = image minus the median of the target-free pixels around it."""
    patches = []
    margin = 6
    for label, (left, top, width, height, _) in enumerate(boxes, start=1):
        y0, y1 = max(top - margin, 0), min(top + height + margin, image.shape[0])
        x0, x1 = max(left - margin, 0), min(left + width + margin, image.shape[1])
        near_targets = cv2.dilate((labels[y0:y1, x0:x1] > 0).astype(np.uint8), np.ones((5, 5)))
        surroundings = image[y0:y1, x0:x1][near_targets == 0]
        if surroundings.size < 8:
            continue
        local_background = float(np.median(surroundings))
        target = (labels[top : top + height, left : left + width] == label).astype(np.float32)
        signal = image[top : top + height, left : left + width].astype(np.float32)
        signal = np.clip(signal - local_background, 0.0, None) * target
        if signal.sum() / target.sum() < min_contrast:
            continue
        ys, xs = np.nonzero(target)
        patches.append(TargetPatch(signal, target, (float(xs.mean()), float(ys.mean()))))
    return patches


def _inpaint_targets(image: np.ndarray, labels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The image with every target (dilated by 3 px) inpainted, box by box (fast on big frames)."""
    background = image.copy()
    margin = 12
    for left, top, width, height, _ in boxes:
        y0, y1 = max(top - margin, 0), min(top + height + margin, image.shape[0])
        x0, x1 = max(left - margin, 0), min(left + width + margin, image.shape[1])
        hole = cv2.dilate((labels[y0:y1, x0:x1] > 0).astype(np.uint8), np.ones((7, 7), np.uint8))
        background[y0:y1, x0:x1] = cv2.inpaint(background[y0:y1, x0:x1], hole, 5, cv2.INPAINT_TELEA)
    return background


@dataclass
class _Mover:
    """Everything drawn for one target (or one clutter blob) before rendering."""

    patch: TargetPatch
    scale: float
    angle: float  # degrees
    amplitude: float
    flip: bool
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (T, 2) x, y
    gains: np.ndarray = field(default_factory=lambda: np.ones(0))  # (T,)


def synthesize_sequence(config: SequenceConfig, source: SequenceSource, name: str = "") -> Sequence:
    """Compose one sequence; the same ``config`` (seed included) and source give the same output."""
    rng = np.random.default_rng(config.seed)
    length = config.length
    height, width = config.size

    camera = _camera_path(config, rng)  # (T, 2) view offset in background coordinates
    canvas, origin = _background_canvas(config, source, camera, rng)
    _paste_clutter(canvas, origin, config, source, rng)

    targets = [_draw_mover(source, config, rng) for _ in range(_target_count(config, rng))]
    _assign_trajectories(targets, camera, config, rng)
    for mover in targets:
        mover.gains = _fade_profile(config, rng)
    hidden = _target_free_frames(config, rng)

    noise_sigma = _uniform(rng, config.noise_sigma)
    pattern_sigma = _uniform(rng, config.fixed_pattern_sigma)
    fixed_pattern = (
        rng.normal(0.0, pattern_sigma, (1, width))
        + rng.normal(0.0, pattern_sigma / 2, (height, width))
    ).astype(np.float32)
    drift_phase = rng.uniform(0.0, 2 * math.pi)
    drift_period = rng.uniform(20.0, 80.0)

    frames = np.empty((length, height, width), np.uint8)
    masks = np.zeros((length, height, width), bool)
    states: list[list[TargetState]] = []
    for t in range(length):
        view_x, view_y = origin + camera[t]
        shift = np.array([[1, 0, -view_x], [0, 1, -view_y]], np.float32)
        frame = cv2.warpAffine(
            canvas, shift, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        frame_states = []
        if not hidden[t]:
            for target_id, mover in enumerate(targets):
                x, y = mover.positions[t]
                gain = float(mover.gains[t])
                _paste(frame, masks[t], mover, x, y, mover.amplitude * gain)
                frame_states.append(TargetState(target_id, float(x), float(y), gain))
        states.append(frame_states)
        global_gain = (
            1.0
            + config.gain_drift * math.sin(2 * math.pi * t / drift_period + drift_phase)
            + rng.normal(0.0, config.flicker)
        )
        frame = frame * global_gain + fixed_pattern + rng.normal(0.0, noise_sigma, frame.shape)
        frames[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return Sequence(frames, masks, states, config, name)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1])) if bounds[1] > bounds[0] else float(bounds[0])


def _integer(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _camera_path(config: SequenceConfig, rng: np.random.Generator) -> np.ndarray:
    """View offsets (T, 2): a constant pan plus smoothed (AR(1)) shake; starts at (0, 0)."""
    # At most half the frame over the sequence, so that targets can always stay in view.
    speed = min(_uniform(rng, config.pan_speed), 0.5 * min(config.size) / max(config.length - 1, 1))
    heading = rng.uniform(0.0, 2 * math.pi)
    pan = speed * np.array([math.cos(heading), math.sin(heading)])
    shake_sigma = _uniform(rng, config.jitter)
    shake = np.zeros((config.length, 2))
    for t in range(1, config.length):
        shake[t] = 0.5 * shake[t - 1] + rng.normal(0.0, shake_sigma, 2)
    path = np.arange(config.length)[:, None] * pan[None, :] + shake
    return path - path[0]


def _background_canvas(
    config: SequenceConfig, source: SequenceSource, camera: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A float32 crop of one real background large enough for every view of the camera path, and
    the canvas position of the camera's (0, 0) view."""
    height, width = config.size
    margin = 2
    low, high = camera.min(axis=0), camera.max(axis=0)
    need_w = math.ceil(width + high[0] - low[0]) + 2 * margin
    need_h = math.ceil(height + high[1] - low[1]) + 2 * margin
    background = source.backgrounds[int(rng.integers(len(source.backgrounds)))]
    if rng.random() < 0.5:
        background = background[:, ::-1]
    if rng.random() < 0.5:
        background = background[::-1, :]
    factor = max(need_h / background.shape[0], need_w / background.shape[1], 1.0)
    if factor > 1.0:
        size = (math.ceil(background.shape[1] * factor), math.ceil(background.shape[0] * factor))
        background = cv2.resize(
            np.ascontiguousarray(background), size, interpolation=cv2.INTER_LINEAR
        )
    top = int(rng.integers(background.shape[0] - need_h + 1))
    left = int(rng.integers(background.shape[1] - need_w + 1))
    canvas = background[top : top + need_h, left : left + need_w].astype(np.float32)
    origin = np.array([margin - low[0], margin - low[1]])
    return canvas, origin


def _draw_mover(source: SequenceSource, config: SequenceConfig, rng: np.random.Generator) -> _Mover:
    return _Mover(
        patch=source.patches[int(rng.integers(len(source.patches)))],
        scale=_uniform(rng, config.target_scale),
        angle=float(rng.uniform(0.0, 360.0)),
        amplitude=_uniform(rng, config.contrast),
        flip=bool(rng.random() < 0.5),
    )


def _paste_clutter(
    canvas: np.ndarray,
    origin: np.ndarray,
    config: SequenceConfig,
    source: SequenceSource,
    rng: np.random.Generator,
) -> None:
    """Background-locked bright structures: half real target patches (static look-alikes of the
    targets), half elongated Gaussian blobs; they move only with the camera."""
    height, width = config.size
    scratch = np.zeros(canvas.shape, bool)
    for _ in range(_integer(rng, config.clutter_count)):
        x = origin[0] + rng.uniform(8, width - 8)
        y = origin[1] + rng.uniform(8, height - 8)
        if rng.random() < 0.5:
            mover = _draw_mover(source, config, rng)
            mover.amplitude = float(rng.uniform(0.5, 1.2))  # independent of the targets' contrast
        else:
            sigma = rng.uniform(1.0, 3.5)
            size = math.ceil(4 * sigma * 1.8) | 1
            yy, xx = np.mgrid[:size, :size] - size // 2
            blob = np.exp(-(xx**2 / (1.8 * sigma) ** 2 + yy**2 / sigma**2) / 2).astype(np.float32)
            patch = TargetPatch(
                blob * rng.uniform(15.0, 60.0),
                (blob > 0.1).astype(np.float32),
                (size / 2 - 0.5, size / 2 - 0.5),
            )
            mover = _Mover(patch, 1.0, float(rng.uniform(0.0, 180.0)), 1.0, False)
        _paste(canvas, scratch, mover, x, y, mover.amplitude)


def _target_count(config: SequenceConfig, rng: np.random.Generator) -> int:
    count = _integer(rng, config.n_targets)
    return max(count, 2) if config.crossing else count


def _assign_trajectories(
    targets: list[_Mover], camera: np.ndarray, config: SequenceConfig, rng: np.random.Generator
) -> None:
    """Straight, constant-velocity paths in scene coordinates, seen through the moving camera, that
    keep every target inside the frame; with ``crossing`` targets 0 and 1 meet mid-sequence."""
    height, width = config.size
    low = np.array([_BORDER, _BORDER])
    high = np.array([width - _BORDER, height - _BORDER])
    start = 0
    if config.crossing:
        meet_frame = int(rng.integers(int(0.35 * config.length), int(0.65 * config.length) + 1))
        still_low, still_high = _anchor_range(np.zeros(2), meet_frame, camera, low, high)
        meet = still_low + (still_high - still_low) * rng.uniform(0.3, 0.7, 2)
        heading = rng.uniform(0.0, 2 * math.pi)
        headings = (heading, heading + rng.uniform(math.pi / 3, 5 * math.pi / 6))
        for mover, direction in zip(targets[:2], headings, strict=True):
            velocity = _velocity(rng, config, direction)
            for _ in range(_MAX_SLOWDOWNS):
                anchor_low, anchor_high = _anchor_range(velocity, meet_frame, camera, low, high)
                if (anchor_low <= meet).all() and (meet <= anchor_high).all():
                    break
                velocity = velocity * 0.8
            mover.positions = meet + _relative_path(velocity, meet_frame, camera)
        start = 2
    for mover in targets[start:]:
        velocity = _velocity(rng, config, rng.uniform(0.0, 2 * math.pi))
        for _ in range(_MAX_SLOWDOWNS):
            anchor_low, anchor_high = _anchor_range(velocity, 0, camera, low, high)
            if (anchor_low <= anchor_high).all():
                break
            velocity = velocity * 0.8
        mover.positions = rng.uniform(anchor_low, anchor_high) + _relative_path(velocity, 0, camera)


_BORDER = 10.0  # targets keep their centroid this far from the frame border
_MAX_SLOWDOWNS = 60  # 0.8**60 ~ 1e-6: the velocity is then zero for all purposes


def _velocity(rng: np.random.Generator, config: SequenceConfig, heading: float) -> np.ndarray:
    return _uniform(rng, config.speeds) * np.array([math.cos(heading), math.sin(heading)])


def _relative_path(velocity: np.ndarray, anchor_frame: int, camera: np.ndarray) -> np.ndarray:
    """Image positions (T, 2) relative to the position at ``anchor_frame``."""
    frames = np.arange(len(camera))[:, None] - anchor_frame
    return frames * velocity - (camera - camera[anchor_frame])


def _anchor_range(
    velocity: np.ndarray, anchor_frame: int, camera: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where the anchor position may be so that the whole path stays within [low, high]."""
    path = _relative_path(velocity, anchor_frame, camera)
    return low - path.min(axis=0), high - path.max(axis=0)


def _fade_profile(config: SequenceConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-frame brightness factors: 1, or one smooth dip to ``fade_min_gain`` and back."""
    gains = np.ones(config.length)
    if rng.random() >= config.fade_prob:
        return gains
    duration = min(_integer(rng, config.fade_frames), config.length)
    start = int(rng.integers(config.length - duration + 1))
    bottom = _uniform(rng, config.fade_min_gain)
    phase = (np.arange(duration) + 1) / (duration + 1)
    gains[start : start + duration] = 1.0 - (1.0 - bottom) * np.sin(math.pi * phase)
    return gains


def _target_free_frames(config: SequenceConfig, rng: np.random.Generator) -> np.ndarray:
    hidden = np.zeros(config.length, bool)
    if rng.random() < config.target_free_prob:
        duration = max(1, round(_uniform(rng, config.target_free_fraction) * config.length))
        start = int(rng.integers(config.length - duration + 1))
        hidden[start : start + duration] = True
    return hidden


def _paste(
    image: np.ndarray, mask: np.ndarray, mover: _Mover, x: float, y: float, amplitude: float
) -> None:
    """Add the mover's patch, warped so that its mask centroid lands on (x, y), to ``image`` and OR
    its binarised warped mask into ``mask`` (both clipped at the image border)."""
    patch = mover.patch
    signal, support = patch.signal, patch.mask
    center_x, center_y = patch.center
    if mover.flip:
        signal, support = signal[:, ::-1], support[:, ::-1]
        center_x = signal.shape[1] - 1 - center_x
    radius = math.ceil(math.hypot(*signal.shape) * mover.scale / 2) + 2
    left, top = math.floor(x) - radius, math.floor(y) - radius
    size = 2 * radius + 2
    warp = cv2.getRotationMatrix2D((center_x, center_y), mover.angle, mover.scale)
    warp[:, 2] += np.array([x - left - center_x, y - top - center_y])
    flags = cv2.INTER_LINEAR
    warped_signal = cv2.warpAffine(np.ascontiguousarray(signal), warp, (size, size), flags=flags)
    warped_mask = cv2.warpAffine(np.ascontiguousarray(support), warp, (size, size), flags=flags)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size, image.shape[0]), min(left + size, image.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    local = np.s_[y0 - top : y1 - top, x0 - left : x1 - left]
    image[y0:y1, x0:x1] += amplitude * warped_signal[local]
    # Half the peak coverage (0.5 for any target wider than ~2 px): a 1 px target shifted by half a
    # pixel covers four pixels by a quarter each and must not vanish from its mask.
    threshold = min(0.5, 0.5 * float(warped_mask.max()))
    mask[y0:y1, x0:x1] |= warped_mask[local] >= threshold


EVAL_SCENARIOS: dict[str, dict[str, Any]] = {
    "plain": {"n_targets": (2, 2), "noise_sigma": (1.0, 1.0), "clutter_count": (0, 0)},
    "crossing": {"n_targets": (2, 2), "crossing": True, "speeds": (0.8, 1.5)},
    "fading": {"n_targets": (2, 2), "fade_prob": 1.0, "fade_frames": (5, 8)},
    "clutter": {"n_targets": (1, 2), "clutter_count": (6, 8), "jitter": (0.5, 0.5)},
    "pan": {"pan_speed": (0.8, 1.2), "jitter": (0.4, 0.6), "clutter_count": (2, 3)},
    "target-free": {
        "n_targets": (1, 2),
        "target_free_prob": 1.0,
        "target_free_fraction": (0.3, 0.3),
    },
    "noisy": {"noise_sigma": (4.0, 6.0), "fixed_pattern_sigma": (2.0, 2.0), "flicker": 0.05},
    "mixed": {
        "n_targets": (3, 3),
        "crossing": True,
        "fade_prob": 0.5,
        "clutter_count": (4, 4),
        "pan_speed": (0.5, 0.5),
        "target_free_prob": 1.0,
        "target_free_fraction": (0.15, 0.15),
    },
}


def scenario_sequences(
    source: SequenceSource,
    seed: int,
    length: int = 60,
    size: tuple[int, int] = (256, 256),
) -> list[Sequence]:
    """One sequence per scenario of :data:`EVAL_SCENARIOS` (seeds ``seed``, ``seed + 1``, ...)."""
    base = SequenceConfig(length=length, size=size)
    return [
        synthesize_sequence(replace(base, seed=seed + index, **overrides), source, name)
        for index, (name, overrides) in enumerate(EVAL_SCENARIOS.items())
    ]


EVAL_SEED = 20_260_101


def fixed_eval_set(
    seed: int = EVAL_SEED,
    split: str = "test",
    length: int = 60,
    size: tuple[int, int] = (256, 256),
    data_dir: Path = DATA_DIR,
) -> list[Sequence]:
    """The fixed evaluation sequences: 8 scenarios x 60 frames at 256x256 by default, composed only
    from ``split`` images (test: never seen in training; use split="val" for model selection)."""
    return scenario_sequences(SequenceSource.from_split(split, data_dir), seed, length, size)


def sliding_window(frames: np.ndarray, end: int, window: int = WINDOW) -> np.ndarray:
    """Frames ``end - window + 1 .. end``, oldest first; before the sequence starts, the first frame
    is repeated (as a stream starts: STD2Net's ring buffer is filled with the first frame)."""
    indices = np.clip(np.arange(end - window + 1, end + 1), 0, None)
    return frames[indices]


def _as_sample(window: np.ndarray, mask: np.ndarray, name: str) -> Sample:
    return Sample(
        image=torch.from_numpy(window.astype(np.float32) / 255.0),
        mask=torch.from_numpy(mask[None].astype(np.float32)),
        name=name,
    )


class SequenceDataset(Dataset[Sample]):
    """Every frame of fixed sequences as an STD2Net sample: ``image`` = the 5-frame window
    (5, H, W) float [0, 1] oldest first, ``mask`` = the last frame's mask (1, H, W) {0, 1}."""

    def __init__(self, sequences: list[Sequence], window: int = WINDOW):
        self.sequences = sequences
        self.window = window
        self.index = [
            (s, t) for s, sequence in enumerate(sequences) for t in range(len(sequence.frames))
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> Sample:
        s, t = self.index[item]
        sequence = self.sequences[s]
        window = sliding_window(sequence.frames, t, self.window)
        return _as_sample(window, sequence.masks[t], f"{sequence.name or s}/{t:04d}")


class SyntheticWindowDataset(Dataset[Sample]):
    """Training windows, each from a freshly synthesized short clip: unlimited variety, no memory.

    Item ``i`` of epoch ``e`` is a pure function of (``seed``, e, i): the clip's config seed is
    drawn from them, so shuffling, workers and resuming never change what a sample is. Set
    :attr:`epoch` before iterating an epoch. A fraction ``stream_start_prob`` of windows shows a
    stream start (fewer than 5 real frames, the first one repeated).
    """

    def __init__(
        self,
        source: SequenceSource,
        config: SequenceConfig,
        epoch_size: int,
        seed: int = 0,
        window: int = WINDOW,
        stream_start_prob: float = 0.1,
    ):
        if config.length < window:
            raise ValueError(f"clips must have at least {window} frames, got {config.length}")
        self.source = source
        self.config = config
        self.epoch_size = epoch_size
        self.seed = seed
        self.window = window
        self.stream_start_prob = stream_start_prob
        self.epoch = 0

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, item: int) -> Sample:
        entropy = np.random.SeedSequence([self.seed, self.epoch, item])
        clip_seed, choice_seed = (int(v) for v in entropy.generate_state(2))
        sequence = synthesize_sequence(replace(self.config, seed=clip_seed), self.source)
        rng = np.random.default_rng(choice_seed)
        end = len(sequence.frames) - 1
        frames = sequence.frames
        if rng.random() < self.stream_start_prob:
            real = int(rng.integers(1, self.window))
            frames = frames[end - real + 1 :]
            end = real - 1
        window = sliding_window(frames, end, self.window)
        return _as_sample(window, sequence.masks[-1], f"e{self.epoch}/{item}")
