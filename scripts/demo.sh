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
  for pidfile in "$WORK"/ovs/*.pid; do
    [ -f "$pidfile" ] && kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
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
  --libvirt.uri="$URI" --web.listen-address=127.0.0.1:$LIBVIRT_PORT

# --- dirty_flow_exporter -------------------------------------------------------------------
OVS_RUNDIR="$WORK/ovs"
mkdir -p "$OVS_RUNDIR"
if [ -x "$REPO/exporters/dirty_flow/demo/sandbox.sh" ]; then
  bash "$REPO/exporters/dirty_flow/demo/sandbox.sh" "$OVS_RUNDIR" >"$WORK/ovs-sandbox.log" 2>&1 \
    || echo "OVS sandbox failed to start: see $WORK/ovs-sandbox.log"
fi
OVS_ARGS=(--ovs.rundir="$OVS_RUNDIR" --web.listen-address=127.0.0.1:$OVS_PORT)
if [ -f "$REPO/exporters/dirty_flow/demo/checks.yml" ]; then
  OVS_ARGS+=(--config.file="$REPO/exporters/dirty_flow/demo/checks.yml")
fi
start dirty_flow_exporter "$WORK/dirty_flow_exporter.log" "$BIN/dirty_flow_exporter" "${OVS_ARGS[@]}"

sleep 1
cat <<MSG

The demo is running (work dir $WORK). Open:
  log_pattern_exporter  http://127.0.0.1:$LOG_PORT/metrics      log_pattern_matches_total rises as the writer logs
  libvirt_exporter      http://127.0.0.1:$LIBVIRT_PORT/metrics      nova domains, pinning, overlapping pins
  dirty_flow_exporter   http://127.0.0.1:$OVS_PORT/metrics      ovs_dirty_flows > 0 for the one dirty flow
Press Ctrl-C to stop everything.
MSG
wait
