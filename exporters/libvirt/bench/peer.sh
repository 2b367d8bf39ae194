#!/usr/bin/env bash
# libvirt_exporter against Debian's prometheus-libvirt-exporter (kumina's, 0.2.0) on the same
# libvirtd (run by bench.sh, so by `make bench`).
#
# For each size in SIZES (default "500 1000"): a generated test-driver node (gen_node.py) served
# by a private libvirtd over a unix socket; libvirt_exporter with default flags and kumina's
# exporter with --libvirt.export-nova-metadata read it over the read-only socket. One first
# scrape each, then REPEAT rounds, each scraping both in turn (alternating, so load from
# elsewhere on the machine hits both alike). Prints per size: median repeated scrape, the
# speedup (kumina's median / ours), peak RSS (VmHWM), series and domains exported. kumina lists
# at most 512 domains, so only sizes up to 512 compare like with like.
# The test driver's bulk stats hold only the state group, so with default flags
# libvirt_exporter fills CPU time, memory, disk and interface counters with per-domain calls
# (4 per domain here), as kumina does. A third exporter in the same rounds,
# --libvirt.stats-fallback=false, makes the calls it makes on QEMU, whose bulk stats are
# complete (it exports fewer series on the test driver: no counters).
# Each repeated scrape also records the CPU time (user + system, from /proc/PID/stat) that
# libvirtd and the exporter spent during it; the rows give the mean per scrape: on a machine
# with few cores, the scrape cannot take less than the sum of both over the cores.
#
#   exporters/libvirt/bench/peer.sh [BIN]   (default target/release/libvirt_exporter)
#   SIZES="500 1000" REPEAT=15 KUMINA=/usr/bin/prometheus-libvirt-exporter
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
BIN=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/release/libvirt_exporter}
KUMINA=${KUMINA:-/usr/bin/prometheus-libvirt-exporter}
SIZES=${SIZES:-500 1000}
REPEAT=${REPEAT:-15}
if [ ! -x "$KUMINA" ]; then
  echo "peer.sh: $KUMINA not found (package prometheus-libvirt-exporter, scripts/install-deps.sh)" >&2
  exit 1
fi

# shellcheck source=../../../scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
WORK=$(mktemp -d)
cleanup() {
  stop_spawned
  rm -rf "$WORK"
}
trap cleanup EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# Scrapes url once, appending its seconds to file.txt and the CPU seconds libvirtd and the
# exporter (pid) spent meanwhile to file.cpu.
timed_scrape() { # url, pid, file prefix
  local l0 e0
  l0=$(ticks "${PID_OF[libvirtd]}")
  e0=$(ticks "$2")
  scrape_seconds "$1" >>"$3.txt"
  echo "$(($(ticks "${PID_OF[libvirtd]}") - l0)) $(($(ticks "$2") - e0))" >>"$3.cpu"
}
cpu_means() { awk -v hz="$hz" '{l += $1; e += $2} END {printf "%.3f %.3f", l / NR / hz, e / NR / hz}' "$1.cpu"; }

hwm_mib() { awk -v k="$(peak_rss_kib "$1")" 'BEGIN {printf "%.1f", k / 1024}'; }
wait_port() { # port, what (kumina has no /-/healthy)
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$1/metrics" && return 0; sleep 0.1; done
  echo "peer.sh: $2 did not answer" >&2
  exit 1
}

rows=()
for n in $SIZES; do
  dir="$WORK/$n"
  mkdir -p "$dir"
  python3 "$HERE/gen_node.py" "$n" >"$dir/node.xml"
  start_libvirtd "$dir" "max_workers = 20"
  uri="test+unix://$dir/node.xml?socket=$LIBVIRTD_SOCK_RO"

  ours_port=$(free_port)
  spawn ours "$dir/ours.log" "$BIN" --web.listen-address="127.0.0.1:$ours_port" \
    --libvirt.uri="$uri" --path.procfs= --log.level=warn
  qemu_port=$(free_port)
  spawn qemu "$dir/qemu.log" "$BIN" --web.listen-address="127.0.0.1:$qemu_port" \
    --libvirt.uri="$uri" --path.procfs= --libvirt.stats-fallback=false --log.level=warn
  kumina_port=$(free_port)
  spawn kumina "$dir/kumina.log" "$KUMINA" --web.listen-address="127.0.0.1:$kumina_port" \
    --libvirt.uri="$uri" --libvirt.export-nova-metadata
  wait_port "$ours_port" libvirt_exporter
  wait_port "$kumina_port" prometheus-libvirt-exporter
  wait_port "$qemu_port" "libvirt_exporter (QEMU's calls)"
  curl -s -o /dev/null "http://127.0.0.1:$qemu_port/metrics"

  curl -s -o "$dir/ours.prom" "http://127.0.0.1:$ours_port/metrics"
  curl -s -o "$dir/kumina.prom" "http://127.0.0.1:$kumina_port/metrics"
  grep -q '^libvirt_up 1' "$dir/ours.prom" || { echo "libvirt_exporter not up at $n" >&2; exit 1; }
  : >"$dir/ours.txt" >"$dir/kumina.txt" >"$dir/qemu.txt"
  : >"$dir/ours.cpu" >"$dir/kumina.cpu" >"$dir/qemu.cpu"
  for _ in $(seq "$REPEAT"); do
    timed_scrape "http://127.0.0.1:$ours_port/metrics" "${PID_OF[ours]}" "$dir/ours"
    timed_scrape "http://127.0.0.1:$kumina_port/metrics" "${PID_OF[kumina]}" "$dir/kumina"
    timed_scrape "http://127.0.0.1:$qemu_port/metrics" "${PID_OF[qemu]}" "$dir/qemu"
  done
  read -r o_lv o_ex <<<"$(cpu_means "$dir/ours")"
  read -r k_lv k_ex <<<"$(cpu_means "$dir/kumina")"
  o=$(median <"$dir/ours.txt")
  k=$(median <"$dir/kumina.txt")
  q=$(median <"$dir/qemu.txt")
  o_series=$(grep -vc '^#' "$dir/ours.prom")
  k_series=$(grep -vc '^#' "$dir/kumina.prom")
  o_doms=$(awk '/^libvirt_domains / {printf "%d", $2}' "$dir/ours.prom")
  k_doms=$(grep '^libvirt_domain_info_virtual_cpus{' "$dir/kumina.prom" | wc -l)
  rows+=("$(printf '| %s | %s / %s | %.3f s | %.3f s | **%.1fx** | %s / %s s | %s / %s s | %s / %s MiB | %s / %s | %.3f s (%.0fx) |' \
    "$n" "$o_doms" "$k_doms" "$o" "$k" "$(awk -v a="$k" -v b="$o" 'BEGIN {print a / b}')" \
    "$o_lv" "$k_lv" "$o_ex" "$k_ex" \
    "$(hwm_mib "${PID_OF[ours]}")" "$(hwm_mib "${PID_OF[kumina]}")" "$o_series" "$k_series" \
    "$q" "$(awk -v a="$k" -v b="$q" 'BEGIN {print a / b}')")")
  stop_spawned
done

printf '\nlibvirt_exporter (default flags) and kumina prometheus-libvirt-exporter 0.2.0, same libvirtd\n'
printf 'median of %s alternating scrapes; load average %s; %s CPUs\n\n' "$REPEAT" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)"
echo '| domains | exported: ours / kumina | ours | kumina | kumina / ours | libvirtd CPU per scrape: ours / kumina | exporter CPU per scrape: ours / kumina | peak RSS ours / kumina | series ours / kumina | ours on QEMU'"'"'s calls (kumina / it) |'
echo '|---|---|---|---|---|---|---|---|---|---|'
printf '%s\n' "${rows[@]}"
