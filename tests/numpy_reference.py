"""The numpy code of crdetect <= 0.3 that torch code replaced, kept only as the reference it is tested
against: the per-sample training data path (replaced by :mod:`crdetect.data.augment`; also timed by
benchmarks/bench_train.py), the local background and normalisation, and the per-frame inference path
(normalisation, tiling and stitching in numpy)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from crdetect._optional import require
from crdetect.background import _BACKGROUND_BLOCK, _reflect_indices
from crdetect.data.inject import add_hits, log_uniform
from crdetect.inference.tiling import _core_window, balanced_tile, tile_origins
from crdetect.models.layers import pad_to_multiple
from crdetect.preprocessing import FrameStatistics, Preprocessing


def add_light(image: np.ndarray, rng: np.random.Generator, adu: np.ndarray, gain: float) -> np.ndarray:
    """``image`` plus the light ``adu`` (ADU, same shape) with its Poisson noise, as float32 (a new array)."""
    return image + (rng.poisson(np.clip(adu * gain, 0, None)) / gain).astype(np.float32)

def add_pedestal(image: np.ndarray, rng: np.random.Generator, sigma: float, gain: float,
                 peak_sigma: tuple[float, float] = (10.0, 3000.0)) -> np.ndarray:
    """``image`` plus a bright, smooth, elliptical blob with its Poisson noise (a new array).

    Training frames rarely put hits on top of bright extended light, and a network then learns the
    shortcut "bright region, no cosmic ray" (it missed every hit on the core of M51). The blob's
    profile is Gaussian or exponential (cuspy like a bulge), its centre may lie off the patch (a
    gradient), its scales are 6-80 px (broader than stars: a sharper blob at thousands of sigma
    teaches "bright and compact means no cosmic ray", and real hits can be that bright) and its peak
    is log-uniform in ``peak_sigma`` times the frame's noise ``sigma``. Labels are unchanged: the
    blob is not a cosmic ray.
    """
    height, width = image.shape
    cy, cx = rng.uniform(-0.25, 1.25) * height, rng.uniform(-0.25, 1.25) * width
    scale_y, scale_x = log_uniform(rng, 6.0, 80.0, 2)
    angle = rng.uniform(0, np.pi)
    y, x = np.mgrid[:height, :width].astype(np.float32)
    dy, dx = y - cy, x - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / scale_x
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / scale_y
    r2 = u * u + v * v
    profile = np.exp(-0.5 * r2) if rng.random() < 0.5 else np.exp(-np.sqrt(r2))
    return add_light(image, rng, profile * (log_uniform(rng, *peak_sigma) * sigma), gain)

def add_line(image: np.ndarray, rng: np.random.Generator, sigma: float, gain: float,
             peak_sigma: tuple[float, float] = (5.0, 1000.0)) -> np.ndarray:
    """``image`` plus a straight line crossing the whole patch, with its Poisson noise (a new array).

    Sky lines of long-slit spectra, bad columns and satellite trails are sharp and straight like a
    grazing cosmic ray, but they have no ends. Networks trained with bright straight tracks flag them
    (the sky lines of the GMOS spectrum), so training patches get such lines, unlabelled. Half of them
    run along rows or columns (sky lines, bad columns), half at any angle (trails); the Gaussian
    cross-section has sigma 0.7-2.5 px and the peak is log-uniform in ``peak_sigma`` times ``sigma``.
    """
    height, width = image.shape
    angle = rng.integers(2) * np.pi / 2 if rng.random() < 0.5 else rng.uniform(0, np.pi)
    y, x = np.mgrid[:height, :width].astype(np.float32)
    offset = rng.uniform(-0.5, 0.5) * min(height, width)
    distance = (x - width / 2) * np.sin(angle) - (y - height / 2) * np.cos(angle) - offset
    profile = np.exp(-0.5 * (distance / rng.uniform(0.7, 2.5)) ** 2)
    return add_light(image, rng, profile * (log_uniform(rng, *peak_sigma) * sigma), gain)

class PatchDataset(Dataset):
    """Patches of one split (``train.h5``, ``val.h5`` or ``test.h5``), normalised like at inference.

    Each patch is normalised with the sky and noise of the *whole frame* it was cut from (stored in
    the file), exactly as :class:`crdetect.CRDetector` normalises a frame, so training and inference
    see the same numbers.

    Parameters
    ----------
    path : path
        HDF5 file with datasets ``image``, ``mask``, ``ignore`` and ``meta/*``.
    preprocessing : Preprocessing
        The model's input scaling.
    augment : bool
        Random flips, 90-degree rotations and extra sky (as deepCR does): up to ``sky_boost`` times
        the frame's sky is added with its Poisson noise, lowering the contrast of hits.
    crop : int, optional
        Random (or, without augmentation, central) crop size; trains faster on CPUs.
    sky_boost : float
        Maximum extra sky, as a multiple of the frame's sky level.
    pedestal_prob : float
        Probability (per patch; also without ``augment``, then deterministic per index) of adding a
        bright smooth pedestal under the patch (:func:`add_pedestal`): galaxy cores and nebulae on
        which hits must still be found.
    pedestal_peak : (float, float)
        Range of the pedestal's peak, in units of the frame's noise (drawn log-uniformly).
    extra_hits : float
        Mean number of extra library hits added to each patch on the fly (:func:`add_hits`), labelled
        like the simulator labels them; 0 turns it off.
    hit_zoom : float
        Extra hits are magnified by a factor drawn uniformly in [1, ``hit_zoom``]: wider, longer
        footprints than the ITL library's (other pixel sizes and sensor thicknesses).
    hit_charge : (float, float)
        Range of the factor (drawn log-uniformly) on the extra hits' charge.
    line_prob : float
        Probability (per patch, like ``pedestal_prob``) of an unlabelled straight line across the
        patch (:func:`add_line`: sky lines, bad columns, satellite trails).
    seed : int
        Augmentations are a function of (seed, epoch, index): runs are reproducible.
    indices : sequence of int, optional
        Use only these patches.
    """

    def __init__(self, path: str | Path, preprocessing: Preprocessing, augment: bool = False, crop: int | None = None,
                 sky_boost: float = 1.0, seed: int = 0, indices=None, pedestal_prob: float = 0.0,
                 pedestal_peak: tuple[float, float] = (10.0, 3000.0), extra_hits: float = 0.0,
                 hit_zoom: float = 1.0, hit_charge: tuple[float, float] = (0.5, 50.0),
                 line_prob: float = 0.0) -> None:
        h5py = require("h5py", "train", "reading and writing benchmark patches (HDF5)")

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist; build the data with `crdetect simulate`")
        self.preprocessing = preprocessing
        self.augment, self.crop, self.sky_boost, self.seed = augment, crop, sky_boost, seed
        self.pedestal_prob, self.pedestal_peak = pedestal_prob, tuple(pedestal_peak)
        self.extra_hits, self.hit_zoom, self.hit_charge = extra_hits, hit_zoom, tuple(hit_charge)
        self.line_prob = line_prob
        self.epoch = 0
        with h5py.File(self.path, "r") as f:
            n = f["image"].shape[0]
            self.frame_sky = f["meta/frame_sky"][:]
            self.frame_sigma = f["meta/frame_sigma"][:]
            self.gain = f["meta/gain"][:]
        self.indices = np.arange(n) if indices is None else np.asarray(indices)
        self._file = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self):  # h5py handles cannot cross process boundaries (DataLoader workers)
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def _h5(self):
        h5py = require("h5py", "train", "reading and writing benchmark patches (HDF5)")

        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        index = int(self.indices[item])
        f = self._h5()
        image = f["image"][index].astype(np.float32)
        mask = f["mask"][index].astype(np.float32)
        ignore = f["ignore"][index].astype(np.float32)
        sky, sigma = float(self.frame_sky[index]), float(self.frame_sigma[index])
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.augment and self.sky_boost > 0:
            extra = rng.uniform(0, self.sky_boost) * max(sky, 0.0)
            gain = float(self.gain[index])
            image = image + (rng.poisson(extra * gain, image.shape) / gain).astype(np.float32)
            sky, sigma = sky + extra, float(np.sqrt(sigma**2 + extra / gain))
        if self.crop and self.crop < image.shape[0]:
            size = self.crop
            if self.augment:
                y, x = rng.integers(0, image.shape[0] - size + 1), rng.integers(0, image.shape[1] - size + 1)
            else:
                y = x = (image.shape[0] - size) // 2
            image, mask, ignore = (a[y:y + size, x:x + size] for a in (image, mask, ignore))
        # pedestals and extra hits also apply to validation patches (deterministically), so that the best
        # epoch is chosen on the data the network is trained for
        if self.pedestal_prob > 0 and rng.random() < self.pedestal_prob:
            image = add_pedestal(image, rng, sigma, float(self.gain[index]), self.pedestal_peak)
        if self.line_prob > 0:
            # its own stream, so that turning lines on leaves the other augmentations as they were
            line_rng = np.random.default_rng([self.seed, self.epoch, index, 2])
            if line_rng.random() < self.line_prob:
                image = add_line(image, line_rng, sigma, float(self.gain[index]))
        if self.extra_hits > 0:
            # a separate stream, so that turning extra hits on leaves the other augmentations as they were
            hit_rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            image, mask = add_hits(image, mask, ignore, hit_rng, sky, sigma, float(self.gain[index]),
                                   self.extra_hits, self.hit_zoom, charge_scale=self.hit_charge)
        if self.augment:
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            image, mask, ignore = (np.rot90(a, k) for a in (image, mask, ignore))
            if flip:
                image, mask, ignore = (a[:, ::-1] for a in (image, mask, ignore))
        x = self.preprocessing.normalise(image, FrameStatistics(sky, sigma))
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]  # noqa: E731
        return {"image": as_tensor(x), "mask": as_tensor(mask), "ignore": as_tensor(ignore)}


# ---------------------------------------------------------------- normalisation and inference

def _median_filter(image: np.ndarray, size: int) -> np.ndarray:
    """``scipy.ndimage.median_filter(image, size, mode="reflect")``, run on row strips in parallel.

    Each strip carries ``size // 2`` rows of its neighbours as context, so the result is identical to the
    single call; scipy releases the GIL, so threads halve the time on 2 cores. Uses as many threads as
    torch does (1 in batch workers, which run in parallel already).
    """
    import torch

    strips = max(1, min(torch.get_num_threads(), image.shape[0] // (4 * size)))
    if strips == 1:
        return ndimage.median_filter(image, size=size, mode="reflect")
    half, height = size // 2, image.shape[0]
    bounds = np.linspace(0, height, strips + 1).astype(int)

    def strip(i: int) -> np.ndarray:
        start, stop = bounds[i], bounds[i + 1]
        lo, hi = max(0, start - half), min(height, stop + half)
        return ndimage.median_filter(image[lo:hi], size=size, mode="reflect")[start - lo:stop - lo]

    with ThreadPoolExecutor(strips) as pool:
        return np.concatenate(list(pool.map(strip, range(strips))))


def _block_medians(image: np.ndarray, block: int, rows_per_chunk: int = 128) -> np.ndarray:
    """Medians of ``block`` x ``block`` pixel blocks (the frame reflect-padded to a multiple of ``block``).

    Done a strip of ``rows_per_chunk`` block rows at a time: the whole frame at once needs three
    frame-sized copies (padding, regrouping, partition), 12 bytes per pixel on top of the frame.
    """
    height, width = image.shape
    rows, columns = -(-height // block), -(-width // block)
    medians = np.empty((rows, columns), np.float32)
    for first in range(0, rows, rows_per_chunk):
        last = min(rows, first + rows_per_chunk)
        if last * block <= height:
            strip = image[first * block:last * block]  # a view
        else:
            strip = image[_reflect_indices(first * block, last * block, height)]
        if width % block:
            strip = strip[:, _reflect_indices(0, columns * block, width)]
        grid = strip.reshape(last - first, block, columns, block).transpose(0, 2, 1, 3)
        values = grid.reshape(last - first, columns, block * block)
        # the middle of an odd number of values by partition: equal to np.median, about 4x faster
        medians[first:last] = np.partition(values, block * block // 2, axis=2)[..., block * block // 2]
    return medians


def local_background_reference(image: np.ndarray, window: int, fill: float = 0.0) -> np.ndarray:
    """:func:`crdetect.preprocessing.local_background` as crdetect <= 0.3 computed it in numpy (scipy's median
    filter of 3 x 3 px block medians, bilinear interpolation back); the parameters are the same."""
    if window < _BACKGROUND_BLOCK:
        raise ValueError(f"local background window must be >= {_BACKGROUND_BLOCK} px, got {window}")
    if not np.isfinite(image).all():
        image = np.where(np.isfinite(image), image, np.float32(fill))
    image = image.astype(np.float32, copy=False)
    block = _BACKGROUND_BLOCK
    medians = _block_medians(image, block)
    height, width = image.shape
    size = max(1, int(round(window / block))) | 1  # odd, so the filter is centred
    smooth = _median_filter(medians, size)
    background = ndimage.zoom(smooth, block, order=1, grid_mode=True, mode="nearest")
    return background[:height, :width].astype(np.float32, copy=False)


def normalise_reference(preprocessing: Preprocessing, image: np.ndarray, stats: FrameStatistics) -> np.ndarray:
    """Preprocessing.normalise as crdetect <= 0.3 computed it in numpy."""
    out = np.array(image, dtype=np.float32, copy=True)
    nonfinite = ~np.isfinite(out)
    if preprocessing.subtract_sky and preprocessing.local_background is not None:
        out[nonfinite] = np.float32(stats.sky)
        for plane in out.reshape(-1, *out.shape[-2:]):
            plane -= local_background_reference(plane, preprocessing.local_background, fill=stats.sky)
    elif preprocessing.subtract_sky:
        out -= np.float32(stats.sky)
    out /= np.float32(stats.sigma if preprocessing.scale == "noise" else preprocessing.fixed_scale)
    if preprocessing.asinh_softening is not None:
        out /= np.float32(preprocessing.asinh_softening)
        np.arcsinh(out, out=out)
    out[nonfinite] = 0.0
    out[~np.isfinite(out)] = 0.0
    return out


def reference_logits(detector, normalised: np.ndarray, tile: int | None, margin: int, batch_size: int) -> np.ndarray:
    """Logits of a normalised frame, padded, tiled and stitched in numpy as crdetect <= 0.3 did."""
    height, width = normalised.shape
    multiple = detector.pad_multiple

    def run(batch: np.ndarray) -> np.ndarray:
        return detector._run(torch.from_numpy(batch).to(detector.device)).cpu().numpy()

    padded = pad_to_multiple(torch.from_numpy(normalised)[None, None], multiple)[0][0, 0].numpy()
    pad_h, pad_w = padded.shape
    if tile is None or (pad_h <= tile and pad_w <= tile):
        return run(padded[None])[0, :height, :width].copy()
    tile = int(np.ceil(tile / multiple) * multiple)
    tile_h = min(balanced_tile(pad_h, tile, margin, multiple), pad_h)
    tile_w = min(balanced_tile(pad_w, tile, margin, multiple), pad_w)
    windows = [(y, x) for y in tile_origins(pad_h, tile_h, margin) for x in tile_origins(pad_w, tile_w, margin)]
    total = np.zeros((pad_h, pad_w), np.float32)
    count = np.zeros((pad_h, pad_w), np.uint8)
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        batch = np.stack([padded[y:y + tile_h, x:x + tile_w] for y, x in chunk])
        for (y, x), logit in zip(chunk, run(batch)):
            y0, y1 = _core_window(y, tile_h, pad_h, margin)
            x0, x1 = _core_window(x, tile_w, pad_w, margin)
            total[y + y0:y + y1, x + x0:x + x1] += logit[y0:y1, x0:x1]
            count[y + y0:y + y1, x + x0:x + x1] += 1
    np.divide(total, count, out=total)
    return total[:height, :width]
