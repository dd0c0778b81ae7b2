"""Straight steps across a whole frame -- a raw frame's overscan or prescan against its data, two amplifiers
at different bias levels, unexposed rows -- levelled before the network.

A step between columns (or rows) that runs the frame's whole height is instrumental: no source or cosmic ray
makes one. But a CR model has never seen one, and its local background (a sliding median) straddles it, so
the last column on the bright side stands out of it: on the SAAO 1.0 m raw frame with its overscan
(``../shared/data/real/b3_saao_ccdproc/a8280271.fits``; a step of 88 ADU, 11 sigma) the shipped default
flagged 57 px of column 527 with gain and read noise, 489 without, where LA-Cosmic flags none (issue #28).
A pipeline that calls :func:`crdetect.detect_cosmics` on an untrimmed frame has no header to say where the
data end, so the steps are found in the pixels: the median of every column (over a subsample of rows) and
of every row, and in those profiles a jump of at least ``STEP_SIGMA`` times the pixel noise made in one
pixel with flat levels on both sides. Each stretch between steps is shifted to the level of the longest
one; a frame without steps is left as it is (bit-identical results).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

#: A step is at least this many times the pixel noise between the levels on its two sides.
STEP_SIGMA = 5.0
#: The levels on each side are medians of this many profile values...
STEP_WINDOW = 4
#: ... none of which may lie further than this fraction of the step from them (flat sides), and at least
#: ``STEP_SHARPNESS`` of the step is made between two adjacent columns (a gradient is no step).
STEP_FLATNESS = 0.25
STEP_SHARPNESS = 0.7
#: Profiles are medians over about this many rows (or columns), a regular subsample: their noise is then
#: ~0.08 of a pixel's, far below any step that counts.
PROFILE_SAMPLES = 256


def profile_steps(profile: np.ndarray, sigma: float) -> list[int]:
    """Positions ``i`` of the steps of a 1-D ``profile`` (between ``i`` and ``i + 1``), in order.

    A step: the medians of the ``STEP_WINDOW`` values on each side differ by at least ``STEP_SIGMA *
    sigma``, no value of either side is further than ``STEP_FLATNESS`` of that difference from its side's
    median, and the jump between the two adjacent values is at least ``STEP_SHARPNESS`` of it. Of adjacent
    candidates the sharpest is kept. NaN values (wholly masked columns) are ignored.
    """
    values = np.asarray(profile, np.float64)
    finite = np.isfinite(values)
    if finite.sum() < 2:
        return []
    values = values[finite]
    where = np.flatnonzero(finite)  # positions of the finite values in the profile
    n, w = len(values), STEP_WINDOW
    padded = np.pad(values, w, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, w)
    # window k of padded covers values[k - w : k]: the left side of position i is window i + 1, the right i + w + 1
    left, right = windows[1:n], windows[w + 1:n + w]
    left_level, right_level = np.median(left, axis=1), np.median(right, axis=1)
    jump = right_level - left_level
    big = np.abs(jump) >= STEP_SIGMA * sigma
    flat = (np.abs(left - left_level[:, None]).max(axis=1) <= STEP_FLATNESS * np.abs(jump)) & \
           (np.abs(right - right_level[:, None]).max(axis=1) <= STEP_FLATNESS * np.abs(jump))
    sharp = np.abs(np.diff(values)) >= STEP_SHARPNESS * np.abs(jump)
    candidates = np.flatnonzero(big & flat & sharp)
    steps: list[int] = []
    for i in candidates:
        if steps and i == steps[-1] + 1:  # one step seen from two adjacent positions: the sharper one
            if abs(values[i + 1] - values[i]) > abs(values[steps[-1] + 1] - values[steps[-1]]):
                steps[-1] = int(i)
            continue
        steps.append(int(i))
    return [int(where[i]) for i in steps]


def step_offsets(profile: np.ndarray, sigma: float) -> tuple[np.ndarray | None, list[int]]:
    """What to subtract from each position of ``profile`` to level its steps (:func:`profile_steps`) onto the
    longest stretch between them (None when it has none), and the steps."""
    steps = profile_steps(profile, sigma)
    if not steps:
        return None, steps
    bounds = [0, *(s + 1 for s in steps), len(profile)]
    stretches = list(zip(bounds[:-1], bounds[1:]))
    levels = [float(np.nanmedian(profile[start:stop])) for start, stop in stretches]
    reference = levels[int(np.argmax([stop - start for start, stop in stretches]))]
    offsets = np.zeros(len(profile))
    for (start, stop), level in zip(stretches, levels):
        offsets[start:stop] = level - reference
    return offsets, steps


def _profile(frame, dim: int) -> np.ndarray:
    """Medians of ``frame`` (an array or a tensor; NaN = unusable) along ``dim`` over a regular subsample, as
    float64 numpy."""
    stride = max(1, frame.shape[dim] // PROFILE_SAMPLES)
    sample = frame[::stride] if dim == 0 else frame[:, ::stride]
    if isinstance(sample, np.ndarray):
        if not np.isnan(sample).any():  # nanmedian goes through masked arrays for short axes: 5x slower
            return np.median(sample, axis=dim).astype(np.float64)
        import warnings

        with warnings.catch_warnings():  # a wholly masked column has no median: NaN, which profile_steps skips
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(sample, axis=dim).astype(np.float64)
    import torch

    return torch.nanmedian(sample, dim=dim).values.double().cpu().numpy()


def level_steps(frame, sigma: float) -> tuple:
    """``frame`` (2-D ndarray, or a torch tensor on a GPU; NaN where unusable) with its whole-frame column and row
    steps levelled, and what was found (``{"columns": [...], "rows": [...]}``, the positions of the steps). A frame
    without steps comes back as the same object; otherwise a new one (the caller's is never changed)."""
    found: dict[str, list[int]] = {"columns": [], "rows": []}
    if frame.shape[0] < 2 * STEP_WINDOW or frame.shape[1] < 2 * STEP_WINDOW or not sigma > 0:
        return frame, found
    for dim, name in ((0, "columns"), (1, "rows")):  # rows on the frame with its column steps levelled
        offsets, found[name] = step_offsets(_profile(frame, dim), sigma)
        if offsets is not None:
            if isinstance(frame, np.ndarray):
                shift = offsets.astype(frame.dtype)
            else:
                import torch

                shift = torch.as_tensor(offsets, dtype=frame.dtype, device=frame.device)
            frame = frame - (shift[None, :] if dim == 0 else shift[:, None])
    if found["columns"] or found["rows"]:
        logger.info("straight steps across the frame levelled before the network (overscan, prescan or "
                    "amplifier bias): after columns %s, after rows %s", found["columns"], found["rows"])
    return frame, found
