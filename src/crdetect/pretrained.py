"""Pretrained models by name, in the manner of timm's pretrained configurations: each shipped checkpoint with its
file, SHA-256, architecture, threshold and preprocessing (``weights/pretrained.json``, written by
``python scripts/pretrained_table.py`` and checked against the files by the tests).

``default`` and ``fast`` are trained for real frames; the study's ten (``deepcr_unet``, ``unet``,
``cosmic_conn``, ``att_unet``, ``tunet_2`` ...) on its DECam-like benchmark. :func:`create_model` makes any of
them by name, with its weights (``pretrained=True``) or without (the architecture alone), and
:func:`crdetect.load_detector` makes a detector of one.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CheckpointError, InputError

WEIGHTS_DIR = Path(__file__).parent / "weights"
TABLE = "pretrained.json"


@dataclass(frozen=True)
class PretrainedModel:
    """One shipped checkpoint: what it is and how to check it."""

    name: str
    file: str
    sha256: str
    architecture: str
    kwargs: dict
    threshold: float
    preprocessing: dict
    #: the network alone, for runtimes without torch: ``{"float32": {"file": ..., "sha256": ...}, "int8": ...}``
    #: (ONNX, BatchNorms folded; ``scripts/export_networks.py``)
    networks: dict = field(default_factory=dict)
    pad_multiple: int = 1
    context_margin: int = 32
    parameters: int = 0
    #: what the model was trained on (its checkpoint's description) and its test scores, for ``crdetect models``
    trained_on: str = ""
    test: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return weights_dir() / self.file

    def network_path(self, precision: str) -> Path:
        """The network file of ``precision`` (``"float32"`` or ``"int8"``), checked against its SHA-256.

        Raises
        ------
        InputError
            The model ships no network of that precision.
        CheckpointError
            The file is damaged.
        """
        if precision not in self.networks:
            have = ", ".join(self.networks) or "none"
            raise InputError(f"the shipped model {self.name!r} has no {precision} network (it has: {have})")
        entry = self.networks[precision]
        return _verified(weights_dir() / entry["file"], entry["sha256"], self.name)


def weights_dir() -> Path:
    """Where the shipped checkpoints are (a function, so that tests can point it elsewhere)."""
    return WEIGHTS_DIR


@functools.lru_cache(maxsize=4)
def _table(directory: Path) -> dict[str, PretrainedModel]:
    path = directory / TABLE
    if not path.is_file():
        return {}
    table = {}
    for name, entry in json.loads(path.read_text()).items():
        # a network file missing (a trimmed installation, a test's copy of the table): the model runs in torch
        networks = {precision: network for precision, network in entry.get("networks", {}).items()
                    if (directory / network["file"]).is_file()}
        table[name] = PretrainedModel(name=name, **{**entry, "networks": networks})
    return table


def pretrained_models() -> dict[str, PretrainedModel]:
    """The shipped models by name, ``default`` first, then ``fast``, then the study's in the table's order;
    entries whose file is missing are left out."""
    return {name: entry for name, entry in _table(weights_dir()).items() if entry.path.is_file()}


def list_pretrained() -> list[str]:
    """Names of the shipped models (``default`` first)."""
    return list(pretrained_models())


def pretrained_entry(name: str) -> PretrainedModel | None:
    """The shipped model ``name``, or None."""
    return pretrained_models().get(str(name))


def verify(entry: PretrainedModel) -> Path:
    """The entry's file, checked against its SHA-256 (a damaged installation fails here, not with odd masks).

    Raises
    ------
    CheckpointError
        The file's hash differs from the table's.
    """
    return _verified(entry.path, entry.sha256, entry.name)


def _verified(path: Path, sha256: str, name: str) -> Path:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise CheckpointError(f"the shipped model {name!r} ({path}) is damaged: its SHA-256 is {digest}, "
                              f"expected {sha256}; reinstall crdetect")
    return path


def network_files(stem: str, directory: Path) -> dict[str, Path]:
    """The network files of the checkpoint ``stem`` in ``directory``, by precision."""
    files = {"float32": directory / f"{stem}.onnx", "int8": directory / f"{stem}.int8.onnx"}
    return {precision: path for precision, path in files.items() if path.is_file()}


def describe_weights(directory: Path | None = None) -> dict[str, dict]:
    """The table of the checkpoints in ``directory`` (the package's by default), read from the files themselves:
    what ``weights/pretrained.json`` must hold."""
    from .checkpoint import load_checkpoint
    from .models import count_parameters

    directory = directory or weights_dir()
    files = sorted(directory.glob("*.pt"), key=lambda p: (p.stem != "default", p.stem != "fast", p.stem))
    table = {}
    for path in files:
        model, info = load_checkpoint(path)
        networks = {precision: {"file": file.name, "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
                    for precision, file in network_files(path.stem, directory).items()}
        table[path.stem] = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                            "architecture": info.model_name, "kwargs": dict(info.model_kwargs),
                            "threshold": float(info.threshold), "preprocessing": info.preprocessing.to_dict(),
                            "networks": networks, "pad_multiple": int(getattr(model, "pad_multiple", 1)),
                            "context_margin": int(getattr(model, "context_margin", 32)),
                            "parameters": count_parameters(model), "trained_on": info.extra.get("trained_on") or "",
                            "test": {k: float(v) for k, v in (info.extra.get("test") or {}).items()}}
    return table


def create_model(name: str, pretrained: bool = False, **kwargs):
    """A network by name: a shipped model (``"default"``, ``"fast"``, ``"unet"``...) or any registry architecture,
    with its trained weights when ``pretrained`` (timm's ``create_model(name, pretrained=True)``).

    Without ``pretrained`` a shipped name gives its architecture (with the shipped model's constructor arguments,
    updated by ``kwargs``), untrained. ``pretrained=True`` takes no ``kwargs``: the weights fix the architecture.

    Raises
    ------
    InputError
        ``pretrained=True`` for a name without shipped weights, or ``kwargs`` with it.
    """
    from . import models

    entry = pretrained_entry(name)
    if not pretrained:
        if entry is None:
            return models.create_model(name, **kwargs)
        return models.create_model(entry.architecture, **{**entry.kwargs, **kwargs})
    if entry is None:
        raise InputError(f"no pretrained weights ship for {name!r}; pretrained models: {', '.join(list_pretrained())}")
    if kwargs:
        raise InputError(f"create_model({name!r}, pretrained=True) takes no constructor arguments (got "
                         f"{sorted(kwargs)}): the shipped weights fix the architecture")
    from .checkpoint import load_checkpoint

    model, _ = load_checkpoint(verify(entry))
    return model
