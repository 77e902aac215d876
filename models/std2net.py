"""STD2Net: multi-frame Spatio-Temporal Difference Decomposition Network (arXiv 2512.03470).

Each of the 5 frames of a window (oldest first, the current frame last) goes through the same SD2Net
backbone (32 feature maps, no head); a per-slot affine (the reference's BatchNorm3d over the 5 frame
slots) follows; TD2M decomposes the current frame's features onto temporal difference bases (current
minus each earlier frame, minus its own mean, minus the mean of the earlier frames); a local 3x3
branch over all 5 frames and a 1x1 skip join it, and a 96-channel RSU-7 with a 1x1 conv gives the
current frame's logits (spec std2net.md §1-§3, models.md).

Streaming: the backbone has no cross-frame coupling, so a stream caches each frame's raw backbone
features (before the slot affine, since a frame changes slot as it ages) in a ring of 5, and every new
frame costs one backbone pass plus the temporal head. :class:`StreamState` is that ring;
:func:`step_streams` advances many streams with one batched backbone call.

Example:
    >>> model = STD2Net().eval()
    >>> logits = model(torch.rand(1, 5, 256, 256))  # window, oldest first -> current frame
    >>> state = StreamState()
    >>> step_logits = step_streams(model, [state], torch.rand(1, 1, 250, 300))  # any size
"""

from collections import deque
from collections.abc import Sequence

import torch
from torch import nn

from models.padding import crop_to, pad_to_multiple
from models.sd2net import RSU7, SD2Net, basis_decomposition


class TD2M(nn.Module):
    """Temporal Difference Decomposition Module (std2net.md §2): BDM of a projection of the current
    frame's features onto 6 temporal difference bases, each L2-normalised over the whole frame."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.target = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.Conv2d(channels, channels, 1)
        )

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """window: (B, 5, C, H, W) slot-normalised features -> (B, C, H, W)."""
        current = window[:, -1]
        earlier = window[:, :-1]
        bases = torch.stack(
            [
                *(current - earlier[:, k] for k in range(earlier.shape[1])),
                current - current.mean(dim=(-2, -1), keepdim=True),
                current - earlier.mean(dim=1),
            ],
            dim=2,
        )  # (B, C, 6, H, W)
        return basis_decomposition(self.target(current), bases)


class TemporalHead(nn.Module):
    """Everything after the backbone (§1 steps 3-4, §2): slot affine, TD2M, local 3x3 branch over all
    frames, 1x1 skip, 96-channel RSU-7 and the 1x1 output conv."""

    def __init__(self, channels: int = 32, window: int = 5) -> None:
        super().__init__()
        self.slot_norm = nn.BatchNorm3d(
            window
        )  # per frame slot: (B, T, C, H, W) has T as "channels"
        self.td2m = TD2M(channels)
        self.local = nn.Sequential(
            nn.Conv2d(window * channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
        )
        self.skip = nn.Conv2d(channels, channels, 1)
        self.fuse = RSU7(3 * channels, 3 * channels, 3 * channels)
        self.out = nn.Conv2d(3 * channels, 1, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: raw backbone outputs (B, 5, C, H, W), oldest first -> logits (B, 1, H, W)."""
        window = self.slot_norm(features)
        fused = torch.cat(
            [self.td2m(window), self.local(window.flatten(1, 2)), self.skip(window[:, -1])], dim=1
        )  # (B, 3C, H, W)
        return self.out(self.fuse(fused))


class STD2Net(nn.Module):
    """STD2Net: shared SD2Net backbone per frame + temporal head on the current frame.

    ``forward`` takes a window (B, 5, H, W) in [0, 1], oldest frame first, H and W multiples of 16,
    and returns the current (last) frame's logits (B, 1, H, W).
    """

    frames = 5
    size_multiple = 16
    # What a stream keeps between frames (StreamState): the window's raw backbone features.
    cached_values_per_pixel = frames * 32  # at the default feature_channels

    def __init__(self, feature_channels: int = 32, window: int = 5) -> None:
        super().__init__()
        self.window = window
        self.backbone = SD2Net(out_channels=feature_channels, head=False)
        self.head = TemporalHead(feature_channels, window)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Backbone features of independent frames: (N, 1, H, W) -> (N, C, H, W)."""
        return self.backbone(frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, window, height, width = x.shape
        features = self.frame_features(x.reshape(batch * window, 1, height, width))
        return self.head(features.view(batch, window, -1, height, width))


class StreamState:
    """Per-stream ring buffer of the last ``window`` raw backbone features (before the slot affine).

    The first frame of a stream fills every slot (the same as repeating the first frame). Features of
    a different size than the cached ones are refused: the caller decides whether that resets the
    stream (:meth:`reset`) or is an error.
    """

    def __init__(self, window: int = 5) -> None:
        self._features: deque[torch.Tensor] = deque(maxlen=window)

    @property
    def frame_count_cached(self) -> int:
        return len(self._features)

    @property
    def feature_shape(self) -> torch.Size | None:
        return self._features[-1].shape if self._features else None

    def reset(self) -> None:
        self._features.clear()

    def push(self, feature: torch.Tensor) -> None:
        """Add one frame's features (C, H, W); the oldest slot falls out."""
        if self._features and feature.shape != self._features[-1].shape:
            raise ValueError(
                f"frame features {tuple(feature.shape)} differ from the stream's "
                f"{tuple(self._features[-1].shape)}; reset the stream first"
            )
        if not self._features:
            self._features.extend([feature] * (self._features.maxlen or 1))
        else:
            self._features.append(feature)

    def window(self) -> torch.Tensor:
        """The cached window (T, C, H, W), oldest first."""
        return torch.stack(list(self._features))


def step_streams(
    model: STD2Net, states: Sequence[StreamState], frames: torch.Tensor
) -> torch.Tensor:
    """Advance several streams by one frame each, with one backbone call for all of them.

    frames: (B, 1, H, W) or (B, H, W) in [0, 1], one new frame per state (any H, W: padded to the size
    multiple and cropped back). Returns each stream's current-frame logits (B, 1, H, W).
    """
    if frames.dim() == 3:
        frames = frames.unsqueeze(1)
    if frames.shape[0] != len(states):
        raise ValueError(f"{frames.shape[0]} frames for {len(states)} streams")
    size = (frames.shape[-2], frames.shape[-1])
    features = model.frame_features(pad_to_multiple(frames, model.size_multiple))
    for state, feature in zip(states, features, strict=True):
        state.push(feature)
    windows = torch.stack([state.window() for state in states])  # (B, T, C, H, W)
    return crop_to(model.head(windows), size)


def sliding_windows(frames: torch.Tensor, window: int = 5) -> torch.Tensor:
    """Each frame's window of a sequence: (T, H, W) -> (T, window, H, W), oldest first.

    Before a stream has ``window`` frames the first frame is repeated, the convention of
    :class:`StreamState`, so the full-window forward of these windows equals the streaming path.
    """
    offsets = torch.arange(window - 1, -1, -1)
    index = (torch.arange(frames.shape[0])[:, None] - offsets[None, :]).clamp(min=0)
    return frames[index]
