"""Memory bounded by the limits: the memory budget admits frames by what their model call and
their stream's state will take (the padded size and the model), batches are cut to fit it, the
estimates bound what the models really take, and memory goes back after a large call and when
STD2Net streams end (measured on a real ``irtrack serve`` process, /proc/<pid>/status)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from scale_out_support import REPO, ServiceProcess, wait_for
from service_support import exchange, metric_value, noise_frame, running_server

from bench.process_memory import MiB, peak_rss_bytes, reset_peak_rss, rss_bytes
from service.transport.inference import ModelCard

pytestmark = pytest.mark.timeout(300)


def models_of(base_url: str) -> tuple[dict[str, ModelCard], int]:
    listing = httpx.get(f"{base_url}/v1/models").json()
    cards = {m["name"]: ModelCard.from_listing(m) for m in listing["models"]}
    return cards, listing["memory_budget_bytes"]


def raw_detect(base_url: str, height: int, width: int) -> httpx.Response:
    body = noise_frame(max(height, 8), max(width, 8), 0)[:height, :width].tobytes()
    return httpx.post(
        f"{base_url}/v1/detect", content=body, params={"width": width, "height": height}, timeout=60
    )


def test_frames_are_admitted_by_the_memory_their_padded_size_takes():
    """A 2048x2048 frame took a server from 1.2 to 8.6 GiB; a 65536x1 one was padded to 16 rows.
    Now a frame is refused (413) when its call would exceed the budget, its padding counted: a
    thin frame with the pixels of an admitted square one is refused."""
    with running_server(memory_budget_bytes=64 * MiB) as server:
        cards, budget = models_of(server.base_url)
        sd2net = cards["sd2net"]
        assert budget == 64 * MiB
        square, thin, large = (128, 128), (1, 128 * 128), (512, 512)
        assert sd2net.call_bytes(square) <= budget < sd2net.call_bytes(thin)
        assert raw_detect(server.base_url, *square).status_code == 200
        for height, width in (thin, large):
            refused = raw_detect(server.base_url, height, width)
            assert refused.status_code == 413, refused.text
            assert refused.json()["error"]["code"] == "frame_too_large"
            assert "IRTRACK_MEMORY_BUDGET_BYTES" in refused.json()["error"]["message"]


def test_streams_keep_state_within_the_budget_and_give_room_back_when_deleted():
    """STD2Net keeps a window per stream: the stream whose window would not fit beside the
    others' is refused with 429 memory_full until one is deleted."""
    size = (64, 64)
    with running_server(
        models=["std2net"], default_model="std2net", memory_budget_bytes=40 * MiB
    ) as server:
        cards, budget = models_of(server.base_url)
        card = cards["std2net"]
        fitting = (budget - card.call_bytes(size)) // card.state_bytes(size)  # windows that fit
        assert 1 <= fitting < 20

        def send(stream: str) -> httpx.Response:
            return httpx.post(
                f"{server.base_url}/v1/streams/{stream}/frames",
                content=noise_frame(*size, 0).tobytes(),
                params={"width": size[1], "height": size[0], "model": "std2net"},
                timeout=60,
            )

        assert [send(f"s{n}").status_code for n in range(fitting)] == [200] * fitting
        refused = send("one-too-many")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "memory_full"
        assert refused.headers["Retry-After"] == "1"
        assert send("s0").status_code == 200  # the streams already open go on
        assert httpx.delete(f"{server.base_url}/v1/streams/s1").status_code == 204
        assert send("one-too-many").status_code == 200


def test_batches_are_cut_to_what_fits_the_budget():
    with running_server(memory_budget_bytes=24 * MiB, max_wait_ms=300.0) as server:
        cards, budget = models_of(server.base_url)
        per_call = budget // cards["sd2net"].call_bytes((64, 64))
        assert 1 <= per_call < 6

        async def six_at_once():
            frames = [noise_frame(64, 64, seed) for seed in range(6)]
            return await asyncio.gather(
                *(
                    exchange(f"{server.ws_url}/v1/streams/cut-{n}/ws", [frame])
                    for n, frame in enumerate(frames)
                )
            )

        answers = asyncio.run(six_at_once())
        assert [a[0]["type"] for a in answers] == ["result"] * 6
        bucket = f'irtrack_batch_size_bucket{{le="{per_call:.1f}",model="sd2net"}}'
        assert metric_value(server.base_url, bucket) == metric_value(
            server.base_url, 'irtrack_batch_size_count{model="sd2net"}'
        )  # no call took more frames than fit


ESTIMATE_CHECK = """
import json, sys
import numpy as np, torch
from bench.process_memory import peak_rss_growth
from models.std2net import StreamState
from service.settings import Settings
from service.worker.runtime import ModelRuntime, malloc_trim

torch.set_flush_denormal(True)
height, width = 256, 256
measured = {}
for model, backend in json.loads(sys.argv[1]):
    settings = Settings(models=[model], default_model=model, inference_backend=backend,
                        warmup_sizes=["32x32"], torch_threads=1)
    runtime = ModelRuntime(settings)
    runtime.load()
    runtime.warm_up()
    frame = np.random.default_rng(0).random((height, width), dtype=np.float32)
    states = [StreamState()] if runtime.models[model].streaming else None
    malloc_trim()
    with peak_rss_growth() as memory:
        runtime.infer(model, [frame], states)
    measured[f"{model}/{backend}"] = {
        "peak_growth": memory["peak"] - memory["before"],
        "estimate": runtime.models[model].call_bytes((height, width)),
    }
    del runtime, states
    malloc_trim()
print(json.dumps(measured))
"""


def test_the_memory_estimates_bound_what_the_models_take():
    """The per-pixel figures of the registry (measured by `irtrack bench memory`) must not be
    below what a call really takes, on either backend: the budget would then let too much in."""
    runs = [
        ["sd2net", "onnxruntime"],
        ["sd2net", "torch"],
        ["lrrnet", "onnxruntime"],
        ["lrrnet", "torch"],
        ["std2net", "torch"],
    ]
    done = subprocess.run(
        [sys.executable, "-c", ESTIMATE_CHECK, json.dumps(runs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    for name, figures in measured.items():
        assert figures["peak_growth"] > figures["estimate"] / 4, (name, figures)  # it ran
        assert figures["peak_growth"] <= figures["estimate"], (name, figures)


def test_memory_goes_back_after_a_large_frame_and_when_streams_end(tmp_path: Path):
    """A real ``irtrack serve``: RSS returns within 10% of its warm level after a frame far
    larger than the steady ones (ONNX Runtime's arena kept its peak), and after STD2Net streams
    are deleted (their windows stayed allocated)."""
    env = {
        "IRTRACK_MODELS": "sd2net,std2net",
        "IRTRACK_WARMUP_SIZES": "64x64",
        "IRTRACK_TORCH_THREADS": "1",
        "IRTRACK_MEMORY_BUDGET_BYTES": str(2 << 30),
        "IRTRACK_LOG_LEVEL": "warning",
    }
    service = ServiceProcess("serve", env, tmp_path / "serve.log")
    try:
        service.wait_ready()
        url = service.base_url
        for _ in range(3):
            assert raw_detect(url, 64, 64).status_code == 200
        time.sleep(1.0)
        warm = rss_bytes(service.pid)
        reset_peak_rss(service.pid)
        assert raw_detect(url, 512, 640).status_code == 200
        peak = peak_rss_bytes(service.pid)
        assert peak - warm > 200 * MiB  # the large call did take its memory
        wait_for(lambda: rss_bytes(service.pid) < warm * 1.10, 10, "RSS back within 10%")

        before_streams = rss_bytes(service.pid)
        streams = [f"window-{n}" for n in range(6)]
        frames = [noise_frame(128, 128, seed) for seed in range(5)]  # five distinct features

        async def fill_windows():
            await asyncio.gather(
                *(
                    exchange(f"{service.ws_url}/v1/streams/{s}/ws?model=std2net", frames)
                    for s in streams
                )
            )

        asyncio.run(fill_windows())
        time.sleep(1.0)
        with_windows = rss_bytes(service.pid)
        windows = 6 * 5 * 32 * 128 * 128 * 4  # streams x slots x channels x pixels x float32
        for stream in streams:
            assert httpx.delete(f"{url}/v1/streams/{stream}").status_code == 204

        def given_back() -> bool:
            after = rss_bytes(service.pid)
            return with_windows - after > windows / 2 and after - before_streams < windows / 5

        wait_for(given_back, 10, "the windows' memory back")
    finally:
        service.stop()
