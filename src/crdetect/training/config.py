"""Training configuration: a dataclass that round-trips through YAML."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .._optional import require


@dataclass
class TrainConfig:
    """Everything that defines a training run (written to ``RUN_DIR/config.yaml``).

    Defaults follow the study: Adam at 1e-3, loss (1 - Dice + BCE) / 2, 256 x 256 patches.
    """

    model: str = "deepcr_unet"
    model_kwargs: dict = field(default_factory=dict)
    data: str = ""
    loss: str = "bce_dice"  # bce | dice | bce_dice | median_weighted (Cosmic-CoNN; needs the data's weight maps)
    alpha_ramp_epochs: int | None = None  # median_weighted: its alpha rises 0 -> 1 over this many epochs (None: all)
    epochs: int = 10
    epoch_patches: int | None = None  # patches per epoch (validated after each); None: a pass over the training set
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd (momentum 0.9, weight decay 1e-4, as in the TransUNet paper)
    weight_decay: float = 0.0
    plateau_patience: int = 3  # epochs without val-loss improvement before the lr is divided by 10
    min_lr: float = 0.0  # the divisions stop at this rate (0: never; a fine-tune on an H200 fell to 3e-9)
    crop: int | None = None  # random crops (e.g. 128) train faster on CPUs
    sky_boost: float = 1.0
    pedestal_prob: float = 0.0  # bright smooth blobs under training patches (hits on galaxy cores)
    pedestal_peak: list = field(default_factory=lambda: [10.0, 3000.0])  # their peak, in units of the frame noise
    extra_hits: float = 0.0  # mean number of library hits added to each patch on the fly
    hit_zoom: float = 1.0  # those hits are magnified by up to this factor (wider, longer footprints)
    hit_charge: list = field(default_factory=lambda: [0.5, 50.0])  # range of the factor on their charge
    line_prob: float = 0.0  # unlabelled straight lines across patches (sky lines, bad columns, trails)
    max_train_patches: int | None = None
    max_val_patches: int | None = None
    num_workers: int = 0  # unused: batches are made on the training device (kept so older configs load)
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast, on CUDA only
    channels_last: bool | None = None  # None: on CUDA for models without GroupNorm (measured slower with it)
    compile: bool = False  # torch.compile the model (its compile time counts in the epoch's seconds)
    time_budget_min: float | None = None  # stop after the epoch that exceeds this much training time (this call's)
    seed: int = 0
    keep_epochs: bool = False  # also write epochs/eN.pt after every epoch (for weight averaging)
    init_from: str | None = None  # checkpoint whose weights start the run (fine-tuning, warm starts)
    threshold: float = 0.5
    calibrate_threshold: bool = True  # store the validation-Dice-optimal threshold in checkpoints
    preprocessing: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ..losses import TRAINING_LOSSES

        if self.loss not in TRAINING_LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(TRAINING_LOSSES)}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose adam or sgd")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
        if self.epoch_patches is not None and self.epoch_patches < self.batch_size:
            raise ValueError(f"epoch_patches ({self.epoch_patches}) must be at least one batch ({self.batch_size})")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must lie between 0 and lr ({self.lr}), got {self.min_lr}")

    def to_yaml(self, path: str | Path) -> None:
        yaml = require("yaml", "train", "training configurations (YAML)")
        Path(path).write_text(yaml.safe_dump(asdict(self), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> TrainConfig:
        """Read a YAML file; keyword overrides (e.g. from the command line) win."""
        yaml = require("yaml", "train", "training configurations (YAML)")
        values = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown keys in {path}: {sorted(unknown)}; valid keys: {sorted(known)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
