"""Readers that turn the labelled real frames of ``shared/data/real`` into one evaluation format.

Each reader returns a :class:`LabelledFrame`: the image, the CR truth, an ignore mask, and the gain
and read noise that LA-Cosmic needs. What each label is (and is not) is stated per frame: none of
them is perfect ground truth.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from scipy import ndimage

from ..background import local_background
from ..frame import LabelledFrame
from ..preprocessing import frame_statistics


def _read(path: Path, hdu=0, trim: bool = False) -> np.ndarray:
    """float32 pixels of one HDU; with ``trim``, only its data section (DATASEC/TRIMSEC, overscan dropped)."""
    from ..frame import data_section

    with warnings.catch_warnings():  # old headers (ESO-LOG cards) are not errors here
        warnings.simplefilter("ignore", AstropyUserWarning)
        with fits.open(path) as hdul:
            image = np.asarray(hdul[hdu].data, dtype=np.float32)
            section = data_section(hdul[hdu].header, image.shape) if trim else None
    return image if section is None else image[section]


def wfpc2_frame(root: Path) -> LabelledFrame:
    """HST WFPC2 WF3 F814W 2400 s (van Dokkum 2001, Fig. 6); label = the original IRAF LA-Cosmic mask.

    The label was *made by LA-Cosmic*, so it favours LA-Cosmic: a reference, not ground truth.
    Units DN, ATODGAIN = 7 e-/DN, read noise about 5 e-; saturation 4095 DN.
    """
    folder = Path(root) / "a2_hst_wfpc2_dfcosmic"
    image = _read(folder / "hst_im_ext3.fits")
    truth = _read(folder / "hst_im_ext3_iraf_mask.fits") > 0.5
    return LabelledFrame.of("hst_wfpc2", image, truth, np.zeros_like(truth), 7.0, 5.0, 4095.0,
                            "HST WFPC2 F814W; label: IRAF LA-Cosmic mask (biased towards LA-Cosmic)")


def m51_frame(root: Path) -> LabelledFrame:
    """KPNO M51 (IRAF dev$pix) with synthetic CRs injected by the maskfill authors; label = their mask.

    The original frame holds real, unlabelled CRs; they are put into the ignore mask (pixels that
    differ from a 5x5 median of the original by more than 8 sigma, grown by 2 px), so that neither a
    network nor LA-Cosmic is charged a false positive for finding a real hit. No gain is recorded:
    the effective gain is estimated from the sky as sky / sigma^2 (Poisson-dominated noise).
    """
    folder = Path(root) / "b4_kpno_m51_devpix_maskfill"
    image = _read(folder / "m51_with_cosmicrays.fits")
    truth = _read(folder / "m51_mask.fits") > 0.5
    original = _read(folder / "m51_org.fits")
    stats = frame_statistics(original)
    real_hits = sharp_outliers(original, stats.sigma, sharpness=None)
    gain = max(stats.sky / stats.sigma**2, 0.1)
    return LabelledFrame.of("kpno_m51", image, truth, real_hits & ~truth, gain, 1.0, 1e9,
                            "KPNO M51 with third-party injected CRs; label: the injection mask; real CRs ignored",
                            clean=original)


def gmos_boxes(root: Path) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    """Gemini GMOS-S spectrum cutout (SCI, electrons) and the bounding boxes of its two known CRs.

    Only the boxes are known (astroscrappy's test), not the pixels: use it for hit-level recall.
    """
    image = _read(Path(root) / "a1_gmos_astroscrappy" / "gmos.fits", "SCI")
    return image, [(slice(41, 72), slice(142, 161)), (slice(117, 147), slice(35, 43))]


#: Unlabelled real frames used as backgrounds for held-out library hits: (name, file, hdu, gain, saturation).
#: ``gain`` None means "estimate as sky / sigma^2"; overscan is dropped by the header's data section.
INJECTION_BACKGROUNDS = (
    ("hsc", "b1_hsc_lsst/hsc_crs.fits", 0, 1.0, 1e9),  # electrons (variance = image)
    ("saao", "b3_saao_ccdproc/a8280271.fits", 0, 1.9, 65535.0),  # raw, with overscan
    ("eso_emmi", "b6_eso_emmi_sep/image.fits", 0, None, 1e9),  # sum of 3 frames
    ("ctio_tnx", "b7_ctio_mosaic2_galsim/tnx.fits", 0, 2.4, 42000.0),  # raw-like z band
    ("ctio_tpv", "b7_ctio_mosaic2_galsim/tpv.fits", 0, None, 44000.0),  # processed I band
)


def sharp_outliers(image: np.ndarray, sigma: float, nsigma: float = 8.0, sharpness: float | None = 0.8) -> np.ndarray:
    """Pixels that look like real CRs or hot pixels, grown by 2 px (to ignore unlabelled real hits).

    A pixel qualifies when it stands ``nsigma`` above the median of its 5 x 5 neighbourhood and, unless
    ``sharpness`` is None, that excess is at least ``sharpness`` of its height above the local
    background: a hit's charge sits in a pixel or two, whereas the centre of a star sampled by 3 px or
    more rises above its neighbours by only a fraction of its height (so stars stay scored).
    """
    residual = image - ndimage.median_filter(image, size=5)
    with np.errstate(invalid="ignore"):
        sharp = residual > nsigma * sigma
        if sharpness is not None:
            sharp &= residual > sharpness * (image - local_background(image, 21, fill=float(np.nanmedian(image))))
    return ndimage.binary_dilation(sharp, iterations=2)


def injected_frames(root: str | Path, seed: int = 0, hits_per_mpix: float = 1000.0) -> list[LabelledFrame]:
    """Real unlabelled frames with held-out real CR footprints added: an independent benchmark.

    Backgrounds (stars, galaxies, noise, detector artefacts) are real and were never trained on; the
    hits are footprints of the CR library's *test* pool (never used in training), added in electrons
    (converted with the frame's gain) at Poisson-random positions and labelled as the simulator labels
    them: pixels whose added charge is at least 2 sigma of the pixel's noise. The frames' own real
    hits are unlabelled, so sharp outliers of the original frame (:func:`sharp_outliers`) are ignored.
    Where the gain is unknown it is estimated as sky / sigma^2, which also gives LA-Cosmic a noise model
    that is right at the sky level (read noise 1 e-).
    """
    from .inject import add_hits

    frames = []
    for index, (name, file, hdu, gain, saturation) in enumerate(INJECTION_BACKGROUNDS):
        original = _read(Path(root) / file, hdu, trim=True)
        stats = frame_statistics(original)
        gain = gain or max(stats.sky / stats.sigma**2, 0.1)
        ignore = sharp_outliers(original, stats.sigma) | (original >= saturation)
        mean_hits = hits_per_mpix * original.size / 1e6
        rng = np.random.default_rng([seed, index])
        image, truth = add_hits(original, np.zeros(original.shape, np.float32), ignore.astype(np.float32), rng,
                                stats.sky, stats.sigma, gain, mean_hits, track_fraction=0.0,
                                charge_scale=(1.0, 1.0), pool="test")
        frames.append(LabelledFrame.of(f"injected_{name}", image, truth > 0.5, ignore, gain, 1.0, saturation,
                                       f"{file} with held-out library hits (label: added charge >= 2 sigma)",
                                       clean=original))
    return frames


def labelled_real_frames(root: str | Path) -> list[LabelledFrame]:
    """All real frames with pixel labels (WFPC2 and M51)."""
    return [wfpc2_frame(Path(root)), m51_frame(Path(root))]
