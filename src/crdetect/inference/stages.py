"""The stages of :meth:`crdetect.CRDetector.predict`, in order:

1. :func:`prepare_frame` -- check the image, take it to the model's device, find the pixels never to use;
2. :func:`frame_scaling` -- the sky and noise that scale it, with whole-frame steps levelled (:mod:`crdetect.steps`);
3. normalisation -- the checkpoint's :class:`~crdetect.preprocessing.Preprocessing`;
4. the network over tiles -- :func:`crdetect.inference.tiling.sliding_window` (where another backend plugs in);
5. :func:`protect_saturated` -- saturated stars and bleed trails, never flagged;
6. :func:`probability_and_mask` -- the probability and the mask at the threshold;
7. :func:`veto_plane` -- the source veto's plane (:mod:`crdetect.veto`), which the final mask leaves out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..preprocessing import FrameStatistics, frame_statistics_torch
from ..steps import level_steps
from ..validation import as_image, split_input_mask
from ..veto import VetoParameters, veto_sources
from .saturation import SATURATION_NOISE_SIGMA, plateau_saturation_torch, saturated_regions_torch

logger = logging.getLogger(__name__)


@dataclass
class PreparedFrame:
    """A checked image and what is known about its pixels, on the model's device.

    Attributes
    ----------
    image : ndarray of float32
        The image as given (native float32; the caller's memory when it already was).
    pixels : torch.Tensor
        The image on the device, NaN at masked pixels (every estimate skips non-finite pixels).
    nonfinite, ignored : torch.Tensor of bool
        Non-finite pixels; those or masked ones.
    input_mask : ndarray of bool or None
        The input mask (the caller's and the image's own), None when nothing is masked.
    """

    image: np.ndarray
    pixels: torch.Tensor
    nonfinite: torch.Tensor
    ignored: torch.Tensor
    input_mask: np.ndarray | None


def prepare_frame(image, mask, device: torch.device) -> PreparedFrame:
    """Stage 1: the image checked (:func:`~crdetect.validation.as_image`), its input mask, and both on ``device``.

    Raises
    ------
    InputError
        Not a 2-D real image, a mask of another shape, or no usable pixel at all.
    """
    image, input_mask = split_input_mask(image, mask)
    image = as_image(image)
    pixels = torch.from_numpy(image).to(device)
    # in CPU memory numpy answers these on the same memory (torch's CPU isfinite and boolean sums measured
    # 15-50x slower on a 2048 x 4096 frame)
    on_cpu = device.type == "cpu"
    nonfinite = torch.from_numpy(~np.isfinite(image)) if on_cpu else ~torch.isfinite(pixels)
    masked = None if input_mask is None else torch.from_numpy(input_mask).to(device)
    ignored = nonfinite if masked is None else nonfinite | masked
    if bool(ignored.all()):
        what = "no finite pixels (all NaN or inf)" if bool(nonfinite.all()) else "no finite pixels outside the mask"
        raise InputError(f"the image has {what}; nothing to detect")
    count = int(np.count_nonzero(nonfinite.numpy())) if on_cpu else int(nonfinite.sum())
    if count:
        logger.warning("%d non-finite pixels (NaN/inf) are treated as sky and never flagged", count)
    if masked is not None:
        # masked pixels become NaN in a working copy: every estimate below already skips non-finite pixels
        pixels = torch.where(masked, torch.nan, pixels)
    return PreparedFrame(image, pixels, nonfinite, ignored, input_mask)


def frame_scaling(pixels: torch.Tensor, statistics: FrameStatistics | None) -> tuple[FrameStatistics, torch.Tensor]:
    """Stage 2: the sky and noise that scale the frame (``statistics`` if given, else measured) and the frame with
    its whole-frame steps levelled (overscan, prescan, amplifier bias; the same tensor where it has none)."""
    stats = statistics or frame_statistics_torch(pixels)
    levelled, _ = level_steps(pixels, stats.sigma)
    if levelled is not pixels and statistics is None:
        stats = frame_statistics_torch(levelled)
    return stats, levelled


def protect_saturated(pixels: torch.Tensor, saturation: float | None, stats: FrameStatistics) -> torch.Tensor:
    """Stage 5: saturated stars and bleed trails, which are never flagged. Without a ``saturation`` level one is
    read off flat plateaus at the top of the frame. Pixels down to ``SATURATION_NOISE_SIGMA`` times the noise
    below the level count: read noise scatters a saturated plateau about its level, and a small saturated core
    (an undersampled star) would otherwise fall apart into pieces too small to protect."""
    if saturation is None:
        saturation = plateau_saturation_torch(pixels, stats)
        if saturation is not None:
            logger.info("no saturation level given: flat plateaus at %.6g and above are treated as saturated",
                        saturation)
    return saturated_regions_torch(pixels, None if saturation is None else
                                   saturation - SATURATION_NOISE_SIGMA * stats.sigma)


def probability_and_mask(logits: torch.Tensor, never: torch.Tensor, threshold: float,
                         keep_logits: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 6: the probability (0 where ``never``; the logits set to -inf there) and the mask at ``threshold``.
    Without ``keep_logits`` the probability is computed in the logits' memory (4 bytes per pixel less)."""
    logits.masked_fill_(never, -torch.inf)
    probability = torch.sigmoid(logits) if keep_logits else logits.sigmoid_()
    # a threshold of 1 asks for certainty, which a network never has: float32 rounds p > 1 - 3e-8 up to 1.0,
    # so ">= 1" would still flag the strongest hits
    flagged = (probability >= threshold) & ~never if threshold < 1.0 else torch.zeros_like(never)
    return probability, flagged


def veto_plane(image: np.ndarray, flagged: np.ndarray, unusable: np.ndarray, stats: FrameStatistics,
               parameters: VetoParameters) -> np.ndarray:
    """Stage 7: the flagged pixels whose regions look like stars (:func:`crdetect.veto.veto_sources`), judged on
    ``image`` (the levelled frame) with its ``unusable`` pixels at the sky, as before the network."""
    if not flagged.any():
        return np.zeros(flagged.shape, bool)
    return veto_sources(image, flagged, stats.sigma, unusable, fill=stats.sky, p=parameters)
