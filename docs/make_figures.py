"""Figures of the documentation, made from the bundled sample and the committed results (not pasted):
``python docs/make_figures.py`` writes them into ``docs/_generated/`` before ``sphinx-build``."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from astropy.io import fits
from astropy.visualization import ZScaleInterval

import crdetect
from crdetect.cli.detect import SAMPLE_FILE

DOCS = Path(__file__).resolve().parent
OUT = DOCS / "_generated"
RESULTS = DOCS.parent / "results"


def masks_side_by_side() -> Path:
    """astroscrappy and crdetect's default on the bundled SAAO frame (untrimmed), the same call for both."""
    import astroscrappy

    with fits.open(SAMPLE_FILE) as hdul:
        image = np.asarray(hdul[1].data, np.float32)
        gain, read_noise = float(hdul[1].header["GAIN"]), float(hdul[1].header["RDNOISE"])
    theirs, _ = astroscrappy.detect_cosmics(image, gain=gain, readnoise=read_noise)
    ours, _ = crdetect.detect_cosmics(image, gain=gain, readnoise=read_noise, clean=False)
    low, high = ZScaleInterval().get_limits(image)
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    for axis, (title, mask) in zip(axes, (("the frame", None), (f"astroscrappy: {int(theirs.sum())} px", theirs),
                                          (f"crdetect default: {int(ours.sum())} px", ours))):
        axis.imshow(image, origin="lower", cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        if mask is not None:
            ys, xs = np.nonzero(mask)
            axis.scatter(xs, ys, s=6, facecolors="none", edgecolors="red", linewidths=0.6)
        axis.set_title(title, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    path = OUT / "masks_side_by_side.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def quicklook_sample(tmp: Path) -> Path:
    """``crdetect view --png`` of the bundled sample."""
    from crdetect.cli import main
    from crdetect.viewer import write_quicklook

    main(["detect", "--sample", "--out-dir", str(tmp), "-q", "--overwrite"])
    return write_quicklook(tmp / "saao_a8280271_crmask.fits", OUT / "quicklook_sample.png", overwrite=True)


def inpainting_chart() -> Path:
    """The inpainting benchmark (results/inpainting/results.csv): RMS error on the true hits, per set and method."""
    with open(RESULTS / "inpainting" / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["mask"] == "true CR pixels"]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    figure, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.6))
    for axis, name in zip(np.atleast_1d(axes), sets):
        values = [float(next(r for r in rows if r["set"] == name and r["method"] == m)["rms_over_noise"])
                  for m in methods]
        axis.barh(methods, values, color=["tab:red" if m == "maskfill" else "tab:gray" for m in methods])
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("RMS error / pixel noise", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.tight_layout()
    path = OUT / "inpainting_rms.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main() -> None:
    import tempfile

    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for path in (masks_side_by_side(), quicklook_sample(Path(tmp)), inpainting_chart()):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
