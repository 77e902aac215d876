"""The soak part of the reliability suite, short: live streams through the embedded queue and
through Redis, every frame accounted for (``irtrack bench soak`` runs 16 streams for 30 minutes
per backend and measures memory and latency; docs/reliability.md)."""

from __future__ import annotations

import shutil

import pytest

from bench.soak import soak_backend

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_every_frame_of_a_short_soak_is_answered_and_counted(backend):
    if backend == "redis" and shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (./dev.sh installs it where apt is available)")
    row = soak_backend(
        backend,
        streams=4,
        seconds=10.0,
        warmup_s=3.0,
        fps=4.0,
        size=(64, 64),
        model="sd2net",
        threads=1,
        sample_s=2.0,
    )
    assert row["sent"] >= 4 * 4 * 10  # every stream sent at its pace
    assert row["unaccounted"] == 0 and row["stream_failures"] == []
    assert row["results"] + row["dropped"] + row["errors"] == row["sent"]
    assert row["errors"] == 0
    assert row["server_received"] == row["sent"]
    assert row["counters_balance"]
    assert len(row["samples"]) >= 4 and all(r > 0 for r in row["rss_end_bytes"].values())
