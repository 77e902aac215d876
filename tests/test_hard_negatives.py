"""Hard-negative mining: the false alarms a run's starting weights report, and the crops on them."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_training import needs_data, tiny_run

from data.datasets import InMemorySamples
from models.registry import build_model
from models.weights import save_weights
from training.config import resolve
from training.hard_negatives import HARD_NEGATIVES, MAX_POINTS, false_alarms, mine
from training.loop import train


def test_false_alarms_are_the_confident_components_away_from_the_targets():
    prob = np.zeros((100, 200), np.float32)
    prob[10:13, 20:23] = 0.7  # a false alarm
    prob[50, 150] = 0.95  # a more confident one
    prob[80:82, 100:102] = 0.9  # touches the target's grown mask: part of the target
    mask = np.zeros((100, 200), bool)
    mask[84, 100] = True  # 2 px below the component: within MASK_MARGIN
    assert false_alarms(prob, mask) == [(0.5, 0.75), (0.11, 0.105)]


def test_at_most_max_points_are_kept_per_sample():
    prob = np.zeros((64, 64), np.float32)
    prob[::4, ::4] = np.linspace(0.6, 0.99, 256).reshape(16, 16)
    found = false_alarms(prob, np.zeros((64, 64), bool))
    assert len(found) == MAX_POINTS and found[0] == (60 / 64, 60 / 64)  # the most confident


def samples_with_a_hot_spot(count: int) -> InMemorySamples:
    frame = np.full((128, 128), 40, np.uint8)
    frame[100:103, 20:23] = 250
    samples = [(f"frame-{i}", frame, np.zeros((128, 128), bool)) for i in range(count)]
    return InMemorySamples(samples, crop=32, seed=1)


def test_crops_centre_on_a_mined_false_alarm_in_the_asked_share_of_draws():
    dataset = samples_with_a_hot_spot(200)
    dataset.hard_negatives = {f"frame-{i}": [(101 / 128, 21 / 128)] for i in range(200)}
    dataset.hard_negative_fraction = 0.5
    with_spot = sum(bool((dataset[i]["image"] > 0.9).any()) for i in range(200))
    # a uniform 32 px crop of a 128 px frame holds the 3 px spot in ~4% of draws
    assert 80 <= with_spot <= 125
    dataset.hard_negative_fraction = 0.0
    assert sum(bool((dataset[i]["image"] > 0.9).any()) for i in range(200)) < 25


def test_mining_runs_the_model_once_per_name():
    calls = []

    class HotSpotDetector(torch.nn.Module):
        size_multiple = 1

        def forward(self, x):
            calls.append(x.shape)
            return (x - 0.5) * 20  # logits: the hot spot only

    parts: torch.utils.data.ConcatDataset = torch.utils.data.ConcatDataset(
        [samples_with_a_hot_spot(3), samples_with_a_hot_spot(3)]
    )
    points = mine(HotSpotDetector(), parts, torch.device("cpu"))
    assert len(calls) == 3
    assert points == {f"frame-{i}": [(101 / 128, 21 / 128)] for i in range(3)}


def test_hard_negatives_need_crops_and_starting_weights(tmp_path):
    with pytest.raises(ValueError, match="needs --crop"):
        resolve(tiny_run(tmp_path, hard_negatives=0.3, init_weights=tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="--init-weights"):
        resolve(tiny_run(tmp_path, hard_negatives=0.3, crop=32))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        resolve(tiny_run(tmp_path, hard_negatives=1.0, crop=32))


@needs_data
def test_a_run_mines_once_and_a_resume_reads_the_same_points_back(tmp_path):
    init = tmp_path / "init.safetensors"
    torch.manual_seed(0)
    save_weights(build_model("sd2net"), init)
    run = tiny_run(tmp_path / "run", data="sirst-v2", crop=32, hard_negatives=0.5, val_every=0)
    assert not train(replace(run, init_weights=init, stop_after_iterations=1)).finished
    stored = tmp_path / "run" / HARD_NEGATIVES
    assert stored.exists()
    stored.write_text(json.dumps({"not-a-sample": [[0.5, 0.5]]}))  # a resume must not mine again
    assert train(replace(run, resume=True)).finished
    assert json.loads(stored.read_text()) == {"not-a-sample": [[0.5, 0.5]]}
