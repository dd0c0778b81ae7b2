"""LCO-like sets of consecutive exposures, labelled from the exposures themselves (Cosmic-CoNN's data, simulated).

Each set is three exposures of one field by one telescope class (:mod:`crdetect.data.telescopes`): the same
stars and galaxies, each exposure with its own seeing (+-10 % of the set's), transparency (0-3 % loss), sky
(+-5 %), sub-pixel pointing residual (what registration to whole pixels leaves, +-0.5 px), Poisson and read
noise and cosmic rays; the detector's bad columns and hot pixels are the same in all three. Every exposure is
written as a FITS file (``stacks/<split>/``, its labels CRMASK, IGNORE and TRUTH beside it in ``*_crlabel.fits``)
and the set is labelled by :func:`crdetect.data.consecutive.label_stack` (what ``crdetect label`` runs,
Cosmic-CoNN's recipe for real LCO data). The labelled exposures are cut into patches (1024 x 1024 by default, with
the median-weighted loss's weight maps): ``train.h5``, ``val.h5`` (whole sets), ``test.h5`` (the LCO classes) and
``test_gemini_1x1.h5``, ``test_gemini_2x2.h5``. ``meta.json`` records the counts and how good the labels are
against the simulator's truth (a pixel whose injected charge is at least 2 sigma of its noise, as in the DECam
benchmark).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .. import __version__
from .consecutive import label_stack, stack_patches
from .inject import CRLibrary, load_cr_library
from .patches import PatchWriter, check_patch
from .presets import BANDS
from .simulate import PIXEL_SCALE, DetectorModel, Scene, SimulationConfig, _in_order, _render_sources, expose
from .telescopes import (
    BLANCO_AREA_M2,
    CONSECUTIVE_PRESETS,
    GEMINI_CLASSES,
    LIBRARY_PIXEL_UM,
    TELESCOPES,
    ConsecutivePreset,
    Telescope,
)

logger = logging.getLogger(__name__)

#: Output file of each test split.
TEST_FILES = {"test": "test.h5", **{name: f"test_{name}.h5" for name in GEMINI_CLASSES}}


@functools.lru_cache(maxsize=8)
def binned_library(pool: str, binning: int, pixel_um: float) -> CRLibrary:
    """The CR library's ``pool`` for pixels ``pixel_um`` wide read out ``binning`` x ``binning``: footprints summed
    over binned pixels, the hit rate per pixel scaled by the (binned) pixel's area (the rate per unit area stays)."""
    library = load_cr_library().pool(pool)
    footprints = library.footprints
    if binning > 1:
        def bin_stamp(stamp: np.ndarray) -> np.ndarray:
            rows, cols = -(-stamp.shape[0] // binning) * binning, -(-stamp.shape[1] // binning) * binning
            padded = np.pad(stamp, ((0, rows - stamp.shape[0]), (0, cols - stamp.shape[1])))
            return padded.reshape(rows // binning, binning, cols // binning, binning).sum(axis=(1, 3))
        footprints = tuple(bin_stamp(s) for s in footprints)
    area_per_pixel = (binning * pixel_um / LIBRARY_PIXEL_UM) ** 2
    return CRLibrary(footprints, library.exposure_s, library.area_px / area_per_pixel)


def telescope_config(telescope: Telescope, shape: tuple[int, int], cr_rate_scale: float) -> SimulationConfig:
    """The DECam-like simulation's settings for ``telescope``: its detector, seeing and exposures, the benchmark's
    source densities per unit sky area."""
    sky_area = (telescope.pixel_scale / PIXEL_SCALE) ** 2  # sources per pixel scale with the pixel's sky area
    base = SimulationConfig()
    detector = DetectorModel(shape, telescope.gain, telescope.read_noise, telescope.full_well, telescope.adc_max,
                             telescope.pixel_scale)
    return replace(base, detector=detector, exposure_s=telescope.exposure_s, seeing_arcsec=telescope.seeing_arcsec,
                   stars_per_mpix=base.stars_per_mpix * sky_area, galaxies_per_mpix=base.galaxies_per_mpix * sky_area,
                   cr_rate_scale=cr_rate_scale)


@dataclass
class ConsecutiveSet:
    """The exposures of one set, their truth and their labels from the stack."""

    frames: list  # crdetect.data.simulate.Frame
    labels: object  # crdetect.data.consecutive.StackLabels
    telescope: str
    band: str
    offsets: np.ndarray  # (exposures, 2) pointing residuals, px


def simulate_set(telescope: str, shape: tuple[int, int], rng: np.random.Generator, pool: str = "train",
                 cr_rate_scale: float = 3.0, exposures: int = 3) -> ConsecutiveSet:
    """Simulate ``exposures`` consecutive exposures of one field by ``telescope`` and label them from the stack."""
    tel = TELESCOPES[telescope]
    config = telescope_config(tel, shape, cr_rate_scale)
    library = binned_library(pool, tel.binning, tel.pixel_um)
    band = str(rng.choice(tel.bands))
    sky_mag, decam_zero_point = BANDS[band]
    zero_point = decam_zero_point + 2.5 * np.log10(tel.area_m2 / BLANCO_AREA_M2)
    exposure = float(rng.uniform(*tel.exposure_s))
    seeing = float(rng.uniform(*tel.seeing_arcsec))
    sky_e = exposure * 10 ** (-0.4 * (sky_mag + rng.uniform(-0.3, 0.3) - zero_point)) * tel.pixel_scale**2
    sources_seed, defects_seed = (int(s) for s in rng.integers(2**62, size=2))
    frames, offsets = [], []
    for _ in range(exposures):
        fwhm = seeing * rng.uniform(0.9, 1.1)
        offset = rng.uniform(-0.5, 0.5, 2)
        signal = np.zeros(shape, np.float32)
        # the same generator state draws the same sources: one field, seen with this exposure's seeing and pointing
        _render_sources(signal, np.random.default_rng(sources_seed), config, zero_point,
                        exposure * rng.uniform(0.97, 1.0), fwhm, (float(offset[0]), float(offset[1])))
        scene = Scene(np.clip(signal, 0, None), sky_e * rng.uniform(0.95, 1.05), band, exposure, fwhm)
        frames.append(expose(scene, rng, config, library, defect_rng=np.random.default_rng(defects_seed)))
        offsets.append(offset)
    labels = label_stack([f.image for f in frames], tel.gain, tel.read_noise)
    for frame, label in zip(frames, labels.frames):
        label.ignore |= frame.ignore  # the detector's bad-pixel mask, as LCO's pipeline ships one with each frame
        label.cr_mask &= ~frame.ignore
    return ConsecutiveSet(frames, labels, telescope, band, np.array(offsets))


def label_counts(s: ConsecutiveSet) -> dict[str, int]:
    """Pixel counts comparing the stack's labels of ``s`` with the simulator's truth (exposures the labeller
    rejected are counted as such and left out); :func:`label_quality` turns sums of them into rates."""
    counts = dict.fromkeys(("frames", "rejected_frames", "pixels", "truth_px", "labelled_px", "hit_px",
                            "truth_scored_px", "hit_scored_px"), 0)
    for frame, label in zip(s.frames, s.labels.frames):
        if label.rejected:
            counts["rejected_frames"] += 1
            continue
        scored = frame.cr_mask & ~label.ignore
        counts["frames"] += 1
        counts["pixels"] += frame.cr_mask.size
        counts["truth_px"] += int(frame.cr_mask.sum())
        counts["labelled_px"] += int(label.cr_mask.sum())
        counts["hit_px"] += int((frame.cr_mask & label.cr_mask).sum())
        counts["truth_scored_px"] += int(scored.sum())
        counts["hit_scored_px"] += int((scored & label.cr_mask).sum())
    return counts


def label_quality(counts: list[dict[str, int]]) -> dict[str, float]:
    """The label quality of sets from their :func:`label_counts`: ``recall``, the labelled share of the true CR
    pixels; ``recall_off_sources``, the same outside the labeller's ignore mask (sources, small hits: pixels a
    network is not scored on); ``precision``, the true share of the labelled pixels; ``false_per_mpix``, labelled
    pixels that are not true CR pixels per million pixels."""
    total = {k: sum(c[k] for c in counts) for k in counts[0]}
    return {**total, "recall": total["hit_px"] / max(total["truth_px"], 1),
            "recall_off_sources": total["hit_scored_px"] / max(total["truth_scored_px"], 1),
            "precision": total["hit_px"] / max(total["labelled_px"], 1),
            "false_per_mpix": (total["labelled_px"] - total["hit_px"]) / max(total["pixels"], 1) * 1e6}


def write_stack_fits(s: ConsecutiveSet, directory: Path, set_id: int) -> None:
    """Each exposure of ``s`` as ``<telescope>_<set>_<k>.fits`` (the image in ADU, with GAIN and RDNOISE in its header,
    as ``crdetect label`` reads them) and its labels beside it as ``..._crlabel.fits``, named as ``crdetect label``
    names its outputs: CRMASK and IGNORE (the stack's labels), TRUTH (the simulator's)."""
    from astropy.io import fits

    directory.mkdir(parents=True, exist_ok=True)
    tel = TELESCOPES[s.telescope]
    for k, (frame, label) in enumerate(zip(s.frames, s.labels.frames)):
        header = fits.Header()
        header["INSTRUME"] = (s.telescope, "simulated class (crdetect.data.telescopes)")
        header["GAIN"], header["RDNOISE"] = (tel.gain, "e-/ADU"), (tel.read_noise, "e-")
        header["EXPTIME"], header["FILTER"] = (frame.exposure_s, "s"), s.band
        header["SEEING"] = (round(frame.seeing_arcsec, 3), "FWHM, arcsec")
        header["PIXSCALE"], header["CCDSUM"] = (tel.pixel_scale, "arcsec/px"), f"{tel.binning} {tel.binning}"
        header["SETID"], header["EXPNUM"] = set_id, k
        header["OFFSETY"], header["OFFSETX"] = (float(s.offsets[k, 0]), "px"), (float(s.offsets[k, 1]), "px")
        stem = directory / f"{s.telescope}_{set_id:04d}_{k}"
        fits.PrimaryHDU(frame.image, header).writeto(stem.with_suffix(".fits"))
        labels = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(label.cr_mask.astype(np.uint8), name="CRMASK"),
                               fits.ImageHDU(label.ignore.astype(np.uint8), name="IGNORE"),
                               fits.ImageHDU(frame.cr_mask.astype(np.uint8), name="TRUTH")])
        labels[0].header["CRREJECT"] = (label.rejected, "exposure rejected by the labeller")
        labels.writeto(stem.parent / f"{stem.name}_crlabel.fits")


def set_jobs(preset: ConsecutivePreset) -> list[tuple[str, str, int]]:
    """(split, telescope, index) of every set: of each class's training sets every ``val_every``-th goes to validation
    (its last one where it has too few for that, but at least two), whole sets, so that the exposures of one field
    never straddle train and val; then the test sets."""
    jobs = []
    for telescope, count in preset.train_sets.items():
        val = {i for i in range(count) if i % preset.val_every == preset.val_every - 1}
        if not val and count >= 2:
            val = {count - 1}
        jobs.extend(("val" if index in val else "train", telescope, index) for index in range(count))
    for telescope, count in preset.test_sets.items():
        split = telescope if telescope in GEMINI_CLASSES else "test"
        jobs.extend((split, telescope, index) for index in range(count))
    return jobs


def _make_set(job: tuple[str, str, int], seed: int, preset: ConsecutivePreset, out: Path | None, patch: int):
    """One set of a preset: simulated, labelled, written as FITS (when ``out``), cut into patches. Its random
    stream derives from ``(seed, split kind, telescope, index)`` only: any process, any order."""
    split, telescope, index = job
    is_test = split not in ("train", "val")
    rng = np.random.default_rng([seed, 7, int(is_test), list(TELESCOPES).index(telescope), index])
    s = simulate_set(telescope, preset.frame_shape(telescope), rng, "test" if is_test else "train",
                     preset.cr_rate_scale, preset.exposures)
    if out is not None:
        write_stack_fits(s, out / "stacks" / split, index)
    tel = TELESCOPES[s.telescope]
    known = [{"band": s.band, "kind": s.telescope, "exposure_s": f.exposure_s, "seeing_arcsec": f.seeing_arcsec,
              "sky_adu": f.sky_adu} for f in s.frames]
    return stack_patches([f.image for f in s.frames], s.labels, patch, tel.gain, tel.read_noise, known), label_counts(s)


def plan_consecutive(preset: str, patch: int | None = None) -> str:
    """Human-readable plan of a consecutive-exposure preset (what ``--dry-run`` prints)."""
    p = CONSECUTIVE_PRESETS[preset]
    shapes = ", ".join(f"{t} {p.frame_shape(t)[0]}x{p.frame_shape(t)[1]}" for t in TELESCOPES)
    frames = p.frames()
    return (f"preset {preset} ({p.note}): sets of {p.exposures} consecutive exposures, training sets "
            f"{dict(p.train_sets)} ({frames['train']} frames, every {p.val_every}th set of each class to validation), test sets "
            f"{dict(p.test_sets)} ({frames['test_lco']} LCO + {frames['test_gemini']} Gemini frames); frames {shapes}; "
            f"patches {patch or p.patch} px. The seed: {p.seed_counts['train_frames']} training and "
            f"{p.seed_counts['test_frames']} test frames")


def build_consecutive(out_dir: str | Path, preset: str = "lco-ci", seed: int = 0, progress: bool = True,
                      jobs: int = 1, patch: int | None = None, stacks: bool = True) -> dict[str, int]:
    """Simulate and label a consecutive-exposure preset; write the FITS stacks (unless ``stacks`` is False), the
    patch files and ``meta.json``. Deterministic for a seed, whatever ``jobs``. Returns the patches per file.

    Raises
    ------
    InputError
        A patch larger than a frame of the preset, or not a multiple of 16 from 64 to 1024.
    """
    from tqdm import tqdm

    from ..errors import InputError

    p = CONSECUTIVE_PRESETS[preset]
    patch = check_patch(patch or p.patch)
    smallest = min(min(p.frame_shape(t)) for t in {**p.train_sets, **p.test_sets})
    if patch > smallest:
        raise InputError(f"patch size {patch} is larger than the {preset} preset's smallest frames ({smallest} px)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    job_list = set_jobs(p)
    names = {"train": "train.h5", "val": "val.h5", **TEST_FILES}
    writers = {split: PatchWriter(out / name, 0, patch) for split, name in names.items()
               if any(j[0] == split for j in job_list)}
    sets_by_class: dict[str, list[dict]] = {}
    make = functools.partial(_make_set, seed=seed, preset=p, out=out if stacks else None, patch=patch)
    try:
        results = _in_order(make, job_list, jobs)
        for frame_base, ((split, telescope, _), ((images, masks, ignores, weights, meta), counts)) in enumerate(
                tqdm(zip(job_list, results), total=len(job_list), desc=f"simulating {preset}", unit="set",
                     disable=not progress)):
            meta["frame_id"] = [frame_base * p.exposures + k for k in meta["frame_id"]]
            if len(images):
                writers[split].add(images, masks, ignores, weights, meta)
            sets_by_class.setdefault(f"{telescope} ({'test' if split not in ('train', 'val') else 'train'})",
                                     []).append(counts)
    finally:
        for writer in writers.values():
            writer.close()
    made = {names[s]: w.n for s, w in writers.items()}
    quality = {name: label_quality(parts) for name, parts in sorted(sets_by_class.items())}
    (out / "meta.json").write_text(json.dumps({
        "generator": "crdetect.data.lco", "crdetect_version": __version__, "preset": preset, "seed": seed,
        "patch": patch, "counts": made, "preset_settings": asdict(p),
        "telescopes": {t: asdict(TELESCOPES[t]) for t in TELESCOPES},
        "label": "from the consecutive exposures (crdetect.data.consecutive.label_stack) plus the detector's bad "
                 "pixels in IGNORE; truth: injected charge >= 2 x pixel noise, not saturated, not a bad pixel",
        "label_quality": quality,
    }, indent=2))
    for name, q in quality.items():
        logger.info("labels of %s: recall %.3f (%.3f off sources), precision %.3f, %.1f false px/Mpix", name,
                    q["recall"], q["recall_off_sources"], q["precision"], q["false_per_mpix"])
    return made
