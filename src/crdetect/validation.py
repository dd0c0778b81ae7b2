"""Checks of what users pass to the Python API, with messages that name the problem and the fix (the CLI's
argument types make the same checks at parse time)."""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError


def check_number(value, name: str, minimum: float | None = None, *, above: bool = False, integer: bool = False,
                 optional: bool = True):
    """``value`` as a float (or int), checked to be finite and at least ``minimum`` (``above``: more than it).

    ``None`` passes through when ``optional``. NaN, inf, strings and booleans are refused with an
    :class:`~crdetect.InputError` naming the parameter, as the CLI refuses them.
    """
    if value is None and optional:
        return None
    number = getattr(value, "value", value)  # an astropy Quantity (ccdproc passes gain as 4 * u.electron / u.adu)
    bound = "" if minimum is None else f" {'>' if above else '>='} {minimum:g}"
    what = f"{'a whole number' if integer else 'a finite number'}{bound}"
    try:
        if isinstance(number, (bool, np.bool_)) or isinstance(number, str):
            raise TypeError
        converted = float(number)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {what}, got {value!r}") from None
    low = minimum is not None and (converted <= minimum if above else converted < minimum)
    if not math.isfinite(converted) or low or (integer and converted != int(converted)):
        raise InputError(f"{name} must be {what}, got {value!r}")
    return int(converted) if integer else converted


def check_threshold(threshold: float | None) -> float | None:
    """Validate a probability threshold (0 to 1; outside, every pixel or none would be flagged silently)."""
    if threshold is None:
        return None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"threshold must be a number between 0 and 1, got {threshold!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise InputError(f"threshold must be a probability between 0 and 1, got {threshold!r}")
    return value


def split_input_mask(image, mask=None) -> tuple[object, np.ndarray | None]:
    """Separate the pixels from an input mask given with them or beside them.

    ``image`` may be an array, a ``numpy.ma.MaskedArray``, or an astropy ``CCDData``/``NDData`` (anything
    with ``.data`` and ``.mask``); ``mask`` (True or non-zero = bad) is combined with the image's own mask.
    Returns the plain pixels and a boolean mask (None when nothing is masked).
    """
    own = None
    if isinstance(image, np.ma.MaskedArray):
        own = np.ma.getmaskarray(image)
        image = image.data
    elif hasattr(image, "data") and hasattr(image, "mask") and not isinstance(image, np.ndarray):
        own = None if image.mask is None else np.asarray(image.mask)
        image = image.data
    masks = []
    for candidate, what in ((own, "the image's own mask"), (mask, "mask")):
        if candidate is None:
            continue
        candidate = np.asarray(candidate)
        if candidate.shape != np.shape(image):
            raise InputError(f"{what} has shape {candidate.shape} but the image has shape {np.shape(image)}; "
                             "pass a mask of the image's shape (True or non-zero = bad pixel)")
        masks.append(candidate != 0)
    if not masks:
        return image, None
    combined = masks[0] if len(masks) == 1 else masks[0] | masks[1]
    return image, (combined if combined.any() else None)


def as_image(image, name: str = "image") -> np.ndarray:
    """Validate a user image and return it as a native-endian float32 2-D array.

    Integer (and big-endian, as FITS stores) data are converted; anything not 2-D, empty, complex
    or non-numeric is refused with a message saying what to pass instead.
    """
    try:
        array = np.asarray(image)
    except Exception as err:
        raise InputError(f"{name} cannot be read as an array: {err}") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {array.dtype}; pass a real-valued numeric 2-D image")
    if array.ndim != 2:
        hint = " For a cube, pass one plane at a time (image[i])." if array.ndim == 3 else ""
        raise InputError(f"{name} must be 2-D (rows, columns), got {array.ndim}-D with shape {array.shape}.{hint}")
    if array.size == 0:
        raise InputError(f"{name} is empty (shape {array.shape})")
    array = np.ascontiguousarray(array, dtype=np.float32)
    # torch warns on read-only memory (a memory-mapped file, a frozen array), though nothing writes to it
    return array if array.flags.writeable else array.copy()
