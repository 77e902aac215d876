"""Where a model runs: the one reading of a device setting, and mixed precision per device."""

from __future__ import annotations

import torch
from torch import nn


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; asking
    for CUDA where there is none is an error, never a silent fall-back to the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    return device


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """fp16 autocast on CUDA (with a GradScaler when training), bf16 on a CPU (no scaler)."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


def to_channels_last(module: nn.Module) -> nn.Module:
    """``module`` with its 4-D weights in ``torch.channels_last`` memory format (in place), as
    ``Module.to(memory_format=...)`` makes them (a form torch's type hints do not cover)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return module
