#!/usr/bin/env bash
# One prepared GPU session for issues #12 (bench_train), #14 (GPU inference benchmark) and #16 (the study).
# GPU time is scarce (15 min a session, 10 min a command): everything here was run first at ci scale on CPU:
#   SCALE=ci DEVICE=cpu OUT=/tmp/gpu_try bash results/gpu/run.sh
# On the GPU machine (the device tool sets OUT; carry .whl built by `bash ../shared/gpu/wheels.sh .whl`):
#   STEPS="simulate bench_train bench_detect" bash results/gpu/run.sh   # the benchmarks, about 5 min
#   STEPS="simulate study" BUDGET=6 bash results/gpu/run.sh             # the study inside a training budget
# Outputs under $OUT: bench_train_gpu.txt, bench_detect_gpu.txt, study/ (results.md/csv, evaluation/, the
# runs' metrics and best checkpoints), log.txt.
set -euo pipefail
SCALE=${SCALE:-small}         # simulate preset: ci (CPU try-out), small (2765 patches), paper (23040)
DEVICE=${DEVICE:-cuda}
OUT=${OUT:?set OUT}
BUDGET=${BUDGET:-6}           # minutes of training for all study rows together
STEPS=${STEPS:-"simulate bench_train bench_detect study"}
DATA=${DATA:-/tmp/crdetect_data_$SCALE}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
if [ -d .whl ] && ! python3 -c "import astropy" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src
python3 -c "import torch, crdetect; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'crdetect', crdetect.__version__)"
quick=(); [ "$SCALE" = ci ] && quick=(--quick)
batch=128; crop=0; [ "$DEVICE" = cpu ] && { batch=8; crop=64; }
for step in $STEPS; do
  started=$(date +%s)
  case $step in
    bench_train)
      python3 benchmarks/bench_train.py --device "$DEVICE" --data "$DATA" ${quick[@]+"${quick[@]}"} \
        --batch-size $batch --crop $crop \
        --switches --together --together-patches 1024 --out "$OUT/bench_train_gpu.txt" ;;
    bench_detect)
      python3 benchmarks/bench_detect.py --device "$DEVICE" --precision float32 bfloat16 float16 \
        --tile $([ "$DEVICE" = cpu ] && echo 1024 || echo 0 1024) --files $([ "$DEVICE" = cpu ] && echo 1 || echo 16) \
        --repeat 3 --out "$OUT/bench_detect_gpu.txt" ;;
    simulate)
      [ -f "$DATA/test.h5" ] || python3 -m crdetect simulate --preset "$SCALE" --jobs "$(nproc)" --out "$DATA" -q ;;
    study)
      extra=(); [ "$DEVICE" = cpu ] && extra=(--epochs 1 --crop 64 --batch-size 4 --max-test-patches 4 --baselines lacosmic)
      python3 -m crdetect study --data "$DATA" --out "$OUT/study" --device "$DEVICE" --time-budget "$BUDGET" \
        --together ${extra[@]+"${extra[@]}"} -q
      # the optimiser states are not needed to report and double the size of what comes back
      find "$OUT/study/runs" -name 'last.pt' -delete ;;
  esac
  echo "step $step: $(( $(date +%s) - started )) s"
done
