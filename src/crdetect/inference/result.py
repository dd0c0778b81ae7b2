"""What a detection produced for one frame, and the one way every consumer combines its planes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..masks import grow_mask
from ..preprocessing import FrameStatistics


@dataclass
class DetectionResult:
    """Everything a detection produced for one frame.

    The network's output is kept as it came (``probability``, ``logits``); the decisions taken after it are
    planes of their own: pixels that are never flagged (``nonfinite``, ``protected``, ``masked``) and the regions
    the source veto took for stars (``vetoed``). ``mask`` is the combination at the detection threshold;
    :meth:`mask_at`, :meth:`grown` and :meth:`scores` are the combinations every consumer uses (``--grow``, the
    viewer's threshold slider, ROC curves).

    Attributes
    ----------
    probability : ndarray of float32
        The network's CR probability per pixel, same shape as the input; 0 where a pixel is never flagged
        (non-finite, saturated star, input mask). Vetoed pixels keep their probability.
    mask : ndarray of bool
        The CR mask: ``probability >= threshold``, never at ``nonfinite``, ``protected`` or ``masked`` pixels,
        and not at ``vetoed`` ones.
    nonfinite : ndarray of bool
        Pixels that were NaN or inf in the input.
    logits : ndarray of float32 or None
        The network's logits (-inf where never flagged). Probabilities saturate at 1.0 in float32 for logits
        above ~17; rank pixels by logits (ROC curves at low FPR). None when ``predict(..., return_logits=False)``.
    protected : ndarray of bool
        Saturated stars and bleed trails: see :func:`crdetect.inference.saturation.saturated_regions`.
    threshold : float
        Threshold used for ``mask``.
    statistics : FrameStatistics
        Sky and noise used to normalise the frame.
    masked : ndarray of bool or None
        The input mask (bad pixels given by the caller or the file); None if there was none.
    vetoed : ndarray of bool or None
        Pixels the network flagged at ``threshold`` whose regions the source veto (:mod:`crdetect.veto`) took
        for stars. None when the veto was off (all False when it was on and took nothing).
    veto : VetoParameters or None
        The veto's thresholds when it was on.
    """

    probability: np.ndarray
    mask: np.ndarray
    nonfinite: np.ndarray
    logits: np.ndarray | None
    protected: np.ndarray
    threshold: float
    statistics: FrameStatistics
    masked: np.ndarray | None = None
    vetoed: np.ndarray | None = None
    veto: object | None = None  # crdetect.veto.VetoParameters

    @property
    def cr_fraction(self) -> float:
        """Fraction of pixels flagged as CR."""
        return np.count_nonzero(self.mask) / self.mask.size if self.mask.size else 0.0

    @property
    def never(self) -> np.ndarray:
        """Pixels that are never flagged: non-finite, saturated stars, the input mask."""
        never = self.nonfinite | self.protected
        return never if self.masked is None else never | self.masked

    def excluded(self) -> np.ndarray:
        """Pixels no mask made from this result may hold: :attr:`never`, and what the veto took."""
        return self.never if self.vetoed is None else self.never | self.vetoed

    def mask_at(self, threshold: float) -> np.ndarray:
        """The CR mask at another ``threshold`` (the veto's regions, judged at the detection threshold, stay out).
        A threshold of 1 flags nothing: the network is never certain, though float32 rounds p > 1 - 3e-8 to 1."""
        if threshold >= 1.0:
            return np.zeros(self.probability.shape, bool)
        return (self.probability >= threshold) & ~self.excluded()

    def grown(self, pixels: int) -> np.ndarray:
        """The CR mask grown by ``pixels`` (8-connected), never onto pixels that are never flagged or vetoed."""
        return grow_mask(self.mask, pixels) & ~self.excluded()

    def scores(self) -> np.ndarray:
        """The logits with the veto applied (vetoed pixels at -inf): the ranking ROC curves and TPR at a fixed FPR
        use for "this detector with its veto". Needs the logits (``predict(..., return_logits=True)``)."""
        if self.logits is None:
            raise ValueError("the result has no logits; predict with return_logits=True")
        if self.vetoed is None or not self.vetoed.any():
            return self.logits
        return np.where(self.vetoed, -np.inf, self.logits).astype(np.float32)
