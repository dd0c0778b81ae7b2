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
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..preprocessing import FrameStatistics, frame_statistics_torch
from ..steps import level_steps
from ..validation import as_image, split_input_mask
from ..veto import VetoParameters, veto_sources
from .saturation import SATURATION_NOISE_SIGMA, plateau_saturation_torch, saturated_regions_torch

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


@dataclass
class PreparedFrame:
    """A checked image and what is known about its pixels, on the model's device: numpy arrays on the host (a
    CPU), torch tensors on a GPU.

    Attributes
    ----------
    image : ndarray of float32
        The image as given (native float32; the caller's memory when it already was).
    pixels : ndarray or torch.Tensor
        The image on the device, NaN at masked pixels (every estimate skips non-finite pixels).
    nonfinite, ignored : ndarray or torch.Tensor of bool
        Non-finite pixels; those or masked ones.
    input_mask : ndarray of bool or None
        The input mask (the caller's and the image's own), None when nothing is masked.
    """

    image: np.ndarray
    pixels: np.ndarray | torch.Tensor
    nonfinite: np.ndarray | torch.Tensor
    ignored: np.ndarray | torch.Tensor
    input_mask: np.ndarray | None


def prepare_frame(image, mask, device: str) -> PreparedFrame:
    """Stage 1: the image checked (:func:`~crdetect.validation.as_image`), its input mask, and both on ``device``.

    Raises
    ------
    InputError
        Not a 2-D real image, a mask of another shape, or no usable pixel at all.
    """
    image, input_mask = split_input_mask(image, mask)
    image = as_image(image)
    if str(device).startswith("cpu"):
        nonfinite = ~np.isfinite(image)
        ignored = nonfinite if input_mask is None else nonfinite | input_mask
        # masked pixels become NaN in a working copy: every estimate below already skips non-finite pixels
        pixels = image if input_mask is None else np.where(input_mask, np.float32(np.nan), image)
        nonfinite_count = int(np.count_nonzero(nonfinite))
    else:  # on a GPU everything from here runs on the device
        import torch

        pixels = torch.from_numpy(image).to(device)
        nonfinite = ~torch.isfinite(pixels)
        masked = None if input_mask is None else torch.from_numpy(input_mask).to(device)
        ignored = nonfinite if masked is None else nonfinite | masked
        if masked is not None:
            pixels = torch.where(masked, torch.nan, pixels)
        nonfinite_count = int(nonfinite.sum())
    if bool(ignored.all()):
        what = "no finite pixels (all NaN or inf)" if nonfinite_count == image.size else \
            "no finite pixels outside the mask"
        raise InputError(f"the image has {what}; nothing to detect")
    if nonfinite_count:
        logger.warning("%d non-finite pixels (NaN/inf) are treated as sky and never flagged", nonfinite_count)
    return PreparedFrame(image, pixels, nonfinite, ignored, input_mask)


def frame_scaling(pixels, statistics: FrameStatistics | None) -> tuple[FrameStatistics, np.ndarray | torch.Tensor]:
    """Stage 2: the sky and noise that scale the frame (``statistics`` if given, else measured) and the frame with
    its whole-frame steps levelled (overscan, prescan, amplifier bias; the same tensor where it has none)."""
    stats = statistics or frame_statistics_torch(pixels)
    levelled, _ = level_steps(pixels, stats.sigma)
    if levelled is not pixels and statistics is None:
        stats = frame_statistics_torch(levelled)
    return stats, levelled


def protect_saturated(pixels, saturation: float | None, stats: FrameStatistics):
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


def probability_and_mask(logits, never, threshold: float, keep_logits: bool) -> tuple:
    """Stage 6: the probability (0 where ``never``; the logits set to -inf there) and the mask at ``threshold``,
    as numpy arrays or torch tensors like ``logits``. Without ``keep_logits`` the probability is computed in the
    logits' memory (4 bytes per pixel less)."""
    if isinstance(logits, np.ndarray):
        np.copyto(logits, np.float32(-np.inf), where=never)
        probability = sigmoid(logits, out=None if keep_logits else logits)
        # a threshold of 1 asks for certainty, which a network never has: float32 rounds p > 1 - 3e-8 up to 1.0,
        # so ">= 1" would still flag the strongest hits
        flagged = (probability >= threshold) & ~never if threshold < 1.0 else np.zeros_like(never)
        return probability, flagged
    import torch

    logits.masked_fill_(never, -torch.inf)
    probability = torch.sigmoid(logits) if keep_logits else logits.sigmoid_()
    flagged = (probability >= threshold) & ~never if threshold < 1.0 else torch.zeros_like(never)
    return probability, flagged


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 / (1 + exp(-x)) of a float32 array, in ``out`` (which may be ``x``); exp overflows harmlessly to inf for
    x < -88, giving 0. (scipy.special.expit is the same, but importing scipy.special costs 0.3 s of a short run.)"""
    out = np.negative(x, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += np.float32(1)
    return np.reciprocal(out, out=out)


def veto_plane(image: np.ndarray, flagged: np.ndarray, unusable: np.ndarray, stats: FrameStatistics,
               parameters: VetoParameters) -> np.ndarray:
    """Stage 7: the flagged pixels whose regions look like stars (:func:`crdetect.veto.veto_sources`), judged on
    ``image`` (the levelled frame) with its ``unusable`` pixels at the sky, as before the network."""
    if not flagged.any():
        return np.zeros(flagged.shape, bool)
    return veto_sources(image, flagged, stats.sigma, unusable, fill=stats.sky, p=parameters)
