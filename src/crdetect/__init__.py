"""crdetect: deep-learning cosmic-ray detection for astronomical CCD images."""

__version__ = "0.1.0"

from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .errors import CheckpointError, CRDetectError, InputError, OutputError  # noqa: E402
from .frame import Frame  # noqa: E402
from .inference import CRDetector, DetectionResult, load_detector  # noqa: E402
from .interfaces import cosmicray_crdetect, detect_cosmics, grow_mask, set_dq_flag  # noqa: E402
from .models import count_parameters, create_model, list_models, register_model  # noqa: E402
from .preprocessing import FrameStatistics, Preprocessing  # noqa: E402

__all__ = ["CRDetector", "CRDetectError", "CheckpointError", "DetectionResult", "Frame", "FrameStatistics", "InputError",
           "OutputError", "Preprocessing", "__version__", "cosmicray_crdetect", "count_parameters", "create_model",
           "detect_cosmics", "grow_mask", "list_models", "load_checkpoint", "load_detector", "register_model",
           "save_checkpoint", "set_dq_flag"]
