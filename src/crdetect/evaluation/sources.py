"""False cosmic rays on sources that are not round: the evaluation set of trailed and elongated sources.

The complaint users raise most about CR detectors is stars and moving objects flagged as cosmic rays:
trailed stars under non-sidereal tracking, elongated PSFs (guiding errors, wind shake), asteroids among
round stars, undersampled stars in good seeing, donut (defocused) PSFs. This module simulates frames of
each kind with the DECam-like simulator (real CR footprints injected and labelled as in the benchmark)
and scores any detector -- ours and the peers, through the same :class:`crdetect.baselines.Detector`
interface -- by:

- ``source_px_per_mpix``: flagged pixels on sources (the sources' footprint, the pixels where their light
  is at least 2 sigma of the noise, as CR labels are defined), per Mpix of frame, at the detector's own
  threshold; pixels within 1 px of a labelled hit do not count (a CR crossing a star stays a CR);
- ``sources_touched``: the fraction of sources (8-connected footprint regions) with such a pixel;
- ``cr_found``: the fraction of labelled CR pixels flagged at that threshold, and ``tpr_1e-3``, the TPR at
  a false-positive rate of 1e-3 pooled over the kind's frames, so a detector cannot look clean on sources
  by flagging nothing.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, replace

import numpy as np

from ..baselines import Detector
from ..data.simulate import FRAME_KINDS
from ..frame import LabelledFrame
from ..metrics import ScoreAccumulator
from ..preprocessing import frame_statistics

logger = logging.getLogger(__name__)

#: The kinds of frame (:data:`crdetect.data.simulate.FRAME_KINDS`); ``sidereal`` is the benchmark itself
#: (round Moffat PSFs), the reference.
SOURCE_KINDS = FRAME_KINDS
#: More stars than the DECam benchmark (50 per Mpix): the set is about stars.
STARS_PER_MPIX = 600.0


@dataclass
class SourceFrame:
    """A simulated labelled frame of one kind and the footprint of its sources."""

    kind: str
    sample: LabelledFrame
    footprint: np.ndarray

    @property
    def image(self) -> np.ndarray:
        return self.sample.image

    @property
    def truth(self) -> np.ndarray:
        return self.sample.truth

    @property
    def ignore(self) -> np.ndarray:
        return self.sample.ignore


def source_frames(kind: str, frames: int = 2, shape: tuple[int, int] = (1024, 1024), seed: int = 0) -> list[SourceFrame]:
    """``frames`` simulated frames of one kind of :data:`SOURCE_KINDS` (deterministic for ``seed``).

    CR footprints come from the library's test pool (never seen in training), at 20x the natural rate
    (the benchmark uses 6x) so that every frame carries enough hits for a TPR.
    """
    from ..data.inject import load_cr_library
    from ..data.simulate import BANDS, SimulationConfig, expose, render_scene
    from ..preprocessing import noise_from_detector

    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(SOURCE_KINDS)}")
    base = SimulationConfig()
    config = replace(base, detector=replace(base.detector, shape=shape), stars_per_mpix=STARS_PER_MPIX, cr_rate_scale=20.0,
                     **SOURCE_KINDS[kind])
    pool = load_cr_library().pool("test")
    result = []
    for index in range(frames):
        # seeded by the kind's name, so adding a kind never changes the frames of the others
        rng = np.random.default_rng([seed, 7, zlib.crc32(kind.encode()), index])
        band = list(BANDS)[index % len(BANDS)]
        scene = render_scene(rng, config, band)
        frame = expose(scene, rng, config, pool)
        det = config.detector
        noise_e = noise_from_detector(scene.sky_e + scene.signal_e, 1.0, det.read_noise)  # electrons: gain 1
        footprint = (scene.signal_e >= config.label_nsigma * noise_e) & ~frame.ignore
        sample = LabelledFrame.of(f"{kind} {index}", frame.image, frame.cr_mask, frame.ignore, det.gain, det.read_noise,
                                  det.full_well / det.gain, statistics=frame_statistics(frame.image))
        result.append(SourceFrame(kind, sample, footprint))
    return result


@dataclass
class SourceScores:
    """What one detector did on the frames of one kind."""

    detector: str
    kind: str
    source_px_per_mpix: float
    sources_touched: float
    sources: int
    cr_found: float
    tpr_1e3: float


def score_sources(detector: Detector, frames: list[SourceFrame]) -> SourceScores:
    """Score ``detector`` on the frames of one kind (see the module docstring for the measures)."""
    from scipy import ndimage

    eight = np.ones((3, 3), bool)
    accumulator = ScoreAccumulator(detector.threshold)
    source_px = touched = sources = found = labelled = pixels = 0
    for frame in frames:
        score = detector.score(frame.sample.frame, frame.sample.scaling)
        accumulator.update(score, frame.truth, frame.ignore)
        flagged = (score >= detector.threshold) & ~frame.ignore
        near_hit = ndimage.binary_dilation(frame.truth, eight)
        false_on_sources = flagged & frame.footprint & ~near_hit
        labels, count = ndimage.label(frame.footprint, eight)
        source_px += int(false_on_sources.sum())
        touched += np.unique(labels[false_on_sources]).size
        sources += count
        found += int((flagged & frame.truth).sum())
        labelled += int(frame.truth.sum())
        pixels += frame.image.size
    return SourceScores(detector.name, frames[0].kind if frames else "", source_px / (pixels / 1e6),
                        touched / max(sources, 1), sources, found / max(labelled, 1), accumulator.tpr_at_fpr(1e-3))


def evaluate_sources(detectors: list[Detector], frames_per_kind: int = 2, shape: tuple[int, int] = (1024, 1024),
                     seed: int = 0, kinds=None, progress: bool = True) -> list[SourceScores]:
    """Every detector on every kind of :data:`SOURCE_KINDS`; one row per (detector, kind)."""
    from tqdm import tqdm

    rows = []
    for kind in tqdm(list(kinds or SOURCE_KINDS), desc="sources", unit="kind", disable=not progress):
        frames = source_frames(kind, frames_per_kind, shape, seed)
        rows += [score_sources(detector, frames) for detector in detectors]
    return rows


def sources_table(rows: list[SourceScores]) -> str:
    """A Markdown table: one line per detector and kind."""
    lines = ["| detector | kind | false px on sources / Mpix | sources touched | sources | CR px found | "
             "TPR @ FPR 1e-3 |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.detector} | {r.kind} | {r.source_px_per_mpix:.1f} | {r.sources_touched:.3f} | {r.sources} "
                     f"| {r.cr_found:.3f} | {r.tpr_1e3:.3f} |")
    return "\n".join(lines)
