#!/usr/bin/env bash
# GPU validation in one command and one device call (at most about 8 minutes, every
# step time-limited), with the machine's preinstalled packages (no network needed):
#   1. build the extension for this GPU's architecture only;
#   2. the test suite on compiled kernels: CUDA tensors, bf16 included, GPU-sized cases
#      (the Triton interpreter is not used on a GPU);
#   3. `fastswin check` on the GPU, every backend and dtype;
#   4. op benchmarks (fastswin vs eager, SDPA, torch.compile; forward and forward+backward;
#      Swin and SwinV2 stage shapes at batch 128), then model throughput (timm eager,
#      timm + torch.compile, patched, patched + compile; inference and train step).
# Each step logs to a scratch folder and $OUT/gpu-validation.json (default OUT:
# benchmarks/results/local) is merged again after every step, with the benchmark plots
# beside it (three files in all: a device call returns at most eight), so a run cut short
# still returns what it measured. STEPS picks a subset, e.g. STEPS="build test check".
#   OUT=$OUT bash benchmarks/gpu_validate.sh
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/results/local}
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FASTSWIN_CUDA=1 FASTSWIN_REQUIRE_EXTENSION=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ] && export CUDA_HOME=/usr/local/cuda

STEPS=${STEPS:-build test check ops models}
has() { [[ " $STEPS " == *" $1 "* ]]; }

# step NAME SECONDS COMMAND...: run with a time limit, log to $WORK/NAME.log, record the
# exit status and duration in $WORK/steps.log, merge what is there into gpu-validation.json.
step() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "== $name (at most ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $((SECONDS - start)) s" | tee -a "$WORK/steps.log"
  tail -8 "$WORK/$name.log"
  cp "$WORK"/bench-*/*.png "$OUT"/ 2> /dev/null
  $PY benchmarks/collect_results.py "$WORK" "$OUT/gpu-validation.json" > /dev/null 2>&1
  return $rc
}

if has build; then
  ARCH=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || exit 1
  step build 100 env TORCH_CUDA_ARCH_LIST="$ARCH" "$PY" setup.py -q build_ext --inplace || exit 1
fi
$PY -m fastswin info > "$WORK/info.log" 2>&1
# Parallel workers where pytest-xdist is installed: kernel compilation dominates.
XDIST=$($PY -c "import xdist" 2> /dev/null && echo "-n 8")
has test && step tests 150 "$PY" -m pytest tests -q $XDIST -p no:cacheprovider --junitxml="$WORK/tests.xml"
has check && step check 40 "$PY" -m fastswin check --device cuda
has ops && step ops 100 "$PY" -m fastswin bench --only attention,image --out "$WORK/bench-ops"
has models && step models 90 "$PY" -m fastswin bench --only models --batch 128 \
  --model swin_tiny_patch4_window7_224,swinv2_tiny_window16_256 --out "$WORK/bench-models"
$PY benchmarks/collect_results.py "$WORK" "$OUT/gpu-validation.json"
