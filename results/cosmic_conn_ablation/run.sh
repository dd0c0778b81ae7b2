#!/usr/bin/env bash
# The Cosmic-CoNN ablation at CPU scale (issue #25), as it was run for results.md: six rows on the lco-small preset
# (LCO-like consecutive exposures labelled from the stacks), 32 Mpix of training each (8 epochs of 4 Mpix: 128 crops of
# 256 px or 32 of 1024 px), validation on 4 of the 1024 px validation patches after every epoch; then the small
# TransUNet with BatchNorm and with GroupNorm on 256 px patches of the same frames; then the table.
#   bash results/cosmic_conn_ablation/run.sh            (2 CPU cores: about 1.5 hours, data included; DATA=... RUNS=... to move them)
# A GPU window runs the same rows at the study's scale by raising `epochs` (and `max_val_patches`) in configs/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=${DATA:-data/lco-small}
DATA256=${DATA256:-data/lco-small-256}
RUNS=${RUNS:-$HERE/runs}
[ -f "$DATA/test.h5" ] || crdetect simulate --preset lco-small --out "$DATA" --jobs 2 --quiet
if [ ! -f "$DATA256/test.h5" ]; then
  crdetect simulate --preset lco-small --patch 256 --no-stacks --out "$DATA256" --quiet &
  SIMULATING=$!
fi
for row in deepcr deepcr_mw deepcr_1024 deepcr_gn deepcr_1024_gn cosmic_conn; do
  crdetect --quiet train --config "$HERE/configs/$row.yaml" --data "$DATA" --out "$RUNS/$row"
done
[ -z "${SIMULATING:-}" ] || wait "$SIMULATING"
for row in tunet_3_bn tunet_3_gn; do
  crdetect --quiet train --config "$HERE/configs/$row.yaml" --data "$DATA256" --out "$RUNS/$row"
done
python "$HERE/../../scripts/ablation_table.py" --runs "$RUNS" --data "$DATA" --data-256 "$DATA256" --out "$HERE"
