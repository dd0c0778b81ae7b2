"""What reduced precision does to the shipped models' results on the real frames.

    python scripts/precision_effect.py > results/precision.md
    python scripts/precision_effect.py --device cuda --precision float32 float16 bfloat16
    python scripts/precision_effect.py --precision torch:float32 openvino:float32 openvino:int8 > results/int8.md

A precision may name its runtime (``openvino:int8``); a bare one runs in torch.

For each shipped model and precision: TPR at FPR 1e-4 / 1e-3 on M51, WFPC2 and the injected frames (as
``crdetect evaluate --real`` scores them), and how the mask at the model's own threshold differs from
the first precision's (float32) mask on the same frames (pixels flagged only in one of them, per Mpix), plus the largest
logit change among pixels whose float32 probability lies between 1e-3 and 1 - 1e-3 (where a change
can move a pixel across a threshold; saturated logits far from any threshold are left out).
Timings are not taken here: see benchmarks/bench_detect.py --precision.
"""

import argparse
from pathlib import Path

import numpy as np

from crdetect.baselines import NetworkDetector
from crdetect.evaluation.benchmark import real_frame_groups, tpr_at_fprs
from crdetect.inference import load_detector

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
FPRS = (1e-4, 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL, help="the real-data folder (shared/data/real)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"],
                        help="precisions, each optionally RUNTIME:PRECISION (torch by default)")
    parser.add_argument("--models", nargs="+", default=["default", "fast"])
    args = parser.parse_args()
    groups = {name: list(frames) for name, frames in real_frame_groups(args.real).items()}
    samples_all = [sample for samples in groups.values() for sample in samples]
    mpix = sum(sample.image.size for sample in samples_all) / 1e6
    header = " | ".join(f"{g} @{f:g}" for g in groups for f in FPRS)
    print(f"Device {args.device}; masks compared on the {len(samples_all)} real frames ({mpix:.2f} Mpix).\n")
    print(f"| model | precision | {header} | mask px per Mpix | mask px changed per Mpix (vs {args.precision[0]}) "
          "| max logit change (0.001 < p < 0.999) |")
    print("|---|---|" + "---|" * (len(groups) * len(FPRS) + 3))
    for name in args.models:
        reference = None
        for spec in args.precision:
            backend, _, precision = spec.rpartition(":")
            detector = load_detector(name, device=args.device, precision=precision, backend=backend or "torch")
            scorer = NetworkDetector(detector, name=name)
            tprs = [f"{t:.4f}" for samples in groups.values() for t in tpr_at_fprs(scorer, samples, FPRS)]
            results = [detector.predict(s.image, statistics=s.scaling, saturation=s.frame.saturation)
                       for s in samples_all]
            if reference is None:
                reference = results
            flagged = sum(int(r.mask.sum()) for r in results)
            changed = sum(int((r.mask != f.mask).sum()) for r, f in zip(results, reference))
            logit_change = max(largest_logit_change(r, f) for r, f in zip(results, reference))
            print(f"| {name} | {spec} | " + " | ".join(tprs) + f" | {flagged / mpix:.0f} | {changed / mpix:.1f} "
                  f"| {logit_change:.3f} |", flush=True)


def largest_logit_change(result, reference) -> float:
    """Largest |logit difference| where the reference probability is in (0.001, 0.999)."""
    undecided = (reference.probability > 1e-3) & (reference.probability < 1 - 1e-3)
    return float(np.abs(result.logits[undecided] - reference.logits[undecided]).max(initial=0.0))


if __name__ == "__main__":
    main()
