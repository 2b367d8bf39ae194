#!/usr/bin/env bash
# Writes ../../link/symbol-order.txt, the functions dirty_flow_exporter runs to start and to scrape
# a bridge, first run first, for ld.lld's --symbol-ordering-file (see ../../build.rs): the release
# binary runs under bptrace (a breakpoint on every function, each removed when first hit) against
# an ovs-vswitchd sandbox with the demo flows and FLOWS varied flows (those of baseline_rss.sh),
# scraped 3 times. Re-run it after a dependency update or a large change, then compare with
# `flock /tmp/bench.lock bash ../baseline_rss.sh` (the "code used" and "empty" columns).
# Needs: cc, nm (binutils), openvswitch-switch, curl; x86_64 Linux.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CRATE=$(cd "$HERE/../.." && pwd)
REPO=$(cd "$CRATE/../.." && pwd)
FLOWS=${FLOWS:-20000}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BIN="$TARGET_DIR/release/dirty_flow_exporter"
OUT="$CRATE/link/symbol-order.txt"

W=$(mktemp -d /tmp/symorder.XXXXXX)
T=""
cleanup() {
  if [ -n "$T" ]; then kill "$T" 2>/dev/null || true; wait "$T" 2>/dev/null || true; fi
  "$CRATE/demo/ovs-sandbox.sh" stop "$W/ovs" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

cc -O2 -o "$W/bptrace" "$HERE/bptrace.c"
(cd "$REPO" && cargo build --release -q -p dirty_flow_exporter --bin dirty_flow_exporter)
nm -S --defined-only "$BIN" | awk 'NF == 4 && $3 ~ /^[tTwW]$/ { print $1 }' >"$W/funcs"

"$CRATE/demo/ovs-sandbox.sh" start "$W/ovs" >/dev/null 2>&1
GEN_FLOWS="$W/flows.txt" FLOWS="$FLOWS" bash "$CRATE/bench/baseline_rss.sh"
ovs-ofctl add-flows "unix:$W/ovs/br-int.mgmt" "$W/flows.txt"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
env -u RUST_BACKTRACE "$W/bptrace" "$W/funcs" "$W/hits" -- "$BIN" \
  --web.listen-address="127.0.0.1:$PORT" --ovs.rundir="$W/ovs" --log.level=warn &
T=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/-/healthy" >/dev/null && break; sleep 0.1; done
for _ in 1 2 3; do
  curl -sf "http://127.0.0.1:$PORT/metrics" | grep -q '^ovs_dump_success{bridge="br-int"} 1' ||
    { echo "scrape under bptrace failed" >&2; exit 1; }
done
kill "$T"; wait "$T" || true; T=""

# Hit addresses -> the first symbol name at each address, in hit order.
nm --defined-only "$BIN" | awk 'NF == 3 && $2 ~ /^[tTwW]$/ && !($1 in n) { n[$1] = $3 }
  END { for (a in n) print a, n[a] }' >"$W/names"
awk 'NR == FNR { n[$1] = $2; next } { a = sprintf("%16s", $1); gsub(/ /, "0", a); if (a in n) print n[a] }' \
  "$W/names" "$W/hits" >"$OUT"
echo "$(wc -l <"$OUT") functions written to $OUT"
