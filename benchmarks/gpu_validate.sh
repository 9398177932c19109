#!/usr/bin/env bash
# GPU validation in one command, for a machine with a GPU and torch installed
# (no network needed): build the extension there, run the whole test suite on
# CUDA, run the benchmarks, and write one results file under $OUT (default
# benchmarks/results/local): gpu-validation.json with the GPU, versions, date,
# the test summary and every benchmark figure.
#   bash benchmarks/gpu_validate.sh
# The whole run takes longer than one 10-minute call of a lent machine: run it in
# parts on the warm machine with STEPS (e.g. STEPS="build test", then STEPS="check
# pytest-bench", then STEPS=bench), with the same OUT, and fetch OUT each time.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/results/local}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FASTSWIN_CUDA=1 FASTSWIN_REQUIRE_EXTENSION=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ] && export CUDA_HOME=/usr/local/cuda

STEPS=${STEPS:-build test check pytest-bench bench}  # a subset runs part of it (e.g. on a call time limit)
has() { [[ " $STEPS " == *" $1 "* ]]; }

if has build; then
  $PY setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
fi
$PY -m fastswin info
# The suite, with the CUDA tensors of every device-parametrized test, and the Triton
# kernels in the interpreter as in CI; then the compiled kernels on the GPU, every
# backend and dtype (bf16 and tf32 included) against the reference.
has test && FASTSWIN_TEST_INTERPRET=1 $PY -m pytest tests -q --junitxml="$OUT/tests.xml" 2>&1 | tail -25
has check && $PY -m fastswin check --device cuda 2>&1 | tee "$OUT/check.log" | tail -30
has pytest-bench && $PY -m pytest benchmarks -q --benchmark-json="$OUT/pytest-benchmark.json" \
  --benchmark-max-time=0.5 --benchmark-columns=median,iqr,rounds 2>&1 | tail -5
has bench && $PY -m fastswin bench --out "$OUT/bench"
$PY benchmarks/collect_results.py "$OUT"
