#!/usr/bin/env bash
# edge-cluster.sh — emulate a small cluster of edge hosts on ONE Linux machine.
#
# Each "host" is a network namespace (+ its own UTS namespace per process, so it has
# its own hostname); all hosts hang off one Linux bridge that lives in a separate
# "switch" namespace. Every host<->switch link is a veth pair shaped with tc
# (netem rate+delay when the kernel has sch_netem, else tbf rate only), so MPI
# point-to-point messages and one-sided RMA between hosts really cross TCP over
# rate-limited links. This is an EMULATION of edge links: same kernel, same CPUs,
# same /dev/shm — only the network path between hosts is separated and shaped.
#
# The root namespace's networking is never touched: no bridge, veth or address is
# created there. State lives in /run/<prefix>/ and /etc/netns/<prefix>-h*/.
#
# See jobs/README.md ("Emulated edge cluster") for usage and measured behaviour.
set -euo pipefail

PROG=$(basename "$0")

die()  { echo "$PROG: error: $*" >&2; exit 1; }
say()  { echo "[edge-emu] $*"; }
warn() { echo "[edge-emu] WARNING: $*" >&2; }

usage() {
  cat <<EOF
$PROG — emulated edge cluster: N hosts as network namespaces joined by shaped links.

Usage:
  $PROG up N [--rate 1gbit] [--delay 0.2ms] [--prefix odmoe-edge]
             [--subnet 10.213.0] [--shaper auto|netem|tbf|none]
  $PROG down [--prefix odmoe-edge]
  $PROG status [--prefix odmoe-edge]
  $PROG exec [--prefix P] HOST_INDEX -- COMMAND ARGS...
  $PROG fault [--prefix P] HOST_INDEX loss PERCENT | stall | restore
  $PROG drops [--prefix P] HOST_INDEX
  $PROG run  [--prefix P] [--ranks-per-host a,b,c | --np-per-host K]
             [--tls tcp,self | --tls any] [-x VAR[=VALUE]]... [--mca KEY VALUE]...
             [--bind-to none|core|...] [--mpirun-opt ARG]... [--dry-run] -- PROGRAM ARGS...

up      Create hosts <prefix>-h0..h{N-1} (network namespaces) and a switch namespace
        <prefix>-sw with bridge br0. Host i gets interface edge0 = <subnet>.(i+1)/24
        and hostname <prefix>-hi. Each link is shaped in BOTH directions (host egress
        and switch-port egress) at --rate, with --delay one-way per hop (so a
        host-to-host round trip sees 4 x delay). --shaper auto uses netem when the
        kernel has it, else tbf (rate only; the delay is then NOT emulated).
        Fails if the cluster (or any part of it) already exists.
down    Remove everything 'up' created. No error if nothing exists.
status  Show namespaces, addresses, qdiscs and per-link byte counters.
exec    Run COMMAND inside host HOST_INDEX (its netns, own hostname).
fault   Disturb host HOST_INDEX's link, both directions, until 'restore': 'loss P'
        drops P% of packets (netem; where the kernel has no sch_netem, a tail-drop
        queue of two packets instead, which drops most bursts, P ignored); 'stall'
        drops every packet silently (the interfaces stay up, as when a switch or
        radio link stops forwarding); 'restore' gives the link its 'up' shaping
        back.
drops   Packets dropped so far on host HOST_INDEX's link, both directions.
run     Run mpirun inside host 0 across the hosts, N ranks per host as given
        (default 1 per host; --ranks-per-host gives one count per host, 0 allowed;
        ranks are numbered host by host). Uses UCX for pml and osc over TCP only
        (UCX_TLS=tcp,self by default, so UCX cannot use shared memory between the
        emulated hosts; --tls any lets UCX pick, which then uses shared memory
        between hosts, bypassing the shaped links). Ranks are not bound to cores
        (--bind-to none by default: all emulated hosts share the machine's cores, and
        Open MPI's default binding would put rank 0 of every host on core 0). -x,
        --mca and --mpirun-opt (one mpirun word each) are passed to mpirun. The exit
        status is mpirun's. --dry-run prints the command without running it.

Must run as root. Needs: ip, tc (iproute2), unshare (util-linux), mpirun (openmpi-bin).
EOF
}

need_tool() { command -v "$1" >/dev/null 2>&1 || die "required tool '$1' not found (install package: $2)"; }
need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces need CAP_NET_ADMIN/CAP_SYS_ADMIN)"; }

valid_prefix() {
  [[ $1 =~ ^[A-Za-z][A-Za-z0-9-]{0,19}$ ]] ||
    die "bad --prefix '$1' (letters, digits, '-', at most 20 chars, start with a letter)"
}

PREFIX=odmoe-edge
state_dir() { echo "/run/$PREFIX"; }
host_ns()   { echo "$PREFIX-h$1"; }
switch_ns() { echo "$PREFIX-sw"; }
ns_exists() { [[ -e /run/netns/$1 ]]; }

# Run a command in host i: its netns (ip netns exec also remounts /sys for the netns
# and bind-mounts /etc/netns/<ns>/{hosts,hostname}) plus a private UTS namespace
# whose hostname is the host's name, so Open MPI / UCX see distinct node names.
in_host() {
  local i=$1; shift
  local ns; ns=$(host_ns "$i")
  ip netns exec "$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$ns" "$@"
}

# rate string (e.g. 1gbit, 100mbit, 125mbps) -> bits per second (integer)
rate_to_bps() {
  local r=${1,,}
  [[ $r =~ ^([0-9]+)(\.[0-9]+)?([kmgt]?)(bit|bps)?$ ]] || die "cannot parse --rate '$1' (e.g. 1gbit, 100mbit, 10mbps)"
  local num=${BASH_REMATCH[1]}${BASH_REMATCH[2]} pfx=${BASH_REMATCH[3]} unit=${BASH_REMATCH[4]:-bit}
  local mult=1
  case $pfx in k) mult=1000;; m) mult=1000000;; g) mult=1000000000;; t) mult=1000000000000;; esac
  [[ $unit == bps ]] && mult=$((mult * 8))   # tc: "bps" = bytes per second
  awk -v n="$num" -v m="$mult" 'BEGIN { printf "%.0f\n", n * m }'
}

valid_delay() {
  [[ ${1,,} =~ ^[0-9]+(\.[0-9]+)?(s|ms|us|usec|msec|sec)?$ ]] || die "cannot parse --delay '$1' (e.g. 0.2ms, 5ms, 100us)"
}

# ---------------------------------------------------------------- shaping
netem_available() {
  # probe in a throwaway namespace of our own (never the root namespace)
  local probe="$PREFIX-probe"
  ip netns add "$probe" 2>/dev/null || return 1
  local ok=1
  if ip -n "$probe" link add prb0 type veth peer name prb1 2>/dev/null &&
     tc -n "$probe" qdisc add dev prb0 root netem delay 1ms 2>/dev/null; then
    ok=0
  fi
  ip netns del "$probe" 2>/dev/null || true
  return $ok
}

shape_dev() {  # shape_dev NS DEV SHAPER RATE RATE_BPS DELAY
  local ns=$1 dev=$2 shaper=$3 rate=$4 bps=$5 delay=$6
  case $shaper in
    netem)
      # limit: enough packets to hold ~100 ms at the rate (min 1000)
      local lim=$(( bps / 8 / 1500 / 10 )); (( lim < 1000 )) && lim=1000
      tc -n "$ns" qdisc add dev "$dev" root netem rate "$rate" delay "$delay" limit "$lim" ;;
    tbf)
      # burst: ~1 ms at the rate, at least 32 KiB (GSO frames larger than the
      # burst are segmented by tbf); queue up to 100 ms before dropping.
      local burst=$(( bps / 8 / 1000 )); (( burst < 32768 )) && burst=32768
      tc -n "$ns" qdisc add dev "$dev" root tbf rate "$rate" burst "$burst" latency 100ms ;;
    none) ;;
  esac
}

# ---------------------------------------------------------------- up
cmd_up() {
  local n="" rate=1gbit delay=0.2ms subnet=10.213.0 shaper=auto
  while (($#)); do
    case $1 in
      --rate)   rate=${2:?--rate needs a value}; shift 2;;
      --delay)  delay=${2:?--delay needs a value}; shift 2;;
      --prefix) PREFIX=${2:?--prefix needs a value}; shift 2;;
      --subnet) subnet=${2:?--subnet needs a value}; shift 2;;
      --shaper) shaper=${2:?--shaper needs a value}; shift 2;;
      -h|--help) usage; exit 0;;
      -*) die "up: unknown option '$1'";;
      *) [[ -z $n ]] || die "up: unexpected argument '$1'"; n=$1; shift;;
    esac
  done
  [[ -n $n ]] || die "up: number of hosts N is required (e.g. '$PROG up 3')"
  [[ $n =~ ^[0-9]+$ ]] && (( n >= 1 && n <= 250 )) || die "up: N must be an integer in 1..250, got '$n'"
  valid_prefix "$PREFIX"
  [[ $subnet =~ ^10\.([0-9]{1,3})\.([0-9]{1,3})$ ]] && (( BASH_REMATCH[1] < 256 && BASH_REMATCH[2] < 256 )) ||
    die "up: --subnet must be the first three octets of a private 10.x.y network, e.g. 10.213.0"
  local bps; bps=$(rate_to_bps "$rate")
  (( bps >= 8000 )) || die "up: --rate '$rate' is too small"
  valid_delay "$delay"
  case $shaper in auto|netem|tbf|none) ;; *) die "up: --shaper must be auto, netem, tbf or none";; esac
  need_root; need_tool ip iproute2; need_tool tc iproute2; need_tool unshare util-linux

  local sd; sd=$(state_dir)
  [[ -e $sd ]] && die "up: state dir $sd exists — cluster '$PREFIX' is already up (run '$PROG down --prefix $PREFIX' first)"
  local sw; sw=$(switch_ns)
  ns_exists "$sw" && die "up: namespace $sw already exists (run '$PROG down --prefix $PREFIX' first)"
  local i
  for ((i = 0; i < n; i++)); do
    ns_exists "$(host_ns $i)" && die "up: namespace $(host_ns $i) already exists (run '$PROG down --prefix $PREFIX' first)"
  done
  # refuse to shadow a subnet the root namespace already routes
  if ip -4 route show | grep -q "^$subnet\."; then
    die "up: subnet $subnet.0/24 overlaps a route of the root namespace; pick another --subnet"
  fi

  if [[ $shaper == auto ]]; then
    if netem_available; then shaper=netem; else shaper=tbf; fi
  elif [[ $shaper == netem ]] && ! netem_available; then
    die "up: --shaper netem requested but this kernel has no sch_netem (CONFIG_NET_SCH_NETEM); use --shaper tbf"
  fi
  if [[ $shaper == tbf ]]; then
    warn "kernel has no sch_netem: shaping RATE ONLY with tbf; the requested delay $delay is NOT emulated"
  fi

  # from here on, undo partial work on failure
  trap 'echo "$PROG: up failed; cleaning up" >&2; cmd_down --prefix "$PREFIX" >/dev/null 2>&1 || true' ERR

  mkdir -p "$sd"
  cat > "$sd/config" <<EOF
N=$n
SUBNET=$subnet
RATE=$rate
DELAY=$delay
SHAPER=$shaper
EOF
  say "EMULATED edge cluster '$PREFIX': $n hosts on one machine (network namespaces), links shaped: $shaper rate=$rate$([[ $shaper == netem ]] && echo " delay=$delay per hop")"

  ip netns add "$sw"
  ip -n "$sw" link set lo up
  ip -n "$sw" link add br0 type bridge
  ip -n "$sw" link set br0 up
  say "switch namespace $sw: bridge br0"

  # /etc/hosts for every host namespace (ip netns exec bind-mounts /etc/netns/<ns>/*)
  local hosts_body
  hosts_body=$(printf '127.0.0.1\tlocalhost\n'; for ((i = 0; i < n; i++)); do printf '%s.%d\t%s\n' "$subnet" $((i + 1)) "$(host_ns $i)"; done)
  : > "$sd/hostnames"
  for ((i = 0; i < n; i++)); do
    local ns; ns=$(host_ns $i)
    local ip="$subnet.$((i + 1))"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add edge0 type veth peer name "port$i" netns "$sw"
    ip -n "$ns" addr add "$ip/24" dev edge0
    ip -n "$ns" link set edge0 up
    ip -n "$sw" link set "port$i" master br0
    ip -n "$sw" link set "port$i" up
    shape_dev "$ns" edge0 "$shaper" "$rate" "$bps" "$delay"      # host -> switch
    shape_dev "$sw" "port$i" "$shaper" "$rate" "$bps" "$delay"   # switch -> host
    mkdir -p "/etc/netns/$ns"
    printf '%s\n' "$hosts_body" > "/etc/netns/$ns/hosts"
    echo "$ns" > "/etc/netns/$ns/hostname"
    echo "$ns" >> "$sd/hostnames"
    say "host $ns: edge0 $ip/24 <-> $sw:port$i"
  done

  # reachability check: host 0 pings every other host once (if ping is installed)
  if command -v ping >/dev/null 2>&1; then
    for ((i = 1; i < n; i++)); do
      ip netns exec "$(host_ns 0)" ping -c1 -W2 "$subnet.$((i + 1))" >/dev/null 2>&1 ||
        die "up: host 0 cannot reach $subnet.$((i + 1))"
    done
  fi
  trap - ERR
  say "up: done. Run MPI with: $PROG run --prefix $PREFIX --np-per-host 1 -- PROGRAM ARGS"
}

# ---------------------------------------------------------------- down
cmd_down() {
  while (($#)); do
    case $1 in
      --prefix) PREFIX=${2:?--prefix needs a value}; shift 2;;
      -h|--help) usage; exit 0;;
      *) die "down: unknown argument '$1'";;
    esac
  done
  valid_prefix "$PREFIX"
  need_root; need_tool ip iproute2
  local removed=0 ns
  # every namespace named <prefix>-h<digits>, <prefix>-sw or <prefix>-probe
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    if [[ $ns =~ ^${PREFIX}-(h[0-9]+|sw|probe)$ ]]; then
      # kill leftover processes in the namespace (only ours: they live in our netns)
      local pids; pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [[ -n $pids ]] && kill -9 $pids 2>/dev/null || true
      ip netns del "$ns" && removed=$((removed + 1))
    fi
  done
  local d
  for d in /etc/netns/"$PREFIX"-h*; do
    [[ -d $d && $(basename "$d") =~ ^${PREFIX}-h[0-9]+$ ]] && rm -rf -- "$d"
  done
  rmdir /etc/netns 2>/dev/null || true
  rm -rf -- "/run/$PREFIX"
  say "down: removed $removed namespace(s) of emulated edge cluster '$PREFIX'"
}

load_config() {
  local sd; sd=$(state_dir)
  [[ -f $sd/config ]] || die "cluster '$PREFIX' is not up (no $sd/config); run '$PROG up N --prefix $PREFIX' first"
  # shellcheck disable=SC1091
  source "$sd/config"
}

# ---------------------------------------------------------------- status
cmd_status() {
  while (($#)); do
    case $1 in
      --prefix) PREFIX=${2:?--prefix needs a value}; shift 2;;
      *) die "status: unknown argument '$1'";;
    esac
  done
  valid_prefix "$PREFIX"; need_root; need_tool ip iproute2; need_tool tc iproute2
  load_config
  say "EMULATED edge cluster '$PREFIX': N=$N subnet=$SUBNET.0/24 shaper=$SHAPER rate=$RATE delay=$DELAY"
  local i
  for ((i = 0; i < N; i++)); do
    local ns; ns=$(host_ns $i)
    local tx rx
    read -r tx rx <<< "$(link_bytes "$i")"
    printf '  %-20s %-14s rx_bytes=%-14s tx_bytes=%-14s qdisc: %s\n' "$ns" "$SUBNET.$((i + 1))" "$rx" "$tx" \
      "$(tc -n "$ns" qdisc show dev edge0 | head -1)"
  done
}

# ---------------------------------------------------------------- exec
cmd_exec() {
  local idx=""
  while (($#)); do
    case $1 in
      --prefix) PREFIX=${2:?--prefix needs a value}; shift 2;;
      --) shift; break;;
      -*) die "exec: unknown option '$1'";;
      *) [[ -z $idx ]] || die "exec: unexpected argument '$1' (put the command after --)"; idx=$1; shift;;
    esac
  done
  (($#)) || die "exec: no command given (usage: $PROG exec HOST_INDEX -- COMMAND ARGS...)"
  valid_prefix "$PREFIX"; need_root; need_tool ip iproute2; need_tool unshare util-linux
  load_config
  [[ $idx =~ ^[0-9]+$ ]] && (( idx < N )) || die "exec: HOST_INDEX must be 0..$((N - 1)), got '$idx'"
  in_host "$idx" "$@"
}

# ---------------------------------------------------------------- run
cmd_run() {
  local rph="" nph="" tls="tcp,self" dry=0 bind=none
  local -a xenv=() mca=() extra=()
  while (($#)); do
    case $1 in
      --prefix) PREFIX=${2:?--prefix needs a value}; shift 2;;
      --ranks-per-host) rph=${2:?--ranks-per-host needs a value}; shift 2;;
      --np-per-host) nph=${2:?--np-per-host needs a value}; shift 2;;
      --tls) tls=${2:?--tls needs a value}; shift 2;;
      -x) xenv+=("${2:?-x needs VAR or VAR=VALUE}"); shift 2;;
      --mca) mca+=(--mca "${2:?--mca needs KEY VALUE}" "${3:?--mca needs KEY VALUE}"); shift 3;;
      --bind-to) bind=${2:?--bind-to needs a value}; shift 2;;
      --mpirun-opt) extra+=("${2:?--mpirun-opt needs a value}"); shift 2;;
      --dry-run) dry=1; shift;;
      -h|--help) usage; exit 0;;
      --) shift; break;;
      *) die "run: unknown argument '$1' (put the program after --)";;
    esac
  done
  (($#)) || die "run: no program given (usage: $PROG run [options] -- PROGRAM ARGS...)"
  [[ -n $rph && -n $nph ]] && die "run: give either --ranks-per-host or --np-per-host, not both"
  valid_prefix "$PREFIX"; need_root; need_tool ip iproute2; need_tool unshare util-linux
  need_tool mpirun openmpi-bin
  load_config

  local -a counts=()
  local i
  if [[ -n $rph ]]; then
    IFS=, read -r -a counts <<< "$rph"
    (( ${#counts[@]} == N )) || die "run: --ranks-per-host has ${#counts[@]} entries but the cluster has $N hosts"
  else
    nph=${nph:-1}
    for ((i = 0; i < N; i++)); do counts+=("$nph"); done
  fi
  local total=0
  for i in "${counts[@]}"; do
    [[ $i =~ ^[0-9]+$ ]] || die "run: rank counts must be non-negative integers, got '$i'"
    total=$((total + i))
  done
  (( total > 0 )) || die "run: zero ranks requested"

  local sd; sd=$(state_dir)
  # hostfile: ranks are placed host by host (by slot), host i gets counts[i]
  local hf="$sd/hostfile"
  : > "$hf"
  for ((i = 0; i < N; i++)); do
    (( counts[i] > 0 )) && echo "$(host_ns $i) slots=${counts[i]} max_slots=${counts[i]}" >> "$hf"
  done

  # rsh agent: Open MPI calls "AGENT HOST orted-command..." (like ssh: the command
  # words are joined and run by a shell on the remote host). We run them in the
  # host's netns with its own hostname.
  local agent="$sd/rsh-agent.sh"
  cat > "$agent" <<EOF
#!/bin/sh
# generated by $PROG: Open MPI rsh agent for the EMULATED edge cluster '$PREFIX'
host=\$1; shift
case "\$host" in
  $PREFIX-h[0-9]*) ;;
  *) echo "edge-cluster rsh agent: unknown host '\$host' (not part of '$PREFIX')" >&2; exit 255;;
esac
[ -e "/run/netns/\$host" ] || { echo "edge-cluster rsh agent: namespace \$host does not exist" >&2; exit 255; }
exec ip netns exec "\$host" unshare --uts sh -c 'hostname "\$0" && exec sh -c "\$1"' "\$host" "\$*"
EOF
  chmod 755 "$agent"

  # --bind-to none: every emulated host's orted sees ALL cores of the machine and would
  # bind its local rank 0 to core 0 — ranks of different hosts would then share one core.
  local -a cmd=(mpirun --allow-run-as-root --oversubscribe --bind-to "$bind"
    --hostfile "$hf" -np "$total"
    --mca plm_rsh_agent "$agent" --mca plm_rsh_no_tree_spawn 1
    --mca oob_tcp_if_include "$SUBNET.0/24" --mca btl_tcp_if_include "$SUBNET.0/24"
    --mca pml ucx --mca osc ucx --mca pml_ucx_tls any --mca pml_ucx_devices any)
  if [[ $tls != any ]]; then
    cmd+=(-x "UCX_TLS=$tls" -x UCX_NET_DEVICES=edge0)
  fi
  for i in "${xenv[@]}"; do cmd+=(-x "$i"); done
  cmd+=("${mca[@]}" "${extra[@]}")
  cmd+=("$@")

  say "EMULATED edge cluster '$PREFIX' ($SHAPER rate=$RATE$([[ $SHAPER == netem ]] && echo " delay=$DELAY/hop")): $total rank(s), per host: ${counts[*]}"
  say "launching in $(host_ns 0): $(printf '%q ' "${cmd[@]}")"
  (( dry )) && return 0
  local -a before=()
  for ((i = 0; i < N; i++)); do before+=("$(link_bytes "$i")"); done
  local rc=0
  in_host 0 "${cmd[@]}" || rc=$?
  local b_tx b_rx a_tx a_rx
  for ((i = 0; i < N; i++)); do
    read -r b_tx b_rx <<< "${before[i]}"
    read -r a_tx a_rx <<< "$(link_bytes "$i")"
    say "link $(host_ns "$i") edge0 during run: tx $((a_tx - b_tx)) bytes, rx $((a_rx - b_rx)) bytes"
  done
  say "mpirun exit status $rc"
  return $rc
}

# "tx_bytes rx_bytes" of host i's edge0 (the shaped link)
link_bytes() {
  local ns; ns=$(host_ns "$1")
  ip netns exec "$ns" sh -c 'cat /sys/class/net/edge0/statistics/tx_bytes /sys/class/net/edge0/statistics/rx_bytes' | paste -sd' '
}

# ---------------------------------------------------------------- fault
cmd_fault() {
  local idx="" what="" pct=""
  while (($#)); do
    case $1 in
      --prefix) PREFIX=${2:?--prefix needs a value}; shift 2;;
      loss) what=loss; pct=${2:?loss needs a percentage}; shift 2;;
      stall|restore) what=$1; shift;;
      *) [[ -z $idx ]] || die "fault: unexpected argument '$1'"; idx=$1; shift;;
    esac
  done
  valid_prefix "$PREFIX"; need_root; need_tool tc iproute2
  load_config
  [[ $idx =~ ^[0-9]+$ ]] && (( idx < N )) || die "fault: HOST_INDEX must be 0..$((N - 1)), got '$idx'"
  [[ -n $what ]] || die "fault: say loss PERCENT, stall or restore"
  local ns sw; ns=$(host_ns "$idx"); sw=$(switch_ns)
  local -a q
  local desc=""
  case $what in
    loss)
      [[ $pct =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v p="$pct" 'BEGIN { exit !(p > 0 && p <= 100) }' ||
        die "fault: loss needs a percentage in (0, 100], got '$pct'"
      if netem_available; then q=(netem loss "$pct%" rate "$RATE"); desc="netem loss $pct%"
      else
        desc="loss by tail drop behind a two-packet queue (no sch_netem)"
        warn "kernel has no sch_netem: loss is a tail-drop queue of two packets (most bursts lose packets), not ${pct}%"
        q=(tbf rate "$RATE" burst 3028 limit 3028)
      fi;;
    stall) q=(tbf rate 8kbit burst 1600 limit 1); desc="stalled (every packet dropped)";;
    restore)
      tc -n "$ns" qdisc del dev edge0 root 2>/dev/null || true
      tc -n "$sw" qdisc del dev "port$idx" root 2>/dev/null || true
      local bps; bps=$(rate_to_bps "$RATE")
      shape_dev "$ns" edge0 "$SHAPER" "$RATE" "$bps" "$DELAY"
      shape_dev "$sw" "port$idx" "$SHAPER" "$RATE" "$bps" "$DELAY"
      say "fault: host $ns's link restored ($SHAPER rate=$RATE)"
      return 0;;
  esac
  tc -n "$ns" qdisc replace dev edge0 root "${q[@]}"
  tc -n "$sw" qdisc replace dev "port$idx" root "${q[@]}"
  say "fault: host $ns's link: $desc"
}

# drops [--prefix P] HOST_INDEX: packets dropped on host i's link so far, both directions
cmd_drops() {
  local idx=""
  while (($#)); do
    case $1 in
      --prefix) PREFIX=${2:?--prefix needs a value}; shift 2;;
      *) [[ -z $idx ]] || die "drops: unexpected argument '$1'"; idx=$1; shift;;
    esac
  done
  valid_prefix "$PREFIX"; need_root; need_tool tc iproute2
  load_config
  [[ $idx =~ ^[0-9]+$ ]] && (( idx < N )) || die "drops: HOST_INDEX must be 0..$((N - 1)), got '$idx'"
  link_drops "$idx"
}

link_drops() {
  local i=$1 a b
  a=$(tc -s -n "$(host_ns "$i")" qdisc show dev edge0 | sed -n 's/.*dropped \([0-9]*\).*/\1/p' | head -1)
  b=$(tc -s -n "$(switch_ns)" qdisc show dev "port$i" | sed -n 's/.*dropped \([0-9]*\).*/\1/p' | head -1)
  echo $(( ${a:-0} + ${b:-0} ))
}

# ---------------------------------------------------------------- main
(($#)) || { usage >&2; exit 2; }
sub=$1; shift
case $sub in
  up)     cmd_up "$@";;
  down)   cmd_down "$@";;
  status) cmd_status "$@";;
  exec)   cmd_exec "$@";;
  fault)  cmd_fault "$@";;
  drops)  cmd_drops "$@";;
  run)    cmd_run "$@";;
  -h|--help|help) usage;;
  *) echo "$PROG: unknown command '$sub'" >&2; usage >&2; exit 2;;
esac
