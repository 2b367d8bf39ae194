#!/usr/bin/env bash
# Benchmark of libvirt_exporter (run by `make bench`, not by `make test`).
#
# A generated test-driver node with N nova domains (default 1000) served by a private libvirtd
# over a unix socket. Measures, in one run on the same daemon:
#   - the floor: the bare libvirt calls a scrape needs (list, bulk stats with NOWAIT, pin info
#     per domain), with no parsing or metrics (examples/libvirt_floor.rs);
#   - the exporter: first scrape (every XML parsed) and repeated scrapes (XML cache warm),
#     and its peak RSS;
# and prints a table with the ratio repeated scrape / floor.
set -euo pipefail

N=${N:-1000}
REPEAT=${REPEAT:-10}
CONCURRENCY=${CONCURRENCY:-4}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

cargo build --release -q -p libvirt_exporter --bin libvirt_exporter --example libvirt_floor \
  --manifest-path "$ROOT/Cargo.toml"
BIN=$TARGET/release/libvirt_exporter
FLOOR=$TARGET/release/examples/libvirt_floor

WORK=$(mktemp -d)
LIBVIRTD_PID=""
EXPORTER_PID=""
cleanup() {
  [ -n "$EXPORTER_PID" ] && kill "$EXPORTER_PID" 2>/dev/null && wait "$EXPORTER_PID" 2>/dev/null || true
  [ -n "$LIBVIRTD_PID" ] && kill "$LIBVIRTD_PID" 2>/dev/null && wait "$LIBVIRTD_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

python3 "$HERE/gen_node.py" "$N" > "$WORK/node.xml"
mkdir -p "$WORK/sock" "$WORK/drivers"
cat > "$WORK/libvirtd.conf" <<CONF
unix_sock_dir = "$WORK/sock"
auth_unix_ro = "none"
auth_unix_rw = "none"
max_workers = 20
CONF
LIBVIRT_DRIVER_DIR="$WORK/drivers" libvirtd -f "$WORK/libvirtd.conf" -p "$WORK/libvirtd.pid" \
  >"$WORK/libvirtd.log" 2>&1 &
LIBVIRTD_PID=$!
for _ in $(seq 100); do [ -S "$WORK/sock/libvirt-sock-ro" ] && break; sleep 0.1; done
URI="test+unix://$WORK/node.xml?socket=$WORK/sock/libvirt-sock-ro"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" --web.listen-address="127.0.0.1:$PORT" --libvirt.uri="$URI" --path.procfs= \
  --libvirt.concurrency="$CONCURRENCY" --log.level=warn ${EXPORTER_ARGS:-} >"$WORK/exporter.log" 2>&1 &
EXPORTER_PID=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/-/healthy" && break; sleep 0.1; done

scrape() { curl -s -o "$WORK/out.prom" -w '%{time_total}' "http://127.0.0.1:$PORT/metrics"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

first=$(scrape)
grep -q '^libvirt_up 1' "$WORK/out.prom" || { echo "exporter not up:"; head -50 "$WORK/out.prom"; exit 1; }
got=$(grep '^libvirt_domains ' "$WORK/out.prom" | awk '{print $2}')
# Scrapes and floor passes alternate, so load from elsewhere on the machine hits both alike.
: > "$WORK/repeat.txt"
: > "$WORK/floor.txt"
for _ in $(seq "$REPEAT"); do
  scrape >> "$WORK/repeat.txt"; echo >> "$WORK/repeat.txt"
  "$FLOOR" "$URI" 1 "$CONCURRENCY" >> "$WORK/floor.txt"
done
repeat=$(median < "$WORK/repeat.txt")
series=$(grep -vc '^#' "$WORK/out.prom")
bytes=$(wc -c < "$WORK/out.prom")
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$EXPORTER_PID/status")

floor=$(awk '{print $2}' "$WORK/floor.txt" | median)
floor_vcpus=$(awk '{print $4}' "$WORK/floor.txt" | median)

# virsh, for reference: the same bulk stats as a user would fetch them.
TIMEFORMAT=%R
virsh_s=$( { time virsh -r -c "$URI" domstats --nowait >/dev/null 2>&1; } 2>&1 )

ratio=$(awk -v a="$repeat" -v b="$floor" 'BEGIN {printf "%.2f", a / b}')
ratio_vcpus=$(awk -v a="$repeat" -v b="$floor_vcpus" 'BEGIN {printf "%.2f", a / b}')
printf '\nlibvirt_exporter benchmark: %s nova domains (%s seen), test driver via libvirtd, concurrency %s\n\n' "$N" "$got" "$CONCURRENCY"
printf '| %-44s | %12s |\n' "measure" "value"
printf '|%s|%s|\n' "$(printf -- '-%.0s' $(seq 46))" "$(printf -- '-%.0s' $(seq 14))"
printf '| %-44s | %10.3f s |\n' "floor: list + bulk stats + pin info (median)" "$floor"
printf '| %-44s | %10.3f s |\n' "floor + virDomainGetVcpus per domain (median)" "$floor_vcpus"
printf '| %-44s | %10.3f s |\n' "exporter: first scrape (connect, all XML)" "$first"
printf '| %-44s | %10.3f s |\n' "exporter: repeated scrape (median of $REPEAT)" "$repeat"
printf '| %-44s | %12s |\n' "ratio repeated / floor (target <= 1.25)" "$ratio"
printf '| %-44s | %12s |\n' "ratio repeated / floor with GetVcpus" "$ratio_vcpus"
printf '| %-44s | %10.1f MiB |\n' "exporter peak RSS (VmHWM)" "$(awk -v k="$rss_kb" 'BEGIN {print k/1024}')"
printf '| %-44s | %12s |\n' "series / bytes per scrape" "$series / $bytes"
printf '| %-44s | %10s s |\n' "virsh domstats --nowait (reference)" "$virsh_s"
