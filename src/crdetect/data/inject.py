"""Inject real cosmic-ray footprints (from the shipped ITL library) into clean images.

The library (imSim's ``cosmic_rays_itl_2017``) holds 1,764 footprints measured on ITL CCD darks, with
their charge in electrons. Hits are drawn at the library's own rate per pixel and second (optionally
scaled), rotated by multiples of 90 degrees and flipped, and added in electrons. Footprints are split
deterministically into disjoint train and test pools so a model is never tested on hits it trained on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

LIBRARY_FILE = Path(__file__).parent / "cr_library" / "cosmic_rays_itl_2017.fits.gz"
#: Every 10th footprint (by id) is reserved for test sets.
TEST_POOL_EVERY = 10


@dataclass(frozen=True)
class CRLibrary:
    """Footprints as small 2-D arrays of electrons, with the exposure they were collected in.

    Attributes
    ----------
    footprints : list of ndarray
        Each footprint's bounding box, charge in electrons (0 outside the footprint).
    exposure_s : float
        Total dark exposure time the library was collected over.
    area_px : float
        Total detector area in pixels.
    """

    footprints: tuple
    exposure_s: float
    area_px: float

    @property
    def rate_per_px_s(self) -> float:
        """Hits per pixel per second."""
        return len(self.footprints) / (self.exposure_s * self.area_px)

    def pool(self, split: str) -> CRLibrary:
        """The ``"train"`` or ``"test"`` subset (disjoint; the test pool is every 10th footprint)."""
        if split not in ("train", "test", "all"):
            raise ValueError(f"unknown pool {split!r}; choose train, test or all")
        if split == "all":
            return self
        keep = [fp for i, fp in enumerate(self.footprints) if (i % TEST_POOL_EVERY == 0) == (split == "test")]
        fraction = len(keep) / len(self.footprints)
        # The pool keeps the full library's hit rate: the same area and time, fewer distinct shapes.
        return CRLibrary(tuple(keep), self.exposure_s * fraction, self.area_px)


@functools.lru_cache(maxsize=4)
def load_cr_library(path: str | Path = LIBRARY_FILE) -> CRLibrary:
    """Read the footprint table into per-footprint arrays (cached)."""
    with fits.open(path) as hdul:
        table = hdul[1].data
        exposure, area = float(hdul[1].header["EXPTIME"]), float(hdul[1].header["NUM_PIX"])
        ids = np.asarray(table["fp_id"])
        x0s, y0s = np.asarray(table["x0"]), np.asarray(table["y0"])
        values = [np.asarray(v, dtype=np.float32) for v in table["pixel_values"]]
    footprints = []
    for fp in np.unique(ids):
        rows = np.flatnonzero(ids == fp)
        ymin, ymax = y0s[rows].min(), y0s[rows].max()
        xmin = x0s[rows].min()
        xmax = max(x0s[r] + len(values[r]) for r in rows)
        stamp = np.zeros((ymax - ymin + 1, xmax - xmin), np.float32)
        for r in rows:
            stamp[y0s[r] - ymin, x0s[r] - xmin:x0s[r] - xmin + len(values[r])] += values[r]
        footprints.append(stamp)
    return CRLibrary(tuple(footprints), exposure, area)


def cr_track(length: float, angle: float, electrons_per_px: float) -> np.ndarray:
    """A straight track (grazing incidence in a thick sensor), ``length`` px long, as a stamp of electrons.

    The charge per unit path length is constant; each pixel gets the length of track it contains,
    sampled finely along the path.
    """
    n = max(int(np.ceil(length * 8)), 2)
    t = (np.arange(n) + 0.5) * (length / n)  # midpoints of n equal steps
    x, y = t * np.cos(angle), t * np.sin(angle)
    x -= x.min()
    y -= y.min()
    stamp = np.zeros((int(y.max()) + 1, int(x.max()) + 1), np.float32)
    np.add.at(stamp, (y.astype(int), x.astype(int)), electrons_per_px * length / n)
    return stamp


def random_footprint(footprints, rng: np.random.Generator) -> np.ndarray:
    """One of ``footprints``, rotated by a random multiple of 90 degrees and flipped half the time."""
    stamp = np.rot90(footprints[rng.integers(len(footprints))], rng.integers(4))
    return stamp[:, ::-1] if rng.random() < 0.5 else stamp


def add_stamp(image: np.ndarray, stamp: np.ndarray, y0: int, x0: int) -> None:
    """Add ``stamp`` to ``image`` (in place) with its corner at (``y0``, ``x0``), clipped to the image."""
    h, w = stamp.shape
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, image.shape[0]), min(x0 + w, image.shape[1])
    if ye > ys and xe > xs:
        image[ys:ye, xs:xe] += stamp[ys - y0:ye - y0, xs - x0:xe - x0]


def add_at_random_position(image: np.ndarray, stamp: np.ndarray, rng: np.random.Generator) -> None:
    """Add ``stamp`` at a uniformly random position; it may fall partly off the image (detector edges)."""
    sh, sw = stamp.shape
    add_stamp(image, stamp, int(rng.integers(-sh + 1, image.shape[0])), int(rng.integers(-sw + 1, image.shape[1])))


def inject_crs(image_e: np.ndarray, exposure_s: float, rng: np.random.Generator, library: CRLibrary,
               rate_scale: float = 1.0, track_fraction: float = 0.0,
               track_length: tuple[float, float] = (10.0, 60.0), track_charge: float = 1500.0) -> tuple[np.ndarray, int]:
    """Add cosmic-ray charge to ``image_e`` (electrons, modified in place).

    Parameters
    ----------
    image_e : ndarray
        Image in electrons.
    exposure_s : float
        Exposure time; the number of hits is Poisson with mean rate * area * time * ``rate_scale``.
    rng : numpy Generator
        Random source (determinism).
    library : CRLibrary
        Footprint pool to draw from (use ``library.pool("train")`` / ``("test")``).
    rate_scale : float
        Multiplier on the library's natural rate (training sets use more hits per patch than nature).
    track_fraction : float
        Fraction of extra hits drawn as long straight tracks (grazing incidence in thick sensors).
    track_length : (float, float)
        Range of track lengths in pixels.
    track_charge : float
        Electrons per pixel of track (about 80 e-/um over a 15 um DECam pixel, plus depth).

    Returns
    -------
    charge : ndarray
        The injected charge alone (electrons), same shape as ``image_e``.
    n_hits : int
        Number of hits injected.
    """
    height, width = image_e.shape
    charge = np.zeros_like(image_e, dtype=np.float32)
    n_hits = rng.poisson(library.rate_per_px_s * height * width * exposure_s * rate_scale)
    n_tracks = rng.poisson(n_hits * track_fraction) if track_fraction > 0 else 0
    for i in range(n_hits + n_tracks):
        if i < n_hits:
            stamp = random_footprint(library.footprints, rng)
        else:
            stamp = cr_track(rng.uniform(*track_length), rng.uniform(0, np.pi), track_charge * rng.uniform(0.5, 1.5))
        add_at_random_position(charge, stamp, rng)
    image_e += charge
    return charge, n_hits + n_tracks


def log_uniform(rng: np.random.Generator, low: float, high: float, size=None):
    """Draw(s) log-uniform in [``low``, ``high``] (scales, brightnesses spanning decades)."""
    return np.exp(rng.uniform(np.log(low), np.log(high), size))

def add_hits(image: np.ndarray, mask: np.ndarray, ignore: np.ndarray, rng: np.random.Generator, sky: float,
             sigma: float, gain: float, mean_hits: float, zoom_max: float = 1.0, track_fraction: float = 0.3,
             label_nsigma: float = 2.0, charge_scale: tuple[float, float] = (0.5, 50.0),
             pool: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Add Poisson(``mean_hits``) footprints of the library's ``pool`` to a patch (new arrays).

    A fraction ``track_fraction`` of them are straight tracks instead (grazing muons: 3-40 px long,
    blurred by charge diffusion of 0.3-1 px). Each footprint is rotated, flipped, magnified by a
    factor uniform in [1, ``zoom_max``]; footprints and tracks have their charge scaled
    log-uniformly within ``charge_scale`` (0.5-50): the library's hits sit at tens of sigma on DECam-like sky,
    but on low-noise frames (space, short or narrow-band exposures) hits reach thousands of sigma,
    and a network that never saw them takes them for stars. Pixels are labelled where the added
    charge is at least ``label_nsigma`` times the pixel's noise (sky noise plus the source's Poisson
    noise), as the simulator labels them; ignored pixels stay unlabelled.
    """
    from scipy import ndimage

    footprints = load_cr_library().pool(pool).footprints
    charge = np.zeros(image.shape, np.float32)
    for _ in range(rng.poisson(mean_hits)):
        if rng.random() < track_fraction:
            track = cr_track(rng.uniform(3.0, 40.0), rng.uniform(0, np.pi), 1500.0)
            stamp = ndimage.gaussian_filter(np.pad(track, 3), rng.uniform(0.3, 1.0))
        else:
            stamp = random_footprint(footprints, rng)
            zoom = rng.uniform(1.0, zoom_max)
            if zoom > 1.05:
                stamp = np.clip(ndimage.zoom(stamp, zoom, order=1), 0, None)
        add_at_random_position(charge, stamp * log_uniform(rng, *charge_scale), rng)
    added = charge / gain
    noise = np.sqrt(sigma**2 + np.clip(image - sky, 0, None) / gain)
    labelled = (added >= label_nsigma * noise) & (ignore < 0.5)
    return image + added, np.maximum(mask, labelled.astype(mask.dtype))
