#!/usr/bin/env bash
# Bring up a one-node Slurm on this machine (Debian's slurm-wlm + munge, daemons started directly,
# no systemd), so the suite tests can submit real jobs with sbatch. Idempotent: a running cluster
# whose node answers is left as it is. Needs root (or passwordless sudo) and apt.
# Exits non-zero with a one-line reason when it cannot; on success the node is idle and
# `sbatch --wrap hostname` has run to completion.
set -euo pipefail

die() { echo "slurm_up: $*" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
start=$(date +%s)

# 1. Packages (skip apt when everything is there already).
if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1; then
        $SUDO apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed"
        $SUDO apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 || die "apt-get install slurm-wlm munge failed"
    fi
fi

node_ready() {
    # The node answers and is idle/mixed/allocated (not down, drained or unknown).
    local st
    st=$(timeout 5 sinfo -h -N -o '%T' 2>/dev/null | head -n1) || return 1
    case "$st" in idle*|mixed*|allocated*|completing*) return 0 ;; *) return 1 ;; esac
}

# 2. munge: a key, then the daemon.
host=$(hostname -s)
$SUDO mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
$SUDO chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
$SUDO chmod 0700 /etc/munge /var/lib/munge /var/log/munge
$SUDO chmod 0755 /run/munge
$SUDO chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    $SUDO runuser -u munge -- /usr/sbin/munged --force \
        || die "munged would not start (see /var/log/munge/munged.log)"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null 2>&1 || die "munge does not round-trip a credential (see /var/log/munge/munged.log)"
fi

# 3. slurm.conf: this host is the controller and the only node, with what slurmd detects.
hw=$(slurmd -C | head -n1 | sed -e "s/^NodeName=[^ ]*//")
[ -n "$hw" ] || die "slurmd -C could not describe this machine"
# Leave some memory for the OS so jobs asking for memory still fit.
hw=$(echo "$hw" | awk '{for (i = 1; i <= NF; i++)
    if ($i ~ /^RealMemory=/) { split($i, a, "="); $i = "RealMemory=" int(a[2] * 0.9) }; print}')
conf=/etc/slurm/slurm.conf
new=$(mktemp)
cat >"$new" <<EOF
# Written by .ci/slurm_up.sh: a one-node cluster for tests.
ClusterName=workbench-ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
NodeName=$host $hw State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
$SUDO mkdir -p /etc/slurm /var/spool/slurmd /var/spool/slurmctld /var/log/slurm
changed=0
if ! cmp -s "$new" "$conf"; then
    $SUDO cp "$new" "$conf"
    $SUDO chmod 0644 "$conf"
    changed=1
fi
rm -f "$new"
if [ "$changed" = 0 ] && node_ready; then
    echo "slurm_up: already up ($(sinfo -h -N -o '%N %T' | head -n1))"
    exit 0
fi

# 4. The daemons (restarted when they run with another configuration or the node is not ready).
stop_daemon() {
    local pidfile=$1 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        $SUDO kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    $SUDO rm -f "$pidfile"
}
stop_daemon /run/slurmd.pid
stop_daemon /run/slurmctld.pid
ctld_up() {
    for _ in $(seq 75); do timeout 2 scontrol ping 2>/dev/null | grep -q UP && return 0; sleep 0.2; done
    return 1
}
# Saved jobs survive a restart; should the saved state not load, start clean (-i ignores it).
if ! { $SUDO /usr/sbin/slurmctld && ctld_up; }; then
    stop_daemon /run/slurmctld.pid
    $SUDO /usr/sbin/slurmctld -i || die "slurmctld would not start (see /var/log/slurm/slurmctld.log)"
    ctld_up || die "slurmctld does not answer (see /var/log/slurm/slurmctld.log)"
fi
$SUDO /usr/sbin/slurmd || die "slurmd would not start (see /var/log/slurm/slurmd.log)"
for _ in $(seq 150); do node_ready && break; sleep 0.2; done
if ! node_ready; then
    $SUDO scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
    for _ in $(seq 50); do node_ready && break; sleep 0.2; done
fi
node_ready || die "node $host is not idle: $(sinfo -h -N -o '%T %E' 2>&1 | head -n1) (see /var/log/slurm/)"

# 5. A real job end to end.
out=$(mktemp)
jid=$(sbatch --parsable --wait --time=1 -o "$out" --wrap hostname 2>&1) \
    || die "sbatch --wrap hostname failed: $jid $(cat "$out" 2>/dev/null)"
grep -q . "$out" || die "job $jid wrote nothing"
rm -f "$out"
echo "slurm_up: node $host idle, test job ${jid%%;*} ran ($(( $(date +%s) - start )) s)"
