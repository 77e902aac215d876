"""What a measurement ran on: a figure (speed, accuracy) means little without the machine."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo; the architecture where Linux gives none."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device) -> str:
    """CPU model, and the GPU model when running on one."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}; CPU {cpu_model()}"
    return f"CPU {cpu_model()}"
