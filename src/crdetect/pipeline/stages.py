"""The three stages every file goes through -- read, detect, write -- and the typed messages between them.

:func:`read_file` turns a :class:`FileJob` into messages (:class:`FileOpened`, one :class:`ImageRead` per
science image, :class:`FileRead`; or a single :class:`FileSettled` when the file is kept or fails),
:func:`detect_image` turns an :class:`ImageRead` into an :class:`ImageDetected`, and an
:class:`OutputWriter` turns the messages of a file into its output and its summary rows.
:func:`detect_job` runs the three in turn for one file (worker processes, Dask; :func:`detect_file` for a path);
:func:`crdetect.pipeline.streaming.run_streaming` runs them in threads joined by queues (one process).

A failure that concerns one file becomes that file's summary row and the batch goes on. A failure after
which no later file can be written either (a full disk, a read-only file system) or the death of a stage
raises :class:`RunStopped`: the run stops at once, the cause in the file's row and on stderr.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..atomic import output_error
from ..errors import CRDetectError, OutputError, OutputExistsError
from .options import DetectOptions, detector_for, frame_noise, hdu_suffix

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["file", "hdu", "shape", "cr_pixels", "cr_fraction", "nonfinite_pixels", "masked_pixels",
                   "seconds", "status", "output"]
#: Statuses of a file's rows in the summary. A run wrote everything it was asked to when every row is ``OK``
#: or ``KEPT``.
OK, KEPT, PENDING = "ok", "skipped (output exists)", "pending"
WRITTEN_ELSEWHERE = "not written: another run wrote this output meanwhile (left as it is)"
#: errno values after which no later output can be written either: the run stops instead of failing file by file
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class RunStopped(CRDetectError):
    """The run cannot go on (a full disk, a stage that died): ``cause`` says why; ``index`` and ``rows`` are the
    file during which it happened and its summary rows (recorded already by a streaming run)."""

    def __init__(self, cause: str, index: int | None = None, rows: list[dict] | None = None) -> None:
        super().__init__(cause)
        self.cause, self.index, self.rows = cause, index, rows or []

    def __reduce__(self):  # picklable with its rows (it travels back from worker processes)
        return type(self), (self.cause, self.index, self.rows)


@dataclass(frozen=True)
class FileJob:
    """One input of a batch: its place in the batch, its path, its output, and whether that output existed
    when the batch was planned (one that appears later was written by another run)."""

    index: int
    path: Path
    output: Path
    existed: bool = False

    @property
    def base(self) -> dict:
        """The columns every summary row of this file has."""
        return {"file": str(self.path), "output": str(self.output)}


@dataclass
class FileOpened:
    """Reader -> writer: the input is open and valid; create its output."""

    job: FileJob
    source: object  # io.writing.OutputSource
    started: float


@dataclass
class ImageRead:
    """Reader -> detector: one science image and the EXTVER of its extensions."""

    job: FileJob
    science: object  # io.reading.ScienceHDU
    extver: int


@dataclass
class ImageDetected:
    """Detector -> writer: one image's extensions (or their encoding in progress) and its summary row."""

    job: FileJob
    extensions: object  # io.writing.Extensions, or a Future of their bytes
    row: dict


@dataclass
class FileRead:
    """Reader -> writer: every image of the file was read; publish its output."""

    job: FileJob


@dataclass
class FileSettled:
    """Any stage -> writer: the file's final rows without an output of this run (kept, skipped or failed)."""

    job: FileJob
    rows: list[dict]


def error_rows(err: BaseException, job: FileJob) -> list[dict]:
    """The summary row of a file that failed with ``err``."""
    message = str(err) if isinstance(err, CRDetectError) else f"{type(err).__name__}: {err}"
    logger.debug("failure on %s", job.path, exc_info=True)
    return [{**job.base, "status": f"error: {message}"}]


def is_fatal(err: BaseException) -> bool:
    """Whether no later output can be written either after ``err`` (a full disk, a read-only file system)."""
    return isinstance(err, OSError) and err.errno in FATAL_ERRNOS


def image_row(base: dict, label: str, shape: tuple[int, int], cards, status: str) -> dict:
    """The summary row of one searched image, from the cards of its CRMASK (a header, or the cards about to be
    written): written now, or kept from an earlier run."""
    return {**base, "hdu": label, "shape": "x".join(map(str, shape)), "cr_pixels": cards.get("CRNPIX", ""),
            "cr_fraction": cards.get("CRNPIX", 0) / max(int(np.prod(shape)), 1),
            "nonfinite_pixels": cards.get("CRNBAD", ""), "masked_pixels": cards.get("CRNMASK", ""), "status": status}


def rows_from_output(out_path: Path, base: dict) -> list[dict]:
    """Summary rows of an output written earlier (restarts with ``--skip-existing``), from its headers."""
    from ..io.reading import open_fits

    rows = []
    try:
        with open_fits(out_path) as hdul:
            for hdu in hdul:
                if hdu.name != "CRMASK":
                    continue
                header = hdu.header
                label = f"{header.get('CRSCIEXT')}:{header['CRSCINAM']}" if header.get("CRSCINAM") else \
                    str(header.get("CRSCIEXT", ""))
                rows.append(image_row(base, label, (header.get("NAXIS2", 0), header.get("NAXIS1", 0)), header, KEPT))
    except CRDetectError as err:
        return [{**base, "status": f"error: the existing output cannot be read ({err}); remove it or pass --overwrite"}]
    return rows or [{**base, "status": KEPT}]


def _existing_output(job: FileJob, options: DetectOptions) -> list[dict] | None:
    """The rows of a file whose output exists and is kept, None to go on; raises when it exists and may not be
    replaced."""
    if not job.output.exists() or options.overwrite:
        return None
    if not job.existed:  # it appeared while this run was going on
        return [{**job.base, "status": WRITTEN_ELSEWHERE}]
    if options.skip_existing:
        return rows_from_output(job.output, job.base)
    raise OutputError(f"{str(job.output)!r} exists; pass --overwrite to replace it (or --skip-existing to keep it)")


def _read_sciences(hdul, path: Path, options: DetectOptions):
    """The science images of an open input, read one at a time (with the bad-pixel mask file's plane
    OR-ed into each one's mask), each with the EXTVER of its extensions: an iterator of (science, extver)."""
    from ..io.reading import external_mask, open_fits, read_science, select_science

    plans = select_science(hdul, options.hdu, options.file_masks, path)
    # EXTVER pairs each CRMASK with its science HDU's index, shifted by one when the primary HDU is searched
    # too; the only one searched gets 1, so that fits.getdata(out, "CRMASK") (EXTVER 1) finds it. CRSCIEXT
    # names the science HDU either way
    shift = 1 if any(plan.index == 0 for plan in plans) else 0

    def extver(index: int) -> int:
        return 1 if len(plans) == 1 else index + shift

    def sciences():
        with contextlib.ExitStack() as stack:
            # the bad-pixel mask file, opened once per input (each HDU reads its own plane)
            bad_pixels = stack.enter_context(open_fits(options.bad_pixel_mask)) if options.bad_pixel_mask else None
            for plan in plans:
                science = read_science(hdul, plan, path)
                if bad_pixels is not None:
                    known = external_mask(bad_pixels, science, options.bad_pixel_mask)
                    science.mask = known if science.mask is None else science.mask | known
                yield science, extver(science.index)

    return sciences()


def read_file(job: FileJob, options: DetectOptions):
    """The read stage: the messages of one input, in order. The file is opened and checked whole (headers,
    length) before the first image is read; its images are read one at a time, so memory holds one."""
    from ..io.reading import open_fits
    from ..io.writing import OutputSource

    started = time.perf_counter()
    try:
        kept = _existing_output(job, options)
        if kept is not None:
            yield FileSettled(job, kept)
            return
        with open_fits(job.path) as hdul:
            sciences = _read_sciences(hdul, job.path, options)
            yield FileOpened(job, OutputSource.of(hdul), started)
            for science, extver in sciences:
                yield ImageRead(job, science, extver)
        yield FileRead(job)
    except Exception as err:  # this file fails; the batch goes on
        yield FileSettled(job, error_rows(err, job))


def detect_image(message: ImageRead, detector, options: DetectOptions) -> ImageDetected | FileSettled:
    """The detect stage: CRs in one science image, as its output extensions and its summary row (the image's
    pixels are dropped), or the file's error rows."""
    from ..cleaning import inpaint
    from ..frame import Frame
    from ..io.writing import crdetect_extensions

    science, job = message.science, message.job
    message.science = None  # the caller's message no longer holds the image
    try:
        frame = Frame.from_science(science, options.full_frame).with_overrides(saturation=options.saturation)
        # numpy's error state is per thread; warnings.catch_warnings() is not, and on the detection thread it
        # raced with the reader's (the filters restored in the wrong order, lost or left behind)
        with np.errstate(all="ignore"):
            statistics = frame_noise(frame, options, f"{job.path}[{science.label}]")
            result = detector.predict(frame, tile=options.tile, statistics=statistics, return_logits=False)
        del frame
        if options.grow:
            result = replace(result, mask=result.grown(options.grow))
        cleaned = inpaint(science.data, result.mask, options.inpaint, exclude=science.mask) if options.inpaint else None
    except Exception as err:
        return FileSettled(job, error_rows(err, job))
    shape = science.data.shape
    science.data = None  # not written again: the input's bytes are copied
    extensions = crdetect_extensions(science, result, cleaned, detector.name, detector.precision,
                                     extver=message.extver, grow=options.grow, inpaint_method=options.inpaint,
                                     backend=getattr(detector, "backend", "torch"))
    # the counts the extensions' headers carry, not counted again on the detection thread
    cards = {key: value for key, value, _ in extensions.cards}
    return ImageDetected(job, extensions, image_row(job.base, science.label, shape, cards, OK))


@dataclass
class _OpenOutput:
    """The output the writer is filling: its atomic creation (``stack``), the function appending extensions to
    it, and its rows so far."""

    job: FileJob
    stack: contextlib.ExitStack
    append: object
    started: float
    rows: list = field(default_factory=list)


class OutputWriter:
    """The write stage: creates each file's output (a byte copy of the input, or only a primary header), appends
    the extensions of its images, publishes it atomically, and reports every file's rows once, in the order
    files finish, to ``record(index, rows)``.

    Raises :class:`RunStopped` from :meth:`handle` after a failure that no later file can escape (the file's
    rows are reported first).
    """

    def __init__(self, options: DetectOptions, record, encode=None, clock=None) -> None:
        self.options = options
        self.record = record
        self.encode = encode or (lambda extensions: extensions.encode())
        self.clock = clock
        self.current: _OpenOutput | None = None
        self.settled: set[int] = set()

    def handle(self, message) -> None:
        """Take one message of the read or detect stage."""
        job = message.job
        if job.index in self.settled:
            return  # the rest of a file that failed already
        try:
            if isinstance(message, FileOpened):
                self._open(message)
            elif isinstance(message, ImageDetected):
                self._append(message)
            elif isinstance(message, FileRead):
                self._publish(job)
            else:
                self._discard()
                self._settle(job, message.rows)
        except Exception as err:
            self._discard()
            if isinstance(err, OSError) and not isinstance(err, CRDetectError):  # from writing the bytes
                err = output_error(f"cannot write {str(job.output)!r}: {err.strerror or err}", err)
            rows = [{**job.base, "status": WRITTEN_ELSEWHERE}] if isinstance(err, OutputExistsError) else \
                error_rows(err, job)
            self._settle(job, rows)
            if is_fatal(err):
                raise RunStopped(str(err), job.index, rows) from err

    def close(self) -> None:
        """Leave an output still open unpublished (an interrupted or stopped run)."""
        self._discard()

    def _open(self, message: FileOpened) -> None:
        from ..io.writing import detection_output

        self._discard()
        job = message.job
        stack = contextlib.ExitStack()
        output = _OpenOutput(job, stack, None, message.started)
        output.append = stack.enter_context(detection_output(job.path, message.source, job.output,
                                                             copy_input=not self.options.mask_only,
                                                             overwrite=self.options.overwrite))
        self.current = output

    def _append(self, message: ImageDetected) -> None:
        if self.current is None or self.current.job != message.job:
            raise CRDetectError(f"internal error: {message.job.path} has no output open")
        waiting = self.clock.waiting("write") if self.clock else contextlib.nullcontext()
        with waiting:  # for the encoders, or the writer's own encoding
            extensions = message.extensions
            encoded = extensions.result() if isinstance(extensions, Future) else self.encode(extensions)
        self.current.append(encoded)
        self.current.rows.append(message.row)

    def _publish(self, job: FileJob) -> None:
        output = self.current
        if output is None or output.job != job:
            raise CRDetectError(f"internal error: {job.path} has no output open")
        output.stack.close()  # the file appears (or an OutputError says why not; the writer still knows the file)
        self.current = None
        seconds = round(time.perf_counter() - output.started, 3)
        self._settle(job, [{**row, "seconds": seconds} for row in output.rows])

    def _discard(self) -> None:
        """Remove the temporary file of the open output, if any, without raising: the error that ends it is
        reported by the caller."""
        output, self.current = self.current, None
        if output is None:
            return
        stopped = CRDetectError("not published")
        try:
            output.stack.__exit__(type(stopped), stopped, None)
        except Exception:  # the temporary file is gone either way; its error is the caller's
            logger.debug("while discarding the output of %s", output.job.path, exc_info=True)

    def _settle(self, job: FileJob, rows: list[dict]) -> None:
        self.settled.add(job.index)
        self.record(job.index, rows)


def detect_file(path: str | Path, options: DetectOptions, detector=None, out_path: Path | None = None) -> list[dict]:
    """Detect CRs in one FITS file and write its output (``out_path``, by default named from ``path`` in the
    out-dir): :func:`detect_job` for a batch of one. Returns one summary row per science HDU (or one for a file
    kept or failed)."""
    from ..io.writing import output_path_for

    path = Path(path)
    output = Path(out_path) if out_path is not None else output_path_for(path, options.out_dir, hdu_suffix(options.hdu))
    return detect_job(FileJob(0, path, output, existed=output.exists()), options, detector)


def detect_job(job: FileJob, options: DetectOptions, detector=None) -> list[dict]:
    """The three stages in turn for one input of a batch (worker processes and Dask run this); its summary rows.

    Raises
    ------
    RunStopped
        No later file could be written either (a full disk); its ``rows`` are this file's.
    """
    rows: list[dict] = []
    writer = OutputWriter(options, lambda index, settled: rows.extend(settled))
    try:
        for message in read_file(job, options):
            if isinstance(message, ImageRead):
                try:
                    detector = detector or detector_for(options)  # not loaded for a file that is kept
                except Exception as err:
                    message = FileSettled(job, error_rows(err, job))
                else:
                    message = detect_image(message, detector, options)
            writer.handle(message)
    finally:
        writer.close()
    return rows
