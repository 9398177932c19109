#!/usr/bin/env bash
# GPU validation in one command, for a machine with a GPU and torch installed
# (no network needed): build the extension there, run the whole test suite on
# CUDA, run the benchmarks, and write one results file under $OUT (default
# benchmarks/results/local): gpu-validation.json with the GPU, versions, date,
# the test summary and every benchmark figure.
#   bash benchmarks/gpu_validate.sh
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/results/local}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FASTSWIN_CUDA=1 FASTSWIN_REQUIRE_EXTENSION=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ] && export CUDA_HOME=/usr/local/cuda

$PY setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
$PY -m fastswin info
$PY -m pytest tests -q -x --junitxml="$OUT/tests.xml" 2>&1 | tail -25
$PY -m pytest benchmarks -q --benchmark-json="$OUT/pytest-benchmark.json" --benchmark-max-time=0.5 \
  --benchmark-columns=median,iqr,rounds 2>&1 | tail -5
$PY -m fastswin bench --out "$OUT/bench"
$PY benchmarks/collect_results.py "$OUT"
