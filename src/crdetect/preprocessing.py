"""Input normalisation, recorded in every checkpoint and applied identically in training and inference.

deepCR normalised its inputs one way in training and another in inference; here the single
:class:`Preprocessing` object travels with the model, and both the training data pipeline and
:class:`crdetect.inference.CRDetector` call :meth:`Preprocessing.normalise`.

The default scaling is unit-free: the frame's sky level is subtracted and the result divided by its
noise, so the network sees signal-to-noise whatever the instrument's units (ADU or electrons) and gain.
A soft asinh stretch then compresses the huge dynamic range of saturated stars and strong hits.

Optionally (``local_background``) a local background, a fast approximation of a sliding median, is
subtracted instead of the single sky level: a hit on a bright galaxy core then looks like a hit on sky,
whereas after a global sky subtraction and the asinh stretch it is a small bump on a bright plateau.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from astropy.stats import mad_std, sigma_clipped_stats
from scipy import ndimage

from .errors import InputError

logger = logging.getLogger(__name__)

#: Frames larger than this are subsampled on a regular grid to estimate sky and noise (fast, deterministic).
_MAX_STATISTICS_PIXELS = 1_000_000


@dataclass(frozen=True)
class FrameStatistics:
    """Sky level and noise of a frame, in the frame's own units."""

    sky: float
    sigma: float


def noise_from_detector(sky: float, gain: float, read_noise: float) -> float:
    """Expected noise (same units as ``sky``, ADU) of a sky-dominated pixel: sqrt(sky*g + rn^2) / g.

    Parameters
    ----------
    sky : float
        Sky level in ADU (before subtraction).
    gain : float
        Gain in electrons per ADU.
    read_noise : float
        Read noise in electrons.
    """
    if gain <= 0 or read_noise < 0:
        raise InputError(f"gain must be > 0 and read noise >= 0, got gain={gain}, read_noise={read_noise}")
    return float(np.sqrt(max(sky, 0.0) * gain + read_noise**2) / gain)


def frame_statistics(image: np.ndarray, ignore: np.ndarray | None = None) -> FrameStatistics:
    """Robust sky level and pixel noise of a frame.

    The sky is the sigma-clipped median. The noise is the MAD standard deviation of differences
    between horizontally adjacent pixels, divided by sqrt(2): smooth structure (a galaxy filling the
    frame, gradients) cancels in the differences, so the estimate is the pixel-to-pixel noise even
    where the frame's overall spread is dominated by sources. Non-finite pixels are ignored; large
    frames are subsampled on a regular grid (fast and deterministic, so tiled and whole-frame
    inference see the same numbers). Pixels of ``ignore`` (an input mask) are left out like non-finite ones.
    """
    image = np.asarray(image)
    if ignore is not None:
        image = np.where(ignore, np.float32(np.nan), image)
    finite_count = int(np.count_nonzero(np.isfinite(image)))
    if finite_count == 0:
        raise InputError("the image has no finite pixels (all NaN or inf); nothing to detect")
    row_step = max(1, image.shape[0] * image.shape[1] // _MAX_STATISTICS_PIXELS) if image.ndim == 2 else 1
    # every k-th finite pixel, gathered a block of rows at a time: a full copy of the finite pixels
    # would cost 4 bytes per pixel of memory on a frame of 100 Mpix
    step = max(1, finite_count // _MAX_STATISTICS_PIXELS)
    flat = image.reshape(-1)
    pieces, seen = [], 0
    for start in range(0, flat.size, 1 << 22):
        block = flat[start:start + (1 << 22)]
        block = block[np.isfinite(block)]
        first = (-seen) % step  # keeps the positions in the finite sequence multiples of step
        pieces.append(block[first::step])
        seen += block.size
    sample = np.concatenate(pieces).astype(np.float64)
    _, median, _ = sigma_clipped_stats(sample, sigma=3.0, maxiters=5)
    if image.ndim == 2 and image.shape[1] > 1:
        rows = image[::row_step].astype(np.float64)
        differences = (rows[:, 1:] - rows[:, :-1]).ravel()
        differences = differences[np.isfinite(differences)]
    else:
        differences = np.diff(sample)
    std = float(mad_std(differences)) / np.sqrt(2) if differences.size else 0.0
    if not np.isfinite(std) or std <= 0:
        # A constant (e.g. all-zero) frame or one dominated by a single value: fall back to the
        # plain standard deviation, and to 1 if the frame is truly flat.
        std = float(np.std(sample)) or 1.0
        logger.warning("the frame's noise could not be estimated (constant sky); using sigma=%g", std)
    return FrameStatistics(sky=float(median), sigma=float(std))


#: Block size (px) of the block medians behind :func:`local_background`.
_BACKGROUND_BLOCK = 3


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


def _reflect_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Indices ``start..stop-1`` into an axis of ``length``, those past its end reflected (``np.pad``'s
    "reflect": the edge pixel is not repeated)."""
    index = np.arange(start, stop)
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)  # pads longer than the axis reflect again, as np.pad does
    index %= period
    return np.where(index < length, index, period - index)


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


def local_background(image: np.ndarray, window: int, fill: float = 0.0) -> np.ndarray:
    """Local background of a 2-D image: an approximate sliding median over ``window`` x ``window`` px.

    A true sliding median costs O(window^2) per pixel (about 25 s for a 15 px window on a 2048 x 4096
    CCD with scipy); here the image is reduced to medians of 3 x 3 px blocks, those are median-filtered
    over ``window / 3`` blocks and interpolated back bilinearly (about 0.7 s on 2 cores). Like a sliding median it
    ignores anything narrower than about half the window (hits, stars, which therefore stay in
    ``image - background``) and follows anything broader (galaxy cores, gradients, large halos).

    Parameters
    ----------
    image : ndarray
        2-D image; non-finite pixels are replaced by ``fill`` first.
    window : int
        Width of the median window in pixels (at least 3).
    fill : float
        Value used for non-finite pixels (the frame's sky level).
    """
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


@dataclass(frozen=True)
class Preprocessing:
    """How a model expects its input to be scaled.

    Parameters
    ----------
    subtract_sky : bool
        Subtract the frame's robust sky level (sigma-clipped median).
    scale : {"noise", "fixed"}
        ``"noise"`` divides by the frame's robust noise sigma (signal-to-noise units, independent of
        gain and units); ``"fixed"`` divides by ``fixed_scale`` (e.g. deepCR-style constant scaling).
    fixed_scale : float
        Divisor for ``scale="fixed"``.
    asinh_softening : float or None
        If set, apply ``asinh(x / s)`` to the scaled image: linear within about ``s`` sigma,
        logarithmic beyond, so saturated stars (1e4 sigma) stay in a range the network handles.
    local_background : int or None
        If set (with ``subtract_sky``), subtract :func:`local_background` over this window (px) instead
        of the single sky level. ``None`` (checkpoints made before this option existed) keeps the
        global sky.
    """

    subtract_sky: bool = True
    scale: str = "noise"
    fixed_scale: float = 1.0
    asinh_softening: float | None = 10.0
    local_background: int | None = None

    def __post_init__(self) -> None:
        if self.scale not in ("noise", "fixed"):
            raise ValueError(f"unknown scale {self.scale!r}; choose 'noise' or 'fixed'")
        if self.fixed_scale <= 0 or (self.asinh_softening is not None and self.asinh_softening <= 0):
            raise ValueError("fixed_scale and asinh_softening must be positive")
        if self.local_background is not None and self.local_background < _BACKGROUND_BLOCK:
            raise ValueError(f"local_background must be None or >= {_BACKGROUND_BLOCK} px")

    def to_dict(self) -> dict:
        """Plain dict for checkpoints and YAML."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer checkpoint format)."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown preprocessing keys {sorted(unknown)}; upgrade crdetect to read this checkpoint")
        return cls(**values)

    def normalise(self, image: np.ndarray, stats: FrameStatistics | None = None) -> np.ndarray:
        """Scale ``image`` as the model expects; non-finite pixels become 0 (the sky level).

        Parameters
        ----------
        image : ndarray
            2-D (or stacked N-D) float image in its own units.
        stats : FrameStatistics, optional
            Sky and noise to use; estimated from ``image`` when omitted. Pass them explicitly when
            normalising cut-outs (patches, tiles) of a larger frame so all pieces share one scaling.
        """
        if stats is None:
            stats = frame_statistics(image)
        out = np.array(image, dtype=np.float32, copy=True)
        nonfinite = ~np.isfinite(out)
        has_nonfinite = bool(nonfinite.any())
        if self.subtract_sky and self.local_background is not None:
            # non-finite (and masked) pixels count as sky; filled here so the background needs no copy
            if has_nonfinite:
                out[nonfinite] = np.float32(stats.sky)
            for plane in out.reshape(-1, *out.shape[-2:]):  # views: stacked frames get one background each
                plane -= local_background(plane, self.local_background, fill=stats.sky)
        elif self.subtract_sky:
            out -= np.float32(stats.sky)
        out /= np.float32(stats.sigma if self.scale == "noise" else self.fixed_scale)
        if self.asinh_softening is not None:
            out /= np.float32(self.asinh_softening)  # in place: asinh(x / s) without a temporary frame
            np.arcsinh(out, out=out)
        if has_nonfinite:
            out[nonfinite] = 0.0
        out[~np.isfinite(out)] = 0.0  # overflow of huge values
        return out

    def normalise_batch(self, images: "torch.Tensor", sky: "torch.Tensor", sigma: "torch.Tensor") -> "torch.Tensor":
        """:meth:`normalise` in torch for a batch (N, 1, H, W) on any device; one sky and sigma per image.

        The same arithmetic as the numpy method (tested against it): the local background, when
        configured, is :func:`local_background_torch` of each image. Returns a new float32 tensor.
        """
        import torch

        n = images.shape[0]
        sky = torch.as_tensor(sky, dtype=torch.float32, device=images.device).reshape(n, 1, 1, 1)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=images.device).reshape(n, 1, 1, 1)
        finite = torch.isfinite(images)
        out = torch.where(finite, images.float(), sky)
        if self.subtract_sky and self.local_background is not None:
            out = out - local_background_torch(out, self.local_background)
        elif self.subtract_sky:
            out = out - sky
        out = out / (sigma if self.scale == "noise" else self.fixed_scale)
        if self.asinh_softening is not None:
            out = torch.asinh(out / self.asinh_softening)
        return torch.where(finite & torch.isfinite(out), out, 0.0)


def _symmetric_indices(length: int, before: int, after: int, device) -> "torch.Tensor":
    """Indices of an axis padded by ``before``/``after`` in scipy.ndimage's "reflect" mode (numpy's
    "symmetric": the edge pixel is repeated)."""
    import torch

    index = torch.arange(-before, length + after, device=device)
    period = 2 * length
    index = index % period
    return torch.where(index < length, index, period - 1 - index)


def _reflect_pad_to_multiple(images: "torch.Tensor", block: int) -> "torch.Tensor":
    """Pad the last two axes at their end to a multiple of ``block`` as :func:`_reflect_indices` does."""
    import torch

    height, width = images.shape[-2:]
    rows = torch.as_tensor(_reflect_indices(0, -(-height // block) * block, height), device=images.device)
    columns = torch.as_tensor(_reflect_indices(0, -(-width // block) * block, width), device=images.device)
    return images.index_select(-2, rows).index_select(-1, columns)


def local_background_torch(images: "torch.Tensor", window: int, max_elements: int = 1 << 25) -> "torch.Tensor":
    """:func:`local_background` in torch for finite images (N, 1, H, W) on any device.

    Medians of 3 x 3 blocks, a median filter over ``window / 3`` blocks (scipy's "reflect" edges), and
    bilinear interpolation back to the pixel grid (``align_corners=False`` is ``ndimage.zoom``'s
    ``grid_mode=True``; both hold the edge value beyond the outermost block centres). The median filter
    is unfolded a strip of block rows at a time, at most ``max_elements`` values at once.
    """
    import torch
    import torch.nn.functional as F

    if window < _BACKGROUND_BLOCK:
        raise ValueError(f"local background window must be >= {_BACKGROUND_BLOCK} px, got {window}")
    block = _BACKGROUND_BLOCK
    n, channels, height, width = images.shape
    padded = _reflect_pad_to_multiple(images.float(), block)
    rows, columns = padded.shape[-2] // block, padded.shape[-1] // block
    blocks = padded.reshape(n, channels, rows, block, columns, block).permute(0, 1, 2, 4, 3, 5)
    medians = blocks.reshape(n, channels, rows, columns, block * block).median(dim=-1).values
    size = max(1, int(round(window / block))) | 1
    half = size // 2
    grid = medians.index_select(-2, _symmetric_indices(rows, half, half, images.device))
    grid = grid.index_select(-1, _symmetric_indices(columns, half, half, images.device))
    smooth = torch.empty_like(medians)
    strip = max(1, max_elements // max(1, n * channels * columns * size * size))
    for first in range(0, rows, strip):
        last = min(rows, first + strip)
        windows = grid[..., first:last + 2 * half, :].unfold(-2, size, 1).unfold(-2, size, 1)
        smooth[..., first:last, :] = windows.reshape(*windows.shape[:4], size * size).median(dim=-1).values
    background = F.interpolate(smooth.reshape(n * channels, 1, rows, columns), scale_factor=block,
                               mode="bilinear", align_corners=False)
    return background.reshape(n, channels, rows * block, columns * block)[..., :height, :width]
