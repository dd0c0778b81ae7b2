"""HDF5 files of training patches (``train.h5``, ``val.h5``, ``test.h5``), written as the patches are made, so
that the paper preset never sits in memory: the format ``crdetect train`` and ``crdetect study`` read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._optional import require

#: Side of a training patch in pixels by default (the study's 256 x 256; Cosmic-CoNN trains on 1024 x 1024).
PATCH = 256
#: The largest patch side a benchmark or training set may be cut into.
MAX_PATCH = 1024


def check_patch(patch: int) -> int:
    """A patch side: a whole number of pixels from 64 to :data:`MAX_PATCH`, a multiple of 16 (every network's
    pooling multiple divides it, so a patch is never padded); returns it.

    Raises
    ------
    InputError
        Another number.
    """
    from ..errors import InputError

    if not (isinstance(patch, (int, np.integer)) and 64 <= patch <= MAX_PATCH and patch % 16 == 0):
        raise InputError(f"patch size must be a multiple of 16 from 64 to {MAX_PATCH} px, got {patch!r}")
    return int(patch)


class PatchWriter:
    """Appends patches to an HDF5 file as they are made (the paper preset never sits in memory)."""

    META = ("band", "kind", "exposure_s", "seeing_arcsec", "gain", "read_noise", "sky_adu", "frame_sky", "frame_sigma",
            "frame_id", "y0", "x0")

    def __init__(self, path: Path, expected: int, patch: int = PATCH) -> None:
        h5py = require("h5py", "train", "reading and writing benchmark patches (HDF5)")

        check_patch(patch)
        self.file = h5py.File(path, "w")
        chunk, shape, most = (1, patch, patch), (0, patch, patch), (None, patch, patch)
        self.image = self.file.create_dataset("image", shape, "f4", maxshape=most, chunks=chunk, compression="gzip",
                                              compression_opts=1, shuffle=True)
        self.mask = self.file.create_dataset("mask", shape, "u1", maxshape=most, chunks=chunk, compression="gzip",
                                             compression_opts=1)
        self.ignore = self.file.create_dataset("ignore", shape, "u1", maxshape=most, chunks=chunk, compression="gzip",
                                               compression_opts=1)
        # Cosmic-CoNN's median weight (alpha = 0) as uint8 / 255, for the median-weighted loss
        self.weight = self.file.create_dataset("weight", shape, "u1", maxshape=most, chunks=chunk, compression="gzip",
                                               compression_opts=1)
        self.meta = {k: [] for k in self.META}
        self.n = 0

    def add(self, images, masks, ignores, weights, meta: dict) -> None:
        k = len(images)
        for dset, values in ((self.image, images), (self.mask, masks), (self.ignore, ignores), (self.weight, weights)):
            dset.resize(self.n + k, axis=0)
            dset[self.n:self.n + k] = values
        for key in self.META:
            self.meta[key] += list(meta[key]) if np.ndim(meta[key]) else [meta[key]] * k
        self.n += k

    def close(self) -> None:
        for key, values in self.meta.items():
            text = {"band": "S8", "kind": "S16"}.get(key)
            data = np.array(values, dtype=text) if text else np.asarray(values)
            self.file.create_dataset(f"meta/{key}", data=data)
        self.file.close()
