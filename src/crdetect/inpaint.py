"""Cleaning: flagged pixels replaced from their unflagged neighbours (``crdetect detect --inpaint``,
``cleanarr`` of :func:`crdetect.detect_cosmics`, ``cosmicray_crdetect(clean=True)``)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def inpaint_median(image: np.ndarray, mask: np.ndarray, size: int = 5, exclude: np.ndarray | None = None) -> np.ndarray:
    """Replace masked pixels by the median of the unmasked pixels in a ``size`` x ``size`` window.

    As deepCR's and astroscrappy's median cleaning do. Pixels whose whole window is masked (inside
    large masked areas) get the mean of the unmasked pixels in growing windows instead, which costs
    two image filters per round rather than a gather of every masked pixel's window. Non-finite
    pixels are filled too. If nothing is unmasked, the image is returned unchanged. Pixels of
    ``exclude`` (an input bad-pixel mask) keep their values but are never used to fill others.
    """
    cleaned = np.array(image, dtype=np.float32, copy=True)
    todo = np.asarray(mask, bool) | ~np.isfinite(cleaned)
    exclude = None if exclude is None else np.asarray(exclude, bool)
    unusable = todo if exclude is None else todo | exclude
    if not todo.any() or unusable.all():
        return cleaned
    half = size // 2
    padded = np.pad(np.where(unusable, np.nan, cleaned), half, mode="reflect")
    ys, xs = np.nonzero(todo)
    for start in range(0, len(ys), 65536):  # chunks bound the memory of the gathered windows
        y, x = ys[start:start + 65536], xs[start:start + 65536]
        offsets = np.arange(size)
        windows = padded[y[:, None, None] + offsets[None, :, None], x[:, None, None] + offsets[None, None, :]]
        windows = windows.reshape(len(y), -1)
        # all-masked windows are left to the loop below (a median of nothing would warn, and silencing
        # warnings is not thread-safe: this runs on the detection thread beside the reader's)
        filled = np.full(len(y), np.nan, np.float32)
        some = ~np.isnan(windows).all(axis=1)
        filled[some] = np.nanmedian(windows[some], axis=1)
        ok = np.isfinite(filled)
        cleaned[y[ok], x[ok]] = filled[ok]
        todo[y[ok], x[ok]] = False
    window = 2 * size + 1
    while todo.any():
        unusable = todo if exclude is None else todo | exclude
        valid = (~unusable).astype(np.float64)
        values = np.where(unusable, 0.0, cleaned).astype(np.float64)
        total = ndimage.uniform_filter(values, window, mode="reflect")
        weight = ndimage.uniform_filter(valid, window, mode="reflect")
        fill = todo & (weight > 1e-9)
        cleaned[fill] = (total[fill] / weight[fill]).astype(np.float32)
        todo &= ~fill
        window = 2 * window + 1
    return cleaned
