#!/usr/bin/env bash
# The exporter's resident memory that does not depend on the number of flows, and what a real
# scrape adds to it, on real ovs-vswitchd sandboxes:
#   - "start":  VmHWM once /-/healthy answers (no scrape yet);
#   - "empty":  VmHWM after SCRAPES scrapes of a bridge without flows (the baseline);
#   - "flows":  VmHWM after SCRAPES scrapes of a bridge with FLOWS varied flows;
# with VmRSS, the thread count, "code used": the KiB of the binary's resident code pages that one
# more scrape of the flows really touches (Referenced after /proc/PID/clear_refs; the rest of its
# resident code came in by the kernel's fault-around, 64 KiB around each page touched first),
# and, per exporter, the resident KiB of each mapping group (the binary's own mappings by
# permission, libc, libm, other libraries, heap, anonymous, stacks) from /proc/PID/smaps. Peer in the same run: the peak RSS of bare `ovs-ofctl --no-names dump-flows`.
#
#   baseline_rss.sh [BIN...]   measure these exporter binaries (default: the release build,
#                              built here), each beside the others on the same two sandboxes;
#                              a BIN may be a wrapper script that ends in `exec BINARY "$@"`
#                              (say, to set MALLOC_ARENA_MAX): sizes and mappings are those of
#                              the process's /proc/PID/exe
# Env: FLOWS (20000), SCRAPES (3), ROUNDS (1; rounds of all BINs, interleaved; the table shows
# each one's median), SMAPS=0 hides the per-mapping table, GEN_FLOWS=FILE writes the flows to FILE
# and stops. Run it under the shared lock:
#   flock /tmp/bench.lock bash exporters/dirty_flow/bench/baseline_rss.sh
# Needs: openvswitch-switch, curl, python3, /usr/bin/time. Not a pass/fail test.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
FLOWS=${FLOWS:-20000}
SCRAPES=${SCRAPES:-3}
ROUNDS=${ROUNDS:-1}
SMAPS=${SMAPS:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
# As a service runs it: a panic's backtrace would touch unwind tables and symbols.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

# Varied flows so a scrape runs the parser's paths for matches with masks, ct(), learn(),
# conjunction(), resubmit and load/move actions, and the checks find a little of everything.
gen_flows() { # FILE
awk -v n="$FLOWS" 'BEGIN {
  for (i = 0; i < n; i++) {
    q = i % 5; tbl = q * 3 + i % 3; prio = 100 + i % 17; port = i % 3 + 1
    a = int(i / 256) % 256; b = i % 256
    if (q == 0) printf "cookie=0x%x,table=%d,priority=%d,in_port=%d,dl_src=fa:16:3e:01:%02x:%02x,actions=output:%d\n", 1 + i % 2, tbl, prio, port, a, b, port % 3 + 1
    if (q == 1) printf "cookie=0x1,table=%d,priority=%d,ct_state=-new+est,ip,nw_dst=10.1.%d.%d/32,reg6=0x%x,actions=ct(commit,zone=NXM_NX_REG6[0..15],exec(load:0x1->NXM_NX_CT_MARK[])),resubmit(,%d)\n", tbl, prio, a, b, i, tbl + 1
    if (q == 2) printf "cookie=0x1,table=%d,priority=%d,tcp,tp_dst=0x%x/0xfff0,nw_src=192.168.%d.0/24,actions=conjunction(%d,2/2)\n", tbl, prio, (i * 16) % 65536, a, i
    if (q == 3) printf "cookie=0x1,table=%d,priority=%d,dl_vlan=%d,actions=learn(table=40,idle_timeout=60,priority=2,NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[]),move:NXM_NX_REG0[]->NXM_NX_REG1[],resubmit(,%d)\n", tbl, prio, i % 4000 + 1, tbl + 1
    if (q == 4) printf "cookie=0x1,table=%d,priority=%d,hard_timeout=3600,ipv6,ipv6_dst=fd00::%x:%x,actions=mod_dl_dst:fa:16:3e:02:%02x:%02x,dec_ttl,output:%d\n", tbl, prio, a, b, a, b, port
  }
}' >"$1"
}
# GEN_FLOWS=FILE only writes the flows to FILE (for bench/symbol_order/symbol_order.sh).
if [ -n "${GEN_FLOWS:-}" ]; then gen_flows "$GEN_FLOWS"; exit 0; fi

if [ $# -eq 0 ]; then
  (cd "$REPO" && cargo build --release -q -p dirty_flow_exporter --bin dirty_flow_exporter)
  set -- "$TARGET_DIR/release/dirty_flow_exporter"
fi

W=$(mktemp -d /tmp/ovsrss.XXXXXX)
EXP_PID=""
cleanup() {
  if [ -n "$EXP_PID" ]; then kill "$EXP_PID" 2>/dev/null || true; wait "$EXP_PID" 2>/dev/null || true; fi
  for s in empty flows; do "$REPO/exporters/dirty_flow/demo/ovs-sandbox.sh" stop "$W/$s" >/dev/null 2>&1 || true; done
  rm -rf "$W"
}
trap cleanup EXIT

SANDBOX="$REPO/exporters/dirty_flow/demo/ovs-sandbox.sh"
"$SANDBOX" start-empty "$W/empty" >/dev/null 2>&1
"$SANDBOX" start-empty "$W/flows" >/dev/null 2>&1
gen_flows "$W/flows.txt"
ovs-ofctl add-flows "unix:$W/flows/br-int.mgmt" "$W/flows.txt"
DUMPED=$(ovs-ofctl --no-names dump-flows "unix:$W/flows/br-int.mgmt" | grep -c 'actions=' || true)

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
status() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
start_exporter() { # BIN RUNDIR
  "$1" --web.listen-address="127.0.0.1:$PORT" --ovs.rundir="$2" --log.level=warn &
  EXP_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/-/healthy" >/dev/null && return; sleep 0.05; done
  echo "exporter $1 did not come up" >&2; exit 1
}
stop_exporter() { kill "$EXP_PID"; wait "$EXP_PID" 2>/dev/null || true; EXP_PID=""; }
scrape() { # RUNDIR
  for _ in $(seq "$SCRAPES"); do curl -sf "http://127.0.0.1:$PORT/metrics" -o "$W/metrics.txt"; done
  grep -q '^ovs_dump_success{bridge="br-int"} 1' "$W/metrics.txt" || { echo "scrape of $1 failed" >&2; exit 1; }
}
# Resident KiB per mapping group: the binary's own mappings by permission, libc, libm, other
# libraries, heap, thread stacks ([anon] mappings of exactly 8 MiB + guard are counted as anon).
smaps_groups() { # PID
  awk -v bin="$(readlink "/proc/$1/exe")" '
    /^[0-9a-f]+-[0-9a-f]+ / { perm = $2; path = $6; n = NF
      if (path == bin) g = "bin:" perm
      else if (path ~ /\/libc\.so/) g = "libc"
      else if (path ~ /\/libm\.so/) g = "libm"
      else if (path ~ /\.so/) g = "otherlib"
      else if (path == "[heap]") g = "heap"
      else if (path == "[stack]") g = "stack"
      else if (path ~ /^\[/) g = "kernel"
      else g = "anon"
      next }
    $1 == "Rss:" { rss[g] += $2 }
    END { for (g in rss) printf "%s=%d\n", g, rss[g] }' "/proc/$1/smaps" | sort
}

# One row of results per binary and round: name start empty flows rss threads code-used (KiB).
: >"$W/rows"
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    /usr/bin/time -f "%M" -o "$W/t" ovs-ofctl --no-names dump-flows "unix:$W/flows/br-int.mgmt" >/dev/null
    echo "$(cat "$W/t")" >>"$W/ofctl.rss"
    start_exporter "$bin" "$W/empty"
    start_kb=$(status "$EXP_PID" VmHWM)
    scrape "$W/empty"
    empty_kb=$(status "$EXP_PID" VmHWM); threads=$(status "$EXP_PID" Threads)
    readlink "/proc/$EXP_PID/exe" >"$W/exe.$(echo "$bin" | md5sum | cut -c1-8)"
    [ "$round" = 1 ] && smaps_groups "$EXP_PID" >"$W/smaps.empty.$(echo "$bin" | md5sum | cut -c1-8)"
    stop_exporter
    start_exporter "$bin" "$W/flows"
    scrape "$W/flows"
    flows_kb=$(status "$EXP_PID" VmHWM); rss_kb=$(status "$EXP_PID" VmRSS)
    echo 1 >"/proc/$EXP_PID/clear_refs"
    SCRAPES=1 scrape "$W/flows"
    used_kb=$(awk -v bin="$(readlink "/proc/$EXP_PID/exe")" '/^[0-9a-f]+-[0-9a-f]+ / { x = ($2 == "r-xp" && $6 == bin) }
      x && $1 == "Referenced:" { s += $2 } END { print s + 0 }' "/proc/$EXP_PID/smaps")
    [ "$round" = 1 ] && smaps_groups "$EXP_PID" >"$W/smaps.flows.$(echo "$bin" | md5sum | cut -c1-8)"
    stop_exporter
    echo "$bin $start_kb $empty_kb $flows_kb $rss_kb $threads $used_kb" >>"$W/rows"
  done
done

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.2f", k / 1024 }'; }
text_kib() { size -A "$1" 2>/dev/null | awk '$1 == ".text" {printf "%d", $2 / 1024}'; }

echo
echo "dirty_flow_exporter baseline RSS: empty bridge and $DUMPED flows, $SCRAPES scrapes each, median of $ROUNDS round(s)"
echo "load average (1/5/15 min) after: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
echo "peer: ovs-ofctl --no-names dump-flows of $DUMPED flows, peak RSS $(mib "$(median <"$W/ofctl.rss")") MiB"
printf '%-40s %9s %10s %10s %10s %10s %7s %7s %9s\n' "binary" ".text KiB" "start MiB" "empty MiB" "flows MiB" "RSS MiB" "threads" "vs ofctl" "code used"
ofctl_kb=$(median <"$W/ofctl.rss")
for bin in "$@"; do
  col() { awk -v b="$bin" -v c="$1" '$1 == b {print $c}' "$W/rows" | median; }
  name=$(echo "$bin" | awk -F/ '{ if (NF >= 3) print $(NF-1) "/" $NF; else print $0 }')
  printf '%-40s %9s %10s %10s %10s %10s %7s %7s %9s\n' "$name" "$(text_kib "$(cat "$W/exe.$(echo "$bin" | md5sum | cut -c1-8)")")" "$(mib "$(col 2)")" \
    "$(mib "$(col 3)")" "$(mib "$(col 4)")" "$(mib "$(col 5)")" "$(col 6)" \
    "$(awk -v a="$(col 4)" -v b="$ofctl_kb" 'BEGIN { printf "%.2fx", a / b }')" "$(col 7)"
done
if [ "$SMAPS" != 0 ]; then
  echo
  echo "resident KiB per mapping (first round; empty -> $DUMPED flows):"
  for bin in "$@"; do
    h=$(echo "$bin" | md5sum | cut -c1-8)
    echo "  $bin:"
    join -a1 -a2 -e0 -t= -o 0,1.2,2.2 "$W/smaps.empty.$h" "$W/smaps.flows.$h" |
      awk -F= '{ printf "    %-12s %7d -> %7d\n", $1, $2, $3 }'
  done
fi
