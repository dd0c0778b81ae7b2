"""Detectors by name: a shipped model (:mod:`crdetect.pretrained`), a checkpoint file, a registry network, or a
module; and the one detector each process keeps for the batch engine and the drop-ins."""

from __future__ import annotations

import difflib
import functools
import logging
import os
from pathlib import Path

from ..device import detection_device, require_torch, resolve_precision
from ..errors import InputError
from ..preprocessing import Preprocessing
from ..pretrained import PretrainedModel, list_pretrained, pretrained_entry, verify
from ..validation import check_threshold
from ..veto import VetoParameters
from .backends import OpenVINONetwork, resolve_backend
from .detector import CRDetector

logger = logging.getLogger(__name__)


def shipped_weights(name: str) -> Path | None:
    """Path of the checkpoint shipped in the package for ``name`` (e.g. ``"default"``), if any."""
    entry = pretrained_entry(name)
    return entry.path if entry is not None else None


def shipped_model_names() -> list[str]:
    """Names of the trained models shipped in the package (``default`` first)."""
    return list_pretrained()


def _registry_names() -> list[str]:
    """The registry's architectures (torch's; none without it)."""
    from ..device import torch_available

    if not torch_available():
        return []
    from ..models import list_models

    return list_models()


def unknown_model_message(name: str) -> str:
    """Why ``name`` is not a model, with the close matches, the shipped (trained) models, and the registry
    networks that have no trained weights (if any)."""
    shipped = shipped_model_names()
    untrained = [n for n in _registry_names() if n not in shipped]
    close = difflib.get_close_matches(name, list(dict.fromkeys(shipped + untrained)), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    extra = f" Untrained registry networks, for experiments only: {', '.join(untrained)}." if untrained else ""
    return (f"unknown model {name!r}.{hint} Trained models shipped with crdetect: {', '.join(shipped) or 'none'}; "
            f"or a checkpoint file (.pt).{extra} (`crdetect models` lists them all)")


def is_untrained_name(model) -> bool:
    """Whether ``model`` names a registry network without weights (neither shipped nor a checkpoint file)."""
    spec = str(model)
    return (isinstance(model, (str, os.PathLike)) and shipped_weights(spec) is None and not Path(spec).is_file()
            and spec in _registry_names())


def load_detector(model="default", *, device: str = "auto", threshold: float | None = None, compile: bool = False,
                  precision: str = "auto", source_veto: bool | VetoParameters = True, backend: str = "auto",
                  threads: int | None = None) -> CRDetector:
    """Build a :class:`CRDetector` from a shipped model name, a registry name, a checkpoint or a module.

    By default (``auto``) the fastest measured path for the machine: a shipped model on a CPU runs in OpenVINO, in
    int8 where it ships an int8 network (``default``, ``fast``: TPR on the real frames within 0.003 of float32,
    results/int8.md), without torch; on a GPU in torch, float16. A checkpoint or module of your own needs torch
    (``pip install 'crdetect[torch]'``) and runs in it unless ``backend="openvino"``.

    Parameters
    ----------
    model : str, path or torch.nn.Module
        ``"default"`` or another shipped model (see ``crdetect models``; checked against its SHA-256); a
        checkpoint path (``.pt``); a registry name without shipped weights (an *untrained* network, for
        experiments); or a module.
    device : str
        ``"auto"`` (CUDA when torch sees a GPU), ``"cpu"``, ``"cuda"``.
    threshold : float, optional
        Override the checkpoint's default probability threshold.
    compile : bool
        Compile the network with ``torch.compile`` (:meth:`CRDetector.compile`; torch's runtime).
    precision : {"auto", "float32", "int8", "bfloat16", "float16"}
        Arithmetic of the network (:func:`crdetect.device.resolve_precision`): float32 (exact), int8 (a shipped
        network quantised with calibration, OpenVINO), bfloat16 (torch; about 2x faster on CPUs with AVX512-BF16),
        float16 (CUDA GPUs).
    source_veto : bool or VetoParameters
        Take flagged regions that look like stars out of the mask (:mod:`crdetect.veto`; on by default), with the
        default thresholds or the ones given.
    backend : {"auto", "openvino", "torch"}
        The network's runtime (:mod:`crdetect.inference.backends`).
    threads : int, optional
        OpenVINO's inference threads (the CPUs this process may use by default).
    """
    if compile and backend == "auto":
        backend = "torch"  # torch.compile is torch's
    if not isinstance(model, (str, os.PathLike)):  # a torch module
        detector = CRDetector(model, device=device, precision=precision, backend=backend, threads=threads)
    else:
        spec = str(model)
        entry = pretrained_entry(spec)
        path = None if entry is not None else (Path(spec) if (spec.endswith(".pt") or Path(spec).is_file()) else None)
        if entry is not None:
            detector = _shipped_detector(entry, device, precision, backend, threads)
        elif path is not None:
            from ..checkpoint import load_checkpoint

            require_torch(f"reading the checkpoint {path.name}")
            net, info = load_checkpoint(path)
            detector = CRDetector(net, info.preprocessing, info.threshold, device, name=f"{path.name} ({info.model_name})",
                                  info=info, precision=precision, backend=backend, threads=threads)
        elif spec == "default":
            raise InputError("no default model is shipped with this installation of crdetect; "
                             "pass --model with a checkpoint path")
        else:
            if not is_untrained_name(spec):
                raise InputError(unknown_model_message(spec))
            logger.warning("model %r has no trained weights: its predictions are meaningless until trained "
                           "(`crdetect train`)", spec)
            from ..models import create_model

            detector = CRDetector(create_model(spec), device=device, name=f"{spec} (untrained)", precision=precision,
                                  backend=backend, threads=threads)
    if threshold is not None:
        detector.threshold = check_threshold(threshold)
    detector.source_veto = source_veto
    return detector.compile() if compile else detector


def _shipped_detector(entry: PretrainedModel, device: str, precision: str, backend: str,
                      threads: int | None) -> CRDetector:
    """A detector of a shipped model: its network file in OpenVINO, or its checkpoint in torch."""
    device = detection_device(device)
    backend = resolve_backend(backend, device, precision, network_file=bool(entry.networks))
    # OpenVINO's arithmetic is checked by resolve_backend; torch's by the CRDetector it gets (once: a second check
    # would log its warnings twice)
    precision = resolve_precision(precision, device, backend, "int8" in entry.networks)
    name = f"{entry.name} ({entry.architecture})"
    preprocessing = Preprocessing.from_dict(entry.preprocessing)
    if backend == "openvino" and precision in entry.networks:
        network = OpenVINONetwork(entry.network_path(precision), precision, threads, entry.pad_multiple,
                                  entry.context_margin)
        return CRDetector(network, preprocessing, entry.threshold, name=name)
    if backend == "openvino" and precision == "int8":
        entry.network_path(precision)  # raises: no int8 network ships for this model
    require_torch(f"running {entry.name!r} in torch")
    from ..checkpoint import load_checkpoint

    net, info = load_checkpoint(verify(entry))
    return CRDetector(net, info.preprocessing, info.threshold, device, name=name, info=info, precision=precision,
                      backend=backend, threads=threads)


@functools.lru_cache(maxsize=2)
def cached_detector(model: str, device: str, threshold: float | None, threads: int | None, compile: bool = False,
                    precision: str = "auto", source_veto: bool | VetoParameters = True,
                    backend: str = "auto") -> CRDetector:
    """One detector per process and set of options, loaded on first use: batches and pipelines that call the
    drop-ins once per frame load the model once."""
    detector = load_detector(model, device=device, threshold=threshold, compile=compile, precision=precision,
                             source_veto=source_veto, backend=backend, threads=threads)
    if threads and detector.backend == "torch":
        import torch

        torch.set_num_threads(threads)
    return detector
