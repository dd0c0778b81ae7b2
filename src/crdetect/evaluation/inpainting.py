"""How well cleaning restores the sky under the hits (issue #30): every inpainting method on frames where the
truth behind the flagged pixels is known, scored by the same code.

Sets: ``kpno_m51`` (the maskfill authors' M51 before and after they injected their hits), ``injected`` (the five
real frames with held-out library hits; the frame before injection is the truth) and ``simulated`` (DECam-like
frames; the frame without its cosmic-ray charge is the truth). Each method fills the true CR pixels (``truth``
masks: the detector's mistakes do not blur the comparison) and, end to end, what a detector flagged (pixels
scored: the true hits and the flagged ones). Errors are in units of each pixel's noise (sky and read noise plus
the source's photon noise, from the truth image), on the pixels that are not ignored (those are known bad, as a
pipeline's bad-pixel mask: no method fills from them); the photometric error is
that of the sources the hits fall on: the flux in each hit's region grown by 2 px, after filling less before, as
a fraction of the source's flux there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..cleaning import METHODS, inpaint
from ..frame import LabelledFrame
from ..preprocessing import frame_statistics

logger = logging.getLogger(__name__)

COLUMNS = ("method", "set", "mask", "pixels", "rms_over_noise", "median_abs_over_noise", "bias_over_noise",
           "median_flux_error", "seconds_per_mpix")


def our_methods() -> dict[str, Callable]:
    """crdetect's methods: ``fill(image, mask, exclude)``."""
    return {method: (lambda image, mask, exclude, m=method: inpaint(image, mask, m, exclude)) for method in METHODS}


def peer_methods() -> dict[str, Callable]:
    """The peers that are installed: maskfill (van Dokkum & Pasha 2024, PyPI ``maskfill``), smoothed and not, deepCR's
    shipped inpainting network (trained on HST ACS/WFC F606W, its only one) and scikit-image's biharmonic
    inpainting. (astroscrappy's ``medmask`` cleaning is crdetect's ``median``.)"""
    peers: dict[str, Callable] = {}
    try:
        import maskfill as maskfill_module

        def maskfill_peer(smooth):
            def fill(image, mask, exclude):
                # maskfill cannot leave pixels out of the fill: the known-bad ones are filled too (never scored)
                known_bad = mask if exclude is None else mask | exclude
                smoothed, unsmoothed = maskfill_module.maskfill(np.asarray(image, np.float64), known_bad, smooth=True)
                return np.asarray(smoothed if smooth else unsmoothed, np.float32)
            return fill

        peers["maskfill (package)"] = maskfill_peer(True)
        peers["maskfill (package, unsmoothed)"] = maskfill_peer(False)
    except ImportError:
        logger.warning("maskfill is not installed (pip install maskfill): left out of the inpainting benchmark")
    try:
        from deepCR import deepCR

        # deepCR's only shipped inpainting network (HST ACS/WFC F606W); it reads the mask as floats
        inpainter = deepCR(mask="ACS-WFC", inpaint="ACS-WFC-F606W-2-32", device="CPU")
        peers["deepCR network (ACS-WFC-F606W)"] = lambda image, mask, exclude: np.asarray(inpainter.inpaint(
            np.asarray(image, np.float32), (mask if exclude is None else mask | exclude).astype(np.float32)),
            np.float32)
    except ImportError:
        logger.warning("deepCR is not installed (pip install deepCR): its inpainting network left out of the benchmark")
    try:
        from skimage.restoration import inpaint_biharmonic

        peers["biharmonic (scikit-image)"] = lambda image, mask, exclude: np.asarray(
            inpaint_biharmonic(np.asarray(image, np.float64), mask if exclude is None else mask | exclude,
                               split_into_regions=True), np.float32)
    except ImportError:
        logger.warning("scikit-image is not installed: biharmonic inpainting left out of the benchmark")
    return peers


def simulated_frames(count: int = 2, shape: tuple[int, int] = (1024, 1024), seed: int = 0) -> list[LabelledFrame]:
    """DECam-like frames (sidereal, the benchmark's recipe at 20x the natural CR rate) with their CR-free truth."""
    from dataclasses import replace

    from ..data.inject import load_cr_library
    from ..data.simulate import BANDS, SimulationConfig, simulate_frame

    base = SimulationConfig()
    config = replace(base, detector=replace(base.detector, shape=shape), cr_rate_scale=20.0)
    library = load_cr_library().pool("test")
    frames = []
    for index in range(count):
        rng = np.random.default_rng([seed, 30, index])
        frame = simulate_frame(rng, config, list(BANDS)[index % len(BANDS)], library)
        det = config.detector
        frames.append(LabelledFrame.of(f"simulated {index}", frame.image, frame.cr_mask, frame.ignore | frame.saturated,
                                       det.gain, det.read_noise, det.full_well / det.gain,
                                       clean=frame.image - frame.cr_charge_adu))
    return frames


@dataclass
class Errors:
    """Filled-pixel errors of one method on one set, pooled over its frames."""

    residuals: list = field(default_factory=list)
    flux_errors: list = field(default_factory=list)
    seconds: float = 0.0
    pixels: int = 0

    def row(self, method: str, set_name: str, mask: str) -> dict:
        residual = np.concatenate(self.residuals) if self.residuals else np.zeros(0)
        flux = np.concatenate(self.flux_errors) if self.flux_errors else np.zeros(0)
        return {"method": method, "set": set_name, "mask": mask, "pixels": int(residual.size),
                "rms_over_noise": float(np.sqrt(np.mean(residual**2))) if residual.size else float("nan"),
                "median_abs_over_noise": float(np.median(np.abs(residual))) if residual.size else float("nan"),
                "bias_over_noise": float(np.mean(residual)) if residual.size else float("nan"),
                "median_flux_error": float(np.median(np.abs(flux))) if flux.size else float("nan"),
                "seconds_per_mpix": self.seconds / max(self.pixels / 1e6, 1e-9)}


def sky_and_noise(sample: LabelledFrame) -> tuple[float, np.ndarray]:
    """The truth image's sky level, and each pixel's noise: the sky's, plus the photon noise of the light above it
    (once per frame: every method and mask of the frame is scored with them)."""
    stats = frame_statistics(sample.clean)
    gain = sample.frame.gain or 1.0
    return stats.sky, np.sqrt(stats.sigma**2 + np.clip(sample.clean - stats.sky, 0, None) / gain)


def flux_errors(filled: np.ndarray, sample: LabelledFrame, mask: np.ndarray, sky: float,
                noise: np.ndarray) -> np.ndarray:
    """For each hit region lying on a source (its truth 10 sigma above the ``sky``), the flux error in the region
    grown by 2 px: (filled - truth) summed, over the truth's flux above the sky there."""
    labels, count = ndimage.label(mask, np.ones((3, 3), bool))
    errors = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        grown = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box)
        region = ndimage.binary_dilation(labels[grown] == index, iterations=2) & ~sample.ignore[grown]
        source = (sample.clean[grown] - sky)[region]
        if source.max() < 10 * float(np.median(noise[grown][region])):
            continue
        errors.append(float((filled[grown] - sample.clean[grown])[region].sum() / max(source.sum(), 1e-9)))
    return np.asarray(errors)


def score_fill(fill: Callable, sample: LabelledFrame, mask: np.ndarray, scored: np.ndarray, errors: Errors,
               sky: float, noise: np.ndarray) -> None:
    """Fill ``mask`` of one frame with ``fill`` and add its errors on ``scored`` pixels to ``errors``."""
    started = time.perf_counter()
    # the ignored pixels (bad columns, saturated stars, a real frame's own hits) are known bad, as a pipeline's
    # bad-pixel mask: never used to fill others
    filled = fill(sample.image, mask & ~sample.ignore, sample.ignore)
    errors.seconds += time.perf_counter() - started
    errors.pixels += sample.image.size
    keep = scored & ~sample.ignore
    errors.residuals.append(((filled - sample.clean) / noise)[keep])
    errors.flux_errors.append(flux_errors(filled, sample, mask & ~sample.ignore, sky, noise))


def run_inpainting_benchmark(sets: dict[str, list[LabelledFrame]], methods: dict[str, Callable],
                             detectors: dict[str, Callable] | None = None, progress: bool = True) -> list[dict]:
    """Every method on every set: on the true CR masks, and end to end on each detector's own mask
    (``detectors``: name -> ``mask(sample)``). One row per (method, set, mask)."""
    from tqdm import tqdm

    rows = []
    for set_name, samples in sets.items():
        truth_errors = {name: Errors() for name in methods}
        detector_errors = {(d, m): Errors() for d in (detectors or {}) for m in methods}
        for sample in tqdm(samples, desc=f"inpainting {set_name}", disable=not progress):
            sky, noise = sky_and_noise(sample)
            for name, fill in methods.items():
                score_fill(fill, sample, sample.truth, sample.truth, truth_errors[name], sky, noise)
            for detector, flag in (detectors or {}).items():
                flagged = flag(sample)
                for name, fill in methods.items():
                    score_fill(fill, sample, flagged, sample.truth | flagged, detector_errors[detector, name], sky,
                               noise)
        rows += [errors.row(name, set_name, "true CR pixels") for name, errors in truth_errors.items()]
        rows += [errors.row(name, set_name, f"{detector}'s mask") for (detector, name), errors in detector_errors.items()]
    return rows


def evaluate_inpainting(real_root: str | Path | None, out: str | Path, simulated: int = 2, device: str = "auto",
                        progress: bool = True) -> list[dict]:
    """``crdetect evaluate --inpainting``: the benchmark on M51 and the injected real frames (from ``real_root``)
    and ``simulated`` DECam-like frames, end to end with the shipped ``default`` and LA-Cosmic; writes
    ``results.csv``, ``results.md`` and ``inpainting_stamps.png`` in ``out``."""
    from ..baselines import LACosmicDetector
    from ..data.real import injected_frames, m51_frame
    from ..inference import load_detector

    sets: dict[str, list[LabelledFrame]] = {}
    if real_root is not None:
        sets["kpno_m51"] = [m51_frame(Path(real_root))]
        sets["injected"] = injected_frames(real_root)
    if simulated:
        sets["simulated"] = simulated_frames(simulated)
    if not sets:
        raise ValueError("the inpainting benchmark needs --real DIR or simulated frames")
    methods = {**our_methods(), **peer_methods()}
    detector = load_detector("default", device=device, precision="float32")  # the float32 masks the results were made with
    lacosmic = LACosmicDetector()
    detectors = {"default": lambda s: detector.predict(s.image, statistics=s.scaling, saturation=s.frame.saturation,
                                                       return_logits=False).mask,
                 "lacosmic": lambda s: lacosmic.detect(s.frame)}
    rows = run_inpainting_benchmark(sets, methods, detectors, progress)
    out = Path(out)
    write_tables(rows, out)
    first = next(iter(sets.values()))[0]
    stamps_figure(first, methods, out / "inpainting_stamps.png")
    return rows


def write_tables(rows: list[dict], out: Path) -> None:
    """``results.csv`` and ``results.md`` of the benchmark in ``out``."""
    import csv

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| method | set | mask | pixels | RMS / noise | median abs / noise | bias / noise | median flux error | "
             "s per Mpix |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['method']} | {row['set']} | {row['mask']} | {row['pixels']} | {row['rms_over_noise']:.3f} "
                     f"| {row['median_abs_over_noise']:.3f} | {row['bias_over_noise']:+.3f} | "
                     f"{100 * row['median_flux_error']:.2f} % | {row['seconds_per_mpix']:.3f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def stamps_figure(sample: LabelledFrame, methods: dict[str, Callable], out_path: Path, size: int = 40) -> Path:
    """Stamps around the brightest hit on a source: the truth, the frame with its hits, each method's fill."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import ZScaleInterval

    labels, count = ndimage.label(sample.truth & ~sample.ignore, np.ones((3, 3), bool))
    sky = frame_statistics(sample.clean).sky
    brightness = ndimage.maximum(sample.clean - sky, labels, np.arange(1, count + 1))
    centre = ndimage.center_of_mass(labels == int(np.argmax(brightness)) + 1)
    y0 = int(np.clip(centre[0] - size // 2, 0, sample.image.shape[0] - size))
    x0 = int(np.clip(centre[1] - size // 2, 0, sample.image.shape[1] - size))
    window = (slice(y0, y0 + size), slice(x0, x0 + size))
    panels = {"truth": sample.clean, "with hits": sample.image}
    panels.update({name: fill(sample.image, sample.truth & ~sample.ignore, sample.ignore) for name, fill in methods.items()})
    low, high = ZScaleInterval().get_limits(sample.clean[window])
    figure, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
    for axis, (name, image) in zip(np.atleast_1d(axes), panels.items()):
        axis.imshow(image[window], origin="lower", cmap="gray", vmin=low, vmax=high)
        axis.set_title(name, fontsize=7)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{sample.name}: the hits filled by each method (true CR mask)", fontsize=8)
    figure.tight_layout()
    figure.savefig(out_path, dpi=120)
    plt.close(figure)
    return out_path
