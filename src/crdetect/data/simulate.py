"""DECam-like frames with real cosmic-ray footprints, cut into 256 x 256 patches (the study's benchmark).

A frame (2048 x 4096 px of a DECam CCD by default) gets a per-band sky, stars with a power-law
magnitude distribution (bright ones saturate and bleed along columns), Sersic galaxies (GalSim),
a Moffat PSF of random seeing, Poisson and read noise, a few bad columns and hot pixels (labelled
"ignore"), and cosmic rays from the real footprint library (:mod:`crdetect.data.inject`).

Label choice: a pixel is a CR pixel when the injected charge is at least ``label_nsigma`` (2) times the pixel's
noise (sky + read noise) and the pixel is not saturated. Fainter fringe pixels of a footprint are invisible in
the data and would only teach the network to guess.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import __version__
from .._optional import require
from ..preprocessing import frame_statistics, noise_from_detector
from .augment import WEIGHT_SCALE
from .consecutive import median_weight_numpy
from .inject import CRLibrary, add_stamp, inject_crs, load_cr_library
from .patches import PATCH, PatchWriter
from .presets import BANDS, PRESETS, Preset, plan, preset_with_patch  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

PIXEL_SCALE = 0.263  # arcsec / px (DECam)


@dataclass(frozen=True)
class DetectorModel:
    """A CCD like DECam's (Flaugher et al. 2015)."""

    shape: tuple[int, int] = (4096, 2048)  # rows, columns
    gain: float = 4.0  # e- / ADU
    read_noise: float = 6.0  # e-
    full_well: float = 1.6e5  # e-
    adc_max: float = 65535.0  # ADU
    pixel_scale: float = PIXEL_SCALE  # arcsec / px (of a binned pixel where the readout is binned)


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines one simulated frame population."""

    detector: DetectorModel = field(default_factory=DetectorModel)
    exposure_s: tuple[float, float] = (30.0, 200.0)
    seeing_arcsec: tuple[float, float] = (0.8, 1.6)
    moffat_beta: float = 3.5
    stars_per_mpix: float = 50.0
    star_mag: tuple[float, float] = (11.0, 24.0)
    galaxies_per_mpix: float = 150.0
    galaxy_mag: tuple[float, float] = (18.0, 25.0)
    # Large nearby galaxies filling part of the frame (none in the DECam benchmark; used to train
    # detectors that must find hits on bright extended backgrounds, as in M51-like fields).
    bright_galaxies: tuple[int, int] = (0, 0)
    bright_galaxy_mag: tuple[float, float] = (10.0, 14.0)
    bright_galaxy_radius_arcsec: tuple[float, float] = (5.0, 30.0)
    bad_columns: tuple[int, int] = (1, 4)
    hot_pixels_per_mpix: float = 10.0
    cr_rate_scale: float = 6.0  # more hits than nature, so that patches carry enough CR pixels
    cr_rate_scale_max: float | None = None  # if set, each frame's scale is log-uniform in [cr_rate_scale, this]
    cr_track_fraction: float = 0.1  # long grazing tracks of a 250 um thick sensor
    label_nsigma: float = 2.0
    # Sources that are not round (none in the DECam benchmark; the evaluation set of
    # crdetect.evaluation.sources and training against false detections on them use these):
    trail_px: tuple[float, float] = (0.0, 0.0)  # non-sidereal tracking: every source trailed this long, px
    psf_ellipticity: tuple[float, float] = (0.0, 0.0)  # guiding errors, wind shake: PSF 1 - b/a per frame
    donut_fraction: float = 0.0  # fraction of frames with a defocused (donut) PSF
    moving_objects: tuple[int, int] = (0, 0)  # asteroids per frame, each trailed in its own direction
    moving_trail_px: tuple[float, float] = (5.0, 60.0)
    moving_mag: tuple[float, float] = (17.5, 22.0)
    # a mixture of frame kinds (names of FRAME_KINDS with the fraction of frames of each; the rest are
    # sidereal), for training against false detections on such sources: (("elongated", 0.2), ...)
    kind_fractions: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        unknown = [name for name, _ in self.kind_fractions if name not in FRAME_KINDS]
        if unknown:
            raise ValueError(f"unknown frame kinds {unknown}; choose from {', '.join(FRAME_KINDS)}")
        total = sum(fraction for _, fraction in self.kind_fractions)
        if any(fraction < 0 for _, fraction in self.kind_fractions) or total > 1 + 1e-9:
            raise ValueError(f"kind fractions must be >= 0 and sum to at most 1, got {self.kind_fractions}")


#: Kinds of frame besides the benchmark's round PSFs under sidereal tracking, as changes to
#: :class:`SimulationConfig` (used by the evaluation set of crdetect.evaluation.sources and, through
#: ``kind_fractions``, in training sets). Sources in them are not cosmic rays; a CR crossing one stays one.
FRAME_KINDS: dict[str, dict] = {
    "sidereal": {},
    "trailed": {"trail_px": (20.0, 60.0)},  # non-sidereal tracking (asteroid follow-up)
    # the same on a small telescope, binned: sharp trails as narrow as grazing CR tracks
    "trailed_sharp": {"trail_px": (20.0, 60.0), "seeing_arcsec": (0.39, 0.66)},
    "elongated": {"psf_ellipticity": (0.3, 0.8)},  # guiding errors, wind shake
    "moving": {"moving_objects": (8, 20)},  # asteroids among round stars
    "undersampled": {"seeing_arcsec": (0.39, 0.66)},  # FWHM 1.5-2.5 px
    "donut": {"donut_fraction": 1.0},  # defocused
}


@dataclass
class Frame:
    """A simulated frame in ADU with its labels and conditions."""

    image: np.ndarray  # float32 ADU, sky included
    cr_mask: np.ndarray  # bool
    ignore: np.ndarray  # bool: bad columns, hot pixels
    band: str
    exposure_s: float
    seeing_arcsec: float
    sky_adu: float
    gain: float
    read_noise: float
    n_hits: int
    saturated: np.ndarray  # bool
    cr_charge_adu: np.ndarray | None = None  # the injected charge alone: image - cr_charge_adu is CR-free


def _power_law_mags(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """Magnitudes with dN/dm proportional to 10**(slope * m) between lo and hi (inverse CDF)."""
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + rng.random(n) * (b - a)) / slope


def line_kernel(length_px: float, angle: float) -> np.ndarray:
    """A normalised kernel of odd size: a straight segment ``length_px`` long at ``angle`` (radians) through
    its centre, drawn by bilinear splatting of points every 0.25 px (a source trailed by its motion)."""
    half = int(np.ceil(length_px / 2)) + 1
    kernel = np.zeros((2 * half + 1, 2 * half + 1), np.float64)
    t = np.linspace(-length_px / 2, length_px / 2, max(2, int(np.ceil(length_px * 4)) + 1))
    ys, xs = half + t * np.sin(angle), half + t * np.cos(angle)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(kernel, (y0 + dy, x0 + dx), w)
    return (kernel / kernel.sum()).astype(np.float32)


def _wing_fraction(flux: float, fwhm_arcsec: float, beta: float, pixel_scale: float = PIXEL_SCALE,
                   level: float = 0.5) -> float:
    """Fraction of a Moffat PSF's flux beyond the radius where its ``flux`` electrons fall to ``level``
    electrons per pixel: I(r) = flux (beta - 1) / (pi alpha^2) (1 + (r / alpha)^2)^-beta, and the flux
    beyond r is flux (1 + (r / alpha)^2)^(1 - beta); alpha from the FWHM."""
    alpha = fwhm_arcsec / pixel_scale / (2 * np.sqrt(2 ** (1 / beta) - 1))
    peak = flux * (beta - 1) / (np.pi * alpha**2)
    if peak <= level:
        return 1.0
    return float((peak / level) ** ((1 - beta) / beta))


def _psf(galsim, rng: np.random.Generator, config: SimulationConfig, fwhm: float):
    """The frame's PSF: a Moffat, defocused into a donut in ``donut_fraction`` of frames, smeared along one
    direction to an ellipticity 1 - b/a drawn from ``psf_ellipticity`` (guiding errors, wind shake)."""
    psf = galsim.Moffat(beta=config.moffat_beta, fwhm=fwhm)
    if config.donut_fraction and rng.random() < config.donut_fraction:
        # a defocused telescope images its pupil: a uniform annulus (central obstruction) blurred by the seeing
        outer = rng.uniform(1.5, 4.0)  # arcsec
        inner = outer * rng.uniform(0.3, 0.5)
        area_out, area_in = outer**2, inner**2
        pupil = galsim.Add([galsim.TopHat(outer, flux=area_out / (area_out - area_in)),
                            galsim.TopHat(inner, flux=-area_in / (area_out - area_in))])
        psf = galsim.Convolve(pupil, psf)
    ellipticity = rng.uniform(*config.psf_ellipticity) if config.psf_ellipticity[1] > 0 else 0.0
    if ellipticity > 0:
        # guiding errors and wind shake smear the seeing disc along one direction; they never make it narrower
        # across (a shear would: at |g| 0.8 it took a 4 px seeing disc to 1.3 px across, sharper than the
        # seeing allows). A Gaussian smear of FWHM w makes the long axis about sqrt(fwhm^2 + w^2) (within
        # 0.05 of the intended 1 - b/a by adaptive moments), the short axis stays the seeing's
        ellipticity = min(ellipticity, 0.9)
        smear_fwhm = fwhm * np.sqrt(1 / (1 - ellipticity) ** 2 - 1)
        smear = galsim.Gaussian(fwhm=1.0).transform(smear_fwhm, 0.0, 0.0, 0.01 * fwhm)
        psf = galsim.Convolve(psf, smear.rotate(rng.uniform(0, np.pi) * galsim.radians)).withFlux(1.0)
    return psf


def _render_sources(image: np.ndarray, rng: np.random.Generator, config: SimulationConfig, zero_point: float,
                    exposure: float, fwhm: float, offset: tuple[float, float] = (0.0, 0.0)) -> None:
    """Add stars and Sersic galaxies, convolved with the PSF (and, under non-sidereal tracking, trailed),
    and moving objects, to ``image`` (electrons).

    The sources drawn depend on ``rng``'s state alone, not on ``fwhm`` or ``offset``: generators in the same
    state give consecutive exposures of one field, each with its own seeing and pointing ``offset`` (px)."""
    galsim = require("galsim", "train", "the DECam-like simulation")
    from scipy.signal import fftconvolve

    height, width = image.shape
    mpix = height * width / 1e6
    scale = config.detector.pixel_scale
    gsparams = galsim.GSParams(maximum_fft_size=4096, folding_threshold=1e-2)
    psf = _psf(galsim, rng, config, fwhm)
    trail = rng.uniform(*config.trail_px) if config.trail_px[1] > 0 else 0.0
    tracking = line_kernel(trail, rng.uniform(0, np.pi)) if trail >= 1.0 else None

    def draw(profile, flux, kernel=tracking):
        y, x = rng.uniform(0, height) + offset[0], rng.uniform(0, width) + offset[1]
        profile = profile.withFlux(flux)
        # galsim sizes a stamp (and its FFTs) by the fraction of flux it may miss, whatever the flux: a mag-13
        # star's 30 px stamp ended 100 e- above the sky, a hard-edged square. Bright sources get the fraction
        # of a Moffat's flux beyond the radius where its wings fall below 0.5 e- per pixel (a larger stamp
        # alone would not do: the FFT's period would still be 30 px, and the star would fold into it)
        fraction = _wing_fraction(flux, fwhm, config.moffat_beta, scale)
        if fraction < gsparams.folding_threshold:
            profile = profile.withGSParams(folding_threshold=fraction, maxk_threshold=min(1e-3, fraction))
        stamp = profile.drawImage(scale=scale, offset=(x % 1 - 0.5, y % 1 - 0.5))
        arr = stamp.array
        if kernel is not None:  # the kernel is odd-sized and centred: the stamp's centre stays in place
            arr = np.clip(fftconvolve(arr, kernel, mode="full"), 0, None)
        # floor, not int(): a pointing offset may put a source's centre just off the top or left edge
        add_stamp(image, arr, int(np.floor(y)) - arr.shape[0] // 2, int(np.floor(x)) - arr.shape[1] // 2)

    moving = rng.integers(config.moving_objects[0], config.moving_objects[1] + 1) if config.moving_objects[1] else 0
    for _ in range(moving):  # (no draw at all when there are none: the benchmark's frames stay as they were)
        mag = rng.uniform(*config.moving_mag)
        kernel = line_kernel(rng.uniform(*config.moving_trail_px), rng.uniform(0, np.pi))
        draw(psf.withGSParams(gsparams), exposure * 10 ** (-0.4 * (mag - zero_point)), kernel)

    for mag in _power_law_mags(rng, rng.poisson(config.stars_per_mpix * mpix), *config.star_mag, slope=0.2):
        flux = exposure * 10 ** (-0.4 * (mag - zero_point))
        draw(psf.withGSParams(gsparams), flux)
    for mag in _power_law_mags(rng, rng.poisson(config.galaxies_per_mpix * mpix), *config.galaxy_mag, slope=0.35):
        flux = exposure * 10 ** (-0.4 * (mag - zero_point))
        n = float(rng.choice([1.0, 1.5, 2.5, 4.0]))
        radius = float(np.clip(rng.lognormal(np.log(0.6 * 10 ** (-0.1 * (mag - 20))), 0.4), 0.2, 4.0))
        ellipticity = galsim.Shear(g=min(abs(rng.normal(0, 0.3)), 0.7), beta=rng.uniform(0, np.pi) * galsim.radians)
        galaxy = galsim.Sersic(n=n, half_light_radius=radius, gsparams=gsparams).shear(ellipticity)
        draw(galsim.Convolve(galaxy, psf, gsparams=gsparams), flux)
    lo, hi = config.bright_galaxies
    for _ in range(rng.integers(lo, hi + 1) if hi > 0 else 0):
        mag = rng.uniform(*config.bright_galaxy_mag)
        radius = rng.uniform(*config.bright_galaxy_radius_arcsec)
        n = float(rng.choice([1.0, 4.0]))
        ellipticity = galsim.Shear(g=rng.uniform(0, 0.5), beta=rng.uniform(0, np.pi) * galsim.radians)
        big = galsim.Sersic(n=n, half_light_radius=radius, trunc=4 * radius, gsparams=gsparams).shear(ellipticity)
        # drawn without the PSF: the profile is far wider than the seeing
        draw(big, exposure * 10 ** (-0.4 * (mag - zero_point)))


def bleed_saturation(image_e: np.ndarray, full_well: float) -> np.ndarray:
    """Spread charge above ``full_well`` along columns (CCD blooming); returns the saturated mask.

    In each column, every run of over-full pixels is clipped to the full well and its excess charge
    fills the pixels above and below it, half each way, up to the full well: bleed trails grow in
    proportion to the excess. Charge pushed off the column's ends is lost.
    """
    saturated = np.zeros(image_e.shape, bool)
    rows = image_e.shape[0]
    for column in np.flatnonzero((image_e > full_well).any(axis=0)):
        col = image_e[:, column]
        over = np.flatnonzero(col > full_well)
        # contiguous runs of over-full pixels
        runs = np.split(over, np.flatnonzero(np.diff(over) > 1) + 1)
        for run in runs:
            excess = float((col[run] - full_well).sum())
            col[run] = full_well
            for direction, start in ((-1, run[0] - 1), (1, run[-1] + 1)):
                left, i = excess / 2, start
                while left > 0 and 0 <= i < rows:
                    room = max(full_well - col[i], 0.0)
                    take = min(room, left)
                    col[i] += take
                    left -= take
                    i += direction
        saturated[:, column] = col >= full_well * 0.999
    return saturated


@dataclass
class Scene:
    """The noiseless sky of one pointing: what consecutive exposures of a field have in common."""

    signal_e: np.ndarray  # sources, electrons
    sky_e: float
    band: str
    exposure_s: float
    seeing_arcsec: float


def render_scene(rng: np.random.Generator, config: SimulationConfig, band: str) -> Scene:
    """Draw the conditions (exposure, seeing, sky) and render the sources of one pointing."""
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; choose one of {', '.join(BANDS)}")
    sky_mag, zero_point = BANDS[band]
    exposure = float(rng.uniform(*config.exposure_s))
    fwhm = float(rng.uniform(*config.seeing_arcsec))
    # sky varies by +-0.3 mag around the dark-sky value (moon, airmass)
    sky_e = exposure * 10 ** (-0.4 * (sky_mag + rng.uniform(-0.3, 0.3) - zero_point)) * config.detector.pixel_scale**2
    signal = np.zeros(config.detector.shape, np.float32)
    _render_sources(signal, rng, config, zero_point, exposure, fwhm)
    return Scene(np.clip(signal, 0, None), float(sky_e), band, exposure, fwhm)


def expose(scene: Scene, rng: np.random.Generator, config: SimulationConfig, library: CRLibrary,
           defect_rng: np.random.Generator | None = None) -> Frame:
    """One exposure of ``scene``: Poisson noise, cosmic rays, saturation, read noise, detector defects.

    ``defect_rng`` draws the bad columns and hot pixels; pass generators with the same seed to give
    consecutive exposures of one detector the same defects.
    """
    det = config.detector
    defect_rng = rng if defect_rng is None else defect_rng
    image_e = rng.poisson(scene.signal_e + scene.sky_e).astype(np.float32)
    rate_scale = config.cr_rate_scale
    if config.cr_rate_scale_max:
        rate_scale = float(np.exp(rng.uniform(np.log(config.cr_rate_scale), np.log(config.cr_rate_scale_max))))
    charge, n_hits = inject_crs(image_e, scene.exposure_s, rng, library, rate_scale, config.cr_track_fraction)
    saturated = bleed_saturation(image_e, det.full_well)
    image_e += rng.normal(0.0, det.read_noise, det.shape).astype(np.float32)

    ignore = np.zeros(det.shape, bool)
    for _ in range(defect_rng.integers(config.bad_columns[0], config.bad_columns[1] + 1)):
        column, start = defect_rng.integers(det.shape[1]), defect_rng.integers(det.shape[0])
        level = scene.sky_e * defect_rng.choice([0.0, 0.5, 3.0, 20.0])  # dead, low, warm or hot column
        image_e[start:, column] = level + rng.normal(0, np.sqrt(level + det.read_noise**2), det.shape[0] - start)
        ignore[start:, column] = True
    n_hot = defect_rng.poisson(config.hot_pixels_per_mpix * image_e.size / 1e6)
    hy, hx = defect_rng.integers(det.shape[0], size=n_hot), defect_rng.integers(det.shape[1], size=n_hot)
    image_e[hy, hx] += defect_rng.uniform(5e2, 5e4, n_hot).astype(np.float32)
    ignore[hy, hx] = True

    noise_e = noise_from_detector(scene.sky_e + scene.signal_e, 1.0, det.read_noise)  # electrons: gain 1
    cr_mask = (charge >= config.label_nsigma * noise_e) & ~saturated & ~ignore
    image = np.clip(image_e / det.gain, None, det.adc_max).astype(np.float32)
    return Frame(image, cr_mask, ignore, scene.band, scene.exposure_s, scene.seeing_arcsec, scene.sky_e / det.gain,
                 det.gain, det.read_noise, n_hits, saturated, charge / det.gain)


def simulate_frame(rng: np.random.Generator, config: SimulationConfig, band: str, library: CRLibrary) -> Frame:
    """One DECam-like frame in ADU with its CR label, ignore mask and conditions."""
    return expose(render_scene(rng, config, band), rng, config, library)


def _frame_jobs(preset: Preset) -> list[tuple[str, int, str]]:
    jobs = []
    for split, per_band in (("trainval", preset.trainval_frames_per_band), ("test", preset.test_frames_per_band)):
        for band in BANDS:
            for i in range(per_band):
                jobs.append((split, i, band))
    return jobs


@functools.lru_cache(maxsize=1)
def _footprint_pools() -> dict:
    """The CR library's train and test pools, loaded once per process (workers load their own)."""
    library = load_cr_library()
    return {"trainval": library.pool("train"), "test": library.pool("test")}


def _simulate_patches(job: tuple, seed: int, config: SimulationConfig, frame_shape: tuple[int, int],
                      patch: int = PATCH):
    """One frame of a preset, cut into patches: (images, masks, ignores, meta). Its random stream derives
    from ``(seed, split, band, index)`` only, so frames can be made in any process, in any order."""
    split, index, band = job
    stream = [seed, 0 if split == "trainval" else 1, ord(band), index]
    kind = "sidereal"
    if config.kind_fractions:  # drawn from a stream of its own: the frame's stream is the benchmark's
        names, fractions = zip(*config.kind_fractions)
        draw = np.random.default_rng([*stream, 2]).random()
        edges = np.cumsum(fractions)
        kind = names[int(np.searchsorted(edges, draw, side="right"))] if draw < edges[-1] else "sidereal"
        config = replace(config, kind_fractions=(), **FRAME_KINDS[kind])
    rng = np.random.default_rng(stream)
    frame = simulate_frame(rng, config, band, _footprint_pools()[split])
    stats = frame_statistics(frame.image)
    ny, nx = frame_shape[0] // patch, frame_shape[1] // patch
    origins = [(iy * patch, ix * patch) for iy in range(ny) for ix in range(nx)]

    def cut(array: np.ndarray) -> np.ndarray:
        return np.stack([array[y:y + patch, x:x + patch] for y, x in origins])

    meta = {"band": band, "kind": kind, "exposure_s": frame.exposure_s, "seeing_arcsec": frame.seeing_arcsec,
            "gain": frame.gain, "read_noise": frame.read_noise, "sky_adu": frame.sky_adu,
            "frame_sky": stats.sky, "frame_sigma": stats.sigma,
            "y0": [o[0] for o in origins], "x0": [o[1] for o in origins]}
    # the weight map of the CR-free frame: what the median of aligned exposures shows (with one exposure's noise)
    weight = np.round(median_weight_numpy(frame.image - frame.cr_charge_adu) * WEIGHT_SCALE).astype(np.uint8)
    return (cut(frame.image), cut(frame.cr_mask).astype(np.uint8), cut(frame.ignore).astype(np.uint8), cut(weight),
            meta)


def _in_order(function, jobs: list, processes: int) -> Iterator:
    """``map(function, jobs)`` in ``processes`` worker processes, results in the jobs' order, with at most
    twice as many frames in flight as workers (a paper-preset frame is 40 MB of patches)."""
    if processes <= 1:
        yield from map(function, jobs)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    # spawn: galsim's and torch's thread pools do not survive fork
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = deque()
        queued = iter(jobs)
        for job in queued:
            pending.append(pool.submit(function, job))
            if len(pending) >= 2 * processes:
                break
        while pending:
            result = pending.popleft().result()
            for job in queued:
                pending.append(pool.submit(function, job))
                break
            yield result


def build_benchmark(out_dir: str | Path, preset: str = "small", seed: int = 0, config: SimulationConfig | None = None,
                    progress: bool = True, jobs: int = 1, patch: int | None = None) -> dict[str, int]:
    """Simulate a preset's frames and write ``train.h5``, ``val.h5``, ``test.h5`` and ``meta.json``.

    Deterministic for a given seed: every frame has its own random stream derived from
    ``(seed, split, band, index)``. Train/val frames use the train footprint pool, test frames the
    disjoint test pool. With ``jobs`` > 1 frames are made in that many processes and written in the
    same order, so the files hold the same patches for any ``jobs``. ``patch`` cuts the frames into patches of
    that side instead of the preset's (up to 1024 px, for training on large crops as Cosmic-CoNN does; a
    1024 px float32 patch is 4 MB, 6 MB with its planes). Returns the number of patches per split.
    """
    from tqdm import tqdm

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    p = preset_with_patch(preset, patch)
    config = replace(config or SimulationConfig(), detector=replace((config or SimulationConfig()).detector,
                                                                    shape=p.frame_shape))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = p.counts()
    writers = {s: PatchWriter(out / f"{s}.h5", counts[s], p.patch) for s in ("train", "val", "test")}
    # exactly counts["val"] of the train/val patches, drawn at random over all frames, go to validation
    n_trainval = counts["train"] + counts["val"]
    val_ids = np.zeros(n_trainval, bool)
    val_ids[np.random.default_rng([seed, 99]).choice(n_trainval, counts["val"], replace=False)] = True
    trainval_seen = 0
    frame_jobs = _frame_jobs(p)
    make = functools.partial(_simulate_patches, seed=seed, config=config, frame_shape=p.frame_shape, patch=p.patch)
    try:
        frames = _in_order(make, frame_jobs, jobs)
        for frame_id, ((split, _, _), (images, masks, ignores, weights, meta)) in enumerate(
                tqdm(zip(frame_jobs, frames), total=len(frame_jobs), desc=f"simulating {preset}", unit="frame",
                     disable=not progress)):
            meta["frame_id"] = frame_id
            if split == "test":
                writers["test"].add(images, masks, ignores, weights, meta)
            else:
                is_val = val_ids[trainval_seen:trainval_seen + len(images)]
                trainval_seen += len(images)
                for name, select in (("train", ~is_val), ("val", is_val)):
                    sub = {k: (np.asarray(v)[select] if np.ndim(v) else v) for k, v in meta.items()}
                    writers[name].add(images[select], masks[select], ignores[select], weights[select], sub)
    finally:
        for w in writers.values():
            w.close()
    made = {s: w.n for s, w in writers.items()}
    (out / "meta.json").write_text(json.dumps({
        "generator": "crdetect.data.simulate", "crdetect_version": __version__, "preset": preset, "seed": seed,
        "patch": p.patch, "counts": made, "config": asdict(config),
        "cr_library": "imSim cosmic_rays_itl_2017 (train pool: ids not divisible by 10; test pool: the rest)",
        "label": f"injected charge >= {config.label_nsigma} x pixel noise, not saturated, not ignored",
    }, indent=2))
    return made
