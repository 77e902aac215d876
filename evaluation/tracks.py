"""``irtrack eval-tracks``: MOTA, IDF1 and ID switches of detector + tracker on synthesized clips.

Each clip of :func:`data.synthesis.fixed_eval_set` (fixed seed; crossing, fading, clutter, pan,
target-free... scenarios) goes frame by frame through exactly what the service runs for a stream:
the detector (STD2Net streams through its ring buffer, :func:`models.std2net.step_streams`;
single-frame models see each frame alone), :func:`frames.postprocess.find_components` and one
:class:`frames.tracking.PointTracker`. A hypothesis is a detection with a confirmed track id, at
the detection's centroid: what a client receives (unconfirmed detections carry no id, and a track
coasting through a miss reports nothing). py-motmetrics scores hypotheses against the clips'
ground-truth target centroids with point distance and a 3 px gate (``max_d2 = 9``), so that a
track hit means what a Pd hit means (``shared/specs/metrics.md``).

The ``masks`` detector turns the ground-truth masks themselves into components: the score of the
tracker alone, the ceiling for every model (crossing targets still merge into one component).

It lives in ``service`` because it scores the service's tracker; it only reads ``models``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import motmetrics as mm
import numpy as np
import torch
import typer

from data.synthesis import EVAL_SEED, Sequence, fixed_eval_set
from evaluation.images import EvaluationError
from evaluation.machine import describe_machine
from evaluation.metrics import DEFAULT_THRESHOLD, MATCH_DISTANCE
from evaluation.sequences import (
    Detector,
    DeviceOption,
    JsonOption,
    LengthOption,
    MarkdownOption,
    RandomInitOption,
    SeedOption,
    SplitOption,
    ThresholdOption,
    WeightsDirOption,
    clip_table,
    load_sequence_model,
    model_detector,
)
from frames.postprocess import find_components
from frames.tracking import PointTracker, TrackerSettings
from models.devices import resolve_device

MASKS = "masks"  # the ground-truth detector: scores the tracker alone
DEFAULT_DETECTORS = (MASKS, "sd2net", "std2net")
METRICS = ("mota", "idf1", "num_switches", "num_false_positives", "num_misses", "num_objects")


@dataclass(frozen=True)
class TrackPoint:
    """One tracked (or ground-truth) point of one frame."""

    track_id: int
    x: float  # column, px
    y: float  # row, px


FramePoints = SequenceOf[TrackPoint]


def accumulate(
    truth: SequenceOf[FramePoints],
    hypotheses: SequenceOf[FramePoints],
    max_distance_px: float = MATCH_DISTANCE,
) -> mm.MOTAccumulator:
    """Frame-by-frame MOT events of one clip (point distance, matches only within the gate)."""
    if len(truth) != len(hypotheses):
        raise ValueError(f"{len(truth)} ground-truth frames but {len(hypotheses)} tracked frames")
    accumulator = mm.MOTAccumulator(auto_id=True)
    for objects, hyps in zip(truth, hypotheses, strict=True):
        distances = mm.distances.norm2squared_matrix(
            np.array([(p.x, p.y) for p in objects]).reshape(-1, 2),
            np.array([(p.x, p.y) for p in hyps]).reshape(-1, 2),
            max_d2=max_distance_px**2,
        )
        accumulator.update([p.track_id for p in objects], [p.track_id for p in hyps], distances)
    return accumulator


def summarize(accumulators: Mapping[str, mm.MOTAccumulator]) -> dict[str, dict[str, float]]:
    """MOTA, IDF1, ID switches, FP, FN and ground-truth count per clip and ``"overall"`` (all
    clips' events pooled, not an average of per-clip ratios)."""
    table = mm.metrics.create().compute_many(
        list(accumulators.values()),
        metrics=list(METRICS),
        names=list(accumulators),
        generate_overall=True,
    )
    rows = {str(name): {m: float(row[m]) for m in METRICS} for name, row in table.iterrows()}
    rows["overall"] = rows.pop("OVERALL")
    return rows


def ground_truth(sequence: Sequence) -> list[list[TrackPoint]]:
    """Per frame, the clip's targets as points (a fading target stays a target: it is there)."""
    return [[TrackPoint(t.target_id, t.x, t.y) for t in frame] for frame in sequence.targets]


def track(
    probabilities: Iterator[np.ndarray],
    settings: TrackerSettings,
    threshold: float = DEFAULT_THRESHOLD,
    min_area: int = 1,
) -> list[list[TrackPoint]]:
    """Components of each probability map through one fresh tracker; per frame, the detections
    with a confirmed id, at their centroids."""
    tracker = PointTracker(settings)
    frames: list[list[TrackPoint]] = []
    for seq, prob in enumerate(probabilities):
        components = find_components(prob, threshold, min_area)
        assignments = tracker.update([(c.centroid_x, c.centroid_y) for c in components], seq=seq)
        frames.append(
            [
                TrackPoint(a.track_id, c.centroid_x, c.centroid_y)
                for c, a in zip(components, assignments, strict=True)
                if a.track_id is not None
            ]
        )
    return frames


def mask_detector(sequence: Sequence) -> Iterator[np.ndarray]:
    """The ground-truth masks as certain probability maps."""
    for mask in sequence.masks:
        yield mask.astype(np.float32)


def evaluate(
    detector: Detector,
    sequences: SequenceOf[Sequence],
    settings: TrackerSettings,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, dict[str, float]]:
    """Scores of ``detector`` + tracker per clip (by clip name) and overall."""
    accumulators = {
        sequence.name or f"clip-{index}": accumulate(
            ground_truth(sequence), track(detector(sequence), settings, threshold)
        )
        for index, sequence in enumerate(sequences)
    }
    return summarize(accumulators)


def _clip_cell(result: Mapping[str, Any], clip: str) -> str:
    scores = result["scores"][clip]
    return f"{scores['mota']:.3f} / {scores['idf1']:.3f} / {scores['num_switches']:.0f}"


def markdown_table(report: Mapping[str, Any]) -> str:
    """Overall scores, one row per detector, then MOTA / IDF1 / ID switches per clip, and a line
    naming the data, threshold, tracker settings, date and machine behind the figures."""
    detectors: dict[str, Any] = report["detectors"]
    lines = [
        "| detector | weights (sha256) | MOTA | IDF1 | ID switches | FP | FN | targets |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in detectors.items():
        o = result["scores"]["overall"]
        sha = result.get("weights_sha256")
        lines.append(
            f"| {name} | {sha[:12] if sha else result['weights']} | {o['mota']:.3f} "
            f"| {o['idf1']:.3f} | {o['num_switches']:.0f} | {o['num_false_positives']:.0f} "
            f"| {o['num_misses']:.0f} | {o['num_objects']:.0f} |"
        )
    lines += ["", *clip_table(report["clips"], detectors, "MOTA / IDF1 / IDsw", _clip_cell)]
    lines += [
        "",
        f"{report['dataset']}: {len(report['clips'])} clips, {report['frames']} frames; "
        f"{report['matching']}; threshold {report['threshold']:g}; tracker "
        + ", ".join(f"{k}={v}" for k, v in report["tracker"].items())
        + f"; {report['date']}; {report['machine']}.",
    ]
    return "\n".join(lines)


def _detector(
    name: str, weights_dir: Path | None, random_init: bool, seed: int, device: torch.device
) -> tuple[Detector, dict[str, Any]]:
    """The detector called ``name`` and what names its weights in the report: the ground-truth
    masks, or a model with ``weights_dir/<name>.safetensors`` (default: the shipped file)."""
    if name == MASKS:
        return mask_detector, {"weights": "ground-truth masks"}
    weights = weights_dir / f"{name}.safetensors" if weights_dir else None
    model, entry = load_sequence_model(name, weights, seed if random_init else None)
    return model_detector(model, device), entry


def eval_tracks(
    model: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Detectors to score (repeat the option): registry names, or {MASKS!r} (the "
            f"tracker alone). Default: {', '.join(DEFAULT_DETECTORS)}."
        ),
    ] = None,
    seed: SeedOption = EVAL_SEED,
    split: SplitOption = "test",
    length: LengthOption = 60,
    weights_dir: WeightsDirOption = None,
    random_init: RandomInitOption = False,
    threshold: ThresholdOption = DEFAULT_THRESHOLD,
    device: DeviceOption = "auto",
    json_path: JsonOption = None,
    markdown_path: MarkdownOption = None,
) -> None:
    """MOTA, IDF1 and ID switches of detector + tracker on the fixed synthesized clips."""
    torch_device = resolve_device(device)
    try:
        detectors = {
            name: _detector(name, weights_dir, random_init, seed, torch_device)
            for name in model or DEFAULT_DETECTORS
        }
    except EvaluationError as exc:
        typer.echo(f"error: {exc.args[0]}", err=True)
        raise typer.Exit(2) from None
    settings = TrackerSettings()
    sequences = fixed_eval_set(seed=seed, split=split, length=length)
    report: dict[str, Any] = {
        "dataset": "synthesized clips: data.synthesis.fixed_eval_set"
        f"(seed={seed}, split={split!r}, length={length})",
        "clips": [s.name for s in sequences],
        "frames": sum(len(s.frames) for s in sequences),
        "matching": f"point distance, {MATCH_DISTANCE:g} px gate (motmetrics max_d2="
        f"{MATCH_DISTANCE**2:g}), hypotheses = detections with a confirmed track id",
        "threshold": threshold,
        "tracker": settings.model_dump(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(torch_device),
        "detectors": {},
    }
    for name, (detector, entry) in detectors.items():
        entry["scores"] = evaluate(detector, sequences, settings, threshold)
        report["detectors"][name] = entry
        typer.echo(f"{name}: {json.dumps(entry['scores']['overall'])}", err=True)
    table = markdown_table(report)
    typer.echo(table)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if markdown_path is not None:
        markdown_path.write_text(table + "\n")
