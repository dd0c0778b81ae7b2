"""The source veto: flagged regions that look like a star, not a cosmic ray, are taken out of the mask.

A network trained on round stars flags the cores of trailed stars under non-sidereal tracking, of sharp
trails on small binned telescopes and of undersampled stars (issue #13). Retraining on such frames cut those
false detections but also cut recall on real hits over bright galaxy light, three times over (the CPU pilots,
from scratch on a GPU, fine-tuned on a GPU). A test after the network does not have that trade-off: it judges
each flagged region (8-connected component of the mask) on the image itself, with two facts of physics.

- **Sharpness.** A cosmic ray deposits its charge without passing through the atmosphere and the optics:
  its edges are sharper than the PSF allows. LA-Cosmic's test (van Dokkum 2001) compares the positive
  Laplacian with the fine-structure image (median3 - median7 of median3): a region none of whose pixels
  reaches ``sharp_ratio`` times its fine structure is as smooth as a source. As in LA-Cosmic, only pixels
  whose Laplacian stands out of the noise (``significant_laplacian`` sigma) are judged: on a dark sky the
  faint rim of a large region always holds a pixel where noise over a vanishing fine structure makes a
  large ratio (a region without such a pixel is judged on all its pixels). (LA-Cosmic's ``objlim`` of 5 is
  the same ratio at 10 in these units: its Laplacian is taken on a 2x oversampled image and halved.)
- **Wings.** A star's light does not stop at the edge of what the network flagged: the PSF's wings go on.
  The charge of a hit does (charge diffusion spreads it by well under a pixel). So a smooth region is a
  source when its surroundings 2-3 px out hold on average at least ``wing_fraction`` of its edge level
  above the local background, significantly (``wing_significance`` sigma of that mean).

Smooth regions without wings are kept: thick CCDs (DECam, LSST's ITL sensors) record round, flat-topped
diffusion spots of a few pixels across from low-energy hits, as smooth as a star but without its wings
(28 of the 547 hits on the real frames with injected ITL footprints). A smooth region with no wings is
still vetoed when it is too small or too faint for such a spot (``small_pixels``, ``faint_sigma``): there it
is the core of an undersampled star that the network flagged down to the noise. And under non-sidereal
tracking every star is trailed the same way, a hit's direction is random: when most smooth elongated regions
of a frame share one direction (``tracking_direction``), those along it are vetoed too, wings or not. On
such a frame a hit that crosses a trail merges with it into one region, sharp by the hit: of a sharp region
along the tracking direction only the pixels within ``split_keep_px`` of its sharp pixels stay.

The thresholds were chosen on simulated development frames and the real frames' hits
(``results/sources/veto.md``). On the real frames the shipped models' flagged hit regions lose 0-2 of
1,750-3,700 (WFPC2, M51) and 7-9 of 545 (five frames with injected ITL hits: 0.4 % of their flagged hit
pixels). Regions with a sharp pixel -- nearly every hit -- cost only their pixels' medians; smooth ones a
look at their surroundings: about 0.1 s for the 413 regions of a simulated DECam CCD on 2 CPU cores.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VetoParameters:
    """The source veto's thresholds (all in units of the frame's noise, pixels or degrees, as named), recorded in
    the header of each output's ``CRVETO`` plane (:meth:`cards`). The defaults were chosen on simulated
    development frames and the real frames' hits (``results/sources/veto.md``, issue #28)."""

    #: Below this ratio of the positive Laplacian to the fine structure, in every judged pixel, a region is smooth.
    sharp_ratio: float = 3.0
    #: Pixels are judged where the Laplacian exceeds this many times its noise on flat sky.
    significant_laplacian: float = 5.0
    #: Below this, a region is smooth even for a star without visible wings (see ``small_pixels``).
    smooth_ratio: float = 2.0
    #: Mean level 2-3 px outside a region, as a fraction of its edge level, that makes wings.
    wing_fraction: float = 0.1
    #: ... and that mean must exceed its own noise this many times.
    wing_significance: float = 3.0
    #: Smooth regions of at most this many pixels, or with a peak under ``faint_sigma`` sigma, are vetoed
    #: without wings: too small or too faint for a diffusion spot.
    small_pixels: int = 12
    faint_sigma: float = 30.0
    #: A smooth region touching an unflagged pixel this many sigma brighter than its own peak is a source's flank.
    slope_sigma: float = 5.0
    #: A smooth round region (axis ratio under ``round_elongation``) with at least this many pixels at or above half
    #: its peak (a FWHM of about 2.8 px or more) is a star, wings or not: of the 1,764 real ITL footprints of the CR
    #: library 5 are that round and that wide, while a Gaussian star of FWHM 3.5 px (astroscrappy's test image)
    #: has 6-12 (9.6 on average, less where noise lifts the peak pixel) and the network flags it whole when it is
    #: bright (issue #28). Narrower stars without wings are shaped like a muon's diffusion spot and stay flagged.
    wide_half_peak_px: int = 6
    round_elongation: float = 1.5
    #: ... and a peaked one: at most this fraction of its pixels at or above half its peak. The network flags such
    #: stars down to the noise (a Gaussian of peak 50 sigma flagged to 3 sigma has a fifth of its pixels above half
    #: the peak), while the flat-topped diffusion spots of the library have 0.4 and more (the largest, 52 px, 22
    #: above half).
    peaked_fraction: float = 0.3
    #: Smooth regions at least this elongated (axis ratio) that share one direction within ``trail_angle_deg``
    #: degrees, at least ``trail_count`` of them and most of the smooth elongated regions, mark a frame trailed
    #: by non-sidereal tracking; those along it are vetoed.
    trail_elongation: float = 3.0
    trail_angle_deg: float = 5.0
    trail_count: int = 5
    #: On such a frame, sharp regions along the tracking direction (within ``split_angle_deg``; a hit crossing a
    #: trail tilts the region's axis a little) and at least ``split_min_length`` px long keep only the pixels
    #: within ``split_keep_px`` of their sharp pixels: the hit, without the trail it crosses.
    split_angle_deg: float = 10.0
    split_min_length: int = 10
    split_keep_px: int = 2
    #: The fine-structure floor in units of the noise (keeps the ratio finite on flat sky).
    fine_floor_sigma: float = 0.1

    def cards(self) -> list[tuple[str, float, str]]:
        """FITS header cards of the parameters: (keyword, value, comment), keywords ``VETO01``... in field order,
        the comment naming the field."""
        return [(f"VETO{i:02d}", value, name) for i, (name, value) in enumerate(asdict(self).items(), start=1)]


#: The thresholds the veto runs with unless told otherwise.
DEFAULTS = VetoParameters()

_EIGHT = np.ones((3, 3), bool)
# the Laplacian is the pixel minus the mean of its 4 neighbours; its noise on white noise of unit sigma
_LAPLACIAN_NOISE = float(np.sqrt(1.0 + 4 * 0.25**2))  # 1.118
_MARGIN = 10  # pixels of context around a region: the fine structure's 4 and the background annulus' 9


def _neighbours(ys: np.ndarray, xs: np.ndarray, radius: int, shape: tuple[int, int]) -> np.ndarray:
    """Flat indices of the (2 radius + 1)^2 neighbours of each pixel (ys, xs), rows outer, columns inner,
    edges extended: an array (neighbours, pixels)."""
    height, width = shape
    offsets = np.arange(-radius, radius + 1)
    rows = np.clip(ys[None, :] + offsets[:, None], 0, height - 1)
    cols = np.clip(xs[None, :] + offsets[:, None], 0, width - 1)
    return (rows[:, None, :] * width + cols[None, :, :]).reshape(-1, ys.size)


def sharpness_at(image: np.ndarray, ys: np.ndarray, xs: np.ndarray, sigma: float,
                 p: VetoParameters = DEFAULTS) -> tuple[np.ndarray, np.ndarray]:
    """LA-Cosmic's sharpness at the pixels (ys, xs): the positive Laplacian over the fine-structure image
    (median3 - median7 of median3, floored at ``fine_floor_sigma`` sigma), and whether the Laplacian is
    significant (``significant_laplacian`` times its noise for ``sigma``).

    Computed at those pixels only (the medians of a few thousand flagged pixels, not of the whole frame: on
    a DECam CCD a tenth of the time of median filters over the regions' boxes). Edges are extended.

    Parameters
    ----------
    image : ndarray
        The frame, in its units, finite.
    ys, xs : ndarray of int
        The pixels.
    sigma : float
        The frame's noise, same units.
    """
    flat = np.ascontiguousarray(image).reshape(-1)
    # median3 on every pixel within 3 px of the pixels (the median7's window); their 3 x 3 windows also give
    # the Laplacian at the pixels themselves, which are among them. Values in float64, as LA-Cosmic's
    # filters compute; the frame itself is not copied
    around = _neighbours(ys, xs, 3, image.shape)  # the median7's windows
    near = np.zeros(flat.size, bool)  # (a mark per pixel: faster than np.unique of the indices)
    near[around] = True
    near = np.flatnonzero(near)
    near_ys, near_xs = np.divmod(near, image.shape[1])
    window = flat[_neighbours(near_ys, near_xs, 1, image.shape)].astype(np.float64)  # (9, near pixels)
    # median3 of the near pixels, looked up by their position in ``near`` (a frame-sized float64 array written at
    # scattered pixels touched most of its 8 bytes per pixel: the veto's memory peak once the network is lean)
    smoothed = np.median(window, axis=0)
    pixels = ys * image.shape[1] + xs
    at_pixels = np.searchsorted(near, pixels)
    at = window[:, at_pixels]  # rows: up-left, up, up-right, left, centre, right, ...
    # centre minus the mean of up, down, left, right (in that order: the sums round as they always did)
    laplacian = np.clip(at[4] - (at[1] + at[7] + at[3] + at[5]) / 4.0, 0, None)
    fine = smoothed[at_pixels] - np.median(smoothed[np.searchsorted(near, around)], axis=0)
    fine = np.maximum(fine, p.fine_floor_sigma * sigma)
    return laplacian / fine, laplacian >= p.significant_laplacian * _LAPLACIAN_NOISE * sigma


def _surroundings(cut: np.ndarray, region: np.ndarray, sigma: float) -> tuple[float, float, float, float, int]:
    """(wing level, edge level, noise of the wing level, peak, pixels at or above half the peak) of ``region`` in
    ``cut``, above the median of the annulus 7-9 px out (the local background, so galaxy light and gradients
    cancel)."""
    grown1 = ndimage.binary_dilation(region, _EIGHT)
    grown3 = ndimage.binary_dilation(grown1, _EIGHT, iterations=2)
    grown6 = ndimage.binary_dilation(grown3, _EIGHT, iterations=3)
    annulus = ndimage.binary_dilation(grown6, _EIGHT, iterations=3) & ~grown6
    ring = grown3 & ~grown1
    edge = region & ~ndimage.binary_erosion(region, _EIGHT, border_value=1)
    outside = cut[annulus]
    background = float(np.median(outside)) if outside.size else 0.0
    # the local noise where it exceeds the frame's (a hit on a bright galaxy sits on more photon noise)
    local = 1.4826 * float(np.median(np.abs(outside - background))) if outside.size > 8 else 0.0
    wing_noise = max(sigma, local) / np.sqrt(max(int(ring.sum()), 1))
    wings = float(cut[ring].mean()) - background if ring.any() else 0.0
    peak = float(cut[region].max()) - background
    half_peak = int(np.count_nonzero(cut[region] - background >= 0.5 * peak))
    return wings, float(np.median(cut[edge])) - background, wing_noise, peak, half_peak


def _axis(region: np.ndarray) -> tuple[float, float]:
    """(elongation, angle in degrees [0, 180)) of a region from its pixels' second moments."""
    ys, xs = np.nonzero(region)
    if ys.size < 3:
        return 1.0, 0.0
    cov = np.cov(np.vstack([xs, ys])) + np.eye(2) / 12.0  # a pixel's own extent
    values, vectors = np.linalg.eigh(cov)
    angle = float(np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))) % 180.0
    return float(np.sqrt(values[1] / values[0])), angle


def _angle_between(a: float, b: float) -> float:
    """Difference of two axial directions in degrees (0-90)."""
    difference = abs(a - b) % 180.0
    return min(difference, 180.0 - difference)


def tracking_direction(axes: list[tuple[float, float]], p: VetoParameters = DEFAULTS) -> float | None:
    """The direction (degrees) shared by the elongated ones of ``axes`` ((elongation, angle) of smooth
    regions), or None when they do not share one: at least ``trail_count`` of them, and more than half,
    within ``trail_angle_deg`` of it."""
    angles = np.array([angle for elongation, angle in axes if elongation >= p.trail_elongation])
    if angles.size < p.trail_count:
        return None
    within = [sum(_angle_between(a, b) <= p.trail_angle_deg for b in angles) for a in angles]
    best = int(np.argmax(within))
    if within[best] < p.trail_count or within[best] <= angles.size / 2:
        return None
    members = angles[[_angle_between(angles[best], b) <= p.trail_angle_deg for b in angles]]
    # the circular mean of the members (axial: doubled angles)
    doubled = np.radians(2 * members)
    return float(np.degrees(np.arctan2(np.sin(doubled).mean(), np.cos(doubled).mean())) / 2) % 180.0


def _grown(box: tuple[slice, slice], margin: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """A region's bounding ``box`` grown by ``margin`` px on every side, within a frame of ``shape``."""
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, size)) for s, size in zip(box, shape))


def _trails_through_hits(labels: np.ndarray, boxes: list, smoothness: np.ndarray, sharp_ys: np.ndarray,
                         sharp_xs: np.ndarray, direction: float, p: VetoParameters) -> np.ndarray:
    """On a trailed frame, the trail part of sharp regions that lie along the tracking ``direction``: a hit
    crossing a trail merges with it into one region, sharp by the hit. Pixels more than ``split_keep_px``
    from the region's sharp pixels (``sharp_ys``, ``sharp_xs``: significant and sharp) are the trail's."""
    taken = np.zeros(labels.shape, bool)
    sharp = np.zeros(labels.shape, bool)
    sharp[sharp_ys, sharp_xs] = True
    for index in np.flatnonzero(smoothness[1:] >= p.sharp_ratio) + 1:
        box = boxes[index - 1]
        if max(box[0].stop - box[0].start, box[1].stop - box[1].start) < p.split_min_length:
            continue  # too short for a trail (and for a hit's elongation to mean anything)
        grown = _grown(box, p.split_keep_px, labels.shape)
        region = labels[grown] == index
        elongation, angle = _axis(region)
        if elongation < p.trail_elongation or _angle_between(angle, direction) > p.split_angle_deg:
            continue
        near_sharp = ndimage.binary_dilation(sharp[grown] & region, _EIGHT, iterations=p.split_keep_px)
        taken[grown] |= region & ~near_sharp
    return taken


def on_a_slope(cut: np.ndarray, region: np.ndarray, sigma: float, p: VetoParameters = DEFAULTS) -> bool:
    """Whether an unflagged pixel touching ``region`` (or enclosed by it) is brighter than the region's brightest
    pixel by ``slope_sigma`` sigma: the region lies on the flank of a brighter peak that the network did not
    flag -- a star's shoulders flagged around its core, whole or in part (issue #28: a ring of 38 px around a
    Gaussian star of astroscrappy's test image, too compact for wings 2-3 px out). A hit's charge peaks inside
    what is flagged of it."""
    around = (ndimage.binary_dilation(region, _EIGHT) | ndimage.binary_fill_holes(region)) & ~region
    if not around.any():
        return False
    return float(cut[around].max()) > float(cut[region].max()) + p.slope_sigma * sigma


def smooth_is_source(cut: np.ndarray, region: np.ndarray, smoothness: float, sigma: float,
                     p: VetoParameters = DEFAULTS) -> bool:
    """Whether a smooth flagged ``region`` (bool, of ``cut``'s shape, at least ``_MARGIN`` px from the cut's
    edges where the frame allows; ``smoothness`` its sharpness, below ``sharp_ratio``) is a source: it has
    wings, it lies on the flank of a brighter unflagged peak (:func:`on_a_slope`), it is round, peaked and wider
    than a diffusion spot (``wide_half_peak_px``, ``peaked_fraction``), or it is smoother than ``smooth_ratio``
    and too small or too faint for a diffusion spot."""
    wings, edge, wing_noise, peak, half_peak = _surroundings(cut, region, sigma)
    if wings > p.wing_fraction * edge and wings > p.wing_significance * wing_noise:
        return True
    if on_a_slope(cut, region, sigma, p):
        return True
    size = int(region.sum())
    if p.wide_half_peak_px <= half_peak <= p.peaked_fraction * size and _axis(region)[0] < p.round_elongation:
        return True  # a round, peaked profile wider than a diffusion spot: a star without visible wings
    return smoothness < p.smooth_ratio and (int(region.sum()) <= p.small_pixels or peak < p.faint_sigma * sigma)


def veto_sources(image: np.ndarray, mask: np.ndarray, sigma: float, unusable: np.ndarray | None = None,
                 fill: float | None = None, p: VetoParameters = DEFAULTS) -> np.ndarray:
    """The pixels of ``mask`` that belong to regions judged to be sources (see the module docstring).

    Parameters
    ----------
    image : ndarray
        The frame, in its units.
    mask : ndarray of bool
        The flagged pixels (the network's mask).
    sigma : float
        The frame's noise, in the image's units.
    unusable : ndarray of bool, optional
        Pixels whose values mean nothing (non-finite, masked); non-finite pixels always are.
    fill : float, optional
        The value unusable pixels take (the sky; the median of the usable pixels when omitted).
    p : VetoParameters
        The thresholds (:data:`DEFAULTS` unless given).

    Returns
    -------
    ndarray of bool
        Pixels to take out of ``mask`` (a subset of it).
    """
    vetoed = np.zeros(mask.shape, bool)
    labels, count = ndimage.label(mask, _EIGHT)
    if not count:
        return vetoed
    image = np.asarray(image)
    bad = ~np.isfinite(image) if unusable is None else (unusable | ~np.isfinite(image))
    if bad.any():
        image = np.where(bad, np.median(image[~bad]) if fill is None else fill, image)
    ys, xs = np.nonzero(mask)
    ratio, significant = sharpness_at(image, ys, xs, sigma, p)
    judged = significant & (ratio >= p.sharp_ratio)  # the sharp pixels that make a region sharp
    # per region: the largest ratio over its significant pixels, over all of them where none is
    which = labels[ys, xs]
    over_all = np.zeros(count + 1)
    over_significant = np.full(count + 1, -1.0)
    np.maximum.at(over_all, which, ratio)
    np.maximum.at(over_significant, which[significant], ratio[significant])
    smoothness = np.where(over_significant >= 0, over_significant, over_all)
    boxes = ndimage.find_objects(labels)
    smooth = [index for index in range(1, count + 1) if smoothness[index] < p.sharp_ratio]
    regions, axes = {}, {}
    for index in smooth:
        padded = _grown(boxes[index - 1], _MARGIN, mask.shape)
        region = labels[padded] == index
        regions[index] = padded, region
        axes[index] = _axis(region)
        if smooth_is_source(np.asarray(image[padded], np.float64), region, float(smoothness[index]), sigma, p):
            vetoed[padded] |= region
    # a region "sharp" only by a noise pixel (no pixel's Laplacian significant) is no evidence of a hit: it is
    # still taken for a source when it lies on a brighter unflagged peak's flank (a crescent of a star's
    # shoulders, flagged down to the noise)
    for index in np.flatnonzero((smoothness >= p.sharp_ratio) & (over_significant < 0)):
        padded = _grown(boxes[index - 1], _MARGIN, mask.shape)
        region = labels[padded] == index
        if on_a_slope(np.asarray(image[padded], np.float64), region, sigma, p):
            vetoed[padded] |= region
    # non-sidereal tracking trails every star the same way: smooth elongated regions that share one
    # direction are trails, even flagged down to the noise with no wings left (a hit's direction is random)
    direction = tracking_direction([axes[i] for i in smooth], p)
    if direction is not None:
        for index in smooth:
            elongation, angle = axes[index]
            if elongation >= p.trail_elongation and _angle_between(angle, direction) <= p.trail_angle_deg:
                padded, region = regions[index]
                vetoed[padded] |= region
        vetoed |= _trails_through_hits(labels, boxes, smoothness, ys[judged], xs[judged], direction, p)
    logger.debug("source veto: %d of %d flagged regions smooth, %d px taken for sources", len(smooth), count,
                 np.count_nonzero(vetoed))
    return vetoed
