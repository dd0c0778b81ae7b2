"""Losses for CR segmentation. All take logits, a {0,1} target and an optional ``ignore`` mask.

Pixels where ``ignore`` is 1 (bad columns, hot pixels, unlabelled sources) contribute nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _valid(target: torch.Tensor, ignore: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(target) if ignore is None else 1.0 - ignore.to(target.dtype)


def bce_loss(logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy averaged over the valid pixels."""
    valid = _valid(target, ignore)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor | None = None,
              smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the batch: 1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s)."""
    valid = _valid(target, ignore)
    p = torch.sigmoid(logits) * valid
    y = target * valid
    return 1.0 - (2.0 * (p * y).sum() + smooth) / (p.sum() + y.sum() + smooth)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """The study's loss: (1 - Dice + BCE) / 2."""
    return 0.5 * (dice_loss(logits, target, ignore) + bce_loss(logits, target, ignore))


def median_weighted_bce_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                             ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Cosmic-CoNN's median-weighted BCE (Xu et al. 2023).

    ``L = -mean[y log p + w (1 - y) log(1 - p)]``: negatives are weighted by ``w`` (from
    :func:`median_weight_map`, in [alpha, 1]), so sky pixels count little and pixels on sources
    (where false positives happen) count fully.
    """
    valid = _valid(target, ignore)
    pos = target * F.logsigmoid(logits)
    neg = weight * (1.0 - target) * F.logsigmoid(-logits)
    return -((pos + neg) * valid).sum() / valid.sum().clamp_min(1.0)


def alpha_schedule(epoch: int, ramp_epochs: int = 100) -> float:
    """Lower bound ``alpha`` of the median weight: 0 at epoch 0, rising linearly to 1 (plain BCE)."""
    return float(min(max(epoch / max(ramp_epochs, 1), 0.0), 1.0))


def median_weight_map(median_image: torch.Tensor, alpha: float) -> torch.Tensor:
    """Weight map of Cosmic-CoNN's loss from the median of the aligned exposures, (N, 1, H, W).

    Subtract the median, clip to [sigma, 5 sigma] and subtract sigma (sigma = 1.4826 MAD), smooth
    with a 5x5 Gaussian (sigma 2), divide by the maximum and clamp to [alpha, 1].
    """
    flat = median_image.flatten(1)
    med = flat.median(dim=1).values.view(-1, 1, 1, 1)
    sigma = (1.4826 * (flat - med.flatten(1)).abs().median(dim=1).values).view(-1, 1, 1, 1).clamp_min(1e-12)
    w = torch.minimum(torch.maximum(median_image - med, sigma), 5 * sigma) - sigma
    coords = torch.arange(5, dtype=w.dtype, device=w.device) - 2
    g = torch.exp(-(coords**2) / (2 * 2.0**2))
    kernel = (g[:, None] * g[None, :]) / (g.sum() ** 2)
    w = F.conv2d(F.pad(w, (2, 2, 2, 2), mode="reflect"), kernel[None, None])
    w = w / w.flatten(1).max(dim=1).values.view(-1, 1, 1, 1).clamp_min(1e-12)
    return w.clamp(min=alpha, max=1.0)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "bce": bce_loss,
    "dice": dice_loss,
    "bce_dice": bce_dice_loss,
}


#: Losses ``crdetect train --loss`` accepts.
TRAINING_LOSSES = (*LOSSES, "median_weighted")


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """Loss by name: ``bce``, ``dice`` or ``bce_dice`` (the study's default); (logits, target, ignore)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)} "
                         "(median-weighted BCE: training_loss('median_weighted', ...))")
    return LOSSES[name]


def training_loss(name: str, epoch: int, ramp_epochs: int) -> Callable[..., torch.Tensor]:
    """The training loss of ``epoch``: (logits, target, ignore, weight) -> loss.

    ``median_weighted`` clamps the weight map to [alpha, 1] with alpha from :func:`alpha_schedule`
    (0 at the first epoch, 1 -- plain BCE -- after ``ramp_epochs``); the others ignore ``weight``.
    """
    if name == "median_weighted":
        alpha = alpha_schedule(epoch, ramp_epochs)

        def loss(logits, target, ignore=None, weight=None):
            if weight is None:
                raise ValueError("the median-weighted loss needs the data's weight maps")
            return median_weighted_bce_loss(logits, target, weight.clamp(min=alpha, max=1.0), ignore)

        return loss
    plain = get_loss(name)
    return lambda logits, target, ignore=None, weight=None: plain(logits, target, ignore)


def validation_loss(name: str) -> Callable[..., torch.Tensor]:
    """The loss that picks the best epoch: the training loss, except that the median-weighted loss is
    scored at its schedule's end point (plain BCE), so that epochs stay comparable while alpha rises."""
    return get_loss("bce" if name == "median_weighted" else name)
