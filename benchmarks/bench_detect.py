"""Speed benchmark: crdetect's models against astroscrappy, deepCR and Cosmic-CoNN on one DECam CCD frame.

All detectors run in this one process on the same simulated 2048 x 4096 frame (DECam-like, with real
CR footprints). For each: wall seconds (best of ``--repeat``), Mpix/s, the peak resident memory
above the baseline while it ran (sampled every 5 ms), and the ratio of crdetect's time to each peer's.

    python benchmarks/bench_detect.py [--threads 2] [--repeat 2] [--out results/bench_detect.txt]
    python benchmarks/bench_detect.py --frame real     # a real star field tiled to the same size
    python benchmarks/bench_detect.py --precision torch:float32 openvino:float32 openvino:int8 auto
    python benchmarks/bench_detect.py --device cuda --precision float32 float16 --tile 1024 4096 0

With ``--device cuda`` crdetect's models run on the GPU (tiles of each ``--tile``, 0 = whole frame) and
their peak GPU memory is reported too; deepCR runs on the GPU as well (``--peers-on-cpu`` keeps it on the
CPU); Cosmic-CoNN uses CUDA by itself when torch sees it. Each ``--precision`` may name its runtime
(``openvino:int8``, ``torch:bfloat16``; a bare name lets crdetect pick the runtime); ``auto`` is what
``crdetect detect`` picks on this machine. The report starts with the CPU's model and flags.

``--files N`` also times the whole job end to end: N FITS files holding the frame (float32, with GAIN,
RDNOISE and SATURATE), ``crdetect detect`` in this process (read, detect, write mask and probability;
streamed through reader and writer threads) against LA-Cosmic doing the same (read, astroscrappy, write
its mask), CCDs per second and the ratio.

    python benchmarks/bench_detect.py --frame real --precision torch:float32 auto --files 3     # the CPU goal
    python benchmarks/bench_detect.py --device cuda --precision float32 float16 --tile 0 --files 16

Peers that are not installed (pip install 'crdetect[peers]') are skipped with a note.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak RSS (MB) above the level at entry, sampled in a thread."""

    def __enter__(self):
        self.base = self.peak = rss_mb()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def above_base(self) -> float:
        return self.peak - self.base


def make_frame(seed: int = 0):
    from crdetect.data.inject import load_cr_library
    from crdetect.data.simulate import SimulationConfig, simulate_frame

    return simulate_frame(np.random.default_rng(seed), SimulationConfig(), "r", load_cr_library().pool("test"))


def real_star_field(shape=(4096, 2048)):
    """A real star field tiled to DECam CCD size: CTIO Blanco Mosaic2 ``tpv.fits`` (I band, 420 s, 512 x 512;
    ../shared/data/real/b7_ctio_mosaic2_galsim) mirrored at its edges until it fills ``shape``, so no seam is
    sharp. LA-Cosmic's time depends on the frame's content (stars, saturation), not only its size.

    Returns the image, gain (sky / sigma^2, as the real-frame benchmark estimates it), read noise and the
    saturation level of its header.
    """
    from pathlib import Path

    from astropy.io import fits

    from crdetect.preprocessing import frame_statistics

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "b7_ctio_mosaic2_galsim" / "tpv.fits"
    with fits.open(path) as hdul:
        tile = np.asarray(hdul[0].data, np.float32)
        saturation = float(hdul[0].header.get("SATURATE", 44000.0))
    reps = (-(-shape[0] // tile.shape[0]), -(-shape[1] // tile.shape[1]))
    image = np.pad(tile, ((0, (reps[0] - 1) * tile.shape[0]), (0, (reps[1] - 1) * tile.shape[1])), mode="symmetric")
    image = np.ascontiguousarray(image[:shape[0], :shape[1]])
    stats = frame_statistics(image)
    return image, max(stats.sky / stats.sigma**2, 0.1), 5.0, saturation


class StageNotes(logging.Handler):
    """Collects what crdetect.pipeline logs at INFO level (the work of each stage of a streaming run)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self):
        self._logger = logging.getLogger("crdetect.pipeline")
        self._level = self._logger.level
        self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


def end_to_end(args, image, gain, read_noise, saturation, notes) -> dict:
    """Seconds, peak memory of ``crdetect detect`` (per precision) and of LA-Cosmic on ``args.files`` FITS files."""
    import tempfile
    from pathlib import Path

    from astropy.io import fits

    from crdetect.baselines import LACosmicDetector
    from crdetect.inference import cached_detector
    from crdetect.pipeline import DetectOptions, encoder_count, run_batch

    folder = Path(tempfile.mkdtemp(prefix="bench_detect_"))
    header = fits.Header({"GAIN": gain, "RDNOISE": read_noise, "SATURATE": saturation})
    paths = []
    for i in range(args.files):
        paths.append(folder / "in" / f"ccd{i:03d}.fits")
        paths[-1].parent.mkdir(exist_ok=True)
        fits.PrimaryHDU(image, header=header).writeto(paths[-1])
    runs = {}
    for role, model, spec, encoders in [(role, model, spec, encoders)
                                    for role, model in (("default", args.default), ("fast", args.fast))
                                    for spec in args.precision for encoders in args.encoders]:
        backend, precision = runtime(spec)
        options = DetectOptions(model=model, out_dir=str(folder / f"out_{role}_{backend}_{precision}_{encoders}"),
                                device=args.device, tile=args.tile[0] or None, precision=precision, overwrite=True,
                                encoders=None if encoders == "auto" else int(encoders), backend=backend)
        # loaded before the clock
        detector = cached_detector(options.model, options.device, None, None, False, precision, True, backend)
        resolved = f"{detector.backend} {detector.precision}"
        if detector.device.startswith("cuda"):  # CUDA kernels chosen and warmed before the clock
            detector.predict(image, tile=options.tile)
        threads = encoder_count(options, detector.device)
        stages = StageNotes()  # the run's own account of each stage's work
        with PeakMemory() as memory, stages:
            started = time.perf_counter()
            run_batch(paths, options, jobs=1, progress=False)
            seconds = time.perf_counter() - started
        name = f"crdetect {role} detect {args.files} files ({resolved}, {threads} enc.)"
        runs[name] = (seconds, memory.above_base, None)
        notes.append(f"{name}: {args.files / seconds:.2f} CCDs/s; {'; '.join(stages.messages)}")
        print(notes[-1], flush=True)
    if args.no_peers:
        return runs
    try:
        lacosmic = LACosmicDetector()
        from crdetect.frame import Frame

        # LA-Cosmic takes seconds a file: at most 4 are timed and the time is scaled to all of them
        timed_paths = paths[:4]
        with PeakMemory() as memory:
            started = time.perf_counter()
            for path in timed_paths:
                with fits.open(path) as hdul:
                    data = hdul[0].data.astype(np.float32)
                    h = hdul[0].header
                mask = lacosmic.detect(Frame(data, gain=h["GAIN"], read_noise=h["RDNOISE"], saturation=h["SATURATE"]))
                fits.PrimaryHDU(mask.astype(np.uint8)).writeto(folder / f"{path.stem}_lacosmic.fits", overwrite=True)
            seconds = (time.perf_counter() - started) * len(paths) / len(timed_paths)
        runs[f"LA-Cosmic files ({args.files})"] = (seconds, memory.above_base, None)
        notes.append(f"LA-Cosmic files: {args.files / seconds:.2f} CCDs/s ({len(timed_paths)} timed)")
        print(notes[-1], flush=True)
    except ImportError as err:
        notes.append(f"LA-Cosmic files: skipped ({err})")
    return runs


def runtime(spec: str) -> tuple[str, str]:
    """``RUNTIME:PRECISION`` (or a bare precision, the runtime crdetect picks) as (backend, precision)."""
    backend, _, precision = spec.rpartition(":")
    return backend or "auto", precision


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--default", default="default", help="crdetect default model (name or checkpoint)")
    parser.add_argument("--fast", default="fast", help="crdetect fast model (name or checkpoint)")
    parser.add_argument("--tile", type=int, nargs="+", default=[1024], help="tile sizes to time (0: whole frame)")
    parser.add_argument("--precision", nargs="+", default=["torch:float32", "auto"],
                        help="network arithmetic(s) to time for crdetect's models, each optionally with its runtime: "
                             "auto, float32, int8, bfloat16, float16, openvino:int8, torch:float32...")
    parser.add_argument("--device", default="cpu", help="device of crdetect's models (cpu, cuda)")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile'd crdetect models (compilation is timed apart)")
    parser.add_argument("--frame", default="simulated", choices=["simulated", "real"],
                        help="simulated DECam CCD (default), or a real star field (CTIO Mosaic2) tiled to its size")
    parser.add_argument("--files", type=int, default=0, help="also time N files end to end (crdetect detect vs "
                                                              "astroscrappy reading and writing the same files)")
    parser.add_argument("--encoders", nargs="+", default=["auto"],
                        help="with --files: encoder threads of the end-to-end runs (auto: crdetect's choice)")
    parser.add_argument("--no-peers", action="store_true", help="time crdetect only (a quick check of a change)")
    parser.add_argument("--peers-on-cpu", action="store_true", help="with --device cuda, keep deepCR on the CPU")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args()

    import crdetect
    from crdetect.baselines import CosmicCoNNDetector, DeepCRDetector, LACosmicDetector
    from crdetect.device import describe_cpu, torch_available
    from crdetect.frame import Frame
    from crdetect.preprocessing import frame_statistics

    torch = None
    if torch_available():  # torch's runtime and the deep-learning peers
        import torch

        torch.set_num_threads(args.threads)
    if args.frame == "real":
        image, gain, read_noise, saturation = real_star_field()
        description = "real star field (CTIO Mosaic2 tpv.fits, I band) tiled to a DECam CCD"
    else:
        frame = make_frame()
        image, gain, read_noise, saturation = frame.image, frame.gain, frame.read_noise, 1.6e5 / frame.gain
        description = "simulated DECam CCD, r band"
    mpix = image.size / 1e6
    frame_facts = Frame(image, gain=gain, read_noise=read_noise, saturation=saturation)
    statistics = frame_statistics(image)
    runs = {}

    notes = []

    gpu = args.device.startswith("cuda")

    def ours(spec, tile, precision, compile=False):
        backend, precision = runtime(precision)
        detector = crdetect.load_detector(spec, device=args.device, compile=compile, precision=precision,
                                          backend=backend, threads=args.threads)
        if compile or gpu:  # the first call compiles / warms up CUDA kernels: timed apart
            started = time.perf_counter()
            detector.predict(image, tile=tile)
            first = time.perf_counter() - started
            notes.append(f"{spec}{' compiled' if compile else ''} {precision} tile {tile}: first call {first:.1f} s")
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        return lambda: detector.predict(image, tile=tile)  # returns numpy: the GPU is synchronised

    candidates = []
    for compile in (False, True) if args.compile else (False,):
        for precision in args.precision:
            for tile in args.tile:
                for role, spec in (("default", args.default), ("fast", args.fast)):
                    label = " ".join(["crdetect", role] + (["compiled"] if compile else [])
                                     + [precision]
                                     + ([f"tile {tile or 'whole'}"] if len(args.tile) > 1 else []))
                    candidates.append((label, lambda s=spec, t=tile or None, p=precision, c=compile: ours(s, t, p, c)))
    candidates += [] if args.no_peers else [("astroscrappy (LA-Cosmic)",
                                             lambda: (lambda d=LACosmicDetector(): lambda: d.detect(frame_facts))()),
                   ("deepCR decam" + (" (GPU)" if gpu and not args.peers_on_cpu else ""),
                    lambda: (lambda d=DeepCRDetector(device="GPU" if gpu and not args.peers_on_cpu else "CPU"):
                             lambda: d.score(frame_facts, statistics))()),
                   ("Cosmic-CoNN ground_imaging",
                    lambda: (lambda d=CosmicCoNNDetector(): lambda: d.score(frame_facts, statistics))())]
    for name, build in candidates:
        try:
            fn = build()
        except Exception as err:  # a peer not installed, a model not shipped
            notes.append(f"{name}: skipped ({err})")
            continue
        times = []
        with PeakMemory() as memory:
            for _ in range(args.repeat):
                started = time.perf_counter()
                fn()
                times.append(time.perf_counter() - started)
        gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if gpu and name.startswith("crdetect") else None
        runs[name] = (min(times), memory.above_base, gpu_peak)
        print(f"{name}: {min(times):.3f} s", flush=True)  # as it goes: a run cut short keeps what it measured

    if args.files:
        runs.update(end_to_end(args, image, gain, read_noise, saturation, notes))
    device = torch.cuda.get_device_name() if gpu else f"CPU, {args.threads} threads"
    versions = []
    for module in ("torch", "openvino"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    lines = [f"CPU: {describe_cpu()}",
             f"frame: {description}, {image.shape[1]} x {image.shape[0]} px ({mpix:.2f} Mpix); "
             f"{', '.join(versions)}; crdetect on {device}, tile {' '.join(map(str, args.tile))}, "
             f"best of {args.repeat}",
             f"{'detector':<40} {'seconds':>8} {'Mpix/s':>8} {'peak MB':>8}" + (f" {'GPU MB':>8}" if gpu else "")]
    for name, (seconds, peak, gpu_peak) in runs.items():
        lines.append(f"{name:<40} {seconds:8.2f} {mpix / seconds:8.2f} {peak:8.0f}"
                     + (f" {gpu_peak:8.0f}" if gpu_peak is not None else ""))
    lines.append("ratios (time ours / time theirs; < 1 means crdetect is faster):")
    for ours_name in [n for n in runs if n.startswith("crdetect")]:
        end = " detect " in ours_name  # end-to-end runs compare with end-to-end runs
        for theirs in [n for n in runs if not n.startswith("crdetect") and n.startswith("LA-Cosmic files") == end]:
            lines.append(f"  {ours_name} / {theirs}: {runs[ours_name][0] / runs[theirs][0]:.2f}")
    lines += notes
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
