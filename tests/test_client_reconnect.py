"""The client survives a server restart mid-stream: a real ``irtrack serve`` process is killed
and started again on the same port; the stream reconnects with the same id, goes on, and
reports the gap (frames lost, how long, that the server's stream state restarted)."""

import time

import pytest
from scale_out_support import ServiceProcess, free_port
from service_support import noise_frame

from clients import Client, FrameEvent, Reconnected

pytestmark = pytest.mark.timeout(150)

FRAMES = 30
KILL_BEFORE = 15  # the server dies while the source reads this frame: the one before is in flight
SERVER_ENV = {
    "IRTRACK_MODELS": "sd2net",
    "IRTRACK_WARMUP_SIZES": "64x48",
    "IRTRACK_TORCH_THREADS": "1",
    "IRTRACK_LOG_LEVEL": "warning",
}


def test_a_stream_survives_a_server_restart_and_reports_the_gap(tmp_path):
    port = free_port()  # a restart must reuse it
    servers: list[ServiceProcess] = []

    def start_server():
        log_path = tmp_path / f"serve-{len(servers)}.log"
        servers.append(ServiceProcess("serve", SERVER_ENV, log_path, port=port))

    try:
        start_server()
        servers[0].wait_ready()

        def camera():
            for seq in range(FRAMES):
                if seq == KILL_BEFORE:
                    servers[0].kill_hard()  # a crash: no goodbye, no answers for frames in flight
                    start_server()
                yield noise_frame(48, 64, seed=seq)

        started = time.monotonic()
        with Client(servers[0].base_url) as client:
            stream = client.stream("survivor", camera(), reconnect_timeout_s=90)
            events = list(stream)
            info = client.stream_info("survivor")
        elapsed = time.monotonic() - started
    finally:
        for server in servers:
            server.kill_hard()
            server.stop()

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
