#!/usr/bin/env bash
# How the shipped models were trained (CPU, 2 cores). Each stage warm-starts from the
# previous stage's best checkpoint (lowest validation loss).
set -euo pipefail
# data: DECam-like frames with a wider seeing range (0.4-1.6"), then a mix with large bright galaxies
# and denser CR fields (6-40x the natural rate), so that hits on bright extended backgrounds are learnt
crdetect simulate --preset small --seeing 0.4 1.6 --seed 1 --out out/small_wide -q
crdetect simulate --preset small --seeing 0.4 1.6 --bright-galaxies 0 3 --cr-rate-scale 6 40 --seed 2 --out out/small_mix -q
# default: deepCR-style U-Net 3-16 (117k parameters)
crdetect train --model deepcr_unet --model-kwargs '{"base_channels": 16}' --data out/small_wide --epochs 30 \
  --batch-size 16 --crop 128 --max-val-patches 160 --out out/runs/default_3_16   # stopped after 8 epochs
crdetect train --model deepcr_unet --model-kwargs '{"base_channels": 16, "head_relu": false}' \
  --init-from out/runs/default_3_16/best.pt --data out/small_wide --epochs 15 --batch-size 16 --crop 128 \
  --max-val-patches 160 --out out/runs/default_3_16_signed                       # stopped after 1 epoch
crdetect train --model deepcr_unet --model-kwargs '{"base_channels": 16, "head_relu": false}' \
  --init-from out/runs/default_3_16_signed/best.pt --data out/small_mix --epochs 12 --batch-size 16 --crop 128 \
  --max-val-patches 160 --out out/runs/default_mix                               # stopped after 4 epochs
# fast: U-Net 3-8 (29k parameters)
OMP_NUM_THREADS=1 crdetect train --model deepcr_unet --model-kwargs '{"base_channels": 8, "head_relu": false}' \
  --data out/small_wide --epochs 20 --batch-size 16 --crop 128 --max-val-patches 160 --seed 1 --out out/runs/fast_3_8
OMP_NUM_THREADS=1 crdetect train --model deepcr_unet --model-kwargs '{"base_channels": 8, "head_relu": false}' \
  --init-from out/runs/fast_3_8/best.pt --data out/small_mix --epochs 15 --batch-size 16 --crop 128 \
  --max-val-patches 160 --seed 1 --out out/runs/fast_mix                         # stopped after 11 epochs
python scripts/ship_model.py out/runs/default_mix default --card-notes results/card_notes_default.md
python scripts/ship_model.py out/runs/fast_mix fast --card-notes results/card_notes_fast.md
# 2026-11-24, issue #5: both models fine-tuned further with a local-background input, bright extra hits and
# unlabelled straight lines (stages A-D in results/local_background/train.sh; shipped: stage D's best
# epoch by validation loss)
bash results/local_background/train.sh
python scripts/ship_model.py out/runs/default_localbg_lines default --card-notes results/card_notes_default.md
python scripts/ship_model.py out/runs/fast_localbg_lines fast --card-notes results/card_notes_fast.md
# later the same day: stage E (more epochs at a lower rate); only fast's passed the rule and was shipped
python scripts/ship_model.py out/runs/fast_localbg_lines_e fast --card-notes results/card_notes_fast.md
