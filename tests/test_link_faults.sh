#!/usr/bin/env bash
# Network faults between emulated hosts (jobs/edge-cluster.sh: network namespaces joined by
# shaped veth links; its 'fault' command disturbs a link). One job over three hosts, expert store sharded one shard per host, so
# pulls and messages cross the link under test, host 2's (both directions):
#   lossy    packets dropped all through the run (netem loss 10% where the kernel has
#            sch_netem, else a tail-drop queue of two packets that drops most bursts):
#            TCP retransmits, the job carries on, tokens and routing equal the single process's;
#   stalled  every packet dropped for 3 s mid-decode, then the link restored: carries on, same
#            tokens;
#   cut      every packet dropped from mid-decode on: a rank's bounded wait fires within
#            --timeout, the error names the host behind the link, and every odmoe process on
#            every host exits (mpirun itself waits on TCP to its lost daemon; the test ends it).
#
#   test_link_faults.sh ODMOE_BIN ODMOE_WEIGHTS_BIN SOURCE_DIR
# Exit 77 (skipped) where namespaces cannot be made (not root, no iproute2).
set -euo pipefail
odmoe=$1 weights=$2 src=$3
PREFIX_BASE=odlf
# shellcheck source=netns_test_lib.sh
source "$src/tests/netns_test_lib.sh"
fail() { echo "FAIL: $*"; exit 1; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

"$weights" convert "$src/weights-tools/models/shakespeare-mixtral" "$tmp/m" --shards 3 >/dev/null
"$odmoe" generate --model "$tmp/m" --prompt "ROMEO:" --max-new-tokens 60 --save-routing "$tmp/single.json" \
  >"$tmp/single.out" 2>&1

bash "$cluster" up 3 --prefix "$prefix" --subnet 10.214.0 --rate 1gbit --shaper tbf >/dev/null
h2="$prefix-h2"
restore()  { bash "$cluster" fault --prefix "$prefix" 2 restore >/dev/null; }
drop_all() { bash "$cluster" fault --prefix "$prefix" 2 stall >/dev/null; }
dropped()  { bash "$cluster" drops --prefix "$prefix" 2; }

# generate across the hosts: rank 0 (main) and 1 on host 0, rank 2 on host 1, rank 3 on host 2.
job() {  # job OUT MAX_NEW TIMEOUT ROUTING
  bash "$cluster" run --prefix "$prefix" --ranks-per-host 2,1,1 -- \
    "$odmoe" generate --model "$tmp/m" --prompt "ROMEO:" --max-new-tokens "$2" --mode on-demand \
    --placement sharded --replicas 1 --verify-pulls --timeout "$3" --save-routing "$4" >"$1" 2>&1
}
same_as_single() {
  python3 - "$tmp/single.json" "$1" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["steps"]
b = json.load(open(sys.argv[2]))["steps"]
assert a == b, "tokens or routing differ from the single-process run"
PY
}
wait_for_text() {  # the generated text (not the launcher's echo of the command) has begun
  for _ in $(seq 600); do grep -q '^ROMEO: ' "$1" 2>/dev/null && return 0; sleep 0.1; done
  cat "$1"; fail "no text within 60 s"
}
odmoe_pids() {  # odmoe processes still alive in the cluster's namespaces
  local ns p
  for ns in "$prefix-h0" "$prefix-h1" "$h2"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do
      [[ $(tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | head -1) == "$odmoe" ]] && echo "$p"
    done
  done
  return 0
}

# --- lossy ---------------------------------------------------------------------------
loss_how=$(bash "$cluster" fault --prefix "$prefix" 2 loss 10 2>/dev/null | sed -n 's/.*link: //p')
before=$(dropped)
t0=$(date +%s.%N)
job "$tmp/lossy.out" 20 60 "$tmp/lossy.json" || { cat "$tmp/lossy.out"; fail "the job over a lossy link failed"; }
lost=$(( $(dropped) - before ))
python3 - "$tmp/single.json" "$tmp/lossy.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["steps"]
b = json.load(open(sys.argv[2]))["steps"]
assert b == a[:len(b)] and len(b) == 20, "tokens or routing over the lossy link differ from the single-process run"
PY
(( lost > 0 )) || fail "the lossy link dropped nothing"
echo "OK lossy ($loss_how): $lost packets dropped on host 2's link, same tokens, $(elapsed "$t0") s"
restore

# --- stalled -------------------------------------------------------------------------
job "$tmp/stall.out" 60 30 "$tmp/stall.json" &
pid=$!
wait_for_text "$tmp/stall.out"
drop_all
sleep 3
restore
rc=0; wait "$pid" || rc=$?
(( rc == 0 )) || { cat "$tmp/stall.out"; fail "the job did not survive a 3 s stall (exit $rc)"; }
same_as_single "$tmp/stall.json"
echo "OK stalled: 3 s without a packet mid-decode, the job carried on with the same tokens"

# --- cut -----------------------------------------------------------------------------
timeout_s=6
job "$tmp/cut.out" 400 "$timeout_s" "$tmp/cut.json" &
pid=$!
wait_for_text "$tmp/cut.out"
drop_all
t0=$(date +%s.%N)
for _ in $(seq 300); do
  [[ -z $(odmoe_pids) ]] && break
  sleep 0.2
done
secs=$(elapsed "$t0")
[[ -z $(odmoe_pids) ]] || { cat "$tmp/cut.out"; fail "odmoe processes still running 60 s after the link was cut"; }
grep -q "timed out after $timeout_s s" "$tmp/cut.out" || { cat "$tmp/cut.out"; fail "no bounded wait fired"; }
grep -q "rank 3 on $h2" "$tmp/cut.out" || { cat "$tmp/cut.out"; fail "the error does not name the host behind the cut link"; }
# Every rank waits at most --timeout for one message (twice: a wait's own bound, then the
# wait of a rank that was waiting on it), plus the launcher bringing the job down.
awk -v s="$secs" -v t="$timeout_s" 'BEGIN { exit !(s < 3 * t + 10) }' ||
  { cat "$tmp/cut.out"; fail "the ranks took $secs s to end after the cut (--timeout $timeout_s)"; }
grep 'error \[' "$tmp/cut.out" | head -3
echo "OK cut: every odmoe process ended ${secs} s after the link was cut (--timeout $timeout_s), naming rank 3 on $h2"
kill "$pid" 2>/dev/null || true
