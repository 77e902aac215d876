"""``irtrack info`` and ``irtrack export``: the registered detectors and their ONNX export."""

from pathlib import Path

import torch
import typer

from models.export import export_onnx, onnx_max_difference
from models.registry import MODEL_INFO, build_model, load_model


def export(
    model: str = typer.Option("sd2net", help="sd2net or lrrnet"),
    out: Path = typer.Option(..., help="ONNX file to write"),
    weights: Path | None = typer.Option(None, help="safetensors weights (default: shipped)"),
    height: int = 256,
    width: int = 256,
) -> None:
    """Export a single-frame detector to ONNX and check it against PyTorch with ONNX Runtime."""
    detector, _ = load_model(model, weights)
    path = export_onnx(detector, out, height, width)
    difference = onnx_max_difference(detector, path, torch.rand(2, 1, height, width))
    typer.echo(f"wrote {path}; max |onnxruntime - torch| = {difference:.2e}")


def info(
    markdown: Path | None = typer.Option(None, help="also write the table as markdown here"),
) -> None:
    """List the registered detectors with parameter counts, input layout and shipped weights."""
    lines = [
        "| model | parameters | frames per window | size multiple | shipped weights |",
        "|---|---:|---:|---:|---|",
    ]
    for name, entry in MODEL_INFO.items():
        params = sum(p.numel() for p in build_model(name).parameters())
        weights = entry.default_weights_path
        lines.append(
            f"| {name} | {params:,d} | {entry.frames} | {entry.size_multiple} | "
            f"{weights.name if weights else 'none yet (random init)'} |"
        )
    table = "\n".join(lines) + "\n"
    typer.echo(table, nl=False)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(f"Written by `irtrack info --markdown`.\n\n{table}")
