"""``irtrack bench``: the benchmarks, each printing a table and writing JSON and markdown."""

import typer

from bench.chaos import bench_chaos
from bench.fuzz import bench_fuzz
from bench.memory import bench_memory
from bench.model_throughput import bench_models
from bench.onnx_cpu import bench_onnx
from bench.postprocess import bench_postprocess
from bench.service_e2e import bench_service
from bench.soak import bench_soak
from bench.streaming import bench_streaming
from bench.training import bench_training

bench_app = typer.Typer(help="Benchmarks that print tables and write JSON.", no_args_is_help=True)
bench_app.command("models")(bench_models)
bench_app.command("streaming")(bench_streaming)
bench_app.command("service")(bench_service)
bench_app.command("onnx")(bench_onnx)
bench_app.command("postprocess")(bench_postprocess)
bench_app.command("memory")(bench_memory)
bench_app.command("chaos")(bench_chaos)
bench_app.command("soak")(bench_soak)
bench_app.command("fuzz")(bench_fuzz)
bench_app.command("training")(bench_training)
