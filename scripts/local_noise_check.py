"""Check: scale the shipped models' input by a local Poisson noise at inference (no retraining).

    python scripts/local_noise_check.py > results/local_noise.md

The shipped preprocessing divides ``image - local background`` by one noise for the whole frame. On
bright extended light (galaxy arms) the pixel noise is higher (Poisson), so faint compact sources there
look more significant than they are. This check divides instead by
``sqrt(sigma^2 + (background - sky) * sigma^2 / sky)`` (LA-Cosmic's noise model, applied at the scale of
the local background; the Poisson slope sigma^2 / sky is read from the sky, so it is skipped where the
sky is below sigma^2, e.g. sky-subtracted frames) and prints TPR at FPR 1e-4 / 1e-3, the fraction of
hits found and false detections per Mpix on the real frames and on 256 simulated test patches, for
both scalings. An experiment for the next training round, not used by crdetect.
"""

import argparse
from pathlib import Path

import numpy as np

from crdetect.background import local_background
from crdetect.baselines import NetworkDetector
from crdetect.evaluation.benchmark import iterate_patches, real_frame_groups, score_detectors
from crdetect.inference import load_detector
from crdetect.preprocessing import Preprocessing, frame_statistics

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


class LocalNoisePreprocessing(Preprocessing):
    """The shipped preprocessing with the noise taken locally (Poisson on the local background)."""

    def normalise(self, image, stats=None):
        stats = stats or frame_statistics(image)
        background = local_background(np.asarray(image, np.float32), self.local_background, fill=stats.sky)
        slope = stats.sigma**2 / stats.sky if stats.sky > stats.sigma**2 else 0.0
        sigma = np.sqrt(stats.sigma**2 + np.clip(background - stats.sky, 0, None) * slope)
        out = np.arcsinh((image - background) / sigma / self.asinh_softening).astype(np.float32)
        out[~np.isfinite(out)] = 0.0
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--sim", type=Path, default=Path("out/small_mix/test.h5"), help="simulated test set")
    args = parser.parse_args()
    groups = {name: list(frames) for name, frames in real_frame_groups(args.real).items()}
    if args.sim.exists():
        groups["simulated test (256 patches)"] = list(iterate_patches(args.sim, 256))
    print("| model | noise | " + " | ".join(f"{g}: TPR @1e-4 / @1e-3, hits found, false / Mpix" for g in groups) + " |")
    print("|---|---|" + "---|" * len(groups))
    for name in ("default", "fast"):
        for scaling in ("global (shipped)", "local"):
            detector = load_detector(name, device="cpu")
            if scaling == "local":
                detector.preprocessing = LocalNoisePreprocessing(**detector.preprocessing.to_dict())
            scorer = NetworkDetector(detector, name=name)
            cells = []
            for samples in groups.values():
                accumulator = score_detectors([scorer], samples, progress=False)[name].accumulator
                cells.append(f"{accumulator.tpr_at_fpr(1e-4):.3f} / {accumulator.tpr_at_fpr(1e-3):.3f}, "
                             f"{accumulator.hits.recall:.3f}, {accumulator.hits.false_per_mpix:.0f}")
            print(f"| {name} | {scaling} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
