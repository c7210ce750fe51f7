#!/usr/bin/env bash
# Stop the cluster .ci/slurm-up.sh started: cancel every job first (job processes outlive
# slurmd), then SIGTERM each daemon by its pid file, only if /proc/PID/comm names that daemon
# (a reused pid is never hit), and wait for it to exit.
set -uo pipefail
DIR=${SLURM_DIR:-/tmp/sparsevar-slurm}
export SLURM_CONF=$DIR/slurm.conf
stop() { # pidfile name
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || { rm -f "$1"; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
  if [ -e "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; then kill -KILL "$pid" 2>/dev/null; fi
  rm -f "$1"
}
if [ -f "$SLURM_CONF" ] && [ -f "$DIR/slurmctld.pid" ]; then
  scancel --quiet --partition=debug 2>/dev/null || true
  for _ in $(seq 50); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.1; done
fi
stop "$DIR/slurmd.pid" slurmd
stop "$DIR/slurmctld.pid" slurmctld
stop "$DIR/munge/munged.pid" munged
echo "slurm-down: stopped" >&2
