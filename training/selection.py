"""``irtrack select``: keep the snapshot of a run that scores best on a validation split.

Every snapshot the run kept (``--snapshot-every``) is scored, and the best one becomes the run's
``best.safetensors``, its metadata naming the epoch and its val figures. The test split is never
looked at. Two ways to score:

- ``--by pixels`` (the training loop's own signal): val mIoU on the val split of the run's
  training data. For runs trained where their validation data was not (the GPU training run
  carries the training splits only).
- ``--by video``: found targets at an alarm budget on real video, as ``irtrack eval-video`` scores
  them: Pd at <= ``FA_BUDGET`` false objects per frame on the small-target clips of the
  drone-ir val split (the holdout of its train clips), IDF1 breaking ties. For runs trained on
  drone-ir, whose pseudo-masks are approximate outlines: pixel overlap with them is a weak proxy
  for finding the object (the shipped STD2Net's val mIoU fell over the epochs in which its
  object-level Pd rose from 43 to 57).

``--target-free-gate WEIGHTS`` (single-frame models) refuses every snapshot whose false-alarm
objects per target-free frame of SIRST-v2's val split exceed those of ``WEIGHTS`` (e.g. the
shipped default): a better val mIoU, or more found on the drone-ir val clips, has come with more
false alarms on empty skies, and the drone-ir val clips alone have picked snapshots whose test
figures were worse. When every snapshot is refused, no weights are kept and the command fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import torch
import typer
from torch import nn

from data.datasets import InMemorySamples, IRSTDDataset
from data.paths import DATA_DIR
from data.video import load_clips
from evaluation.curves import TARGET_FREE_FIGURE
from evaluation.images import score_samples
from evaluation.video import FA_BUDGET, SMALL, evaluate_model, pd_within_budget, stream_runner
from frames.postprocess import DEFAULT_THRESHOLD
from frames.tracking import TrackerSettings
from models.devices import resolve_device
from models.registry import build_model, model_info
from models.weights import load_weights, read_metadata, save_weights
from training.batches import build_datasets
from training.config import Hyper, TrainConfig
from training.loop import BEST_WEIGHTS, LOG, SNAPSHOTS, weights_metadata

SELECTION_LOG = "selection.jsonl"
VIDEO_FRAMES_PER_CLIP = 30
PIXEL_FIGURES = ("mIoU", "nIoU", "Pd", "Fa")
SelectBy = Literal["pixels", "video"]
TARGET_FREE_DATA = "sirst-v2"  # its val split has target-free frames of real skies


class SelectionRefused(ValueError):
    """Every snapshot failed the target-free gate."""


# a snapshot's model -> (its ranking key, larger is better; the figures logged for it)
Scorer = Callable[[nn.Module], tuple[tuple[float, ...], dict[str, Any]]]


def pixel_scorer(hyper: Hyper, run: Path, data_dir: Path, device: torch.device) -> Scorer:
    """Val mIoU on the val split of the run's own training data."""
    config = TrainConfig(model=hyper.model, data=hyper.data, out=run, data_dir=data_dir)
    _, val_set = build_datasets(hyper, config)
    assert val_set is not None

    def score(model: nn.Module) -> tuple[tuple[float, ...], dict[str, Any]]:
        metrics = score_samples(model, val_set, device, amp=False, batch_size=hyper.batch_size)
        return (metrics["mIoU"],), {k: metrics[k] for k in PIXEL_FIGURES}

    return score


def video_scorer(
    data_dir: Path, device: torch.device, clips: int | None, frames_per_clip: int
) -> tuple[Scorer, str]:
    """Pd at <= ``FA_BUDGET`` false objects per frame (then IDF1) on the small-target clips
    of the drone-ir val split, through the service's path; and a line saying so."""
    small = load_clips("val", data_dir, small_only=True, clips=clips)
    if not small:
        raise FileNotFoundError(f"no small-target drone-ir val clips under {data_dir}")

    def score(model: nn.Module) -> tuple[tuple[float, ...], dict[str, Any]]:
        runner = stream_runner(model, device, "auto")
        result = evaluate_model(
            runner, small, frames_per_clip, DEFAULT_THRESHOLD, TrackerSettings()
        )
        group = result["groups"][SMALL]
        pd_at_budget = pd_within_budget(group)
        idf1 = group["tracking"]["idf1"]
        figures = {
            f"Pd_at_{FA_BUDGET:g}_fa": pd_at_budget,
            "Pd": group["Pd"],
            "fa_per_frame": group["fa_per_frame"],
            "idf1": idf1,
        }
        # no threshold within the budget ranks below any that has one
        return (-1.0 if pd_at_budget is None else pd_at_budget, idf1), figures

    method = (
        f"`irtrack select --by video`: Pd at <= {FA_BUDGET:g} false objects/frame on the "
        f"drone-ir val split's {len(small)} small-target clips (first {frames_per_clip} frames "
        "each), IDF1 breaking ties"
    )
    return score, method


def target_free_scorer(data_dir: Path, device: torch.device) -> Callable[[nn.Module], float]:
    """False-alarm objects per target-free frame of SIRST-v2's val split, at the service's
    default threshold, native size (as ``irtrack eval --data sirst-v2 --split val`` counts them)."""
    source = IRSTDDataset(data_dir / TARGET_FREE_DATA, "val")
    loaded = (source.load(index) for index in range(len(source)))
    free = [(source.name(i), image, mask) for i, (image, mask) in enumerate(loaded)]
    target_free = InMemorySamples([sample for sample in free if not sample[2].any()])
    if not len(target_free):
        raise FileNotFoundError(f"no target-free {TARGET_FREE_DATA} val frames under {data_dir}")

    def score(model: nn.Module) -> float:
        metrics = score_samples(model, target_free, device, amp=False, batch_size=1)
        return float(metrics["fa_per_frame"])

    return score


def _logged_val_metrics(run: Path, epoch: int) -> dict[str, Any] | None:
    """The training loop's own val figures of ``epoch``, where it validated that epoch."""
    if not (run / LOG).exists():
        return None
    for line in (run / LOG).read_text().splitlines():
        entry = json.loads(line)
        if entry.get("epoch") == epoch and "val" in entry:
            return dict(entry["val"])
    return None


def select_snapshot(
    run: Path,
    device: torch.device,
    data_dir: Path = DATA_DIR,
    by: SelectBy = "pixels",
    clips: int | None = None,
    frames_per_clip: int = VIDEO_FRAMES_PER_CLIP,
    target_free_gate: Path | None = None,
) -> dict[str, Any]:
    """Score every snapshot of ``run``; save the best as the run's best weights (the earliest of
    equals) and log every snapshot's figures to ``SELECTION_LOG``. With ``target_free_gate``,
    snapshots with more false alarms per target-free SIRST-v2 val frame than those weights are
    refused (:class:`SelectionRefused` when all are)."""
    snapshots = sorted((run / SNAPSHOTS).glob("epoch-*.safetensors"))
    if not snapshots:
        raise FileNotFoundError(
            f"{run / SNAPSHOTS} holds no snapshots (train with --snapshot-every)"
        )
    hyper = Hyper(**json.loads(read_metadata(snapshots[0])["hyper"]))
    method: str | None = None
    if by == "video":
        score, method = video_scorer(data_dir, device, clips, frames_per_clip)
    else:
        score = pixel_scorer(hyper, run, data_dir, device)
    model = build_model(hyper.model).to(device)
    gate: dict[str, Any] = {}
    target_free: Callable[[nn.Module], float] | None = None
    if target_free_gate is not None:
        if model_info(hyper.model).frames > 1:
            raise ValueError(
                f"--target-free-gate scores single frames; {hyper.model} takes windows"
            )
        target_free = target_free_scorer(data_dir, device)
        load_weights(model, target_free_gate)
        _, gate_figures = score(model)  # the gate's weights on the same val data, for comparison
        gate = {
            "weights": str(target_free_gate),
            **gate_figures,
            TARGET_FREE_FIGURE: target_free(model),
        }
        typer.echo(f"gate: {json.dumps(gate)}", err=True)
    scores: list[dict[str, Any]] = []
    best_key: tuple[float, ...] | None = None
    best: dict[str, Any] | None = None
    for path in snapshots:
        facts = read_metadata(path)
        epoch = int(facts["epoch"])
        earlier = json.loads(facts.get("stages", "[]"))[:-1]  # those before this run
        load_weights(model, path)
        key, figures = score(model)
        checked: dict[str, Any] = {}
        if target_free is not None:
            fa_per_frame = target_free(model)
            checked = {TARGET_FREE_FIGURE: fa_per_frame}
            checked["refused"] = fa_per_frame > gate[TARGET_FREE_FIGURE]
        scores.append({"epoch": epoch, "snapshot": path.name, **figures, **checked})
        typer.echo(f"epoch {epoch}: {json.dumps({**figures, **checked})}", err=True)
        if not checked.get("refused") and (best_key is None or key > best_key):
            best_key = key
            if by == "video":
                metadata = weights_metadata(hyper, epoch, _logged_val_metrics(run, epoch), earlier)
                metadata["selected_by"] = f"{method}: {json.dumps(figures)}"
            else:
                metadata = weights_metadata(hyper, epoch, figures, earlier)
            if checked:
                metadata["target_free_gate"] = json.dumps({"gate": gate, "snapshot": checked})
            save_weights(model, run / BEST_WEIGHTS, metadata)
            best = scores[-1]
    with open(run / SELECTION_LOG, "a") as log:
        log.write(
            json.dumps({"by": by, "gate": gate or None, "best": best, "scores": scores}) + "\n"
        )
    if best is None:
        raise SelectionRefused(
            f"every snapshot has more false alarms per target-free {TARGET_FREE_DATA} val frame "
            f"than {target_free_gate} ({gate[TARGET_FREE_FIGURE]:.3f}); none kept "
            f"(figures in {run / SELECTION_LOG})"
        )
    return best


def select_command(
    run: Annotated[Path, typer.Argument(help="a training run's folder (irtrack train --out)")],
    by: Annotated[
        str,
        typer.Option(
            help="pixels: val mIoU on the run's own val split; video: Pd at <= "
            f"{FA_BUDGET:g} false objects/frame on the drone-ir val split's small-target clips (then IDF1)"
        ),
    ] = "pixels",
    clips: Annotated[
        int | None, typer.Option(min=1, help="--by video: only the first N val clips")
    ] = None,
    frames_per_clip: Annotated[
        int, typer.Option(min=1, help="--by video: score the first N frames of each clip")
    ] = VIDEO_FRAMES_PER_CLIP,
    target_free_gate: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="refuse snapshots with more false alarms per target-free SIRST-v2 val frame "
            "than these weights (e.g. the shipped default); single-frame models",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    data_dir: Annotated[Path, typer.Option(help="the shared datasets")] = DATA_DIR,
) -> None:
    """Keep the run's snapshot that scores best on a val split as its best.safetensors."""
    if by not in ("pixels", "video"):
        raise typer.BadParameter(f"--by is pixels or video, not {by!r}")
    try:
        best = select_snapshot(
            run,
            resolve_device(device),
            data_dir,
            cast(SelectBy, by),
            clips,
            frames_per_clip,
            target_free_gate,
        )
    except SelectionRefused as refusal:
        typer.echo(f"refused: {refusal}", err=True)
        raise typer.Exit(1) from refusal
    except (FileNotFoundError, ValueError) as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(f"best: epoch {best['epoch']} {json.dumps(best)} -> {run / BEST_WEIGHTS}")
