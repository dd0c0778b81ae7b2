"""The network's runtimes on this CPU (issue #26): ``predict`` of the shipped models on a simulated DECam CCD
(2048 x 4096) with torch in float32 and with OpenVINO, in the same process, and astroscrappy on the same frame;
ratios and the largest logit difference. Prints the CPU's flags that matter (AVX2, AVX-512, AVX512-BF16, AMX).

    python benchmarks/bench_backends.py [--models default fast] [--repeat 2] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
    except (OSError, IndexError):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "avx512_vnni", "avx_vnni")
    return " ".join(f for f in wanted if f in flags) or "none of " + " ".join(wanted)


def timed(function, repeat: int) -> float:
    function()  # warm-up (OpenVINO's first call, oneDNN's primitive cache)
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["default", "fast"])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import astroscrappy

    import crdetect
    from crdetect.data.inject import load_cr_library
    from crdetect.data.simulate import SimulationConfig, simulate_frame

    frame = simulate_frame(np.random.default_rng(0), SimulationConfig(), "r", load_cr_library())
    image = frame.image
    lines = [f"bench_backends: simulated DECam CCD {image.shape[1]} x {image.shape[0]}, {args.threads} threads, "
             f"torch {torch.__version__}; CPU flags: {cpu_flags()}"]
    lacosmic = timed(lambda: astroscrappy.detect_cosmics(image, gain=frame.gain, readnoise=frame.read_noise),
                     args.repeat)
    lines.append(f"astroscrappy: {lacosmic:.2f} s")
    for name in args.models:
        results, seconds = {}, {}
        for backend in ("torch", "openvino"):
            started = time.perf_counter()
            detector = crdetect.load_detector(name, device="cpu", precision="float32", backend=backend)
            loading = time.perf_counter() - started
            seconds[backend] = timed(lambda d=detector, b=backend, r=results: r.__setitem__(b, d.predict(image)),
                                     args.repeat)
            lines.append(f"{name} {backend:<8} predict {seconds[backend]:.2f} s ({seconds[backend] / lacosmic:.2f}x "
                         f"astroscrappy; detector made in {loading:.1f} s)")
        finite = np.isfinite(results["torch"].logits)
        difference = float(np.abs(results["torch"].logits[finite] - results["openvino"].logits[finite]).max())
        changed = int((results["torch"].mask != results["openvino"].mask).sum())
        lines.append(f"{name}: openvino / torch {seconds['openvino'] / seconds['torch']:.2f}; largest logit "
                     f"difference {difference:.2e}; mask pixels changed {changed}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
