#!/usr/bin/env bash
# Ship the ten study rows of the GPU session into the package (float16 weights), each with its model card,
# what it was trained on and its test numbers (shown by `crdetect models`).
#   bash results/study_gpu/ship.sh STUDY_OUT      # the study's output: runs/ and results.csv
set -euo pipefail
STUDY=${1:?usage: ship.sh STUDY_OUT}
for row in deepcr_unet unet cosmic_conn att_unet tunet_2 tunet_3 tunet_4 tunet_9 tunet_5 tunet_6; do
  test=$(python3 - "$STUDY/results.csv" "$row" <<'PY'
import csv, json, sys
row = next(r for r in csv.DictReader(open(sys.argv[1])) if r["model"] == sys.argv[2])
print(json.dumps({"dice": round(float(row["test_dice"]), 4), "tpr@1e-4": round(float(row["test_tpr@1e-4"]), 4)}))
PY
)
  python3 scripts/ship_model.py "$STUDY/runs/$row" "$row" --half --card-notes results/study_gpu/card_notes_study.md \
    --trained-on "the study's small benchmark on an H200 (2.3 GPU-min for all ten rows)" --test "$test"
done
