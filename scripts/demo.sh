#!/usr/bin/env bash
# `make demo`: every exporter on embedded demo inputs shipped in the repo, on 127.0.0.1,
# until Ctrl-C. Everything started here is stopped by PID on exit.
#
#   libvirt_exporter     on a libvirt test-driver node of nova domains (exporters/libvirt/demo)
#   dirty_flow_exporter  on an Open vSwitch sandbox (dummy datapath) with one dirty flow
#   log_pattern_exporter on a pod log tree fed by a generator writing CRI lines
#   Prometheus + Alertmanager (with the shipped rules and config) when alerts/ has them
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$REPO/target/release}"
BIN="$(cd "$BIN" && pwd)"
WORK="$(mktemp -d /tmp/node-exporters-demo.XXXXXX)"
PIDS=()

cleanup() {
  trap - EXIT INT TERM
  echo
  echo "Stopping the demo..."
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  bash "$REPO/exporters/dirty_flow/demo/ovs-sandbox.sh" stop "$WORK/ovs" >/dev/null 2>&1 || true
  for _ in $(seq 50); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

LOG_PORT=${LOG_PORT:-9851}
LIBVIRT_PORT=${LIBVIRT_PORT:-9177}
OVS_PORT=${OVS_PORT:-9852}
PROM_PORT=${PROM_PORT:-9090}
AM_PORT=${AM_PORT:-9093}
HOOK_PORT=${HOOK_PORT:-9099}

start() { # name, logfile, command...
  local name=$1 log=$2; shift 2
  "$@" >"$log" 2>&1 &
  PIDS+=($!)
  echo "started $name (pid $!, log $log)"
}

# --- log_pattern_exporter ------------------------------------------------------------------
mkdir -p "$WORK/pods"
start "log writer" "$WORK/log-writer.log" python3 "$REPO/scripts/demo-log-writer.py" "$WORK/pods" 20
LOG_ARGS=(--path.pods="$WORK/pods" --web.listen-address=127.0.0.1:$LOG_PORT)
if [ -f "$REPO/exporters/log_pattern/demo/rules.yml" ]; then
  LOG_ARGS+=(--config.file="$REPO/exporters/log_pattern/demo/rules.yml")
fi
if "$BIN/log_pattern_exporter" --help | grep -q -- '--state.file'; then
  LOG_ARGS+=(--state.file="$WORK/log-state.json")
fi
start log_pattern_exporter "$WORK/log_pattern_exporter.log" "$BIN/log_pattern_exporter" "${LOG_ARGS[@]}"

# --- libvirt_exporter ----------------------------------------------------------------------
NODE_XML="$REPO/exporters/libvirt/demo/node.xml"
if [ -f "$NODE_XML" ]; then URI="test://$NODE_XML"; else URI="test:///default"; fi
start libvirt_exporter "$WORK/libvirt_exporter.log" "$BIN/libvirt_exporter" \
  --libvirt.uri="$URI" --nova.cpu-dedicated-set=4-15 --nova.cpu-shared-set=0-3 \
  --web.listen-address=127.0.0.1:$LIBVIRT_PORT

# --- dirty_flow_exporter -------------------------------------------------------------------
OVS_RUNDIR="$WORK/ovs"
mkdir -p "$OVS_RUNDIR"
bash "$REPO/exporters/dirty_flow/demo/ovs-sandbox.sh" start "$OVS_RUNDIR" >"$WORK/ovs-sandbox.log" 2>&1 \
  || echo "OVS sandbox failed to start: see $WORK/ovs-sandbox.log"
OVS_ARGS=(--ovs.rundir="$OVS_RUNDIR" --ovs.db="unix:$OVS_RUNDIR/db.sock" --web.listen-address=127.0.0.1:$OVS_PORT)
if [ -f "$REPO/exporters/dirty_flow/demo/checks.yml" ]; then
  OVS_ARGS+=(--config.file="$REPO/exporters/dirty_flow/demo/checks.yml")
fi
start dirty_flow_exporter "$WORK/dirty_flow_exporter.log" "$BIN/dirty_flow_exporter" "${OVS_ARGS[@]}"

# --- Prometheus, Alertmanager and a webhook receiver ----------------------------------------
NODE=demo-node-1
echo "$NODE demo-rack-1" > "$WORK/node-rack.txt"
python3 "$REPO/alerts/topology/gen_rules.py" "$WORK/node-rack.txt" -o "$WORK/topology.rules.yml"
start "webhook receiver" "$WORK/webhook.out" python3 "$REPO/scripts/demo-webhook.py" $HOOK_PORT "$WORK/notifications.jsonl"
# The shipped Alertmanager config with its placeholder receivers pointed at the local webhook.
sed '/^# --- receivers/,$d' "$REPO/alerts/alertmanager.yml" > "$WORK/alertmanager.yml"
cat >> "$WORK/alertmanager.yml" <<AM
receivers:
  - name: pager
    webhook_configs: [{url: "http://127.0.0.1:$HOOK_PORT/pager", send_resolved: true}]
  - name: chat
    webhook_configs: [{url: "http://127.0.0.1:$HOOK_PORT/chat", send_resolved: true}]
  - name: mail
    webhook_configs: [{url: "http://127.0.0.1:$HOOK_PORT/mail", send_resolved: false}]
AM
sed -i '/smtp_/d' "$WORK/alertmanager.yml"
start alertmanager "$WORK/alertmanager.log" prometheus-alertmanager \
  --config.file="$WORK/alertmanager.yml" --storage.path="$WORK/am-data" \
  --web.listen-address=127.0.0.1:$AM_PORT --cluster.listen-address=
cat > "$WORK/prometheus.yml" <<PROM
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $REPO/alerts/rules/*.yml
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
  --web.listen-address=127.0.0.1:$PROM_PORT --rules.alert.resend-delay=1s

sleep 1
cat <<MSG

The demo is running (work dir $WORK). Open:
  log_pattern_exporter  http://127.0.0.1:$LOG_PORT/metrics      log_pattern_matches_total rises as the writer logs
  libvirt_exporter      http://127.0.0.1:$LIBVIRT_PORT/metrics      nova domains, pinning, overlapping pins
  dirty_flow_exporter   http://127.0.0.1:$OVS_PORT/metrics      ovs_dirty_flows > 0 for the one dirty flow
  Prometheus            http://127.0.0.1:$PROM_PORT/alerts       the shipped rules; expect OvsDirtyFlows and the
                                                           libvirt pinning alerts to fire within minutes
  Alertmanager          http://127.0.0.1:$AM_PORT/           grouping and inhibition as shipped
Notifications received by the local webhook are printed below as they arrive.
Press Ctrl-C to stop everything.
MSG
tail -n +1 -F "$WORK/webhook.out" 2>/dev/null &
PIDS+=($!)
wait
