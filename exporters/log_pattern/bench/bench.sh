#!/usr/bin/env bash
# Benchmark: lines/s and peak RSS of `log_pattern_exporter replay` over a generated 1M-line CRI
# file with one simple rule, beside `mtail --one_shot` with the equivalent one-counter program on
# the same file, in the same run. Prints a table; not a pass/fail test (run by `make bench`).
#
# Env: LINES (default 1000000), BIN (exporter binary; default <target>/release/log_pattern_exporter,
# built if missing), KEEP=1 keeps the work directory.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
LINES="${LINES:-1000000}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${BIN:-$TARGET/release/log_pattern_exporter}"
if [[ ! -x "$BIN" ]]; then
  (cd "$ROOT" && cargo build --release -p log_pattern_exporter)
fi
for tool in mtail /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (scripts/install-deps.sh installs it)" >&2; exit 1; }
done

WORK="$(mktemp -d)"
cleanup() { [[ "${KEEP:-0}" == 1 ]] || rm -rf "$WORK"; }
trap cleanup EXIT

# 1M CRI lines as containerd writes them; 1 in 20 is a controller-runtime "Reconciler error",
# 1 in 50 is split into a P and an F fragment.
LOG="$WORK/pods/default_controller-7d9f_0a1b2c3d/manager/0.log"
mkdir -p "$(dirname "$LOG")"
python3 - "$LOG" "$LINES" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w", buffering=1 << 20) as f:
    for i in range(n):
        ts = "2024-01-15T10:%02d:%02d.%09dZ" % ((i // 60000) % 60, (i // 1000) % 60, i * 7919 % 1000000000)
        if i % 20 == 0:
            msg = 'E0115 10:00:00.000000       1 controller.go:329] "Reconciler error" err="Operation cannot be fulfilled on pods \\"web-%d\\": the object has been modified" controller="pod" reconcileID="%08x"' % (i, i)
        else:
            msg = 'I0115 10:00:00.000000       1 reconciler.go:118] "Reconciling" controller="deployment" namespace="default" name="web-%d" reconcileID="%08x" attempt=%d' % (i, i, i % 7)
        if i % 50 == 1:
            half = len(msg) // 2
            f.write("%s stdout P %s\n%s stdout F %s\n" % (ts, msg[:half], ts, msg[half:]))
        else:
            f.write("%s stderr F %s\n" % (ts, msg))
PY
SIZE=$(stat -c %s "$LOG")
EXPECTED=$(( (LINES + 19) / 20 ))

cat > "$WORK/rules.yml" <<'YML'
rules:
  - name: reconciler_error
    contains: Reconciler error
YML
mkdir -p "$WORK/progs"
cat > "$WORK/progs/reconciler.mtail" <<'MT'
counter reconciler_errors
/Reconciler error/ {
  reconciler_errors++
}
MT

# run NAME CMD...: runs once to warm the page cache, then measured; sets WALL, RSS (KiB), OUT.
run() {
  local name="$1"; shift
  "$@" >/dev/null 2>&1 || true
  /usr/bin/time -f '%e %M' -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || {
    echo "$name failed:" >&2; tail -5 "$WORK/$name.err" >&2; exit 1; }
  read -r WALL RSS <"$WORK/$name.time"
  OUT="$WORK/$name.out"
}

run exporter "$BIN" replay --config.file "$WORK/rules.yml" "$LOG"
EXP_WALL=$WALL EXP_RSS=$RSS
EXP_COUNT=$(awk '/^log_pattern_matches_total\{/ {s += $NF} END {print s + 0}' "$OUT")
EXP_LINES=$(awk '/^log_pattern_lines_read_total / {print $NF}' "$OUT")

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run mtail mtail --progs "$WORK/progs" --logs "$LOG" --one_shot --one_shot_format=prometheus \
  --logtostderr --address=127.0.0.1 --port="$PORT"
MT_WALL=$WALL MT_RSS=$RSS
MT_COUNT=$(awk '/^reconciler_errors[{ ]/ {s += $NF} END {print s + 0}' "$OUT")

python3 - "$LINES" "$SIZE" "$EXPECTED" "$EXP_WALL" "$EXP_RSS" "$EXP_COUNT" "$EXP_LINES" "$MT_WALL" "$MT_RSS" "$MT_COUNT" <<'PY'
import sys
lines, size, expected = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ew, er, ec, el = float(sys.argv[4]), int(sys.argv[5]), int(float(sys.argv[6])), sys.argv[7]
mw, mr, mc = float(sys.argv[8]), int(sys.argv[9]), int(float(sys.argv[10]))
ew, mw = max(ew, 0.01), max(mw, 0.01)
print(f"log_pattern bench: {lines} logical CRI lines, {size / 1e6:.1f} MB, 1 rule (contains), expected matches {expected}")
print(f"{'tool':<34} {'wall s':>8} {'lines/s':>12} {'peak RSS MiB':>13} {'matches':>9}")
print(f"{'log_pattern_exporter replay':<34} {ew:>8.2f} {lines / ew:>12,.0f} {er / 1024:>13.1f} {ec:>9}")
print(f"{'mtail --one_shot':<34} {mw:>8.2f} {lines / mw:>12,.0f} {mr / 1024:>13.1f} {mc:>9}")
print(f"{'ratio (exporter / mtail)':<34} {ew / mw:>8.2f} {(lines / ew) / (lines / mw):>11.1f}x {er / mr:>12.2f}x")
if ec != expected:
    print(f"WARNING: exporter counted {ec}, expected {expected}")
if mc != expected:
    print(f"note: mtail counted {mc} (it does not join CRI partial lines), expected {expected}")
PY
