"""Where each run of the study campaign stands against the convergence rule of README.md.

    python results/study/status.py [RUNS_DIR]      # prints the table, writes status.md beside the runs
    python results/study/status.py --unconverged   # the names of the rows still to train (for window.sh)
"""

from __future__ import annotations

import sys
from pathlib import Path

from crdetect.evaluation.benchmark import read_metrics
from crdetect.training.study import convergence, load_study, select_rows

HERE = Path(__file__).resolve().parent
#: The campaign's rows: the study's ten, and a second seed for three of them (configs/study.yaml).
CAMPAIGN = [row.name for row in select_rows(load_study(), None)] + ["deepcr_unet_seed1", "tunet_3_seed1",
                                                                     "cosmic_conn_seed1"]


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    runs = Path(args[0]) if args else HERE / "runs"
    states = {name: convergence(read_metrics(runs / name)) for name in CAMPAIGN}
    if "--unconverged" in sys.argv:
        print(",".join(name for name, state in states.items() if not state.converged))
        return
    lines = ["| row | crops seen | best val Dice | gain in the last quarter | converged |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {s.crops_seen:,} | {s.best_val_dice:.4f} | {s.gain_last_quarter:+.4f} | "
              f"{'yes' if s.converged else 'no'} |" for name, s in states.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    (runs.parent / "status.md").write_text("# Where the campaign's runs stand\n\n" + text)


if __name__ == "__main__":
    main()
