#!/usr/bin/env bash
# Experiment (not shipped): fine-tune the shipped models' last stage with bright pedestals and extra hits.
# Outcome and per-epoch numbers: results/bright_hits/README.md. CPU, 1 thread per run, both runs at once.
set -euo pipefail
# stage 4a: 3 extra library hits per patch (magnified up to 3x), pedestals under half the patches. Run with
# the code of commit 962e2a4 (extra hits x0.5-30 in charge, no straight tracks, validation without the
# extras); epoch checkpoints were copies of last.pt taken after each epoch (what --keep-epochs now writes).
OMP_NUM_THREADS=1 crdetect train --model deepcr_unet --model-kwargs '{"base_channels": 16, "head_relu": false}' \
  --init-from out/runs/default_mix/best.pt --data out/small_mix --epochs 15 --batch-size 16 --crop 128 \
  --max-val-patches 160 --pedestal-prob 0.5 --extra-hits 3 --hit-zoom 3 --out out/runs/default_aug0   # stopped after 6
OMP_NUM_THREADS=1 crdetect train --model deepcr_unet --model-kwargs '{"base_channels": 8, "head_relu": false}' \
  --init-from out/runs/fast_mix/best.pt --data out/small_mix --epochs 30 --batch-size 16 --crop 128 \
  --max-val-patches 160 --pedestal-prob 0.5 --extra-hits 3 --hit-zoom 3 --seed 1 --out out/runs/fast_aug0  # stopped after 12
# stage 4b (code of de0c35d and later: charge x0.5-50, 30 % straight diffused tracks, validation with the
# extras), lr 3e-4; then the average of the last 5 epochs (kept only if its validation loss is lower)
OMP_NUM_THREADS=1 crdetect train --model deepcr_unet --model-kwargs '{"base_channels": 16, "head_relu": false}' \
  --init-from out/runs/default_aug0/best.pt --data out/small_mix --epochs 10 --lr 3e-4 --batch-size 16 --crop 128 \
  --max-val-patches 160 --pedestal-prob 0.5 --extra-hits 3 --hit-zoom 3 --keep-epochs --out out/runs/default_aug
OMP_NUM_THREADS=1 crdetect train --model deepcr_unet --model-kwargs '{"base_channels": 8, "head_relu": false}' \
  --init-from out/runs/fast_aug0/best.pt --data out/small_mix --epochs 20 --lr 3e-4 --batch-size 16 --crop 128 \
  --max-val-patches 160 --pedestal-prob 0.5 --extra-hits 3 --hit-zoom 3 --seed 1 --keep-epochs --out out/runs/fast_aug
python scripts/average_epochs.py out/runs/default_aug --last 5
python scripts/average_epochs.py out/runs/fast_aug --last 5
python scripts/real_frames_per_epoch.py out/runs/{default_aug0,default_aug,fast_aug0,fast_aug} > results/bright_hits/real_frames_per_epoch.md
