"""Weight averaging of a run's epoch checkpoints (stochastic weight averaging, Izmailov et al. 2018).

Fine-tuning at a constant learning rate moves the weights around a basin; single epochs can differ a
lot in how they treat inputs the validation set barely covers. The average of the last epochs sits
nearer the basin's centre. BatchNorm statistics of averaged weights are recomputed on training batches.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..losses import validation_loss
from ..preprocessing import Preprocessing
from .config import TrainConfig
from .loop import TrainingData, evaluate_loss_and_dice

logger = logging.getLogger(__name__)


def kept_epochs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the ``epochs/eN.pt`` checkpoints a run kept (``keep_epochs``), in epoch order."""
    paths = Path(run_dir).glob("epochs/e*.pt")
    return sorted((int(p.stem[1:]), p) for p in paths if p.stem[1:].isdigit())


def average_checkpoints(paths: list[str | Path], out_path: str | Path, bn_batches: int = 100) -> dict:
    """Average the weights of ``paths`` (same architecture), recompute BatchNorm, validate, save.

    The run's config (from the first checkpoint) defines the training batches used for the BatchNorm
    statistics and the validation set; the saved checkpoint carries the averaged model, the
    validation-Dice threshold and ``{"val_loss", "val_dice", "averaged_epochs"}``.

    Returns
    -------
    dict
        The averaged model's validation metrics.
    """
    if not paths:
        raise ValueError("no checkpoints to average")
    model, info = load_checkpoint(paths[0])
    states = [load_checkpoint(p)[0].state_dict() for p in paths]
    averaged = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            averaged[key] = sum(state[key] for state in states) / len(states)
        else:  # e.g. BatchNorm's num_batches_tracked
            averaged[key] = value
    model.load_state_dict(averaged)
    config = TrainConfig(**info.training_config)
    preprocessing = Preprocessing.from_dict(config.preprocessing)
    cpu = torch.device("cpu")
    data = TrainingData(config, preprocessing, cpu)
    model.train()
    for module in model.modules():  # cumulative averages over the batches, as torch's update_bn does
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        for i, batch in enumerate(data.train_batches(epoch=0)):
            if i >= bn_batches:
                break
            model(batch["x"])
    val_loss, val_dice, scores = evaluate_loss_and_dice(model, data.val_batches(), validation_loss(config.loss), cpu)
    threshold, best_dice = scores.best_dice_threshold()
    metrics = {"val_loss": val_loss, "val_dice": val_dice, "val_dice_calibrated": best_dice,
               "val_tpr@fpr=1e-4": scores.tpr_at_fpr(1e-4), "averaged_epochs": [str(p) for p in paths]}
    save_checkpoint(out_path, model, preprocessing, threshold, asdict(config), metrics)
    logger.info("averaged %d checkpoints into %s: %s", len(paths), out_path, metrics)
    return metrics
