"""A batch of files: distinct outputs planned up front, a summary that always lists every file, and the
same stages run in this process (:mod:`.streaming`), in worker processes or on a Dask cluster."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from ..errors import CRDetectError, OutputError
from .options import DetectOptions, hdu_suffix
from .stages import KEPT, OK, PENDING, SUMMARY_COLUMNS, FileJob, RunStopped, detect_job

logger = logging.getLogger(__name__)


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
    from ..io.writing import output_path_for

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


def check_inside(directory: Path, out_dir: Path) -> None:
    """Refuse an output directory below ``out_dir`` that leads elsewhere through a symbolic link: outputs stay
    inside the out-dir."""
    real, root = Path(os.path.realpath(directory)), Path(os.path.realpath(out_dir))
    if real != root and root not in real.parents:
        raise OutputError(f"{str(directory)!r} leads outside the out-dir {str(out_dir)!r} (to {str(real)!r}, "
                          "through a symbolic link); outputs stay inside --out-dir: remove the link or choose "
                          "another --out-dir")


class BatchSummary:
    """``summary.csv`` of a batch: every file listed from the start ("pending"), rewritten atomically as
    files finish (at most every ``interval`` seconds, and at the end), so that even a run killed with
    SIGKILL leaves a summary naming every file of the batch and what became of it."""

    def __init__(self, jobs: list[FileJob], out_dir: str | Path, interval: float = 5.0) -> None:
        self.path = Path(out_dir) / "summary.csv"
        self.rows: list[list[dict]] = [[{**job.base, "status": PENDING}] for job in jobs]
        self.interval = interval
        self._written = 0.0

    def record(self, index: int, rows: list[dict]) -> None:
        """The rows of file ``index`` (in the batch's order)."""
        self.rows[index] = rows
        if time.monotonic() - self._written >= self.interval:
            try:
                self.write()
            except OutputError as err:  # a full disk: the run's own failure says so; the final write retries
                logger.warning("cannot update %s: %s", self.path, err)
                self._written = time.monotonic()

    def close(self, unprocessed: str | None = None) -> list[dict]:
        """Mark the files still pending as ``not processed (UNPROCESSED)`` (after an interruption or a stop),
        write the final summary, return every row."""
        if unprocessed:
            for rows in self.rows:
                for row in rows:
                    if row["status"] == PENDING:
                        row["status"] = f"not processed ({unprocessed})"
        self.write()
        return [row for rows in self.rows for row in rows]

    def write(self) -> None:
        import csv
        import io

        from ..atomic import atomic_output

        text = io.StringIO()
        writer = csv.DictWriter(text, SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in SUMMARY_COLUMNS} for rows in self.rows for row in rows)
        with atomic_output(self.path, overwrite=True) as handle:
            handle.write(text.getvalue().encode())
        self._written = time.monotonic()


def wrote_everything(rows: list[dict]) -> bool:
    """Whether a run wrote (or, with ``--skip-existing``, kept) every output it was asked for."""
    return all(row["status"] in (OK, KEPT) for row in rows)


def run_batch(paths: list[Path], options: DetectOptions, jobs: int = 1, scheduler: str | None = None,
              progress: bool = True) -> tuple[list[dict], Path]:
    """Detect CRs in many files: plan distinct outputs, clean what a killed run left, keep a summary.

    Returns every summary row (one per science HDU, or per kept, failed or unprocessed file) and the
    summary's path. A run stopped by a failure no later file escapes (a full disk, a stage that died) marks
    the files it did not reach ``not processed (the run stopped: CAUSE)`` and returns. On an interruption
    (Ctrl-C, SIGTERM turned into ``KeyboardInterrupt`` by the CLI) the workers are stopped, their temporary
    files removed, the summary written with the unprocessed files marked, and the interruption re-raised.
    """
    from ..atomic import remove_stale_temporaries
    from ..io.writing import ensure_output_dir

    outputs = plan_outputs(paths, options)
    directories = sorted({o.parent for o in outputs})
    for directory in directories:
        check_inside(directory, Path(options.out_dir))
    for directory in directories:
        ensure_output_dir(directory)
        remove_stale_temporaries(directory)
    batch = [FileJob(i, Path(p), Path(o), Path(o).exists()) for i, (p, o) in enumerate(zip(paths, outputs))]
    summary = BatchSummary(batch, options.out_dir)
    summary.write()
    try:
        if scheduler:
            run_dask(batch, options, scheduler, summary.record, progress)
        else:
            run_local(batch, options, summary.record, jobs, progress)
    except RunStopped as stopped:
        logger.error("the run stopped: %s", stopped.cause)
        return summary.close(f"the run stopped: {stopped.cause}"), summary.path
    except BaseException:
        summary.close("interrupted")
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

    from ..atomic import remove_open_temporaries

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


def _record_worker_rows(record, job: FileJob, future) -> None:
    """Record the rows a worker (a process or a Dask task) returned for ``job``. A stop (a full disk) is recorded
    with the rows it carries, then re-raised to end the run."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        record(job.index, future.result())
    except BrokenProcessPool:
        record(job.index, [{**job.base, "status": "error: a worker process died (out of memory?); rerun with fewer "
                                                  "--jobs"}])
    except RunStopped as stopped:
        record(job.index, stopped.rows)
        raise


def run_local(batch: list[FileJob], options: DetectOptions, record, jobs: int = 1, progress: bool = True) -> None:
    """Process files in this process (``jobs=1``, streaming) or in ``jobs`` worker processes; ``record(i, rows)``
    receives the rows of file ``i`` as it finishes."""
    from tqdm import tqdm

    from .streaming import run_streaming

    if jobs <= 1:
        run_streaming(batch, options, record, progress)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: torch and forked OpenMP thread pools do not mix
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start,
                               initargs=(os.getpid(),))
    try:
        worker_options = _worker_options(options)
        futures = {pool.submit(detect_job, job, worker_options): job for job in batch}
        for future in tqdm(as_completed(futures), total=len(futures), desc="crdetect", unit="file",
                           disable=not progress):
            _record_worker_rows(record, futures[future], future)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_workers()
        raise
    pool.shutdown(wait=True)


def run_dask(batch: list[FileJob], options: DetectOptions, scheduler: str, record, progress: bool = True) -> None:
    """Process files on a Dask cluster (``scheduler`` address, or ``"local"`` for a local cluster)."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise CRDetectError("--scheduler needs Dask: pip install 'crdetect[survey]'") from None
    from tqdm import tqdm

    # distributed sets its loggers to INFO when imported: a local cluster's scheduler and nannies would print their
    # start-up and shut-down chatter into a batch's output (the CLI's -v still shows warnings and errors)
    logging.getLogger("distributed").setLevel(max(logging.getLogger().getEffectiveLevel(), logging.WARNING))
    cluster = LocalCluster(processes=True, threads_per_worker=1, dashboard_address=None) if scheduler == "local" else None
    client = Client(cluster or scheduler)
    try:
        options = _worker_options(options)
        futures = client.map(detect_job, batch, [options] * len(batch), pure=False)
        index = {future.key: job for future, job in zip(futures, batch)}
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc="crdetect (dask)",
                               disable=not progress):
                _record_worker_rows(record, index[future.key], future)
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
