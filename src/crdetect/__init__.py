"""crdetect: deep-learning cosmic-ray detection for astronomical CCD images."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public names and the submodule of each, imported on first use (PEP 562): ``import crdetect.io.writing``
# in an output-encoding process, or ``crdetect --help``, then does not pay torch's 2 s import.
_LAZY = {"load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
         "CheckpointError": "errors", "CRDetectError": "errors", "InputError": "errors", "OutputError": "errors",
         "Frame": "frame", "CRDetector": "inference", "DetectionResult": "inference", "load_detector": "inference",
         "cosmicray_crdetect": "interfaces", "detect_cosmics": "interfaces", "grow_mask": "interfaces",
         "set_dq_flag": "interfaces", "count_parameters": "models", "create_model": "pretrained",
         "list_pretrained": "pretrained", "VetoParameters": "veto", "inpaint": "cleaning",
         "list_models": "models", "register_model": "models", "FrameStatistics": "preprocessing",
         "Preprocessing": "preprocessing"}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
