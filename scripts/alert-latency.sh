#!/usr/bin/env bash
# `make alert-latency`: the fast lane measured at the shipped settings, not the demo's.
#
# Starts the demo stack (scripts/demo.sh, without its faults) with Prometheus scraping every 15 s
# (the PodMonitor's interval for dirty_flow and log_pattern), evaluating at Prometheus' default
# 1 m except where a rule group sets its own `interval` (the fast lane's 15 s), and Alertmanager
# with the shipped route timings (alerts/alertmanager.yml, not shortened). Then injects, at a
# random moment of the scrape and evaluation cycles, a dirty flow, a "Reconciler error" line and
# a kernel OOM line, and prints the time from each injection to its notification at the
# webhook beside the 45 s target. The dirty flow is then deleted, its resolution awaited, and
# added again, ROUNDS times in all: those later rounds are new alerts of an Alertmanager group
# that has already notified, which wait for the route's group_interval instead of group_wait
# (the log alerts only once: their counters keep them firing for minutes). Exits 1 if a
# notification is missing or later than the target.
#
# Usage: scripts/alert-latency.sh [BIN_DIR]   (default target/release)
# Environment: ROUNDS (dirty flow injections, default 3), TARGET_S (default 45).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$REPO/target/release}"
ROUNDS=${ROUNDS:-3}
TARGET_S=${TARGET_S:-45}

W=$(mktemp -d /tmp/alert-latency.XXXXXX)
DEMO_PID=""
stop() {
  if [ -n "$DEMO_PID" ]; then
    kill -TERM "$DEMO_PID" 2>/dev/null || true
    wait "$DEMO_PID" 2>/dev/null || true
  fi
  rm -rf "$W"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=lib/common.sh
. "$REPO/scripts/lib/common.sh"
export LOG_PORT=$(free_port) LIBVIRT_PORT=$(free_port) OVS_PORT=$(free_port) \
  PROM_PORT=$(free_port) AM_PORT=$(free_port) HOOK_PORT=$(free_port)
DEMO_WORK="$W/work" DEMO_QUIET=1 DEMO_FAULTS=0 DEMO_SCRAPE_INTERVAL=15s DEMO_EVAL_INTERVAL=1m \
  bash "$REPO/scripts/demo.sh" "$BIN" >"$W/demo.out" 2>"$W/demo.err" &
DEMO_PID=$!
for _ in $(seq 180); do
  [ -e "$W/work/ready" ] && break
  kill -0 "$DEMO_PID" 2>/dev/null || { cat "$W/demo.err" >&2; exit 1; }
  sleep 1
done
[ -e "$W/work/ready" ] || { echo "alert-latency: the demo did not start in 180 s" >&2; exit 1; }
var() { sed -n "s/^$1=//p" "$W/work/demo.env"; }
OVS_MGMT=$(var OVS_MGMT)
DIRTY_FLOW=$(var DIRTY_FLOW)
DIRTY_MATCH=${DIRTY_FLOW#cookie=*,}
DIRTY_MATCH=${DIRTY_MATCH%%,actions=*}
NOTIFICATIONS=$(var NOTIFICATIONS)
cri() { echo "$(date -u +%FT%T.%NZ) stderr F $1"; }

# Waits for the first notification of ALERT with STATUS received after SINCE (epoch seconds);
# prints its delay, or "missing" after TIMEOUT seconds.
wait_notification() { # alert status since timeout
  python3 - "$NOTIFICATIONS" "$@" <<'PY'
import json, sys, time
path, alert, status, since, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
deadline = time.time() + timeout
while time.time() < deadline:
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        m = json.loads(line)
        if m["receivedUnix"] < since:
            continue
        if any(a["labels"].get("alertname") == alert and a["status"] == status for a in m["alerts"]):
            print(f"{m['receivedUnix'] - since:.1f}")
            sys.exit(0)
    time.sleep(0.2)
print("missing")
PY
}

PROM=http://127.0.0.1:$PROM_PORT
# Waits until the PromQL query QUERY returns at least one series.
wait_query() { # query timeout
  python3 - "$PROM" "$@" <<'PY'
import json, sys, time, urllib.parse, urllib.request
prom, query, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.time() + timeout
while time.time() < deadline:
    url = f"{prom}/api/v1/query?query={urllib.parse.quote(query)}"
    if json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]:
        sys.exit(0)
    time.sleep(1)
sys.exit(f"alert-latency: no result for {query} within {timeout:.0f} s")
PY
}
# A node long in service: every target scraped and the node's rack known (the recording rule
# the alerts join on is evaluated at Prometheus' default 1 m); then a random phase of the 15 s
# cycles.
wait_query 'count(up == 1) == 3' 120
wait_query 'topology:node_rack:info' 150
sleep $((RANDOM % 15))
results=()
t=$(date +%s.%N)
cri 'level=error msg="Reconciler error" controller=latency error="injected"' >>"$(var POD_LOG_OPERATORS)"
cri "Out of memory: Killed process 4711 (latency-victim)" >>"$(var POD_LOG_NOVA)"
ovs-ofctl add-flow "$OVS_MGMT" "$DIRTY_FLOW"
for a in OvsDirtyFlows LogPatternMatched OomKillerInvoked; do
  results+=("$a 1 $(wait_notification "$a" firing "$t" 120)")
done
for round in $(seq 2 "$ROUNDS"); do
  ovs-ofctl --strict del-flows "$OVS_MGMT" "$DIRTY_MATCH"
  r=$(date +%s.%N)
  [ "$(wait_notification OvsDirtyFlows resolved "$r" 240)" != missing ] ||
    { echo "alert-latency: OvsDirtyFlows did not resolve" >&2; exit 1; }
  sleep $((RANDOM % 30))
  t=$(date +%s.%N)
  ovs-ofctl add-flow "$OVS_MGMT" "$DIRTY_FLOW"
  results+=("OvsDirtyFlows $round $(wait_notification OvsDirtyFlows firing "$t" 120)")
done

status=0
printf '%-20s %5s %10s %8s\n' alert round "delay (s)" target
for row in "${results[@]}"; do
  read -r alert round delay <<<"$row"
  verdict=ok
  if [ "$delay" = missing ] || awk -v d="$delay" -v t="$TARGET_S" 'BEGIN { exit !(d > t) }'; then
    verdict=LATE
    status=1
  fi
  printf '%-20s %5s %10s %8s %s\n' "$alert" "$round" "$delay" "${TARGET_S}s" "$verdict"
done
exit $status
