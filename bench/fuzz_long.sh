#!/usr/bin/env bash
# Long libFuzzer runs of the fuzz targets in tests/fuzz, one after the other (each fuzzer
# uses one core), with a line per target: inputs executed, executions per second, corpus
# growth and findings.
#
#   bench/fuzz_long.sh [--minutes N] [--build DIR] [--out DIR] [TARGET...]
#
#   --minutes N  minutes per target (default 5)
#   --build DIR  the project's build directory (default: build); the libFuzzer binaries are
#                DIR/tests/fuzz/libfuzzer/<target>, built by `cmake --build DIR` where clang++
#                with libFuzzer is installed (Debian: clang libclang-rt-dev)
#   --out DIR    where each target's grown corpus, log and findings go (default: a new
#                directory under ${TMPDIR:-/tmp}); the committed corpus is never changed
#   TARGET       default: all of fuzz_safetensors fuzz_tokenizer_json fuzz_tokenizer_encode
#                fuzz_model_config fuzz_model_dir
#
# A finding stops that target's run (libFuzzer stops at the first one) and is left in
# OUT/<target>/findings/ (crash-*, timeout-*, oom-*, leak-*); replay it with
# `DIR/tests/fuzz/libfuzzer/<target> FILE`. Once fixed, copy the input into
# tests/fuzz/corpus/<target>/ (regress-<what>) so every build replays it. New inputs worth
# keeping can be picked from OUT/<target>/corpus (`<target> -merge=1 NEW_DIR OUT/<target>/corpus`
# keeps the ones that add coverage). Exit status: 1 when any target had a finding.
set -euo pipefail

minutes=5
build=build
out=""
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz_long.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] ||
  targets=(fuzz_safetensors fuzz_tokenizer_json fuzz_tokenizer_encode fuzz_model_config fuzz_model_dir)
root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir="$build/tests/fuzz/libfuzzer"
[ -n "$out" ] || out=$(mktemp -d "${TMPDIR:-/tmp}/odmoe-fuzz-long.XXXXXX")
mkdir -p "$out"
seconds=$((minutes * 60))

echo "fuzz_long: $minutes min per target, binaries in $bin_dir, results in $out"
echo "fuzz_long: revision $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?') on $(hostname), $(nproc) cores; $(clang++ --version 2>/dev/null | head -1)"
printf '%-24s %8s %12s %9s %16s %s\n' target seconds executions exec/s corpus findings
status=0
for t in "${targets[@]}"; do
  fuzzer="$bin_dir/$t"
  if [ ! -x "$fuzzer" ]; then
    echo "fuzz_long: $fuzzer is missing: build with clang++ and libFuzzer installed (cmake --build $build)" >&2
    exit 2
  fi
  dir="$out/$t"
  mkdir -p "$dir/corpus" "$dir/findings"
  cp "$root/tests/fuzz/corpus/$t"/* "$dir/corpus/"
  n_in=$(ls "$dir/corpus" | wc -l)
  start=$(date +%s)
  dict="$root/tests/fuzz/$t.dict"
  dict_option=()
  [ ! -f "$dict" ] || dict_option=(-dict="$dict")
  rc=0
  "$fuzzer" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/findings/" "${dict_option[@]}" "$dir/corpus" >"$dir/log" 2>&1 || rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log")
  found=$(ls "$dir/findings" | wc -l)
  if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
    status=1
    what=$(grep -m1 -E 'ERROR: |fuzz finding:|runtime error:' "$dir/log" || echo "exit status $rc")
    findings="$found: $(ls "$dir/findings" | tr '\n' ' ')($what)"
  else
    findings=0
  fi
  printf '%-24s %8s %12s %9s %16s %s\n' "$t" "$took" "${execs:-?}" "${rate:-?}" \
    "$n_in -> $(ls "$dir/corpus" | wc -l)" "$findings"
done
exit "$status"
