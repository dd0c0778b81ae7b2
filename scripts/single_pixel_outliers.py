"""What the shipped models (and LA-Cosmic) do with single-pixel outliers: hot pixels look like 1-px hits.

A single-frame detector cannot tell a hot pixel from a cosmic ray that deposited its charge in one pixel;
only the detector's bad-pixel map (or consecutive exposures) can. This measures the fraction of isolated
single-pixel outliers flagged, by amplitude in units of the sky noise, on a DECam-like empty sky
(1000 +- 10 ADU, gain 4), and writes the table to results/single_pixel.md.

    python scripts/single_pixel_outliers.py [--out results/single_pixel.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/single_pixel.md")
    args = parser.parse_args()

    import crdetect
    from crdetect.baselines import LACosmicDetector
    from crdetect.frame import Frame

    rng = np.random.default_rng(0)
    size, sigma = 1024, 10.0
    image = rng.normal(1000.0, sigma, (size, size)).astype(np.float32)
    # isolated outliers on a grid (16 px apart: no two in one 5x5 neighbourhood), amplitudes log-uniform
    ys, xs = np.meshgrid(np.arange(8, size, 16), np.arange(8, size, 16), indexing="ij")
    ys, xs = ys.ravel(), xs.ravel()
    amplitude = np.exp(rng.uniform(np.log(3.0), np.log(3000.0), ys.size))  # in sigma
    image[ys, xs] += (amplitude * sigma).astype(np.float32)
    bins = [3, 5, 10, 30, 100, 300, 1000, 3000]
    flagged = {}
    for name in ("default", "fast"):
        flagged[name] = crdetect.load_detector(name, device="cpu").detect(image)[ys, xs]
    frame = Frame(image, gain=4.0, read_noise=6.0, saturation=65535.0)
    flagged["LA-Cosmic (astroscrappy defaults)"] = LACosmicDetector().detect(frame)[ys, xs]
    lines = ["Fraction of isolated single-pixel outliers flagged, by amplitude (sky noise units), on an empty "
             f"DECam-like sky ({ys.size} outliers, 1024 x 1024, 1000 +- 10 ADU); scripts/single_pixel_outliers.py",
             "", "| amplitude (sigma) | " + " | ".join(flagged) + " |", "|---|" + "---:|" * len(flagged)]
    for low, high in zip(bins[:-1], bins[1:]):
        inside = (amplitude >= low) & (amplitude < high)
        cells = [f"{values[inside].mean():.2f}" for values in flagged.values()]
        lines.append(f"| {low}-{high} ({inside.sum()}) | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
