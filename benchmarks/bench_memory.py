"""Memory benchmark: peak memory per Mpix of crdetect's in-memory ``predict`` and of ``crdetect detect`` on
FITS files, against astroscrappy (LA-Cosmic) on the same frame.

Each measurement runs in a fresh Python process, so the kernel's peak resident size (``ru_maxrss``) is
that of the measured call alone; the process's resident size just before the call (imports done, model
loaded, input frame in memory or on disk) is subtracted, and the rest divided by the frame's pixels.

    python benchmarks/bench_memory.py [--sizes 4096 6144] [--threads 2] [--out results/bench_memory.txt]
    python benchmarks/bench_memory.py --src /path/to/other/checkout/src     # another crdetect version

Frames: DECam-like sky (1000 +- 10 ADU) with a few hundred stars and hits, float32 ``size x size`` (and,
for ``predict``, also an empty sky frame of noise alone); the
FITS cases are that frame as float32, as raw uint16 (BZERO 32768), and as a 4-CCD multi-extension
file of ``size x size/4`` CCDs (the same pixel count).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

FRAME_CODE = """
def frame(size):
    rng = np.random.default_rng(0)
    image = rng.normal(1000.0, 10.0, (size, size)).astype(np.float32)
    ys, xs = rng.integers(5, size - 5, (2, 400))
    for y, x, flux in zip(ys, xs, rng.uniform(1e3, 5e4, 400)):
        image[y - 2:y + 3, x - 2:x + 3] += np.float32(flux) * np.exp(-0.5 * ((np.arange(5) - 2)[:, None] ** 2
                                                                            + (np.arange(5) - 2)[None] ** 2))
    ys, xs = rng.integers(0, size, (2, 2000))
    image[ys, xs] += rng.uniform(200, 3000, 2000).astype(np.float32)
    return image

"""

CHILD = r"""
import json, os, resource, sys
sys.path.insert(0, {src!r}) if {src!r} else None
import importlib.util
import numpy as np
# this version runs the shipped models without torch (OpenVINO, threads given to the detector); older ones in torch
NO_TORCH = importlib.util.find_spec("crdetect.background") is not None
if not NO_TORCH:
    import torch
    torch.set_num_threads({threads})

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

{frame_code}
case, size = {case!r}, {size}
if case == "astroscrappy":
    import astroscrappy
    image = frame(size)
    astroscrappy.detect_cosmics(image[:64, :64], gain=4.0, readnoise=6.0)
    base = rss()
    astroscrappy.detect_cosmics(image, gain=4.0, readnoise=6.0)
elif case in ("predict", "predict_sky"):
    import crdetect
    detector = crdetect.load_detector("default", device="cpu", **({{"threads": {threads}}} if NO_TORCH else {{}}))
    image = frame(size) if case == "predict" else np.random.default_rng(1).normal(1000.0, 10.0, (size, size)).astype(np.float32)
    detector.predict(image[:256, :256])
    base = rss()
    detector.predict(image)
else:
    import crdetect
    from crdetect.cli import main
    from crdetect.pipeline import detector_for, DetectOptions
    detector_for(DetectOptions(model="default", device="cpu", threads={threads})).predict(frame(256))
    path = {path!r}
    base = rss()
    code = main(["detect", path, "--model", "default", "--device", "cpu", "--threads", "{threads}", "-q",
                 "--out-dir", {out!r}, "--overwrite"])
    assert code == 0, code
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"base": base, "peak": peak}}))
"""


def write_inputs(folder: Path, size: int, src: str | None) -> dict[str, Path]:
    """The benchmark frame as float32, raw uint16 and a 4-CCD file, written once."""
    code = f"""
import sys
sys.path.insert(0, {src!r}) if {src!r} else None
import numpy as np
from astropy.io import fits
{FRAME_CODE}
image = frame({size})
fits.PrimaryHDU(image).writeto({str(folder / 'float32.fits')!r})
fits.PrimaryHDU(np.clip(image, 0, 65535).astype(np.uint16)).writeto({str(folder / 'uint16.fits')!r})
side = {size} // 2048  # 2048 x 2048 CCDs, as many as the frame has pixels
ccds = [image[y:y + 2048, x:x + 2048] for y in range(0, side * 2048, 2048) for x in range(0, side * 2048, 2048)]
fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(c, name=f"CCD{{i}}") for i, c in enumerate(ccds, 1)]).writeto(
    {str(folder / 'mef.fits')!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    return {name: folder / f"{name}.fits" for name in ("float32", "uint16", "mef")}


def measure(case: str, size: int, threads: int, src: str | None, path: Path | None = None,
            out: Path | None = None) -> tuple[float, float]:
    """Peak bytes above the pre-call level, and the process's whole peak resident size (libraries, model)."""
    code = CHILD.format(frame_code=FRAME_CODE, src=src or "", threads=threads, case=case, size=size,
                        path=str(path or ""), out=str(out or ""))
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    values = json.loads(result.stdout.strip().splitlines()[-1])
    return values["peak"] - values["base"], values["peak"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[4096, 6144],
                        help="two frame sides in pixels: the slope between them is the memory per pixel "
                             "(default 4096 6144: 16.8 and 37.7 Mpix)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--src", default=None, help="import crdetect from this source directory")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    small, large = args.sizes
    cases = ["astroscrappy", "predict", "predict_sky", "float32", "uint16", "mef"]
    peaks: dict[str, list[float]] = {case: [] for case in cases}
    totals: dict[str, list[float]] = {case: [] for case in cases}
    for size in (small, large):
        with tempfile.TemporaryDirectory() as tmp:
            inputs = write_inputs(Path(tmp), size, args.src)
            for case in cases:
                if case in inputs:
                    above, total = measure("detect", size, args.threads, args.src, inputs[case], Path(tmp) / "out")
                else:
                    above, total = measure(case, size, args.threads, args.src)
                peaks[case].append(above)
                totals[case].append(total)
    names = {"astroscrappy": "astroscrappy.detect_cosmics (in memory)", "predict": "crdetect predict (in memory)",
             "predict_sky": "crdetect predict, empty sky (in memory)",
             "float32": "crdetect detect: float32 FITS", "uint16": "crdetect detect: raw uint16 FITS",
             "mef": "crdetect detect: file of 2048^2 CCDs"}
    pixels = (small**2, large**2)
    lines = [f"peak memory above the pre-call level; frames {small}^2 and {large}^2 px ({pixels[0] / 1e6:.1f}, "
             f"{pixels[1] / 1e6:.1f} Mpix), {args.threads} threads, model default (1024 px tiles), CPU.",
             "B/px: slope between the two sizes; fixed: what does not grow with the frame (tiles, libraries).",
             f"process peak: the whole process's peak resident size at {small}^2 (imports and model included).",
             f"{'case':<42}  {'B/px':>5}  {'fixed GB':>8}  {'GB at 100 Mpix':>14}  {'B/px / astroscrappy':>19}"
             f"  {'process peak GB':>15}"]
    slopes = {case: (peaks[case][1] - peaks[case][0]) / (pixels[1] - pixels[0]) for case in cases}
    for case in cases:
        fixed = peaks[case][0] - slopes[case] * pixels[0]
        at_100 = fixed + slopes[case] * 1e8
        lines.append(f"{names[case]:<42}  {slopes[case]:5.1f}  {fixed / 2**30:8.2f}  {at_100 / 2**30:14.2f}  "
                     f"{slopes[case] / slopes['astroscrappy']:19.2f}  {totals[case][0] / 2**30:15.2f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
