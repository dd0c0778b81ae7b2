"""The training loop: batches made on the training device, one or several models per batch, resumable.

A :class:`TrainingData` holds the train and validation splits as tensors and augments whole batches on
the device (:mod:`crdetect.data.augment`); a :class:`ModelRun` is one model being trained (network,
optimiser, scheduler, loss, best score, its run directory). :func:`train` trains one run;
:func:`train_together` feeds the same batches to several runs, which saves making them once per model.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
import torch.distributed as dist

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.augment import AugmentSettings, BatchAugmenter, PatchSplit, batch_generator
from ..device import resolve_device
from ..losses import training_loss, validation_loss
from ..metrics import ScoreAccumulator
from ..models import create_model, uses_group_norm
from ..preprocessing import Preprocessing
from .config import TrainConfig

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds", "patches_seen"]
#: The run's latest weights in float16, the file a study commits (optimiser states stay on the machine).
COMMITTED_WEIGHTS = "weights.pt"
#: Offset of the validation batches' random streams (never an epoch number).
_VALIDATION_STREAM = 1 << 30


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


def augment_settings(config: TrainConfig) -> AugmentSettings:
    """The batch augmentation a config asks for: every :class:`AugmentSettings` field the config has, by name (lists
    from YAML become the settings' tuples), so an augmentation option is a field of both and nothing else."""
    values = {f.name: getattr(config, f.name) for f in fields(AugmentSettings) if hasattr(config, f.name)}
    return AugmentSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def data_key(config: TrainConfig) -> tuple:
    """What runs must agree on to share batches (:func:`train_together`)."""
    return (str(Path(config.data).resolve()), augment_settings(config), config.batch_size, config.seed,
            config.max_train_patches, config.max_val_patches, config.loss == "median_weighted",
            repr(sorted(config.preprocessing.items())))


class TrainingData:
    """The train and validation splits of a config and their batch augmenter, on ``device``.

    Training batches are shuffled and augmented per (seed, epoch, batch); validation batches are the
    same every epoch (pedestals, lines and extra hits included, drawn from fixed streams).
    """

    def __init__(self, config: TrainConfig, preprocessing: Preprocessing, device: torch.device) -> None:
        data = Path(config.data)
        need_weight = config.loss == "median_weighted"
        self.config, self.device = config, device
        self.train = PatchSplit.load(data / "train.h5", device, config.max_train_patches, config.seed, need_weight)
        self.val = PatchSplit.load(data / "val.h5", device, config.max_val_patches, config.seed, need_weight)
        side = int(self.train.image.shape[-1])
        if config.crop and config.crop > side:
            from ..errors import InputError

            raise InputError(f"--crop {config.crop} is larger than the patches of {data} ({side} x {side} px); cut "
                             f"the frames into larger ones: crdetect simulate --patch {config.crop} (up to 1024)")
        self.augmenter = BatchAugmenter(augment_settings(config), preprocessing, device)

    def train_batches(self, epoch: int, rank: int = 0, world: int = 1):
        """Augmented training batches of ``epoch`` (this rank's share of them when data-parallel)."""
        config = self.config
        if config.epoch_patches:
            batches = self.train.stream_batches(config.batch_size, epoch, config.seed, config.epoch_patches)
        else:
            batches = self.train.batches(config.batch_size, shuffle=True, epoch=epoch, seed=config.seed,
                                         drop_last=len(self.train) > config.batch_size)
        batches = batches[:len(batches) - len(batches) % world] if world > 1 else batches
        for number in range(rank, len(batches), world):
            g = batch_generator(self.device, config.seed, epoch, number)
            yield self.augmenter(self.train.batch(batches[number], self.device), g, train=True)

    def val_batches(self):
        for number, indices in enumerate(self.val.batches(self.config.batch_size, shuffle=False)):
            g = batch_generator(self.device, self.config.seed, _VALIDATION_STREAM, number)
            yield self.augmenter(self.val.batch(indices, self.device), g, train=False)

    def batches_per_epoch(self, world: int = 1) -> int:
        n, size = self.config.epoch_patches or len(self.train), self.config.batch_size
        count = n // size if n > size else 1
        return max(1, count // world) if world > 1 else count


def evaluate_loss_and_dice(model: torch.nn.Module, batches, loss_fn, device: torch.device,
                           memory_format=torch.contiguous_format) -> tuple[float, float, ScoreAccumulator]:
    """Mean loss, pixel Dice (threshold 0.5, ignore mask respected) and the score accumulator of
    ``batches`` (dicts with ``x``, ``mask``, ``ignore`` on ``device``)."""
    model.eval()
    total, count = 0.0, 0
    acc = ScoreAccumulator(threshold=0.5)
    with torch.inference_mode():
        for batch in batches:
            x, y, ign = batch["x"].to(device), batch["mask"].to(device), batch["ignore"].to(device)
            logits = model(x.contiguous(memory_format=memory_format)).float()
            total += float(loss_fn(logits, y, ign))
            count += 1
            acc.update(torch.sigmoid(logits).cpu().numpy(), y.cpu().numpy() > 0.5, ign.cpu().numpy() > 0.5)
    return total / max(count, 1), acc.counts.dice, acc


class ModelRun:
    """One model being trained into ``out_dir``: network, optimiser, scheduler, loss, best score.

    Resumes from ``out_dir/last.pt`` when it exists, else from the committed ``weights.pt`` and ``metrics.csv``
    with a fresh optimiser (a run continued on a new machine). Writes ``config.yaml``, ``metrics.csv`` (a row per
    epoch), ``weights.pt`` (the latest weights in float16), ``last.pt`` (with the optimiser's state), ``best.pt``
    (lowest validation loss), ``run.log`` (how it was resumed) and, with ``keep_epochs``, ``epochs/eN.pt``.
    """

    def __init__(self, config: TrainConfig, out_dir: str | Path, device: torch.device, preprocessing: Preprocessing,
                 distributed: bool = False, is_main: bool = True) -> None:
        self.config, self.out, self.device = config, Path(out_dir), device
        self.preprocessing, self.distributed, self.is_main = preprocessing, distributed, is_main
        self.out.mkdir(parents=True, exist_ok=True)
        if is_main:
            config.to_yaml(self.out / "config.yaml")
        torch.manual_seed(config.seed)
        self.network = create_model(config.model, **config.model_kwargs).to(device)
        if config.init_from:
            initial, _ = load_checkpoint(config.init_from)
            self.network.load_state_dict(initial.state_dict())  # same names: only the kwargs may differ
            logger.info("weights initialised from %s", config.init_from)
        channels_last = config.channels_last
        if channels_last is None:
            channels_last = device.type == "cuda" and not uses_group_norm(self.network)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.network = self.network.to(memory_format=self.memory_format)
        self.optimizer = make_optimizer(self.network, config)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=0.1,
                                                                    patience=config.plateau_patience,
                                                                    min_lr=config.min_lr)
        self.epoch, self.best_val, self.patches_seen, self.seconds = 0, math.inf, 0, 0.0
        last = self.out / "last.pt"
        if last.exists():
            resumed, info = load_checkpoint(last)
            self.network.load_state_dict(resumed.state_dict())
            state = info.extra
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.epoch, self.best_val = int(state["epoch"]) + 1, float(state["best_val_loss"])
            self.patches_seen, self.seconds = int(state.get("patches_seen", 0)), float(state.get("seconds", 0.0))
            self.log(f"resumed from last.pt at epoch {self.epoch + 1} ({self.patches_seen} patches seen)")
        elif (self.out / COMMITTED_WEIGHTS).exists() and (self.out / "metrics.csv").exists():
            self._resume_from_committed_weights()
        self._seconds_at_start = self.seconds  # the time budget counts this invocation's training only
        self.model = self.network
        if distributed:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.network, device_ids=[device.index] if device.type == "cuda" else None)
        if config.compile:
            self.model = torch.compile(self.model)
        if self.epoch == 0 and is_main:
            with open(self.out / "metrics.csv", "w", newline="") as f:
                csv.writer(f).writerow(METRIC_COLUMNS)
        self.use_amp = config.amp and device.type == "cuda"  # bfloat16 needs no loss scaling: no GradScaler
        self._running, self._batches = 0.0, 0

    def log(self, message: str) -> None:
        """Log ``message`` and append it to the run's ``run.log`` (how the run went from window to window)."""
        logger.info("%s: %s", self.out.name, message)
        if self.is_main:
            with open(self.out / "run.log", "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def _resume_from_committed_weights(self) -> None:
        """Continue a run whose optimiser state did not travel (a new machine): its committed float16 weights and
        ``metrics.csv`` give the network, the epoch, the patches seen, the training time, the best validation loss
        and the learning rate; Adam's moments start afresh and the plateau count from zero."""
        with open(self.out / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return
        weights, _ = load_checkpoint(self.out / COMMITTED_WEIGHTS)
        self.network.load_state_dict(weights.state_dict())
        self.epoch = int(rows[-1]["epoch"])
        self.patches_seen = int(rows[-1]["patches_seen"])
        self.seconds = sum(float(r["seconds"]) for r in rows)
        self.best_val = min(float(r["val_loss"]) for r in rows)
        self.scheduler.best = self.best_val
        lr = float(rows[-1]["lr"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.log(f"no optimiser state (last.pt) here: resumed from the committed {COMMITTED_WEIGHTS} at epoch "
                 f"{self.epoch + 1} ({self.patches_seen} patches seen) with a fresh Adam at lr {lr:g}")

    @property
    def finished(self) -> bool:
        budget = self.config.time_budget_min
        spent = self.seconds - self._seconds_at_start
        return self.epoch >= self.config.epochs or (budget is not None and spent >= 60 * budget)

    def start_epoch(self) -> None:
        self.model.train()
        self._running, self._batches = 0.0, 0
        self._loss = training_loss(self.config.loss, self.epoch, self.config.alpha_ramp_epochs or self.config.epochs)

    def step(self, batch: dict[str, torch.Tensor], world: int = 1) -> None:
        """One optimiser step on ``batch`` (no host synchronisation: the loss stays on the device)."""
        x = batch["x"].contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            logits = self.model(x)
        loss = self._loss(logits.float(), batch["mask"], batch["ignore"], batch["weight"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._running = self._running + loss.detach()
        self._batches += 1
        self.patches_seen += x.shape[0] * world

    @property
    def mean_loss(self) -> float:
        """Mean training loss of the epoch so far (synchronises with the device)."""
        return float(self._running) / max(self._batches, 1)

    def end_epoch(self, data: TrainingData, training_seconds: float) -> dict:
        """Validate, step the scheduler, write metrics and checkpoints; returns the epoch's metrics row.

        ``training_seconds`` is this run's share of the epoch's training time (runs trained together
        share the time of making the batches and of their steps equally); validation time is added."""
        config = self.config
        started = time.perf_counter()
        val_loss, val_dice, scores = evaluate_loss_and_dice(self.model, data.val_batches(),
                                                            validation_loss(config.loss), self.device,
                                                            self.memory_format)
        # The threshold shipped in the checkpoint maximises validation Dice: with a few CR pixels per
        # thousand, the probabilities of a young network sit below 0.5.
        threshold, best_dice = scores.best_dice_threshold() if config.calibrate_threshold else (config.threshold, val_dice)
        self.scheduler.step(val_loss)
        seconds = training_seconds + time.perf_counter() - started
        self.seconds += seconds
        row = {"epoch": self.epoch + 1, "train_loss": self.mean_loss, "val_loss": val_loss,
               "val_dice": val_dice, "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds,
               "patches_seen": self.patches_seen}
        logger.info("%s epoch %d: %s", self.out.name, self.epoch + 1, row)
        if self.is_main:
            with open(self.out / "metrics.csv", "a", newline="") as f:
                csv.writer(f).writerow([row[c] for c in METRIC_COLUMNS])
            metrics = {"val_loss": val_loss, "val_dice": val_dice, "epoch": self.epoch + 1,
                       "val_dice_calibrated": best_dice, "val_tpr@fpr=1e-4": scores.tpr_at_fpr(1e-4)}
            saved = (self.network, self.preprocessing, threshold, asdict(config), metrics)
            if val_loss < self.best_val:
                self.best_val = val_loss
                save_checkpoint(self.out / "best.pt", *saved)
            if config.keep_epochs:
                (self.out / "epochs").mkdir(exist_ok=True)
                save_checkpoint(self.out / "epochs" / f"e{self.epoch + 1}.pt", *saved)
            # what a study commits (float16, no optimiser state): a new machine resumes from it
            save_checkpoint(self.out / COMMITTED_WEIGHTS, *saved, half=True)
            save_checkpoint(self.out / "last.pt", *saved,
                            extra={"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                                   "epoch": self.epoch, "best_val_loss": self.best_val,
                                   "patches_seen": self.patches_seen, "seconds": self.seconds})
        elif val_loss < self.best_val:
            self.best_val = val_loss
        self.epoch += 1
        return row


def _distributed_setup(device: torch.device) -> tuple[bool, torch.device, int, int]:
    """Data parallel when launched by torchrun (WORLD_SIZE > 1): one process per GPU (NCCL) or per CPU
    worker (gloo); every rank validates the same data, rank 0 alone writes files."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False, device, 0, 1
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return True, device, dist.get_rank(), dist.get_world_size()


def _preprocessing_of(config: TrainConfig) -> Preprocessing:
    preprocessing = Preprocessing.from_dict(config.preprocessing) if config.preprocessing else Preprocessing()
    config.preprocessing = preprocessing.to_dict()
    return preprocessing


def train(config: TrainConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train ``config.model`` on ``config.data`` into ``out_dir`` (resumed if it holds ``last.pt``).

    Returns the last epoch's metrics row (empty when the run had already finished).
    """
    rows = train_together([config], [out_dir], progress)
    return rows[0]


def train_together(configs: list[TrainConfig], out_dirs: list[str | Path], progress: bool = True,
                   data: TrainingData | None = None) -> list[dict]:
    """Train several runs on the same batches: each batch is made once and every run takes a step on it.

    The configs must agree on the data and its augmentation (:func:`data_key`); runs that resume at
    different epochs each join when the loop reaches their epoch. ``data`` may be passed in to share the
    loaded splits with a later call. Returns each run's last metrics row.
    """
    from tqdm import tqdm

    if len({data_key(c) for c in configs}) > 1:
        raise ValueError("runs trained together must share data, augmentation, batch size, seed and preprocessing")
    device = resolve_device(configs[0].device)
    distributed, device, rank, world = _distributed_setup(device)
    is_main = rank == 0
    progress = progress and is_main
    preprocessings = [_preprocessing_of(c) for c in configs]
    runs = [ModelRun(c, out, device, p, distributed, is_main) for c, out, p in zip(configs, out_dirs, preprocessings)]
    rows: list[dict] = [{} for _ in runs]
    if all(run.finished for run in runs):
        return rows
    data = data or TrainingData(configs[0], preprocessings[0], device)
    while not all(run.finished for run in runs):
        epoch = min(run.epoch for run in runs if not run.finished)
        active = [run for run in runs if run.epoch == epoch and not run.finished]
        for run in active:
            run.start_epoch()
        names = ", ".join(run.out.name for run in active)
        bar = tqdm(data.train_batches(epoch, rank, world), total=data.batches_per_epoch(world),
                   desc=f"epoch {epoch + 1}/{configs[0].epochs} {names}", unit="batch", disable=not progress)
        started = time.perf_counter()
        for number, batch in enumerate(bar):
            for run in active:
                run.step(batch, world)
            if number % 20 == 0:  # reading the loss waits for the device: not every batch
                bar.set_postfix(loss=" ".join(f"{run.mean_loss:.4f}" for run in active))
        share = (time.perf_counter() - started) / len(active)
        for run in active:
            rows[runs.index(run)] = run.end_epoch(data, share)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return rows
