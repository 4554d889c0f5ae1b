#!/usr/bin/env bash
# Run a real single-node Slurm (slurmctld + slurmd + munged) on loopback, for tests of the Slurm
# backend: a real sbatch/squeue/scontrol/scancel beats a mock for job arrays, dependencies and
# exit states. Recipe, keys and traps measured in /work/shared/slurm/README.md (Debian 12, root,
# no systemd; Slurm 22.05, munge 0.5.15).
#
#   slurm-local.sh start DIR   install the packages if missing (exit 3 if that is impossible),
#                              run munged/slurmctld/slurmd with all state, sockets, pids and logs
#                              under DIR (a fresh dir) and free ports picked now, wait until the
#                              node is idle, then print `export SLURM_CONF=DIR/slurm.conf`.
#   slurm-local.sh stop DIR    scancel every job, wait until squeue is empty, then TERM (KILL after
#                              5 s) the daemons by the PIDs in DIR/pids. Idempotent.
#   slurm-local.sh env DIR     print the export line again.
#
# Only stdout is the export line; everything else goes to stderr. Nothing in /etc/munge, /run/munge
# or /etc/slurm is used (installing the munge package itself creates /etc/munge/munge.key).
# Job accounting is off: read final states from `scontrol show job` (kept MinJobAge=600 s) or the
# JobCompLoc file DIR/jobcomp.txt. DependencyParameters=kill_invalid_depend cancels `afterok`
# dependents of a failed job instead of leaving them PENDING forever.
set -euo pipefail

log() { echo "slurm-local: $*" >&2; }
die() { log "$*"; exit 1; }

[[ $# -eq 2 ]] || die "usage: $0 start|stop|env DIR"
cmd=$1
dir=$(realpath -m -- "$2")
conf="$dir/slurm.conf"

# A TCP port below the ephemeral range, not in use now and not $1 (two harnesses on one machine).
pick_port() {
  local used p
  used=$(ss -Htan 2>/dev/null | awk '{n = split($4, a, ":"); print a[n]}') || used=""
  while :; do
    p=$((10000 + RANDOM % 22000))
    [[ $p != "${1:-}" ]] && ! grep -qx -- "$p" <<<"$used" && { echo "$p"; return; }
  done
}

# True if PID is alive, is the program NAME, and was started with DIR on its command line.
ours() {
  local pid=$1 name=$2
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/"
}

# Start NAME in its own session, detached from the caller's stdio, and record its PID.
launch() {
  local name=$1; shift
  setsid "$@" </dev/null >>"$dir/log/$name.stderr" 2>&1 &
  echo $! >"$dir/pids/$name.pid"
}

wait_until() {  # wait_until SECONDS COMMAND...: poll COMMAND every 0.2 s
  local end=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS < end)) || return 1; sleep 0.2; done
}

gone() { ! ours "$@"; }
node_idle() { [[ $(sinfo -h -N -o %t 2>/dev/null) == idle ]]; }
queue_empty() { [[ -z $(squeue -h -o %A 2>/dev/null) ]]; }

start() {
  local c missing=0
  for c in slurmctld slurmd sbatch munged mungekey sinfo; do
    command -v "$c" >/dev/null || missing=1
  done
  if ((missing)); then
    log "installing slurmctld slurmd slurm-client munge"
    local apt=(apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge)
    if ! command -v apt-get >/dev/null ||
      ! { DEBIAN_FRONTEND=noninteractive "${apt[@]}" >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive "${apt[@]}" >&2; }; }; then
      echo "slurm-local: Slurm cannot be installed (no apt-get, or apt-get failed)" >&2
      exit 3
    fi
  fi
  [[ ! -e $conf ]] || die "$conf exists: give start a fresh directory"
  mkdir -p "$dir"/{munge,pids,log,state,spool,run}
  chmod 755 "$dir/munge"  # 700 gives "socket inaccessible"

  mungekey --create --keyfile="$dir/munge/munge.key" >&2
  launch munged munged --foreground --force --key-file="$dir/munge/munge.key" \
    --socket="$dir/munge/munge.sock" --pid-file="$dir/run/munged.pid" \
    --seed-file="$dir/munge/munge.seed" --origin=127.0.0.1
  wait_until 10 test -S "$dir/munge/munge.sock" ||
    { stop; die "munged did not start: see $dir/log/munged.stderr"; }

  local ctld_port slurmd_port mem
  ctld_port=$(pick_port)
  slurmd_port=$(pick_port "$ctld_port")
  mem=$(free -m | awk '/^Mem:/ {print int($4 * 0.9)}')
  cat >"$conf" <<EOF
# Written by scripts/slurm-local.sh for a test harness in $dir
ClusterName=gltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
MinJobAge=600
SchedulerParameters=sched_interval=1
DependencyParameters=kill_invalid_depend
MailProg=/bin/true
ReturnToService=2
NodeName=localnode NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localnode Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$conf
  launch slurmctld slurmctld -D -c -i -f "$conf"
  launch slurmd slurmd -D -N localnode -f "$conf"
  wait_until 30 node_idle || { stop; die "node not idle after 30 s: see $dir/log/"; }
  log "up: slurmctld port $ctld_port, slurmd port $slurmd_port, logs in $dir/log"
  echo "export SLURM_CONF=$conf"
}

stop() {
  local name pid
  [[ -d $dir/pids ]] || { log "nothing to stop in $dir"; return 0; }
  export SLURM_CONF=$conf
  if ours "$(cat "$dir/pids/slurmctld.pid" 2>/dev/null)" slurmctld; then
    # Job processes and slurmstepd are not children of slurmd and survive it: cancel first.
    squeue -h -o %A 2>/dev/null | sort -u | xargs -r scancel 2>/dev/null || true
    wait_until 30 queue_empty || log "jobs still queued after 30 s; stopping anyway"
  fi
  for name in slurmd slurmctld munged; do
    pid=$(cat "$dir/pids/$name.pid" 2>/dev/null) || continue
    if ours "$pid" "$name"; then
      kill -TERM "$pid" 2>/dev/null || true
      wait_until 5 gone "$pid" "$name" || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pids/$name.pid"
  done
  log "stopped $dir"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  env) [[ -e $conf ]] || die "no $conf"; echo "export SLURM_CONF=$conf" ;;
  *) die "usage: $0 start|stop|env DIR" ;;
esac
