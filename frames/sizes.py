"""Frame sizes as people write them: WIDTHxHEIGHT (``640x512``), the way cameras name them,
everywhere (settings, every command line, reports). Code keeps ``(height, width)``, the order
of arrays and tensors."""

from __future__ import annotations


def parse_size(text: str) -> tuple[int, int]:
    """``"640x512"`` -> ``(512, 640)`` = (height, width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 640x512")
    width, height = (int(p) for p in parts)
    return height, width


def format_size(height: int, width: int) -> str:
    """``(512, 640)`` -> ``"640x512"``: the inverse of :func:`parse_size`."""
    return f"{width}x{height}"


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """Smallest (H, W) >= the given size with both sides divisible by ``multiple``: the size a
    model runs a frame at (``models.padding``), and so what the frame costs."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple
