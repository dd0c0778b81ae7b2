"""What ``crdetect detect`` was asked to do, and the one detector each process keeps for it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class DetectOptions:
    """What ``crdetect detect`` was asked to do (picklable: it travels to worker processes)."""

    model: str = "default"
    out_dir: str = "crdetect_out"
    hdu: str | None = None
    threshold: float | None = None
    device: str = "auto"
    tile: int | None = 1024
    overwrite: bool = False
    skip_existing: bool = False
    inpaint: str | None = None  # a cleaning method (crdetect.cleaning.METHODS) for a CLEANED extension
    saturation: float | None = None  # overrides the header's SATURATE
    full_frame: bool = False  # ignore DATASEC/TRIMSEC and run on every pixel (overscan included)
    threads: int | None = None
    gain: float | None = None  # e-/ADU; with read_noise, the noise comes from the detector, not the pixels
    read_noise: float | None = None  # e-
    sky: float | None = None  # ADU above bias; estimated from the frame if omitted
    noise_from_header: bool = False  # take gain and read noise from the header (GAIN, RDNOISE, ...)
    compile: bool = False  # torch.compile the network (pays off over many frames)
    precision: str = "auto"  # int8 on a CPU for default and fast, float32 for other models, float16 on a GPU
    mask_only: bool = False  # write only the crdetect extensions, not a copy of the input's HDUs
    file_masks: bool = True  # use a file's own bad-pixel/DQ plane as the input mask of its science image
    bad_pixel_mask: str | None = None  # a separate FITS mask (non-zero = bad) for every input
    grow: int = 0  # grow the CR mask by this many pixels
    encoders: int | None = None  # threads compressing outputs (None: several beside a GPU, none on a CPU)
    source_veto: bool = True  # take flagged regions that look like stars out of the mask (crdetect.veto)
    backend: str = "auto"  # the network's runtime: OpenVINO on a CPU for the shipped models, else torch


def hdu_suffix(hdu: str | int | None) -> str:
    """Output-name suffix: ``_crmask``, or ``_hdu<N>_crmask`` when one HDU was picked with ``--hdu``, so that
    runs on different amplifiers of one file write different outputs."""
    if hdu is None or hdu == "all":
        return "_crmask"
    return "_hdu" + re.sub(r"[^A-Za-z0-9.+-]", "_", str(hdu)) + "_crmask"


def frame_noise(frame, options: DetectOptions, source: str):
    """Sky and noise used to scale a :class:`~crdetect.frame.Frame`, or ``None`` to let the detector estimate
    them from the pixels.

    With gain and read noise (options, or the frame's header with ``noise_from_header``) the noise is the
    detector's, sqrt(sky * gain + read_noise^2) / gain, with the sky given or estimated robustly. The
    pixel estimate is unit-free and usually right; the detector's noise is better where hits or
    sources cover much of the frame (on M51 with 14 % of pixels hit, the pixel estimate is 33 % high).
    The frame must be bias-subtracted for this (the sky is taken as photons). Only the data section is
    used, and the frame's masked pixels are left out of the estimates.
    """
    from ..frame import GAIN_KEYWORDS, READ_NOISE_KEYWORDS, required_header_number
    from ..preprocessing import FrameStatistics, detector_statistics, frame_statistics

    if options.noise_from_header or options.gain is not None or options.read_noise is not None:
        known = {"GAIN": frame.gain, "RDNOISE": frame.read_noise} if options.noise_from_header else {}
        gain = required_header_number(options.gain, known, GAIN_KEYWORDS, "gain", source)
        read_noise = required_header_number(options.read_noise, known, READ_NOISE_KEYWORDS, "read noise", source)
        return detector_statistics(frame.pixels, gain, read_noise, sky=options.sky, ignore=frame.section_mask)
    if options.sky is not None:
        return FrameStatistics(sky=options.sky, sigma=frame_statistics(frame.pixels, ignore=frame.section_mask).sigma)
    return None


def detector_for(options: DetectOptions):
    """The process's cached detector for ``options`` (the CLI's up-front check fills the cache)."""
    from ..inference import cached_detector

    return cached_detector(options.model, options.device, options.threshold, options.threads, options.compile,
                           options.precision, options.source_veto, options.backend)


def encoder_count(options: DetectOptions, device: str) -> int:
    """Threads that encode (compress) the outputs of a streaming run: ``options.encoders`` if given, else none
    on a CPU (the network keeps every core busy there and the writer thread encodes) and up to 8 (half the
    cores) beside a GPU.

    Compressing CRPROB takes about 0.1 s per DECam CCD; astropy releases the GIL in its Rice coder, so threads
    share the work. On an H200 with 16 cores (results/gpu_session2/bench_detect_e2e_gpu.txt), 24 DECam CCDs
    end to end: 7.1 CCDs/s with the writer thread encoding, 9.9 / 10.2 / 14.3 with 2 / 4 / 8 encoder threads.
    (Processes were slower than none, 4.5 CCDs/s: shipping 40 MB of maps per CCD through a pipe costs more
    than it saves.)"""
    if options.encoders is not None:
        return options.encoders
    if str(device).startswith("cpu"):
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // 2))
