"""The ``irtrack`` command line: one entry point whose subcommands live beside what they run."""

from pathlib import Path

import torch
import typer

from bench.model_throughput import bench_models
from bench.onnx_cpu import bench_onnx
from bench.postprocess import bench_postprocess
from bench.service_e2e import bench_service
from bench.streaming import bench_streaming
from clients.stream_cli import stream_command
from models import MODEL_INFO, build_model, load_model
from models.evaluate import eval_command
from models.export import export_onnx, onnx_max_difference
from models.report import report_app
from models.sequence_eval import eval_sequences
from models.training import train_command
from service.demo import demo_command
from service.server import serve_command
from service.track_eval import eval_tracks
from service.worker_process import worker_command

app = typer.Typer(
    help="Real-time infrared small-target detection and tracking.", no_args_is_help=True
)
bench_app = typer.Typer(help="Benchmarks that print tables and write JSON.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(report_app, name="report")
bench_app.command("models")(bench_models)
bench_app.command("streaming")(bench_streaming)
bench_app.command("service")(bench_service)
bench_app.command("onnx")(bench_onnx)
bench_app.command("postprocess")(bench_postprocess)
app.command("eval")(eval_command)
app.command("eval-sequences")(eval_sequences)
app.command("train")(train_command)
app.command("eval-tracks")(eval_tracks)
app.command("serve")(serve_command)
app.command("worker")(worker_command)
app.command("demo")(demo_command)
app.command("stream")(stream_command)


@app.command()
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


@app.command()
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
