"""One confusion-count path for every detector (networks and LA-Cosmic alike).

:class:`ScoreAccumulator` takes per-pixel scores (any real number where larger means "more CR-like":
network logits or probabilities, LA-Cosmic's detection statistic), labels and an ignore mask, batch
after batch, and keeps exact confusion counts at a threshold plus fine histograms of the scores of
positive and negative pixels, from which ROC and PR curves, TPR at a fixed FPR and precision at a
fixed recall follow. Memory is constant whatever the test-set size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Scores are histogrammed in asinh(score), which is linear near 0 (probabilities) and logarithmic
#: for large statistics, over [-12, 12] (|score| up to 8e4) in 2**18 bins.
_BINS = 2**18
_RANGE = 12.0


def _bin(scores: np.ndarray) -> np.ndarray:
    # clip first: -inf (pixels that can never be CR, e.g. NaN input) lands in the lowest bin
    t = np.clip(np.arcsinh(np.asarray(scores, dtype=np.float64)), -_RANGE, _RANGE)
    return np.clip(((t + _RANGE) / (2 * _RANGE) * _BINS).astype(np.int64), 0, _BINS - 1)


def _bin_lower_edge(index: np.ndarray) -> np.ndarray:
    return np.sinh(index / _BINS * 2 * _RANGE - _RANGE)


@dataclass
class Confusion:
    """Pixel confusion counts."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @property
    def dice(self) -> float:
        """2 TP / (2 TP + FP + FN); 1 when there is nothing to find and nothing was flagged."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 1.0 if denominator == 0 else 2 * self.tp / denominator

    @property
    def tpr(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def fpr(self) -> float:
        return self.fp / max(self.fp + self.tn, 1)

    @property
    def precision(self) -> float:
        return self.tp / max(self.tp + self.fp, 1)


def confusion(prediction: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> Confusion:
    """Confusion counts of a boolean prediction against a boolean truth, skipping ignored pixels."""
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from truth shape {truth.shape}")
    valid = np.ones_like(truth) if ignore is None else ~np.asarray(ignore, bool)
    tp = int((prediction & truth & valid).sum())
    fp = int((prediction & ~truth & valid).sum())
    fn = int((~prediction & truth & valid).sum())
    return Confusion(tp, fp, fn, int(valid.sum()) - tp - fp - fn)


@dataclass
class HitCounts:
    """Hit-level counts: labelled hits found, and detections that match no hit."""

    hits: int = 0  # labelled hits (8-connected groups of CR pixels)
    found: int = 0  # labelled hits with at least one flagged pixel
    detections: int = 0  # flagged groups (8-connected)
    false: int = 0  # flagged groups with no labelled (or ignored) pixel within 1 px
    pixels: int = 0  # pixels scored

    def __add__(self, other: HitCounts) -> HitCounts:
        return HitCounts(*(a + b for a, b in zip(vars(self).values(), vars(other).values())))

    @property
    def recall(self) -> float:
        """Fraction of labelled hits found (nan when there are none)."""
        return self.found / self.hits if self.hits else float("nan")

    @property
    def false_per_mpix(self) -> float:
        """False detections per million pixels scored."""
        return self.false / self.pixels * 1e6 if self.pixels else float("nan")


def hit_counts(prediction: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> HitCounts:
    """Hit-level counts of a boolean prediction (2-D, or a stack of 2-D images along the first axes).

    Users count CRs, not pixels: a hit is found when any of its pixels is flagged, whatever its exact
    boundary (labels disagree most there: LA-Cosmic's grown masks, 2-sigma injection labels). A
    detection is false when nothing labelled or ignored lies within 1 px of it, so a flagged faint
    neighbour of a labelled hit is not a false hit.
    """
    from scipy import ndimage

    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    valid = np.ones_like(truth) if ignore is None else ~np.asarray(ignore, bool)
    # 8-connected within each image, never across the images of a stack
    structure = np.zeros((3,) * truth.ndim, bool)
    structure[(1,) * (truth.ndim - 2)] = True
    hit_labels, hits = ndimage.label(truth & valid, structure)
    found = np.unique(hit_labels[prediction & truth & valid]).size
    flagged = prediction & valid
    detection_labels, detections = ndimage.label(flagged, structure)
    near = ndimage.binary_dilation(truth | ~valid, structure)
    matched = np.unique(detection_labels[flagged & near]).size
    return HitCounts(hits, found, detections, detections - matched, int(valid.sum()))


class ScoreAccumulator:
    """Accumulate scores of one detector over a test set.

    Parameters
    ----------
    threshold : float
        Score threshold for the exact confusion counts (Dice); 0.5 for probabilities.
    hits : bool
        Also count hits at the threshold (:func:`hit_counts`; two labellings per image).
    """

    def __init__(self, threshold: float = 0.5, hits: bool = False) -> None:
        self.threshold = threshold
        self.counts = Confusion()
        self.hits = HitCounts() if hits else None
        self.positive = np.zeros(_BINS, np.int64)
        self.negative = np.zeros(_BINS, np.int64)

    def update(self, scores: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> None:
        """Add one image (or batch) of scores with its truth and optional ignore mask."""
        scores, truth = np.asarray(scores), np.asarray(truth, bool)
        valid = np.ones_like(truth) if ignore is None else ~np.asarray(ignore, bool)
        flagged = scores >= self.threshold
        c = confusion(flagged, truth, ~valid)
        if self.hits is not None:
            self.hits = self.hits + hit_counts(flagged, truth, ~valid)
        self.counts = Confusion(self.counts.tp + c.tp, self.counts.fp + c.fp, self.counts.fn + c.fn,
                                self.counts.tn + c.tn)
        self.positive += np.bincount(_bin(scores[truth & valid]), minlength=_BINS)
        self.negative += np.bincount(_bin(scores[~truth & valid]), minlength=_BINS)

    def roc(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(FPR, TPR, threshold) for thresholds at every bin edge, from strictest to loosest."""
        tp = np.cumsum(self.positive[::-1])
        fp = np.cumsum(self.negative[::-1])
        thresholds = _bin_lower_edge(np.arange(_BINS)[::-1])
        return fp / max(self.negative.sum(), 1), tp / max(self.positive.sum(), 1), thresholds

    def tpr_at_fpr(self, fpr: float) -> float:
        """Highest TPR reached while the FPR stays at or below ``fpr``."""
        fprs, tprs, _ = self.roc()
        ok = fprs <= fpr
        return float(tprs[ok].max()) if ok.any() else 0.0

    def pr(self) -> tuple[np.ndarray, np.ndarray]:
        """(recall, precision) over all bin-edge thresholds."""
        tp = np.cumsum(self.positive[::-1]).astype(np.float64)
        fp = np.cumsum(self.negative[::-1]).astype(np.float64)
        recall = tp / max(self.positive.sum(), 1)
        precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
        return recall, precision

    def precision_at_recall(self, recall: float) -> float:
        """Best precision among thresholds reaching at least ``recall``."""
        r, p = self.pr()
        ok = r >= recall
        return float(p[ok].max()) if ok.any() else 0.0

    def best_dice_threshold(self) -> tuple[float, float]:
        """(threshold, Dice) maximising Dice over the bin-edge thresholds (calibrates a detector)."""
        tp = np.cumsum(self.positive[::-1]).astype(np.float64)
        fp = np.cumsum(self.negative[::-1]).astype(np.float64)
        fn = self.positive.sum() - tp
        dice = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
        best = int(np.argmax(dice))
        return float(_bin_lower_edge(np.array(_BINS - 1 - best))), float(dice[best])

    def summary(self, fprs=(1e-4, 5e-4, 1e-3)) -> dict[str, float]:
        """Dice at the threshold, TPR at each FPR, precision at 95 % recall, counts."""
        out = {"dice": self.counts.dice, "tpr_at_threshold": self.counts.tpr, "fpr_at_threshold": self.counts.fpr}
        for f in fprs:
            out[f"tpr@fpr={f:g}"] = self.tpr_at_fpr(f)
        out["precision@recall=0.95"] = self.precision_at_recall(0.95)
        out["positives"] = int(self.positive.sum())
        out["negatives"] = int(self.negative.sum())
        return out

    def curves(self, points: int = 400) -> dict[str, list[float]]:
        """ROC and PR curves thinned to about ``points`` points (for JSON and plots)."""
        fprs, tprs, thr = self.roc()
        keep = np.unique(np.searchsorted(fprs, np.logspace(-7, 0, points)).clip(0, len(fprs) - 1))
        recall, precision = self.pr()
        return {"fpr": fprs[keep].tolist(), "tpr": tprs[keep].tolist(), "threshold": thr[keep].tolist(),
                "recall": recall[keep].tolist(), "precision": precision[keep].tolist()}
