"""The local background of a frame: an approximate sliding median (3 x 3 block medians, median-filtered, upsampled
bilinearly), in numpy on the host and in torch on a GPU, the same arithmetic (:func:`local_background`,
:func:`local_background_torch`). :class:`crdetect.preprocessing.Preprocessing` subtracts it when a model was
trained so (the shipped models: a 21 px window).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: numpy-only callers do not pay for it
    import torch


#: Block size (px) of the block medians behind :func:`local_background`.
_BACKGROUND_BLOCK = 3


def _reflect_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Indices ``start..stop-1`` into an axis of ``length``, those past its end reflected (``np.pad``'s
    "reflect": the edge pixel is not repeated)."""
    index = np.arange(start, stop)
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)  # pads longer than the axis reflect again, as np.pad does
    index %= period
    return np.where(index < length, index, period - index)


def local_background(image: np.ndarray, window: int, fill: float = 0.0) -> np.ndarray:
    """Local background of a 2-D image: an approximate sliding median over ``window`` x ``window`` px.

    A true sliding median costs O(window^2) per pixel (about 25 s for a 15 px window on a 2048 x 4096
    CCD with scipy); here the image is reduced to medians of 3 x 3 px blocks, those are median-filtered
    over ``window / 3`` blocks and interpolated back bilinearly: 0.19 s on 2 CPU cores for a DECam CCD
    (:func:`local_background_torch`, the same arithmetic on a GPU, took 0.83 s on those cores). Like a sliding
    median it ignores anything narrower than about half the window (hits, stars, which therefore stay in
    ``image - background``) and follows anything broader (galaxy cores, gradients, large halos).

    Parameters
    ----------
    image : ndarray
        2-D image; non-finite pixels are replaced by ``fill`` first.
    window : int
        Width of the median window in pixels (at least 3).
    fill : float
        Value used for non-finite pixels (the frame's sky level).

    Returns a new float32 array of the image's shape.
    """
    rows_of = background_rows(image, window, fill)
    out = np.empty(np.shape(image), np.float32)

    def fill_rows(rows: slice) -> None:
        out[rows] = rows_of(rows)

    on_row_blocks(fill_rows, out.shape[0])
    return out


def background_rows(image: np.ndarray, window: int, fill: float = 0.0):
    """:func:`local_background` a block of rows at a time: the block medians and their median filter are computed
    now, and the returned ``rows(slice)`` gives those rows of the background (float32), so that a caller can
    subtract it block by block without a whole-frame array (4 bytes per pixel less at the peak)."""
    if window < _BACKGROUND_BLOCK:
        raise ValueError(f"local background window must be >= {_BACKGROUND_BLOCK} px, got {window}")
    image = np.asarray(image, np.float32)
    if not np.isfinite(image).all():
        image = np.where(np.isfinite(image), image, np.float32(fill))
    block = _BACKGROUND_BLOCK
    height, width = image.shape
    rows = _reflect_indices(0, -(-height // block) * block, height)
    columns = _reflect_indices(0, -(-width // block) * block, width)
    medians = np.empty((len(rows) // block, len(columns) // block), np.float32)

    def block_medians(grid_rows: slice) -> None:
        # a strip of the frame, padded by reflection only where it runs past the frame's bottom or right edge
        wanted = rows[grid_rows.start * block:grid_rows.stop * block]
        inside = wanted[-1] - wanted[0] == len(wanted) - 1
        strip = image[wanted[0]:wanted[0] + len(wanted)] if inside else image[wanted]
        if len(columns) != width:
            strip = strip[:, columns]
        blocks = strip.reshape(len(wanted) // block, block, medians.shape[1], block)
        medians[grid_rows] = _median_of_nine([blocks[:, i, :, j] for i in range(block) for j in range(block)])

    on_row_blocks(block_medians, medians.shape[0], rows=64)
    size = max(1, int(round(window / block))) | 1
    coarse = _upsample_rows(_median_filter(medians, size))[:height]  # full resolution down the rows only

    def background_of(wanted: slice) -> np.ndarray:
        return _upsample_columns(coarse[wanted])[:, :width]

    return background_of


def on_row_blocks(function, height: int, rows: int = 128, threads: int = 2) -> None:
    """``function(slice)`` for consecutive blocks of ``rows`` rows of an image of ``height`` rows, on ``threads``
    threads: numpy releases the GIL in its element-wise and sorting loops, so two cores share the work, and
    blocks small enough for the caches keep it from waiting on memory (the normalisation of a DECam CCD, local
    background included: 0.40-0.46 s before, 0.25-0.30 s so, on 2 cores)."""
    from concurrent.futures import ThreadPoolExecutor

    blocks = [slice(first, min(height, first + rows)) for first in range(0, height, rows)]
    if threads <= 1 or len(blocks) == 1:
        for block in blocks:
            function(block)
        return
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(function, blocks))


#: A median network for nine values (Paeth's): the fifth of nine after these 19 compare-exchanges. 19 element-wise
#: minima and maxima of the block grid are 3x faster than ``np.median`` over an axis of nine.
_MEDIAN_OF_NINE = [(1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
                   (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2)]


def _median_of_nine(values: list[np.ndarray]) -> np.ndarray:
    """Element-wise median of nine arrays of one shape."""
    values = [np.array(v, np.float32) for v in values]
    for a, b in _MEDIAN_OF_NINE:
        low = np.minimum(values[a], values[b])
        np.maximum(values[a], values[b], out=values[b])
        values[a] = low
    return values[4]


def _median_filter(grid: np.ndarray, size: int) -> np.ndarray:
    """scipy's ``median_filter(grid, size, mode="reflect")``, exactly, a block of rows at a time on two threads:
    a partial sort of each block's windows, small enough to stay in cache, took 0.08 s on the 1366 x 683 block
    grid of a DECam CCD where scipy took 0.79 s."""
    half = size // 2
    padded = np.pad(grid, half, mode="symmetric")  # scipy's "reflect": the edge value repeated
    out = np.empty_like(grid)
    middle = size * size // 2

    def filter_rows(rows: slice) -> None:
        windows = np.lib.stride_tricks.sliding_window_view(padded[rows.start:rows.stop + 2 * half], (size, size))
        windows = np.array(windows.reshape(-1, size * size))  # a copy of the block's windows, sorted in place
        windows.partition(middle, axis=1)
        out[rows] = windows[:, middle].reshape(rows.stop - rows.start, -1)

    on_row_blocks(filter_rows, grid.shape[0], rows=64)
    return out


def _upsample_rows(grid: np.ndarray) -> np.ndarray:
    """``grid`` three times finer down its rows, interpolated linearly between block centres and held beyond the
    outermost ones (torch's ``interpolate(..., scale_factor=3, mode="bilinear", align_corners=False)`` along one
    axis; torch rounds the source coordinates in float32, which moves its result by up to 1e-4 of the step
    between neighbouring blocks)."""
    third, two_thirds = np.float32(1 / 3), np.float32(2 / 3)
    before = np.concatenate([grid[:1], grid[:-1]])
    after = np.concatenate([grid[1:], grid[-1:]])
    out = np.empty((3 * grid.shape[0], grid.shape[1]), np.float32)
    out[0::3] = grid * two_thirds + before * third
    out[1::3] = grid
    out[2::3] = grid * two_thirds + after * third
    out[0], out[-1] = grid[0], grid[-1]
    return out


def _upsample_columns(part: np.ndarray) -> np.ndarray:
    """:func:`_upsample_rows` along the columns of ``part`` (rows, columns): the same arithmetic."""
    third, two_thirds = np.float32(1 / 3), np.float32(2 / 3)
    out = np.empty((part.shape[0], 3 * part.shape[1]), np.float32)
    out[:, 0::3] = part * two_thirds
    out[:, 0::3][:, 1:] += part[:, :-1] * third
    out[:, 0::3][:, 0] += part[:, 0] * third
    out[:, 1::3] = part
    out[:, 2::3] = part * two_thirds
    out[:, 2::3][:, :-1] += part[:, 1:] * third
    out[:, 2::3][:, -1] += part[:, -1] * third
    out[:, 0], out[:, -1] = part[:, 0], part[:, -1]
    return out


def _symmetric_indices(length: int, before: int, after: int, device) -> torch.Tensor:
    """Indices of an axis padded by ``before``/``after`` in scipy.ndimage's "reflect" mode (numpy's
    "symmetric": the edge pixel is repeated)."""
    import torch

    index = torch.arange(-before, length + after, device=device)
    period = 2 * length
    index = index % period
    return torch.where(index < length, index, period - 1 - index)


def _reflect_pad_to_multiple(images: torch.Tensor, block: int) -> torch.Tensor:
    """Pad the last two axes at their end to a multiple of ``block`` as :func:`_reflect_indices` does."""
    import torch

    height, width = images.shape[-2:]
    rows = torch.as_tensor(_reflect_indices(0, -(-height // block) * block, height), device=images.device)
    columns = torch.as_tensor(_reflect_indices(0, -(-width // block) * block, width), device=images.device)
    return images.index_select(-2, rows).index_select(-1, columns)


def local_background_torch(images: torch.Tensor, window: int, max_elements: int = 1 << 25) -> torch.Tensor:
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
