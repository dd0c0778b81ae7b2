"""Detectors by name: a shipped model (:mod:`crdetect.pretrained`), a checkpoint file, a registry network, or a
module; and the one detector each process keeps for the batch engine and the drop-ins."""

from __future__ import annotations

import difflib
import functools
import logging
import os
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoint import load_checkpoint
from ..errors import InputError
from ..models import create_model, list_models
from ..pretrained import list_pretrained, pretrained_entry, verify
from ..validation import check_threshold
from ..veto import VetoParameters
from .detector import CRDetector

logger = logging.getLogger(__name__)


def shipped_weights(name: str) -> Path | None:
    """Path of the checkpoint shipped in the package for ``name`` (e.g. ``"default"``), if any."""
    entry = pretrained_entry(name)
    return entry.path if entry is not None else None


def shipped_model_names() -> list[str]:
    """Names of the trained models shipped in the package (``default`` first)."""
    return list_pretrained()


def unknown_model_message(name: str) -> str:
    """Why ``name`` is not a model, with the close matches, the shipped (trained) models, and the registry
    networks that have no trained weights (if any)."""
    shipped = shipped_model_names()
    untrained = [n for n in list_models() if n not in shipped]
    close = difflib.get_close_matches(name, list(dict.fromkeys(shipped + untrained)), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    extra = f" Untrained registry networks, for experiments only: {', '.join(untrained)}." if untrained else ""
    return (f"unknown model {name!r}.{hint} Trained models shipped with crdetect: {', '.join(shipped) or 'none'}; "
            f"or a checkpoint file (.pt).{extra} (`crdetect models` lists them all)")


def is_untrained_name(model) -> bool:
    """Whether ``model`` names a registry network without weights (neither shipped nor a checkpoint file)."""
    spec = str(model)
    return (not isinstance(model, nn.Module) and shipped_weights(spec) is None and not Path(spec).is_file()
            and spec in list_models())


def load_detector(model: str | os.PathLike | nn.Module = "default", *, device: str | torch.device = "auto",
                  threshold: float | None = None, compile: bool = False, precision: str = "float32",
                  source_veto: bool | VetoParameters = True, backend: str = "torch") -> CRDetector:
    """Build a :class:`CRDetector` from a shipped model name, a registry name, a checkpoint or a module.

    Parameters
    ----------
    model : str, path or nn.Module
        ``"default"`` or another shipped model (see ``crdetect models``; checked against its SHA-256); a
        checkpoint path (``.pt``); a registry name without shipped weights (an *untrained* network, for
        experiments); or a module.
    device : str or torch.device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
    threshold : float, optional
        Override the checkpoint's default probability threshold.
    compile : bool
        Compile the network with ``torch.compile`` (:meth:`CRDetector.compile`).
    precision : {"float32", "bfloat16", "float16"}
        Arithmetic of the network (:func:`crdetect.device.check_precision`): float32 (default, exact), bfloat16
        (about 2x faster on CPUs with AVX512-BF16), float16 (for CUDA GPUs).
    source_veto : bool or VetoParameters
        Take flagged regions that look like stars out of the mask (:mod:`crdetect.veto`; on by default), with the
        default thresholds or the ones given.
    backend : {"torch", "openvino", "auto"}
        The network's runtime (:mod:`crdetect.inference.backends`).
    """
    if isinstance(model, nn.Module):
        detector = CRDetector(model, device=device, precision=precision, backend=backend)
    else:
        spec = str(model)
        entry = pretrained_entry(spec)
        path = verify(entry) if entry is not None else (
            Path(spec) if (spec.endswith(".pt") or Path(spec).is_file()) else None)
        if path is not None:
            net, info = load_checkpoint(path)
            name = spec if entry is not None else path.name
            detector = CRDetector(net, info.preprocessing, info.threshold, device, name=f"{name} ({info.model_name})",
                                  info=info, precision=precision, backend=backend)
        elif spec == "default":
            raise InputError("no default model is shipped with this installation of crdetect; "
                             "pass --model with a checkpoint path")
        else:
            if not is_untrained_name(spec):
                raise InputError(unknown_model_message(spec))
            logger.warning("model %r has no trained weights: its predictions are meaningless until trained "
                           "(`crdetect train`)", spec)
            detector = CRDetector(create_model(spec), device=device, name=f"{spec} (untrained)", precision=precision,
                                  backend=backend)
    if threshold is not None:
        detector.threshold = check_threshold(threshold)
    detector.source_veto = source_veto
    return detector.compile() if compile else detector


@functools.lru_cache(maxsize=2)
def cached_detector(model: str, device: str, threshold: float | None, threads: int | None, compile: bool = False,
                    precision: str = "auto", source_veto: bool | VetoParameters = True,
                    backend: str = "torch") -> CRDetector:
    """One detector per process and set of options, loaded on first use: batches and pipelines that call the
    drop-ins once per frame load the model once."""
    if threads:
        torch.set_num_threads(threads)
    return load_detector(model, device=device, threshold=threshold, compile=compile, precision=precision,
                         source_veto=source_veto, backend=backend)
