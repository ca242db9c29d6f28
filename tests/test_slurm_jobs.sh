#!/usr/bin/env bash
# The Slurm batch jobs (jobs/*.sbatch) under a real Slurm: a private slurmctld and slurmd
# on this machine, configured in a temporary directory that holds all their state, logs and
# pid files, on free ports. The bundled model is converted, jobs/generate.sbatch runs as a
# 3-rank MPI job (srun --mpi=pmix; mpirun; srun with the UCX settings of multi-node jobs), and
# its log must show the environment it ran in and the same text as the single-process run;
# jobs/bench.sbatch runs a small sweep and must leave its JSON, Table 2 and plots. A job with
# a missing model directory must end FAILED with the error in its log. The daemons are stopped with scontrol shutdown;
# whatever is left is killed by pid at exit.
#
#   test_slurm_jobs.sh ODMOE_BIN ODMOE_WEIGHTS_BIN SOURCE_DIR [PYTHON (with matplotlib, for the report)]
# Exit 77 (skipped) when not root or when Slurm (package slurm-wlm) is not installed.
set -euo pipefail
odmoe=$(realpath "$1") weights=$(realpath "$2") src=$(realpath "$3") python=${4:-python3}
PATH=$PATH:/usr/sbin:/sbin

skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root (slurmd runs the jobs; auth/none)"
for t in slurmctld slurmd sbatch srun scontrol squeue sinfo scancel python3; do
  command -v "$t" >/dev/null || skip "$t not found (install slurm-wlm: bash .ci/install-deps)"
done

# Nothing from a surrounding Slurm job may leak into the private cluster's commands.
while read -r v; do
  case $v in SLURM_* | SBATCH_* | SALLOC_* | SRUN_*) unset "$v" ;; esac
done < <(compgen -e)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/odmoe-slurm-test.XXXXXX")
conf=$tmp/slurm.conf
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/log" "$tmp/run" "$tmp/tmpfs" "$tmp/jobs"
export SLURM_CONF=$conf
daemon_pids=()

# Processes of this cluster: the daemons and everything they started carry SLURM_CONF=$conf
# (a path unique to this run) in their environment. This shell does not: it set it later.
ours() {
  local -a e
  local x
  mapfile -d '' -t e 2>/dev/null <"/proc/$1/environ" || return 1
  for x in "${e[@]}"; do [[ $x == "SLURM_CONF=$conf" ]] && return 0; done
  return 1
}
cluster_pids() {
  local d
  for d in /proc/[0-9]*; do
    [[ ${d#/proc/} != "$$" && ${d#/proc/} != "$BASHPID" ]] || continue
    ours "${d#/proc/}" && echo "${d#/proc/}"
  done
  return 0
}
daemons_alive() {
  local p
  for p in "${daemon_pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done
  return 1
}
show_logs() {
  local f
  for f in "$tmp"/log/*; do
    [ -s "$f" ] || continue
    echo "---- $(basename "$f") (last 40 lines)"
    tail -n 40 "$f"
  done
}
cleanup() {
  local rc=$? i p
  local -a left
  set +e
  if daemons_alive; then
    # Cancel what is still queued or running, then stop both daemons.
    mapfile -t left < <(timeout 10 squeue -h -o %i 2>/dev/null)
    [ ${#left[@]} -eq 0 ] || timeout 10 scancel "${left[@]}" 2>/dev/null
    timeout 10 scontrol shutdown >/dev/null 2>&1
    for ((i = 0; i < 40; i++)); do daemons_alive || break; sleep 0.25; done
  fi
  for p in "$tmp"/run/*.pid; do [ -f "$p" ] && daemon_pids+=("$(cat "$p")"); done
  mapfile -t left < <(cluster_pids)
  for p in "${daemon_pids[@]}" "${left[@]}"; do
    if ours "$p"; then # (a pid from a pid file may since belong to another process)
      echo "cleanup: killing left-over process $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null))" >&2
      kill -KILL "$p" 2>/dev/null
    fi
  done
  wait 2>/dev/null
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP
fail() {
  {
    echo "FAIL: $*"
    show_logs
  } >&2
  exit 1
}

# --- a one-node cluster: this machine as node "localhost", with its real CPUs and memory.
read -r ctld_port slurmd_port < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)
hw=$(slurmd -C 2>/dev/null | head -n 1 | sed -n 's/^NodeName=[^ ]* //p')
[ -n "$hw" ] || hw="CPUs=$(nproc)"
cat >"$conf" <<EOF
ClusterName=odmoetest
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
# One machine, root only: no munge.
AuthType=auth/none
CredType=cred/none
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
# Whole nodes per job; --overcommit then lets a job run more tasks than the node has CPUs.
SelectType=select/linear
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
TmpFS=$tmp/tmpfs
SlurmctldPidFile=$tmp/run/slurmctld.pid
SlurmdPidFile=$tmp/run/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
NodeName=localhost $hw State=UNKNOWN
PartitionName=odmoe Nodes=localhost Default=YES MaxTime=10 State=UP
EOF
echo "slurm: controller port $ctld_port, slurmd port $slurmd_port, node: $hw"

slurmctld -D </dev/null >"$tmp/log/slurmctld.stderr" 2>&1 &
daemon_pids+=($!)
slurmd -D -N localhost </dev/null >"$tmp/log/slurmd.stderr" 2>&1 &
daemon_pids+=($!)
state=
for ((i = 0; i < 120; i++)); do
  state=$(timeout 5 sinfo -h -N -o %T 2>/dev/null | head -n 1) || true
  [ "$state" = idle ] && break
  for p in "${daemon_pids[@]}"; do kill -0 "$p" 2>/dev/null || fail "a Slurm daemon exited at start-up"; done
  sleep 0.25
done
[ "$state" = idle ] || fail "node not idle 30 s after start (state: '${state:-none}')"

# --- the model, and the reference: the single-process run.
"$weights" convert "$src/weights-tools/models/shakespeare-mixtral" "$tmp/model" --shadow int8 >/dev/null
prompt="First Citizen:"
gen_opts=(--max-new-tokens 24 --temperature 0)
"$odmoe" generate --model "$tmp/model" --prompt "$prompt" "${gen_opts[@]}" >"$tmp/single.out" 2>"$tmp/single.err" ||
  { cat "$tmp/single.err"; fail "the single-process run failed"; }

bash -n "$src/jobs/generate.sbatch" || fail "jobs/generate.sbatch: syntax"
bash -n "$src/jobs/bench.sbatch" || fail "jobs/bench.sbatch: syntax"

# --- jobs: 3 ranks (main + 2 expert ranks) on the one node, more than its CPUs.
submit() { # submit NAME [VAR=VALUE...] -- SCRIPT ARGS...
  local name=$1 out
  shift
  local -a vars=()
  while [ "$1" != -- ]; do vars+=("$1"); shift; done
  shift
  out=$(env "${vars[@]}" ODMOE_REPO="$src" ODMOE_BIN="$(dirname "$odmoe")" \
    sbatch --parsable --job-name="$name" --chdir="$tmp/jobs" --ntasks-per-node=3 --overcommit \
    --time=5 --output="$tmp/jobs/%x-%j.out" --error="$tmp/jobs/%x-%j.err" "$@") || fail "sbatch $name failed"
  echo "${out%%;*}"
}
job_field() { timeout 10 scontrol show job -o "$1" 2>/dev/null | grep -o "\b$2=[^ ]*" | head -n 1 | cut -d= -f2-; }
wait_job() { # wait_job ID: until it ended (at most 120 s); sets state and code
  local i
  for ((i = 0; i < 480; i++)); do
    state=$(job_field "$1" JobState)
    case $state in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED)
        code=$(job_field "$1" ExitCode)
        return
        ;;
    esac
    sleep 0.25
  done
  timeout 10 scontrol show job "$1"
  fail "job $1 did not end within 120 s (state ${state:-unknown})"
}

# The failing job first: the step its ranks aborted can keep a slurmstepd ~10 s longer, which
# then overlaps the other jobs instead of delaying the shutdown.
bad_job=$(submit gen-bad -- "$src/jobs/generate.sbatch" "$tmp/no-such-model" "$prompt" "${gen_opts[@]}" --timeout 30)
srun_job=$(submit gen-srun -- "$src/jobs/generate.sbatch" "$tmp/model" "$prompt" "${gen_opts[@]}" \
  --mode on-demand --predictor shadow --timeout 30)
mpirun_job=$(submit gen-mpirun ODMOE_LAUNCHER=mpirun -- "$src/jobs/generate.sbatch" "$tmp/model" "$prompt" \
  "${gen_opts[@]}" --mode on-demand --predictor none --timeout 30)
ucx_job=$(submit gen-ucx ODMOE_UCX=on -- "$src/jobs/generate.sbatch" "$tmp/model" "$prompt" "${gen_opts[@]}" \
  --mode on-demand --predictor shadow --timeout 30)
bench_job=$(submit bench ODMOE_PYTHON="$python" -- "$src/jobs/bench.sbatch" "$tmp/model" "$tmp/bench-out" \
  --runs resident,on-demand/shadow --groups 1 --input-len 8 --output-len 4 --prompts-per-case 1 --timeout 30)
echo "submitted jobs $bad_job (missing model), $srun_job (srun), $mpirun_job (mpirun)," \
  "$ucx_job (srun, UCX as for multi-node jobs), $bench_job (bench sweep)"

host=$(hostname)
rev=$(git -C "$src" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
check_good_job() { # check_good_job ID NAME LAUNCHER
  local id=$1 log=$tmp/jobs/$2-$1.out err=$tmp/jobs/$2-$1.err r
  wait_job "$id"
  echo "==== job $id ($2): $state, exit code $code"
  cat "$log"
  if [ "$state" != COMPLETED ] || [ "$code" != 0:0 ]; then
    cat "$err"
    fail "job $id ($2) ended $state ($code)"
  fi
  grep -qx "   job id: $id" "$log" || fail "job $id: no job id line"
  grep -q "^   git revision: $rev" "$log" || fail "job $id: no git revision line with $rev"
  grep -q "^   MPI: mpirun (Open MPI) " "$log" || fail "job $id: no MPI version line"
  grep -q "^   launcher: $3 " "$log" || fail "job $id: not launched with $3"
  grep -q "^   binary: $(dirname "$odmoe")/odmoe$" "$log" || fail "job $id: no binary line"
  for r in 0 1 2; do
    grep -qx "     rank $r: localhost / $host" "$log" || fail "job $id: no host line for rank $r"
  done
  python3 - "$log" "$tmp/single.out" "$tmp/jobs/$2-$1.stats.json" <<'PY' || fail "job $id: output or statistics"
import json, sys
log, single, stats = open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3]
begin, end = "== odmoe generate output\n", "== odmoe generate finished: exit status 0"
assert begin in log and end in log, "no output markers"
text = log.split(begin, 1)[1].split(end, 1)[0]
assert text == single, f"the job's text differs from the single-process run:\n{text!r}\n{single!r}"
s = json.load(open(stats))
assert len(s["ranks"]) == 3, f"{len(s['ranks'])} ranks in the statistics"
assert s["generated_tokens"] == 24, s["generated_tokens"]
print(f"OK: same text as the single process, statistics of {len(s['ranks'])} ranks in {stats.rsplit('/', 1)[1]}")
PY
}
check_good_job "$srun_job" gen-srun "srun --mpi=pmix"
check_good_job "$mpirun_job" gen-mpirun "mpirun -np 3"
check_good_job "$ucx_job" gen-ucx "srun --mpi=pmix"
grep -q "^   MPI transport: UCX (OMPI_MCA_pml=ucx OMPI_MCA_osc=ucx" "$tmp/jobs/gen-ucx-$ucx_job.out" ||
  fail "job $ucx_job: ODMOE_UCX=on did not select UCX"

wait_job "$bench_job"
echo "==== job $bench_job (bench): $state, exit code $code"
cat "$tmp/jobs/bench-$bench_job.out"
if [ "$state" != COMPLETED ] || [ "$code" != 0:0 ]; then
  cat "$tmp/jobs/bench-$bench_job.err"
  fail "job $bench_job (bench) ended $state ($code)"
fi
grep -qx "   job id: $bench_job" "$tmp/bench-out/job.txt" || fail "job $bench_job: no job id in job.txt"
python3 - "$tmp/bench-out" <<'PY' || fail "job $bench_job: bench results"
import json, os, sys
d = sys.argv[1]
runs = json.load(open(os.path.join(d, "bench.json")))["runs"]
assert [r["name"] for r in runs] == ["resident", "on-demand/shadow"], [r["name"] for r in runs]
assert all(len(r["per_prompt"][0]["tokens"]) == 4 for r in runs)
assert runs[1]["tokens_match_reference"] is True
md = open(os.path.join(d, "bench.md")).read()
assert "| on-demand/shadow | 1 |" in md, md
for png in ("bench-speed-memory.png",):
    assert open(os.path.join(d, png), "rb").read(8) == b"\x89PNG\r\n\x1a\n", png
print("OK: the bench sweep wrote its JSON, Table 2 and plots")
PY

wait_job "$bad_job"
echo "==== job $bad_job (gen-bad): $state, exit code $code"
cat "$tmp/jobs/gen-bad-$bad_job.err"
[ "$state" = FAILED ] || fail "job $bad_job with a missing model ended $state, not FAILED"
grep -q "error.*$tmp/no-such-model" "$tmp/jobs/gen-bad-$bad_job.err" ||
  fail "job $bad_job: no error naming the missing model directory in its log"
grep -q "^== odmoe generate finished: exit status [1-9]" "$tmp/jobs/gen-bad-$bad_job.out" ||
  fail "job $bad_job: no non-zero exit status in its log"

# --- stop: the daemons must exit on their own.
timeout 10 scontrol shutdown || fail "scontrol shutdown failed"
for ((i = 0; i < 240; i++)); do daemons_alive || break; sleep 0.25; done
daemons_alive && fail "Slurm daemons still running 60 s after scontrol shutdown"
wait "${daemon_pids[@]}" 2>/dev/null || true
remaining=$(cluster_pids)
[ -z "$remaining" ] || fail "processes of the test cluster left after shutdown: $remaining"
echo "OK: Slurm jobs: srun and mpirun runs match the single process; the bench sweep reports; a bad job fails; Slurm stopped cleanly"
