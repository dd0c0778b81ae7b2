#!/usr/bin/env bash
# The study at CPU scale (issue 4): five models of the study trained on the `small` preset with
# reduced budgets (600 random 128 x 128 crops per epoch, 4 epochs, one CPU thread each), then
# evaluated with LA-Cosmic on the same test patches and on the real labelled frames.
# The study trained on 23,040 full 256 x 256 patches for many epochs on GPUs: these numbers show the
# pipeline end to end, not the architectures' converged quality.
set -euo pipefail
DATA=${DATA:-out/small}
RUNS=${RUNS:-out/runs/study}
[ -f "$DATA/train.h5" ] || crdetect simulate --preset small --seed 0 --out "$DATA" -q
for model in deepcr_unet unet cosmic_conn att_unet tunet_4; do
  # (the study settings of the former configs/$model.yaml: Adam 1e-3, bce_dice; today: crdetect study --models ...)
  OMP_NUM_THREADS=1 crdetect train --model $model --data "$DATA" --epochs 4 --batch-size 8 \
    --crop 128 --max-train-patches 600 --max-val-patches 96 --out "$RUNS/$model" -q
done
