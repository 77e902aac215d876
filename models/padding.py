"""The one place where frames are padded to a model's size multiple and outputs cropped back.

BDM and TD2M normalise over the whole frame, so a frame is never tiled: it is padded at the bottom and
right by edge replication (no artificial dark border that could look like a target edge, and pixel
coordinates stay those of the original frame), run whole, and the output cropped to the frame's size.
"""

from typing import Protocol

import torch
import torch.nn.functional as F

from frames.sizes import padded_size


class SizedModel(Protocol):
    size_multiple: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the last two dims of a (B, C, H, W) tensor up to multiples of ``multiple``."""
    height, width = x.shape[-2:]
    target_h, target_w = padded_size(height, width, multiple)
    if (target_h, target_w) == (height, width):
        return x
    return F.pad(x, (0, target_w - width, 0, target_h - height), mode="replicate")


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the last two dims back to ``size`` = (H, W) (undoes :func:`pad_to_multiple`)."""
    return x[..., : size[0], : size[1]]


def run_padded(model: SizedModel, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on frames of any size: pad to its size multiple, forward, crop the logits."""
    size = (x.shape[-2], x.shape[-1])
    return crop_to(model(pad_to_multiple(x, model.size_multiple)), size)
