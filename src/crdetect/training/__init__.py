"""Training: configuration, the loop, resumable runs."""

from .config import TrainConfig
from .averaging import average_checkpoints
from .loop import train

__all__ = ["TrainConfig", "average_checkpoints", "train"]
