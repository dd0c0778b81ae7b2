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
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from astropy.stats import mad_std, sigma_clipped_stats

from .background import _BACKGROUND_BLOCK, background_rows, local_background_torch, on_row_blocks
from .errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used: numpy-only callers do not pay for it
    import torch

logger = logging.getLogger(__name__)

#: Frames larger than this are subsampled on a regular grid to estimate sky and noise (fast, deterministic).
_MAX_STATISTICS_PIXELS = 1_000_000


@dataclass(frozen=True)
class FrameStatistics:
    """Sky level and noise of a frame, in the frame's own units."""

    sky: float
    sigma: float


def noise_from_detector(sky, gain: float, read_noise: float):
    """Expected noise (same units as ``sky``, ADU) of a pixel at level ``sky``: sqrt(sky*g + rn^2) / g.

    The detector's noise model (Poisson noise of the photons, read noise), written once: a float for a
    float, an array for an array of levels (negative levels count as 0).

    Parameters
    ----------
    sky : float or ndarray
        Level in ADU above the bias (sky, or sky plus source).
    gain : float
        Gain in electrons per ADU.
    read_noise : float
        Read noise in electrons.
    """
    if gain <= 0 or read_noise < 0:
        raise InputError(f"gain must be > 0 and read noise >= 0, got gain={gain}, read_noise={read_noise}")
    noise = np.sqrt(np.clip(sky, 0.0, None) * gain + read_noise**2) / gain
    return float(noise) if np.ndim(noise) == 0 else noise


def detector_statistics(image: np.ndarray, gain: float, read_noise: float, sky: float | None = None,
                        ignore: np.ndarray | None = None) -> FrameStatistics:
    """The sky (``sky``, else measured robustly on ``image`` without its ``ignore`` pixels) and the detector's noise
    at that sky, sqrt(sky * gain + read_noise^2) / gain: what scales a frame whose gain and read noise are known.

    The one place both the CLI (gain and read noise from options or the header) and the drop-ins (astroscrappy's
    defaults for an omitted one) compute it. The frame must be bias-subtracted (the sky is taken as photons)."""
    level = frame_statistics(image, ignore=ignore).sky if sky is None else float(sky)
    return FrameStatistics(sky=level, sigma=noise_from_detector(level, gain, read_noise))


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


def _median(values: torch.Tensor) -> torch.Tensor:
    """numpy's median of a 1-D tensor (the mean of the two middle values for an even count)."""
    n = values.numel()
    if values.is_cuda:
        # CUDA's kthvalue selects within one thread block per slice: on an H200 the frame statistics (a dozen
        # medians of a million values) took 148 ms with it, ten times the network; a sort uses the whole GPU
        ordered = values.sort().values
        upper = ordered[n // 2]
        return upper if n % 2 else (ordered[n // 2 - 1] + upper) / 2
    upper = values.kthvalue(n // 2 + 1).values  # selection, not a full sort: 5x faster on CPUs
    return upper if n % 2 else (values.kthvalue(n // 2).values + upper) / 2


def frame_statistics_torch(image: torch.Tensor, ignore: torch.Tensor | None = None) -> FrameStatistics:
    """:func:`frame_statistics` in torch, on the image's device (a 2-D tensor); the same numbers.

    The same subsample (every k-th finite pixel, every k-th row for the differences), astropy's
    ``sigma_clipped_stats`` (3 sigma, 5 iterations, median and standard deviation of what is left) and
    ``mad_std``, in float64. A tensor in CPU memory is handed to the numpy function (no copy): torch's CPU
    kernels for the boolean selections here are 10-20x slower than numpy's (measured on 2048 x 4096).
    """
    if isinstance(image, np.ndarray):
        return frame_statistics(image, ignore)
    if image.device.type == "cpu":
        return frame_statistics(image.numpy(), None if ignore is None else ignore.numpy())
    return _frame_statistics_in_torch(image, ignore)


def _frame_statistics_in_torch(image: torch.Tensor, ignore: torch.Tensor | None = None) -> FrameStatistics:
    import torch

    if ignore is not None:
        image = torch.where(ignore, float("nan"), image)
    finite = torch.isfinite(image)
    finite_count = int(finite.sum())
    if finite_count == 0:
        raise InputError("the image has no finite pixels (all NaN or inf); nothing to detect")
    height, width = image.shape
    row_step = max(1, height * width // _MAX_STATISTICS_PIXELS)
    step = max(1, finite_count // _MAX_STATISTICS_PIXELS)
    sample = image.reshape(-1)[finite.reshape(-1)][::step].double()
    kept = sample
    for _ in range(5):  # astropy's sigma_clip: bounds from the median and std of what is left
        centre, spread = _median(kept), kept.std(unbiased=False)
        inside = (kept >= centre - 3 * spread) & (kept <= centre + 3 * spread)
        if bool(inside.all()):
            break
        kept = kept[inside]
    median = float(_median(kept))
    if width > 1:
        rows = image[::row_step].double()
        differences = (rows[:, 1:] - rows[:, :-1]).reshape(-1)
        differences = differences[torch.isfinite(differences)]
    else:
        differences = sample.diff()
    std = float(1.482602218505602 * _median((differences - _median(differences)).abs())) / float(np.sqrt(2)) \
        if differences.numel() else 0.0
    if not np.isfinite(std) or std <= 0:
        std = float(sample.std(unbiased=False)) or 1.0
        logger.warning("the frame's noise could not be estimated (constant sky); using sigma=%g", std)
    return FrameStatistics(sky=median, sigma=std)


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
    def from_dict(cls, values: dict) -> Preprocessing:
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

        Returns a new float32 array (the arithmetic of :meth:`normalise_batch`, in numpy).
        """
        if stats is None:
            stats = frame_statistics(image)
        array = np.asarray(image, dtype=np.float32)
        planes = array.reshape(-1, 1, *array.shape[-2:])
        n = planes.shape[0]
        sky, sigma = (np.full((n, 1, 1, 1), value, np.float32) for value in (stats.sky, stats.sigma))
        return self._normalise_in_numpy(planes, sky, sigma).reshape(array.shape)

    def normalise_batch(self, images: torch.Tensor, sky: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """:meth:`normalise` in torch for a batch (N, 1, H, W) on any device; one sky and sigma per image.

        The same arithmetic as crdetect's former numpy code (tested against it): the local background, when
        configured, is :func:`local_background_torch` of each image. Returns a new float32 tensor. In CPU
        memory the element-wise steps run in numpy on the same memory: torch's CPU kernels for ``isfinite``
        and ``asinh`` measured 15x and 9x slower than numpy's on a 2048 x 4096 frame (2 cores).
        """
        import torch

        n = images.shape[0]
        sky = torch.as_tensor(sky, dtype=torch.float32, device=images.device).reshape(n, 1, 1, 1)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=images.device).reshape(n, 1, 1, 1)
        if images.device.type == "cpu":
            return torch.from_numpy(self._normalise_in_numpy(images.numpy(), sky.numpy(), sigma.numpy()))
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

    def _normalise_in_numpy(self, images: np.ndarray, sky: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """:meth:`normalise_batch`'s arithmetic on arrays (N, 1, H, W), in place on one float32 copy."""
        out = np.array(images, dtype=np.float32, copy=True)
        levels, noises = (np.broadcast_to(np.asarray(value, np.float32).reshape(-1, 1), out.shape[:2]).ravel()
                          for value in (sky, sigma))
        for plane, level, noise in zip(out.reshape(-1, *out.shape[-2:]), levels, noises):
            self._normalise_plane(plane, level, noise)
        return out

    def _normalise_plane(self, plane: np.ndarray, sky: np.float32, sigma: np.float32) -> None:
        """One 2-D plane normalised in place; the element-wise steps on blocks of rows on two threads."""
        nonfinite = ~np.isfinite(plane)
        has_nonfinite = bool(nonfinite.any())
        if has_nonfinite:
            plane[nonfinite] = sky
        background = None  # the local background, a block of rows at a time (no whole-frame array)
        if self.subtract_sky and self.local_background is not None:
            background = background_rows(plane, self.local_background)
        scale = sigma if self.scale == "noise" else np.float32(self.fixed_scale)

        def finish(rows: slice) -> None:
            part = plane[rows]
            if background is not None:
                part -= background(rows)
            elif self.subtract_sky:
                part -= sky
            part /= scale
            if self.asinh_softening is not None:
                part /= np.float32(self.asinh_softening)  # in place: asinh(x / s) without a temporary frame
                np.arcsinh(part, out=part)
            if has_nonfinite:
                part[nonfinite[rows]] = 0.0
            part[~np.isfinite(part)] = 0.0  # overflow of huge values

        on_row_blocks(finish, plane.shape[0])
