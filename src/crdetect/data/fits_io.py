"""FITS in, FITS out: read science HDUs safely, write CR masks and probabilities atomically.

The input file is opened read-only and never written. Outputs are a new file holding the original
HDUs unchanged plus, for each science HDU, a ``CRMASK`` (uint8) and a ``CRPROB`` (float32,
losslessly compressed) extension whose headers say which model and threshold made them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from ..errors import InputError, OutputError

logger = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fits.gz", ".fit.gz", ".fz")


@dataclass
class ScienceHDU:
    """One 2-D image read from a FITS file, as float32 in native byte order."""

    index: int
    name: str
    data: np.ndarray
    header: fits.Header

    @property
    def label(self) -> str:
        return f"{self.index}:{self.name}" if self.name else str(self.index)


def _is_image(hdu) -> bool:
    return isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))


def _describe(hdul: fits.HDUList) -> str:
    parts = []
    for i, hdu in enumerate(hdul):
        shape = "x".join(str(n) for n in reversed(hdu.shape)) if _is_image(hdu) and hdu.shape else "no image"
        parts.append(f"{i}:{hdu.name or '-'} ({shape})")
    return ", ".join(parts)


def open_fits(path: str | os.PathLike) -> fits.HDUList:
    """Open ``path`` read-only with a clear error when it is missing or not a valid FITS file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist")
    if path.is_dir():
        raise InputError(f"{str(path)!r} is a directory; pass FITS files (or a directory to `crdetect detect`)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)  # non-standard cards are common and harmless
            hdul = fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=False)
    except (OSError, ValueError, TypeError, EOFError) as err:
        raise InputError(f"cannot read {str(path)!r} as FITS ({err}); the file is corrupt, truncated or not FITS") from None
    return hdul


def _to_float32(data: np.ndarray, where: str) -> np.ndarray:
    if data.dtype.kind not in "biuf":
        raise InputError(f"{where} holds {data.dtype} data; only real numeric images can be processed")
    if data.dtype.kind in "biu":
        logger.info("%s: converting %s integer data to float32", where, data.dtype)
    # astype to native float32 also fixes FITS's big-endian byte order for torch and numpy ops
    return np.ascontiguousarray(data, dtype=np.float32)


def read_science_hdus(path: str | os.PathLike, hdu: str | int | None = None) -> list[ScienceHDU]:
    """Read the science image(s) of a FITS file.

    Parameters
    ----------
    path : path
        FITS file (plain, gzipped or tile-compressed).
    hdu : int, str or None
        ``None``: the first HDU holding a 2-D image. An index or EXTNAME picks one HDU.
        ``"all"``: every 2-D image HDU (all CCDs of a mosaic exposure), excluding crdetect's own
        ``CRMASK``/``CRPROB`` outputs.

    Raises
    ------
    InputError
        Missing file, not FITS, the HDU does not exist or does not hold a 2-D image.
    """
    with open_fits(path) as hdul:
        try:
            if hdu is None or hdu == "all":
                selected = [i for i, h in enumerate(hdul)
                            if _is_image(h) and h.header.get("NAXIS", 0) == 2 and h.name not in ("CRMASK", "CRPROB")]
                if not selected:
                    raise InputError(f"{str(path)!r} has no 2-D image HDU (HDUs: {_describe(hdul)})")
                if hdu is None:
                    selected = selected[:1]
            else:
                key = int(hdu) if isinstance(hdu, int) or str(hdu).lstrip("-").isdigit() else str(hdu)
                try:
                    index = hdul.index_of(key)
                except (KeyError, IndexError):
                    raise InputError(f"{str(path)!r} has no HDU {hdu!r}; HDUs are: {_describe(hdul)}") from None
                if isinstance(key, int) and not -len(hdul) <= key < len(hdul):
                    raise InputError(f"{str(path)!r} has no HDU {hdu!r}; HDUs are: {_describe(hdul)}")
                selected = [index if index >= 0 else len(hdul) + index]
            result = []
            for i in selected:
                h = hdul[i]
                where = f"{Path(path).name}[{i}]"
                if not _is_image(h) or h.data is None:
                    raise InputError(f"HDU {i} of {str(path)!r} holds no image data; pick another with --hdu "
                                     f"(HDUs: {_describe(hdul)})")
                if h.data.ndim != 2:
                    raise InputError(f"HDU {i} of {str(path)!r} is {h.data.ndim}-D (shape {h.data.shape}); "
                                     "crdetect needs 2-D images: pick a 2-D HDU with --hdu or split the cube")
                result.append(ScienceHDU(i, h.name, _to_float32(h.data, where), h.header.copy()))
        except (OSError, ValueError, TypeError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"cannot read the data of {str(path)!r} ({err}); the file is corrupt or truncated") from None
    return result


GAIN_KEYWORDS = ("GAIN", "EGAIN", "ATODGAIN", "CCDGAIN")
READ_NOISE_KEYWORDS = ("RDNOISE", "READNOIS", "RON", "READNOISE")


def required_header_number(value: float | None, header, keywords, what: str, source: str) -> float:
    """``value`` if given, else the first of ``keywords`` in ``header``; a clear error naming the option if neither."""
    found = value if value is not None else header_number(header, keywords)
    if found is None:
        raise InputError(f"no {what} in the header of {source} (looked for {', '.join(keywords)}); "
                         f"pass --{what.replace(' ', '-')}")
    return float(found)


def header_number(header, keywords) -> float | None:
    """The first of ``keywords`` present in ``header`` with a positive number (GAIN, SATURATE, ...)."""
    for key in keywords:
        value = header.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


#: Header keywords naming the part of a raw frame that holds pixels (the rest is overscan or prescan).
DATA_SECTION_KEYWORDS = ("DATASEC", "TRIMSEC")


def data_section(header, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """The frame's data section from DATASEC (else TRIMSEC), as numpy slices, or None.

    FITS sections are 1-based, inclusive and x first (``[17:528,1:520]``). A section that is missing,
    malformed, flipped or does not fit inside ``shape`` (a stale keyword kept after trimming) is ignored.
    """
    import re

    for key in DATA_SECTION_KEYWORDS:
        value = header.get(key)
        match = re.fullmatch(r"\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*", str(value or ""))
        if not match:
            continue
        x1, x2, y1, y2 = map(int, match.groups())
        if 1 <= x1 <= x2 <= shape[1] and 1 <= y1 <= y2 <= shape[0]:
            if (x1, x2, y1, y2) == (1, shape[1], 1, shape[0]):
                return None  # the whole frame
            return slice(y1 - 1, y2), slice(x1 - 1, x2)
    return None


def output_path_for(path: str | os.PathLike, out_dir: str | os.PathLike, suffix: str = "_crmask") -> Path:
    """Name of the output written for ``path`` in ``out_dir``: ``<stem>_crmask.fits``."""
    name = Path(path).name
    for ext in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return Path(out_dir) / f"{name}{suffix}.fits"


def ensure_output_dir(out_dir: str | os.PathLike) -> Path:
    """Create the output directory if needed; a clear error when it cannot be created or written."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write into {str(out)!r}: {err.strerror or err}") from None
    if not os.access(out, os.W_OK):
        raise OutputError(f"cannot write into {str(out)!r}: permission denied")
    return out


def atomic_write(hdul: fits.HDUList, out_path: Path, overwrite: bool = False) -> None:
    """Write ``hdul`` to ``out_path`` through a temporary file in the same directory and a rename.

    A crash or a full disk leaves either the old file or none, never a half-written one.
    """
    if out_path.exists() and not overwrite:
        raise OutputError(f"{str(out_path)!r} exists; pass --overwrite (overwrite=True) to replace it")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    except OSError as err:
        raise OutputError(f"cannot write into {str(out_path.parent)!r}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            hdul.writeto(handle, output_verify="silentfix")
        os.replace(tmp, out_path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OutputError(f"cannot write {str(out_path)!r}: {err.strerror or err}") from None
        raise


#: CRPROB is stored in 16 bits: probability = BZERO + BSCALE * stored value, steps of 1/65534.
PROBABILITY_BSCALE, PROBABILITY_BZERO = 1.0 / 65534, 0.5


def probability_hdu(probability: np.ndarray) -> fits.CompImageHDU:
    """The ``CRPROB`` extension: the probability map quantised to 16 bits and Rice-compressed.

    Lossless float32 is nearly incompressible (the tiny probabilities of sky pixels carry full
    mantissas): 21 MB and 2.1 s of GZIP per DECam CCD. In steps of 1/65534 (at most 7.6e-6 off, far
    below any threshold a user sets) it takes 1.6 MB and 0.3 s. Readers get floats back (BSCALE/BZERO).
    """
    hdu = fits.CompImageHDU(np.array(probability, dtype=np.float32), name="CRPROB", compression_type="RICE_1")
    hdu.scale("int16", bscale=PROBABILITY_BSCALE, bzero=PROBABILITY_BZERO)
    return hdu


def write_detection(input_path: str | os.PathLike, out_path: str | os.PathLike, results: list,
                    model_name: str, overwrite: bool = False, precision: str = "float32",
                    copy_input: bool = True) -> Path:
    """Write the input's HDUs plus ``CRMASK`` and ``CRPROB`` extensions for each detected HDU.

    Parameters
    ----------
    input_path : path
        The FITS file that was processed (read again without scaling, so integer data and their
        BZERO/BSCALE are copied bit for bit).
    out_path : path
        Output file; must differ from the input.
    results : list of (ScienceHDU, DetectionResult, cleaned image or None)
        Each detected science HDU with its :class:`crdetect.inference.DetectionResult` and, when
        inpainting was asked for, the cleaned image (written as a ``CLEANED`` extension).
    model_name : str
        Written into the headers (``CRMODEL``).
    overwrite : bool
        Replace an existing output file.
    precision : str
        Arithmetic the network ran in (``CRPRECIS``).
    copy_input : bool
        Copy the input's HDUs into the output (default). Without them the output holds an empty
        primary HDU with the input's primary header cards (``CRINPUT`` names the input) and the
        crdetect extensions only: a quarter of the size for float32 CCDs (``--mask-only``).
    """
    out_path = Path(out_path)
    if out_path.exists() and out_path.resolve() == Path(input_path).resolve():
        raise OutputError(f"refusing to write over the input file {str(input_path)!r}; choose another --out-dir")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        if copy_input:
            # Plain HDUs are copied unscaled (integers and BZERO/BSCALE bit for bit); tile-compressed
            # ones are copied scaled, because astropy re-compresses them from their scaled values.
            with fits.open(input_path, memmap=False, do_not_scale_image_data=True) as raw, \
                    fits.open(input_path, memmap=False) as scaled:
                hdus = [s.copy() if isinstance(r, fits.CompImageHDU) else r.copy() for r, s in zip(raw, scaled)]
        else:
            primary = fits.PrimaryHDU()
            primary.header.extend(fits.getheader(input_path, 0), strip=True)
            primary.header["CRINPUT"] = (Path(input_path).name[:68], "input file the crdetect extensions describe")
            hdus = [primary]
    from .. import __version__

    for science, result, cleaned in results:
        cards = [("CRMODEL", model_name[:68], "crdetect model that made this"),
                 ("CRTHRESH", float(result.threshold), "CR probability threshold"),
                 ("CRPRECIS", precision, "arithmetic of the network"),
                 ("CRSCIEXT", science.index, "HDU index of the science image"),
                 ("CRSCINAM", science.name or "", "EXTNAME of the science image"),
                 ("CRSKY", float(result.statistics.sky), "sky level used for scaling"),
                 ("CRSIGMA", float(result.statistics.sigma), "noise used for scaling"),
                 ("CRNPIX", int(result.mask.sum()), "pixels flagged as cosmic rays"),
                 ("CRNBAD", int(result.nonfinite.sum()), "non-finite input pixels (never flagged)"),
                 ("CRNSAT", int(result.protected.sum()), "saturated star/bleed pixels (never flagged)"),
                 ("CRVERS", __version__, "crdetect version")]
        mask_hdu = fits.ImageHDU(result.mask.astype(np.uint8), name="CRMASK")
        prob_hdu = probability_hdu(result.probability)
        for hdu in (mask_hdu, prob_hdu):
            hdu.header["EXTVER"] = science.index  # (CRMASK, i) pairs with science HDU i
            for key, value, comment in cards:
                hdu.header[key] = (value, comment)
        hdus += [mask_hdu, prob_hdu]
        if cleaned is not None:
            clean_hdu = fits.ImageHDU(cleaned.astype(np.float32), name="CLEANED")
            clean_hdu.header["EXTVER"] = science.index
            for key, value, comment in cards:
                clean_hdu.header[key] = (value, comment)
            clean_hdu.header["CRINPNT"] = ("median5x5", "flagged pixels: median of unflagged 5x5 neighbours")
            hdus.append(clean_hdu)
    atomic_write(fits.HDUList(hdus), out_path, overwrite)
    return out_path
