"""Training: configuration, the loop, resumable runs."""

from .averaging import average_checkpoints, kept_epochs
from .config import TrainConfig
from .loop import train

__all__ = ["TrainConfig", "average_checkpoints", "kept_epochs", "train"]
