"""Inference: a CR network on frames of any size.

- :mod:`.detector` -- :class:`CRDetector`, whose ``predict`` is the chain of stages of :mod:`.stages`;
- :mod:`.tiling` -- the network over exact overlapping tiles (a sliding window);
- :mod:`.saturation` -- saturated stars and bleed trails, never flagged;
- :mod:`.result` -- :class:`DetectionResult` and the one way its planes combine;
- :mod:`.loader` -- detectors by name (:func:`load_detector`) and the per-process cache.
"""

from ..device import check_precision, cpu_has_native_bfloat16, resolve_device, resolve_precision, to_host
from ..pretrained import WEIGHTS_DIR
from .detector import CRDetector
from .loader import (
                     cached_detector,
                     is_untrained_name,
                     load_detector,
                     shipped_model_names,
                     shipped_weights,
                     unknown_model_message,
)
from .result import DetectionResult
from .saturation import plateau_saturation, saturated_regions
from .tiling import DEFAULT_BATCH_SIZE, DEFAULT_TILE, balanced_tile, tile_origins

__all__ = ["CRDetector", "DEFAULT_BATCH_SIZE", "DEFAULT_TILE", "DetectionResult", "WEIGHTS_DIR", "balanced_tile",
           "cached_detector", "check_precision", "cpu_has_native_bfloat16", "is_untrained_name", "load_detector",
           "plateau_saturation", "resolve_device", "resolve_precision", "saturated_regions", "shipped_model_names",
           "shipped_weights", "tile_origins", "to_host", "unknown_model_message"]
