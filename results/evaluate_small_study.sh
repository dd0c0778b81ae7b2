#!/usr/bin/env bash
# Evaluate the CPU-scale study runs (results/run_small_study.sh) and the two shipped models' runs with
# LA-Cosmic, deepCR and Cosmic-CoNN on the same simulated test patches (DECam-like `small` preset, test
# footprint pool) and on the real labelled frames; writes results/small_study/.
set -euo pipefail
DATA=${DATA:-out/small}
RUNS=${RUNS:-out/runs/study}
crdetect evaluate --runs "$RUNS"/deepcr_unet "$RUNS"/unet "$RUNS"/cosmic_conn "$RUNS"/att_unet "$RUNS"/tunet_4 \
  out/runs/default_aug out/runs/fast_aug \
  --baselines lacosmic,deepcr,cosmic_conn --data "$DATA" --max-val-patches 64 --max-test-patches 128 \
  --real ../shared/data/real --out results/small_study -q
