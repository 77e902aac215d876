"""``irtrack eval-video``: detection and tracking on labelled real thermal clips (drone-ir).

Every clip runs frame by frame as the service runs a stream: normalisation
(:func:`frames.preprocess.normalize_frame`), the model (STD2Net through one ring buffer per clip,
:func:`models.std2net.step_streams`, from the clip's first frame; a single-frame model on each
frame alone, on ONNX Runtime on a CPU as the service's ``auto`` backend does), the service's
post-processing (:func:`frames.postprocess.detect_in_logits`: threshold, 8-connected components,
``min_area``) and one :class:`frames.tracking.PointTracker` per clip with the service's defaults.

Object-level scoring, as ``shared/data/README.md`` asks for boxes: a labelled target is *found*
when a detection's centroid lies inside its box grown by ``FOUND_MARGIN_PX`` on every side; every
other detection is a false alarm (a second detection inside the box too: it is a second report).
Pd counts frames with a box; false alarms are per frame over all frames.

- **At the operating threshold** (the service's, 0.5): Pd, false-alarm objects per frame, and
  MOTA / IDF1 / ID switches (py-motmetrics) of the hypotheses a client receives: detections with
  a confirmed track id; a hypothesis matches the target when its centroid is in the grown box.
- **Pd at matched false alarms**: for each budget of false alarms per frame, the best Pd of a
  threshold of the shared grid (:data:`evaluation.sequences.MATCHED_THRESHOLDS`) whose false alarms
  stay within it: models differ in calibration, and this is the operating point a user with an
  alarm budget would pick (with a per-stream threshold).
- ``--report confirmed`` (the stream option that reports only detections of confirmed tracks)
  counts, at the operating threshold and at every threshold of the grid, only the detections a
  tracker of that threshold has confirmed.

Figures are given over all clips, per object class and for the small-target clips (median box
within 16 x 16 px, :attr:`data.video.LabelledClip.small_target`). A CPU cannot run STD2Net over the
whole test split (75k frames) in a reasonable time, so ``--frames-per-clip`` scores the first N
frames of every clip (the report says how many): all clips and classes stay represented, each clip
is a contiguous stretch from its start, as a stream starts.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import motmetrics as mm
import numpy as np
import torch
import typer
from torch import nn
from tqdm import tqdm

from data.paths import DATA_DIR
from data.video import LabelledClip, load_clips
from evaluation.images import EvaluationError, json_safe
from evaluation.machine import describe_machine
from evaluation.sequences import MATCHED_THRESHOLDS as GRID_PROBABILITIES
from evaluation.sequences import (
    DeviceOption,
    JsonOption,
    MarkdownOption,
    ThresholdOption,
    WeightsDirOption,
    load_sequence_model,
    pd_at_matched_false_alarms,
)
from evaluation.tables import figure_cell
from evaluation.tracks import summarize
from frames.postprocess import (
    DEFAULT_MIN_AREA,
    DEFAULT_THRESHOLD,
    centroids_and_areas,
    detect_in_logits,
)
from frames.preprocess import normalize_frame
from frames.tracking import PointTracker, TrackerSettings
from models.devices import resolve_device
from models.export import export_onnx, onnx_cpu_session
from models.padding import SizedModel, crop_to, pad_to_multiple, run_padded
from models.std2net import STD2Net, StreamState, step_streams

FOUND_MARGIN_PX = 3.0
FA_PER_FRAME_LIMITS = (0.01, 0.05, 0.2)
FA_BUDGET = 0.05  # false objects per frame: issue #15's budget, the one selection and headline use
DEFAULT_MODELS = ("sd2net", "lrrnet", "std2net")
DEFAULT_FRAMES_PER_CLIP = 60  # 2 s of each clip at 30 fps
GRID_LOGITS = tuple(math.log(p / (1.0 - p)) for p in GRID_PROBABILITIES)
SMALL = "small-target clips"
ALL = "all clips"
TARGET_ID = 1  # one labelled object per clip

FrameLogits = Callable[[np.ndarray], np.ndarray]  # one frame (H, W) -> its logits (H, W)


# ----------------------------------------------------------------------------- running a model


def stream_runner(
    model: nn.Module, device: torch.device, backend: str
) -> Callable[[], FrameLogits]:
    """A factory of per-clip runners: each call starts a new stream (STD2Net: a new ring)."""
    model.eval().to(device)
    if isinstance(model, STD2Net):
        return lambda: _std2net_stream(model, device)
    if backend == "onnxruntime" or (backend == "auto" and device.type == "cpu"):
        session = _onnx_session(model)
        multiple = int(getattr(model, "size_multiple", 1))

        def onnx_logits(frame: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(normalize_frame(frame))[None, None]
            (logits,) = session.run(None, {"frames": pad_to_multiple(x, multiple).numpy()})
            return crop_to(torch.from_numpy(logits), frame.shape)[0, 0].numpy()

        return lambda: onnx_logits

    @torch.inference_mode()
    def torch_logits(frame: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(normalize_frame(frame)).to(device)[None, None]
        return run_padded(cast(SizedModel, model), x)[0, 0].float().cpu().numpy()

    return lambda: torch_logits


def _std2net_stream(model: STD2Net, device: torch.device) -> FrameLogits:
    state = StreamState(window=model.frames)

    @torch.inference_mode()
    def step(frame: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(normalize_frame(frame)).to(device)[None, None]
        return step_streams(model, [state], x)[0, 0].float().cpu().numpy()

    return step


def _onnx_session(model: nn.Module) -> Any:
    with tempfile.TemporaryDirectory(prefix="irtrack-eval-") as folder:
        path = export_onnx(model, f"{folder}/model.onnx")
        return onnx_cpu_session(path.read_bytes(), threads=torch.get_num_threads())


# ----------------------------------------------------------------------------- scoring


@dataclass
class Counts:
    """Object-level counts of a set of frames, at every threshold of the grid."""

    frames: int = 0
    targets: int = 0  # frames with a box
    found: np.ndarray = field(default_factory=lambda: np.zeros(len(GRID_LOGITS), np.int64))
    false_alarms: np.ndarray = field(default_factory=lambda: np.zeros(len(GRID_LOGITS), np.int64))

    def add(self, other: Counts) -> None:
        self.frames += other.frames
        self.targets += other.targets
        self.found += other.found
        self.false_alarms += other.false_alarms

    def summary(self, operating: Counts) -> dict[str, Any]:
        """Pd and false alarms per frame at the operating threshold, and at matched budgets."""
        pd = 100.0 * self.found / max(self.targets, 1)
        fa = self.false_alarms / max(self.frames, 1)
        roc = {
            "thresholds": list(GRID_PROBABILITIES),
            "pd": pd.tolist(),
            "fa_per_frame": fa.tolist(),
        }
        return {
            "frames": self.frames,
            "targets": self.targets,
            "Pd": 100.0 * int(operating.found[0]) / max(operating.targets, 1),
            "fa_per_frame": int(operating.false_alarms[0]) / max(operating.frames, 1),
            "matched": pd_at_matched_false_alarms({"roc": roc}, FA_PER_FRAME_LIMITS),
            "roc": roc,
        }


def frame_outcome(
    centroids: np.ndarray, box_contains: Callable[[float, float], bool] | None
) -> tuple[bool, int]:
    """(the target was found, false alarms) for one frame's detection centroids (x, y)."""
    inside = sum(1 for x, y in centroids if box_contains is not None and box_contains(x, y))
    found = inside > 0
    return found, len(centroids) - (1 if found else 0)


def _count_frame(
    logits: np.ndarray,
    box_contains: Callable[[float, float], bool] | None,
    min_area: int,
    grid: Counts,
    seq: int,
    grid_trackers: Sequence[PointTracker] | None,
) -> None:
    """Count one frame at every grid threshold; with ``grid_trackers`` (one per threshold: the
    confirmed-only option) only the detections of confirmed tracks count."""
    grid.frames += 1
    grid.targets += box_contains is not None
    for index, threshold in enumerate(GRID_LOGITS):
        centroids, areas = centroids_and_areas(logits > threshold)
        centroids = centroids[areas >= min_area]
        if grid_trackers is not None:
            assignments = grid_trackers[index].update(centroids, seq=seq)
            centroids = centroids[[a.track_id is not None for a in assignments]].reshape(-1, 2)
        found, false_alarms = frame_outcome(centroids, box_contains)
        grid.found[index] += found
        grid.false_alarms[index] += false_alarms


@dataclass
class ClipScore:
    """One clip's counts (grid and operating threshold) and its tracking events."""

    grid: Counts
    operating: Counts
    events: mm.MOTAccumulator


def score_clip(
    clip: LabelledClip,
    logits_of: FrameLogits,
    tracker: PointTracker,
    threshold: float = DEFAULT_THRESHOLD,
    min_area: int = DEFAULT_MIN_AREA,
    frames: Iterable[np.ndarray] | None = None,
    confirmed_only: bool = False,
) -> ClipScore:
    """Run one clip through ``logits_of`` and the tracker and count what a client would see
    (``confirmed_only``: the stream option that reports only detections of confirmed tracks; at
    every threshold of the grid, through a tracker of its own)."""
    grid, operating = Counts(), Counts()
    grid_trackers = (
        [PointTracker(tracker.settings) for _ in GRID_LOGITS] if confirmed_only else None
    )
    operating.found, operating.false_alarms = np.zeros(1, np.int64), np.zeros(1, np.int64)
    events = mm.MOTAccumulator(auto_id=True)
    for seq, (frame, box) in enumerate(zip(frames or clip.frames(), clip.boxes, strict=False)):
        logits = logits_of(frame)
        contains = None if box is None else _grown(box.contains)
        _count_frame(logits, contains, min_area, grid, seq, grid_trackers)
        components, _ = detect_in_logits(logits, threshold, min_area)
        centroids = np.array([(c.centroid_x, c.centroid_y) for c in components]).reshape(-1, 2)
        assignments = tracker.update(centroids, seq=seq)
        confirmed = [
            (a.track_id, x, y)
            for a, (x, y) in zip(assignments, centroids, strict=True)
            if a.track_id is not None
        ]
        reported = np.array([(x, y) for _, x, y in confirmed]).reshape(-1, 2)
        found, false_alarms = frame_outcome(reported if confirmed_only else centroids, contains)
        operating.frames += 1
        operating.targets += contains is not None
        operating.found[0] += found
        operating.false_alarms[0] += false_alarms
        events.update(
            [TARGET_ID] if contains is not None else [],
            [track_id for track_id, _, _ in confirmed],
            [[0.0 if contains(x, y) else np.nan for _, x, y in confirmed]]
            if contains is not None
            else np.empty((0, len(confirmed))),
        )
    return ClipScore(grid, operating, events)


def _grown(contains: Callable[..., bool]) -> Callable[[float, float], bool]:
    return lambda x, y: contains(x, y, FOUND_MARGIN_PX)


def groups_of(clip: LabelledClip) -> list[str]:
    """The report groups a clip belongs to."""
    return [ALL, f"class: {clip.object_class}", *([SMALL] if clip.small_target else [])]


def summarize_clips(
    clips: Sequence[LabelledClip], scores: Mapping[str, ClipScore]
) -> dict[str, dict[str, Any]]:
    """Per group: detection figures (pooled counts) and tracking figures (pooled events)."""
    grids: dict[str, Counts] = defaultdict(Counts)
    operating: dict[str, Counts] = defaultdict(Counts)
    events: dict[str, list[mm.MOTAccumulator]] = defaultdict(list)
    for clip in clips:
        score = scores[clip.name]
        for group in groups_of(clip):
            grids[group].add(score.grid)
            if group not in operating:
                operating[group] = Counts(
                    found=np.zeros(1, np.int64), false_alarms=np.zeros(1, np.int64)
                )
            operating[group].add(score.operating)
            events[group].append(score.events)
    summary = {}
    for group in sorted(grids, key=lambda g: (g != ALL, g != SMALL, g)):
        tracking = summarize({str(i): e for i, e in enumerate(events[group])})
        summary[group] = {**grids[group].summary(operating[group]), "tracking": tracking["overall"]}
    return summary


# ----------------------------------------------------------------------------- the command


def evaluate_model(
    runner: Callable[[], FrameLogits],
    clips: Sequence[LabelledClip],
    frames_per_clip: int | None,
    threshold: float,
    settings: TrackerSettings,
    min_area: int = DEFAULT_MIN_AREA,
    progress: str | None = None,
    confirmed_only: bool = False,
) -> dict[str, Any]:
    """Scores of one model over ``clips``: per group and per clip (Pd, FA/frame at 0.5)."""
    scores = {
        clip.name: score_clip(
            clip,
            runner(),
            PointTracker(settings),
            threshold,
            min_area,
            clip.frames(frames_per_clip),
            confirmed_only,
        )
        for clip in tqdm(clips, desc=progress, disable=progress is None)
    }
    per_clip = {
        name: {
            "frames": s.operating.frames,
            "Pd": 100.0 * int(s.operating.found[0]) / max(s.operating.targets, 1),
            "fa_per_frame": int(s.operating.false_alarms[0]) / max(s.operating.frames, 1),
        }
        for name, s in scores.items()
    }
    return {"groups": summarize_clips(clips, scores), "clips": per_clip}


def video_floor_figures(
    model_name: str, weights: Path, clips: Sequence[LabelledClip], frames_per_clip: int
) -> dict[str, float]:
    """Pd and IDF1 (both %) of ``weights`` over the first frames of ``clips``, on the CPU at the
    service's threshold: what a regression floor of real-video weights guards."""
    network, _ = load_sequence_model(model_name, weights)
    runner = stream_runner(network, torch.device("cpu"), "auto")
    result = evaluate_model(runner, clips, frames_per_clip, DEFAULT_THRESHOLD, TrackerSettings())
    overall = result["groups"][ALL]
    return {"Pd": overall["Pd"], "IDF1": 100.0 * overall["tracking"]["idf1"]}


def pd_within_budget(group: Mapping[str, Any], limit: float = FA_BUDGET) -> float | None:
    """A clip group's Pd at <= ``limit`` false objects per frame (one of ``FA_PER_FRAME_LIMITS``);
    None when no threshold keeps within it."""
    return next(row["Pd"] for row in group["matched"] if row["fa_per_frame_limit"] == limit)


def markdown_table(report: Mapping[str, Any]) -> str:
    """One row per model and group: Pd and false alarms at the operating threshold, Pd at
    matched false-alarm budgets, tracking; a line naming data, weights, date and machine."""
    models: dict[str, Any] = report["models"]
    limits = FA_PER_FRAME_LIMITS
    lines = [
        "| model | clips | at 0.5: Pd % | FA / frame | "
        + " | ".join(f"Pd % at <= {limit:g} FA/frame" for limit in limits)
        + " | MOTA | IDF1 | ID switches |",
        "| --- | --- |" + " ---: |" * (5 + len(limits)),
    ]
    for name, result in models.items():
        for group, figures in result["groups"].items():
            tracking = figures["tracking"]
            matched = " | ".join(figure_cell(row["Pd"], "{:.1f}") for row in figures["matched"])
            lines.append(
                f"| {name} | {group} | {figures['Pd']:.1f} | {figures['fa_per_frame']:.3f} | "
                f"{matched} | {tracking['mota']:.3f} | {tracking['idf1']:.3f} | "
                f"{tracking['num_switches']:.0f} |"
            )
    weights = "; ".join(
        f"{name} = {r['weights']}"
        + (f" (sha256 {r['weights_sha256'][:12]})" if r["weights_sha256"] else "")
        for name, r in models.items()
    )
    lines += [
        "",
        f"Written by `irtrack eval-video`: {report['dataset']}; {report['clips']} clips "
        f"({report['small_target_clips']} small-target), the first "
        f"{report['frames_per_clip'] or 'all'} frames of each ({report['frames']} frames); a target "
        f"is found when a detection's centroid is inside its box grown by {FOUND_MARGIN_PX:g} px, "
        f"every other detection is a false alarm; tracking from detections with a confirmed track "
        f"id; threshold {report['threshold']:g}"
        + (
            "; Pd and false alarms count only detections of confirmed tracks (the confirmed-only "
            "option), at every threshold through a tracker of its own"
            if report.get("report") == "confirmed"
            else ""
        )
        + f"; weights {weights}; {report['date']}; "
        f"{report['machine']}.",
    ]
    return "\n".join(lines)


def eval_video(
    model: Annotated[
        list[str] | None,
        typer.Option(help=f"Models to score (repeat); default: {', '.join(DEFAULT_MODELS)}."),
    ] = None,
    split: Annotated[str, typer.Option(help="train, val, test or train_full.")] = "test",
    clips: Annotated[
        int | None, typer.Option(min=1, help="Only the first N clips of the split.")
    ] = None,
    small_only: Annotated[
        bool,
        typer.Option(
            "--small-only", help="Only the small-target clips (median box within 16 x 16 px)."
        ),
    ] = False,
    frames_per_clip: Annotated[
        int, typer.Option(min=0, help="Score the first N frames of each clip; 0 = all.")
    ] = DEFAULT_FRAMES_PER_CLIP,
    weights_dir: WeightsDirOption = None,
    threshold: ThresholdOption = DEFAULT_THRESHOLD,
    backend: Annotated[
        str, typer.Option(help="Single-frame models: auto (ONNX Runtime on a CPU), torch.")
    ] = "auto",
    policy: Annotated[
        str,
        typer.Option(
            "--report", help="all, or confirmed: count only detections of confirmed tracks."
        ),
    ] = "all",
    device: DeviceOption = "auto",
    data_dir: Annotated[Path, typer.Option(help="The shared datasets.")] = DATA_DIR,
    json_path: JsonOption = None,
    markdown_path: MarkdownOption = None,
) -> None:
    """Detection and tracking on labelled real thermal clips (drone-ir), as the service runs them."""
    if policy not in ("all", "confirmed"):
        raise typer.BadParameter(f"--report is all or confirmed, not {policy!r}")
    torch_device = resolve_device(device)
    try:
        loaded = {
            name: load_sequence_model(
                name, weights_dir / f"{name}.safetensors" if weights_dir else None
            )
            for name in model or DEFAULT_MODELS
        }
    except EvaluationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    labelled = load_clips(split, data_dir, small_only, clips)
    settings = TrackerSettings()
    limit = frames_per_clip or None
    report: dict[str, Any] = {
        "dataset": f"drone-ir {split} split",
        "clips": len(labelled),
        "small_target_clips": sum(c.small_target for c in labelled),
        "frames_per_clip": limit,
        "frames": sum(min(len(c.boxes), limit or len(c.boxes)) for c in labelled),
        "threshold": threshold,
        "report": policy,
        "tracker": settings.model_dump(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(torch_device),
        "models": {},
    }
    for name, (network, entry) in loaded.items():
        runner = stream_runner(network, torch_device, backend)
        result = evaluate_model(
            runner,
            labelled,
            limit,
            threshold,
            settings,
            progress=name,
            confirmed_only=policy == "confirmed",
        )
        report["models"][name] = {**entry, **result}
    table = markdown_table(report)
    typer.echo(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(json_safe(report), indent=2) + "\n")
    if markdown_path is not None:
        markdown_path.write_text(table + "\n")
