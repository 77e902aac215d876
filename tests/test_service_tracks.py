"""Track ids over the WebSocket with the shipped weights: a real target moving over a real
background (synthesized from test-split images) keeps one confirmed id from frame to frame, and
the stream's state lists that track."""

from __future__ import annotations

import asyncio
import math

import httpx
import numpy as np
import pytest
from conftest import require_path
from service_support import exchange, running_server

from data.paths import DATA_DIR
from data.synthesis import SequenceConfig, SequenceSource, synthesize_sequence
from evaluation.metrics import MATCH_DISTANCE
from frames.tracking import TrackerSettings
from models.registry import model_info

pytestmark = pytest.mark.timeout(300)

CLIP = SequenceConfig(
    length=14,
    size=(96, 128),
    n_targets=(1, 1),
    speeds=(0.8, 1.2),
    contrast=(1.2, 1.3),
    noise_sigma=(0.5, 0.5),
    fixed_pattern_sigma=(0.0, 0.0),
    jitter=(0.0, 0.0),
    pan_speed=(0.0, 0.0),
    fade_prob=0.0,
    clutter_count=(0, 0),
    seed=5,
)


@pytest.fixture(scope="module")
def test_source() -> SequenceSource:
    data_dir = require_path(DATA_DIR, "infrared datasets (shared/data)")
    return SequenceSource.from_split("test", data_dir, datasets=("sirst-v2",))


@pytest.mark.parametrize("model", ["sd2net", "std2net"])
def test_websocket_results_carry_a_stable_track_id_for_a_moving_target(
    model: str, test_source: SequenceSource
) -> None:
    weights = model_info(model).default_weights_path
    assert weights is not None and weights.is_file(), f"{model}: no shipped weights"
    clip = synthesize_sequence(CLIP, test_source, name="walker")
    confirm_hits = TrackerSettings().confirm_hits

    with running_server(models=[model], default_model=model, warmup_sizes=["128x96"]) as server:
        url = f"{server.ws_url}/v1/streams/walker/ws"
        answers = asyncio.run(exchange(url, list(clip.frames)))
        state = httpx.get(f"{server.base_url}/v1/streams/walker").json()

    ids_on_target = []
    for answer, truth in zip(answers, clip.targets, strict=True):
        (target,) = truth
        near = [
            t
            for t in answer["targets"]
            if math.dist((t["centroid"]["x"], t["centroid"]["y"]), (target.x, target.y))
            < MATCH_DISTANCE
        ]
        ids_on_target.append(near[0]["track_id"] if near else None)
    confirmed = [track_id for track_id in ids_on_target if track_id is not None]
    # detected in most frames after the track's confirmation, always under the same id
    assert len(confirmed) >= 0.75 * (len(clip.frames) - confirm_hits + 1), ids_on_target
    assert len(set(confirmed)) == 1, ids_on_target
    assert confirmed[0] in {track["track_id"] for track in state["tracks"]}
    assert all(answer["model"] == model for answer in answers)
    assert np.all(np.diff([answer["seq"] for answer in answers]) == 1)
