"""STD2Net: the cached streaming path is the full-window forward pass, for interleaved streams."""

import pytest
import torch
from torch import nn

from models.padding import run_padded
from models.std2net import STD2Net, StreamState, sliding_windows, step_streams

# SD2Net backbone with a 32-channel tail RSU-7 and no head (262,442 - 12,834 + 21,216 = 270,824)
# + TD2M head (std2net.md §6: 1,713,473 less the reference's unused BatchNorm3d(32), 64) + slot BN 10.
STATED_PARAMETER_COUNT = 270_824 + 1_713_409 + 10


@pytest.fixture(scope="module")
def model() -> STD2Net:
    """Eval-mode STD2Net whose BatchNorm statistics are not the identity, so slot affines matter."""
    torch.manual_seed(3)
    net = STD2Net()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm3d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            nn.init.normal_(module.weight, 1.0, 0.1)
            nn.init.normal_(module.bias, 0.0, 0.1)
    return net.eval()


def test_parameter_count_is_the_stated_one() -> None:
    assert sum(p.numel() for p in STD2Net().parameters()) == STATED_PARAMETER_COUNT


def test_cached_streaming_equals_full_window_forward_for_interleaved_streams(
    model: STD2Net,
) -> None:
    """models.md: >= 12 frames from a stream's start, two streams sharing every backbone batch.
    The size is not a multiple of 16, so the padding helper is on the path too."""
    frames, height, width = 12, 30, 45
    generator = torch.Generator().manual_seed(7)
    sequences = [torch.rand(frames, height, width, generator=generator) for _ in range(2)]
    states = [StreamState(), StreamState()]
    with torch.inference_mode():
        reference = [run_padded(model, sliding_windows(seq)) for seq in sequences]
        streamed = torch.stack(
            [
                step_streams(model, states, torch.stack([s[t] for s in sequences]))
                for t in range(frames)
            ]
        )  # (T, 2, 1, H, W)
    for stream, expected in enumerate(reference):
        assert (streamed[:, stream] - expected).abs().max().item() < 1e-4
    # The windows really carry temporal information: the current frame repeated 5 times differs.
    with torch.inference_mode():
        static = run_padded(model, sequences[0][:, None].expand(-1, 5, -1, -1).contiguous())
    assert (static - reference[0]).abs().max().item() > 1e-3


def test_stream_refuses_frames_of_another_size_until_reset(model: STD2Net) -> None:
    state = StreamState()
    with torch.inference_mode():
        step_streams(model, [state], torch.rand(1, 32, 32))
        with pytest.raises(ValueError, match="reset"):
            step_streams(model, [state], torch.rand(1, 48, 32))
        state.reset()
        logits = step_streams(model, [state], torch.rand(1, 48, 32))
    assert logits.shape == (1, 1, 48, 32)
    assert state.frame_count_cached == model.window


def test_sliding_windows_repeat_the_first_frame_at_the_start() -> None:
    sequence = torch.arange(7.0)[:, None, None].expand(7, 2, 2)
    windows = sliding_windows(sequence, window=5)
    assert windows[:, :, 0, 0].tolist()[:3] == [[0] * 5, [0, 0, 0, 0, 1], [0, 0, 0, 1, 2]]
    assert windows[6, :, 0, 0].tolist() == [2, 3, 4, 5, 6]
