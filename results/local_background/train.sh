#!/usr/bin/env bash
# Issue #5: the shipped models of 2026-11-24, fine-tuned from the previous shipped weights (CPU, 2 cores,
# one thread per run, both runs side by side). Stages in the order they were run; the first two were
# stopped early after their real-frame numbers (results/local_background/README.md).
set -euo pipefail
common=(--data out/small_mix --batch-size 16 --crop 128 --lr 0.0003 --max-val-patches 160 --keep-epochs -q)
default_kwargs='{"base_channels": 16, "head_relu": false}'
fast_kwargs='{"base_channels": 8, "head_relu": false}'
for m in default fast; do
  kwargs_var="${m}_kwargs"
  export OMP_NUM_THREADS=1
  # A: local background only (stopped after 1-3 epochs)
  crdetect train --model deepcr_unet --model-kwargs "${!kwargs_var}" --init-from src/crdetect/weights/$m.pt \
    --epochs 8 --local-background 21 --seed 3 --out out/runs/${m}_localbg "${common[@]}"
  # B: + extra hits magnified up to 3x (stopped after 2-5 epochs)
  crdetect train --model deepcr_unet --model-kwargs "${!kwargs_var}" --init-from src/crdetect/weights/$m.pt \
    --epochs 8 --local-background 21 --extra-hits 3 --hit-zoom 3 --seed 3 --out out/runs/${m}_localbg_hits "${common[@]}"
  # C: + extra hits up to 1000x their charge, not magnified (8 epochs)
  crdetect train --model deepcr_unet --model-kwargs "${!kwargs_var}" --init-from src/crdetect/weights/$m.pt \
    --epochs 8 --local-background 21 --extra-hits 3 --hit-charge 0.5 1000 --seed 3 --out out/runs/${m}_localbg_bright "${common[@]}"
done
# D: + unlabelled straight lines (sky lines, bad columns, trails), from C's best epoch by validation loss
crdetect train --model deepcr_unet --model-kwargs "$default_kwargs" --init-from out/runs/default_localbg_bright/epochs/e8.pt \
  --epochs 4 --local-background 21 --extra-hits 3 --hit-charge 0.5 1000 --line-prob 0.3 --seed 4 \
  --out out/runs/default_localbg_lines "${common[@]}"
crdetect train --model deepcr_unet --model-kwargs "$fast_kwargs" --init-from out/runs/fast_localbg_bright/epochs/e5.pt \
  --epochs 6 --local-background 21 --extra-hits 3 --hit-charge 0.5 1000 --line-prob 0.3 --seed 4 \
  --out out/runs/fast_localbg_lines "${common[@]}"
python scripts/real_frames_per_epoch.py out/runs/{default,fast}_localbg{,_hits,_bright,_lines} > results/local_background/real_frames_per_epoch.md
# E: more epochs at a lower rate from the shipped stage-D epochs (fast epoch 2 shipped; default not)
e_common=("${common[@]}" --epochs 6 --local-background 21 --extra-hits 3 --hit-charge 0.5 1000 --line-prob 0.3 --seed 5)
# (--lr after the common options: the last one given wins)
crdetect train --model deepcr_unet --model-kwargs "$default_kwargs" --init-from out/runs/default_localbg_lines/epochs/e7.pt \
  "${e_common[@]}" --lr 0.00015 --out out/runs/default_localbg_lines_e &
crdetect train --model deepcr_unet --model-kwargs "$fast_kwargs" --init-from out/runs/fast_localbg_lines/epochs/e3.pt \
  "${e_common[@]}" --lr 0.0001 --out out/runs/fast_localbg_lines_e &
wait
python scripts/real_frames_per_epoch.py out/runs/default_localbg_lines_e out/runs/fast_localbg_lines_e
