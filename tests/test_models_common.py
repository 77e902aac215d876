"""What every detector shares: the registry, sizes and padding, dtypes, weights files, ONNX export."""

from pathlib import Path

import pytest
import torch

from frames.sizes import padded_size
from models import MODEL_NAMES
from models.export import export_onnx, onnx_max_difference
from models.padding import crop_to, pad_to_multiple, run_padded
from models.registry import MODEL_INFO, build_model, load_model
from models.weights import (
    file_sha256,
    initialize_from,
    load_weights,
    read_metadata,
    save_weights,
)


def test_the_torch_free_model_names_are_the_registrys():
    assert tuple(MODEL_INFO) == MODEL_NAMES


@pytest.mark.parametrize("name", list(MODEL_INFO))
def test_models_take_any_frame_size_and_batches_through_the_padding_helper(name: str) -> None:
    model = build_model(name).eval()
    frames = torch.rand(2, model.frames, 72, 120)  # neither side a multiple of 16
    with torch.inference_mode():
        logits = run_padded(model, frames)
    assert logits.shape == (2, 1, 72, 120)
    assert torch.isfinite(logits).all()
    # batch items are independent: the second frame alone gives the same logits
    with torch.inference_mode():
        alone = run_padded(model, frames[1:])
    assert (alone - logits[1:]).abs().max().item() < 1e-4


def test_sd2net_runs_on_a_thermal_camera_frame_size() -> None:
    with torch.inference_mode():
        logits = build_model("sd2net").eval()(torch.rand(2, 1, 512, 640))
    assert logits.shape == (2, 1, 512, 640)


def test_padding_replicates_edges_and_crop_restores_the_frame() -> None:
    frames = torch.rand(1, 1, 33, 50)
    padded = pad_to_multiple(frames, 16)
    assert padded.shape[-2:] == padded_size(33, 50, 16) == (48, 64)
    assert torch.equal(padded[..., 40, :50], frames[..., 32, :])  # last row repeated downwards
    assert torch.equal(padded[..., :33, 60], frames[..., :, 49])  # last column repeated rightwards
    assert torch.equal(crop_to(padded, (33, 50)), frames)
    assert pad_to_multiple(padded, 16) is padded


@pytest.mark.parametrize("name", list(MODEL_INFO))
def test_models_run_in_half_precision_without_nan(name: str) -> None:
    """bf16 on CPU stands in for the GPU's fp16/bf16 path; the first STD2Net window has all-zero
    temporal bases, which once produced NaN in half precision."""
    model = build_model(name).eval()
    frames = torch.rand(1, model.frames, 32, 48)
    with torch.inference_mode():
        reference = model(frames)
        half = model.to(torch.bfloat16)(frames.to(torch.bfloat16)).float()
        first_window = model(frames[:, :1].expand(-1, model.frames, -1, -1).to(torch.bfloat16))
    assert torch.isfinite(first_window).all()
    assert (half - reference).abs().max().item() < 0.05 * reference.abs().max().item() + 0.05


def test_weights_round_trip_through_safetensors_with_metadata(tmp_path: Path) -> None:
    source = build_model("sd2net").eval()
    path = tmp_path / "sd2net.safetensors"
    save_weights(source, path, {"dataset": "unit-test", "epochs": "0"})
    restored, loaded_from = load_model("sd2net", path)
    frames = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        assert torch.equal(source(frames), restored(frames))
    assert loaded_from == path
    assert read_metadata(path) == {"dataset": "unit-test", "epochs": "0"}
    assert len(file_sha256(path)) == 64


def test_loading_never_unpickles(tmp_path: Path) -> None:
    pickled = tmp_path / "weights.pt"
    torch.save(build_model("sd2net").state_dict(), pickled)
    with pytest.raises(Exception, match=r"(?i)header|safetensors|deserializ"):
        load_weights(build_model("sd2net"), pickled)


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="sd2net"):
        build_model("yolo")


@pytest.mark.parametrize("name", ["sd2net", "lrrnet"])
def test_onnx_export_matches_pytorch(name: str, tmp_path: Path) -> None:
    model = build_model(name).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", height=64, width=96)
    # another batch size and frame size than the export example: the axes are dynamic
    assert onnx_max_difference(model, path, torch.rand(2, 1, 96, 160)) < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", list(MODEL_INFO))
def test_models_run_on_gpu_in_fp16(name: str) -> None:
    model = build_model(name).eval()
    frames = torch.rand(2, model.frames, 64, 96)
    with torch.inference_mode():
        reference = model(frames)
        half = model.cuda().half()(frames.cuda().half()).float().cpu()
    assert torch.isfinite(half).all()
    assert (half - reference).abs().max().item() < 0.05 * reference.abs().max().item() + 0.05


def test_std2net_backbone_initialises_from_sd2net_weights(tmp_path: Path) -> None:
    sd2net = build_model("sd2net")
    path = tmp_path / "sd2net.safetensors"
    save_weights(sd2net, path)
    std2net = build_model("std2net")
    initialised = initialize_from(std2net, path)
    assert initialised and all(name.startswith("backbone.") for name in initialised)
    assert torch.equal(std2net.state_dict()["backbone.stem.input_conv.conv.weight"],
                       sd2net.state_dict()["stem.input_conv.conv.weight"])  # fmt: skip
    # the 32-channel tail differs in shape from SD2Net's 8-channel one and is left alone
    assert "backbone.tail.decoder.5.conv.weight" not in initialised
