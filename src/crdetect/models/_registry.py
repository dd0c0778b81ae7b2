"""Model registry: every architecture of the study by name (timm-style).

``@register_model`` adds a factory function under its own name; :func:`create_model` builds it,
:func:`list_models` lists names (optionally filtered by a shell-style pattern). The CLI, configs and
parametrised tests all go through this registry, so a new experiment row is one registry entry.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

import torch.nn as nn

from ..errors import CRDetectError

_MODEL_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
_MODEL_DESCRIPTIONS: dict[str, str] = {}


class UnknownModelError(CRDetectError, ValueError):
    """Raised when a model name is not in the registry."""


def register_model(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``factory`` under its ``__name__``; the first docstring line describes it."""
    name = factory.__name__
    if name in _MODEL_FACTORIES:
        raise ValueError(f"model {name!r} is already registered")
    _MODEL_FACTORIES[name] = factory
    _MODEL_DESCRIPTIONS[name] = (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else ""
    return factory


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern`` (e.g. ``"tunet_*"``), sorted."""
    return sorted(n for n in _MODEL_FACTORIES if fnmatch.fnmatchcase(n, pattern))


def model_description(name: str) -> str:
    """One-line description of a registered model."""
    check_model_name(name)
    return _MODEL_DESCRIPTIONS[name]


def check_model_name(name: str) -> None:
    """Raise :class:`UnknownModelError` with close matches when ``name`` is not registered."""
    if name in _MODEL_FACTORIES:
        return
    close = difflib.get_close_matches(name, list(_MODEL_FACTORIES), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Available models: {', '.join(list_models())} "
        "(run `crdetect models` for the table)."
    )


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` override the registered defaults.

    The returned module maps (N, 1, H, W) float32 to (N, 1, H, W) logits for any H, W.
    The name and keyword arguments are stored on the module (``model.model_name``,
    ``model.model_kwargs``) so that a checkpoint can rebuild it.
    """
    check_model_name(name)
    try:
        model = _MODEL_FACTORIES[name](**kwargs)
    except TypeError as err:  # unexpected keyword: name the model and the bad argument
        raise ValueError(f"cannot build model {name!r} with arguments {kwargs}: {err}") from None
    # Remember how the model was made so that a checkpoint can rebuild it exactly.
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model


def uses_group_norm(model: nn.Module) -> bool:
    """Whether ``model`` has GroupNorm layers (Cosmic-CoNN): channels-last memory measured slower for them on
    CUDA, faster for the others (training and inference choose their memory format by this)."""
    return any(isinstance(m, nn.GroupNorm) for m in model.modules())


def count_parameters(model: nn.Module) -> int:
    """Number of unique trainable parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
