"""The training loop: one process on CPU or one GPU, resumable, deterministic for a seed."""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.datasets import PatchDataset, random_subset
from ..inference import resolve_device
from ..losses import get_loss
from ..metrics import ScoreAccumulator
from ..models import create_model
from ..preprocessing import Preprocessing
from .config import TrainConfig

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only: never on norms, biases or position embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or "pos_embed" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameter_groups(model, config.weight_decay or 1e-4), lr=config.lr, momentum=0.9)
    return torch.optim.Adam(parameter_groups(model, config.weight_decay), lr=config.lr)


def evaluate_loss_and_dice(model, loader, loss_fn, device) -> tuple[float, float, ScoreAccumulator]:
    """Mean loss, pixel Dice (threshold 0.5, ignore mask respected) and the score accumulator."""
    model.eval()
    total, batches = 0.0, 0
    acc = ScoreAccumulator(threshold=0.5)
    with torch.inference_mode():
        for batch in loader:
            x, y, ign = (batch[k].to(device) for k in ("image", "mask", "ignore"))
            logits = model(x)
            total += float(loss_fn(logits, y, ign))
            batches += 1
            prob = torch.sigmoid(logits).cpu().numpy()
            acc.update(prob, y.cpu().numpy() > 0.5, ign.cpu().numpy() > 0.5)
    return total / max(batches, 1), acc.counts.dice, acc


def make_datasets(config: TrainConfig, preprocessing: Preprocessing) -> tuple[PatchDataset, PatchDataset]:
    """The training and validation sets of a run (validation gets the same pedestals and extra hits)."""
    data = Path(config.data)
    augmentation = {"pedestal_prob": config.pedestal_prob, "pedestal_peak": config.pedestal_peak,
                    "extra_hits": config.extra_hits, "hit_zoom": config.hit_zoom, "hit_charge": config.hit_charge,
                    "line_prob": config.line_prob, "seed": config.seed}
    train_set = PatchDataset(data / "train.h5", preprocessing, augment=True, crop=config.crop,
                             sky_boost=config.sky_boost, **augmentation)
    val_set = PatchDataset(data / "val.h5", preprocessing, augment=False, **augmentation)
    for dataset, limit in ((train_set, config.max_train_patches), (val_set, config.max_val_patches)):
        dataset.indices = random_subset(dataset.indices, limit, config.seed)
    return train_set, val_set


def train(config: TrainConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train ``config.model`` on ``config.data`` and write the run into ``out_dir``.

    Writes ``config.yaml``, ``metrics.csv`` (one row per epoch), ``last.pt`` (with optimizer state,
    for resuming) and ``best.pt`` (lowest validation loss). An existing ``last.pt`` in ``out_dir`` is
    resumed from. Returns the final metrics row.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    # Data parallel when launched by torchrun (WORLD_SIZE > 1): one process per GPU (NCCL) or per CPU
    # worker (gloo); every rank validates the same data, rank 0 alone writes files.
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    is_main = not distributed or dist.get_rank() == 0
    progress = progress and is_main
    preprocessing = Preprocessing.from_dict(config.preprocessing) if config.preprocessing else Preprocessing()
    config.preprocessing = preprocessing.to_dict()
    if is_main:
        config.to_yaml(out / "config.yaml")

    train_set, val_set = make_datasets(config, preprocessing)
    generator = torch.Generator().manual_seed(config.seed)
    sampler = DistributedSampler(train_set, shuffle=True, seed=config.seed) if distributed else None
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
                              generator=generator if sampler is None else None, num_workers=config.num_workers,
                              drop_last=len(train_set) > config.batch_size)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, num_workers=config.num_workers)

    network = create_model(config.model, **config.model_kwargs).to(device)
    if config.init_from:
        initial, _ = load_checkpoint(config.init_from)
        network.load_state_dict(initial.state_dict())  # same parameter names: only the architecture's kwargs may differ
        logger.info("weights initialised from %s", config.init_from)
    model = network
    optimizer = make_optimizer(network, config)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=config.plateau_patience)
    loss_fn = get_loss(config.loss)
    # bfloat16 autocast needs no loss scaling (its exponent range is float32's), so no GradScaler
    use_amp = config.amp and device.type == "cuda"

    start_epoch, best_val = 0, math.inf
    last_path = out / "last.pt"
    if last_path.exists():
        resumed, info = load_checkpoint(last_path)
        network.load_state_dict(resumed.state_dict())
        state = info.extra
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_val = int(state["epoch"]) + 1, float(state["best_val_loss"])
        logger.info("resuming %s from epoch %d", out, start_epoch)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    metrics_path = out / "metrics.csv"
    if start_epoch == 0 and is_main:
        with open(metrics_path, "w", newline="") as f:
            csv.writer(f).writerow(METRIC_COLUMNS)

    row: dict = {}
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        train_set.epoch = epoch
        generator.manual_seed(config.seed + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        running, batches = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress)
        for batch in bar:
            x, y, ign = (batch[k].to(device, non_blocking=True) for k in ("image", "mask", "ignore"))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)
            loss = loss_fn(logits.float(), y, ign)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += float(loss.detach())
            batches += 1
            bar.set_postfix(loss=f"{running / batches:.4f}")
        val_loss, val_dice, val_scores = evaluate_loss_and_dice(network, val_loader, loss_fn, device)
        # The detection threshold shipped in the checkpoint maximises validation Dice: with a few
        # CR pixels per thousand, probabilities of a young network sit below 0.5.
        threshold, best_dice = val_scores.best_dice_threshold() if config.calibrate_threshold else (config.threshold, val_dice)
        scheduler.step(val_loss)
        row = {"epoch": epoch + 1, "train_loss": running / max(batches, 1), "val_loss": val_loss,
               "val_dice": val_dice, "lr": optimizer.param_groups[0]["lr"],
               "seconds": time.perf_counter() - started}
        logger.info("epoch %d: %s", epoch + 1, row)
        if not is_main:
            continue
        with open(metrics_path, "a", newline="") as f:
            csv.writer(f).writerow([row[c] for c in METRIC_COLUMNS])
        metrics = {"val_loss": val_loss, "val_dice": val_dice, "epoch": epoch + 1, "val_dice_calibrated": best_dice,
                   "val_tpr@fpr=1e-4": val_scores.tpr_at_fpr(1e-4)}
        if val_loss < best_val:
            best_val = val_loss
            save_checkpoint(out / "best.pt", model, preprocessing, threshold, asdict(config), metrics)
        if config.keep_epochs:
            (out / "epochs").mkdir(exist_ok=True)
            save_checkpoint(out / "epochs" / f"e{epoch + 1}.pt", model, preprocessing, threshold, asdict(config), metrics)
        save_checkpoint(last_path, model, preprocessing, threshold, asdict(config), metrics,
                        extra={"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                               "epoch": epoch, "best_val_loss": best_val})
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return row
