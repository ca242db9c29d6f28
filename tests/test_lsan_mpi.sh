#!/usr/bin/env bash
# AddressSanitizer builds only: odmoe jobs under LeakSanitizer, MPI included. The rest of the
# suite runs its MPI processes with leak detection off; this test turns it on with what LSan
# needs beside Open MPI (whole stacks, no TLS scan, MPI's components kept loaded, and
# tests/lsan.supp for what MPI, OpenMP and HDF5 keep until exit). Any leak fails it.
#
#   test_lsan_mpi.sh ODMOE_BIN ODMOE_WEIGHTS_BIN SOURCE_DIR MPIEXEC
set -euo pipefail
odmoe=$1 weights=$2 src=$3 mpiexec=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0
export LSAN_OPTIONS=use_tls=0:suppressions=$src/tests/lsan.supp
export OMPI_MCA_mca_base_component_disable_dlclose=1 PMIX_MCA_mca_base_component_disable_dlclose=1
x=(-x ASAN_OPTIONS -x LSAN_OPTIONS -x OMPI_MCA_mca_base_component_disable_dlclose -x PMIX_MCA_mca_base_component_disable_dlclose)

"$weights" convert "$src/weights-tools/models/shakespeare-mixtral" "$tmp/m" --shards 2 >/dev/null 2>"$tmp/convert.err" ||
  { cat "$tmp/convert.err"; echo "FAIL: convert"; exit 1; }
printf '%s\n' '"ROMEO:"' '"JULIET:"' '"First Citizen:"' > "$tmp/prompts.jsonl"
check() {  # check NAME COMMAND...
  local name=$1; shift
  if ! "$@" >"$tmp/out" 2>&1 || grep -q "LeakSanitizer" "$tmp/out"; then
    cat "$tmp/out"; echo "FAIL: $name"; exit 1
  fi
  echo "OK: $name, no leak"
}
check "one process, a batch of 3 prompts with the shadow accounted" \
  "$odmoe" generate --model "$tmp/m" --prompts "$tmp/prompts.jsonl" --max-new-tokens 16 --predictor shadow
check "mpirun -np 3, on-demand + shadow" \
  "$mpiexec" --allow-run-as-root --oversubscribe -np 3 "${x[@]}" "$odmoe" generate --model "$tmp/m" \
  --prompts "$tmp/prompts.jsonl" --max-new-tokens 16 --predictor shadow
check "mpirun -np 5, cache + gate-ahead, sharded store" \
  "$mpiexec" --allow-run-as-root --oversubscribe -np 5 "${x[@]}" "$odmoe" generate --model "$tmp/m" \
  --prompt "ROMEO:" --max-new-tokens 16 --mode cache --predictor gate-ahead --placement sharded --replicas 2
