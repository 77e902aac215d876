"""What a measurement ran on: a figure (speed, accuracy) means little without the machine."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (the architecture where Linux gives none),
    with the vector instructions torch's kernels use and the core count: two machines that both
    call themselves "AMD EPYC" ran the same service benchmark at 21 and 13 frames/s."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name} ({torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores)"


def describe_machine(device: torch.device) -> str:
    """CPU model, and the GPU model when running on one."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}; CPU {cpu_model()}"
    return f"CPU {cpu_model()}"
