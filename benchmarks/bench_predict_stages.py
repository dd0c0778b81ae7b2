"""Where :meth:`crdetect.CRDetector.predict` spends its time on one DECam CCD, stage by stage, on one device.

Each stage is the code ``predict`` runs (on CUDA its torch branches), synchronised and timed alone (best of
``--repeat``), then the whole ``predict``. The sum of the stages is close to the whole; a stage far above
the network's time is the one to move or rewrite.

    python benchmarks/bench_predict_stages.py --device cuda --precision float16
    python benchmarks/bench_predict_stages.py                # CPU (its numpy branches where predict uses them)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detect import make_frame


def timed(fn, device: torch.device, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="default")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--saturation", action="store_true", help="pass the saturation level (no plateau search)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from scipy import ndimage

    import crdetect
    from crdetect.device import to_host
    from crdetect.inference.saturation import plateau_saturation_torch, saturated_regions_torch
    from crdetect.preprocessing import frame_statistics_torch
    from crdetect.veto import veto_sources

    device = torch.device(args.device)
    detector = crdetect.load_detector(args.model, device=args.device, precision=args.precision)
    frame = make_frame()
    image = frame.image
    saturation = 1.6e5 / frame.gain if args.saturation else None
    detector.predict(image, tile=None, saturation=saturation)  # warm-up: kernels chosen, memory pooled
    with torch.inference_mode():
        on_device = torch.from_numpy(image).to(device)
        stats = frame_statistics_torch(on_device)
        normalised = detector.preprocessing.normalise_batch(on_device[None, None], stats.sky, stats.sigma)[0, 0]
        level = saturation if saturation is not None else plateau_saturation_torch(on_device, stats)
        logits = detector._predict_fitting_memory(normalised, None, None, 1)
        protected = saturated_regions_torch(on_device, level)
        stages = {
            "to device": lambda: torch.from_numpy(image).to(device),
            "isfinite + count": lambda: int((~torch.isfinite(on_device)).sum()),
            "frame statistics": lambda: frame_statistics_torch(on_device),
            "normalise (local background)": lambda: detector.preprocessing.normalise_batch(
                on_device[None, None], stats.sky, stats.sigma),
            "network (whole frame)": lambda: detector._predict_fitting_memory(normalised, None, None, 1),
            "plateau saturation search": lambda: plateau_saturation_torch(on_device, stats),
            "saturated regions": lambda: saturated_regions_torch(on_device, level),
            "sigmoid + threshold": lambda: (torch.sigmoid(logits) >= 0.5) & ~protected,
            "to host (5 maps)": lambda: to_host([logits, logits, protected, protected, protected]),
        }
        # the source veto runs on the host, on the regions of the mask (crdetect.veto)
        flagged = ((torch.sigmoid(logits) >= detector.threshold) & ~protected).cpu().numpy()
        stages[f"source veto ({ndimage.label(flagged, np.ones((3, 3)))[1]} regions, host)"] = \
            lambda: veto_sources(image, flagged, stats.sigma)
        where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        lines = [f"predict stages: {detector.name} {args.precision} on {where}"
                 f", {image.shape[1]} x {image.shape[0]} px, torch {torch.__version__}, saturation "
                 f"{'given' if saturation is not None else 'searched'} (level {level})"]
        total = 0.0
        for name, fn in stages.items():
            seconds = timed(fn, device, args.repeat)
            total += seconds
            lines.append(f"  {name:<40} {seconds * 1e3:8.1f} ms")
            print(lines[-1], flush=True)
    whole = timed(lambda: detector.predict(image, tile=None, saturation=saturation), device, args.repeat)
    lines += [f"  {'sum of stages':<40} {total * 1e3:8.1f} ms", f"  {'whole predict':<40} {whole * 1e3:8.1f} ms"]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
