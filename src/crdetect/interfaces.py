"""The calls pipelines already make to find cosmic rays, answered by crdetect's networks.

- :func:`detect_cosmics`: astroscrappy's ``detect_cosmics(indat, inmask=None, ...) -> (crmask, cleanarr)``
  (used by DRAGONS, PypeIt and many scripts): change the import, keep the call.
- :func:`cosmicray_crdetect`: in the manner of ccdproc's ``cosmicray_lacosmic(ccd, ...)``: a ``CCDData`` in,
  a new ``CCDData`` out with the CR mask OR-ed into ``.mask``.
- :func:`set_dq_flag`: set a chosen bit (8: cosmic ray, in BANZAI's and DRAGONS' DQ conventions) of an
  integer data-quality array where the mask is set.
- :func:`grow_mask`: grow a CR mask by N pixels (the halo of charge around a hit that falls under 2 sigma).

Inputs are never modified; input masks are honoured (never flagged, kept out of the statistics).
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import InputError
from .masks import grow_mask

__all__ = ["cosmicray_crdetect", "detect_cosmics", "grow_mask", "set_dq_flag"]

logger = logging.getLogger(__name__)

#: astroscrappy parameters that tune LA-Cosmic itself; accepted (so calls written for astroscrappy run
#: unchanged) and ignored, since the network replaces the algorithm they tune.
LACOSMIC_ONLY = frozenset({"inbkg", "invar", "sigclip", "sigfrac", "objlim", "niter", "sepmed", "cleantype", "fsmode",
                           "psfmodel", "psffwhm", "psfsize", "psfk", "psfbeta", "verbose", "pssl", "gain_apply"})


def _detector(model: str, device: str, precision: str):
    """The process's cached detector (:func:`crdetect.inference.cached_detector`): pipelines call once per frame."""
    from .inference import cached_detector

    return cached_detector(model, device, None, None, precision=precision)


def set_dq_flag(dq: np.ndarray, mask: np.ndarray, flag: int = 8) -> np.ndarray:
    """A copy of the integer data-quality array ``dq`` with ``flag`` OR-ed in where ``mask`` is set.

    Parameters
    ----------
    dq : ndarray of int
        The DQ/BPM array (left untouched); other flags are kept.
    mask : ndarray of bool
        Where to set the flag (e.g. the CR mask), same shape.
    flag : int
        The flag's value, a power of two: 8 is "cosmic ray" in BANZAI's and DRAGONS' conventions.
    """
    dq = np.asarray(dq)
    if dq.dtype.kind not in "iu":
        raise InputError(f"dq must be an integer array, got {dq.dtype}")
    if flag <= 0 or flag & (flag - 1) or flag > np.iinfo(dq.dtype).max:
        raise InputError(f"flag must be a power of two that fits in {dq.dtype}, got {flag}")
    if np.shape(mask) != dq.shape:
        raise InputError(f"mask has shape {np.shape(mask)} but dq has shape {dq.shape}")
    out = dq.copy()
    out[np.asarray(mask, bool)] |= np.array(flag, dq.dtype)
    return out


def _run(indat, inmask, *, gain, readnoise, satlevel, model, threshold, grow, device, precision, tile, sigma=None):
    """Detection shared by both interfaces: returns the image (float32), the input mask, the CR mask and the
    result."""
    from .preprocessing import FrameStatistics, detector_statistics, frame_statistics
    from .validation import as_image, check_number, check_threshold, split_input_mask

    image, mask = split_input_mask(indat, inmask)
    image = as_image(image, "indat")
    threshold = check_threshold(threshold)
    # the numbers are checked as the CLI checks them: a NaN read noise would silently flag nothing
    gain = check_number(gain, "gain", 0, above=True)
    readnoise = check_number(readnoise, "readnoise", 0)
    # astroscrappy takes any level; an infinite one means no saturation, as None does here (anything that is not a
    # number is left to check_number's message)
    level = getattr(satlevel, "value", satlevel)
    infinite = isinstance(level, (int, float, np.number)) and not isinstance(level, bool) and np.isposinf(level)
    satlevel = None if infinite else check_number(satlevel, "satlevel", 0, above=True)
    grow = check_number(grow, "grow", 0, integer=True, optional=False)
    tile = check_number(tile, "tile", 0, integer=True) or None
    statistics = None
    if sigma is not None:  # the CCDData's own uncertainty
        statistics = FrameStatistics(sky=frame_statistics(image, ignore=mask).sky, sigma=float(sigma))
    elif gain is not None or readnoise is not None:
        # the detector's noise model, as LA-Cosmic's (the frame includes its sky, in counts); an omitted number
        # takes astroscrappy's default, 1.0 e-/ADU or 6.5 e-
        statistics = detector_statistics(image, 1.0 if gain is None else gain, 6.5 if readnoise is None else readnoise,
                                         ignore=mask)
    detector = _detector(str(model), device, precision)
    result = detector.predict(image, threshold=threshold, tile=tile, statistics=statistics, saturation=satlevel,
                              mask=mask)
    crmask = result.grown(grow) if grow else result.mask
    return image, mask, crmask, result


def detect_cosmics(indat, inmask=None, *, gain: float | None = None, readnoise: float | None = None,
                   satlevel: float | None = 65536.0, model: str = "default", threshold: float | None = None,
                   grow: int = 0, clean: bool = True, return_probability: bool = False, device: str = "auto",
                   precision: str = "auto", tile: int | None = 1024, inpaint_method: str = "maskfill",
                   **lacosmic_options):
    """Find cosmic rays with a crdetect network, called like ``astroscrappy.detect_cosmics``.

    Parameters
    ----------
    indat : array_like
        The 2-D frame, sky included, in counts (ADU or electrons); never modified. A masked array's mask
        is used as ``inmask`` too.
    inmask : array_like of bool, optional
        Bad pixels (True): never flagged, kept out of the sky, noise and background estimates, and not
        used to clean their neighbours.
    gain, readnoise : float, optional
        e-/ADU and e-, as for astroscrappy. Given, the noise that scales the network's input is the
        detector's, sqrt(sky * gain + readnoise^2) / gain (an omitted one takes astroscrappy's default,
        1.0 or 6.5); both omitted, the noise is measured on the pixels (the network's own default, which
        needs no calibration; astroscrappy would assume 1.0 and 6.5).
    satlevel : float or None
        Saturation level in the units of ``indat`` (astroscrappy's default 65536): saturated stars and
        their bleed trails are never flagged. None: read off flat plateaus at the top of the frame.
    model : str
        A shipped model (``"default"``, ``"fast"``) or a checkpoint path.
    threshold : float, optional
        Probability threshold (0-1); the model's by default.
    grow : int
        Grow the CR mask by this many pixels (8-connected).
    clean : bool
        Compute ``cleanarr`` (flagged pixels filled from their unflagged neighbours by ``inpaint_method``, in
        the units of ``indat``); False returns ``None`` in its place (faster).
    inpaint_method : {"maskfill", "median"}
        How ``cleanarr`` is filled (:func:`crdetect.inpaint`): maskfill, the most accurate measured
        (``results/inpainting/``), or the median of the unflagged 5 x 5 neighbours (astroscrappy's ``medmask``).
    return_probability : bool
        Also return the CR probability map (float32).
    device, precision, tile
        As for :func:`crdetect.load_detector` and :meth:`crdetect.CRDetector.predict`.
    **lacosmic_options
        astroscrappy's LA-Cosmic parameters (``sigclip``, ``objlim``, ``niter``, ``cleantype``...): accepted so
        existing calls run, and ignored.

    Returns
    -------
    crmask : ndarray of bool
        True at cosmic-ray pixels.
    cleanarr : ndarray of float32 or None
        The frame with the CR pixels cleaned.
    probability : ndarray of float32
        Only with ``return_probability``.
    """
    from .cleaning import check_method

    if clean:
        check_method(inpaint_method)  # before the detection, not after it
    unknown = set(lacosmic_options) - LACOSMIC_ONLY
    if unknown:
        raise TypeError(f"detect_cosmics() got unexpected keyword arguments {sorted(unknown)}")
    if lacosmic_options:
        logger.debug("LA-Cosmic parameters %s do not apply to a network and are ignored", sorted(lacosmic_options))
    from .cleaning import inpaint

    image, mask, crmask, result = _run(indat, inmask, gain=gain, readnoise=readnoise, satlevel=satlevel, model=model,
                                       threshold=threshold, grow=grow, device=device, precision=precision, tile=tile)
    cleanarr = inpaint(image, crmask, inpaint_method, exclude=mask) if clean else None
    if return_probability:
        return crmask, cleanarr, result.probability
    return crmask, cleanarr


def _frame_sigma(ccd, mask: np.ndarray | None) -> float | None:
    """The frame's typical pixel noise from a CCDData's uncertainty (std, variance or inverse variance)."""
    uncertainty = getattr(ccd, "uncertainty", None)
    if uncertainty is None:
        return None
    kind = getattr(uncertainty, "uncertainty_type", "")
    values = np.asarray(uncertainty.array, np.float64)
    std = {"std": values, "var": np.sqrt(np.abs(values)),
           "ivar": 1 / np.sqrt(np.where(values > 0, values, np.nan))}.get(kind)
    if std is None:
        return None
    usable = np.isfinite(std) & (std > 0) & (True if mask is None else ~mask)
    return float(np.median(std[usable])) if usable.any() else None


def cosmicray_crdetect(ccd, *, model: str = "default", threshold: float | None = None, grow: int = 0,
                       gain: float | None = None, readnoise: float | None = None, satlevel: float | None = None,
                       clean: bool = False, return_probability: bool = False, device: str = "auto",
                       precision: str = "auto", tile: int | None = 1024, inpaint_method: str = "maskfill"):
    """Find cosmic rays in a ``CCDData`` with a crdetect network, in the manner of ccdproc's ``cosmicray_lacosmic``.

    Parameters
    ----------
    ccd : astropy.nddata.CCDData
        The frame; never modified. Its ``.mask`` is the input mask (never flagged, kept out of the
        statistics); its ``.uncertainty`` (std, variance or inverse variance), when present and neither
        ``gain`` nor ``readnoise`` is given, sets the noise that scales the network's input.
    model, threshold, grow, device, precision, tile
        As for :func:`detect_cosmics`.
    gain, readnoise : float or Quantity, optional
        Noise from the detector, as in :func:`detect_cosmics` (units are dropped: pass the values that
        match ``ccd.unit``).
    satlevel : float, optional
        Saturation level in ``ccd.unit``; default the header's ``SATURATE`` (or synonyms), else flat
        plateaus at the top of the frame.
    clean : bool
        Fill the CR pixels of ``.data`` from their unflagged neighbours with ``inpaint_method`` (ccdproc always
        cleans; here it is asked for).
    inpaint_method : {"maskfill", "median"}
        As for :func:`detect_cosmics`.
    return_probability : bool
        Also return the CR probability map.

    Returns
    -------
    CCDData
        A new CCDData: ``.mask`` = the input mask OR the CR mask (other flags never lost); ``.data``
        cleaned with ``clean``; ``.meta`` gains ``CRMODEL``, ``CRTHRESH``, ``CRNPIX``; unit unchanged.
    probability : ndarray of float32
        Only with ``return_probability``.
    """
    from astropy.nddata import CCDData

    from .cleaning import inpaint
    from .frame import SATURATION_KEYWORDS, header_number

    if not isinstance(ccd, CCDData):
        raise InputError(f"cosmicray_crdetect takes a CCDData, got {type(ccd).__name__}; for arrays use "
                         "crdetect.detect_cosmics(array, inmask=...)")
    own_mask = None if ccd.mask is None else np.asarray(ccd.mask, bool)
    if own_mask is not None and own_mask.shape != ccd.data.shape:
        raise InputError(f"the CCDData's mask has shape {own_mask.shape} but its data {ccd.data.shape}")
    sigma = _frame_sigma(ccd, own_mask) if gain is None and readnoise is None else None
    if satlevel is None:
        satlevel = header_number(ccd.meta, SATURATION_KEYWORDS) if ccd.meta is not None else None
    image, mask, crmask, result = _run(ccd.data, own_mask, gain=gain, readnoise=readnoise, satlevel=satlevel,
                                       model=model, threshold=threshold, grow=grow, device=device, precision=precision,
                                       tile=tile, sigma=sigma)
    out = ccd.copy()
    out.mask = crmask.copy() if own_mask is None else own_mask | crmask
    if clean:
        cleaned = inpaint(image, crmask, inpaint_method, exclude=mask)
        dtype = np.asarray(ccd.data).dtype
        out.data = cleaned.astype(dtype) if dtype.kind == "f" else cleaned  # integers cannot hold medians
    cards = {"CRMODEL": (_detector(str(model), device, precision).name[:68], "crdetect model of the CR mask"),
             "CRTHRESH": (float(result.threshold), "CR probability threshold"),
             "CRNPIX": (int(crmask.sum()), "pixels flagged as cosmic rays")}
    for key, (value, comment) in cards.items():
        out.meta[key] = (value, comment) if hasattr(out.meta, "comments") else value  # FITS header or dict
    if return_probability:
        return out, result.probability
    return out
