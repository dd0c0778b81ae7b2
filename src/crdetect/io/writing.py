"""FITS out: an output is a new file, the input's HDUs copied *byte for byte* (integers with their BZERO/BSCALE,
tile-compressed HDUs with their compression; a gzipped input is decompressed) followed by, for each
searched science image, a ``CRMASK`` (uint8) and a ``CRPROB`` (16-bit quantised probability)
extension whose headers say which model and threshold made them. The output is built HDU by HDU, so
only one science image is in memory at a time.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..atomic import atomic_output
from ..errors import OutputError
from .reading import FITS_SUFFIXES, ScienceHDU, _raw_stream


def output_path_for(path: str | os.PathLike, out_dir: str | os.PathLike, suffix: str = "_crmask") -> Path:
    """Name of the output written for ``path`` in ``out_dir``: ``<stem><suffix>.fits``."""
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


def _hdu_bytes(hdus: list, primary: bool = False) -> bytes | memoryview:
    """The FITS bytes of ``hdus`` as they follow the other HDUs of a file (``primary``: the first is the
    primary HDU), written by astropy."""
    buffer = io.BytesIO()
    listed = hdus if primary else [fits.PrimaryHDU(), *hdus]
    fits.HDUList(listed).writeto(buffer, output_verify="silentfix")
    if primary:
        return buffer.getvalue()
    start = len(fits.PrimaryHDU().header.tostring())  # the placeholder primary: one header block, no data
    return buffer.getbuffer()[start:]  # a view, not a copy of the (uncompressed) CRMASK bytes


def atomic_write(hdul: fits.HDUList, out_path: Path, overwrite: bool = False) -> None:
    """Write ``hdul`` to ``out_path`` atomically, never replacing a file unless ``overwrite``
    (:func:`crdetect.atomic.atomic_output`)."""
    out_path = Path(out_path)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write into {str(out_path.parent)!r}: {err.strerror or err}") from None
    with atomic_output(out_path, overwrite) as handle:
        handle.write(_hdu_bytes(list(hdul), primary=True))


#: CRPROB is stored in 16 bits: probability = BZERO + BSCALE * stored value, steps of 1/65534.
PROBABILITY_BSCALE, PROBABILITY_BZERO = 1.0 / 65534, 0.5
#: Pixels per CRPROB compression tile (whole rows, at least one): astropy compresses tile by tile in
#: Python, so one-row tiles (its default) cost 0.17 s per DECam CCD and 64-row tiles 0.10 s, for the
#: same size (Rice works on 32-pixel blocks within a tile).
PROBABILITY_TILE_PIXELS = 1 << 17


def probability_hdu(probability: np.ndarray) -> fits.CompImageHDU:
    """The ``CRPROB`` extension: the probability map quantised to 16 bits and Rice-compressed.

    Lossless float32 is nearly incompressible (the tiny probabilities of sky pixels carry full
    mantissas): 21 MB and 2.1 s of GZIP per DECam CCD. In steps of 1/65534 (at most 7.6e-6 off, far
    below any threshold a user sets) it takes 1.6 MB and 0.1 s. Readers get floats back (BSCALE/BZERO).
    """
    probability = np.array(probability, dtype=np.float32)
    rows = max(1, min(probability.shape[0], PROBABILITY_TILE_PIXELS // max(probability.shape[-1], 1)))
    hdu = fits.CompImageHDU(probability, name="CRPROB", compression_type="RICE_1",
                            tile_shape=(rows, probability.shape[-1]))
    hdu.scale("int16", bscale=PROBABILITY_BSCALE, bzero=PROBABILITY_BZERO)
    return hdu


@dataclass
class Extensions:
    """The ``CRMASK``, ``CRPROB`` (``CRVETO``, ``CLEANED``) extensions of one searched image as arrays and header
    cards, to be encoded (compressing CRPROB is most of writing an output) in the writer or, while the next
    image is searched, in an encoder thread."""

    mask: np.ndarray
    probability: np.ndarray
    cleaned: np.ndarray | None
    cards: list[tuple]
    extver: int
    vetoed: np.ndarray | None = None
    veto_cards: list[tuple] = field(default_factory=list)
    inpaint_method: str | None = None

    def hdus(self) -> list:
        """The extensions as astropy HDUs."""
        hdus = [fits.ImageHDU(self.mask.view(np.uint8), name="CRMASK"), probability_hdu(self.probability)]
        if self.vetoed is not None:
            hdus.append(veto_hdu(self.vetoed, self.veto_cards))
        if self.cleaned is not None:
            hdus.append(fits.ImageHDU(np.asarray(self.cleaned, np.float32), name="CLEANED"))
        for hdu in hdus:
            hdu.header["EXTVER"] = self.extver
            for key, value, comment in self.cards:
                hdu.header[key] = (value, comment)
        if self.cleaned is not None:
            hdus[-1].header["CRINPNT"] = (self.inpaint_method or "", "crdetect.cleaning method that filled flagged px")
        return hdus

    def encode(self) -> bytes | memoryview:
        """The FITS bytes of the extensions, as they follow the HDUs before them in a file. Safe in threads:
        astropy (>= 8) releases the GIL while it Rice-compresses, so encoder threads run in parallel."""
        return _hdu_bytes(self.hdus())


def veto_hdu(vetoed: np.ndarray, cards: list[tuple]) -> fits.CompImageHDU:
    """The ``CRVETO`` extension: the pixels the network flagged that the source veto took for stars (uint8, 1 =
    vetoed), with the veto's thresholds in its header. Compressed with PLIO_1, IRAF's run-length code for masks
    (about 12 kB and 20 ms for a DECam CCD in tiles of whole rows; GZIP's stamps its time into every tile, so two
    writes of one plane would differ)."""
    rows = max(1, min(vetoed.shape[0], PROBABILITY_TILE_PIXELS // max(vetoed.shape[-1], 1)))
    hdu = fits.CompImageHDU(vetoed.view(np.uint8), name="CRVETO", compression_type="PLIO_1",
                            tile_shape=(rows, vetoed.shape[-1]))
    for key, value, comment in cards:
        hdu.header[key] = (value, comment)
    return hdu


def crdetect_extensions(science: ScienceHDU, result, cleaned: np.ndarray | None, model_name: str,
                        precision: str = "float32", extver: int | None = None, grow: int = 0,
                        inpaint_method: str | None = None, backend: str = "torch") -> Extensions:
    """The ``CRMASK``, ``CRPROB`` (``CRVETO`` with the source veto on, ``CLEANED`` with inpainting) extensions
    describing one searched science image.

    ``CRPROB`` is the network's probability as it came; ``CRMASK`` leaves out the pixels of ``CRVETO``. ``extver``
    pairs them with their image: by default the science HDU's index, so ``(CRMASK, i)`` belongs to HDU *i*;
    never 0 (``fits.getdata(out, "CRMASK")`` looks for EXTVER 1).
    """
    from .. import __version__

    cards = [("CRMODEL", model_name[:68], "crdetect model that made this"),
             ("CRTHRESH", float(result.threshold), "CR probability threshold"),
             ("CRGROW", int(grow), "CR mask grown by this many pixels"),
             ("CRPRECIS", precision, "arithmetic of the network"),
             ("CRBACKND", backend, "runtime of the network (torch, openvino)"),
             ("CRSCIEXT", science.index, "HDU index of the science image"),
             ("CRSCINAM", (science.name or "")[:68], "EXTNAME of the science image"),
             ("CRSKY", float(result.statistics.sky), "sky level used for scaling"),
             ("CRSIGMA", float(result.statistics.sigma), "noise used for scaling"),
             ("CRNPIX", np.count_nonzero(result.mask), "pixels flagged as cosmic rays"),
             ("CRNBAD", np.count_nonzero(result.nonfinite), "non-finite input pixels (never flagged)"),
             ("CRNSAT", np.count_nonzero(result.protected), "saturated star/bleed pixels (never flagged)"),
             ("CRNVETO", np.count_nonzero(result.vetoed) if result.vetoed is not None else -1,
              "flagged px taken for stars (-1: veto off)"),
             ("CRNMASK", np.count_nonzero(science.mask) if science.mask is not None else 0,
              "input-mask pixels (never flagged)"),
             ("CRMASKX", science.mask_index if science.mask_index is not None else -1,
              "HDU index of the input mask (-1: none)"),
             ("CRVERS", __version__, "crdetect version")]
    veto_cards = result.veto.cards() if result.vetoed is not None and result.veto is not None else []
    return Extensions(result.mask, result.probability, cleaned, cards, max(1, science.index if extver is None else extver),
                      result.vetoed, veto_cards, inpaint_method)


@dataclass(frozen=True)
class OutputSource:
    """What writing an output needs of its input: the length of its FITS bytes and its primary header
    (taken from the open file once, so that a writer thread never touches the reader's file object)."""

    length: int
    primary_header: fits.Header

    @classmethod
    def of(cls, hdul: fits.HDUList) -> OutputSource:
        last = hdul[-1].fileinfo()
        return cls(last["datLoc"] + last["datSpan"], hdul[0].header.copy())


@contextlib.contextmanager
def detection_output(input_path: str | os.PathLike, hdul: fits.HDUList | OutputSource, out_path: str | os.PathLike, *,
                     copy_input: bool = True, overwrite: bool = False) -> Iterator[Callable[[Extensions | bytes], None]]:
    """Create the output file of ``input_path`` and yield a function that appends extensions to it
    (:class:`Extensions`, or their bytes encoded elsewhere by :meth:`Extensions.encode`).

    The input's HDUs are copied first, byte for byte (integers with their BZERO/BSCALE, compressed HDUs
    still compressed, ``.gz`` decompressed); with ``copy_input=False`` only an empty primary HDU with
    the input's primary header cards (``CRINPUT`` names the input). The file appears at ``out_path``
    when the block ends without error (:func:`crdetect.atomic.atomic_output`), else not at all.
    ``hdul`` is the open input or its :class:`OutputSource`.
    """
    source = hdul if isinstance(hdul, OutputSource) else OutputSource.of(hdul)
    out_path = Path(out_path)
    if out_path.exists() and out_path.resolve() == Path(input_path).resolve():
        raise OutputError(f"refusing to write over the input file {str(input_path)!r}; choose another --out-dir")
    with atomic_output(out_path, overwrite) as handle:
        if copy_input:
            _copy_stream(input_path, source.length, handle)
        else:
            primary = fits.PrimaryHDU()
            primary.header.extend(source.primary_header, strip=True)
            primary.header["EXTEND"] = True
            primary.header["CRINPUT"] = (Path(input_path).name[:68], "input file the crdetect extensions describe")
            handle.write(_hdu_bytes([primary], primary=True))

        def append(extensions: Extensions | bytes) -> None:
            handle.write(extensions.encode() if isinstance(extensions, Extensions) else extensions)

        yield append


def _copy_stream(path: str | os.PathLike, length: int, handle) -> None:
    """Copy the first ``length`` FITS bytes of ``path`` into ``handle``; a missing final padding is zeros."""
    with _raw_stream(path) as stream:
        remaining = length
        while remaining:
            chunk = stream.read(min(remaining, 1 << 22))
            if not chunk:
                break
            handle.write(chunk)
            remaining -= len(chunk)
    if remaining:
        handle.write(b"\0" * remaining)
