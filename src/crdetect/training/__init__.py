"""Training: configuration, the loop, resumable runs."""

from .config import TrainConfig
from .averaging import average_checkpoints, kept_epochs
from .loop import train

__all__ = ["TrainConfig", "average_checkpoints", "kept_epochs", "train"]
