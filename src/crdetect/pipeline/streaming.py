"""One process, one model, many files: the stages of :mod:`crdetect.pipeline.stages` in threads joined by
bounded queues, so that reading, encoding and writing overlap the detection."""

from __future__ import annotations

import contextlib
import logging
import queue as queues
import threading
import time
from collections import defaultdict

from .options import DetectOptions, detector_for, encoder_count
from .stages import FileJob, ImageDetected, ImageRead, OutputWriter, RunStopped, detect_image, read_file

logger = logging.getLogger(__name__)


class StageClock:
    """Seconds each stage of a streaming run works: its threads' lifetimes less their waits on the queues
    (and, for the writer, on the encoders), plus the encoders' own time. Logged at the end of a run: the
    stage whose work comes closest to the run's time is its bottleneck."""

    def __init__(self) -> None:
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


_END = object()


class _Stages:
    """The queues and the stop signal the stage threads share. Whichever stage fails first sets ``stop`` and
    leaves its exception in ``failure``; every wait on a queue gives up within 0.1 s of that."""

    def __init__(self, clock: StageClock, queue_size: int, encoders: int) -> None:
        self.clock = clock
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.to_detect: queues.Queue = queues.Queue(queue_size)
        # room for every encoder's image, so that all of them work while the writer waits on the oldest
        self.to_write: queues.Queue = queues.Queue(queue_size + encoders)

    def fail(self, err: BaseException) -> None:
        if self.failure is None:
            self.failure = err
        self.stop.set()

    def put(self, queue: queues.Queue, item, stage: str) -> bool:
        """Put ``item`` unless the run is stopping (a bounded queue blocks until the next stage takes one)."""
        with self.clock.waiting(stage):
            while not self.stop.is_set():
                try:
                    queue.put(item, timeout=0.1)
                    return True
                except queues.Full:
                    continue
        return False

    def items(self, queue: queues.Queue, stage: str):
        """The items of ``queue`` up to ``_END``, or until the run is stopping."""
        while not self.stop.is_set():
            with self.clock.waiting(stage):
                try:
                    item = queue.get(timeout=0.1)
                except queues.Empty:
                    continue
            if item is _END:
                return
            yield item


def run_streaming(jobs: list[FileJob], options: DetectOptions, record, progress: bool = True,
                  queue_size: int = 2) -> None:
    """Files through the stages in one process, one model: a reader thread (opening, checking, reading and
    decompressing each science image), the detection in this thread (on the model's device), encoder
    threads compressing each image's extensions (:func:`encoder_count`; none on a CPU, where the writer
    encodes) and a writer thread (copying the input's bytes, appending the encoded extensions, publishing
    the file atomically). Bounded queues between the stages keep memory at a few images while reading,
    encoding and writing overlap the detection. ``record(index, rows)`` receives each file's rows as it
    finishes. The work of each stage is logged at the end (:class:`StageClock`).

    Raises
    ------
    RunStopped
        A stage failed in a way no later file escapes (a full disk) or died: the other stages stop within a
        fraction of a second; the file it happened on is recorded already.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from ..atomic import remove_open_temporaries

    detector = detector_for(options)
    encoders = encoder_count(options, detector.device)
    pool = ThreadPoolExecutor(encoders, thread_name_prefix="crdetect-encoder") if encoders else None
    clock = StageClock()
    stages = _Stages(clock, queue_size, encoders)
    started = time.perf_counter()

    def encode(extensions) -> bytes | memoryview:
        with clock.stage("encode"):
            return extensions.encode()

    def read() -> None:
        try:
            with clock.stage("read"):
                for job in jobs:
                    for message in read_file(job, options):
                        if not stages.put(stages.to_detect, message, "read"):
                            return
                stages.put(stages.to_detect, _END, "read")
        except BaseException as err:
            stages.fail(RunStopped(f"the reader stopped: {type(err).__name__}: {err}"))

    bar = tqdm(total=len(jobs), desc="crdetect", unit="file", disable=not progress or len(jobs) < 2)

    def settle(index: int, rows: list[dict]) -> None:
        record(index, rows)
        bar.update()

    def write() -> None:
        writer = OutputWriter(options, settle, encode, clock)
        try:
            with clock.stage("write"):
                for message in stages.items(stages.to_write, "write"):
                    writer.handle(message)
        except RunStopped as err:
            stages.fail(err)
        except BaseException as err:
            stages.fail(RunStopped(f"the writer stopped: {type(err).__name__}: {err}"))
        finally:
            writer.close()

    threads = [threading.Thread(target=read, name="crdetect-reader", daemon=True),
               threading.Thread(target=write, name="crdetect-writer", daemon=True)]
    for thread in threads:
        thread.start()
    images = 0
    try:
        with clock.stage("detect"):
            for message in stages.items(stages.to_detect, "detect"):
                if isinstance(message, ImageRead):
                    message = detect_image(message, detector, options)
                    if isinstance(message, ImageDetected):
                        images += 1
                        if pool is not None:
                            message.extensions = pool.submit(encode, message.extensions)
                if not stages.put(stages.to_write, message, "detect"):
                    break
            else:
                stages.put(stages.to_write, _END, "detect")
        while threads[1].is_alive() and not stages.stop.is_set():
            threads[1].join(timeout=0.1)
        if stages.failure is not None:
            raise stages.failure
        logger.info("%s (%d encoder threads)", clock.summary(time.perf_counter() - started, images), encoders)
    except BaseException:
        stages.stop.set()  # interrupted or stopped: the other stages end, and what they left is removed
        raise
    finally:
        for thread in threads:
            thread.join(timeout=10)
        if stages.stop.is_set():
            remove_open_temporaries()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()

