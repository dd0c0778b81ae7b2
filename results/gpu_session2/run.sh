#!/usr/bin/env bash
# The second GPU session (2026-11-27, issues #14 and #13), inside one 10-minute command:
#   1. the wheels crdetect needs beyond the GPU image (astropy, galsim, the peers);
#   2. the inference benchmarks of #14 on the GPU, alone on the machine: predict stage by stage (the
#      sort-median and page-locked copies, untimed so far), bench_detect in memory and end to end with the
#      writer thread compressing (0 encoders) and with encoder processes (crdetect's choice);
#   3. the mixed training set of #13 (the one default/fast were retrained on from scratch last session)
#      while the device-path tests and the precision check (float16 vs float32 on the real frames) run on
#      the GPU;
#   4. default and fast fine-tuned from the shipped weights on the mixed set, side by side, in the time left
#      (their best.pt are scored on CPU under the rule of results/study_gpu/README.md);
#   5. what comes back packed under $OUT.
# Tried first at ci scale on CPU:  SCALE=ci DEVICE=cpu DEADLINE=600 OUT=/tmp/gpu2_try bash results/gpu_session2/run.sh
# On the GPU machine (carry .whl from `bash ../shared/gpu/wheels.sh $PWD/.whl` and .real, holding
# ../shared/data/real as real.tar.xz, 4 MB instead of 12: what travels is limited to 64 MiB):
#   OUT=$OUT bash results/gpu_session2/run.sh
set -uo pipefail
OUT=${OUT:?set OUT}
SCALE=${SCALE:-small}
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-550}    # seconds from the start by which everything is packed
WORK=${WORK:-/tmp/crdetect_gpu2}
REAL=${REAL:-$PWD/.real}
KINDS=elongated=0.3,undersampled=0.2,trailed_sharp=0.1,trailed=0.05,moving=0.05,donut=0.05
mkdir -p "$WORK"
source results/gpu_setup.sh
if [ -f .real/real.tar.xz ] && [ ! -d "$WORK/real" ]; then mkdir -p "$WORK/real" && tar -C "$WORK/real" -xJf .real/real.tar.xz; fi
[ -d "$WORK/real" ] && REAL=$WORK/real

step "predict stage by stage"
for precision in float16 float32; do
  timeout 40 python3 benchmarks/bench_predict_stages.py --device "$DEVICE" --precision $precision \
    --out "$OUT/predict_stages_$precision.txt"
done

step bench_detect
tiles=(0); files=24; repeat=2; [ "$DEVICE" = cpu ] && { tiles=(1024); files=2; repeat=1; }
timeout 150 python3 benchmarks/bench_detect.py --device "$DEVICE" --precision float16 float32 --tile "${tiles[@]}" \
  --files $files --encoders 0 auto --repeat $repeat --out "$OUT/bench_detect_gpu.txt"

step "simulate the mixed set; meanwhile the device-path tests and the precision check on $DEVICE"
python3 -m crdetect simulate --preset "$SCALE" --seeing 0.4 1.6 --bright-galaxies 0 3 --cr-rate-scale 6 40 \
  --kinds "$KINDS" --seed 21 --jobs $(( cpus > 2 ? cpus - 2 : 1 )) --out "$WORK/mix_data" -q &
sim=$!
CRDETECT_TEST_DEVICE=$DEVICE timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_device_path.py 2>&1 | tail -5
[ -d "$REAL" ] && timeout 100 python3 scripts/precision_effect.py --real "$REAL" --device "$DEVICE" \
  --precision float32 float16 > "$OUT/precision_gpu.md"
wait $sim

# what is left, less the packing, is the fine-tuning budget (minutes) of both runs
budget_s=$(( DEADLINE - $(elapsed) - 45 ))
[ $budget_s -lt 30 ] && budget_s=30
budget=$(python3 -c "print(round($budget_s / 60, 2))")
step "fine-tune default and fast from the shipped weights, side by side, $budget min each"
cap=(); [ "$DEVICE" = cpu ] && cap=(--max-train-patches 16 --max-val-patches 8 --epochs 2 --batch-size 8)
jobs=()
for model in default fast; do
  OMP_NUM_THREADS=4 timeout $(( DEADLINE - $(elapsed) - 15 )) python3 -m crdetect train --config configs/$model.yaml \
    --init-from src/crdetect/weights/$model.pt --lr 3e-4 --data "$WORK/mix_data" --device "$DEVICE" \
    --time-budget "$budget" ${cap[@]+"${cap[@]}"} --out "$WORK/finetuned/$model" -q &
  jobs+=($!)
done
wait "${jobs[@]}"  # (a bare wait would also wait for the tee of the log: forever)
for run in "$WORK"/finetuned/*; do echo "$run:"; cat "$run/metrics.csv"; done

step pack
find "$WORK/finetuned" -name last.pt -delete 2>/dev/null
tar -C "$WORK" -czf "$OUT/finetuned.tar.gz" finetuned
ls -l "$OUT"
step done
