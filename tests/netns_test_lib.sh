# Sourced by the tests that run jobs across emulated hosts (jobs/edge-cluster.sh). With
# odmoe, weights, src set and PREFIX_BASE naming the test: skips (exit 77) where network
# namespaces cannot be made, else sets cluster, prefix and tmp, and tears both down at exit.
cluster="$src/jobs/edge-cluster.sh"
if [[ $(id -u) -ne 0 ]] || ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
  echo "SKIP: needs root with iproute2 (ip, tc) to create network namespaces"; exit 77
fi
prefix="$PREFIX_BASE$$"
if ! ip netns add "$prefix-probe" 2>/dev/null; then
  echo "SKIP: cannot create network namespaces here"; exit 77
fi
ip netns del "$prefix-probe"
tmp=$(mktemp -d)
cleanup() { bash "$cluster" down --prefix "$prefix" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
