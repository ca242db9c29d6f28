#!/usr/bin/env bash
# One bounded libFuzzer run, as a test: run_libfuzzer.sh FUZZER CORPUS_DIR SECONDS FINDINGS_DIR [DICT]
#
# The fuzzer starts from a copy of the committed corpus (new inputs it finds go to the copy,
# so the source tree never changes) and runs for SECONDS with ASan+UBSan. Any crash, leak,
# sanitizer report, input slower than 25 s or allocation over 2 GiB fails the test; libFuzzer
# writes the input that did it to FINDINGS_DIR (crash-*, timeout-*, oom-*), to be replayed
# with `FUZZER FILE` and, once fixed, added to the corpus.
set -euo pipefail
fuzzer=$1 corpus=$2 seconds=$3 findings=$4 dict=${5:-}
name=$(basename "$fuzzer")
work=$(mktemp -d "${TMPDIR:-/tmp}/odmoe-$name.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$findings"
cp "$corpus"/* "$work/corpus/"

options=(-max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1
         -artifact_prefix="$findings/$name-")
[ -z "$dict" ] || options+=(-dict="$dict")
rc=0
"$fuzzer" "${options[@]}" "$work/corpus" >"$work/log" 2>&1 || rc=$?

# The numbers, whatever happened; the end of the log when it failed.
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
echo "$name: ${execs:-?} inputs run in ${seconds} s, corpus $(ls "$corpus" | wc -l) -> $(ls "$work/corpus" | wc -l) inputs"
grep -E '^(stat::|Done )' "$work/log" || true
if [ "$rc" -ne 0 ]; then
  cp "$work/log" "$findings/$name.log"
  tail -n 80 "$work/log"
  echo "$name: FINDING (libFuzzer exit status $rc); the input is in $findings, the log in $findings/$name.log"
  exit 1
fi
echo "$name: no finding"
