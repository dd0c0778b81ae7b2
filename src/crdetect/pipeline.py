"""Detection over many files: one file at a time, in parallel processes, or on a Dask cluster.

:func:`detect_file` does the whole job for one FITS file (read, detect every selected HDU, optionally
inpaint, write atomically) and returns one summary row per HDU; a failure becomes a row with the
error instead of an exception, so one bad file never stops a batch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import CRDetectError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectOptions:
    """What ``crdetect detect`` was asked to do (picklable: it travels to worker processes)."""

    model: str = "default"
    out_dir: str = "crdetect_out"
    hdu: str | None = None
    threshold: float | None = None
    device: str = "auto"
    tile: int | None = 1024
    overwrite: bool = False
    skip_existing: bool = False
    inpaint: bool = False
    saturation: float | None = None  # overrides the header's SATURATE
    full_frame: bool = False  # ignore DATASEC/TRIMSEC and run on every pixel (overscan included)
    threads: int | None = None
    gain: float | None = None  # e-/ADU; with read_noise, the noise comes from the detector, not the pixels
    read_noise: float | None = None  # e-
    sky: float | None = None  # ADU above bias; estimated from the frame if omitted
    noise_from_header: bool = False  # take gain and read noise from the header (GAIN, RDNOISE, ...)
    compile: bool = False  # torch.compile the network (pays off over many frames)
    precision: str = "auto"  # bfloat16 on CPUs with native bfloat16, else float32; or name one
    mask_only: bool = False  # write only the crdetect extensions, not a copy of the input's HDUs
    file_masks: bool = True  # use a file's own bad-pixel/DQ plane as the input mask of its science image
    bad_pixel_mask: str | None = None  # a separate FITS mask (non-zero = bad) for every input
    grow: int = 0  # grow the CR mask by this many pixels
    encoders: int | None = None  # threads compressing outputs (None: several beside a GPU, none on a CPU)
    source_veto: bool = True  # take flagged regions that look like stars out of the mask (crdetect.veto)


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


def frame_noise(frame, options: DetectOptions, source: str):
    """Sky and noise used to scale a :class:`~crdetect.frame.Frame`, or ``None`` to let the detector estimate
    them from the pixels.

    With gain and read noise (options, or the frame's header with ``noise_from_header``) the noise is the
    detector's, sqrt(sky * gain + read_noise^2) / gain, with the sky given or estimated robustly. The
    pixel estimate is unit-free and usually right; the detector's noise is better where hits or
    sources cover much of the frame (on M51 with 14 % of pixels hit, the pixel estimate is 33 % high).
    The frame must be bias-subtracted for this (the sky is taken as photons). Only the data section is
    used, and the frame's masked pixels are left out of the estimates.
    """
    from .data.fits_io import GAIN_KEYWORDS, READ_NOISE_KEYWORDS, required_header_number
    from .preprocessing import FrameStatistics, frame_statistics, noise_from_detector

    def statistics():
        return frame_statistics(frame.pixels, ignore=frame.section_mask)

    if options.noise_from_header or options.gain is not None or options.read_noise is not None:
        known = {"GAIN": frame.gain, "RDNOISE": frame.read_noise} if options.noise_from_header else {}
        gain = required_header_number(options.gain, known, GAIN_KEYWORDS, "gain", source)
        read_noise = required_header_number(options.read_noise, known, READ_NOISE_KEYWORDS, "read noise", source)
        sky = options.sky if options.sky is not None else statistics().sky
        return FrameStatistics(sky=sky, sigma=noise_from_detector(sky, gain, read_noise))
    if options.sky is not None:
        return FrameStatistics(sky=options.sky, sigma=statistics().sigma)
    return None


@functools.lru_cache(maxsize=2)
def cached_detector(model: str, device: str, threshold: float | None, threads: int | None, compile: bool = False,
                    precision: str = "auto", source_veto: bool = True):
    """One detector per process, loaded on first use (the CLI's up-front check fills the cache)."""
    import torch

    from .inference import load_detector

    if threads:
        torch.set_num_threads(threads)
    return load_detector(model, device=device, threshold=threshold, compile=compile, precision=precision,
                         source_veto=source_veto)


def detector_for(options: DetectOptions):
    """The process's cached detector for ``options``."""
    return cached_detector(options.model, options.device, options.threshold, options.threads, options.compile,
                           options.precision, options.source_veto)


def hdu_suffix(hdu: str | int | None) -> str:
    """Output-name suffix: ``_crmask``, or ``_hdu<N>_crmask`` when one HDU was picked with ``--hdu``, so that
    runs on different amplifiers of one file write different outputs."""
    if hdu is None or hdu == "all":
        return "_crmask"
    return "_hdu" + re.sub(r"[^A-Za-z0-9.+-]", "_", str(hdu)) + "_crmask"


def plan_outputs(paths: list[Path], options: DetectOptions) -> list[Path]:
    """The output file of each input: ``OUT_DIR/<stem>_crmask.fits``, or, where two inputs of the batch
    have the same stem in different directories (``a/frame.fits``, ``b/frame.fits``), the input
    directories mirrored below ``OUT_DIR`` from their common parent (``OUT_DIR/a/frame_crmask.fits``).

    Raises
    ------
    CRDetectError
        Two inputs of one directory would still share an output (``x.fits`` and ``x.fits.fz``): decided
        before any work, so nothing is overwritten or skipped by mistake.
    """
    from .data.fits_io import output_path_for

    suffix = hdu_suffix(options.hdu)
    flat = [output_path_for(p, options.out_dir, suffix) for p in paths]
    if len(set(flat)) == len(flat):
        return flat
    parents = [Path(os.path.abspath(p)).parent for p in paths]
    root = Path(os.path.commonpath(parents))
    mirrored = [output_path_for(p, Path(options.out_dir) / parent.relative_to(root), suffix)
                for p, parent in zip(paths, parents)]
    first: dict[Path, Path] = {}
    for path, out in zip(paths, mirrored):
        if out in first:
            raise CRDetectError(f"{str(first[out])!r} and {str(path)!r} would both be written to {str(out)!r}; "
                                "process them in separate runs with different --out-dir")
        first[out] = path
    logger.info("inputs with the same name in different directories: outputs mirror the input directories "
                "below %s (from %s)", options.out_dir, root)
    return mirrored


SUMMARY_COLUMNS = ["file", "hdu", "shape", "cr_pixels", "cr_fraction", "nonfinite_pixels", "masked_pixels",
                   "seconds", "status", "output"]


def rows_from_output(out_path: Path, base: dict) -> list[dict]:
    """Summary rows of an output written earlier (restarts with ``--skip-existing``), from its headers."""
    from .data.fits_io import open_fits

    rows = []
    try:
        with open_fits(out_path) as hdul:
            for hdu in hdul:
                if hdu.name != "CRMASK":
                    continue
                header = hdu.header
                height, width = header.get("NAXIS2", 0), header.get("NAXIS1", 0)
                label = f"{header.get('CRSCIEXT')}:{header['CRSCINAM']}" if header.get("CRSCINAM") else \
                    str(header.get("CRSCIEXT", ""))
                rows.append({**base, "hdu": label, "shape": f"{height}x{width}", "cr_pixels": header.get("CRNPIX", ""),
                             "cr_fraction": header.get("CRNPIX", 0) / max(height * width, 1),
                             "nonfinite_pixels": header.get("CRNBAD", ""), "masked_pixels": header.get("CRNMASK", ""),
                             "status": "skipped (output exists)"})
    except CRDetectError as err:
        return [{**base, "status": f"error: the existing output cannot be read ({err}); remove it or pass --overwrite"}]
    return rows or [{**base, "status": "skipped (output exists)"}]


def _existing_output(out_path: Path, options: DetectOptions, base: dict) -> list[dict] | None:
    """The rows of a file whose output exists and is kept (``--skip-existing``), None to go on; raises when
    it exists and may not be replaced."""
    if out_path.exists() and options.skip_existing:
        return rows_from_output(out_path, base)
    if out_path.exists() and not options.overwrite:
        raise CRDetectError(f"{str(out_path)!r} exists; pass --overwrite to replace it (or --skip-existing to keep it)")
    return None


def _error_rows(err: BaseException, base: dict, path: Path) -> list[dict]:
    message = str(err) if isinstance(err, CRDetectError) else f"{type(err).__name__}: {err}"
    logger.debug("failure on %s", path, exc_info=True)
    return [{**base, "status": f"error: {message}"}]


def _read_sciences(hdul, path: Path, options: DetectOptions):
    """The science images of an open input, read one at a time (with the bad-pixel mask file's plane
    OR-ed into each one's mask), and the EXTVER shift of their outputs: (shift, iterator)."""
    from .data.fits_io import external_mask, open_fits, read_science, select_science

    plans = select_science(hdul, options.hdu, options.file_masks, path)
    # EXTVER pairs each CRMASK with its science HDU's index; shifted by one when the primary HDU is
    # searched too, since EXTVER 0 is not found by fits.getdata(out, "CRMASK")
    shift = 1 if any(plan.index == 0 for plan in plans) else 0

    def sciences():
        with contextlib.ExitStack() as stack:
            # the bad-pixel mask file, opened once per input (each HDU reads its own plane)
            bad_pixels = stack.enter_context(open_fits(options.bad_pixel_mask)) if options.bad_pixel_mask else None
            for plan in plans:
                science = read_science(hdul, plan, path)
                if bad_pixels is not None:
                    known = external_mask(bad_pixels, science, options.bad_pixel_mask)
                    science.mask = known if science.mask is None else science.mask | known
                yield science

    return shift, sciences()


def _search(science, detector, options: DetectOptions, path: Path, extver: int, base: dict) -> tuple:
    """Detect CRs in one science image: its output extensions and its summary row (drops its pixels)."""
    from .data.fits_io import crdetect_extensions
    from .frame import Frame
    from .interfaces import grown_cr_mask

    frame = Frame.from_science(science, options.full_frame).with_overrides(saturation=options.saturation)
    # numpy's error state is per thread; warnings.catch_warnings() is not, and on the detection thread it
    # raced with the reader's (the filters restored in the wrong order, lost or left behind)
    with np.errstate(all="ignore"):
        statistics = frame_noise(frame, options, f"{path}[{science.label}]")
        result = detector.predict(frame, tile=options.tile, statistics=statistics, return_logits=False)
    del frame
    if options.grow:
        result = replace(result, mask=grown_cr_mask(result, options.grow))
    cleaned = inpaint_median(science.data, result.mask, exclude=science.mask) if options.inpaint else None
    shape = science.data.shape
    science.data = None  # not written again: the input's bytes are copied
    extensions = crdetect_extensions(science, result, cleaned, detector.name, detector.precision, extver=extver,
                                     grow=options.grow)
    # the counts the extensions' headers carry, not counted again on the detection thread
    cards = {key: value for key, value, _ in extensions.cards}
    row = {**base, "hdu": science.label, "shape": "x".join(map(str, shape)), "cr_pixels": cards["CRNPIX"],
           "cr_fraction": cards["CRNPIX"] / max(int(np.prod(shape)), 1), "nonfinite_pixels": cards["CRNBAD"],
           "masked_pixels": cards["CRNMASK"], "status": "ok"}
    return extensions, row


def detect_file(path: str | Path, options: DetectOptions, detector=None, out_path: Path | None = None) -> list[dict]:
    """Detect CRs in one FITS file and write its output; returns one summary row per science HDU.

    The file is checked whole (headers, length) before any detection; its science images are then
    read, searched and appended to the output one at a time, so memory holds one image and its result.
    """
    from .data.fits_io import detection_output, open_fits, output_path_for

    path = Path(path)
    out_path = Path(out_path) if out_path is not None else output_path_for(path, options.out_dir,
                                                                            hdu_suffix(options.hdu))
    started = time.perf_counter()
    base = {"file": str(path), "output": str(out_path)}
    try:
        kept = _existing_output(out_path, options, base)
        if kept is not None:
            return kept
        detector = detector or detector_for(options)
        rows = []
        with open_fits(path) as hdul:
            shift, sciences = _read_sciences(hdul, path, options)
            with detection_output(path, hdul, out_path, copy_input=not options.mask_only,
                                  overwrite=options.overwrite) as append:
                for science in sciences:
                    extensions, row = _search(science, detector, options, path, science.index + shift, base)
                    append(extensions)
                    rows.append(row)
                    del science, extensions  # one image in memory at a time
        seconds = time.perf_counter() - started
        for row in rows:
            row["seconds"] = round(seconds, 3)
        return rows
    except Exception as err:  # reported in the summary; the batch goes on
        return _error_rows(err, base, path)


class BatchSummary:
    """``summary.csv`` of a batch: every file listed from the start ("pending"), rewritten atomically as
    files finish (at most every ``interval`` seconds, and at the end), so that even a run killed with
    SIGKILL leaves a summary naming every file of the batch and what became of it."""

    def __init__(self, paths: list[Path], outputs: list[Path], out_dir: str | Path, interval: float = 5.0) -> None:
        self.path = Path(out_dir) / "summary.csv"
        self.rows: list[list[dict]] = [[{"file": str(p), "output": str(o), "status": "pending"}]
                                       for p, o in zip(paths, outputs)]
        self.interval = interval
        self._written = 0.0

    def record(self, index: int, rows: list[dict]) -> None:
        """The rows of file ``index`` (in the batch's order)."""
        self.rows[index] = rows
        if time.monotonic() - self._written >= self.interval:
            self.write()

    def close(self, interrupted: bool = False) -> list[dict]:
        """Mark what was not processed (on interruption), write the final summary, return every row."""
        if interrupted:
            for rows in self.rows:
                for row in rows:
                    if row["status"] == "pending":
                        row["status"] = "not processed (interrupted)"
        self.write()
        return [row for rows in self.rows for row in rows]

    def write(self) -> None:
        import csv
        import io

        from .atomic import atomic_output

        text = io.StringIO()
        writer = csv.DictWriter(text, SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in SUMMARY_COLUMNS} for rows in self.rows for row in rows)
        with atomic_output(self.path, overwrite=True) as handle:
            handle.write(text.getvalue().encode())
        self._written = time.monotonic()


def run_batch(paths: list[Path], options: DetectOptions, jobs: int = 1, scheduler: str | None = None,
              progress: bool = True) -> tuple[list[dict], Path]:
    """Detect CRs in many files: plan distinct outputs, clean what a killed run left, keep a summary.

    Returns every summary row (one per science HDU, or per skipped/failed file) and the summary's path.
    On an interruption (Ctrl-C, SIGTERM turned into ``KeyboardInterrupt`` by the CLI) the workers are
    stopped, their temporary files removed, the summary written with the unprocessed files marked, and
    the interruption re-raised.
    """
    from .atomic import remove_stale_temporaries
    from .data.fits_io import ensure_output_dir

    outputs = plan_outputs(paths, options)
    for directory in sorted({o.parent for o in outputs}):
        ensure_output_dir(directory)
        remove_stale_temporaries(directory)
    summary = BatchSummary(paths, outputs, options.out_dir)
    summary.write()
    try:
        if scheduler:
            run_dask(paths, outputs, options, scheduler, summary.record, progress)
        else:
            run_local(paths, outputs, options, summary.record, jobs, progress)
    except BaseException:
        summary.close(interrupted=True)
        raise
    return summary.close(), summary.path


def _worker_options(options: DetectOptions) -> DetectOptions:
    """Options for worker processes: one torch thread each unless asked otherwise (workers share cores)."""
    return DetectOptions(**{**asdict(options), "threads": options.threads or 1})


def _worker_start(parent: int) -> None:
    """Set up a worker process so that it never outlives its batch.

    A scheduler ends a job by signalling its main process (SIGTERM, then SIGKILL). The parent stops its
    workers with SIGTERM, on which a worker removes its temporary file and exits at once; if the parent
    dies without doing so (SIGKILL), a watcher thread sees the worker re-parented and does the same.
    Ctrl-C reaches every process of the terminal: the workers leave it to the parent.
    """
    import signal
    import threading

    from .atomic import remove_open_temporaries

    def terminate(signum, frame):
        remove_open_temporaries()
        os._exit(128 + signum)

    def watch_parent():
        while os.getppid() == parent:
            time.sleep(0.25)
        remove_open_temporaries()
        os._exit(1)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, terminate)
    threading.Thread(target=watch_parent, name="crdetect-parent-watch", daemon=True).start()


def _stop_workers() -> None:
    """Terminate this process's worker processes (they remove their temporary files) and reap them."""
    import multiprocessing

    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join(timeout=5)


def run_local(paths: list[Path], outputs: list[Path], options: DetectOptions, record, jobs: int = 1,
              progress: bool = True) -> None:
    """Process files in this process (``jobs=1``) or in ``jobs`` worker processes; ``record(i, rows)``
    receives the rows of file ``i`` as it finishes."""
    from tqdm import tqdm

    if jobs <= 1:
        run_streaming(paths, outputs, options, record, progress)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn: torch and forked OpenMP thread pools do not mix
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start,
                               initargs=(os.getpid(),))
    try:
        worker_options = _worker_options(options)
        futures = {pool.submit(detect_file, p, worker_options, None, o): i
                   for i, (p, o) in enumerate(zip(paths, outputs))}
        for future in tqdm(as_completed(futures), total=len(futures), desc="crdetect", unit="file",
                           disable=not progress):
            index = futures[future]
            try:
                record(index, future.result())
            except BrokenProcessPool:
                record(index, [{"file": str(paths[index]), "output": str(outputs[index]),
                                "status": "error: a worker process died (out of memory?); rerun with fewer --jobs"}])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_workers()
        raise
    pool.shutdown(wait=True)


_END = object()


@dataclass
class _OpenOutput:
    """The output file the writer stage is filling: its atomic creation (``stack``), the function appending
    extensions to it, and what its summary rows need."""

    stack: contextlib.ExitStack
    append: object
    base: dict
    started: float
    path: Path
    rows: list = field(default_factory=list)

    def discard(self, err: BaseException) -> None:
        """Leave the output unpublished (its temporary file is removed)."""
        self.stack.__exit__(type(err), err, None)


class _StageClock:
    """Seconds each stage of a streaming run works: its threads' lifetimes less their waits on the queues
    (and, for the writer, on the encoders), plus the encoders' own time. Logged at the end of a run: the
    stage whose work comes closest to the run's time is its bottleneck."""

    def __init__(self) -> None:
        import threading
        from collections import defaultdict

        self.work: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.work[stage] += seconds

    @contextlib.contextmanager
    def stage(self, stage: str, sign: float = 1.0):
        """Count the block's time as work of ``stage`` (a thread's whole life, or one task); with ``sign=-1``
        take it off (a wait)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, sign * (time.perf_counter() - started))

    def waiting(self, stage: str):
        """Take the block's time off the work of ``stage``."""
        return self.stage(stage, -1.0)

    def summary(self, seconds: float, images: int) -> str:
        parts = ", ".join(f"{stage} {work:.2f} s" for stage, work in self.work.items())
        return f"{images} images in {seconds:.2f} s; work per stage: {parts}"


def _put(queue, item, stop, clock: _StageClock | None = None, stage: str = "") -> bool:
    """Put ``item`` unless the run is stopping (a bounded queue blocks until the next stage takes one)."""
    import queue as queues

    with clock.waiting(stage) if clock else contextlib.nullcontext():
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except queues.Full:
                continue
    return False


def _items(queue, stop, clock: _StageClock | None = None, stage: str = ""):
    """The items of ``queue`` up to ``_END``, or until the run is stopping."""
    import queue as queues

    while not stop.is_set():
        with clock.waiting(stage) if clock else contextlib.nullcontext():
            try:
                item = queue.get(timeout=0.1)
            except queues.Empty:
                continue
        if item is _END:
            return
        yield item


def encoder_count(options: DetectOptions, device: str) -> int:
    """Threads that encode (compress) the outputs of a streaming run: ``options.encoders`` if given, else none
    on a CPU (the network keeps every core busy there and the writer thread encodes) and up to 8 (half the
    cores) beside a GPU.

    Compressing CRPROB takes about 0.1 s per DECam CCD; astropy releases the GIL in its Rice coder, so threads
    share the work. On an H200 with 16 cores (results/gpu_session2/bench_detect_e2e_gpu.txt), 24 DECam CCDs
    end to end: 7.1 CCDs/s with the writer thread encoding, 9.9 / 10.2 / 14.3 with 2 / 4 / 8 encoder threads.
    (Processes were slower than none, 4.5 CCDs/s: shipping 40 MB of maps per CCD through a pipe costs more
    than it saves.)"""
    if options.encoders is not None:
        return options.encoders
    if str(device).startswith("cpu"):
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def run_streaming(paths: list[Path], outputs: list[Path], options: DetectOptions, record, progress: bool = True,
                  queue_size: int = 2) -> None:
    """Files through stages in one process, one model: a reader thread (opening, checking, reading and
    decompressing each science image), the detection in this thread (on the model's device), encoder
    threads compressing each image's extensions (:func:`encoder_count`; none on a CPU, where the writer
    encodes) and a writer thread (copying the input's bytes, appending the encoded extensions, publishing
    the file atomically). Bounded queues between the stages keep memory at a few images while reading,
    encoding and writing overlap the detection. ``record(i, rows)`` receives each file's rows, in order.
    The work of each stage is logged at the end (:class:`_StageClock`).
    """
    import queue as queues
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor

    from tqdm import tqdm

    from .atomic import remove_open_temporaries
    from .data.fits_io import Extensions, OutputSource, detection_output, open_fits

    detector = detector_for(options)
    encoders = encoder_count(options, detector.device)
    pool = ThreadPoolExecutor(encoders, thread_name_prefix="crdetect-encoder") if encoders else None
    stop = threading.Event()
    to_detect: queues.Queue = queues.Queue(queue_size)
    # room for every encoder's image, so that all of them work while the writer waits on the oldest
    to_write: queues.Queue = queues.Queue(queue_size + encoders)
    failures: list[BaseException] = []
    clock = _StageClock()
    started_run = time.perf_counter()

    def encode(extensions: Extensions) -> bytes | memoryview:
        with clock.stage("encode"):
            return extensions.encode()

    def read() -> None:
        def put(item) -> bool:
            return _put(to_detect, item, stop, clock, "read")

        try:
            with clock.stage("read"):
                for i, (path, out) in enumerate(zip(paths, outputs)):
                    base = {"file": str(path), "output": str(out)}
                    started = time.perf_counter()
                    try:
                        kept = _existing_output(out, options, base)
                        if kept is not None:
                            put(("rows", i, kept))
                            continue
                        with open_fits(path) as hdul:
                            shift, sciences = _read_sciences(hdul, path, options)
                            if not put(("start", i, path, out, OutputSource.of(hdul), base, started)):
                                return
                            for science in sciences:
                                if not put(("image", i, science, science.index + shift)):
                                    return
                        put(("end", i))
                    except Exception as err:  # this file fails; the batch goes on
                        put(("failed", i, _error_rows(err, base, Path(path))))
        finally:
            _put(to_detect, _END, stop)

    def write() -> None:
        bar = tqdm(total=len(paths), desc="crdetect", unit="file", disable=not progress or len(paths) < 2)
        current: _OpenOutput | None = None  # the output being filled
        recorded: set[int] = set()

        def settle(i: int, rows: list[dict]) -> None:
            if i not in recorded:  # a file is recorded once, by its first outcome
                recorded.add(i)
                record(i, rows)
                bar.update()

        try:
            with clock.stage("write"):
                for item in _items(to_write, stop, clock, "write"):
                    kind, i = item[0], item[1]
                    try:
                        if kind == "start":
                            _, _, path, out, source, base, started = item
                            current = _OpenOutput(contextlib.ExitStack(), None, base, started, Path(path))
                            current.append = current.stack.enter_context(
                                detection_output(path, source, out, copy_input=not options.mask_only,
                                                 overwrite=options.overwrite))
                        elif kind == "image":
                            if current is not None:
                                with clock.waiting("write"):  # for the encoders, or the writer's own encoding
                                    encoded = item[2].result() if isinstance(item[2], Future) else encode(item[2])
                                current.append(encoded)
                                current.rows.append(item[3])
                        elif kind == "end":
                            if current is not None:
                                finished, current = current, None
                                finished.stack.close()  # the file appears
                                for row in finished.rows:
                                    row["seconds"] = round(time.perf_counter() - finished.started, 3)
                                settle(i, finished.rows)
                        else:  # "rows" (kept output) or "failed"
                            if current is not None:  # a failed file's output is discarded
                                current.discard(CRDetectError("failed"))
                                current = None
                            settle(i, item[2])
                    except Exception as err:
                        if current is not None:
                            current.discard(err)
                            settle(i, _error_rows(err, current.base, current.path))
                            current = None
                        # the rest of this file's items find no current output and are dropped
        except BaseException as err:  # noqa: BLE001 - reported to the main thread
            failures.append(err)
        finally:
            if current is not None:
                current.discard(CRDetectError("stopped"))
            bar.close()

    reader = threading.Thread(target=read, name="crdetect-reader", daemon=True)
    writer = threading.Thread(target=write, name="crdetect-writer", daemon=True)
    reader.start()
    writer.start()
    images = 0
    try:
        failed: set[int] = set()
        with clock.stage("detect"):
            for item in _items(to_detect, stop, clock, "detect"):
                kind, i = item[0], item[1]
                if kind == "image":
                    if i in failed:
                        continue
                    _, _, science, extver = item
                    base = {"file": str(paths[i]), "output": str(outputs[i])}
                    try:
                        extensions, row = _search(science, detector, options, Path(paths[i]), extver, base)
                    except Exception as err:
                        failed.add(i)
                        _put(to_write, ("failed", i, _error_rows(err, base, Path(paths[i]))), stop, clock, "detect")
                        continue
                    del science
                    images += 1
                    item = ("image", i, pool.submit(encode, extensions) if pool else extensions, row)
                elif kind == "end" and i in failed:
                    continue
                if not _put(to_write, item, stop, clock, "detect"):
                    break
        _put(to_write, _END, stop)
        writer.join()
        if failures:
            raise failures[0]
        logger.info("%s (%d encoder threads)", clock.summary(time.perf_counter() - started_run, images), encoders)
    finally:
        if writer.is_alive() or reader.is_alive():  # interrupted: stop the stages and remove what they left
            stop.set()
            writer.join(timeout=10)
            reader.join(timeout=10)
            remove_open_temporaries()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def run_dask(paths: list[Path], outputs: list[Path], options: DetectOptions, scheduler: str, record,
             progress: bool = True) -> None:
    """Process files on a Dask cluster (``scheduler`` address, or ``"local"`` for a local cluster)."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise CRDetectError("--scheduler needs Dask: pip install 'crdetect[survey]'") from None
    from tqdm import tqdm

    cluster = LocalCluster(processes=True, threads_per_worker=1, dashboard_address=None) if scheduler == "local" else None
    client = Client(cluster or scheduler)
    try:
        options = _worker_options(options)
        futures = client.map(detect_file, [str(p) for p in paths], [options] * len(paths), [None] * len(paths),
                             [str(o) for o in outputs], pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc="crdetect (dask)",
                               disable=not progress):
                record(index[future.key], future.result())
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
