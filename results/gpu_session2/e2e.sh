#!/usr/bin/env bash
# The second, short GPU call of 2026-11-27 (issue #14): crdetect detect end to end on 24 DECam-size files with
# the writer thread encoding (0) and with 2, 4 and 8 encoder threads, after the first call (run.sh) found
# encoder *processes* slower than none (4.5 vs 6.9 CCDs/s). crdetect only; the peers were timed by run.sh.
#   OUT=$OUT bash results/gpu_session2/e2e.sh      (carry .whl)
set -uo pipefail
OUT=${OUT:?set OUT}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-float16}
LOG_NAME=log_e2e.txt source results/gpu_setup.sh
files=24; [ "$DEVICE" = cpu ] && files=3
timeout 150 python3 benchmarks/bench_detect.py --device "$DEVICE" --precision "$PRECISION" --tile 0 --files $files \
  --encoders 0 2 4 8 --repeat 2 --no-peers --out "$OUT/bench_detect_e2e_gpu.txt"
