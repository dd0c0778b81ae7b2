"""TPR at FPR 1e-4 / 1e-3 on real frames (M51, WFPC2, held-out hits on 5 real frames) for every kept epoch.

    python scripts/real_frames_per_epoch.py out/runs/default_aug out/runs/fast_aug > table.md

Prints a Markdown table: LA-Cosmic and the shipped models first, then each epoch of each run (its
``epochs/eN.pt`` from ``crdetect train --keep-epochs``, else ``best.pt``) with its validation loss, and
``averaged.pt`` when present. Scored by `crdetect evaluate`'s code (network logits; M51's real CRs are
ignored, its injected ones are the label). "Injected" pools the five frames of
:func:`crdetect.data.real.injected_frames` (real backgrounds, the CR library's held-out test pool).
"""

import argparse
import csv
from pathlib import Path

from crdetect.baselines import LACosmicDetector, NetworkDetector
from crdetect.evaluation.benchmark import real_frame_groups, tpr_at_fprs
from crdetect.inference import load_detector
from crdetect.training import kept_epochs

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
FPRS = (1e-4, 1e-3)


def tprs(detector, groups) -> list[str]:
    """TPR at :data:`FPRS` on each group of samples (pooled within a group), formatted."""
    return [f"{tpr:.3f}" for samples in groups for tpr in tpr_at_fprs(detector, samples, FPRS)]


def epoch_checkpoints(folder: Path) -> list[tuple[str, Path]]:
    """(label, path) of the run's kept epochs in order, or its best checkpoint."""
    return [(str(epoch), path) for epoch, path in kept_epochs(folder)] or [("best", folder / "best.pt")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of `crdetect train`")
    parser.add_argument("--real", type=Path, default=REAL, help="the real-data folder (shared/data/real)")
    args = parser.parse_args()
    groups = real_frame_groups(args.real)
    samples = [list(groups[name]) for name in ("kpno_m51", "hst_wfpc2", "injected")]
    print("| checkpoint | val loss (own val set) | M51 @1e-4 | M51 @1e-3 | WFPC2 @1e-4 | WFPC2 @1e-3 "
          "| injected @1e-4 | injected @1e-3 |")
    print("|---|---|---|---|---|---|---|---|")
    print("| LA-Cosmic (astroscrappy, sigclip sweep) | - | " + " | ".join(tprs(LACosmicDetector(), samples)) + " |")
    for name in ("default", "fast"):
        detector = NetworkDetector(load_detector(name), name=name)
        print(f"| shipped `{name}` | - | " + " | ".join(tprs(detector, samples)) + " |", flush=True)
    for folder in args.runs:
        with open(folder / "metrics.csv") as f:
            losses = {r["epoch"]: float(r["val_loss"]) for r in csv.DictReader(f)}
        for epoch, path in epoch_checkpoints(folder):
            loss = f"{losses[epoch]:.4f}" if epoch in losses else "-"
            detector = NetworkDetector(load_detector(path), name="run")
            print(f"| {folder.name} epoch {epoch} | {loss} | " + " | ".join(tprs(detector, samples)) + " |", flush=True)
        if (folder / "averaged.pt").exists():
            detector = NetworkDetector(load_detector(folder / "averaged.pt"), name="run")
            print(f"| {folder.name} weight average | - | " + " | ".join(tprs(detector, samples)) + " |")


if __name__ == "__main__":
    main()
