"""ONNX export of the single-frame detectors, checked against PyTorch with ONNX Runtime.

Uses PyTorch's TorchScript-based exporter: on these models it exports in seconds with dynamic batch,
height and width, where the torch.export-based exporter took over a minute and rejects the
size-multiple constraints. The exported graph takes frames (B, 1, H, W) in [0, 1] with H and W
multiples of the model's ``size_multiple`` and returns logits (B, 1, H, W).
"""

import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

DYNAMIC_AXES = {
    "frames": {0: "batch", 2: "height", 3: "width"},
    "logits": {0: "batch", 2: "height", 3: "width"},
}


def export_onnx(model: nn.Module, path: str | Path, height: int = 256, width: int = 256) -> Path:
    """Export an eval-mode single-frame model to ONNX (opset 17) with dynamic batch and size."""
    if getattr(model, "frames", 1) != 1:
        raise ValueError("ONNX export covers the single-frame models (sd2net, lrrnet)")
    model = model.eval()
    example = torch.rand(1, 1, height, width, device=next(model.parameters()).device)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["frames"],
            output_names=["logits"],
            dynamic_axes=DYNAMIC_AXES,
            opset_version=17,
            dynamo=False,
        )
    return path


def onnx_cpu_session(
    path: str | Path | bytes, threads: int, spinning: bool = False
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session configured like the service's torch worker: ``threads``
    intra-op threads, one inter-op thread, all graph optimisations, denormals flushed to zero.

    ``spinning=False`` lets idle intra-op threads sleep instead of busy-waiting for the next run:
    on a small CPU shared with the API's event loop, spinning threads take the cores that
    decoding and answering need (the service's choice); a benchmark of the model alone may spin.
    """
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    source = path if isinstance(path, bytes) else str(path)
    return onnxruntime.InferenceSession(
        source, sess_options=options, providers=["CPUExecutionProvider"]
    )


def onnx_max_difference(model: nn.Module, path: str | Path, frames: torch.Tensor) -> float:
    """Max |ONNX Runtime logits - PyTorch logits| on ``frames`` (CPU execution provider)."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {"frames": frames.cpu().numpy()})
    with torch.no_grad():
        torch_logits = model.eval()(frames).cpu().numpy()
    return float(np.abs(onnx_logits - torch_logits).max())
