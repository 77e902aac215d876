"""The client survives a server restart mid-stream: a real ``irtrack serve`` process is killed
and started again on the same port; the stream reconnects with the same id, goes on, and
reports the gap (frames lost, how long, that the server's stream state restarted)."""

import os
import subprocess
import sys
import time

import httpx
import pytest
from scale_out_support import REPO, free_port, wait_for
from service_support import noise_frame

from clients import Client, FrameEvent, Reconnected

pytestmark = pytest.mark.timeout(150)

FRAMES = 30
KILL_BEFORE = 15  # the server dies while the source reads this frame: the one before is in flight


def start_server(port):
    """``irtrack serve`` on ``port`` (a restart must reuse it); ServiceProcess picks its own."""
    env = {
        **os.environ,
        "IRTRACK_MODELS": "sd2net",
        "IRTRACK_WARMUP_SIZES": "64x48",
        "IRTRACK_TORCH_THREADS": "1",
        "IRTRACK_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-c", "from service.cli import app; app()", "serve"]
    return subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def ready(base_url, process):
    assert process.poll() is None, "the server process exited"
    try:
        return httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_stream_survives_a_server_restart_and_reports_the_gap():
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    servers = [start_server(port)]
    try:
        wait_for(lambda: ready(base_url, servers[0]), 90, "the server to be ready", 0.2)

        def camera():
            for seq in range(FRAMES):
                if seq == KILL_BEFORE:
                    servers[0].kill()  # a crash: no goodbye, no answers for frames in flight
                    servers[0].wait()
                    servers.append(start_server(port))
                yield noise_frame(48, 64, seed=seq)

        started = time.monotonic()
        with Client(base_url) as client:
            stream = client.stream("survivor", camera(), reconnect_timeout_s=90)
            events = list(stream)
            info = client.stream_info("survivor")
        elapsed = time.monotonic() - started
    finally:
        for process in servers:
            process.kill()
            process.wait()

    gaps = [e for e in events if isinstance(e, Reconnected)]
    frames = [e for e in events if isinstance(e, FrameEvent)]
    assert len(gaps) == 1, gaps
    gap = gaps[0]
    print(gap.describe(), f"(whole stream {elapsed:.1f} s)")
    assert [e.seq for e in frames] == list(range(FRAMES))  # every frame reported once, in order
    assert KILL_BEFORE - 1 in gap.lost and max(gap.lost) < KILL_BEFORE
    assert [e.seq for e in frames if e.status == "lost"] == gap.lost
    assert all(e.status == "result" for e in frames if e.seq not in gap.lost)
    assert gap.state_restarted is True  # the new server started the stream afresh
    assert gap.attempts > 1 and 0 < gap.outage_s < elapsed
    assert stream.stats.results + stream.stats.lost == FRAMES and stream.stats.reconnects == 1
    # The restarted server took the rest of the stream under the same id.
    assert info is not None and info.frames.processed == FRAMES - KILL_BEFORE
