"""Smoke tests of `irtrack bench streaming`, `bench onnx` and `bench service` at tiny sizes.

They check that each benchmark runs the real components end to end and reports rows whose
figures are consistent with each other (counts add up, speed-ups are ratios of the medians);
the figures themselves are the benchmarks' business, measured on a quiet machine.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.onnx_cpu import VARIANTS, run_onnx_benchmark
from bench.service_e2e import (
    Capacity,
    load_clip,
    markdown_report,
    run_service_benchmark,
    synthetic_clip,
)
from bench.streaming import bench_streaming
from data.paths import DATA_DIR


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """One torch thread: on a CI machine shared with other jobs, OpenMP threads that spin at
    barriers make two threads many times slower than one (see bench/service_e2e.py)."""
    torch.set_num_threads(1)


def test_bench_streaming_compares_the_ring_with_the_full_window(tmp_path: Path) -> None:
    json_path, markdown_path = tmp_path / "streaming.json", tmp_path / "streaming.md"

    bench_streaming(
        sizes=["32x32"],
        batches=[2],
        steps=2,
        warmup=1,
        json_path=json_path,
        markdown_path=markdown_path,
    )

    [row] = json.loads(json_path.read_text())["rows"]
    assert (row["height"], row["width"], row["batch"], row["steps"]) == (32, 32, 2, 2)
    assert row["cached_fps"] > 0 and row["recompute_fps"] > 0
    assert row["speedup"] == pytest.approx(row["recompute_ms"] / row["cached_ms"])
    assert row["cached_fps"] == pytest.approx(2 / (row["cached_ms"] / 1000))
    assert row["max_abs_diff"] < 1e-4  # the ring and the recomputed window agree
    assert "| 32 x 32 | 2 | 2 |" in markdown_path.read_text()


def test_bench_onnx_rows_per_variant() -> None:
    rows = run_onnx_benchmark(
        models=["sd2net"], sizes=[(32, 32)], batches=[2], repeats=1, row_budget_s=0.1
    )

    assert [row["variant"] for row in rows] == list(VARIANTS)
    for row in rows:
        assert (row["model"], row["batch"], row["height"], row["width"]) == ("sd2net", 2, 32, 32)
        assert row["runs"] == 1
        assert row["fps"] == pytest.approx(2 / (row["median_ms"] / 1000))
        assert row["max_abs_diff"] < 1e-4
    torch_row = rows[0]
    assert torch_row["speedup"] == 1.0 and torch_row["max_abs_diff"] == 0.0
    for row in rows[1:]:
        assert row["speedup"] == pytest.approx(torch_row["median_ms"] / row["median_ms"])


def _check_service_rows(report: dict[str, Any], backend: str, fps: list[float]) -> None:
    rows = report["rows"]
    assert [(row["backend"], row["fps"], row["streams"]) for row in rows] == [
        (backend, rate, 2) for rate in fps
    ]
    for row in rows:
        assert row["sent"] == row["delivered"] + row["dropped"] + row["errors"] + row["lost"]
        assert row["offered"] == row["sent"] + row["skipped"]
        assert row["errors"] == row["lost"] == row["undrained_streams"] == 0
        assert 0 < row["window_delivered"] <= row["delivered"] <= row["sent"]
        assert row["delivered_fps"] == pytest.approx(row["window_delivered"] / row["seconds"])
        assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"]
        assert 1 <= row["mean_batch"] <= 2  # two streams, one frame each in the engine
        assert row["cpu_cores"]["client"] >= 0
        if row["fps"] == 0:
            assert row["skipped"] == 0  # saturation: every frame waits for a credit
            assert row["overhead_ratio"] == pytest.approx(
                row["delivered_fps"] / report["raw"]["fps"]
            )
            assert row["overhead_ratio"] > 0
        else:
            assert row["overhead_ratio"] is None
    assert report["raw"]["fps"] == max(report["raw_before"]["fps"], report["raw_after"]["fps"])
    assert report["summary"][backend]["streams"] == 2
    assert f"| {backend} | 2 | 0 |" in markdown_report(report)


def _tiny_service_run(**overrides: Any) -> dict[str, Any]:
    """The service benchmark at toy scale: SD2Net on 32x32 synthesized frames, one thread."""
    settings: dict[str, Any] = {
        "model": "sd2net",
        "size": (32, 32),
        "streams": [2],
        "seconds": 1.5,
        "warmup_s": 0.5,
        "clip": synthetic_clip((32, 32), 20),
        "raw_repeats": 1,
        "threads": 1,
    }
    return run_service_benchmark(**{**settings, **overrides})


def test_bench_service_on_the_embedded_queue() -> None:
    report = _tiny_service_run(fps=[25.0, 0.0], backends=["embedded"])

    _check_service_rows(report, "embedded", [25.0, 0.0])
    assert set(report["rows"][0]["cpu_cores"]) == {"api", "client"}


def test_bench_service_through_redis_and_a_worker() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (./dev.sh installs it where apt is available)")
    report = _tiny_service_run(fps=[0.0], backends=["redis"])

    _check_service_rows(report, "redis", [0.0])
    assert set(report["rows"][0]["cpu_cores"]) == {"api", "worker", "redis", "client"}


def _fake_row(streams: int, p99_ms: float, dropped: int = 0) -> dict[str, object]:
    return {"streams": streams, "latency_p99_ms": p99_ms, "delivered_fps": 25.0 * streams,
            "dropped": dropped, "skipped": 0, "errors": 0, "lost": 0}  # fmt: skip


@pytest.mark.parametrize("sustained", [0, 1, 5, 37, 200])
def test_capacity_search_finds_the_largest_passing_count(sustained: int) -> None:
    """A service that meets the limit up to ``sustained`` streams (latency above it beyond,
    and drops far beyond): the search reports it to within 1/8, having probed few counts."""
    probed: list[int] = []

    def measure(fps: float, streams: int) -> dict[str, object]:
        probed.append(streams)
        if streams <= sustained:
            return _fake_row(streams, 10.0)
        return _fake_row(streams, 80.0, dropped=streams > 2 * sustained)

    found = Capacity(fps=25.0, p99_limit_ms=50.0, max_streams=256).search(measure)
    assert sustained * 7 / 8 <= found["streams"] <= sustained
    assert found["first_failing_streams"] is not None and found["first_failing_streams"] > sustained
    assert len(probed) <= 14


def test_capacity_search_stops_at_its_maximum() -> None:
    found = Capacity(max_streams=8).search(lambda fps, n: _fake_row(n, 1.0))
    assert (found["streams"], found["first_failing_streams"]) == (8, None)


def test_bench_service_capacity_search_runs_against_the_real_service() -> None:
    """The search's probes against a real service, the streams spread over client processes."""
    report = _tiny_service_run(
        streams=[],
        fps=[],
        backends=["embedded"],
        capacity=Capacity(fps=5.0, p99_limit_ms=5000.0, max_streams=2),
        client_processes=2,
    )
    found = report["capacity"]["embedded"]
    assert [row["streams"] for row in report["rows"]] == [1, 2]  # the probes are rows
    # one client process per stream, at most two; each reported the CPU it used
    assert [row["client_processes"] for row in report["rows"]] == [1, 2]
    assert all(row["cpu_cores"]["client"] > 0 for row in report["rows"])
    assert found["streams"] == 2 and found["latency_p99_ms"] < 5000.0
    assert all(row["delivered"] > 0 and row["dropped"] == 0 for row in report["rows"])
    assert "Capacity (embedded): 2 concurrent 5-fps streams" in markdown_report(report)


def test_clip_frames_cover_the_benchmark_size() -> None:
    if not (DATA_DIR / "videos").is_dir():
        pytest.skip(f"no clips at {DATA_DIR / 'videos'} (the shared folder beside the repository)")
    frames, source = load_clip((48, 80), count=3)

    assert source.endswith(".mp4")
    assert len(frames) == 3
    assert all(frame.shape == (48, 80) and frame.dtype.name == "uint8" for frame in frames)
