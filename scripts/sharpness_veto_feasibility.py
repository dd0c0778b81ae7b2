"""Feasibility for issue #13: would LA-Cosmic's sharpness test, applied after the network, separate the
shipped ``default``'s false detections on elongated and undersampled stars from its detections of hits?

    python scripts/sharpness_veto_feasibility.py > results/sources/sharpness_veto.md

For every connected component of ``default``'s mask (8-connected): its largest ratio of the positive
Laplacian to the fine-structure image (median3 - median7 of median3, floored at 0.1 sigma), the quantity
LA-Cosmic compares with ``objlim`` to tell hits (sharp) from stars (smoothed by the PSF). Components touching
a labelled hit (within 1 px) count as hits, the others on a source's footprint as false detections on
sources. On the real frames the components are split by the label the same way. Prints, per set, what a
veto of components below each ratio would remove: components and pixels, of hits and of sources. This is
an analysis of the network's own mask (the veto is off here); the veto it led to is crdetect.veto.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from crdetect import load_detector
from crdetect.evaluation.benchmark import real_frame_groups
from crdetect.evaluation.sources import source_frames
from crdetect.veto import sharpness_at

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
CUTS = (1.0, 2.0, 3.0, 5.0)


def sharpness_ratio(image: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Positive Laplacian over LA-Cosmic's fine-structure image at the pixels of ``mask`` (crdetect.veto's;
    0 elsewhere: only the flagged components' largest ratio is read)."""
    image = np.where(np.isfinite(image), image, np.nanmedian(image)).astype(np.float64)
    ratio = np.zeros(image.shape)
    ys, xs = np.nonzero(mask)
    ratio[ys, xs] = sharpness_at(image, ys, xs, sigma)[0]
    return ratio


def flagged_components(mask, ratio, hits, sources) -> list[tuple[str, int, float]]:
    """(what, pixels, largest ratio) of each component of ``mask``: "hit", "source" or "other"."""
    labels, _ = ndimage.label(mask, np.ones((3, 3)))
    near_hit = ndimage.binary_dilation(hits, np.ones((3, 3), bool))
    rows = []
    for index, box in enumerate(ndimage.find_objects(labels), 1):
        component = labels[box] == index
        what = "hit" if (near_hit[box] & component).any() else (
            "source" if sources is not None and (sources[box] & component).any() else "other")
        rows.append((what, int(component.sum()), float(ratio[box][component].max())))
    return rows


def report(name: str, rows: list[tuple[str, int, float]]) -> None:
    for what in ("hit", "source", "other"):
        picked = [(px, r) for w, px, r in rows if w == what]
        if not picked:
            continue
        pixels = np.array([p for p, _ in picked])
        ratios = np.array([r for _, r in picked])
        cuts = " | ".join(f"{(ratios < c).mean():.3f} / {pixels[ratios < c].sum() / pixels.sum():.3f}" for c in CUTS)
        print(f"| {name} | {what} | {len(picked)} | {pixels.sum()} | {np.median(ratios):.2f} | {cuts} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--frames", type=int, default=3, help="simulated 1024 x 1024 frames per kind")
    args = parser.parse_args()
    detector = load_detector("default", device="cpu", precision="float32", source_veto=False)
    print("Components of the shipped `default`'s mask and what a veto below each sharpness ratio would remove "
          "(fraction of components / fraction of their pixels).\n")
    print("| set | components on | count | pixels | median ratio | " + " | ".join(f"< {c:g}" for c in CUTS) + " |")
    print("|---|---|---:|---:|---:|" + "---|" * len(CUTS))
    for kind in ("elongated", "undersampled", "trailed_sharp", "sidereal"):
        rows = []
        for frame in source_frames(kind, args.frames, (1024, 1024), seed=5):
            stats = frame.sample.scaling
            result = detector.predict(frame.image, statistics=stats, saturation=frame.sample.frame.saturation,
                                      return_logits=False)
            ratio = sharpness_ratio(frame.image, result.mask, stats.sigma)
            rows += flagged_components(result.mask, ratio, frame.truth, frame.footprint)
        report(f"simulated {kind}", rows)
    if args.real.is_dir():
        for name, frames in real_frame_groups(args.real).items():
            rows = []
            for sample in frames:
                image, truth = sample.image, sample.truth
                result = detector.predict(image, statistics=sample.scaling, saturation=sample.frame.saturation,
                                          return_logits=False)
                ratio = sharpness_ratio(image, result.mask, sample.scaling.sigma)
                rows += flagged_components(result.mask, ratio, truth, None)
            report(f"real {name}", rows)


if __name__ == "__main__":
    main()
