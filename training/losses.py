"""The papers' losses, and each model's training step (forward + loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.lrrnet import LRRNet


def soft_iou_loss(
    logits: torch.Tensor, mask: torch.Tensor, per_sample: bool = False
) -> torch.Tensor:
    """1 - (sum p*g + 1) / (sum p + sum g - sum p*g + 1) on p = sigmoid(logits).

    SD2Net and STD2Net sum over the whole batch as one set (``per_sample=False``); LRRNet sums per
    sample and averages the per-sample IoUs. Pixels whose mask is ``data.datasets.UNLABELLED``
    (negative) count neither way: their p and g are taken as 0.
    """
    labelled = mask >= 0
    prob = torch.sigmoid(logits.float()) * labelled
    mask = mask * labelled
    dims = tuple(range(1, prob.dim())) if per_sample else tuple(range(prob.dim()))
    intersection = (prob * mask).sum(dims)
    union = prob.sum(dims) + mask.sum(dims) - intersection
    return 1.0 - ((intersection + 1.0) / (union + 1.0)).mean()


def lrrnet_loss(
    logits: torch.Tensor, reconstruction: torch.Tensor, image: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The official LRRNet total: SoftIoU + SegL1 + 0.1 * MSE(reconstruction, image) (lrrnet.md §5).

    SegL1 = 0.8 * SoftIoU + 0.2 * mean(1[logit > 0]); the indicator is a hard threshold and gives
    no gradient, so the effective gradient is 1.8 * grad SoftIoU + 0.1 * grad MSE. It is kept
    (rather than dropped) so that logged losses are comparable with the paper's logs.
    """
    soft_iou = soft_iou_loss(logits, mask, per_sample=True)
    predicted_fraction = (logits > 0).float().mean()
    mse = torch.mean((reconstruction.float() - image) ** 2)
    return soft_iou + (0.8 * soft_iou + 0.2 * predicted_fraction) + 0.1 * mse


def segmentation_step(model: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return soft_iou_loss(model(image), mask)


def per_sample_segmentation_step(
    model: nn.Module, image: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """SoftIoU per sample, averaged (LRRNet's form) instead of over the batch as one set: a crop
    without targets scores 1 / (its summed probabilities + 1), so its false alarms cost it as much
    as a missed target costs a crop that has one; in the batch-global form they hide in the union
    of the batch's targets."""
    return soft_iou_loss(model(image), mask, per_sample=True)


def mixed_segmentation_step(
    model: nn.Module, image: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The mean of the batch-global and the per-sample SoftIoU: target-free crops still pay for
    their false alarms, while faint targets keep the batch form's weight on them (the per-sample
    form alone made SD2Net miss a plain 3x3 target in noise)."""
    logits = model(image)
    return 0.5 * (soft_iou_loss(logits, mask) + soft_iou_loss(logits, mask, per_sample=True))


HARD_BACKGROUND_PIXELS = 16  # per crop: its most confident background pixels
HARD_BACKGROUND_GUARD = 3  # px around a labelled target that count as neither (coarse outlines)
HARD_BACKGROUND_WEIGHT = 0.1


def hard_background_loss(
    logits: torch.Tensor,
    mask: torch.Tensor,
    pixels: int = HARD_BACKGROUND_PIXELS,
    guard: int = HARD_BACKGROUND_GUARD,
) -> torch.Tensor:
    """Binary cross-entropy, against "background", of each crop's ``pixels`` highest logits among
    its background pixels (more than ``guard`` px from a target, not UNLABELLED), averaged.

    A confident false alarm has a saturated sigmoid, so SoftIoU, which sees probabilities, gives
    its logits almost no gradient (p (1 - p) ~ 0 at p ~ 1): training does not unlearn it. Cross-
    entropy on the logits pushes it with the full p."""
    near_target = F.max_pool2d((mask > 0).float(), 2 * guard + 1, stride=1, padding=guard) > 0
    background = (mask >= 0) & ~near_target
    candidates = logits.float().masked_fill(~background, float("-inf")).flatten(1)
    hardest = candidates.topk(min(pixels, candidates.shape[1]), dim=1).values
    present = torch.isfinite(hardest)  # a crop with fewer background pixels than ``pixels``
    bce = F.softplus(hardest.masked_fill(~present, 0.0))  # -log(1 - sigmoid(logit))
    return (bce * present).sum() / present.sum().clamp_min(1)


def hard_background_segmentation_step(
    model: nn.Module,
    image: torch.Tensor,
    mask: torch.Tensor,
    weight: float = HARD_BACKGROUND_WEIGHT,
) -> torch.Tensor:
    """SD2Net's batch-global SoftIoU plus ``weight`` times the cross-entropy of each crop's most
    confident background pixels (``hard_background_loss``)."""
    logits = model(image)
    return soft_iou_loss(logits, mask) + weight * hard_background_loss(logits, mask)


def lrrnet_step(model: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if not isinstance(model, LRRNet):
        raise TypeError(f"the LRRNet loss needs an LRRNet, got {type(model).__name__}")
    logits, reconstruction = model.forward_with_reconstruction(image)
    return lrrnet_loss(logits, reconstruction, image, mask)
