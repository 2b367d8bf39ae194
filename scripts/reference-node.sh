#!/usr/bin/env bash
# Measures the series and memory of the three exporters on a reference compute node, for
# docs/scaling.md and the DaemonSet's resource requests and limits (`make reference-node`).
#
# The reference node (issue 8): 100 VMs, 30 pods, 20k OpenFlow flows, built from real components:
#   libvirt_exporter     100 nova domains (exporters/libvirt/bench/gen_node.py) on a private
#                        libvirtd running the test driver, over its unix socket
#   dirty_flow_exporter  an ovs-vswitchd sandbox (dummy datapath) with 20k neutron-like flows
#   log_pattern_exporter 30 pods (one container each) under a kubelet-style log tree, the whole
#                        rule library (exporters/log_pattern/rules/*.yml), and every pod logging
#                        lines that match every library rule, so each rule has its worst-case
#                        series on every pod
# Each exporter is scraped SCRAPES times; the table shows series per scrape (samples in the text
# exposition), exposition size, median scrape time and peak RSS (VmHWM). Not a pass/fail test.
#
#   scripts/reference-node.sh [BIN_DIR]     (default target/release; `make release` first)
#   VMS=100 PODS=30 FLOWS=20000 SCRAPES=5   override the reference sizes
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$(cd "${1:-$REPO/target/release}" && pwd)"
VMS=${VMS:-100}
PODS=${PODS:-30}
FLOWS=${FLOWS:-20000}
SCRAPES=${SCRAPES:-5}
WORK="$(mktemp -d /tmp/reference-node.XXXXXX)"
# shellcheck source=lib/common.sh
. "$REPO/scripts/lib/common.sh"

cleanup() {
  # A second Ctrl-C or SIGTERM (make passes one on, `timeout` sends one to the whole group)
  # must not cut the stop short and leave daemons behind: ignore them from here on.
  trap - EXIT
  trap '' INT TERM
  stop_spawned
  bash "$REPO/exporters/dirty_flow/demo/ovs-sandbox.sh" stop "$WORK/ovs" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- libvirtd with the test driver, and libvirt_exporter ----------------------------------
python3 "$REPO/exporters/libvirt/bench/gen_node.py" "$VMS" >"$WORK/node.xml"
start_libvirtd "$WORK"
LIBVIRT_PORT=$(free_port)
spawn libvirt_exporter "$WORK/libvirt_exporter.log" "$BIN/libvirt_exporter" \
  --web.listen-address="127.0.0.1:$LIBVIRT_PORT" --path.procfs= \
  --libvirt.uri="test+unix://$WORK/node.xml?socket=$LIBVIRTD_SOCK_RO" \
  --nova.cpu-dedicated-set=16-127 --nova.cpu-shared-set=0-15 --log.level=warn

# --- OVS sandbox with FLOWS flows, and dirty_flow_exporter ---------------------------------
bash "$REPO/exporters/dirty_flow/demo/ovs-sandbox.sh" start-empty "$WORK/ovs" >"$WORK/ovs.log" 2>&1
python3 - "$FLOWS" >"$WORK/flows.txt" <<'PY'
import sys
# Neutron-like: per-port forwarding, security-group conntrack ACLs, ARP responders, VLAN
# translation; 8 tables, ports 1-3 (the sandbox's), all with the agent's cookie.
n = int(sys.argv[1])
for i in range(n):
    kind, port = i % 4, i % 3 + 1
    mac = "fa:16:3e:%02x:%02x:%02x" % (i >> 16 & 255, i >> 8 & 255, i & 255)
    ip = "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)
    if kind == 0:
        print(f"cookie=0x1,table=60,priority={10 + i % 7},in_port={port},dl_dst={mac},actions=output:{port}")
    elif kind == 1:
        print(f"cookie=0x1,table=82,priority={70 + i % 11},ct_state=+trk+est,tcp,reg5=0x{i:x},"
              f"nw_src={ip},tp_dst={i % 65535 + 1},actions=ct(commit,zone=NXM_NX_REG6[0..15]),resubmit(,92)")
    elif kind == 2:
        print(f"cookie=0x1,table=21,priority={20 + i % 5},arp,arp_tpa={ip},arp_op=1,actions="
              f"move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:{mac},IN_PORT")
    else:
        print(f"cookie=0x1,table=2,priority={30 + i % 9},dl_vlan={i % 4094 + 1},dl_src={mac},"
              f"actions=strip_vlan,resubmit(,60)")
PY
ovs-ofctl add-flows "unix:$WORK/ovs/br-int.mgmt" "$WORK/flows.txt"
OVS_PORT=$(free_port)
spawn dirty_flow_exporter "$WORK/dirty_flow_exporter.log" "$BIN/dirty_flow_exporter" \
  --web.listen-address="127.0.0.1:$OVS_PORT" --ovs.rundir="$WORK/ovs" \
  --ovs.db="unix:$WORK/ovs/db.sock" --config.file="$REPO/exporters/dirty_flow/demo/checks.yml" \
  --log.level=warn

# --- PODS pods logging lines that match every library rule, and log_pattern_exporter -------
# The library as one rule file (the same as the DaemonSet's ConfigMap, minus the kernel source:
# the reference node reads pod logs only).
echo "start_at: beginning" >"$WORK/header.yml"
python3 "$REPO/scripts/combine-log-rules.py" --header "$WORK/header.yml" \
  "$REPO"/exporters/log_pattern/rules/*.yml >"$WORK/rules.yml"
python3 - "$WORK/pods" "$PODS" <<'PY'
import os, sys
root, pods = sys.argv[1], int(sys.argv[2])
lines = [
    'E0115 10:00:00.000000 1 controller.go:329] "Reconciler error" err="timeout" controller="lb"',
    "panic: runtime error: invalid memory address or nil pointer dereference",
    "fatal error: runtime: out of memory",
    'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space',
    "java.lang.OutOfMemoryError: Metaspace",
    "Traceback (most recent call last):",
    "2024-05-01 10:00:00.000 12 ERROR nova.compute.manager [req-1] MessagingTimeout: Timed out waiting for a reply",
    "2024-05-01 10:00:00.000 12 ERROR neutron.agent.rpc [req-2] Failed reporting state",
    "Out of memory: Killed process 4242 (qemu-kvm) total-vm:1234kB",
    "INFO nova.compute.manager [req-1] Running periodic task",
]
for p in range(pods):
    ns = ["openstack", "kube-system", "operators", "monitoring", "tenant-a", "tenant-b"][p % 6]
    d = os.path.join(root, f"{ns}_pod-{p}_00000000-0000-0000-0000-{p:012d}", "app")
    os.makedirs(d)
    with open(os.path.join(d, "0.log"), "w", encoding="utf-8") as f:
        for _ in range(10):
            for msg in lines:
                f.write(f"2024-05-01T10:00:00.000000000Z stderr F {msg}\n")
PY
LOG_PORT=$(free_port)
spawn log_pattern_exporter "$WORK/log_pattern_exporter.log" "$BIN/log_pattern_exporter" \
  --web.listen-address="127.0.0.1:$LOG_PORT" --path.pods="$WORK/pods" \
  --config.file="$WORK/rules.yml" --state.file="$WORK/state.json" --log.level=warn

wait_healthy "$LIBVIRT_PORT"
wait_healthy "$OVS_PORT"
wait_healthy "$LOG_PORT"
sleep 3 # the tailer's first directory scan and the rule matches

row() { # name (as spawned), port, up-metric
  local name=$1 port=$2 up=$3 times=() t
  local pid=${PID_OF[$name]}
  for _ in $(seq "$SCRAPES"); do
    t=$(scrape_seconds "http://127.0.0.1:$port/metrics" "$WORK/$name.prom")
    times+=("$t")
  done
  grep -q "^$up 1" "$WORK/$name.prom" || { echo "$name: $up is not 1" >&2; grep "^$up" "$WORK/$name.prom" >&2; exit 1; }
  local series bytes hwm med
  series=$(grep -vc '^#' "$WORK/$name.prom")
  bytes=$(wc -c <"$WORK/$name.prom")
  hwm=$(awk -v k="$(peak_rss_kib "$pid")" 'BEGIN {printf "%.1f", k / 1024}')
  med=$(printf '%s\n' "${times[@]}" | median)
  printf '| %-22s | %7s | %9s | %9s | %9s |\n' "$name" "$series" "$bytes" "$med" "$hwm"
  echo "$series" >"$WORK/$name.series"
}

echo "Reference node: $VMS VMs, $PODS pods, $FLOWS flows (load: $(cut -d' ' -f1-3 /proc/loadavg))"
echo
printf '| %-22s | %7s | %9s | %9s | %9s |\n' exporter series bytes "scrape s" "RSS MiB"
echo "|------------------------|---------|-----------|-----------|-----------|"
row libvirt_exporter "$LIBVIRT_PORT" libvirt_up
row dirty_flow_exporter "$OVS_PORT" 'ovs_dump_success{bridge="br-int"}'
row log_pattern_exporter "$LOG_PORT" 'log_pattern_scrape_collector_success{collector="logs"}'
total=$(cat "$WORK"/*.series | awk "{s+=\$1} END {print s}")
printf '| %-22s | %7s | %9s | %9s | %9s |\n' total "$total" "" "" ""
echo
# The series bill of docs/scaling.md: libvirt_exporter's series divided by the VMs (host and
# node series included).
awk -v s="$(cat "$WORK/libvirt_exporter.series")" -v n="$VMS" \
  'BEGIN {printf "libvirt_exporter: %.1f series per VM (target <= 35)\n\n", s / n}'
echo "Largest metric families (series):"
for f in libvirt_exporter dirty_flow_exporter log_pattern_exporter; do
  grep -v '^#' "$WORK/$f.prom" | sed 's/[{ ].*//' | sort | uniq -c | sort -rn | head -6 | sed "s/^/  $f: /"
done
