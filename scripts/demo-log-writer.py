#!/usr/bin/env python3
"""Writes CRI-format container log lines into a kubelet-style pod log tree, for the demo.

Usage: demo-log-writer.py ROOT [LINES_PER_SECOND] [--no-matching]

Layout: ROOT/<namespace>_<pod>_<uid>/<container>/0.log. About one line in ten matches one of the
demo rules ("Reconciler error", "Out of memory"), none with --no-matching (the end-to-end test
appends its own matching lines then). Rotates kubelet-style (rename to 0.log.<timestamp>, create
a new 0.log) every ROTATE_LINES lines, so the demo shows rotation too. Runs until killed.
"""
import argparse
import datetime
import os
import random
import time

ROTATE_LINES = 2000

PODS = [
    ("openstack", "nova-compute-7f9c", "a1b2c3d4-0001", "nova-compute"),
    ("openstack", "neutron-ovs-agent-x2", "a1b2c3d4-0002", "neutron-openvswitch-agent"),
    ("operators", "cloud-controller-5d", "a1b2c3d4-0003", "manager"),
]
NORMAL = [
    "INFO nova.compute.manager [req-1] Running periodic task ComputeManager._sync_power_states",
    "INFO neutron.agent.securitygroups_rpc Refresh firewall rules",
    'level=info msg="reconcile finished" controller=loadbalancer',
]
MATCHING = [
    ("operators", 'level=error msg="Reconciler error" controller=loadbalancer error="timeout"'),
    ("openstack", "ERROR oslo.messaging._drivers.impl_rabbit Out of memory: Killed process 4242 (qemu-kvm)"),
]


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def main():
    ap = argparse.ArgumentParser(description="CRI log lines for the demo's pod log tree")
    ap.add_argument("root")
    ap.add_argument("rate", nargs="?", type=float, default=20.0, help="lines per second")
    ap.add_argument("--no-matching", action="store_true", help="write no line a demo rule matches")
    args = ap.parse_args()
    if args.rate <= 0:
        ap.error("the rate must be positive")
    files = {}
    counts = {}
    for ns, pod, uid, container in PODS:
        d = os.path.join(args.root, f"{ns}_{pod}_{uid}", container)
        os.makedirs(d, exist_ok=True)
        files[(ns, pod)] = os.path.join(d, "0.log")
        counts[(ns, pod)] = 0
    while True:
        ns, pod, _, _ = random.choice(PODS)
        msg = random.choice(NORMAL)
        if not args.no_matching and random.random() < 0.1:
            candidates = [m for n, m in MATCHING if n == ns]
            if candidates:
                msg = random.choice(candidates)
        stream = "stderr" if "ERROR" in msg or "error" in msg else "stdout"
        path = files[(ns, pod)]
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{now()} {stream} F {msg}\n")
        counts[(ns, pod)] += 1
        if counts[(ns, pod)] >= ROTATE_LINES:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            os.rename(path, f"{path}.{stamp}")
            counts[(ns, pod)] = 0
        time.sleep(1.0 / args.rate)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
