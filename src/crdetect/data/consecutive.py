"""CR labels from >= 3 aligned consecutive exposures of one field (the Cosmic-CoNN recipe, Xu et al. 2023).

A cosmic ray hits one exposure, not the others; the median of the aligned stack is CR-free. For each
frame, every pixel's signal-to-noise against the median stack is computed; pixels above 5 sigma seed a
hit, which grows into 8-connected neighbours above 2.5 sigma. Pixels on sources (where seeing and
alignment differences leave residuals) go into an ignore mask, hits smaller than 2 px are treated as
hot pixels or noise (ignored, not labelled), and frames whose CR fraction is far above the others'
(satellite trails, misalignment, clouds) are rejected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..preprocessing import frame_statistics, noise_from_detector

logger = logging.getLogger(__name__)

EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclass
class ConsecutiveLabels:
    """Labels of one exposure of a stack."""

    cr_mask: np.ndarray  # bool
    ignore: np.ndarray  # bool: sources, small hits
    snr: np.ndarray  # float32 SNR against the median stack
    cr_fraction: float
    rejected: bool


@dataclass
class StackLabels:
    """Labels of every exposure, the median stack and Cosmic-CoNN's median weight map."""

    frames: list[ConsecutiveLabels]
    median: np.ndarray
    weight: np.ndarray  # median-weighted loss map with alpha = 0 (clamp at training time)


def label_stack(images: list[np.ndarray], gain: float, read_noise: float, seed_snr: float = 5.0,
                grow_snr: float = 2.5, source_snr: float = 5.0, source_grow: int = 2, min_hit_pixels: int = 2,
                max_fraction_ratio: float = 5.0) -> StackLabels:
    """Label cosmic rays in each of >= 3 aligned exposures of one field.

    Parameters
    ----------
    images : list of 2-D arrays
        Aligned exposures (ADU, same exposure time), sky included.
    gain, read_noise : float
        e-/ADU and e- (from the headers: GAIN, RDNOISE).
    seed_snr, grow_snr : float
        SNR against the median stack that starts a hit, and into which a hit grows.
    source_snr, source_grow : float, int
        Pixels where the median stack is ``source_snr`` sigma above the sky, grown by ``source_grow``
        px, are sources: ignored.
    min_hit_pixels : int
        Hits with fewer pixels are not labelled (hot pixels, noise) but ignored.
    max_fraction_ratio : float
        A frame whose CR fraction exceeds this multiple of the stack's median fraction (and 1e-3) is
        rejected.
    """
    if len(images) < 3:
        raise InputError(f"labels from consecutive exposures need at least 3 frames, got {len(images)}")
    stack = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    if stack.ndim != 3:
        raise InputError(f"every exposure must be a 2-D image of the same shape; got shapes {[np.shape(i) for i in images]}")
    if gain <= 0 or read_noise < 0:
        raise InputError(f"gain must be > 0 and read noise >= 0, got {gain}, {read_noise}")
    skies = np.array([frame_statistics(im).sky for im in stack], np.float32)
    # Scale every frame to the mean sky so that transparency or sky changes do not leave residuals
    # everywhere; subtract its sky for the comparison.
    median = np.median(stack - skies[:, None, None], axis=0)
    sky = float(np.mean(skies))
    # Noise of a frame pixel (Poisson from sky + source, read noise), as Cosmic-CoNN's SNR uses; the
    # median's own noise (pi/2n of it) is left out: seeds at 5 sigma stay rare (measured false-label
    # rate ~1e-6 on simulated triplets) and the growth reaches the fainter ends of tracks.
    var = noise_from_detector(median + sky, gain, read_noise) ** 2
    sigma_sky = noise_from_detector(sky, gain, read_noise)
    sources = ndimage.binary_dilation(median > source_snr * sigma_sky, EIGHT_CONNECTED, iterations=source_grow)

    frames = []
    for image, frame_sky in zip(stack, skies):
        snr = ((image - frame_sky - median) / np.sqrt(var)).astype(np.float32)
        hits = ndimage.binary_propagation(snr > seed_snr, structure=EIGHT_CONNECTED, mask=snr > grow_snr)
        hits &= ~sources
        labelled, count = ndimage.label(hits, EIGHT_CONNECTED)
        sizes = ndimage.sum_labels(hits, labelled, index=np.arange(1, count + 1))
        small = np.isin(labelled, np.flatnonzero(sizes < min_hit_pixels) + 1)
        cr = hits & ~small
        frames.append(ConsecutiveLabels(cr, sources | small, snr, float(cr.mean()), False))
    fractions = np.array([f.cr_fraction for f in frames])
    limit = max(max_fraction_ratio * float(np.median(fractions)), 1e-3)
    for f in frames:
        if f.cr_fraction > limit:
            f.rejected = True
            logger.warning("frame rejected: CR fraction %.2e above %.2e (satellite, misalignment?)", f.cr_fraction, limit)
    return StackLabels(frames, median, median_weight_numpy(median))


def median_weight_numpy(median: np.ndarray) -> np.ndarray:
    """Cosmic-CoNN's weight map (alpha = 0) of a median stack, via :func:`crdetect.losses.median_weight_map`."""
    import torch

    from ..losses import median_weight_map

    tensor = torch.from_numpy(np.ascontiguousarray(median, dtype=np.float32))[None, None]
    return median_weight_map(tensor, alpha=0.0)[0, 0].numpy()


def stack_patches(images: list[np.ndarray], labels: StackLabels, patch: int, gain: float, read_noise: float,
                  frame_meta: list[dict] | None = None) -> tuple:
    """The labelled exposures of a stack (rejected ones left out) cut into ``patch`` x ``patch`` patches with the
    stack's median weight map: (images, masks, ignores, weights, meta) in
    :class:`crdetect.data.patches.PatchWriter`'s form, meta a list per key. ``frame_meta`` gives each exposure's
    ``band``, ``kind``, ``exposure_s``, ``seeing_arcsec`` and ``sky_adu`` where they are known (default: unknown, a
    real frame, the measured sky)."""
    from .augment import WEIGHT_SCALE
    from .patches import PatchWriter

    height, width = labels.median.shape
    origins = [(y, x) for y in range(0, height - patch + 1, patch) for x in range(0, width - patch + 1, patch)]
    weight = np.round(np.clip(labels.weight, 0, 1) * WEIGHT_SCALE).astype(np.uint8)
    planes: dict[str, list] = {"image": [], "mask": [], "ignore": [], "weight": []}
    meta: dict[str, list] = {k: [] for k in PatchWriter.META}
    for frame_id, (image, frame) in enumerate(zip(images, labels.frames)):
        if frame.rejected:
            continue
        stats = frame_statistics(image)
        known = {"band": "-", "kind": "real", "exposure_s": np.nan, "seeing_arcsec": np.nan, "sky_adu": stats.sky,
                 **(frame_meta[frame_id] if frame_meta else {})}
        for y, x in origins:
            window = (slice(y, y + patch), slice(x, x + patch))
            planes["image"].append(np.asarray(image[window], np.float32))
            planes["mask"].append(frame.cr_mask[window].astype(np.uint8))
            planes["ignore"].append(frame.ignore[window].astype(np.uint8))
            planes["weight"].append(weight[window])
            values = {**known, "gain": gain, "read_noise": read_noise, "frame_sky": stats.sky,
                      "frame_sigma": stats.sigma, "frame_id": frame_id, "y0": y, "x0": x}
            for key in PatchWriter.META:
                meta[key].append(values[key])
    arrays = [np.stack(planes[n]) if planes[n] else np.zeros((0, patch, patch), np.float32 if n == "image" else np.uint8)
              for n in ("image", "mask", "ignore", "weight")]
    return (*arrays, meta)


def write_training_set(images: list[np.ndarray], labels: StackLabels, gain: float, read_noise: float,
                       out_dir, val_every: int = 10, patch: int = 256) -> dict[str, int]:
    """Cut the labelled exposures of a stack into ``patch`` x ``patch`` training patches (:func:`stack_patches`).

    Writes ``train.h5`` and ``val.h5`` (every ``val_every``-th patch) in the layout of
    :func:`crdetect.data.simulate.build_benchmark`, with the stack's median weight map as ``weight`` (for
    ``crdetect train --loss median_weighted``). Rejected exposures are left out. Returns the patch counts.
    """
    from pathlib import Path

    from .patches import PatchWriter, check_patch

    check_patch(patch)
    height, width = labels.median.shape
    if height < patch or width < patch:
        raise InputError(f"the exposures ({height} x {width} px) are smaller than one {patch} x {patch} patch")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    *arrays, meta = stack_patches(images, labels, patch, gain, read_noise)
    is_val = np.arange(len(arrays[0])) % val_every == val_every - 1
    writers = {name: PatchWriter(out / f"{name}.h5", 0, patch) for name in ("train", "val")}
    try:
        for name, select in (("train", ~is_val), ("val", is_val)):
            if select.any():
                writers[name].add(*(a[select] for a in arrays), {k: np.asarray(v)[select] for k, v in meta.items()})
    finally:
        for writer in writers.values():
            writer.close()
    return {name: writer.n for name, writer in writers.items()}
