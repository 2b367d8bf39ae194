#!/usr/bin/env bash
# `make demo`: every exporter on demo inputs shipped in the repo, on 127.0.0.1, until Ctrl-C (or
# SIGTERM). Everything started here is stopped by PID on exit. The end-to-end test
# (tests/tests/e2e.rs) runs this same script with the settings below.
#
#   libvirt_exporter     on libvirtd (test driver, unix socket in the work dir) holding the nova
#                        domains of exporters/libvirt/demo/node.xml, one pair with overlapping pins
#   dirty_flow_exporter  on an Open vSwitch sandbox (dummy datapath) with one dirty flow
#   log_pattern_exporter on a pod log tree fed by a generator writing CRI lines, some matching
#   Prometheus with alerts/rules, Alertmanager with alerts/alertmanager.yml whose receivers are
#   replaced by a local webhook receiver (scripts/demo-webhook.py)
#
# Usage: scripts/demo.sh [BIN_DIR]     (BIN_DIR default target/release)
# Environment (all optional):
#   LOG_PORT LIBVIRT_PORT OVS_PORT PROM_PORT AM_PORT HOOK_PORT   loopback ports
#   DEMO_WORK=DIR              work dir (default: a new /tmp dir, removed on exit; a given dir is
#                              left in place)
#   DEMO_QUIET=1               no banner and no notification tail (for tests)
#   DEMO_FAULTS=0              start without the faults (no dirty flow, no overlapping domain, log
#                              writer without matching lines) so that they can be injected later;
#                              $WORK/demo.env says how
#   DEMO_SCRAPE_INTERVAL, DEMO_EVAL_INTERVAL   Prometheus intervals (default 5s)
#   DEMO_RULES_DIR=DIR         alert rule files (default alerts/rules)
#   DEMO_GROUP_WAIT, DEMO_GROUP_INTERVAL       override Alertmanager's route timings
#   DEMO_LOG_RATE              log writer lines per second (default 20)
# When everything answers, $WORK/ready exists and "demo: ready" is printed; $WORK/demo.pids
# lists what was started ("name pid").
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$REPO/target/release}"
if [ ! -d "$BIN" ]; then
  echo "demo: no binary dir $BIN: build first (cargo build --workspace --bins --release)" >&2
  exit 1
fi
BIN="$(cd "$BIN" && pwd)"

for tool in libvirtd virsh ovsdb-server ovs-vswitchd ovs-vsctl ovs-ofctl prometheus \
  prometheus-alertmanager python3 curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "demo: $tool not found: run scripts/install-deps.sh (or make demo)" >&2
    exit 1
  fi
done
for b in log_pattern_exporter libvirt_exporter dirty_flow_exporter; do
  if [ ! -x "$BIN/$b" ]; then
    echo "demo: $BIN/$b not built: cargo build --workspace --bins --release" >&2
    exit 1
  fi
done

if [ -n "${DEMO_WORK:-}" ]; then
  mkdir -p "$DEMO_WORK"
  WORK="$(cd "$DEMO_WORK" && pwd)"
  OWN_WORK=0
else
  WORK="$(mktemp -d /tmp/node-exporters-demo.XXXXXX)"
  OWN_WORK=1
fi
QUIET=${DEMO_QUIET:-0}
FAULTS=${DEMO_FAULTS:-1}
SCRAPE_INTERVAL=${DEMO_SCRAPE_INTERVAL:-5s}
EVAL_INTERVAL=${DEMO_EVAL_INTERVAL:-5s}
RULES_DIR="${DEMO_RULES_DIR:-$REPO/alerts/rules}"
RULES_DIR="$(cd "$RULES_DIR" && pwd)"
LOG_RATE=${DEMO_LOG_RATE:-20}
LOG_PORT=${LOG_PORT:-9851}
LIBVIRT_PORT=${LIBVIRT_PORT:-9177}
OVS_PORT=${OVS_PORT:-9852}
PROM_PORT=${PROM_PORT:-9090}
AM_PORT=${AM_PORT:-9093}
HOOK_PORT=${HOOK_PORT:-9099}
NODE=demo-node-1
RACK=demo-rack-1

# A port already taken would make a readiness check answer for some other program.
for port in "$LOG_PORT" "$LIBVIRT_PORT" "$OVS_PORT" "$PROM_PORT" "$AM_PORT" "$HOOK_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: 127.0.0.1:$port is in use; choose other ports with LOG_PORT, LIBVIRT_PORT," \
      "OVS_PORT, PROM_PORT, AM_PORT, HOOK_PORT" >&2
    [ "$OWN_WORK" = 1 ] && rm -rf "$WORK"
    exit 1
  fi
done

# shellcheck source=lib/common.sh
. "$REPO/scripts/lib/common.sh"
OVS_RUNDIR="$WORK/ovs"
SPAWN_RECORD="$WORK/demo.pids"
: >"$SPAWN_RECORD"
rm -f "$WORK/ready"

# Never fatal: with `make demo | tee log`, Ctrl-C ends tee too, and a message to the closed pipe
# must not end the cleanup before it has stopped everything.
say() { if [ "$QUIET" != 1 ]; then echo "$@" 2>/dev/null || true; fi; }

cleanup() {
  local status=$?
  # A second Ctrl-C or SIGTERM (make passes one on, `timeout` sends one to the whole group)
  # must not cut the stop short and leave daemons behind: ignore them from here on.
  trap - EXIT
  trap '' INT TERM PIPE
  rm -f "$WORK/ready"
  say
  say "Stopping the demo..."
  stop_spawned
  if [ -d "$OVS_RUNDIR" ]; then
    bash "$REPO/exporters/dirty_flow/demo/ovs-sandbox.sh" stop "$OVS_RUNDIR" >/dev/null 2>&1 || true
  fi
  wait 2>/dev/null || true
  if [ "$OWN_WORK" = 1 ]; then rm -rf "$WORK"; fi
  say "Stopped."
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # name, logfile, command...
  spawn "$@"
  say "started $1 (pid ${PID_OF[$1]}, log $2)"
}

wait_ready() { # name (as started), url: until the URL answers 200, or the process is gone
  local name=$1 url=$2 _
  for _ in $(seq 600); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
      echo "demo: $name exited; the end of ${LOG_OF[$name]}:" >&2
      tail -n 20 "${LOG_OF[$name]}" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "demo: $name did not answer $url within 60s" >&2
  return 1
}

wait_until() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  local _
  for _ in $(seq $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "demo: timed out after ${secs}s waiting for $what" >&2
  return 1
}

# --- log_pattern_exporter ------------------------------------------------------------------
mkdir -p "$WORK/pods"
WRITER_ARGS=("$WORK/pods" "$LOG_RATE")
if [ "$FAULTS" = 0 ]; then WRITER_ARGS+=(--no-matching); fi
start "log writer" "$WORK/log-writer.log" python3 "$REPO/scripts/demo-log-writer.py" "${WRITER_ARGS[@]}"
start log_pattern_exporter "$WORK/log_pattern_exporter.log" "$BIN/log_pattern_exporter" \
  --path.pods="$WORK/pods" --config.file="$REPO/exporters/log_pattern/demo/rules.yml" \
  --state.file="$WORK/log-state.json" --web.listen-address="127.0.0.1:$LOG_PORT"

# --- libvirtd (test driver) and libvirt_exporter -------------------------------------------
# test:///default is one shared node inside libvirtd while any client holds it open (a file URI
# would give every connection a private copy), so `virsh define/start` from outside changes
# what the exporter sees. A `virsh event` client holds it open (and logs domain events).
LV="$WORK/libvirt"
mkdir -p "$LV/domains"
start_libvirtd "$LV"
say "started libvirtd (pid ${PID_OF[libvirtd]}, log $LV/libvirtd.log)"
LIBVIRT_URI="test+unix:///default?socket=$LIBVIRTD_SOCK"
# The exporter and the event client read only: on the read-only socket, which only a root
# libvirtd has (a session daemon has none).
LIBVIRT_URI_RO="test+unix:///default?socket=$LIBVIRTD_SOCK_RO"
vsh() { # virsh on the read-write socket; its output (a polkit notice on every call) only on failure
  local out
  out=$(virsh -q -c "$LIBVIRT_URI" "$@" 2>&1) || { echo "virsh $*: $out" >&2; return 1; }
}
start "libvirt event log" "$LV/events.log" virsh -c "$LIBVIRT_URI_RO" event --all --loop --timestamp
# Once the event client holds the node open, changes made by one virsh call are seen by the
# next: remove the test driver's own sample domain (not a nova instance) until it stays removed.
sample_domain_removed() {
  vsh destroy test 2>/dev/null || true
  vsh undefine test 2>/dev/null || true
  ! virsh -q -c "$LIBVIRT_URI" list --all --name 2>/dev/null | grep -qx test
}
wait_until "the libvirt event client" 20 sample_domain_removed
# One file per domain of the demo node, named after the domain.
NODE_XML="$REPO/exporters/libvirt/demo/node.xml"
awk -v dir="$LV/domains" '
  /<domain[ >]/ { body = ""; indom = 1 }
  indom { body = body $0 "\n" }
  indom && /<\/domain>/ {
    match(body, /<name>[^<]*<\/name>/)
    f = dir "/" substr(body, RSTART + 6, RLENGTH - 13) ".xml"
    printf "%s", body > f
    close(f)
    indom = 0
  }' "$NODE_XML"
# db-2 (instance-00000104) shares host CPU 9 with db-1 (instance-00000103): the demo's broken
# pinning.
FAULT_DOMAIN=instance-00000104
FAULT_PARTNER=instance-00000103
for f in "$LV"/domains/*.xml; do
  name=$(basename "$f" .xml)
  if [ "$FAULTS" = 0 ] && [ "$name" = "$FAULT_DOMAIN" ]; then continue; fi
  vsh define "$f"
  # <test:runstate> 5 is shut off, 3 paused (as in the test driver's node files).
  case "$(sed -n 's:.*<test\:runstate>\([0-9]*\)</test\:runstate>.*:\1:p' "$f")" in
    5) ;;
    3) vsh start "$name" && vsh suspend "$name" ;;
    *) vsh start "$name" ;;
  esac
done
start libvirt_exporter "$WORK/libvirt_exporter.log" "$BIN/libvirt_exporter" \
  --libvirt.uri="$LIBVIRT_URI_RO" --nova.cpu-dedicated-set=4-15 --nova.cpu-shared-set=0-3 \
  --web.listen-address="127.0.0.1:$LIBVIRT_PORT"

# --- Open vSwitch sandbox and dirty_flow_exporter ------------------------------------------
mkdir -p "$OVS_RUNDIR"
bash "$REPO/exporters/dirty_flow/demo/ovs-sandbox.sh" start "$OVS_RUNDIR" >"$WORK/ovs-sandbox.log" 2>&1 || {
  echo "demo: the OVS sandbox failed to start:" >&2
  cat "$WORK/ovs-sandbox.log" >&2
  exit 1
}
OVS_MGMT="unix:$OVS_RUNDIR/br-int.mgmt"
# The sandbox's one dirty flow: output to port 99, which does not exist (check missing_port).
DIRTY_MATCH="table=10,priority=40,ip,nw_dst=10.0.0.99"
DIRTY_FLOW="cookie=0x1,$DIRTY_MATCH,actions=output:99"
if [ "$FAULTS" = 0 ]; then
  ovs-ofctl --strict del-flows "$OVS_MGMT" "$DIRTY_MATCH"
  # The flow to group 20, whose bucket chains to a deleted group (check missing_group).
  ovs-ofctl -O OpenFlow13 del-groups "$OVS_MGMT" group_id=20
  if ovs-ofctl --no-stats dump-flows "$OVS_MGMT" | grep -q 'output:99'; then
    echo "demo: the dirty flow is still there after del-flows" >&2
    exit 1
  fi
fi
start dirty_flow_exporter "$WORK/dirty_flow_exporter.log" "$BIN/dirty_flow_exporter" \
  --ovs.rundir="$OVS_RUNDIR" --ovs.db="unix:$OVS_RUNDIR/db.sock" \
  --config.file="$REPO/exporters/dirty_flow/demo/checks.yml" \
  --web.listen-address="127.0.0.1:$OVS_PORT"

# --- Prometheus, Alertmanager and a webhook receiver ----------------------------------------
echo "$NODE $RACK" >"$WORK/node-rack.txt"
python3 "$REPO/alerts/topology/gen_rules.py" "$WORK/node-rack.txt" -o "$WORK/topology.rules.yml"
start "webhook receiver" "$WORK/webhook.out" \
  python3 "$REPO/scripts/demo-webhook.py" "$HOOK_PORT" "$WORK/notifications.jsonl"
# The shipped Alertmanager config with its placeholder receivers pointed at the local webhook.
sed '/^# --- receivers/,$d' "$REPO/alerts/alertmanager.yml" >"$WORK/alertmanager.yml"
cat >>"$WORK/alertmanager.yml" <<AM
receivers:
  - name: pager
    webhook_configs: [{url: "http://127.0.0.1:$HOOK_PORT/pager", send_resolved: true}]
  - name: chat
    webhook_configs: [{url: "http://127.0.0.1:$HOOK_PORT/chat", send_resolved: true}]
  - name: mail
    webhook_configs: [{url: "http://127.0.0.1:$HOOK_PORT/mail", send_resolved: false}]
AM
sed -i '/smtp_/d' "$WORK/alertmanager.yml"
if [ -n "${DEMO_GROUP_WAIT:-}" ]; then
  sed -i -E "s/^( *)group_wait: .*/\1group_wait: $DEMO_GROUP_WAIT/" "$WORK/alertmanager.yml"
fi
if [ -n "${DEMO_GROUP_INTERVAL:-}" ]; then
  sed -i -E "s/^( *)group_interval: .*/\1group_interval: $DEMO_GROUP_INTERVAL/" "$WORK/alertmanager.yml"
fi
start alertmanager "$WORK/alertmanager.log" prometheus-alertmanager \
  --config.file="$WORK/alertmanager.yml" --storage.path="$WORK/am-data" \
  --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address=
cat >"$WORK/prometheus.yml" <<PROM
global:
  scrape_interval: $SCRAPE_INTERVAL
  evaluation_interval: $EVAL_INTERVAL
rule_files:
  - $RULES_DIR/*.yml
  - $WORK/topology.rules.yml
alerting:
  alertmanagers:
    - static_configs: [{targets: ["127.0.0.1:$AM_PORT"]}]
scrape_configs:
  - job_name: log_pattern
    static_configs: [{targets: ["127.0.0.1:$LOG_PORT"], labels: {node: $NODE}}]
  - job_name: libvirt
    static_configs: [{targets: ["127.0.0.1:$LIBVIRT_PORT"], labels: {node: $NODE}}]
  - job_name: dirty_flow
    static_configs: [{targets: ["127.0.0.1:$OVS_PORT"], labels: {node: $NODE}}]
PROM
start prometheus "$WORK/prometheus.log" prometheus \
  --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --rules.alert.resend-delay=1s

# How to inject each fault by hand (the end-to-end test reads this file too). Not for `source`:
# values run to the end of the line, unquoted.
cat >"$WORK/demo.env" <<ENV
WORK=$WORK
NODE=$NODE
RACK=$RACK
LIBVIRT_URI=$LIBVIRT_URI
FAULT_DOMAIN=$FAULT_DOMAIN
FAULT_DOMAIN_XML=$LV/domains/$FAULT_DOMAIN.xml
FAULT_PARTNER=$FAULT_PARTNER
OVS_MGMT=$OVS_MGMT
DIRTY_FLOW=$DIRTY_FLOW
POD_LOG_OPERATORS=$WORK/pods/operators_cloud-controller-5d_a1b2c3d4-0003/manager/0.log
POD_LOG_NOVA=$WORK/pods/openstack_nova-compute-7f9c_a1b2c3d4-0001/nova-compute/0.log
NOTIFICATIONS=$WORK/notifications.jsonl
PROMETHEUS=http://127.0.0.1:$PROM_PORT
ALERTMANAGER=http://127.0.0.1:$AM_PORT
ENV

wait_ready log_pattern_exporter "http://127.0.0.1:$LOG_PORT/-/ready"
wait_ready libvirt_exporter "http://127.0.0.1:$LIBVIRT_PORT/-/ready"
wait_ready dirty_flow_exporter "http://127.0.0.1:$OVS_PORT/-/ready"
wait_ready prometheus "http://127.0.0.1:$PROM_PORT/-/ready"
wait_ready alertmanager "http://127.0.0.1:$AM_PORT/-/ready"
wait_until "the webhook receiver" 20 curl -sS -o /dev/null "http://127.0.0.1:$HOOK_PORT/"
touch "$WORK/ready"
echo "demo: ready"

if [ "$QUIET" != 1 ]; then
  cat <<MSG

The demo is running (work dir $WORK). Open:
  log_pattern_exporter  http://127.0.0.1:$LOG_PORT/metrics   log_pattern_matches_total rises as the writer logs
  libvirt_exporter      http://127.0.0.1:$LIBVIRT_PORT/metrics   5 nova domains; db-1/db-2 share host CPU 9
                                                        (libvirt_domain_pinning_overlap_cpus 1)
  dirty_flow_exporter   http://127.0.0.1:$OVS_PORT/metrics   ovs_dirty_flows{check="missing_port"} 1
                                                        and {check="missing_group"} 1
  Prometheus            http://127.0.0.1:$PROM_PORT/alerts
  Alertmanager          http://127.0.0.1:$AM_PORT/
Expect at the webhook below, with the shipped rules and Alertmanager timings (scrape and
evaluation every $SCRAPE_INTERVAL here):
  within a minute   OvsDirtyFlows (pager), LogPatternMatched for reconciler_error and
                    OomKillerInvoked for qemu-kvm (chat)
  after ~6 minutes  LibvirtPinningSharedHostCpu for instance-00000103 and -104 (pager; for: 5m)
Add faults yourself (a new alert of an alert name that already notified waits for group_interval):
  ovs-ofctl add-flow $OVS_MGMT 'table=0,priority=1,actions=FLOOD'
  echo "\$(date -u +%FT%T.%NZ) stderr F Out of memory: Killed process 7 (my-proc)" \\
    >> $WORK/pods/openstack_nova-compute-7f9c_a1b2c3d4-0001/nova-compute/0.log
  virsh -c '$LIBVIRT_URI' list --all     (define, start, vcpupin, destroy...)
Every dashboard panel query against this Prometheus:
  python3 $REPO/dashboards/test.py --prometheus http://127.0.0.1:$PROM_PORT --wait 60
Notifications received by the local webhook are printed below as they arrive.
Press Ctrl-C to stop everything.
MSG
  tail -n +1 -F "$WORK/webhook.out" 2>/dev/null &
  PIDS+=($!)
fi
# `wait` returns when a trapped signal arrives; the EXIT trap then stops everything.
while true; do wait || true; sleep 1; done
