#!/usr/bin/env bash
# GPU validation in one command and one device call (at most about 8 minutes, every
# step time-limited), with the machine's preinstalled packages (no network needed):
#   1. build the extension for this GPU's architecture only;
#   2. the test suite on compiled kernels: CUDA tensors, bf16 included, GPU-sized cases
#      (the Triton interpreter is not used on a GPU);
#   3. `fastswin check` on the GPU, every backend and dtype;
#   4. op benchmarks, fp16 and bf16, forward and forward+backward, batch 128, Swin-T and SwinV2
#      (window 8 and 16) stages: fastswin vs eager, SDPA with the bias as mask and fastswin's
#      composed path; then the compiled baselines (FlexAttention with a bias score_mod,
#      torch.compile of the reference: a compile per case) at Swin-T stage 1 and SwinV2-T
#      window-16 stage 1 in bf16;
#   5. model throughput (timm eager, timm + torch.compile, patched, patched + compile;
#      inference and train step; Swin-T and SwinV2-T).
# Each step logs to a scratch folder and $OUT/gpu-validation.json (default OUT:
# benchmarks/results/local) is merged again after every step, with the benchmark plots
# beside it (five files in all: a device call returns at most eight), so a run cut short
# still returns what it measured. STEPS picks a subset, e.g. STEPS="build test check".
#   OUT=$OUT bash benchmarks/gpu_validate.sh
# Time limits: build 100 + tests 120 + check 30 + ops 50 + 100 + models 80 = 480 s.
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
  for plot in "$WORK"/bench-*/*.png; do
    [ -e "$plot" ] && cp "$plot" "$OUT/$(basename "$(dirname "$plot")")-$(basename "$plot")"
  done
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
has test && step tests 120 "$PY" -m pytest tests -q $XDIST -p no:cacheprovider --junitxml="$WORK/tests.xml"
has check && step check 30 "$PY" -m fastswin check --device cuda
STAGES=swin_t.s1,swin_t.s2,swin_t.s3,swin_t.s4,swinv2_t.s1,swinv2_t_w16.s1,swinv2_t_w16.s2,swinv2_t_w16.s3
has ops && step ops 50 "$PY" -m fastswin bench --quick --only attention,image --stages "$STAGES" \
  --out "$WORK/bench-ops"
has ops && step ops-compiled 100 "$PY" -m fastswin bench --full --only attention,image --dtype bf16 \
  --stages swin_t.s1,swinv2_t_w16.s1 --out "$WORK/bench-ops-compiled"
has models && step models 80 "$PY" -m fastswin bench --only models --batch 128 \
  --model swin_tiny_patch4_window7_224,swinv2_tiny_window16_256 --out "$WORK/bench-models"
$PY benchmarks/collect_results.py "$WORK" "$OUT/gpu-validation.json"
