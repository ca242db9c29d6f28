#!/usr/bin/env bash
# The multi-host path for real: three emulated hosts (network namespaces joined by shaped
# veth links, jobs/edge-cluster.sh), one job across them with the expert store sharded one
# shard per host, so RMA pulls and messages cross TCP between hosts. The tokens and router
# decisions must equal the single-process run's, and the statistics must show pulls from
# other hosts, checked by checksum.
#
#   test_edge_cluster.sh ODMOE_BIN ODMOE_WEIGHTS_BIN SOURCE_DIR
# Exit 77 (skipped) where namespaces cannot be made (not root, no iproute2).
set -euo pipefail
odmoe=$1 weights=$2 src=$3
PREFIX_BASE=odmt
# shellcheck source=netns_test_lib.sh
source "$src/tests/netns_test_lib.sh"

"$weights" convert "$src/weights-tools/models/shakespeare-mixtral" "$tmp/m" --shards 3 >/dev/null
"$odmoe" generate --model "$tmp/m" --prompt "ROMEO:" --max-new-tokens 12 --save-routing "$tmp/single.json" \
  >"$tmp/single.out" 2>&1

bash "$cluster" up 3 --prefix "$prefix" --rate 1gbit --delay 0.2ms
# Rank 0 (main) and rank 1 on host 0, rank 2 on host 1, rank 3 on host 2: each host's
# expert rank holds one shard, so two thirds of every rank's pulls come from other hosts.
bash "$cluster" run --prefix "$prefix" --ranks-per-host 2,1,1 -- \
  "$odmoe" generate --model "$tmp/m" --prompt "ROMEO:" --max-new-tokens 12 --mode on-demand \
  --placement sharded --replicas 1 --verify-pulls --timeout 60 \
  --save-routing "$tmp/dist.json" --stats-json "$tmp/stats.json" >"$tmp/dist.out" 2>&1 || {
  cat "$tmp/dist.out"; echo "FAIL: the job across emulated hosts failed"; exit 1; }
cat "$tmp/dist.out"

python3 - "$tmp" <<'PY'
import json, sys
t = sys.argv[1]
single = json.load(open(f"{t}/single.json"))["steps"]
dist = json.load(open(f"{t}/dist.json"))["steps"]
assert single == dist, "tokens or routing across hosts differ from the single-process run"
s = json.load(open(f"{t}/stats.json"))
assert s["schedule"]["nodes"] == 3, s["schedule"]
hosts = {r.get("host") for r in s["ranks"]}
assert len(hosts) == 3, hosts
workers = s["ranks"][1:]
remote = sum(w["pulls_from_other_nodes"] for w in workers)
assert remote > 0, "no pull crossed hosts"
assert all(w["pulls_verified"] == w["pulls"] for w in workers), "a pull was not verified"
assert all(w["progress_thread"] for w in workers), "store ranks of a multi-node job need the progress thread"
print(f"OK: {len(dist)} steps identical; {remote} of {sum(w['pulls'] for w in workers)} pulls crossed hosts")
PY
