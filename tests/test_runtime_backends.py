"""The model runtime's backends: ONNX Runtime serves the single-frame models on a CPU in float32
with the same logits as torch (within 1e-4) and, with the shipped weights, the same detections; STD2Net stays in torch;
asking for ONNX Runtime where it cannot run fails at start-up."""

from __future__ import annotations

import copy
import tempfile

import numpy as np
import pytest
import torch

from bench.service_e2e import synthetic_clip
from evaluation.metrics import DEFAULT_THRESHOLD
from frames.postprocess import find_components, sigmoid
from frames.preprocess import normalize_frame
from models.export import export_onnx, onnx_cpu_session
from models.registry import load_model, model_info
from service.settings import Settings
from service.worker.runtime import ModelRuntime

TOLERANCE = 1e-4  # max |logit difference| between ONNX Runtime and torch, float32 on a CPU


def runtime(backend: str, models: list[str]) -> ModelRuntime:
    settings = Settings(
        models=models, default_model=models[0], device="cpu", inference_backend=backend, seed=3
    )
    loaded = ModelRuntime(settings)
    loaded.load()
    return loaded


def frames() -> list[np.ndarray]:
    """Two frames of different sizes that pad to the same size (one batch)."""
    rng = np.random.default_rng(0)
    first = rng.random((61, 77), dtype=np.float32) * 0.3
    second = rng.random((64, 80), dtype=np.float32) * 0.3
    for frame in (first, second):
        frame[20:23, 30:33] = 1.0  # a bright target
    return [first, second]


def test_auto_runs_single_frame_models_on_onnxruntime_and_std2net_in_torch() -> None:
    loaded = runtime("auto", ["sd2net", "std2net"])
    assert loaded.models["sd2net"].backend == "onnxruntime"
    assert loaded.models["sd2net"].onnx is not None
    assert loaded.models["std2net"].backend == "torch"
    assert loaded.models["std2net"].onnx is None


@pytest.mark.parametrize("model", ["sd2net", "lrrnet"])
def test_onnxruntime_gives_torch_logits_and_detections(model: str) -> None:
    by_torch = runtime("torch", [model]).infer(model, frames())
    by_onnx = runtime("onnxruntime", [model]).infer(model, frames())
    for torch_logits, onnx_logits, frame in zip(by_torch, by_onnx, frames(), strict=True):
        assert onnx_logits.shape == torch_logits.shape == frame.shape
        assert np.abs(onnx_logits - torch_logits).max() < TOLERANCE
        # the shipped weights find the bright target, and both backends the same components
        torch_parts = find_components(sigmoid(torch_logits), DEFAULT_THRESHOLD)
        onnx_parts = find_components(sigmoid(onnx_logits), DEFAULT_THRESHOLD)
        assert torch_parts
        assert [(c.area, c.x0, c.y0) for c in onnx_parts] == [
            (c.area, c.x0, c.y0) for c in torch_parts
        ]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_onnxruntime_outside_cpu_float32_fails_at_start_up(dtype: str) -> None:
    with pytest.raises(
        ValueError, match="IRTRACK_INFERENCE_BACKEND=onnxruntime runs on a CPU in float32"
    ):
        ModelRuntime(
            Settings(models=["sd2net"], device="cpu", dtype=dtype, inference_backend="onnxruntime")
        )


def test_torch_backend_and_reduced_precision_keep_torch() -> None:
    assert not runtime("torch", ["sd2net"]).onnxruntime["sd2net"]
    assert not ModelRuntime(
        Settings(models=["sd2net"], device="cpu", dtype="bfloat16")
    ).onnxruntime["sd2net"]


def test_onnx_sd2net_is_as_accurate_as_torch_on_a_full_frame() -> None:
    """At 640x512 the BDM's whole-frame norms once left ONNX Runtime's logits 15x further from
    float64 than torch's; the export now sums rows first (models.sd2net._frame_norms)."""
    model, _ = load_model("sd2net", model_info("sd2net").default_weights_path)
    model = model.eval()
    [frame] = synthetic_clip((512, 640), 1)
    frames = torch.from_numpy(normalize_frame(frame))[None, None]
    with torch.inference_mode():
        exact = copy.deepcopy(model).double()(frames.double()).numpy()
        torch_error = np.abs(model(frames).numpy() - exact).max()
    with tempfile.TemporaryDirectory() as folder:
        session = onnx_cpu_session(export_onnx(model, f"{folder}/sd2net.onnx"), threads=2)
    (onnx_logits,) = session.run(None, {"frames": frames.numpy()})
    assert np.abs(onnx_logits - exact).max() <= 2 * torch_error + 1e-5
