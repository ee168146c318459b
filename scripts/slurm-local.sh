#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests of `zfnet run --executor slurm`.
#
#   scripts/slurm-local.sh start   install Debian's Slurm and MUNGE if missing, start them
#   scripts/slurm-local.sh stop    stop the daemons this script started
#   scripts/slurm-local.sh env     print `export SLURM_CONF=...` for a shell that should use it
#
# Everything it writes lives in one private folder ($ZFNET_SLURM_DIR, default
# /tmp/zfnet-slurm-local, refused unless this user made it): its slurm.conf, state, logs and
# pid files. /etc/slurm is left alone,
# so a machine that already belongs to a real cluster keeps its configuration; clients reach
# this cluster only through SLURM_CONF. Needs root (or sudo) for the install and the daemons,
# as Slurm's own daemons do; no systemd needed.
set -euo pipefail

DIR=${ZFNET_SLURM_DIR:-/tmp/zfnet-slurm-local}
CONF=$DIR/slurm.conf
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

log() { echo "slurm-local: $*" >&2; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    log "installing slurmctld slurmd slurm-client munge (Debian packages)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        slurmctld slurmd slurm-client munge >/dev/null
}

start_munge() {
    if pgrep -x munged >/dev/null; then
        return
    fi
    # The package creates the key; make one if it is missing (first install without scripts).
    if [ ! -s /etc/munge/munge.key ]; then
        $SUDO mungekey --create --force >/dev/null 2>&1 ||
            $SUDO /usr/sbin/create-munge-key -f >/dev/null
        $SUDO chown munge:munge /etc/munge/munge.key
        $SUDO chmod 400 /etc/munge/munge.key
    fi
    $SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge
    $SUDO chown munge:munge /run/munge /var/log/munge /var/lib/munge
    $SUDO -u munge /usr/sbin/munged 2>/dev/null || $SUDO runuser -u munge -- /usr/sbin/munged
}

write_conf() {
    local host cpus memory_mb
    host=$(hostname -s)
    cpus=$(nproc)
    # What the node offers for scheduling: the machine's memory less 1 GiB for the daemons.
    memory_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
    # The daemons run as root from this folder: use it only if this user made it (a folder
    # under /tmp that someone else created, or a link, could point them anywhere).
    if [ -L "$DIR" ] || { [ -e "$DIR" ] && [ "$(stat -c %u "$DIR")" != "$(id -u)" ]; }; then
        log "$DIR exists and is a link or another user's (owner: $(stat -c %U "$DIR")); \
refusing to run root daemons from it. Set ZFNET_SLURM_DIR to a folder of your own"
        exit 1
    fi
    mkdir -p -m 700 "$DIR"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    cat >"$CONF.new" <<EOF
# Written by zfnet's scripts/slurm-local.sh: a one-node test cluster.
ClusterName=zfnet-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6917
SlurmdPort=6918
MinJobAge=600
KillWait=5
InactiveLimit=0
# Jobs over their time limit are ended at the next check (every 30 s here).
OverTimeLimit=0
# Jobs over their memory are killed (OUT_OF_MEMORY) by sampling their processes each second:
# no cgroup plugin needed, as a test cluster without systemd has none.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
# A week at most: the tests ask for more to see a job that can never start.
PartitionName=debug Nodes=$host Default=YES MaxTime=7-00:00:00 State=UP
EOF
    mv "$CONF.new" "$CONF"
}

running() {
    [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null
}

start() {
    install_packages
    start_munge
    write_conf
    export SLURM_CONF=$CONF
    if running slurmctld; then
        # Already up (an earlier start): let it read the configuration just written.
        $SUDO env SLURM_CONF="$CONF" scontrol reconfigure >/dev/null 2>&1 || true
    else
        $SUDO env SLURM_CONF="$CONF" /usr/sbin/slurmctld -f "$CONF"
    fi
    running slurmd || $SUDO env SLURM_CONF="$CONF" /usr/sbin/slurmd -f "$CONF"
    # Wait until the node takes jobs (under a second here once installed; up to 60 s allowed).
    for _ in $(seq 1 60); do
        if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            log "one-node cluster up ($(hostname -s), $(nproc) CPUs); SLURM_CONF=$CONF"
            return 0
        fi
        sleep 1
    done
    log "the node did not come up; see $DIR/log/"
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    return 1
}

stop() {
    for daemon in slurmd slurmctld; do
        if running "$daemon"; then
            $SUDO kill "$(cat "$DIR/$daemon.pid")"
            # Until it has saved its state and gone (a start right after must not find it).
            for _ in $(seq 1 100); do
                running "$daemon" || break
                sleep 0.1
            done
        fi
    done
}

case "${1:-}" in
start) start ;;
stop) stop ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
