"""``irtrack eval-sequences``: detection on the fixed synthesized clips, every model frame by frame.

What a multi-frame model adds can only be measured on sequences: each clip of
:func:`data.synthesis.fixed_eval_set` (fixed seed, composed from test-split images only: plain,
crossing, fading, clutter, pan, target-free, noisy, mixed) runs frame by frame through exactly what
the service runs for a stream: STD2Net through a fresh ring buffer per clip
(:func:`models.std2net.step_streams`, from the clip's first frame), a single-frame model on each
frame alone. Every frame is scored with :class:`evaluation.metrics.SegmentationMetrics` (mIoU, nIoU,
Pd, Fa, false-alarm objects per frame, ROC over the shared threshold grid).

Models differ in calibration, so one threshold is not a fair comparison. ``Pd at matched false
alarms`` is, for each limit on false-alarm objects per frame, the best Pd a threshold of the ROC
grid reaches while staying within that limit: the operating point a user would pick for an
alarm budget, chosen on the same grid for every model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import numpy as np
import torch
import typer
from torch import nn
from tqdm import tqdm

from data.paths import DATA_DIR
from data.synthesis import EVAL_SEED, fixed_eval_set
from data.synthesis import Sequence as Clip
from evaluation.images import EvaluationError, json_safe, load_scored_model
from evaluation.machine import describe_machine
from evaluation.metrics import DEFAULT_THRESHOLD, SegmentationMetrics
from evaluation.tables import figure_cell
from frames.postprocess import sigmoid
from models.devices import resolve_device
from models.padding import SizedModel, run_padded
from models.std2net import STD2Net, StreamState, step_streams

Detector = Callable[[Clip], Iterator[np.ndarray]]  # a clip -> its probability maps, in order
DEFAULT_MODELS = ("sd2net", "std2net")
FA_PER_FRAME_LIMITS = (0.05, 0.2, 1.0)  # false-alarm objects per frame
# The ROC grid of the matched comparison: logits -6 .. 15 in steps of 0.5 (0.5 included). Trained
# models put clutter at logits far above 6, where the metrics' default grid ends; above ~15 a
# float32 probability cannot be told from 1.
MATCHED_THRESHOLDS: tuple[float, ...] = tuple(
    float(t) for t in sigmoid(np.linspace(-6.0, 15.0, 43).astype(np.float64))
)
SUMMARY = ("mIoU", "nIoU", "Pd", "Fa", "fa_per_frame", "roc_auc", "images", "targets")

# Options shared by the commands that score models on the fixed clips (also irtrack eval-tracks).
SeedOption = Annotated[int, typer.Option(help="Seed of the fixed evaluation clips.")]
SplitOption = Annotated[str, typer.Option(help="Split the clips are composed from.")]
LengthOption = Annotated[int, typer.Option(min=1, help="Frames per clip.")]
WeightsDirOption = Annotated[
    Path | None,
    typer.Option(help="Folder with <model>.safetensors; default: the shipped weights."),
]
RandomInitOption = Annotated[
    bool, typer.Option("--random-init", help="Score untrained models, seeded with --seed.")
]
ThresholdOption = Annotated[float, typer.Option(help="Probability threshold.")]
DeviceOption = Annotated[str, typer.Option(help="'auto', 'cpu', 'cuda', 'cuda:1'.")]
JsonOption = Annotated[
    Path | None, typer.Option("--json", help="Write the full report (per clip) here.")
]
MarkdownOption = Annotated[
    Path | None, typer.Option("--markdown", help="Write the Markdown table here.")
]


def model_detector(model: nn.Module, device: torch.device) -> Detector:
    """Frame-by-frame probabilities of ``model`` (put in eval mode, on ``device``)."""
    model.eval().to(device)

    @torch.inference_mode()
    def detect(clip: Clip) -> Iterator[np.ndarray]:
        forward = _clip_forward(model)
        for frame in clip.frames:
            x = torch.from_numpy(frame.astype(np.float32) / 255.0).to(device)[None, None]
            yield sigmoid(forward(x)[0, 0].float().cpu().numpy())

    return detect


def _clip_forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A fresh forward for one clip: a multi-frame model streams it through a new ring buffer
    (the service's path); a single-frame model sees one frame at a time."""
    if isinstance(model, STD2Net):
        state = StreamState(window=model.frames)
        return lambda x: step_streams(model, [state], x)
    return lambda x: run_padded(cast(SizedModel, model), x)


def load_sequence_model(
    name: str, weights: Path | None = None, random_init_seed: int | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`evaluation.images.load_scored_model`, its weights named as a report names them."""
    model, label, sha = load_scored_model(name, weights, random_init_seed)
    return model, {"weights": label, "weights_sha256": sha}


def score_clips(
    detector: Detector, clips: Sequence[Clip], threshold: float = DEFAULT_THRESHOLD
) -> dict[str, Any]:
    """Metrics of ``detector`` over all ``clips`` (``overall``) and per clip (``clips``)."""
    overall = SegmentationMetrics(threshold, roc_thresholds=MATCHED_THRESHOLDS)
    per_clip: dict[str, dict[str, Any]] = {}
    for index, clip in enumerate(tqdm(clips, desc="clips", disable=None)):
        metrics = SegmentationMetrics(threshold)
        for prob, mask in zip(detector(clip), clip.masks, strict=True):
            overall.update(prob, mask)
            metrics.update(prob, mask)
        figures = metrics.compute()
        per_clip[clip.name or f"clip-{index}"] = {k: figures[k] for k in SUMMARY}
    result = overall.compute()
    result["matched"] = pd_at_matched_false_alarms(result)
    result["clips"] = per_clip
    return result


def pd_at_matched_false_alarms(
    result: dict[str, Any], limits: Sequence[float] = FA_PER_FRAME_LIMITS
) -> list[dict[str, float | None]]:
    """For each limit on false-alarm objects per frame, the best Pd of a ROC threshold within
    it (``None`` where no threshold of the grid stays within the limit)."""
    roc = result["roc"]
    points = list(zip(roc["thresholds"], roc["pd"], roc["fa_per_frame"], strict=True))
    rows: list[dict[str, float | None]] = []
    for limit in limits:
        within = [p for p in points if p[2] <= limit]
        best = max(within, key=lambda p: (p[1], -p[0]), default=None)
        rows.append(
            {
                "fa_per_frame_limit": limit,
                "Pd": best[1] if best else None,
                "threshold": best[0] if best else None,
                "fa_per_frame": best[2] if best else None,
            }
        )
    return rows


def evaluate_on_clips(
    name: str,
    clips: Sequence[Clip],
    weights: Path | None = None,
    random_init_seed: int | None = None,
    device: torch.device | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Load ``name`` (shipped weights unless told otherwise) and score it on ``clips``."""
    model, entry = load_sequence_model(name, weights, random_init_seed)
    detector = model_detector(model, device or torch.device("cpu"))
    return {"model": name, **entry, **score_clips(detector, clips, threshold)}


def clip_table(
    clips: Sequence[str],
    results: Mapping[str, Any],
    what: str,
    cell: Callable[[Any, str], str],
) -> list[str]:
    """Markdown lines of a per-clip table: a row per clip, a column per model of ``results``,
    ``cell(result, clip)`` its text."""
    lines = [
        "| clip | " + " | ".join(f"{name}: {what}" for name in results) + " |",
        "| --- |" + " ---: |" * len(results),
    ]
    for clip in clips:
        lines.append(
            f"| {clip} | " + " | ".join(cell(result, clip) for result in results.values()) + " |"
        )
    return lines


def _clip_cell(result: dict[str, Any], clip: str) -> str:
    figures = result["clips"][clip]
    return f"{figure_cell(figures['Pd'], '{:.1f}')} / {figures['fa_per_frame']:.3f}"


def markdown_table(report: dict[str, Any]) -> str:
    """Pd at matched false alarms and the threshold-0.5 figures per model, Pd per clip, and a
    line naming the data, date and machine behind the figures."""
    results: dict[str, dict[str, Any]] = report["models"]
    limits = [row["fa_per_frame_limit"] for row in next(iter(results.values()))["matched"]]
    lines = [
        "| model | weights (sha256) | "
        + " | ".join(f"Pd % at <= {limit:g} FA/frame" for limit in limits)
        + " | ROC area | at 0.5: mIoU % | Pd % | FA/frame |",
        "| --- | --- |" + " ---: |" * (len(limits) + 4),
    ]
    for name, result in results.items():
        sha = result["weights_sha256"]
        matched = " | ".join(figure_cell(row["Pd"], "{:.2f}") for row in result["matched"])
        lines.append(
            f"| {name} | {sha[:12] if sha else result['weights']} | {matched} "
            f"| {result['roc_auc']:.3f} | {result['mIoU']:.2f} | {result['Pd']:.2f} "
            f"| {result['fa_per_frame']:.3f} |"
        )
    lines += ["", *clip_table(report["clips"], results, "Pd % / FA/frame at 0.5", _clip_cell)]
    first = next(iter(results.values()))
    lines += [
        "",
        f"{report['dataset']}: {len(report['clips'])} clips, {first['images']} frames, "
        f"{first['targets']} target instances; Pd at matched false alarms = best Pd of a "
        "threshold of the ROC grid whose false-alarm objects per frame stay within the limit; "
        f"{report['date']}; {report['machine']}.",
    ]
    return "\n".join(lines)


def eval_sequences(
    model: Annotated[
        list[str] | None,
        typer.Option(help=f"Models to score (repeat); default: {', '.join(DEFAULT_MODELS)}."),
    ] = None,
    seed: SeedOption = EVAL_SEED,
    split: SplitOption = "test",
    length: LengthOption = 60,
    weights_dir: WeightsDirOption = None,
    random_init: RandomInitOption = False,
    threshold: ThresholdOption = DEFAULT_THRESHOLD,
    device: DeviceOption = "auto",
    data_dir: Annotated[Path, typer.Option(help="The shared datasets.")] = DATA_DIR,
    json_path: JsonOption = None,
    markdown_path: MarkdownOption = None,
) -> None:
    """Detection on the fixed synthesized clips: multi-frame vs single-frame at matched false
    alarms."""
    torch_device = resolve_device(device)
    try:  # every model is loaded before the clips are composed: a missing file fails at once
        models = {
            name: load_sequence_model(
                name,
                weights_dir / f"{name}.safetensors" if weights_dir else None,
                seed if random_init else None,
            )
            for name in model or DEFAULT_MODELS
        }
    except EvaluationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    clips = fixed_eval_set(seed=seed, split=split, length=length, data_dir=data_dir)
    report: dict[str, Any] = {
        "dataset": f"synthesized clips: data.synthesis.fixed_eval_set(seed={seed}, "
        f"split={split!r}, length={length})",
        "clips": [clip.name for clip in clips],
        "threshold": threshold,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(torch_device),
        "models": {
            name: {
                "model": name,
                **entry,
                **score_clips(model_detector(network, torch_device), clips, threshold),
            }
            for name, (network, entry) in models.items()
        },
    }
    table = markdown_table(report)
    typer.echo(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(json_safe(report), indent=2) + "\n")
    if markdown_path is not None:
        markdown_path.write_text(table + "\n")
