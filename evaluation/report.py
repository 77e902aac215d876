"""Accuracy tables and weights cards, written from ``irtrack eval`` JSON and weights metadata.

Every figure comes from a file a command wrote: the test-split figures from ``irtrack eval --json``,
the training facts (dataset, epochs, validation score, commit) from the metadata that
``irtrack train`` stores in the safetensors file. The papers' figures are quoted beside ours.
"""

import json
from pathlib import Path
from typing import Any

import typer

from data.datasets import IMAGE_DATASETS, data_parts
from data.paths import DATA_DIR
from data.pseudo_masks import examples_png
from data.synthesis import SEQUENCE_DATA, fixed_eval_set
from data.video import DRONE_IR, load_clips
from evaluation.curves import curves_table, plot_learning_curves, selection_table
from evaluation.headline import headline_table, read_reports
from evaluation.images import evaluate
from evaluation.sequences import evaluate_on_clips
from evaluation.sequences import markdown_table as sequence_table
from evaluation.tables import figure_cell
from evaluation.video import markdown_table as video_table
from evaluation.video import video_floor_figures
from models.weights import WEIGHTS_DIR, file_sha256, read_metadata

# Published test figures (NUDT-SIRST, the papers' 50/50 split): SD2Net from Hu et al. 2026 (Table
# of single-frame results, mIoU only), LRRNet from Zhang et al. 2025 (IoU / nIoU / Pd / Fa).
PAPER_FIGURES: dict[tuple[str, str], dict[str, float]] = {
    ("sd2net", "nudt-sirst"): {"mIoU": 95.13},
    ("lrrnet", "nudt-sirst"): {"mIoU": 96.37, "nIoU": 96.72, "Pd": 99.34, "Fa": 0.20},
}
COLUMNS = (("mIoU", "{:.2f}"), ("nIoU", "{:.2f}"), ("Pd", "{:.2f}"), ("Fa", "{:.2f}"))

report_app = typer.Typer(help="Accuracy tables, weights cards and regression floors.")

FLOORS_FILE = WEIGHTS_DIR / "regression_floors.json"
FLOOR_SLICE = 24  # first test images of the weights' dataset
FLOOR_CLIP_LENGTH = 12  # frames of each fixed sequence clip, for sequence-trained weights
FLOOR_VIDEO_CLIPS = 4  # first drone-ir test clips, for weights trained on real video alone
FLOOR_VIDEO_FRAMES = 30  # first frames of each of them (a 2% floor then allows a frame or two)
FLOOR_MARGIN = 0.98  # a floor is 98% of the figure measured when the weights were shipped
FLOOR_METRICS = ("mIoU", "Pd")  # images and synthesized clips; real clips: Pd and IDF1


def _training_facts(weights: str) -> dict[str, Any]:
    """What the weights file says about its training (empty for files without metadata)."""
    path = Path(weights)
    if not path.exists():
        return {}
    metadata = read_metadata(path)
    hyper = json.loads(metadata.get("hyper", "{}"))
    return {**metadata, "hyper": hyper}


def accuracy_table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per eval result, naming its weights file, and the paper's figures on a
    row under the first result of each (model, dataset) where published."""
    header = "| model | test set | images | " + " | ".join(
        f"{name}{' (1e-6)' if name == 'Fa' else ' %'}" for name, _ in COLUMNS
    )
    lines = [
        header + " | FA objects / frame | FA / target-free frame | training |",
        "|---|---|---:|" + "---:|" * len(COLUMNS) + "---:|---:|---|",
    ]
    quoted: set[tuple[str, str]] = set()
    for result in results:
        cells = [figure_cell(result[name], template) for name, template in COLUMNS]
        lines.append(
            f"| {result['model']} (ours: `{Path(result['weights']).stem}`) | "
            f"{result['dataset']} {result['split']} | {result['images']} | {' | '.join(cells)} | "
            f"{result['fa_per_frame']:.3f} | {_target_free(result)} | "
            f"{_training_summary(_training_facts(result['weights']))} |"
        )
        pair = (result["model"], result["dataset"])
        paper = PAPER_FIGURES.get(pair)
        if paper and pair not in quoted:
            quoted.add(pair)
            cells = [figure_cell(paper.get(name), template) for name, template in COLUMNS]
            lines.append(
                f"| {result['model']} (paper) | {result['dataset']} test | | {' | '.join(cells)} "
                "| - | - | published (best epoch picked on the test split) |"
            )
    machines = sorted({r["machine"] for r in results})
    dates = sorted({r["date"][:10] for r in results})
    weights = ", ".join(
        dict.fromkeys(f"`{Path(r['weights']).name}` ({r['weights_sha256'][:12]})" for r in results)
    )
    footer = (
        f"\nWritten by `irtrack report accuracy` from `irtrack eval --json` output; evaluated "
        f"{', '.join(dates)} on {'; '.join(machines)}; threshold 0.5; weights {weights}.\n"
    )
    return "\n".join(lines) + "\n" + footer


def _training_summary(facts: dict[str, Any]) -> str:
    """The training column: data, the epoch kept of the last stage, and all epochs where the
    weights come from several stages."""
    if not facts:
        return "untrained"
    summary = (
        f"{facts.get('dataset', '?')} train, best val epoch {facts.get('epoch', '?')} of "
        f"{facts['hyper'].get('epochs', '?')} planned, {facts.get('date', '?')[:10]}"
    )
    stages = json.loads(facts.get("stages", "[]"))
    if len(stages) > 1:
        summary += f" ({len(stages)} stages, {facts.get('total_epochs', '?')} epochs in all)"
    return summary


def _target_free(result: dict[str, Any]) -> str:
    """False alarms per target-free image, with their count ("-" where the split has none)."""
    free = result.get("target_free") or {}
    if not free.get("images"):
        return "-"
    return f"{free['fa_per_frame']:.3f} ({free['images']})"


def _training_data(facts: dict[str, Any]) -> str:
    dataset = facts.get("dataset", "?")
    if "+" in dataset:
        parts = data_parts(dataset)
        named = [
            f"`{part}`" + (f" (drawn {parts.count(part)}x)" if parts.count(part) > 1 else "")
            for part in dict.fromkeys(parts)
        ]
        return (
            f"the train splits of {', '.join(named)} together (drone-ir: pseudo-masks from its "
            "boxes; model selection on their val splits, never on test)"
        )
    if dataset == SEQUENCE_DATA:
        return (
            "sequences synthesized from the nudt-sirst and sirst-v2 train splits "
            "(`data.synthesis`; model selection on fixed val-split clips, never on test)"
        )
    if dataset == DRONE_IR:
        return (
            "the `drone-ir` training clips (pseudo-masks from their boxes; model selection on "
            "its val clips, never on test)"
        )
    return f"`{dataset}` train split (model selection on its val split, never on test)"


def _selection(facts: dict[str, Any]) -> str:
    """Why this epoch was kept: the best val mIoU (what training selects on), or what a later
    selection recorded in ``selected_by``."""
    if "selected_by" in facts:
        return f"selected by {facts['selected_by']}; its val mIoU {facts.get('val_mIoU', '?')}"
    return f"best val mIoU {facts.get('val_mIoU', '?')}"


def weights_card(weights: Path, results: list[dict[str, Any]]) -> str:
    """A weights file's card: what it is, how it was trained, what it scores on the test data.

    ``results`` are ``irtrack eval --json`` records (test splits of image datasets),
    ``irtrack eval-video --json`` reports (labelled real clips) and/or ``irtrack eval-sequences
    --json`` reports (the fixed synthesized clips).
    """
    facts = _training_facts(str(weights))
    hyper = facts.get("hyper", {})
    lines = [
        f"# {weights.name}",
        "",
        f"- model: `{facts.get('model', '?')}`; training data: {_training_data(facts)}",
        f"- recipe: {json.dumps(hyper, sort_keys=True)}",
        f"- kept epoch {facts.get('epoch', '?')} ({_selection(facts)}) of "
        f"{hyper.get('epochs', '?')} planned; trained {facts.get('date', '?')}, commit "
        f"`{facts.get('git_commit', '?')}`",
    ]
    if "stages" in facts:
        stages = json.loads(facts["stages"])
        lines.append(
            f"- {len(stages)} stage(s) of training, {facts['total_epochs']} epochs in all:"
        )
        lines += [
            f"  {number}. `{stage['dataset']}`: {stage['epochs']} of {stage['planned']} epochs, "
            f"{stage['date']}, commit `{stage['commit']}`"
            + (f", kept as {stage['weights']}" if "weights" in stage else "")
            for number, stage in enumerate(stages, 1)
        ]
    images = [result for result in results if "models" not in result]
    videos = [result for result in results if "frames_per_clip" in result]  # eval-video's key
    sequences = [r for r in results if "models" in r and "frames_per_clip" not in r]
    if images:
        lines += ["", "## Test figures (`irtrack eval`)", "", accuracy_table(images)]
    for report in videos:
        lines += ["", "## Real-video figures (`irtrack eval-video`)", "", video_table(report)]
    for report in sequences:
        lines += ["", "## Sequence figures (`irtrack eval-sequences`)", "", sequence_table(report)]
    return "\n".join(lines) + "\n"


def _load(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in paths]


@report_app.command("accuracy")
def accuracy_command(
    eval_json: list[Path] = typer.Option(..., "--eval", help="irtrack eval --json output"),
    markdown: Path = typer.Option(..., help="write the table here"),
) -> None:
    """Accuracy table with the papers' figures beside ours."""
    table = accuracy_table(_load(eval_json))
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(table)
    typer.echo(table)


@report_app.command("card")
def card_command(
    weights: Path = typer.Option(..., help="a safetensors file written by irtrack train"),
    eval_json: list[Path] = typer.Option(
        ..., "--eval", help="irtrack eval, eval-video or eval-sequences --json output"
    ),
) -> None:
    """Write <weights>.md beside the weights file."""
    card = weights.with_suffix(".md")
    card.write_text(weights_card(weights, _load(eval_json)))
    typer.echo(f"wrote {card}")


@report_app.command("curves")
def curves_command(
    run: list[str] = typer.Option(
        ..., help="LABEL=PATH of a training log (log.jsonl); repeat for several runs"
    ),
    png: Path = typer.Option(..., help="write the plot here"),
    markdown: Path | None = typer.Option(None, help="also write the best-epoch table here"),
    title: str = typer.Option("", help="the plot's title"),
) -> None:
    """Learning curves: validation mIoU per epoch and per hour of training, one line per run."""
    runs = _labelled_paths(run, "log.jsonl")
    plot_learning_curves(runs, png, title)
    table = curves_table(runs)
    if markdown is not None:
        markdown.write_text(
            f"Written by `irtrack report curves` from the training logs; plot: `{png.name}`.\n\n"
            + table
        )
    typer.echo(table)


def _labelled_paths(entries: list[str], what: str) -> dict[str, Path]:
    """``LABEL=PATH`` options as {label: path}; a clear error for a malformed one or a missing file."""
    paths = {}
    for entry in entries:
        label, separator, path = entry.partition("=")
        if not separator or not Path(path).is_file():
            raise typer.BadParameter(f"--run {entry!r}: expected LABEL=PATH of a {what}")
        paths[label] = Path(path)
    return paths


@report_app.command("selections")
def selections_command(
    run: list[str] = typer.Option(
        ..., help="LABEL=PATH of a selection log (irtrack select's selection.jsonl); repeat"
    ),
    markdown: Path | None = typer.Option(None, help="also write the table here"),
) -> None:
    """Every snapshot irtrack select scored: val figures, target-free false alarms, verdict."""
    table = selection_table(_labelled_paths(run, "selection.jsonl"))
    if markdown is not None:
        markdown.write_text(
            "Written by `irtrack report selections` from the selection logs of `irtrack select` "
            "(val splits only; false alarms per target-free SIRST-v2 val frame at threshold 0.5, "
            "native size).\n\n" + table
        )
    typer.echo(table)


@report_app.command("headline")
def headline_command(
    eval_json: list[Path] = typer.Option(..., "--eval", help="irtrack eval --json outputs"),
    video: list[Path] = typer.Option([], help="irtrack eval-video --json outputs (repeat)"),
    speed: list[Path] = typer.Option([], help="irtrack bench onnx / streaming --json outputs"),
    markdown: Path = typer.Option(..., help="write the table here"),
) -> None:
    """The README's models table: role, training data, accuracy, real video, CPU speed."""
    table = headline_table(read_reports(eval_json), read_reports(video), read_reports(speed))
    markdown.write_text(table)
    typer.echo(table)


@report_app.command("pseudo-masks")
def pseudo_masks_command(
    png: Path = typer.Option(..., help="write the sheet of examples here"),
    split: str = typer.Option("train", help="clips of this drone-ir split"),
    clips: int = typer.Option(24, min=1, help="one example from each of the first N clips"),
    data_dir: Path = typer.Option(DATA_DIR, help="the shared datasets"),
) -> None:
    """Examples of the pseudo-masks training makes from drone-ir boxes (data.pseudo_masks)."""
    labelled = load_clips(split, data_dir, clips=clips)
    count = examples_png(labelled, png)
    typer.echo(f"wrote {count} examples to {png}")


def floor_figures(
    entry: dict[str, Any], weights: Path, data_dir: Path = DATA_DIR
) -> dict[str, float]:
    """The figures a floor guards, measured on the entry's slice: the first ``images`` test
    images of an image dataset, the fixed sequence clips cut to ``clip_length`` frames, or the
    first ``frames`` frames of the first ``clips`` drone-ir test clips (Pd and IDF1 in %)."""
    if entry["dataset"] == DRONE_IR:
        real_clips = load_clips("test", data_dir, clips=entry["clips"])
        return video_floor_figures(entry["model"], weights, real_clips, entry["frames"])
    if entry["dataset"] == SEQUENCE_DATA:
        clips = fixed_eval_set(length=entry["clip_length"], data_dir=data_dir)
        result = evaluate_on_clips(entry["model"], clips, weights)
    else:
        result = evaluate(
            data_dir / entry["dataset"], "test", entry["model"], weights, limit=entry["images"]
        )
    return {name: result[name] for name in FLOOR_METRICS}


def floor_dataset(dataset: str) -> str:
    """The test data a weights file's floor is measured on: its dataset, or for weights trained
    on several, the first image dataset among them; real clips for weights trained on them
    alone, the synthesized sequences otherwise."""
    parts = data_parts(dataset)
    return next(
        (part for part in parts if part in IMAGE_DATASETS),
        DRONE_IR if DRONE_IR in parts else SEQUENCE_DATA,
    )


def measure_floors(
    weights_dir: Path = WEIGHTS_DIR, data_dir: Path = DATA_DIR, images: int = FLOOR_SLICE
) -> dict[str, dict[str, Any]]:
    """Score every shipped weights file on a slice of the test data it was trained for; floors
    just under those figures guard the weights and the preprocessing."""
    floors: dict[str, dict[str, Any]] = {}
    for weights in sorted(weights_dir.glob("*.safetensors")):
        facts = _training_facts(str(weights))
        entry: dict[str, Any] = {
            "model": facts["model"],
            "dataset": floor_dataset(facts["dataset"]),
        }
        if entry["dataset"] == SEQUENCE_DATA:
            entry["clip_length"] = FLOOR_CLIP_LENGTH
        elif entry["dataset"] == DRONE_IR:
            entry.update(clips=FLOOR_VIDEO_CLIPS, frames=FLOOR_VIDEO_FRAMES)
        else:
            entry["images"] = images
        measured = floor_figures(entry, weights, data_dir)
        floors[weights.name] = {
            **entry,
            "weights_sha256": file_sha256(weights),
            "measured": measured,
            "floor": {name: value * FLOOR_MARGIN for name, value in measured.items()},
        }
    return floors


@report_app.command("floors")
def floors_command(
    out: Path = typer.Option(FLOORS_FILE, help="where the regression test reads the floors"),
) -> None:
    """Measure the shipped weights on a slice of their test split; write regression floors."""
    floors = measure_floors()
    out.write_text(json.dumps(floors, indent=2) + "\n")
    for name, entry in floors.items():
        typer.echo(f"{name}: measured {entry['measured']}, floor {entry['floor']}")
