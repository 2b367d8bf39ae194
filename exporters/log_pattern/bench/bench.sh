#!/usr/bin/env bash
# Benchmark: lines/s and peak RSS of `log_pattern_exporter replay` over a generated 1M-line CRI
# file with 12 rules (the rule library's kind: literals, one literal + regex, one regex only),
# beside `mtail --one_shot` with the equivalent 12-counter program on the same file, in the same
# run; GNU `grep -c` with the union of the patterns as the floor; and the exporter with 1,000
# rules (the 12 plus 988 literal rules that never match). Prints a table; not a pass/fail test
# (run by `make bench`).
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

# The 12 rules, as (name, LogQL expression, mtail regex, ERE for grep).
python3 - "$WORK" <<'PY'
import sys
work = sys.argv[1]
rules = [
    ("reconciler_error", '{} |= "Reconciler error"', r'Reconciler error', r'Reconciler error'),
    ("reconciling_deployment", '{} |= "Reconciling" |= "controller=\\"deployment\\""', r'Reconciling.*controller="deployment"', r'Reconciling.*controller="deployment"'),
    ("object_modified", '{} |= "the object has been modified"', r'the object has been modified', r'the object has been modified'),
    ("kernel_oom_killer", '{} |= "Out of memory: Killed process"', r'Out of memory: Killed process', r'Out of memory: Killed process'),
    ("go_panic", '{} |= "panic: " |~ "^panic: "', r'^panic: ', r'^panic: '),
    ("go_fatal_oom", '{} |= "fatal error: runtime: out of memory"', r'fatal error: runtime: out of memory', r'fatal error: runtime: out of memory'),
    ("java_oom", '{} |= "java.lang.OutOfMemoryError"', r'java\.lang\.OutOfMemoryError', r'java\.lang\.OutOfMemoryError'),
    ("python_traceback", '{} |= "Traceback (most recent call last):"', r'Traceback \(most recent call last\):', r'Traceback \(most recent call last\):'),
    ("messaging_timeout", '{} |= "MessagingTimeout"', r'MessagingTimeout', r'MessagingTimeout'),
    ("nova_error", '{} |= " ERROR nova."', r' ERROR nova\.', r' ERROR nova\.'),
    ("neutron_error", '{} |= " ERROR neutron."', r' ERROR neutron\.', r' ERROR neutron\.'),
    ("attempt_6", '{} |~ "attempt=6$"', r'attempt=6$', r'attempt=6$'),
]
def yml(extra):
    out = ["rules:"]
    for name, expr, _, _ in rules:
        out.append(f"  - name: {name}\n    expr: '{expr}'")
    for i in range(extra):
        out.append(f"  - name: synthetic_{i:04d}\n    expr: '{{}} |= \"error code E{i:04d}:\"'")
    return "\n".join(out) + "\n"
open(f"{work}/rules.yml", "w").write(yml(0))
# One simple rule (the tailer's benchmark): the first rule alone, for both tools.
open(f"{work}/rules1.yml", "w").write(f"rules:\n  - name: {rules[0][0]}\n    expr: '{rules[0][1]}'\n")
open(f"{work}/rules1000.yml", "w").write(yml(1000 - len(rules)))
import os
os.makedirs(f"{work}/progs", exist_ok=True)
with open(f"{work}/progs/rules.mtail", "w") as f:
    for name, _, regex, _ in rules:
        f.write(f"counter {name}\n/{regex}/ {{\n  {name}++\n}}\n")
os.makedirs(f"{work}/progs1", exist_ok=True)
with open(f"{work}/progs1/rule.mtail", "w") as f:
    name, _, regex, _ = rules[0]
    f.write(f"counter {name}\n/{regex}/ {{\n  {name}++\n}}\n")
open(f"{work}/union.ere", "w").write("|".join(r[3] for r in rules))
PY
NAMES_RE='^(reconciler_error|reconciling_deployment|object_modified|kernel_oom_killer|go_panic|go_fatal_oom|java_oom|python_traceback|messaging_timeout|nova_error|neutron_error|attempt_6)[{ ]'

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

run exporter1 "$BIN" replay --config.file "$WORK/rules1.yml" "$LOG"
ONE_WALL=$WALL ONE_RSS=$RSS
ONE_COUNT=$(awk '/^log_pattern_matches_total\{/ {s += $NF} END {print s + 0}' "$OUT")

run exporter1000 "$BIN" replay --config.file "$WORK/rules1000.yml" "$LOG"
K_WALL=$WALL K_RSS=$RSS
K_COUNT=$(awk '/^log_pattern_matches_total\{/ {s += $NF} END {print s + 0}' "$OUT")

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run mtail mtail --progs "$WORK/progs" --logs "$LOG" --one_shot --one_shot_format=prometheus \
  --logtostderr --address=127.0.0.1 --port="$PORT"
MT_WALL=$WALL MT_RSS=$RSS
MT_COUNT=$(grep -E "$NAMES_RE" "$OUT" | awk '{s += $NF} END {print s + 0}')

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run mtail1 mtail --progs "$WORK/progs1" --logs "$LOG" --one_shot --one_shot_format=prometheus \
  --logtostderr --address=127.0.0.1 --port="$PORT"
MT1_WALL=$WALL MT1_RSS=$RSS
MT1_COUNT=$(grep -E '^reconciler_error[{ ]' "$OUT" | awk '{s += $NF} END {print s + 0}')

# grep counts physical lines matching any pattern (a floor: no CRI parsing, no per-rule counts).
run grep grep -c -E -f "$WORK/union.ere" "$LOG"
GR_WALL=$WALL GR_RSS=$RSS
GR_COUNT=$(cat "$OUT")

python3 - "$LINES" "$SIZE" "$EXP_WALL" "$EXP_RSS" "$EXP_COUNT" "$MT_WALL" "$MT_RSS" "$MT_COUNT" \
  "$GR_WALL" "$GR_RSS" "$GR_COUNT" "$K_WALL" "$K_RSS" "$K_COUNT" \
  "$ONE_WALL" "$ONE_RSS" "$ONE_COUNT" "$MT1_WALL" "$MT1_RSS" "$MT1_COUNT" <<'PY'
import sys
a = sys.argv[1:]
lines, size = int(a[0]), int(a[1])
rows = [
    ("log_pattern_exporter replay, 1 rule", float(a[14]), int(a[15]), a[16]),
    ("mtail --one_shot, 1 counter", float(a[17]), int(a[18]), a[19]),
    ("log_pattern_exporter replay, 12 rules", float(a[2]), int(a[3]), a[4]),
    ("mtail --one_shot, 12 counters", float(a[5]), int(a[6]), a[7]),
    ("grep -c -E (union; floor)", float(a[8]), int(a[9]), a[10] + " lines"),
    ("log_pattern_exporter replay, 1000 rules", float(a[11]), int(a[12]), a[13]),
]
print(f"log_pattern bench: {lines} logical CRI lines, {size / 1e6:.1f} MB")
print(f"{'tool':<42} {'wall s':>8} {'lines/s':>12} {'peak RSS MiB':>13} {'matches':>14}")
for name, wall, rss, count in rows:
    wall = max(wall, 0.01)
    print(f"{name:<42} {wall:>8.2f} {lines / wall:>12,.0f} {rss / 1024:>13.1f} {count:>14}")
ew, mw, gw = max(float(a[2]), 0.01), max(float(a[5]), 0.01), max(float(a[8]), 0.01)
ow, m1w = max(float(a[14]), 0.01), max(float(a[17]), 0.01)
print(f"{'ratio exporter(1) / mtail(1)':<42} speed {m1w / ow:.1f}x, peak RSS {int(a[15]) / int(a[18]):.2f}x")
print(f"{'ratio exporter(12) / mtail(12)':<42} speed {mw / ew:.1f}x, peak RSS {int(a[3]) / int(a[6]):.2f}x")
print(f"{'ratio exporter(12) / grep':<42} time {ew / gw:.1f}x")
if a[4] != a[7]:
    print(f"note: mtail counted {a[7]}, the exporter {a[4]} (mtail does not join CRI partial lines)")
if float(a[13]) != float(a[4]):
    print(f"WARNING: 1000 rules counted {a[13]}, 12 rules {a[4]} (the 988 extra never match)")
PY
