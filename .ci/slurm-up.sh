#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine, on loopback, for the Slurm tests (and for a
# developer who wants to try `sparsevar sweep --executor slurm` without a cluster).
# Debian/Ubuntu packages munge, slurmctld, slurmd and slurm-client; the daemons are started
# directly (no systemd), their state, logs and pid files live in one scratch folder.
#
#   eval "$(.ci/slurm-up.sh)"      # prints `export SLURM_CONF=...; export SPARSEVAR_SLURM_DIR=...`
#   .ci/slurm-down.sh              # cancels jobs, stops the daemons by their pid files
#
# SLURM_DIR (default /tmp/sparsevar-slurm) is the scratch folder. Run as root (the daemons run as
# root and munge; the jobs run as the submitting user). Facts behind each setting: see the book's
# "On a cluster" section and the comments below.
set -euo pipefail
DIR=${SLURM_DIR:-/tmp/sparsevar-slurm}
log() { echo "slurm-up: $*" >&2; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  log "installing munge slurmctld slurmd slurm-client"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # Without --no-install-recommends the metapackages pull ~40 packages.
  apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
fi

# A cluster already running from this folder is reused.
if [ -f "$DIR/slurmctld.pid" ] && [ "$(cat "/proc/$(cat "$DIR/slurmctld.pid")/comm" 2>/dev/null)" = slurmctld ]; then
  log "already running in $DIR"
  echo "export SLURM_CONF=$DIR/slurm.conf; export SPARSEVAR_SLURM_DIR=$DIR"
  exit 0
fi

mkdir -p "$DIR"/{state,spool,log,munge}
chmod 755 "$DIR"
HOST=$(hostname -s)
CPUS=$(nproc)

# munge: a key readable only by the munge user, the socket folder, the daemon as that user.
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key >&2
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
chown munge:munge "$DIR/munge"
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- munged --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null || { log "munge does not work; see $DIR/munge/munged.log"; exit 1; }

cat > "$DIR/slurm.conf" <<CONF
ClusterName=sparsevar
# Loopback, so the host name need not resolve.
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No accounting daemon: final states come from \`scontrol -o show job\`, kept MinJobAge s.
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
# Schedule every second (otherwise an array's later tasks wait ~3 s).
SchedulerParameters=sched_interval=1,bf_interval=1
# A requeued/resubmitted task would otherwise wait 120 s for the old credential to expire.
AuthInfo=cred_expire=10
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$DIR/slurm.conf

# -c: forget any state an earlier cluster left.
slurmctld -c -f "$SLURM_CONF"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
slurmd -f "$SLURM_CONF"
state=
for _ in $(seq 200); do
  state=$(sinfo -h -o %T 2>/dev/null | head -1)
  case "$state" in
    idle*) break ;;
    down*|drain*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.1
done
case "$state" in idle*) ;; *) log "node is '$state', not idle; see $DIR/log"; exit 1 ;; esac
log "up: node $HOST idle, $CPUS CPUs, config $SLURM_CONF"
echo "export SLURM_CONF=$SLURM_CONF; export SPARSEVAR_SLURM_DIR=$DIR"
