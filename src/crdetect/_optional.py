"""Optional dependencies: detection needs only numpy, astropy, scipy, tqdm and OpenVINO; the rest are extras
(torch among them: GPUs, training, the study, checkpoints of your own).

:func:`require` imports an optional module or raises one clear error naming the extra that installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import CRDetectError

#: What each extra is for (pyproject.toml's [project.optional-dependencies]).
EXTRAS = {"torch": "PyTorch", "train": "simulation and training", "plots": "figures and reports",
          "peers": "LA-Cosmic, deepCR and Cosmic-CoNN comparisons", "survey": "Dask clusters"}


class MissingDependencyError(CRDetectError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingDependencyError` saying ``pip install 'crdetect[extra]'``.

    Parameters
    ----------
    module : str
        Module to import (``"galsim"``, ``"matplotlib.pyplot"``...).
    extra : str
        The extra of crdetect that installs it (a key of :data:`EXTRAS`).
    purpose : str
        What needs it, for the message ("the DECam-like simulation").
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise MissingDependencyError(f"{purpose} needs {top}, which is not installed: pip install "
                                     f"'crdetect[{extra}]' (the {EXTRAS[extra]} extra) or 'crdetect[all]'") from None
