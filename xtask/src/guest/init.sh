#!/bin/busybox sh
# PID 1 of the test VM. Mounts what the agent needs, starts it, runs the job named on the kernel
# command line (bulkhead.mode=test|run|bench), reports over the serial console, powers off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# POSIX shared memory (shm_open, sem_open), as on every real host.
mkdir -p /dev/shm && mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# Loopback, for what listens on 127.0.0.1 (the broker's JWKS listener, an API server).
ip link set lo up
hostname bulkhead-vm

arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
mode=$(arg bulkhead.mode)
echo "BULKHEAD-GUEST booted kernel=$(uname -r) lsm=$(cat /sys/kernel/security/lsm)"

finish() {
    sync
    poweroff -f
}

# The suite's protected files (and the executor key the broker trusts) must exist before the
# agent marks them at start; the demonstration uses the suite's node config too.
if { [ "$mode" = test ] || [ "$(arg bulkhead.prepare)" = 1 ]; } && ! bulkhead-vm-suite prepare; then
    echo "BULKHEAD-GUEST prepare-failed"
    finish
fi

BULKHEAD_AGENT_MARKER=agent-env bulkhead run --config /etc/bulkhead/node.toml >/tmp/agent.log 2>&1 &
agent=$!
tries=0
# Ready means answering on its socket, not a socket file: the file exists from bind() on, and
# an agent that stops after it must fail the job, never run it against a dead agent.
until bulkhead status >/dev/null 2>&1; do
    tries=$((tries + 1))
    if ! kill -0 "$agent" 2>/dev/null || [ "$tries" -gt 600 ]; then
        echo "BULKHEAD-GUEST agent-failed"
        sed 's/^/agent| /' /tmp/agent.log
        finish
    fi
    sleep 0.1
done
echo "BULKHEAD-GUEST agent-ready pid=$agent"

case "$mode" in
test)
    filter=$(arg bulkhead.filter)
    BULKHEAD_SUPERVISOR_MARKER=supervisor-env bulkhead-vm-suite $filter
    echo "BULKHEAD-GUEST suite-exit=$?"
    if [ "$(arg bulkhead.agentlog)" = 1 ]; then sed 's/^/agent| /' /tmp/agent.log; fi
    ;;
bench)
    bulkhead-vm-suite bench "$(arg bulkhead.bench)"
    echo "BULKHEAD-GUEST bench-exit=$?"
    ;;
run)
    echo "BULKHEAD-VMRUN start"
    sh /vm-run.sh
    echo "BULKHEAD-VMRUN exit=$?"
    ;;
*)
    echo "BULKHEAD-GUEST unknown mode '$mode'"
    ;;
esac
finish
