"""Operations on boolean masks shared by the detector, the drop-ins and the tools."""

from __future__ import annotations

import numpy as np

from .errors import InputError


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` in every direction (8-connected: a square of side 2 * pixels + 1)."""
    mask = np.asarray(mask, bool)
    if pixels < 0:
        raise InputError(f"grow must be >= 0 pixels, got {pixels}")
    if pixels == 0 or not mask.any():
        return mask.copy()
    from scipy import ndimage

    return ndimage.binary_dilation(mask, np.ones((3, 3), bool), iterations=int(pixels))
