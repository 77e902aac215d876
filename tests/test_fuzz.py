"""The fuzz part of the reliability suite, short: the decoder and the Redis wire format under
hypothesis, and a few hundred generated requests and WebSocket messages against a real service
(``irtrack bench fuzz`` sends ten thousand and more; docs/reliability.md)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import (
    decoder_property,
    frame_bodies,
    run_fuzz,
    wire_entries,
    wire_property,
)
from service.codecs import FrameLimits, RawLayout

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def _ieee_floats() -> None:
    """hypothesis (and schemathesis through it) generate subnormal floats, which it refuses to do
    while this thread flushes them to zero (torch.set_flush_denormal, as the workers and some
    benchmarks set it)."""
    torch.set_flush_denormal(False)


LIMITS = FrameLimits(max_body_bytes=1 << 20, max_frame_pixels=128 * 128)
raw_layouts = st.one_of(
    st.none(),
    st.builds(
        RawLayout,
        width=st.integers(1, 300),
        height=st.integers(1, 300),
        dtype=st.sampled_from(["uint8", "uint16"]),
    ),
)


@given(body=frame_bodies(), raw=raw_layouts)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_decoder_answers_any_body_with_a_frame_within_limits_or_a_4xx(body, raw):
    decoder_property(body, raw, LIMITS)


@given(fields=wire_entries())
@settings(max_examples=300, deadline=None)
def test_any_redis_entry_decodes_or_is_refused_the_way_the_pump_expects(fields):
    wire_property(fields)


def test_generated_requests_and_messages_get_no_5xx_and_the_service_stays_up():
    report = run_fuzz(requests=160, conversations_wanted=30)
    assert report["server_errors"] == []
    assert report["requests"] >= 150 and report["ws_messages"] >= 30
    assert report["health_checks"] > 0 and report["health_failures"] == 0
    assert report["service_alive"] and report["counters_balance"]
    assert not [status for status in report["statuses"] if status.startswith("5")]
