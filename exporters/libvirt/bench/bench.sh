#!/usr/bin/env bash
# Benchmark of libvirt_exporter (run by `make bench`, not by `make test`).
#
# A generated test-driver node with N nova domains (default 1000) served by a private libvirtd
# over a unix socket. Measures, in one run on the same daemon:
#   - the floor: the bare libvirt calls a scrape needs (list, bulk stats with NOWAIT, pin info
#     per domain), with no parsing or metrics (examples/libvirt_floor.rs), and two variants:
#     plus virDomainGetVcpus per domain, plus the per-domain stats calls that stand in for
#     the stat groups the test driver's bulk stats lack, and the floor in a process that has
#     libvirt's event loop registered (as the exporter must, for domain events);
#   - three exporters: "qemu-path" with --libvirt.stats-fallback=false (the calls it makes on
#     QEMU, whose bulk stats are complete), "qemu-every-pininfo" (the same, asking for the pin
#     info on every scrape as the floor does) and "default" (default flags: on the test driver
#     it also makes the per-domain stats calls); first scrape (every XML parsed), repeated
#     scrapes (XML cache warm) and peak RSS;
# and prints a table with the ratios repeated scrape / floor. Scrapes and floor passes
# alternate, so load from elsewhere on the machine hits all alike; the load average is printed.
set -euo pipefail

N=${N:-1000}
REPEAT=${REPEAT:-10}
CONCURRENCY=${CONCURRENCY:-8}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

cargo build --release -q -p libvirt_exporter --bin libvirt_exporter --example libvirt_floor \
  --manifest-path "$ROOT/Cargo.toml"
BIN=$TARGET/release/libvirt_exporter
FLOOR=$TARGET/release/examples/libvirt_floor

# shellcheck source=../../../scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
WORK=$(mktemp -d)
cleanup() {
  stop_spawned
  rm -rf "$WORK"
}
trap cleanup EXIT

python3 "$HERE/gen_node.py" "$N" > "$WORK/node.xml"
start_libvirtd "$WORK" "max_workers = 20"
URI="test+unix://$WORK/node.xml?socket=$LIBVIRTD_SOCK_RO"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A PORT EBIN
start_exporter() { # name, extra flags...
  local name=$1; shift
  PORT[$name]=$(free_port)
  spawn "$name" "$WORK/exporter-$name.log" "${EBIN[$name]:-$BIN}" \
    --web.listen-address="127.0.0.1:${PORT[$name]}" --libvirt.uri="$URI" --path.procfs= \
    --libvirt.concurrency="$CONCURRENCY" --log.level=warn "$@"
  wait_healthy "${PORT[$name]}" 10
}
# The first scrape is kept for the checks and counts; the timed repeats go to /dev/null, as
# Prometheus keeps no file either (writing the file costs curl time of its own).
scrape() { scrape_seconds "http://127.0.0.1:${PORT[$1]}/metrics" "${2:-$WORK/out-$1.prom}"; }

NAMES=(qemu-path qemu-every-pininfo default)
start_exporter qemu-path --libvirt.stats-fallback=false
# The same with libvirt's pin info asked for on every scrape (as the floor does), instead of on
# events and every --libvirt.pininfo-interval while a domain's XML is cached.
start_exporter qemu-every-pininfo --libvirt.stats-fallback=false --libvirt.pininfo-interval=0s
start_exporter default
for entry in ${BASELINE_BINS:-}; do
  name=${entry%%=*}
  EBIN[$name]=${entry#*=}
  NAMES+=("$name")
  start_exporter "$name" --libvirt.stats-fallback=false
done
declare -A FIRST
for n in "${NAMES[@]}"; do
  FIRST[$n]=$(scrape "$n")
  grep -q '^libvirt_up 1' "$WORK/out-$n.prom" || { echo "exporter $n not up:"; head -50 "$WORK/out-$n.prom"; exit 1; }
  : > "$WORK/repeat-$n.txt"
done
got=$(grep '^libvirt_domains ' "$WORK/out-default.prom" | awk '{print $2}')
# The floor runs as one process on one connection, a pass per line it reads (fd 3 in, 4 out);
# the same in a process with libvirt's event loop registered, as the exporter (fd 5 in, 6 out).
mkfifo "$WORK/f.in" "$WORK/f.out" "$WORK/e.in" "$WORK/e.out"
"$FLOOR" "$URI" 0 "$CONCURRENCY" <"$WORK/f.in" >"$WORK/f.out" &
PIDS+=($!)
FLOOR_EVENT_LOOP=1 "$FLOOR" "$URI" 0 "$CONCURRENCY" <"$WORK/e.in" >"$WORK/e.out" &
PIDS+=($!)
exec 3>"$WORK/f.in" 4<"$WORK/f.out" 5>"$WORK/e.in" 6<"$WORK/e.out"
read -r _ <&4
read -r _ <&6
: > "$WORK/floor-evloop.txt"
: > "$WORK/floor.txt"
: > "$WORK/repeat-gzip.txt"
for _ in $(seq "$REPEAT"); do
  for n in "${NAMES[@]}"; do scrape "$n" /dev/null >> "$WORK/repeat-$n.txt"; done
  # As Prometheus asks: gzip (curl decompresses, as Prometheus does).
  curl -s --compressed -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:${PORT[qemu-path]}/metrics" >> "$WORK/repeat-gzip.txt"
  echo go >&3
  read -r line <&4
  echo "$line" >> "$WORK/floor.txt"
  echo go >&5
  read -r line <&6
  echo "$line" >> "$WORK/floor-evloop.txt"
done
exec 3>&- 5>&-
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

floor=$(awk '{print $2}' "$WORK/floor.txt" | median)
floor_vcpus=$(awk '{print $4}' "$WORK/floor.txt" | median)
floor_stats=$(awk '{print $6}' "$WORK/floor.txt" | median)
floor_evloop=$(awk '{print $2}' "$WORK/floor-evloop.txt" | median)

# virsh, for reference: the same bulk stats as a user would fetch them.
TIMEFORMAT=%R
virsh_s=$( { time virsh -r -c "$URI" domstats --nowait >/dev/null 2>&1; } 2>&1 )

row() { printf '| %-66s | %16s |\n' "$1" "$2"; }
printf '\nlibvirt_exporter benchmark: %s nova domains (%s seen), test driver via libvirtd, concurrency %s\n' "$N" "$got" "$CONCURRENCY"
printf 'load average (1/5/15 min): %s at start, %s at end, on %s CPUs\n\n' "$load_start" "$load_end" "$(nproc)"
row "measure" "value"
printf '|%s|%s|\n' "$(printf -- '-%.0s' $(seq 68))" "$(printf -- '-%.0s' $(seq 18))"
row "floor: list + bulk stats + pin info (median of $REPEAT)" "$(printf '%.3f s' "$floor")"
row "floor + virDomainGetVcpus per domain" "$(printf '%.3f s' "$floor_vcpus")"
row "floor + per-domain stats calls (test driver only)" "$(printf '%.3f s' "$floor_stats")"
row "floor, in a process with libvirt's event loop registered" "$(printf '%.3f s' "$floor_evloop")"
for n in "${NAMES[@]}"; do
  repeat=$(median < "$WORK/repeat-$n.txt")
  row "$n: first scrape (connect, all XML)" "$(printf '%.3f s' "${FIRST[$n]}")"
  row "$n: repeated scrape (median of $REPEAT)" "$(printf '%.3f s' "$repeat")"
  row "$n: ratio repeated / floor (target <= 1.25)" "$(ratio "$repeat" "$floor")"
  # Each round's scrape beside the floor pass right after it: pairs cancel slow load swings.
  row "$n: median of the rounds' scrape / floor" "$(paste "$WORK/repeat-$n.txt" <(awk '{print $2}' "$WORK/floor.txt") | awk '{printf "%.4f\n", $1 / $2}' | median | xargs printf '%.2f')"
  row "$n: ratio repeated / floor with the event loop" "$(ratio "$repeat" "$floor_evloop")"
  if [ "$n" = default ]; then
    row "$n: ratio repeated / (floor + per-domain stats calls)" "$(ratio "$repeat" "$floor_stats")"
  fi
  row "$n: peak RSS (VmHWM)" "$(mib "$(peak_rss_kib "${PID_OF[$n]}")")"
  row "$n: series / bytes per scrape" "$(grep -vc '^#' "$WORK/out-$n.prom") / $(wc -c < "$WORK/out-$n.prom")"
done
row "qemu-path: repeated scrape with gzip, as Prometheus asks (median)" "$(printf '%.3f s' "$(median < "$WORK/repeat-gzip.txt")")"
row "virsh domstats --nowait (reference, includes connecting)" "$virsh_s s"

# The peer: kumina's exporter on the same libvirtd, at 500 domains (it lists at most 512) and 1,000.
bash "$HERE/peer.sh" "$BIN"
