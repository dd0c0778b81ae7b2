"""Losses and metrics on tiny arrays with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crdetect.losses import (
    alpha_schedule,
    bce_dice_loss,
    bce_loss,
    dice_loss,
    get_loss,
    median_weight_map,
    median_weighted_bce_loss,
)
from crdetect.metrics import ScoreAccumulator, confusion, hit_counts


def _logit(p):
    return torch.log(torch.tensor(p) / (1 - torch.tensor(p)))


def test_bce_by_hand_with_ignore():
    logits = _logit([[0.9, 0.2], [0.5, 0.99]])[None, None]
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])[None, None]
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.5) + math.log(0.01)) / 4
    assert bce_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
    ignore = torch.tensor([[0.0, 0.0], [0.0, 1.0]])[None, None]  # drop the confident mistake
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.5)) / 3
    assert bce_loss(logits, target, ignore).item() == pytest.approx(expected, rel=1e-5)


def test_dice_by_hand():
    logits = _logit([[0.9, 0.2], [0.5, 0.1]])[None, None]
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])[None, None]
    # sum(p y) = 1.4, sum(p) = 1.7, sum(y) = 2; smooth 1
    assert dice_loss(logits, target).item() == pytest.approx(1 - (2 * 1.4 + 1) / (1.7 + 2 + 1), rel=1e-5)
    combined = 0.5 * (dice_loss(logits, target) + bce_loss(logits, target))
    assert bce_dice_loss(logits, target).item() == pytest.approx(combined.item())
    assert get_loss("bce_dice") is bce_dice_loss
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        get_loss("focal")


def test_median_weighted_bce_weights_only_negatives():
    logits = _logit([[0.9, 0.2]])[None, None]
    target = torch.tensor([[1.0, 0.0]])[None, None]
    weight = torch.tensor([[0.3, 0.5]])[None, None]
    expected = -(math.log(0.9) + 0.5 * math.log(0.8)) / 2
    assert median_weighted_bce_loss(logits, target, weight).item() == pytest.approx(expected, rel=1e-5)
    assert alpha_schedule(0) == 0 and alpha_schedule(50, 100) == 0.5 and alpha_schedule(500, 100) == 1


def test_median_weight_map_is_high_on_sources_and_clamped():
    rng = np.random.default_rng(0)
    median = torch.tensor(rng.normal(100, 1, (1, 1, 32, 32)), dtype=torch.float32)
    median[..., 14:18, 14:18] += 50  # a source
    w = median_weight_map(median, alpha=0.2)
    assert w.shape == median.shape and w.min() >= 0.2 and w.max() == pytest.approx(1.0)
    assert w[..., 15, 15] > 0.9 and w[..., 2, 2] == pytest.approx(0.2)


def test_confusion_and_dice_by_hand():
    pred = np.array([[1, 1, 0], [0, 1, 0]], bool)
    truth = np.array([[1, 0, 0], [1, 1, 0]], bool)
    c = confusion(pred, truth)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 2)
    assert c.dice == pytest.approx(4 / 6)
    ignore = np.array([[0, 1, 0], [0, 0, 0]], bool)
    assert confusion(pred, truth, ignore).fp == 0


def test_tpr_at_fpr_and_precision_at_recall_by_hand():
    acc = ScoreAccumulator(threshold=0.5)
    # 4 positives with scores 0.9, 0.8, 0.6, 0.3; 10 negatives: one at 0.7, the rest at 0.1
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.7] + [0.1] * 9)
    truth = np.array([1, 1, 1, 1] + [0] * 10, bool)
    acc.update(scores, truth)
    assert acc.counts.tp == 3 and acc.counts.fp == 1
    assert acc.tpr_at_fpr(0.0) == pytest.approx(0.5)  # threshold above 0.7: 0.9 and 0.8
    assert acc.tpr_at_fpr(0.05) == pytest.approx(0.5)
    assert acc.tpr_at_fpr(0.1) == pytest.approx(1.0)  # the 0.7 negative let in: down to 0.3, above 0.1
    assert acc.precision_at_recall(1.0) == pytest.approx(4 / 5)  # down to 0.3: 4 TP, 1 FP
    fpr, tpr, _ = acc.roc()
    assert fpr[-1] == 1.0 and tpr[-1] == 1.0 and np.all(np.diff(tpr) >= 0)
    assert acc.summary()["dice"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))


def test_best_dice_threshold_separates_perfectly_separable_scores():
    acc = ScoreAccumulator()
    acc.update(np.array([0.3, 0.35, 0.1, 0.2, 0.05]), np.array([1, 1, 0, 0, 0], bool))
    threshold, dice = acc.best_dice_threshold()
    assert dice == 1.0 and 0.2 < threshold <= 0.3


def test_minus_infinity_scores_are_the_lowest():
    acc = ScoreAccumulator(threshold=0.0)
    acc.update(np.array([-np.inf, 1.0, -np.inf]), np.array([1, 1, 0], bool))
    assert acc.tpr_at_fpr(0.0) == 0.5 and acc.counts.tp == 1


def test_hit_counts_by_hand():
    truth = np.zeros((20, 20), bool)
    truth[2, 2:6] = True  # hit 1: found through one pixel
    truth[10:12, 10] = True  # hit 2: missed
    truth[15, 15] = truth[16, 16] = True  # hit 3: diagonal pixels are one hit (8-connected)
    ignore = np.zeros_like(truth)
    ignore[0:2, 15:20] = True  # an ignored real CR
    flagged = np.zeros_like(truth)
    flagged[2, 2] = True  # finds hit 1
    flagged[3, 6] = True  # a faint neighbour of hit 1 (diagonal to its end), flagged alone: not false
    flagged[16, 16] = True  # finds hit 3
    flagged[7, 7] = True  # false
    flagged[18, 0:3] = True  # false (one detection of three pixels)
    flagged[2, 17] = True  # beside the ignored CR: not false
    counts = hit_counts(flagged, truth, ignore)
    assert (counts.hits, counts.found, counts.false) == (3, 2, 2)
    assert counts.detections == 6
    assert counts.recall == pytest.approx(2 / 3)
    assert counts.false_per_mpix == pytest.approx(2 / (400 - 10) * 1e6)
    # a stack of images: groups never join across images
    stacked = hit_counts(np.stack([flagged, flagged]), np.stack([truth, truth]), np.stack([ignore, ignore]))
    assert (stacked.hits, stacked.found, stacked.false, stacked.pixels) == (6, 4, 4, 780)
    # nothing labelled: recall undefined, all detections false
    assert np.isnan(hit_counts(flagged, np.zeros_like(truth)).recall)
    acc = ScoreAccumulator(0.5, hits=True)
    acc.update(flagged.astype(float), truth, ignore)
    acc.update(flagged.astype(float), truth, ignore)
    assert (acc.hits.hits, acc.hits.found, acc.hits.false) == (6, 4, 4)
    assert ScoreAccumulator(0.5).hits is None
