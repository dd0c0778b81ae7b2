"""FITS in: find the science images of a file and read them safely.

The input file is opened read-only and never written. What each kind of HDU becomes:

- **Science images** (2-D, non-empty, not named or typed as anything else) are searched for CRs:
  by default every one of them (each amplifier of a raw multi-extension frame, each CCD of a mosaic).
- **Empty HDUs** (no data, or a zero axis such as the ``NAXIS1 = NAXIS2 = 0`` primary of many raw files)
  and **tables** are copied, never searched.
- **Mask planes** (EXTNAME DQ, BPM, MASK, BADPIX, FLAGS, QUALITY...; any 8-bit plane; integer planes that
  are mostly zeros) are never searched; the one that belongs to a science image (same EXTVER, or the
  only one of the science image's shape) is its input mask: its non-zero pixels are never flagged and are
  kept out of the background and noise estimates.
- **Error, variance, weight, exposure and sky planes** (ERR, VAR, IVAR, WHT, EXP, SKY...) are never searched.
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from ..errors import InputError

logger = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fits.gz", ".fit.gz", ".fz")
FITS_BLOCK = 2880

#: EXTNAMEs of bad-pixel and data-quality planes (non-zero = bad), used as input masks.
MASK_NAMES = frozenset({"DQ", "BPM", "BPMASK", "MASK", "BADPIX", "BPIX", "FLAGS", "FLAG", "QUALITY", "QUAL",
                        "DQMASK", "BADPIXELS"})
#: EXTNAMEs of planes that describe a science image without being one (never searched for CRs).
AUXILIARY_NAMES = frozenset({"ERR", "ERROR", "ERRORS", "SIGMA", "UNCERT", "UNCERTAINTY", "UNC", "VAR", "VARIANCE",
                             "IVAR", "INVVAR", "WHT", "WEIGHT", "WEIGHTS", "RMS", "NOISE", "EXP", "EXPMAP",
                             "EXPOSURE", "CTX", "CON", "SAMP", "TIME", "SKY", "SKYFIT", "BKG", "BACK", "BACKGROUND",
                             "MODEL", "OBJMASK", "SEGM", "SEGMENTATION", "CONF", "CONFIDENCE",
                             "CRMASK", "CRPROB", "CLEANED", "IGNORE"})

#: EXTNAMEs of the extensions crdetect writes: a file holding them is an output, not an input.
CRDETECT_EXTENSIONS = frozenset({"CRMASK", "CRPROB", "CLEANED"})

#: Keywords that extensions inherit from the primary header when they lack them (the INHERIT convention;
#: raw multi-amplifier files often give the read noise or saturation only there). Sections never are.
INHERITED_KEYWORDS = frozenset({"GAIN", "EGAIN", "ATODGAIN", "CCDGAIN", "RDNOISE", "READNOIS", "RON", "READNOISE",
                                "SATURATE", "SATLEVEL", "SATURATN", "MAXLIN"})


class InheritedHeader:
    """Read-only view of an extension's header that falls back on the primary header for
    :data:`INHERITED_KEYWORDS`, unless the extension says ``INHERIT = F``."""

    def __init__(self, own: fits.Header, primary: fits.Header | None) -> None:
        self.own = own
        self.primary = primary if own.get("INHERIT", True) is not False else None

    def get(self, key: str, default=None):
        if key in self.own:
            return self.own[key]
        if self.primary is not None and key.upper() in INHERITED_KEYWORDS and key in self.primary:
            return self.primary[key]
        return default


@dataclass
class ScienceHDU:
    """One 2-D science image read from a FITS file, as float32 in native byte order.

    Attributes
    ----------
    index, name : int, str
        Position and EXTNAME of the HDU in its file.
    data : ndarray of float32
        The pixels (integers scaled by BZERO/BSCALE).
    header : fits.Header
        The HDU's own header.
    primary_header : fits.Header or None
        The file's primary header, for keywords the extension inherits (:attr:`keywords`).
    mask : ndarray of bool or None
        The file's own bad-pixel/DQ plane for this image (non-zero = bad), if it has one.
    mask_index : int or None
        Where that plane is in the file.
    """

    index: int
    name: str
    data: np.ndarray
    header: fits.Header
    primary_header: fits.Header | None = None
    mask: np.ndarray | None = None
    mask_index: int | None = None

    @property
    def label(self) -> str:
        return f"{self.index}:{self.name}" if self.name else str(self.index)

    @property
    def keywords(self) -> InheritedHeader:
        """The header with gain, read noise and saturation inherited from the primary where missing."""
        return InheritedHeader(self.header, None if self.index == 0 else self.primary_header)


def _is_image(hdu) -> bool:
    return isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))


def _image_shape(hdu) -> tuple[int, ...]:
    """Shape of an image HDU from its header (numpy order), without reading the data."""
    header = hdu.header
    return tuple(int(header.get(f"NAXIS{i}", 0)) for i in range(int(header.get("NAXIS", 0)), 0, -1))


def _describe(hdul: fits.HDUList) -> str:
    parts = []
    for i, hdu in enumerate(hdul):
        shape = _image_shape(hdu) if _is_image(hdu) else ()
        text = "x".join(str(n) for n in reversed(shape)) if shape and all(shape) else "no image"
        parts.append(f"{i}:{hdu.name or '-'} ({text})")
    return ", ".join(parts)


def _base_name(name: str) -> str:
    """EXTNAME without a trailing number (``DQ1``, ``VAR_2`` -> ``DQ``, ``VAR``)."""
    return re.sub(r"[_\-]?\d+$", "", (name or "").strip().upper())


def hdu_role(hdu) -> str:
    """What an HDU holds, from its header: ``"science"``, ``"mask"``, ``"auxiliary"``, ``"empty"``,
    ``"table"`` or ``"not 2-D"``.

    ``"science"`` here means *a candidate*: :func:`select_science` also turns away integer planes that
    are mostly zeros (unnamed masks), which needs the data.
    """
    if not _is_image(hdu):
        return "table"
    shape = _image_shape(hdu)
    if not shape or 0 in shape:
        return "empty"
    if len(shape) != 2:
        return "not 2-D"
    base = _base_name(hdu.name)
    if base in MASK_NAMES or hdu.header.get("BITPIX") == 8:
        return "mask"
    if base in AUXILIARY_NAMES:
        return "auxiliary"
    return "science"


def _looks_like_mask(hdu) -> bool:
    """An unscaled integer plane with most pixels exactly 0: a bit mask, not a frame (raw frames sit on a bias)."""
    header = hdu.header
    if header.get("BITPIX", -32) < 0 or header.get("BZERO", 0) != 0 or header.get("BSCALE", 1) != 1:
        return False
    data = hdu.data
    zero_fraction = float(np.count_nonzero(data == 0)) / data.size
    del hdu.data  # read again if it is science after all; keeps memory to one plane
    return zero_fraction > 0.5


@dataclass(frozen=True)
class SciencePlan:
    """One science image to search and the mask plane that goes with it."""

    index: int
    mask_index: int | None = None


def _matching_mask(hdul: fits.HDUList, index: int, masks: list[int], single_science: bool) -> int | None:
    """The mask plane of science HDU ``index``: of its shape and EXTVER (a DQ/BPM-named one first), else the
    only one of its shape when the file has a single science image; None when that is ambiguous."""
    shape = _image_shape(hdul[index])
    same_shape = [m for m in masks if _image_shape(hdul[m]) == shape]
    if index > 0:
        same_version = [m for m in same_shape if hdul[m].ver == hdul[index].ver]
        named = [m for m in same_version if _base_name(hdul[m].name) in MASK_NAMES]
        for candidates in (named, same_version):
            if len(candidates) == 1:
                return candidates[0]
    return same_shape[0] if single_science and len(same_shape) == 1 else None


def select_science(hdul: fits.HDUList, hdu: str | int | None = None, use_file_masks: bool = True,
                   path: str | os.PathLike = "") -> list[SciencePlan]:
    """The science images of an open FITS file to search, each with its mask plane (if any).

    Parameters
    ----------
    hdul : HDUList
        The open file.
    hdu : int, str or None
        ``None`` or ``"all"``: every science image (see the module's docstring for what is not one).
        An index or EXTNAME picks that HDU, whatever its name says (it must hold a 2-D image).
    use_file_masks : bool
        Pair each science image with the file's own mask plane.
    path : path
        For messages.

    Raises
    ------
    InputError
        No science image, or the requested HDU does not exist or holds no 2-D image.
    """
    ours = sorted({h.name for h in hdul if h.name in CRDETECT_EXTENSIONS})
    if ours:  # searching it again would take the old CRMASK for an input mask and add a second one
        raise InputError(f"{str(path)!r} is an output of crdetect (it has {'/'.join(ours)} extensions); run "
                         "crdetect detect on the original input (or use --overwrite with the same --out-dir), or "
                         "inspect this one with crdetect view")
    roles = [hdu_role(h) for h in hdul]
    masks = [i for i, role in enumerate(roles) if role == "mask"] if use_file_masks else []
    if hdu is None or hdu == "all":
        selected = []
        for i, role in enumerate(roles):
            if role != "science":
                continue
            if _looks_like_mask(hdul[i]):
                logger.info("%s[%d]: an integer plane of mostly zeros, taken for a mask (not searched)", path, i)
                masks += [i] if use_file_masks else []
                continue
            selected.append(i)
        if not selected:
            raise InputError(f"{str(path)!r} has no 2-D science image HDU (HDUs: {_describe(hdul)}); "
                             "pick one with --hdu if it is there")
    else:
        key = int(hdu) if isinstance(hdu, int) or str(hdu).lstrip("-").isdigit() else str(hdu)
        if isinstance(key, int) and key < 0:  # Python's "from the end" is no FITS convention
            raise InputError(f"HDU numbers count from 0 (the primary HDU); {hdu!r} is not one. HDUs of "
                             f"{str(path)!r}: {_describe(hdul)}")
        try:
            index = hdul.index_of(key)
        except (KeyError, IndexError):
            raise InputError(f"{str(path)!r} has no HDU {hdu!r}; HDUs are: {_describe(hdul)}") from None
        if isinstance(key, int) and not -len(hdul) <= key < len(hdul):
            raise InputError(f"{str(path)!r} has no HDU {hdu!r}; HDUs are: {_describe(hdul)}")
        index = index if index >= 0 else len(hdul) + index
        if roles[index] in ("table", "empty"):
            raise InputError(f"HDU {index} of {str(path)!r} holds no image data; pick another with --hdu "
                             f"(HDUs: {_describe(hdul)})")
        if roles[index] == "not 2-D":
            shape = _image_shape(hdul[index])
            raise InputError(f"HDU {index} of {str(path)!r} is {len(shape)}-D (shape {shape}); crdetect needs "
                             "2-D images: pick a 2-D HDU with --hdu or split the cube")
        if roles[index] in ("mask", "auxiliary"):
            logger.warning("HDU %d (%s) of %s looks like a %s plane, not an image of the sky; searched because "
                           "--hdu asked for it", index, hdul[index].name, path,
                           "mask" if roles[index] == "mask" else "error, variance or other auxiliary")
        selected = [index]
    single = len(selected) == 1
    return [SciencePlan(i, _matching_mask(hdul, i, [m for m in masks if m != i], single)) for i in selected]


def open_fits(path: str | os.PathLike) -> fits.HDUList:
    """Open ``path`` read-only with a clear error when it is missing, not FITS, corrupt or truncated.

    Every header is read now, and the file's length is checked against what the headers promise, so a
    file cut inside a later HDU fails here, before any work is done on the earlier ones.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist")
    if path.is_dir():
        raise InputError(f"{str(path)!r} is a directory; pass FITS files (or a directory to `crdetect detect`)")
    try:
        with warnings.catch_warnings():
            # non-standard cards are common and harmless; truncation is checked below
            warnings.simplefilter("ignore", AstropyWarning)
            hdul = fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=False)
    except (OSError, ValueError, TypeError, EOFError, IndexError) as err:
        if not _starts_like_fits(path):  # astropy's message would advise ignore_missing_simple=True
            raise InputError(f"{str(path)!r} is not a FITS file (it does not begin with a FITS header, "
                             "'SIMPLE  ='); pass FITS images (.fits, .fits.fz, .fits.gz)") from None
        raise InputError(f"cannot read {str(path)!r} as FITS ({err}); the file is corrupt, truncated or not FITS") from None
    try:
        fits_end(hdul, path)
    except BaseException:
        hdul.close()
        raise
    return hdul


def _starts_like_fits(path: str | os.PathLike) -> bool:
    """Whether the file's (decompressed) bytes begin as every FITS file does."""
    try:
        with _raw_stream(path) as stream:
            return stream.read(9) == b"SIMPLE  ="
    except (OSError, EOFError):
        return False


def _raw_stream(path: str | os.PathLike):
    """The file's FITS bytes as a binary stream: decompressed when the file is gzip or bzip2."""
    with open(path, "rb") as probe:
        magic = probe.read(3)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic == b"BZh":
        return bz2.open(path, "rb")
    return open(path, "rb")


def fits_end(hdul: fits.HDUList, path: str | os.PathLike) -> tuple[int, int]:
    """Byte length of the FITS data in ``path`` (its HDUs with their padding) and of the file's stream.

    Raises
    ------
    InputError
        The stream ends inside an HDU's data (a truncated or corrupt file), naming the HDU.
    """
    with _raw_stream(path) as stream:
        length = stream.seek(0, io.SEEK_END)
    end = 0
    for i, hdu in enumerate(hdul):
        info = hdu.fileinfo()
        end = info["datLoc"] + info["datSpan"]
        if length >= end:
            continue
        missing_padding_only = i == len(hdul) - 1 and length > end - FITS_BLOCK and _data_readable(hdu)
        if not missing_padding_only:
            raise InputError(f"{str(path)!r} is corrupt or truncated: HDU {i} ({hdu.name or '-'}) needs "
                             f"{end:,} bytes, the file has {length:,}; get a complete copy")
    return end, length


def _data_readable(hdu) -> bool:
    """Whether astropy can read an HDU's data (the last one may lack its final padding, which is harmless)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            hdu.data  # noqa: B018 -- reading is the test
        del hdu.data
        return True
    except Exception:  # astropy raises several types on short data
        return False


def _to_float32(data: np.ndarray, where: str) -> np.ndarray:
    if data.dtype.kind not in "biuf":
        raise InputError(f"{where} holds {data.dtype} data; only real numeric images can be processed")
    if data.dtype.kind in "biu":
        logger.info("%s: converting %s integer data to float32", where, data.dtype)
    # astype to native float32 also fixes FITS's big-endian byte order for torch and numpy ops
    return np.ascontiguousarray(data, dtype=np.float32)


def read_science(hdul: fits.HDUList, plan: SciencePlan, path: str | os.PathLike = "") -> ScienceHDU:
    """Read one planned science image (and its mask plane) from an open file.

    The HDU's cached data are dropped afterwards, so a file of many CCDs holds one at a time.
    """
    hdu = hdul[plan.index]
    where = f"{Path(path).name}[{plan.index}]"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            if hdu.data is None:
                raise InputError(f"HDU {plan.index} of {str(path)!r} holds no image data; pick another with --hdu")
            data = _to_float32(hdu.data, where)
            mask = None
            if plan.mask_index is not None:
                mask = np.asarray(hdul[plan.mask_index].data) != 0
                del hdul[plan.mask_index].data
    except (OSError, ValueError, TypeError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"cannot read the data of {str(path)!r} ({err}); the file is corrupt or truncated") from None
    del hdu.data
    if mask is not None:
        logger.info("%s: using HDU %d (%s) as the input mask: %d bad pixels are never flagged", where,
                    plan.mask_index, hdul[plan.mask_index].name, np.count_nonzero(mask))
    return ScienceHDU(plan.index, hdu.name, data, hdu.header.copy(), hdul[0].header, mask, plan.mask_index)


def external_mask(hdul: fits.HDUList, science: ScienceHDU, path: str | os.PathLike = "") -> np.ndarray:
    """The plane of a separate bad-pixel mask file (open as ``hdul``, from ``path``) that belongs to
    ``science`` (non-zero = bad), as bool.

    The plane is the mask file's HDU with the science HDU's EXTNAME and EXTVER, else the one at the
    science HDU's index, else the file's only 2-D image: one mask file serves every frame of a detector
    (a mosaic's BPM with one extension per CCD, or one plane for a single-CCD camera). The plane's
    cached data are dropped afterwards, so a mask file of many planes is held one plane at a time.

    Raises
    ------
    InputError
        No plane fits, or its shape differs from the science image's.
    """
    images = [i for i, h in enumerate(hdul) if hdu_role(h) not in ("table", "empty", "not 2-D")]
    by_name = [i for i in images if science.name and science.name != "PRIMARY"
               and hdul[i].name == science.name and hdul[i].ver == science.header.get("EXTVER", 1)]
    if by_name:
        index = by_name[0]
    elif science.index in images:
        index = science.index
    elif len(images) == 1:
        index = images[0]
    else:
        raise InputError(f"the mask file {str(path)!r} has no plane for HDU {science.label} (HDUs: {_describe(hdul)})")
    mask = np.asarray(hdul[index].data) != 0
    del hdul[index].data
    if mask.shape != science.data.shape:
        raise InputError(f"the mask file {str(path)!r} HDU {index} has shape {mask.shape}, but HDU {science.label} "
                         f"is {science.data.shape}; pass a mask of the frame's shape")
    return mask


def read_science_hdus(path: str | os.PathLike, hdu: str | int | None = None,
                      use_file_masks: bool = True) -> list[ScienceHDU]:
    """Read the science image(s) of a FITS file (all at once; :func:`select_science` says which).

    Parameters
    ----------
    path : path
        FITS file (plain, gzipped or tile-compressed).
    hdu : int, str or None
        ``None`` or ``"all"``: every science image. An index or EXTNAME picks one HDU.
    use_file_masks : bool
        Attach the file's own mask plane to each science image (:attr:`ScienceHDU.mask`).

    Raises
    ------
    InputError
        Missing file, not FITS, truncated, the HDU does not exist or does not hold a 2-D image.
    """
    with open_fits(path) as hdul:
        return [read_science(hdul, plan, path) for plan in select_science(hdul, hdu, use_file_masks, path)]
