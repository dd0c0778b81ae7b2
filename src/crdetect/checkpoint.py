"""Self-describing checkpoints: everything needed to rebuild and run a model, in one file.

A checkpoint is a plain dict saved with :func:`torch.save` and read back with ``weights_only=True``
(no pickled code runs on load). It records the registry name and constructor arguments of the model,
the state dict of the unwrapped model, the input :class:`~crdetect.preprocessing.Preprocessing`, the
default detection threshold, the training configuration, headline metrics and the crdetect version.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from . import __version__
from .atomic import atomic_output
from .errors import CheckpointError
from .models import create_model
from .models._registry import UnknownModelError
from .preprocessing import Preprocessing

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "crdetect-checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED_KEYS = ("format", "format_version", "model_name", "model_kwargs", "state_dict", "preprocessing")


@dataclass
class CheckpointInfo:
    """What a checkpoint says about its model, besides the weights."""

    model_name: str
    model_kwargs: dict
    preprocessing: Preprocessing
    threshold: float = 0.5
    training_config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    crdetect_version: str = ""
    extra: dict = field(default_factory=dict)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DataParallel/DDP (``.module``) or torch.compile (``._orig_mod``)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def _clean_state_dict(state_dict: dict) -> dict:
    """Strip ``module.`` and ``_orig_mod.`` prefixes left by wrappers in older or foreign files."""
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned


def _stored(name: str, tensor: torch.Tensor, half: bool) -> torch.Tensor:
    """``tensor`` as a checkpoint stores it: float16 when ``half`` allows it (see :func:`save_checkpoint`)."""
    # running variances divide the activations: their relative precision matters more than a weight's
    statistics = name.endswith(("running_mean", "running_var"))
    if half and tensor.dtype == torch.float32 and not statistics and tensor.abs().max() < 6e4:
        return tensor.half()
    return tensor


def save_checkpoint(path: str | os.PathLike, model: nn.Module, preprocessing: Preprocessing,
                    threshold: float = 0.5, training_config: dict | None = None, metrics: dict | None = None,
                    extra: dict | None = None, half: bool = False) -> Path:
    """Write a self-describing checkpoint atomically (temporary file, then rename).

    ``model`` must come from :func:`crdetect.create_model` (possibly wrapped by DDP or compile). With
    ``half`` the floating-point weights are stored as float16 (half the file; :func:`load_checkpoint`
    copies them back into the float32 model), except normalisation statistics and values beyond
    float16's range, which keep float32.
    """
    model = unwrap_model(model)
    if not hasattr(model, "model_name"):
        raise ValueError("save_checkpoint needs a model made by crdetect.create_model (it records its name)")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_name": model.model_name,
        "model_kwargs": dict(model.model_kwargs),
        "state_dict": {k: _stored(k, v.detach().cpu(), half) for k, v in model.state_dict().items()},
        "preprocessing": preprocessing.to_dict(),
        "threshold": float(threshold),
        "training_config": training_config or {},
        "metrics": metrics or {},
        "crdetect_version": __version__,
        "extra": extra or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as handle:  # replaced whole (last.pt each epoch), with the umask
        torch.save(payload, handle)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the model of a checkpoint and return it (in eval mode) with its :class:`CheckpointInfo`.

    Raises
    ------
    CheckpointError
        The file is missing, unreadable, not a crdetect checkpoint, or its weights do not fit the
        recorded architecture. The message says which.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" not in str(err).lower():  # not a pickle of objects: garbage, or cut short
            raise CheckpointError(f"cannot read checkpoint {str(path)!r}: it is not a PyTorch file, or it is "
                                  "corrupt or truncated") from None
        # torch's own message advises weights_only=False, which would run whatever code the file holds
        raise CheckpointError(
            f"{str(path)!r} is not a crdetect checkpoint: it holds Python objects other than tensors and plain "
            "data, and crdetect never loads those (loading them can run code from the file); save models with "
            "crdetect.save_checkpoint or `crdetect train`") from None
    except Exception as err:  # torch raises many types for corrupt files: zip, EOF
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "the file is corrupt, truncated or not a PyTorch file"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is a PyTorch file but not a crdetect checkpoint (no format={CHECKPOINT_FORMAT!r}); "
            "bare state dicts cannot be used: save models with crdetect.save_checkpoint or `crdetect train`"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {missing}; it is incomplete or corrupt")
    if payload["format_version"] > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {payload['format_version']}, newer than this "
            f"crdetect ({__version__}) reads ({CHECKPOINT_VERSION}); upgrade crdetect"
        )
    try:
        model = create_model(payload["model_name"], **payload["model_kwargs"])
        preprocessing = Preprocessing.from_dict(payload["preprocessing"])
    except (UnknownModelError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} describes a model this crdetect cannot build: {err}") from None
    try:
        model.load_state_dict(_clean_state_dict(payload["state_dict"]))
    except RuntimeError as err:
        raise CheckpointError(
            f"weights in {str(path)!r} do not fit model {payload['model_name']!r}: {str(err).splitlines()[0]}"
        ) from None
    model.eval()
    info = CheckpointInfo(
        model_name=payload["model_name"], model_kwargs=dict(payload["model_kwargs"]), preprocessing=preprocessing,
        threshold=float(payload.get("threshold", 0.5)), training_config=payload.get("training_config") or {},
        metrics=payload.get("metrics") or {}, crdetect_version=str(payload.get("crdetect_version", "")),
        extra=payload.get("extra") or {},
    )
    return model, info
