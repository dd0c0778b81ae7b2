#!/usr/bin/env bash
# One GPU window of the study campaign (issue #24), whole, in one command:
#   1. the wheels crdetect needs beyond the GPU image (carried in .whl);
#   2. the `small` preset built once on every core (the rows share it);
#   3. the rows not yet converged (results/study/status.py; ROWS=a,b to choose), each resumed from where the
#      last window left it: last.pt where it travelled (optimiser and schedule), else the committed float16
#      weights.pt and metrics.csv with a fresh Adam (ModelRun says which in the run's run.log); rows that share a
#      seed train on the same batches (--together) for the time that is left, less the scoring and the packing;
#   4. no scoring beyond the validation Dice of every epoch (scored on a CPU machine once rows converge:
#      crdetect study --no-train), the status table, the share of the window spent training, and what a user
#      needs (float16 weights, metrics.csv, run.log) packed under $OUT. Optimiser states are not packed: a session
#      has one window (15 device minutes), so the next window is on a new machine and resumes from the committed
#      weights with a fresh Adam (10 rows' states with their moments are ~57 MB, more than the carry allows).
# Tried first at ci scale on CPU:
#   SCALE=ci DEVICE=cpu DEADLINE=240 OUT=/tmp/window bash results/study/window.sh
# On the GPU machine (carry .whl; build it with PEERS=0 bash ../shared/gpu/wheels.sh $PWD/.whl):
#   OUT=$OUT bash results/study/window.sh
# Then, on this machine: bash results/study/window.sh --unpack FILES_AT   (the runs into results/study/runs)
set -uo pipefail
HERE=results/study
if [ "${1:-}" = --unpack ]; then
  tar -C "$HERE" -xzf "$2/runs.tar.gz" && python3 "$HERE/status.py" && exit 0
  exit 1
fi
OUT=${OUT:?set OUT}
SCALE=${SCALE:-small}
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-540}      # seconds from the start by which everything is packed
PACK_RESERVE=${PACK_RESERVE:-25}
WORK=${WORK:-/tmp/crdetect_window}
mkdir -p "$WORK"
source results/gpu_setup.sh

ROWS=${ROWS:-$(python3 "$HERE/status.py" --unconverged)}
if [ -z "$ROWS" ]; then echo "every row has converged"; exit 0; fi
echo "rows this window: $ROWS"

step "simulate the $SCALE preset on $cpus cores"
python3 -m crdetect simulate --preset "$SCALE" --jobs "$cpus" --out "$WORK/data" -q || exit 1

# the runs train where they are committed: results/study/runs/NAME (weights.pt, metrics.csv, run.log)
mkdir -p "$WORK/study"
ln -sfn "$PWD/$HERE/runs" "$WORK/study/runs"
mkdir -p "$HERE/runs"
seconds_before=$(python3 - "$HERE/runs" <<'PY'
import sys
from pathlib import Path
from crdetect.evaluation.benchmark import read_metrics
print(sum(float(r["seconds"]) for run in Path(sys.argv[1]).iterdir() for r in read_metrics(run)))
PY
)
budget_s=$(( DEADLINE - $(elapsed) - PACK_RESERVE - 20 ))
[ $budget_s -lt 20 ] && budget_s=20
budget=$(python3 -c "print(round($budget_s / 60, 3))")
train_started=$(elapsed)
step "train $ROWS together for $budget min"
extra=(--epochs 100000 --crop 128 --batch-size 64 --max-val-patches 160)
[ "$DEVICE" = cpu ] && extra=(--epochs 100000 --crop 64 --batch-size 8 --max-val-patches 8)
timeout $(( DEADLINE - $(elapsed) - 15 )) python3 -m crdetect study --data "$WORK/data" --out "$WORK/study" \
  --models "$ROWS" --device "$DEVICE" --time-budget "$budget" --together --no-evaluate "${extra[@]}" -q
echo "study exit status $?"
window_s=$(elapsed)

step "status and pack"
python3 - "$HERE/runs" "$seconds_before" "$train_started" "$window_s" <<'PY'
import sys
from pathlib import Path
from crdetect.evaluation.benchmark import read_metrics
runs, before, started, window = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
trained = sum(float(r["seconds"]) for run in runs.iterdir() for r in read_metrics(run)) - before
print(f"training (steps and per-epoch validation): {trained:.0f} s of the window's {window:.0f} s "
      f"= {100 * trained / max(window, 1):.0f} % (setup, data and scoring: the rest)")
PY
python3 "$HERE/status.py"
cp "$HERE/status.md" "$OUT/" 2>/dev/null
tar -C "$HERE" -czf "$OUT/runs.tar.gz" --exclude=best.pt --exclude=last.pt --exclude=epochs runs
ls -l "$OUT"
step done
