# shellcheck shell=bash
# Shared by the odmoe Slurm jobs (generate.sbatch, bench.sbatch): where things are, what the
# job runs on, and how its MPI ranks are launched. Sourced, not run:
#
#   repo=${ODMOE_REPO:-${SLURM_SUBMIT_DIR:-$(pwd)}}
#   source "$repo/jobs/lib/job_env.sh"
#
# Settings (environment variables; sbatch passes the submitting shell's environment on):
#   ODMOE_REPO        the odmoe source tree (default: the directory sbatch was run from)
#   ODMOE_BIN         directory holding odmoe and odmoe-weights (default: $ODMOE_REPO/build/bin)
#   ODMOE_LAUNCHER    srun (default: srun --mpi=pmix, Slurm starts the ranks) | mpirun (Open
#                     MPI's mpirun starts them inside the allocation)
#   ODMOE_LAUNCH_OPTS extra words for the launcher, split on spaces (e.g. "--cpu-bind=none")
#   ODMOE_UCX         auto (default: UCX for pml and osc when the job spans more than one
#                     node) | on | off
#
# Rank 0 is the first task of the first node (Slurm's default block distribution): the main
# rank. All other tasks are expert ranks.

repo=${ODMOE_REPO:-${SLURM_SUBMIT_DIR:-$(pwd)}}
bin=${ODMOE_BIN:-$repo/build/bin}
launcher=${ODMOE_LAUNCHER:-srun}

odmoe_die() { echo "error: $*" >&2; exit 2; }

# odmoe_job_init USAGE: fails (with USAGE) unless this runs inside a Slurm allocation
# (sbatch or salloc) and the binary is there; then sets up MPI's transport (odmoe_mpi_setup).
odmoe_job_init() {
  [ -n "${SLURM_JOB_ID:-}" ] || odmoe_die "not inside a Slurm job: submit with sbatch ($1)"
  case $launcher in
    srun | mpirun) ;;
    *) odmoe_die "ODMOE_LAUNCHER=$launcher: use srun or mpirun" ;;
  esac
  [ -x "$bin/odmoe" ] ||
    odmoe_die "$bin/odmoe not found: build odmoe (cmake --build build) or set ODMOE_BIN to the directory holding it"
  odmoe_mpi_setup
}

odmoe_nodes() { echo "${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}"; }
odmoe_ntasks() { echo "${SLURM_NTASKS:-${SLURM_NPROCS:-1}}"; }

# The job's log file (sbatch --output) as Slurm expanded it; files the job writes for the
# user go next to it.
odmoe_log_path() {
  local out
  out=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *StdOut=//p' | head -n 1)
  [ -n "$out" ] || out=${SLURM_SUBMIT_DIR:-$(pwd)}/${SLURM_JOB_NAME:-odmoe}-$SLURM_JOB_ID.out
  echo "$out"
}

# Multi-node RMA: Debian's Open MPI disables osc ucx, and one-sided gets between nodes over
# TCP fail with its defaults. UCX for pml and osc, with any transport and device, works.
# Environment rather than --mca so srun-launched ranks get it too (mpirun reads it as well).
# A single node keeps Open MPI's defaults (osc rdma / sm), which work there and are faster.
odmoe_mpi_setup() {
  local want=${ODMOE_UCX:-auto}
  if [ "$want" = on ] || { [ "$want" = auto ] && [ "$(odmoe_nodes)" -gt 1 ]; }; then
    export OMPI_MCA_pml=ucx OMPI_MCA_osc=ucx OMPI_MCA_pml_ucx_tls=any OMPI_MCA_pml_ucx_devices=any
    odmoe_ucx=on
  else
    odmoe_ucx=off
  fi
}

# What the job runs on and with what: enough to reproduce or compare a run from its log.
odmoe_print_env() {
  local what=$1 rev mpi slurm_version
  rev=$(git -C "$repo" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
  mpi=$(mpirun --version 2>/dev/null | head -n 1)
  slurm_version=$(srun --version 2>/dev/null | head -n 1)
  echo "== odmoe $what job ${SLURM_JOB_ID} (${SLURM_JOB_NAME:-}) started $(date -Is) on $(hostname)"
  echo "   job id: ${SLURM_JOB_ID}"
  echo "   nodes: $(odmoe_nodes) (${SLURM_JOB_NODELIST:-?})  tasks: $(odmoe_ntasks) (per node: ${SLURM_TASKS_PER_NODE:-?})  partition: ${SLURM_JOB_PARTITION:-?}"
  echo "   git revision: $rev  (source: $repo)"
  echo "   binary: $bin/odmoe"
  echo "   MPI: ${mpi:-mpirun not found}  Slurm: ${slurm_version:-?}"
  echo "   launcher: $(odmoe_launch_words | tr '\n' ' ')"
  if [ "${odmoe_ucx:-off}" = on ]; then
    echo "   MPI transport: UCX (OMPI_MCA_pml=ucx OMPI_MCA_osc=ucx OMPI_MCA_pml_ucx_tls=any OMPI_MCA_pml_ucx_devices=any)"
  else
    echo "   MPI transport: Open MPI defaults (single node)"
  fi
  [ -z "${CUDA_VISIBLE_DEVICES:-}" ] || echo "   CUDA_VISIBLE_DEVICES: $CUDA_VISIBLE_DEVICES"
  # One line per task, in rank order: where each rank runs (rank 0 is main).
  echo "   task hosts (rank: Slurm node / hostname):"
  # shellcheck disable=SC2016  # expanded by the task's shell, on its node
  { srun --mpi=none --ntasks="$(odmoe_ntasks)" --label \
      bash -c 'echo "${SLURMD_NODENAME:-?} / $(hostname)"' || echo "(srun failed)"; } 2>&1 |
    sort -n | sed 's/^/     rank /'
}

# The launcher command, one word per line (for printing and for odmoe_launch).
odmoe_launch_words() {
  local -a words
  if [ "$launcher" = srun ]; then
    # --kill-on-bad-exit: a rank that fails takes the others down at once (odmoe also does).
    words=(srun --mpi=pmix --kill-on-bad-exit=1 --ntasks="$(odmoe_ntasks)")
  else
    words=(mpirun -np "$(odmoe_ntasks)" --bind-to none)
    # Slurm may place more tasks on a node than it has CPUs (--overcommit); mpirun needs
    # --oversubscribe to start them. As root Open MPI wants an explicit yes.
    words+=(--oversubscribe)
    [ "$(id -u)" -ne 0 ] || words+=(--allow-run-as-root)
  fi
  # shellcheck disable=SC2206  # split on spaces on purpose
  [ -z "${ODMOE_LAUNCH_OPTS:-}" ] || words+=(${ODMOE_LAUNCH_OPTS})
  printf '%s\n' "${words[@]}"
}

# odmoe_launch PROGRAM ARGS...: run one MPI program over all tasks of the job.
odmoe_launch() {
  local -a words
  mapfile -t words < <(odmoe_launch_words)
  "${words[@]}" "$@"
}
