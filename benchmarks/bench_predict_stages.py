"""Where :meth:`crdetect.CRDetector.predict` spends its time on one DECam CCD, stage by stage.

Each stage is the function ``predict`` runs (:mod:`crdetect.inference.stages`; numpy on a CPU, torch on a GPU),
timed alone (best of ``--repeat``), then the whole ``predict``. The sum of the stages is close to the whole; a
stage far above the network's time is the one to move or rewrite.

    python benchmarks/bench_predict_stages.py                                  # CPU, what auto picks
    python benchmarks/bench_predict_stages.py --model fast --backend torch --precision float32
    python benchmarks/bench_predict_stages.py --device cuda --precision float16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detect import make_frame, real_star_field


def timed(fn, on_gpu: bool, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        if on_gpu:
            import torch

            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if on_gpu:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="default")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--frame", default="simulated", choices=["simulated", "real"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--saturation", action="store_true", help="pass the saturation level (no plateau search)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import crdetect
    from crdetect.device import describe_cpu
    from crdetect.inference.stages import frame_scaling, prepare_frame, probability_and_mask, protect_saturated, veto_plane
    from crdetect.inference.tiling import sliding_window_fitting_memory

    detector = crdetect.load_detector(args.model, device=args.device, precision=args.precision, backend=args.backend)
    if args.frame == "real":
        image, _, _, level = real_star_field()
    else:
        image, level = make_frame().image, 1.6e5 / 4.0
    saturation = level if args.saturation else None
    on_gpu = detector.device.startswith("cuda")
    detector.predict(image, saturation=saturation)  # warm-up: kernels chosen, memory pooled
    with detector._stage_context():
        frame = prepare_frame(image, None, detector.device)
        stats, levelled = frame_scaling(frame.pixels, None)
        normalised = detector._normalise(levelled, stats)
        margin = detector.margin()

        def network():
            return sliding_window_fitting_memory(detector.runtime, normalised, 1024, margin, detector.pad_multiple, 2)

        logits = network()
        protected = protect_saturated(frame.pixels, saturation, stats)
        never = frame.ignored | protected
        probability, flagged = probability_and_mask(logits.copy() if isinstance(logits, np.ndarray) else logits.clone(),
                                                    never, detector.threshold, False)
        flagged_host = flagged if isinstance(flagged, np.ndarray) else flagged.cpu().numpy()
        stages = {
            "prepare (checks, non-finite pixels)": lambda: prepare_frame(image, None, detector.device),
            "frame statistics and steps": lambda: frame_scaling(frame.pixels, None),
            "normalise (local background, asinh)": lambda: detector._normalise(levelled, stats),
            "network over tiles": network,
            "saturation (search and regions)": lambda: protect_saturated(frame.pixels, saturation, stats),
            "sigmoid + threshold": lambda: probability_and_mask(logits, never, detector.threshold, True),
            f"source veto ({int(flagged_host.sum())} px flagged)": lambda: veto_plane(
                image, flagged_host, ~np.isfinite(image), stats, detector.veto),
        }
        where = "GPU" if on_gpu else describe_cpu()
        lines = [f"predict stages: {detector!r}, {args.frame} frame {image.shape[1]} x {image.shape[0]} px, on "
                 f"{where}; saturation {'given' if saturation is not None else 'searched'}"]
        total = 0.0
        for name, fn in stages.items():
            seconds = timed(fn, on_gpu, args.repeat)
            total += seconds
            lines.append(f"  {name:<42} {seconds * 1e3:8.1f} ms")
            print(lines[-1], flush=True)
    whole = timed(lambda: detector.predict(image, saturation=saturation), on_gpu, args.repeat)
    lines += [f"  {'sum of stages':<42} {total * 1e3:8.1f} ms", f"  {'whole predict':<42} {whole * 1e3:8.1f} ms"]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
