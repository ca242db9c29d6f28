#!/usr/bin/env bash
# The GPU check: everything this repository can verify on a machine with an NVIDIA GPU, in one
# run of at most 8 minutes, with every log and figure under one results folder.
#
#   bench/gpu_check.sh [RESULTS_DIR]      (default: bench/results/gpu-<UTC date-time>)
#
# Needs: the repository checked out with the build dependencies of a normal build (CMake, a C++
# compiler, MPI, HDF5, Boost, GTest, ...), the CUDA toolkit (nvcc, compute-sanitizer), a GPU
# and its driver. No network. Steps, each under its own time limit (and the overall budget):
#   env          nvidia-smi -q, the commit, toolkit and compiler versions
#   configure    CMake with CUDA for this GPU's architecture only (build-gpu/)
#   build        the CUDA library, the gpu-labelled tests and the GPU benchmark, all cores
#   ctest        ctest -L gpu: every CUDA op against the CPU oracle (a skip here is a failure:
#                the machine has a GPU)
#   memcheck     the same test binaries under compute-sanitizer --tool memcheck
#   racecheck    the shared-memory kernels (attention, RMSNorm) under --tool racecheck
#   bench        odmoe-bench-gpu-ops: GEMV GB/s per dtype against the DRAM peak, GEMM,
#                attention, host->device copies (JSON)
#   logits, resident, on-demand: not built yet (placeholders that say so)
# Exit status: 0 when every step that exists passed, 1 otherwise. The summary is printed and
# written to RESULTS_DIR/summary.txt.
set -uo pipefail

BUDGET_S=${ODMOE_GPU_CHECK_BUDGET_S:-470}  # 8 minutes with a margin for the summary
T0=$(date +%s)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$REPO/bench/results/gpu-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT" || { echo "gpu_check: cannot create $OUT" >&2; exit 1; }
OUT=$(cd "$OUT" && pwd)
BUILD=${ODMOE_GPU_BUILD_DIR:-$REPO/build-gpu}
JOBS=$(nproc 2>/dev/null || echo 4)
export PATH="/usr/local/cuda/bin:/usr/local/cuda/compute-sanitizer:$PATH"
cd "$REPO" || exit 1

SUMMARY=()
FAILED=0

# step NAME LIMIT_S COMMAND...: runs COMMAND with its output in $OUT/NAME.log, under
# min(LIMIT_S, what is left of the budget); records status and seconds for the summary.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - T0)))
  if ((left < 15)); then
    SUMMARY+=("$(printf '%-12s %-34s %5s' "$name" "NOT RUN (time budget spent)" "-")")
    FAILED=1
    return 1
  fi
  ((limit > left)) && limit=$left
  echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/steps.log"
  local t rc
  t=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  local dt=$(($(date +%s) - t)) status="ok"
  if ((rc == 124 || rc == 137)); then
    status="TIMEOUT after ${limit}s"
  elif ((rc != 0)); then
    status="FAIL (exit $rc)"
  fi
  [[ $status == ok ]] || FAILED=1
  SUMMARY+=("$(printf '%-12s %-34s %5ss  %s' "$name" "$status" "$dt" "$name.log")")
  tail -n 3 "$OUT/$name.log" | sed 's/^/   /'
  return $rc
}

placeholder() {  # a check the repository cannot run yet: said, never faked
  echo "== $1: not built yet ($2)" | tee -a "$OUT/steps.log"
  SUMMARY+=("$(printf '%-12s %-34s %5s  %s' "$1" "not built yet" "-" "$2")")
}

# ---------------------------------------------------------------------------------------
# env
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(hostname)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "branch: $(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)"
  echo "dirty files: $(git status --porcelain 2>/dev/null | wc -l)"
  echo "kernel: $(uname -srm)"
  echo "cpus: $JOBS"
} >"$OUT/commit.txt"
git status --porcelain >>"$OUT/commit.txt" 2>/dev/null
nvidia-smi -q >"$OUT/nvidia-smi-q.txt" 2>&1
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
{
  nvcc --version
  cmake --version | head -1
  c++ --version | head -1
  compute-sanitizer --version 2>/dev/null | head -2
  lscpu 2>/dev/null | grep -E "Model name|^CPU\(s\)"
  free -g
} >"$OUT/versions.txt" 2>&1
CC_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
if [[ -z $CC_CAP && -n ${ODMOE_GPU_CHECK_ARCH:-} ]]; then
  # A dry run of this script on a machine without a GPU (e.g. ODMOE_GPU_CHECK_ARCH=90): it
  # builds, the tests skip, and the result says FAIL because they did.
  CC_CAP=$ODMOE_GPU_CHECK_ARCH
  GPU_NAME="no GPU (dry run)"
fi
if [[ -z $CC_CAP ]]; then
  echo "gpu_check: nvidia-smi reports no GPU; the tests would only skip" | tee "$OUT/summary.txt"
  exit 1
fi
ARCH=$CC_CAP
echo "gpu_check: $GPU_NAME (sm_$ARCH), $JOBS cores, results in $OUT"

# ---------------------------------------------------------------------------------------
# configure + build
LAUNCHER=()
if command -v ccache >/dev/null; then
  LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
TARGETS=(odmoe_cuda test_cuda_dequant test_cuda_ops odmoe-bench-gpu-ops)
if step configure 120 cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DODMOE_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCH" "${LAUNCHER[@]}" &&
  step build 300 cmake --build "$BUILD" -j "$JOBS" --target "${TARGETS[@]}"; then
  BUILT=1
else
  BUILT=0
fi

# ---------------------------------------------------------------------------------------
# tests
GPU_TESTS=(test_cuda_dequant test_cuda_ops)
if ((BUILT)); then
  step ctest 120 ctest --test-dir "$BUILD" -L gpu --output-on-failure --output-junit "$OUT/ctest-gpu.xml"
  # A skipped gpu test on a machine with a GPU means the test could not see it: a failure.
  SKIPPED=$(grep -c "(Skipped)$" "$OUT/ctest.log" 2>/dev/null)
  SKIPPED=${SKIPPED:-0}
  if ((SKIPPED > 0)); then
    SUMMARY+=("$(printf '%-12s %-34s %5s  %s' "skips" "FAIL ($SKIPPED gpu tests skipped)" "-" "ctest.log")")
    FAILED=1
  fi
  if command -v compute-sanitizer >/dev/null; then
    # shellcheck disable=SC2016  # expanded by the inner bash
    step memcheck 180 bash -c 'rc=0
      for t in "${@:3}"; do
        echo "--- $t"
        compute-sanitizer --tool memcheck --error-exitcode 3 "$1/tests/$t" --gtest_brief=1 \
          --gtest_output="json:$2/memcheck-$t.json" || rc=1
      done
      exit $rc' memcheck "$BUILD" "$OUT" "${GPU_TESTS[@]}"
    # racecheck is slow: the kernels with shared memory only.
    step racecheck 120 compute-sanitizer --tool racecheck --error-exitcode 3 "$BUILD/tests/test_cuda_ops" --gtest_brief=1 \
      --gtest_filter='CudaOps.AttentionPrefill*:CudaOps.AttentionDecode*:CudaOps.RmsNorm*'
  else
    SUMMARY+=("$(printf '%-12s %-34s %5s' "sanitizer" "NOT RUN (no compute-sanitizer)" "-")")
    FAILED=1
  fi
  step bench 120 "$BUILD/bin/odmoe-bench-gpu-ops" --json "$OUT/gpu_bench_ops.json"
fi

# ---------------------------------------------------------------------------------------
# What later steps of the CUDA backend will add here (they do not exist yet).
placeholder logits "whole-model logits and greedy tokens on CUDA vs the CPU, 4 architectures"
placeholder resident "odmoe bench resident on the GPU: HBM GB/s vs peak (OLMoE shapes, bf16)"
placeholder on-demand "on-demand vs resident on the GPU, 1 main + 4 expert ranks under 1 GB each"

# ---------------------------------------------------------------------------------------
{
  echo "# gpu_check $(date -u +%FT%TZ): $GPU_NAME (sm_$ARCH), commit $(git rev-parse --short HEAD 2>/dev/null)"
  echo "# results: $OUT; total $(($(date +%s) - T0)) s of a ${BUDGET_S} s budget"
  printf '%-12s %-34s %6s  %s\n' "step" "status" "time" "log"
  for line in "${SUMMARY[@]}"; do echo "$line"; done
  if [[ -f $OUT/ctest.log ]]; then
    echo "# ctest: $(grep -E 'tests passed|tests failed' "$OUT/ctest.log" | tail -1)"
  fi
  if [[ -f $OUT/bench.log ]]; then
    echo "# GEMV at one token (GB/s best, % of the DRAM peak):"
    grep -E "^ +gemv .* 1 " "$OUT/bench.log" 2>/dev/null | awk '{printf "#   %s\n", $0}'
    grep -E "^ +h2d" "$OUT/bench.log" 2>/dev/null | awk '{printf "#   %s\n", $0}'
  fi
  ((FAILED)) && echo "# RESULT: FAIL" || echo "# RESULT: ok"
} | tee "$OUT/summary.txt"
exit $FAILED
