"""TPR at FPR 1e-4 / 1e-3 on the real labelled frames for every epoch of the stage-4 fine-tuning runs.

    python results/bright_hits/real_frames_per_epoch.py > results/bright_hits/real_frames_per_epoch.md

Scored by `crdetect evaluate`'s code (network logits; M51's real CRs ignored). Needs out/runs/{default,fast}_aug*.
"""

import csv
import re
from pathlib import Path

from crdetect.baselines import NetworkDetector
from crdetect.data.real import m51_frame, wfpc2_frame
from crdetect.evaluation.benchmark import real_frame_samples, score_detectors
from crdetect.inference import load_detector

ROOT = Path(__file__).resolve().parents[2]
FRAMES = [m51_frame(ROOT.parent / "shared/data/real"), wfpc2_frame(ROOT.parent / "shared/data/real")]


def tprs(checkpoint) -> list[str]:
    detector = NetworkDetector(load_detector(checkpoint), name="run")
    out = []
    for sample in real_frame_samples(FRAMES):
        accumulator = score_detectors([detector], [sample], progress=False)["run"].accumulator
        out += [f"{accumulator.tpr_at_fpr(fpr):.3f}" for fpr in (1e-4, 1e-3)]
    return out


print("| checkpoint | val loss (own val set) | M51 @1e-4 | M51 @1e-3 | WFPC2 @1e-4 | WFPC2 @1e-3 |")
print("|---|---|---|---|---|---|")
print("| LA-Cosmic (astroscrappy, sigclip sweep) | - | 0.967 | 0.967 | 0.311 | 0.880 |")
for name in ("default", "fast"):
    print(f"| shipped `{name}` (before this experiment) | - | " + " | ".join(tprs(name)) + " |")
for run in ("default_aug0", "default_aug", "fast_aug0", "fast_aug"):
    folder = ROOT / "out" / "runs" / run
    with open(folder / "metrics.csv") as f:
        losses = {int(r["epoch"]): float(r["val_loss"]) for r in csv.DictReader(f)}
    epochs = sorted((folder / "epochs").glob("e*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[0]))
    for path in epochs or [folder / "best.pt"]:
        epoch = int(re.findall(r"\d+", path.stem)[0]) if epochs else "best"
        loss = f"{losses[epoch]:.4f}" if epoch in losses else "-"
        print(f"| {run} epoch {epoch} | {loss} | " + " | ".join(tprs(path)) + " |", flush=True)
    if (folder / "averaged.pt").exists():
        print(f"| {run} average of the last 5 epochs | - | " + " | ".join(tprs(folder / "averaged.pt")) + " |")
