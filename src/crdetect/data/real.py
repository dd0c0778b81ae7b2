"""Readers that turn the labelled real frames of ``shared/data/real`` into one evaluation format.

Each reader returns a :class:`LabelledFrame`: the image, the CR truth, an ignore mask, and the gain
and read noise that LA-Cosmic needs. What each label is (and is not) is stated per frame: none of
them is perfect ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage

from ..preprocessing import frame_statistics


@dataclass
class LabelledFrame:
    """A real frame with a CR label for evaluation."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    ignore: np.ndarray
    gain: float
    read_noise: float
    saturation: float
    description: str


def _read(path: Path, hdu=0) -> np.ndarray:
    return np.asarray(fits.getdata(path, hdu), dtype=np.float32)


def wfpc2_frame(root: Path) -> LabelledFrame:
    """HST WFPC2 WF3 F814W 2400 s (van Dokkum 2001, Fig. 6); label = the original IRAF LA-Cosmic mask.

    The label was *made by LA-Cosmic*, so it favours LA-Cosmic: a reference, not ground truth.
    Units DN, ATODGAIN = 7 e-/DN, read noise about 5 e-; saturation 4095 DN.
    """
    folder = Path(root) / "a2_hst_wfpc2_dfcosmic"
    image = _read(folder / "hst_im_ext3.fits")
    truth = _read(folder / "hst_im_ext3_iraf_mask.fits") > 0.5
    return LabelledFrame("hst_wfpc2", image, truth, np.zeros_like(truth), 7.0, 5.0, 4095.0,
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
    residual = original - ndimage.median_filter(original, size=5)
    real_hits = ndimage.binary_dilation(residual > 8 * stats.sigma, iterations=2)
    gain = max(stats.sky / stats.sigma**2, 0.1)
    return LabelledFrame("kpno_m51", image, truth, real_hits & ~truth, gain, 1.0, 1e9,
                         "KPNO M51 with third-party injected CRs; label: the injection mask; real CRs ignored")


def gmos_boxes(root: Path) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    """Gemini GMOS-S spectrum cutout (SCI, electrons) and the bounding boxes of its two known CRs.

    Only the boxes are known (astroscrappy's test), not the pixels: use it for hit-level recall.
    """
    image = _read(Path(root) / "a1_gmos_astroscrappy" / "gmos.fits", "SCI")
    return image, [(slice(41, 72), slice(142, 161)), (slice(117, 147), slice(35, 43))]


def labelled_real_frames(root: str | Path) -> list[LabelledFrame]:
    """All real frames with pixel labels (WFPC2 and M51)."""
    return [wfpc2_frame(Path(root)), m51_frame(Path(root))]
