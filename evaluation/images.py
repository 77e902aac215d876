"""``irtrack eval``: score a single-frame detector on a dataset split, the way the papers do.

Every image runs whole at its native size (``models.padding.run_padded`` pads to the model's size
multiple and crops back; frames are never tiled or resized), through the service's own
normalisation (``frames.preprocess``) and post-processing (``frames.postprocess`` via
``evaluation.metrics``). The JSON record names everything a reported figure needs (model, weights hash,
dataset, split, image count, threshold, date, machine); see ``evaluation.metrics`` for the metrics.

``--save-pred`` writes each probability map as an 8-bit PNG (``round(255 * p)``) at the image's
size, so results can be re-scored independently; ``--pred`` scores such a folder instead of running
a model (for predictions saved earlier or produced elsewhere).

STD2Net needs 5-frame windows, which single-image datasets do not have: it is evaluated on
sequences, not here.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import cv2
import numpy as np
import torch
import typer
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm import tqdm

from data.datasets import SPLITS, FrameSamples, IRSTDDataset
from data.paths import DATA_DIR
from evaluation.machine import describe_machine
from evaluation.metrics import DEFAULT_THRESHOLD, SegmentationMetrics, plot_roc
from frames.postprocess import sigmoid
from models.devices import autocast, resolve_device
from models.padding import SizedModel, run_padded
from models.registry import build_model, load_model, model_info
from models.weights import file_sha256


class EvaluationError(ValueError):
    """A request that cannot be evaluated as asked (the message says what to change)."""


def resolve_dataset_dir(data: str | Path) -> Path:
    """A dataset folder, given as a path or as a name under ``data.paths.DATA_DIR``."""
    path = Path(data)
    if (path / "splits").is_dir():
        return path
    if (DATA_DIR / path / "splits").is_dir():
        return DATA_DIR / path
    raise EvaluationError(f"{data}: not a dataset folder (no splits/ there nor in {DATA_DIR})")


def load_scored_model(
    name: str, weights: Path | None, random_init_seed: int | None
) -> tuple[nn.Module, str, str | None]:
    """(model, weights label, weights SHA-256) of any registered model, for scoring it.

    Weights: ``weights`` if given, else the registry's shipped file; a randomly initialised model
    only when asked for (``random_init_seed``), so that an untrained model is never scored by
    accident.
    """
    try:
        info = model_info(name)
    except KeyError as exc:
        raise EvaluationError(str(exc.args[0])) from None
    if random_init_seed is not None:
        torch.manual_seed(random_init_seed)
        return build_model(name).eval(), f"random-init(seed={random_init_seed})", None
    path = weights if weights is not None else info.default_weights_path
    if path is None:
        raise EvaluationError(
            f"no trained weights are shipped for {name} (models/weights/{info.default_weights} "
            "is missing): pass the weights, or --random-init to score an untrained model"
        )
    if not path.is_file():
        raise EvaluationError(f"no weights for {name}: weights file {path} does not exist")
    model, _ = load_model(name, path)
    return model, str(path), file_sha256(path)


def load_detector(
    name: str, weights: Path | None, random_init_seed: int | None
) -> tuple[nn.Module, str, str | None]:
    """:func:`load_scored_model` for the single-frame detectors that image datasets can score."""
    try:
        info = model_info(name)
    except KeyError as exc:
        raise EvaluationError(str(exc.args[0])) from None
    if info.frames != 1:
        raise EvaluationError(
            f"{name} takes {info.frames}-frame windows; single-image datasets have no sequences "
            "(evaluate it on sequences instead)"
        )
    if random_init_seed is not None and weights is not None:
        raise EvaluationError("give either --weights or --random-init, not both")
    return load_scored_model(name, weights, random_init_seed)


def predict_probability(model: nn.Module, image: torch.Tensor, device: torch.device) -> np.ndarray:
    """Probability map (H, W) float32 of one (1, H, W) [0, 1] image, run whole at native size."""
    with torch.inference_mode():
        logits = run_padded(cast(SizedModel, model), image[None].to(device))
    return sigmoid(logits[0, 0].float().cpu().numpy())


def save_probability_png(prob: np.ndarray, path: Path) -> None:
    """Write a probability map as 8-bit PNG, 0..255 = 0..1 rounded."""
    if not cv2.imwrite(str(path), np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)):
        raise OSError(f"cannot write {path}")


def read_probability_png(path: Path) -> np.ndarray:
    """The inverse of ``save_probability_png`` (to its 1/255 resolution)."""
    png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if png is None:
        raise EvaluationError(f"missing or unreadable prediction {path}")
    if png.ndim != 2 or png.dtype != np.uint8:
        raise EvaluationError(f"{path}: expected an 8-bit single-channel PNG")
    return png.astype(np.float32) / np.float32(255.0)


def score_samples(
    model: nn.Module, dataset: Dataset, device: torch.device, amp: bool, batch_size: int
) -> dict[str, Any]:
    """Metrics (evaluation.metrics) at threshold 0.5 of ``model`` on a dataset of samples (dicts
    with ``image`` and ``mask``), as training validates: native-size images one at a time, resized
    or synthesized ones in batches. Leaves the model in training mode."""
    metrics = SegmentationMetrics()
    model.eval()
    loader = DataLoader(
        dataset, batch_size=1 if _native_sizes(dataset) else batch_size, shuffle=False
    )
    with torch.inference_mode(), autocast(device, amp):
        for batch in loader:
            logits = run_padded(cast(SizedModel, model), batch["image"].to(device))
            prob = torch.sigmoid(logits.float()).cpu().numpy()
            for image_prob, mask in zip(prob, batch["mask"].numpy(), strict=True):
                metrics.update(image_prob[0], mask[0])
    model.train()
    return metrics.compute()


def _native_sizes(dataset: Dataset) -> bool:
    """Whether samples keep their own sizes (which differ): then they cannot be batched."""
    if isinstance(dataset, ConcatDataset):
        return any(_native_sizes(part) for part in dataset.datasets)
    return isinstance(dataset, FrameSamples) and dataset.resize is None


def evaluate(
    data: str | Path,
    split: str,
    model_name: str | None = None,
    weights: Path | None = None,
    random_init_seed: int | None = None,
    predictions_dir: Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    device: str = "cpu",
    limit: int | None = None,
    save_pred: Path | None = None,
    roc_png: Path | None = None,
) -> dict[str, Any]:
    """Score a model (or a folder of saved probability PNGs) on ``split``; returns the record."""
    if (model_name is None) == (predictions_dir is None):
        raise EvaluationError("give exactly one of a model (--model) or saved predictions (--pred)")
    if split not in SPLITS:
        raise EvaluationError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    try:
        torch_device = resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        raise EvaluationError(f"device {device!r}: {exc}") from None
    model: nn.Module | None = None
    weights_sha256: str | None = None
    if model_name is not None:
        model, weights_label, weights_sha256 = load_detector(model_name, weights, random_init_seed)
        model.to(torch_device)
    else:
        weights_label = f"predictions:{predictions_dir}"
    dataset_dir = resolve_dataset_dir(data)
    dataset = IRSTDDataset(dataset_dir, split)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if save_pred is not None:
        save_pred.mkdir(parents=True, exist_ok=True)

    metrics = SegmentationMetrics(threshold=threshold)
    target_free = SegmentationMetrics(threshold=threshold)  # images whose mask is empty
    for index in tqdm(range(count), desc=f"{dataset_dir.name}/{split}", disable=None):
        sample = dataset[index]
        name = sample["name"]
        if model is not None:
            prob = predict_probability(model, sample["image"], torch_device)
        else:
            assert predictions_dir is not None
            prob = read_probability_png(predictions_dir / f"{name}.png")
        mask = sample["mask"][0].numpy()
        if prob.shape != mask.shape:
            raise EvaluationError(f"{name}: prediction {prob.shape} but image {mask.shape}")
        metrics.update(prob, mask)
        if not mask.any():
            target_free.update(prob, mask)
        if save_pred is not None:
            save_probability_png(prob, save_pred / f"{name}.png")

    result = {
        "model": model_name,
        "weights": weights_label,
        "weights_sha256": weights_sha256,
        "dataset": dataset_dir.name,
        "dataset_dir": str(dataset_dir),
        "split": split,
        "limit": limit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(torch_device),
        "torch": torch.__version__,
        "units": {"mIoU": "%", "nIoU": "%", "Pd": "%", "Fa": "1e-6", "roc_auc": "0..1"},
        **metrics.compute(),
    }
    free = target_free.compute()
    result["target_free"] = {"images": free["images"], "fa_per_frame": free["fa_per_frame"]}
    if roc_png is not None:
        plot_roc(
            result, roc_png, title=f"{model_name or 'predictions'} on {dataset_dir.name}/{split}"
        )
    return result


def format_table(result: dict[str, Any]) -> str:
    """The headline figures as a small text table."""
    header = (
        f"{result['model'] or 'predictions'} | {result['weights']} | "
        f"{result['dataset']}/{result['split']} | {result['images']} images, "
        f"{result['targets']} targets | threshold {result['threshold']:g}"
    )
    columns = ["mIoU %", "nIoU %", "Pd %", "Fa 1e-6", "FA/frame", "ROC area"]
    values = [
        f"{result['mIoU']:.2f}",
        f"{result['nIoU']:.2f}",
        f"{result['Pd']:.2f}",
        f"{result['Fa']:.2f}",
        f"{result['fa_per_frame']:.3f}",
        f"{result['roc_auc']:.3f}",
    ]
    widths = [max(len(c), len(v)) for c, v in zip(columns, values, strict=True)]
    return "\n".join(
        [
            header,
            "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)),
            "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True)),
            f"nIoU over {result['niou_images']} images with targets "
            f"({result['niou_excluded_images']} target-free images excluded); "
            f"false-alarm objects per target-free image: "
            f"{result['target_free']['fa_per_frame']:.3f}",
        ]
    )


def json_safe(value: Any) -> Any:
    """NaN (an undefined metric, e.g. Pd without targets) -> null, for strict JSON readers."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def eval_command(
    data: Annotated[str, typer.Option(help="Dataset folder, or its name under shared/data.")],
    split: Annotated[str, typer.Option(help="train, val, test or train_full.")] = "test",
    model: Annotated[str | None, typer.Option(help="Registry name: sd2net or lrrnet.")] = None,
    weights: Annotated[
        Path | None, typer.Option(help="Safetensors file (default: the shipped weights).")
    ] = None,
    random_init: Annotated[
        bool, typer.Option("--random-init", help="Score an untrained model seeded with --seed.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of --random-init.")] = 0,
    pred: Annotated[
        Path | None, typer.Option(help="Score saved probability PNGs instead of a model.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the record here.")] = None,
    save_pred: Annotated[
        Path | None, typer.Option(help="Write <name>.png probability maps here.")
    ] = None,
    roc: Annotated[Path | None, typer.Option(help="Save the ROC curve as this PNG.")] = None,
    threshold: Annotated[float, typer.Option(help="Probability threshold.")] = DEFAULT_THRESHOLD,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    limit: Annotated[int | None, typer.Option(help="Only the first N images of the split.")] = None,
) -> None:
    """Evaluate a single-frame detector on a dataset split (mIoU, nIoU, Pd, Fa, ROC)."""
    try:
        result = evaluate(
            data,
            split,
            model_name=model,
            weights=weights,
            random_init_seed=seed if random_init else None,
            predictions_dir=pred,
            threshold=threshold,
            device=device,
            limit=limit,
            save_pred=save_pred,
            roc_png=roc,
        )
    except EvaluationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_table(result))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(json_safe(result), indent=2) + "\n")
