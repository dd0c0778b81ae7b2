"""Argument types and input expansion shared by the subcommands: bad numbers are usage errors before any file is
read, not failures file by file."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import CRDetectError


def number_type(convert, low: float | None = None, high: float | None = None, low_open: bool = False,
                 what: str = "a finite number"):
    """An argparse type: ``convert`` (int or float) of the text, finite and within [low, high] (``low_open``:
    above ``low``), so bad numbers are usage errors before any file is read, not failures file by file."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        below = low is not None and (value <= low if low_open else value < low)
        if not math.isfinite(value) or below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = number_type(int, 1, what="a whole number >= 1")
non_negative_int = number_type(int, 0, what="a whole number >= 0")
finite_float = number_type(float)
positive_float = number_type(float, 0, low_open=True, what="a finite number > 0")
non_negative_float = number_type(float, 0, what="a finite number >= 0")
probability = number_type(float, 0, 1, what="a probability between 0 and 1")
_tile = number_type(int, 0, what="0 (whole frames) or a tile size in pixels")


def tile_size(text: str) -> int | None:
    """A tile side in pixels; 0 means whole frames (None)."""
    return _tile(text) or None


def expand_inputs(items: list[str]) -> list[Path]:
    """Files, directories (their FITS files) and glob patterns, in order, without duplicates."""
    from ..io.reading import FITS_SUFFIXES

    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.name.lower().endswith(FITS_SUFFIXES) and p.is_file())
        elif any(ch in item for ch in "*?[") and not path.exists():
            matches = sorted(Path().glob(item)) if not path.is_absolute() else sorted(
                Path(path.anchor).glob(str(path.relative_to(path.anchor))))
            if not matches:
                raise CRDetectError(f"no file matches {item!r}")
            paths += matches
        else:
            paths.append(path)
    seen, unique = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's time limit, ``kill``), handled like Ctrl-C: workers stopped, temporary
    files removed, the summary written, exit status 143."""


def raise_terminated(signum, frame):
    raise Terminated()
