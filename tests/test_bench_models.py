"""Smoke test of `irtrack bench models`: one tiny row, the JSON and markdown it writes."""

import json
from pathlib import Path

import pytest
import torch

from bench.model_throughput import STREAMING, bench_models, run_model_benchmark

ROW_FIELDS = {
    "model",
    "device",
    "dtype",
    "mode",
    "batch",
    "height",
    "width",
    "runs",
    "median_ms",
    "fps",
}


def test_bench_models_writes_json_rows_and_markdown(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    json_path, markdown_path = tmp_path / "bench.json", tmp_path / "bench.md"

    bench_models(
        models=["sd2net"],
        sizes=["32x32"],
        batches=[2],
        repeats=1,
        warmup=1,
        device="cpu",
        json_path=json_path,
        markdown_path=markdown_path,
    )

    report = json.loads(json_path.read_text())
    assert {"date", "cpu", "torch_threads", "torch"} <= report["machine"].keys()
    [row] = report["rows"]
    assert row.keys() >= ROW_FIELDS
    assert (row["model"], row["batch"], row["height"], row["width"]) == ("sd2net", 2, 32, 32)
    assert row["runs"] == 1
    assert row["fps"] > 0
    assert row["fps"] == pytest.approx(2 / (row["median_ms"] / 1000))
    assert "| sd2net | cpu | fp32 | eager | 2 | 32 x 32 |" in markdown_path.read_text()


def test_bench_models_times_each_dtype_and_mode() -> None:
    rows = run_model_benchmark(
        models=["sd2net", STREAMING],
        sizes=[(32, 32)],
        batches=[1],
        repeats=1,
        dtypes=["fp32", "bf16"],
        modes=["eager", "channels-last"],
    )
    assert [(r["model"], r["dtype"], r["mode"]) for r in rows] == [
        (model, dtype, mode)
        for model in ("sd2net", STREAMING)
        for dtype in ("fp32", "bf16")
        for mode in ("eager", "channels-last")
    ]
    assert all(row["fps"] > 0 for row in rows)


def test_bench_models_refuses_cuda_graphs_without_cuda_and_unknown_modes() -> None:
    with pytest.raises(ValueError, match="cuda-graph needs --device cuda"):
        run_model_benchmark(models=["sd2net"], sizes=[(32, 32)], modes=["cuda-graph"])
    with pytest.raises(ValueError, match="unknown dtype or mode"):
        run_model_benchmark(models=["sd2net"], sizes=[(32, 32)], dtypes=["fp8"])
