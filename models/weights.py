"""Weights on disk: safetensors only, so loading a file never unpickles (never runs code)."""

import hashlib
from collections.abc import Mapping
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  # the shipped files and their cards


def save_weights(
    model: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Write the model's state_dict (parameters and persistent buffers) with string metadata."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=dict(metadata or {}))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors file (training data, epochs, metrics...)."""
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> dict[str, str]:
    """Load a safetensors file into ``model`` (on the model's device); returns the file's metadata."""
    device = next(model.parameters()).device
    state = load_file(str(path), device=str(device))
    model.load_state_dict(state, strict=strict)
    return read_metadata(path)


def initialize_from(model: nn.Module, path: str | Path) -> list[str]:
    """Copy the tensors of a weights file whose name, or name without ``backbone.``, and shape
    match the model's; returns the model keys initialised. Lets STD2Net start from a trained
    SD2Net (its backbone is an SD2Net) and a training run continue from shipped weights."""
    source = load_file(str(path))
    loaded = {}
    for name, tensor in model.state_dict().items():
        for candidate in (name, name.removeprefix("backbone.")):
            if candidate in source and source[candidate].shape == tensor.shape:
                loaded[name] = source[candidate]
                break
    model.load_state_dict(loaded, strict=False)
    return sorted(loaded)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file: names the exact weights behind every reported figure."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
