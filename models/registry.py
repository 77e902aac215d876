"""The model registry: names the service, CLI, training and evaluation use to build detectors."""

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from models.lrrnet import LRRNet
from models.sd2net import SD2Net
from models.std2net import STD2Net
from models.weights import WEIGHTS_DIR, load_weights


@dataclass(frozen=True)
class ModelInfo:
    """What callers need to know about a detector without building it."""

    name: str
    model_class: type[SD2Net] | type[STD2Net] | type[LRRNet]
    description: str
    default_weights: str  # file name in models/weights/ (shipped trained weights)
    # Peak working memory of a call, per frame: peak_bytes_per_pixel x P + peak_bytes_per_pixel
    # _squared x P^2 for P padded pixels, float32, on a CPU (torch or ONNX Runtime, whichever
    # needs more). The service's memory budget admits frames by it. Measured by `irtrack bench
    # memory --part calls` (docs/reliability.md), checked by tests/test_memory.py.
    peak_bytes_per_pixel: int
    peak_bytes_per_pixel_squared: float = 0.0  # an attention over all pixels: P^2 grows fast

    @property
    def frames(self) -> int:
        """Frames per input window; the current frame is the last."""
        return self.model_class.frames

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (``models.padding`` pads and crops)."""
        return self.model_class.size_multiple

    @property
    def state_values_per_pixel(self) -> int:
        """Values a stream keeps per padded pixel between frames (STD2Net's window of cached
        features); 0 for the single-frame models."""
        return getattr(self.model_class, "cached_values_per_pixel", 0)

    @property
    def default_weights_path(self) -> Path | None:
        """Shipped weights for this model, or None while no trained weights are shipped."""
        path = WEIGHTS_DIR / self.default_weights
        return path if path.exists() else None


MODEL_INFO: dict[str, ModelInfo] = {
    info.name: info
    for info in [
        ModelInfo(
            "sd2net",
            SD2Net,
            "SD2Net: single-frame spatial difference decomposition (0.26M params)",
            "sd2net_all.safetensors",
            peak_bytes_per_pixel=3072,
        ),
        ModelInfo(
            "std2net",
            STD2Net,
            "STD2Net: 5-frame temporal difference decomposition on the SD2Net backbone",
            "std2net_drone-ir.safetensors",
            peak_bytes_per_pixel=7680,
        ),
        ModelInfo(
            "lrrnet",
            LRRNet,
            "LRRNet: low-rank background reconstruction and subtraction (3.45M params)",
            "lrrnet_nudt-sirst.safetensors",
            peak_bytes_per_pixel=2304,
            # self-attention over the H/8 x W/8 tokens: N = P / 64, an N x N float32 matrix
            peak_bytes_per_pixel_squared=4 / 64**2,
        ),
    ]
}


def model_info(name: str) -> ModelInfo:
    """Registry entry for ``name``; a KeyError lists the known names."""
    try:
        return MODEL_INFO[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_INFO)}") from None


def build_model(name: str) -> nn.Module:
    """A freshly initialised detector by registry name ("sd2net", "std2net", "lrrnet")."""
    return model_info(name).model_class()


def load_model(name: str, weights: str | Path | None = None) -> tuple[nn.Module, Path | None]:
    """Build ``name`` in eval mode with ``weights`` (default: the shipped file, if any).

    Returns the model and the weights file actually loaded (None: random initialisation).
    """
    model = build_model(name).eval()
    path = Path(weights) if weights is not None else model_info(name).default_weights_path
    if path is not None:
        load_weights(model, path)
    return model, path
