"""Losses and metrics on tiny arrays with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crdetect.losses import (alpha_schedule, bce_dice_loss, bce_loss, dice_loss, get_loss, median_weight_map,
                             median_weighted_bce_loss)
from crdetect.metrics import ScoreAccumulator, confusion


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
