#!/usr/bin/env bash
# Benchmark of dirty_flow_exporter at 100k flows on a real ovs-vswitchd sandbox, beside its peers
# measured in the same run:
#   - scrape latency and peak RSS  vs  bare `ovs-ofctl --no-names dump-flows` to /dev/null
#     (target: within 1.2x), and peak RSS of the exporter under 64 MiB;
#   - scrape latency with GROUP_COUNT groups (10k, and a flow to each)  vs  bare
#     `dump-flows` and `dump-groups` run concurrently, as the exporter runs them (target: 1.2x);
#   - parser lines/s               vs  OVS's own Python parser ovs.flow.ofp on `--no-stats`
#     output (3.1's parser fails on stats output) (target: at least 100x).
# Scrape latency is measured in steady state (every scrape after the first) and for the first
# scrape of a fresh exporter. Prints a table with ratios. Not a pass/fail test.
# Needs: openvswitch-switch, python3-openvswitch, python3-netaddr, curl, /usr/bin/time.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
FLOWS=${FLOWS:-100000}
RUNS=${RUNS:-5}
PY_LINES=${PY_LINES:-20000}
GROUP_COUNT=${GROUP_COUNT:-10000}
PARSER_ROUNDS=${PARSER_ROUNDS:-7}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
# DIRTY_FLOW_BIN: an exporter binary to measure instead of the one built here (say, a previous
# version beside the current one).
# DIRTY_FLOW_FLAGS: extra exporter flags (say, --ovs.openflow-version=OpenFlow10).
BIN=${DIRTY_FLOW_BIN:-$TARGET_DIR/release/dirty_flow_exporter}
PARSE_BENCH="$TARGET_DIR/release/examples/parse_bench"
# shellcheck source=../../../scripts/lib/common.sh
. "$REPO/scripts/lib/common.sh"

(cd "$REPO" && cargo build --release -q -p dirty_flow_exporter --bin dirty_flow_exporter --example parse_bench)

D=$(mktemp -d /tmp/ovsbench.XXXXXX)
cleanup() {
  stop_spawned
  "$REPO/exporters/dirty_flow/demo/ovs-sandbox.sh" stop "$D" >/dev/null 2>&1 || true
  rm -rf "$D"
}
trap cleanup EXIT

"$REPO/exporters/dirty_flow/demo/ovs-sandbox.sh" start-empty "$D" >/dev/null 2>&1
T="unix:$D/br-int.mgmt"

# Neutron-like flows: per-port MAC forwarding, ACLs with ct(), learn(), conjunctions, VLAN
# handling, a few with timeouts; one kind of flow per pair of tables, spread over priorities, so
# that no two flows overlap. Then one flow to a missing port and one overlapping pair.
awk -v n="$FLOWS" 'BEGIN {
  for (i = 0; i < n; i++) {
    p = i % 3 + 1; k = i % 6; t = 2 * k + i % 2; pr = 10 + i % 13
    mac = sprintf("fa:16:%02x:%02x:%02x:%02x", int(i/16777216)%256, int(i/65536)%256, int(i/256)%256, i%256)
    ip = sprintf("10.%d.%d.%d", int(i/65536)%256, int(i/256)%256, i%256)
    if (k == 0) printf "cookie=0x1,table=%d,priority=%d,in_port=%d,dl_dst=%s,actions=output:%d\n", t, pr, p, mac, p
    else if (k == 1) printf "cookie=0x1,table=%d,priority=%d,ct_state=+trk+est-rel,tcp,reg5=0x%x,nw_src=%s/32,tp_dst=%d,actions=ct(commit,zone=NXM_NX_REG6[0..15]),resubmit(,%d)\n", t, pr, i, ip, i%65535+1, (t+1)%8
    else if (k == 2) printf "cookie=0x1,table=%d,priority=%d,ip,reg6=0x%x,nw_dst=%s,actions=conjunction(%d,1/2)\n", t, pr, i, ip, i
    else if (k == 3) printf "cookie=0x1,table=%d,priority=%d,dl_vlan=%d,dl_src=%s,actions=strip_vlan,load:0x%x->NXM_NX_REG5[],resubmit(,%d)\n", t, pr, i%4094+1, mac, i, (t+2)%8
    else if (k == 4) printf "cookie=0x1,table=%d,priority=%d,udp6,ipv6_src=2001:db8::%x:%x,tp_src=%d,actions=learn(table=%d,hard_timeout=300,priority=1,NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_NX_REG0[]->NXM_NX_REG1[],output:NXM_OF_IN_PORT[]),output:%d\n", t, pr, int(i/65536), i%65536, i%65535+1, (t+3)%8, p
    else printf "cookie=0x1,table=%d,priority=%d,idle_timeout=600,arp,arp_tpa=%s,arp_op=1,in_port=%d,actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:%s,IN_PORT\n", t, pr, ip, p, mac
  }
}' >"$D/flows.txt"
cat >>"$D/flows.txt" <<'EOF'
cookie=0x1,table=0,priority=10,in_port=1,dl_dst=fa:16:00:00:00:00,ip,actions=output:2
cookie=0x2,table=20,priority=1,actions=output:77
EOF
ovs-ofctl add-flows "$T" "$D/flows.txt"
# Select groups over the three ports (as OVN's load balancers), each with a flow in table 30.
awk -v n="$GROUP_COUNT" 'BEGIN { for (g = 1; g <= n; g++) printf "group_id=%d,type=select,bucket=output:%d,bucket=output:%d\n", g, g % 3 + 1, (g + 1) % 3 + 1 }' >"$D/groups.txt"
ovs-ofctl -O OpenFlow13 add-groups "$T" "$D/groups.txt"
awk -v n="$GROUP_COUNT" 'BEGIN { for (g = 1; g <= n; g++) printf "cookie=0x1,table=30,priority=5,ip,nw_dst=172.16.%d.%d,actions=group:%d\n", int(g / 256), g % 256, g }' >"$D/group-flows.txt"
ovs-ofctl -O OpenFlow13 add-flows "$T" "$D/group-flows.txt"

LINES=$(ovs-ofctl --no-names dump-flows "$T" | grep -c 'actions=')

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the exporter beside bare ovs-ofctl, runs interleaved so load changes hit both alike -------
# Steady state: every scrape after the first. The exporter then dumps the bridges the last
# scrape found while it reads the database, and reuses the overlap results of unchanged groups.
PORT=$(free_port)
start_exporter() {
  # shellcheck disable=SC2086 # DIRTY_FLOW_FLAGS: extra exporter flags, split on spaces
  spawn exporter "$D/exporter.log" "$BIN" --web.listen-address="127.0.0.1:$PORT" --ovs.rundir="$D" \
    --ovs.timeout=60s --scrape.timeout=60s --log.level=warn ${DIRTY_FLOW_FLAGS:-}
  wait_healthy "$PORT" 5
}
start_exporter
curl -sf "http://127.0.0.1:$PORT/metrics" -o "$D/metrics.txt"   # warm-up, and a sanity check
grep -q "^ovs_dump_success{bridge=\"br-int\"} 1" "$D/metrics.txt" || { echo "exporter scrape failed" >&2; cat "$D/metrics.txt" >&2; exit 1; }
: >"$D/ofctl.times"; : >"$D/ofctl.rss"; : >"$D/exp.times"; : >"$D/ofctlv.times"; : >"$D/ofctlg.times"
# The exporter offers the versions of its default --ovs.openflow-version up to 1.3 first:
# ovs-ofctl then dumps at 1.3 here, not at its own default 1.0. Bare ovs-ofctl is timed both
# ways; the target is against its default.
OFV=OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13
for _ in $(seq "$RUNS"); do
  /usr/bin/time -f "%e %M" -o "$D/t" ovs-ofctl --no-names dump-flows "$T" >/dev/null 2>&1
  read -r secs kb <"$D/t"
  echo "$secs" >>"$D/ofctl.times"; echo "$kb" >>"$D/ofctl.rss"
  /usr/bin/time -f "%e" -o "$D/t" ovs-ofctl -O "$OFV" --no-names dump-flows "$T" >/dev/null 2>&1
  cat "$D/t" >>"$D/ofctlv.times"
  /usr/bin/time -f "%e" -o "$D/t" sh -c 'ovs-ofctl -O "$1" --no-names dump-flows "$2" >/dev/null & ovs-ofctl -O "$1" --no-names dump-groups "$2" >/dev/null; wait' sh "$OFV" "$T" 2>/dev/null
  cat "$D/t" >>"$D/ofctlg.times"
  scrape_seconds "http://127.0.0.1:$PORT/metrics" >>"$D/exp.times"
done
OFCTL_S=$(median <"$D/ofctl.times")
OFCTLV_S=$(median <"$D/ofctlv.times")
OFCTLG_S=$(median <"$D/ofctlg.times")
OFCTL_KB=$(sort -g "$D/ofctl.rss" | tail -1)
EXP_S=$(median <"$D/exp.times")
EXP_KB=$(peak_rss_kib "${PID_OF[exporter]}")
stop_spawned

# Cold: the first scrape of a fresh exporter (database read first, every group checked).
: >"$D/cold.times"; : >"$D/ofctl2.times"
for _ in $(seq "$RUNS"); do
  start_exporter
  /usr/bin/time -f "%e" -o "$D/t" ovs-ofctl --no-names dump-flows "$T" >/dev/null 2>&1
  cat "$D/t" >>"$D/ofctl2.times"
  scrape_seconds "http://127.0.0.1:$PORT/metrics" >>"$D/cold.times"
  stop_spawned
done
OFCTL2_S=$(median <"$D/ofctl2.times")
COLD_S=$(median <"$D/cold.times")
FLOWS_SEEN=$(awk '/^ovs_flows\{/ {s+=$2} END {print s}' "$D/metrics.txt")
CHECKS=$(awk -F'"' '/^ovs_dirty_flows\{/ {split($5, v, " "); printf "%s=%s ", $4, v[2]}' "$D/metrics.txt")

# --- parsers --------------------------------------------------------------------------------
# Interleaved rounds (ours, python, ours, python...), so that load changes hit both alike; each
# run reports its wall time and its CPU time (user + system, getrusage/process_time over the
# parse loop only). The CPU-time ratio is the one a busy machine changes little.
ovs-ofctl --no-stats dump-flows "$T" >"$D/nostats.txt"
ovs-ofctl --no-names dump-flows "$T" >"$D/stats.txt"
# SAVE_DUMPS=DIR keeps both dumps, for examples/parse_bench.rs and examples/scan_bench.rs.
if [ -n "${SAVE_DUMPS:-}" ]; then mkdir -p "$SAVE_DUMPS" && cp "$D/nostats.txt" "$D/stats.txt" "$SAVE_DUMPS/"; fi
HAVE_PY=""
if /usr/bin/python3 -c 'import ovs.flow.ofp' 2>/dev/null; then HAVE_PY=1; fi
PARSER_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$D/parse.rounds"
for _ in $(seq "$PARSER_ROUNDS"); do
  read -r rn rw rc < <("$PARSE_BENCH" "$D/nostats.txt" 2>/dev/null)
  if [ -n "$HAVE_PY" ]; then
    read -r pn pw pc < <(/usr/bin/python3 "$HERE/parse_ovs_python.py" "$D/nostats.txt" "$PY_LINES" 2>/dev/null)
  else
    pn=0 pw=1 pc=1
  fi
  # Per round: ours wall l/s, ours CPU l/s, python wall l/s, python CPU l/s.
  awk -v rn="$rn" -v rw="$rw" -v rc="$rc" -v pn="$pn" -v pw="$pw" -v pc="$pc" \
    'BEGIN { printf "%.0f %.0f %.0f %.0f\n", rn / rw, rn / rc, pn / pw, pn / pc }' >>"$D/parse.rounds"
done
PARSER_LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
col() { awk -v c="$1" '{print $c}' "$D/parse.rounds" | median; }
RUST_LPS=$(col 1); RUST_CPU_LPS=$(col 2); PY_LPS=$(col 3); PY_CPU_LPS=$(col 4)
# The range of the per-round ratios (each round's two runs ran next to each other).
round_ratios() { awk -v a="$1" -v b="$2" '$b > 0 {r = $a / $b; if (min == "" || r < min) min = r; if (r > max) max = r; if (r < 100) low++}
  END { if (min == "") print "n/a"; else printf "%.0f-%.0fx (%d of %d rounds below 100x)", min, max, low, NR }' "$D/parse.rounds"; }
WALL_RANGE=$(round_ratios 1 3); CPU_RANGE=$(round_ratios 2 4)
read -r RSN RSW _ < <("$PARSE_BENCH" "$D/stats.txt" 2>/dev/null)
RUST_STATS_LPS=$(awk -v n="$RSN" -v w="$RSW" 'BEGIN { printf "%.0f", n / w }')


echo
echo "dirty_flow_exporter benchmark: $LINES flows on a sandbox bridge (exporter saw $FLOWS_SEEN), median of $RUNS runs"
echo "load average (1/5/15 min) before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
echo "dirty flows found: $CHECKS(expected: missing_port=1 overlap=2 stale_cookie=0)"
printf '%-44s %16s %22s %10s %s\n' "measure" "exporter" "peer" "ratio" "target"
printf '%-44s %16s %22s %10s %s\n' "scrape latency vs ovs-ofctl dump-flows" "${EXP_S} s" "${OFCTL_S} s (ofctl)" "$(ratio "$EXP_S" "$OFCTL_S")x" "<= 1.2x"
printf '%-44s %16s %22s %10s %s\n' "  median of per-round ratios" "-" "-" "$(paired_ratio "$D/exp.times" "$D/ofctl.times")x" "<= 1.2x"
printf '%-44s %16s %22s %10s %s\n' "  vs ovs-ofctl -O (the exporter's versions)" "${EXP_S} s" "${OFCTLV_S} s (ofctl)" "$(ratio "$EXP_S" "$OFCTLV_S")x" "-"
printf '%-44s %16s %22s %10s %s\n' "  vs dump-flows + dump-groups (${GROUP_COUNT} groups)" "${EXP_S} s" "${OFCTLG_S} s (ofctl)" "$(ratio "$EXP_S" "$OFCTLG_S")x" "<= 1.2x"
printf '%-44s %16s %22s %10s %s\n' "  median of per-round ratios" "-" "-" "$(paired_ratio "$D/exp.times" "$D/ofctlg.times")x" "<= 1.2x"
printf '%-44s %16s %22s %10s %s\n' "  first scrape after start (no caches)" "${COLD_S} s" "${OFCTL2_S} s (ofctl)" "$(ratio "$COLD_S" "$OFCTL2_S")x" "-"
printf '%-44s %16s %22s %10s %s\n' "peak RSS vs ovs-ofctl dump-flows" "$(mib "$EXP_KB")" "$(mib "$OFCTL_KB") (ofctl)" "$(ratio "$EXP_KB" "$OFCTL_KB")x" "-"
printf '%-44s %16s %22s %10s %s\n' "peak RSS of the exporter at ${FLOWS} flows" "$(mib "$EXP_KB")" "64 MiB (limit)" "$(ratio "$EXP_KB" 65536)x" "< 1x"
if [ -n "$HAVE_PY" ]; then
  printf '%-44s %16s %22s %10s %s\n' "parser lines/s (--no-stats) vs ovs.flow.ofp" "$RUST_LPS" "$PY_LPS (python)" "$(ratio "$RUST_LPS" "$PY_LPS")x" ">= 100x"
  printf '%-44s %16s %22s %10s %s\n' "  per CPU second (user+sys)" "$RUST_CPU_LPS" "$PY_CPU_LPS (python)" "$(ratio "$RUST_CPU_LPS" "$PY_CPU_LPS")x" ">= 100x"
else
  printf '%-44s %16s %22s %10s %s\n' "parser lines/s (--no-stats)" "$RUST_LPS" "ovs.flow.ofp missing" "n/a" ">= 100x"
fi
printf '%-44s %16s %22s %10s %s\n' "parser lines/s (default output, with stats)" "$RUST_STATS_LPS" "-" "-" "-"
if [ -n "$HAVE_PY" ]; then
  echo "parser: median of $PARSER_ROUNDS interleaved rounds (python: $PY_LINES lines a round); per-round ratio wall $WALL_RANGE, CPU $CPU_RANGE; load before: $PARSER_LOAD_BEFORE, after: $PARSER_LOAD_AFTER"
fi
