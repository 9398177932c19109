#!/usr/bin/env bash
# GPU validation in two device calls, with the machine's preinstalled packages (no network
# needed), every step time-limited:
#   1. build: the extension for this GPU's architecture only, then a check that an error
#      the C++ code raises reaches Python (a build whose exceptions crash the process is
#      rebuilt with the system's gcc, and both compilers are logged);
#   2. test: the tests that run on the GPU (FASTSWIN_TEST_GPU_ONLY=1, tests/conftest.py):
#      compiled kernels on CUDA tensors, bf16 included, GPU-sized cases (the Triton
#      interpreter is not used on a GPU; CPU CI runs the rest);
#   3. check: `fastswin check` on the GPU, every backend and dtype;
#   4. ops: op benchmarks, fp16 and bf16, forward and forward+backward, batch 128, Swin-T and
#      SwinV2 (window 8 and 16) stages: fastswin vs eager, SDPA with the bias as mask and
#      fastswin's composed path; then the compiled baselines (FlexAttention with a bias
#      score_mod, torch.compile of the reference: a compile per case) at Swin-T stage 1 and
#      SwinV2-T window-16 stage 1 in bf16;
#   5. models: throughput (timm eager, timm + torch.compile, patched, patched + compile;
#      inference and train step; Swin-T and SwinV2-T);
#   host (named only): `fastswin bench --host`, the host time of each call on this host.
# A session has 15 device minutes, the machine's start included: the first call (build,
# test: at most 7.5 minutes) leaves the build and the work folder (build/gpu-validate) on
# the machine, which the second (check, ops, models: at most 6 minutes) reuses if it comes
# while the machine is still warm (30 s):
#   OUT=$OUT bash benchmarks/gpu_validate.sh build test
#   OUT=$OUT bash benchmarks/gpu_validate.sh check ops models
# (no arguments: every step, about 13 minutes, for a machine without a device budget).
# Each step logs to the work folder, and $OUT/gpu-validation.json (default OUT:
# benchmarks/results/local) is merged again after every step, with the benchmark plots
# beside it (five files in all: a device call returns at most eight), so a run cut short
# still returns what it measured. A step past its limit is interrupted (SIGINT): pytest
# still writes its report, and the log says which test it was in.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/results/local}
PY=${PYTHON:-python3}
WORK=build/gpu-validate
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 FASTSWIN_CUDA=1 FASTSWIN_REQUIRE_EXTENSION=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ] && export CUDA_HOME=/usr/local/cuda

STEPS=${*:-${STEPS:-build test check ops models}}
has() { [[ " $STEPS " == *" $1 "* ]]; }

# step NAME SECONDS COMMAND...: run with a time limit, log to $WORK/NAME.log, record the
# exit status and duration in $WORK/steps.log, merge what is there into gpu-validation.json.
step() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "== $name (at most ${limit} s)"
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $((SECONDS - start)) s" | tee -a "$WORK/steps.log"
  tail -8 "$WORK/$name.log"
  for plot in "$WORK"/bench-*/*.png; do
    [ -e "$plot" ] && cp "$plot" "$OUT/$(basename "$(dirname "$plot")")-$(basename "$plot")"
  done
  $PY benchmarks/collect_results.py "$WORK" "$OUT/gpu-validation.json" > /dev/null 2>&1
  return $rc
}

# An error the extension raises must reach Python as a RuntimeError (a bad argument of
# the CPU attention op); a build whose C++ exceptions crash the process fails this.
ERRORS_REACH_PYTHON='import torch, fastswin
q = torch.ones(1, 1, 4, 4)
try:
    torch.ops.fastswin.window_attention_cpu(q, q[:, :, :3], q, None, None, None, 1.0)
except RuntimeError as error:
    print("a C++ error reached Python:", str(error).splitlines()[0])
else:
    raise SystemExit("the op took a bad argument")'

# step NAME SECONDS build [VAR=VALUE...]: the extension for this GPU's architecture only,
# with the compilers the variables name.
build() {
  rm -rf build/temp.* fastswin/_C*.so
  env "$@" TORCH_CUDA_ARCH_LIST="$ARCH" "$PY" setup.py -q build_ext --inplace
}
export -f build
export PY

if has build; then
  rm -rf "${WORK:?}"/*
  ARCH=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || exit 1
  export ARCH
  { echo "CC=${CC:-} CXX=${CXX:-}"
    for c in "${CXX:-c++}" /usr/bin/g++; do echo "$c: $($c --version | head -1)"; done
    $PY -c "import torch; print(torch.__config__.show())" | grep -i -m2 'gcc\|compiler'; } > "$WORK/compilers.log" 2>&1
  step build 120 bash -c build || exit 1
  if ! step errors 60 "$PY" -c "$ERRORS_REACH_PYTHON" && [ -x /usr/bin/g++ ]; then
    step build-system-gcc 120 bash -c 'build CC=/usr/bin/gcc CXX=/usr/bin/g++' || exit 1
    step errors-system-gcc 60 "$PY" -c "$ERRORS_REACH_PYTHON"
  fi
fi
$PY -m fastswin info > "$WORK/info.log" 2>&1
# Parallel workers where pytest-xdist is installed: kernel compilation dominates.
XDIST=$($PY -c "import xdist" 2> /dev/null && echo "-n 8")
has test && step tests 330 env FASTSWIN_TEST_GPU_ONLY=1 "$PY" -m pytest tests -q -rfE --tb=line $XDIST \
  -p no:cacheprovider --junitxml="$WORK/tests.xml"
has check && step check 60 "$PY" -m fastswin check --device cuda
STAGES=swin_t.s1,swin_t.s2,swin_t.s3,swin_t.s4,swinv2_t.s1,swinv2_t_w16.s1,swinv2_t_w16.s2,swinv2_t_w16.s3
has ops && step ops 120 "$PY" -m fastswin bench --quick --only attention,image --stages "$STAGES" \
  --out "$WORK/bench-ops"
has ops && step ops-compiled 90 "$PY" -m fastswin bench --full --only attention,image --dtype bf16 \
  --stages swin_t.s1,swinv2_t_w16.s1 --out "$WORK/bench-ops-compiled"
has models && step models 80 "$PY" -m fastswin bench --only models --batch 128 \
  --model swin_tiny_patch4_window7_224,swinv2_tiny_window16_256 --out "$WORK/bench-models"
# Host time on this machine's host, kernels stubbed (a stand-in driver in a process of its own;
# benchmarks/PREDICTIONS-host-time.md): not in the default steps, ~1 minute.
has host && step host 120 "$PY" -m fastswin bench --host
$PY benchmarks/collect_results.py "$WORK" "$OUT/gpu-validation.json"
