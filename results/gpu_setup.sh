# Sourced by the GPU session scripts (results/*/run.sh): the log under $OUT, step timing, and the wheels
# crdetect needs beyond the GPU image (carried in .whl, built by `bash ../shared/gpu/wheels.sh $PWD/.whl`).
# Needs OUT and DEVICE; sets started, cpus, PYTHONPATH and the functions elapsed and step.
mkdir -p "$OUT"
exec > >(tee -a "$OUT/${LOG_NAME:-log.txt}") 2>&1
export PYTHONUNBUFFERED=1
started=$SECONDS
elapsed() { echo $((SECONDS - started)); }
step() { echo "== $1 at $(elapsed) s"; }
cpus=$(nproc)

step install
if [ -d .whl ] && ! python3 -c "import astropy, galsim" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src:$PWD/tests
python3 -c "import torch, crdetect; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'crdetect', crdetect.__version__)"
if [ "$DEVICE" = cuda ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
