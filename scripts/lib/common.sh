# Shell library of the demo, the benchmarks and the reference node (source it; bash only).
#
#   spawn NAME LOG CMD...     start CMD in the background, output to LOG; its PID is kept (and
#                             "NAME PID" appended to $SPAWN_RECORD when that is set)
#   stop_spawned              TERM every spawned process, KILL what is left after 10 s
#   wait_healthy PORT [SECS]  until http://127.0.0.1:PORT/-/healthy answers (default 20 s)
#   free_port                 a free TCP port on 127.0.0.1
#   scrape_seconds URL [OUT]  fetch URL (to OUT, default /dev/null); prints the seconds it took
#   peak_rss_kib PID          the process's peak resident set (VmHWM) in KiB
#   median                    the median of the numbers on stdin, one per line
#   ratio A B                 A / B with two decimals ("n/a" when B is 0)
#   mib KIB                   KiB as "N.N MiB"
#   start_libvirtd DIR [CONF] a private libvirtd (built-in test driver only) with its sockets in
#                             DIR/sock; CONF lines are appended to its config. Not root: a
#                             private D-Bus session bus too. Sets LIBVIRTD_SOCK (read-write) and
#                             LIBVIRTD_SOCK_RO (read-only: only a root libvirtd has one, else
#                             the read-write socket).
#
# Processes are stopped by PID, never by name. Callers set their own traps and call
# stop_spawned from them.

PIDS=()
declare -A PID_OF LOG_OF

spawn() { # name, logfile, command...
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  PIDS+=($!)
  PID_OF[$name]=$!
  LOG_OF[$name]=$log
  if [ -n "${SPAWN_RECORD:-}" ]; then echo "$name $!" >>"$SPAWN_RECORD"; fi
}

stop_spawned() {
  local pid alive _
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 100); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_healthy() { # port, seconds
  local _
  for _ in $(seq $((${2:-20} * 10))); do
    curl -sf -o /dev/null "http://127.0.0.1:$1/-/healthy" && return 0
    sleep 0.1
  done
  echo "nothing healthy on 127.0.0.1:$1 after ${2:-20} s" >&2
  return 1
}

scrape_seconds() { # url, output file
  curl -s -o "${2:-/dev/null}" -w '%{time_total}\n' "$1"
}

peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# The median of per-round ratios: line i of file A over line i of file B (times measured next to
# each other), which a change of load during the run moves less than the ratio of the medians.
paired_ratio() { # file A, file B
  paste "$1" "$2" | awk '$2 > 0 {print $1 / $2}' | median | awk '{printf "%.2f", $1}'
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

start_libvirtd() { # dir, config lines...
  local dir=$1 _
  shift
  mkdir -p "$dir/sock" "$dir/drivers"
  {
    echo "unix_sock_dir = \"$dir/sock\""
    echo 'auth_unix_ro = "none"'
    echo 'auth_unix_rw = "none"'
    printf '%s\n' "$@"
  } >"$dir/libvirtd.conf"
  # An empty driver dir: only the built-in test driver, no QEMU module.
  local env=(LIBVIRT_DRIVER_DIR="$dir/drivers")
  if [ "$(id -u)" != 0 ]; then
    # A session libvirtd needs a D-Bus session bus.
    command -v dbus-daemon >/dev/null 2>&1 || {
      echo "dbus-daemon not found (package dbus-daemon): libvirtd needs it when not run as root" >&2
      return 1
    }
    spawn "D-Bus session bus" "$dir/dbus.log" dbus-daemon --session --nofork --nopidfile \
      --address="unix:path=$dir/bus"
    for _ in $(seq 200); do [ -S "$dir/bus" ] && break; sleep 0.1; done
    env+=(DBUS_SESSION_BUS_ADDRESS="unix:path=$dir/bus")
  fi
  spawn libvirtd "$dir/libvirtd.log" env "${env[@]}" \
    libvirtd -f "$dir/libvirtd.conf" -p "$dir/libvirtd.pid"
  LIBVIRTD_SOCK="$dir/sock/libvirt-sock"
  LIBVIRTD_SOCK_RO=$LIBVIRTD_SOCK
  [ "$(id -u)" = 0 ] && LIBVIRTD_SOCK_RO="$dir/sock/libvirt-sock-ro"
  for _ in $(seq 200); do
    [ -S "$LIBVIRTD_SOCK" ] && [ -S "$LIBVIRTD_SOCK_RO" ] && return 0
    kill -0 "${PID_OF[libvirtd]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "libvirtd did not open its sockets in $dir/sock; the end of its log:" >&2
  tail -n 20 "$dir/libvirtd.log" >&2
  return 1
}
