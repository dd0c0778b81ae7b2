"""Detection over many files: one engine of three stages (read, detect, write; :mod:`.stages`), run in this
process with the stages in threads (:mod:`.streaming`), in worker processes or on a Dask cluster
(:mod:`.batch`), with the options of ``crdetect detect`` (:mod:`.options`)."""

from .batch import BatchSummary, plan_outputs, run_batch, wrote_everything
from .options import DetectOptions, detector_for, encoder_count, frame_noise
from .stages import SUMMARY_COLUMNS, FileJob, RunStopped, detect_file
from .streaming import run_streaming

__all__ = ["BatchSummary", "DetectOptions", "FileJob", "RunStopped", "SUMMARY_COLUMNS",
           "detect_file", "detector_for", "encoder_count", "frame_noise", "plan_outputs", "run_batch",
           "run_streaming", "wrote_everything"]
