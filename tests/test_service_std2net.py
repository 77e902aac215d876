"""STD2Net through the service equals the model's own streaming path, frame for frame."""

import asyncio

import httpx
import numpy as np
import pytest
import torch
from service_support import exchange, noise_frame, running_server

from frames.postprocess import find_components, sigmoid
from models.registry import build_model, load_model
from models.std2net import StreamState, step_streams
from models.weights import file_sha256, save_weights
from service.codecs import decode_rle

pytestmark = pytest.mark.timeout(300)


def moving_target_clip(length: int, height: int, width: int) -> list[np.ndarray]:
    """A static cloudy background with a bright 3x3 target moving one pixel per frame."""
    background = noise_frame(height, width, seed=7)
    clip = []
    for t in range(length):
        frame = background.copy()
        frame[20:23, 10 + t : 13 + t] = 250
        clip.append(frame)
    return clip


def test_std2net_results_through_the_service_equal_step_streams(tmp_path):
    torch.manual_seed(123)
    save_weights(build_model("std2net"), tmp_path / "std2net.safetensors")
    model, _ = load_model("std2net", tmp_path / "std2net.safetensors")
    clip = moving_target_clip(8, 48, 64)  # the stream's start, then its ring buffer wrapping

    state = StreamState()
    probabilities = []
    with torch.inference_mode():
        for frame in clip:
            logits = step_streams(model, [state], torch.from_numpy(frame / np.float32(255))[None])
            probabilities.append(sigmoid(logits[0, 0].numpy()))
    # Untrained weights put most probabilities on one side of 0.5; a threshold inside the
    # distribution makes the comparison see many pixels and many components.
    threshold = float(np.median(probabilities[0]))

    with running_server(
        models=["std2net"],
        default_model="std2net",
        weights_dir=tmp_path,
        threshold=threshold,
        warmup_sizes=["64x48"],
    ) as server:
        url = f"{server.ws_url}/v1/streams/equivalence/ws?mask=rle"
        answers = asyncio.run(exchange(url, list(clip)))
        listed = httpx.get(f"{server.base_url}/v1/models").json()["models"][0]

    assert listed["weights_sha256"] == file_sha256(tmp_path / "std2net.safetensors")
    assert listed["weights_source"] == "file"
    for answer, prob in zip(answers, probabilities, strict=True):
        mask = decode_rle(answer["mask"])
        assert 0 < mask.sum() < mask.size
        np.testing.assert_array_equal(mask, prob > threshold)
        expected = find_components(prob, threshold)
        assert len(answer["targets"]) == len(expected) > 0
        for target, component in zip(answer["targets"], expected, strict=True):
            assert (target["centroid"]["x"], target["centroid"]["y"]) == pytest.approx(
                (component.centroid_x, component.centroid_y)
            )
            assert target["area"] == component.area
            assert target["score"] == pytest.approx(component.score, abs=1e-6)
