"""Average a run's last epoch checkpoints (weight averaging) and keep it if validation says so.

    python scripts/average_epochs.py RUN_DIR --last 5

Averages ``RUN_DIR/epochs/eN.pt`` of the last ``--last`` epochs (written with ``keep_epochs: true``)
into ``RUN_DIR/averaged.pt``; if its validation loss is below ``best.pt``'s, the old best is kept as
``best_single_epoch.pt`` and the average becomes ``best.pt``. The choice uses the validation set only.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from crdetect import load_checkpoint
from crdetect.training import average_checkpoints, kept_epochs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--last", type=int, default=5)
    args = parser.parse_args()
    chosen = [path for _, path in kept_epochs(args.run)[-args.last:]]
    metrics = average_checkpoints(chosen, args.run / "averaged.pt")
    best = load_checkpoint(args.run / "best.pt")[1].metrics
    print(f"averaged {[p.name for p in chosen]}: val_loss {metrics['val_loss']:.5f} (best epoch "
          f"{best['epoch']}: {best['val_loss']:.5f})")
    if metrics["val_loss"] < best["val_loss"]:
        shutil.copy2(args.run / "best.pt", args.run / "best_single_epoch.pt")
        shutil.copy2(args.run / "averaged.pt", args.run / "best.pt")
        print("the average is the new best.pt")


if __name__ == "__main__":
    main()
