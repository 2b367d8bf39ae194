#!/usr/bin/env bash
# Benchmark: lines/s and peak RSS of `log_pattern_exporter replay` over a generated 1M-line CRI
# file with 12 rules (the rule library's kind: literals, one literal + regex, one regex only),
# beside `mtail --one_shot` with the equivalent 12-counter program on the same file, in the same
# run; GNU `grep -c -E` with the union of the patterns as the floor; and the exporter with 1,000
# rules (the 12 plus 988 literal rules that never match). Every command runs RUNS times after a
# page-cache warm-up; the table shows medians (wall and user+sys CPU time: on a shared machine
# the CPU time varies less), the ratios are of those medians. The per-rule
# counts are checked: the exporter's against `grep -c` of each pattern over the logical lines
# (CRI partials joined, the CRI prefix cut), mtail's against `grep -c` over the physical lines
# (mtail does not join partials), the 1,000-rule run's against the 12-rule run's. Prints a
# table and each target as met or missed; not a pass/fail test (run by `make bench`).
#
# Env: LINES (default 1000000), RUNS (default 5), BIN (exporter binary; default
# <target>/release/log_pattern_exporter, built if missing), KEEP=1 keeps the work directory.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
LINES="${LINES:-1000000}"
RUNS="${RUNS:-5}"
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
with open(f"{work}/patterns.tsv", "w") as f:
    for name, _, _, ere in rules:
        f.write(f"{name}\t{ere}\n")
PY

# The logical lines the rules see: CRI prefix cut, P fragments joined to the next line.
awk '{ msg = $0; sub(/^[^ ]+ [^ ]+ [PF] /, "", msg); buf = buf msg; if ($3 == "F") { print buf; buf = "" } }' \
  "$LOG" >"$WORK/logical.txt"
NAMES_RE='^(reconciler_error|reconciling_deployment|object_modified|kernel_oom_killer|go_panic|go_fatal_oom|java_oom|python_traceback|messaging_timeout|nova_error|neutron_error|attempt_6)[{ ]'

# run NAME CMD...: one warm-up run (page cache), then RUNS measured runs; appends
# "wall rss user sys" per run to NAME.times and keeps the last run's output as NAME.out.
run() {
  local name="$1"; shift
  "$@" >/dev/null 2>&1 || true
  : >"$WORK/$name.times"
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f '%e %M %U %S' -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || {
      echo "$name failed:" >&2; tail -5 "$WORK/$name.err" >&2; exit 1; }
    cat "$WORK/$name.time" >>"$WORK/$name.times"
  done
}
# shellcheck source=../../../scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

run exporter "$BIN" replay --config.file "$WORK/rules.yml" "$LOG"
run exporter1 "$BIN" replay --config.file "$WORK/rules1.yml" "$LOG"
run exporter1000 "$BIN" replay --config.file "$WORK/rules1000.yml" "$LOG"
run mtail mtail --progs "$WORK/progs" --logs "$LOG" --one_shot --one_shot_format=prometheus \
  --logtostderr --address=127.0.0.1 --port="$(free_port)"
run mtail1 mtail --progs "$WORK/progs1" --logs "$LOG" --one_shot --one_shot_format=prometheus \
  --logtostderr --address=127.0.0.1 --port="$(free_port)"
# grep counts physical lines matching any pattern (a floor: no CRI parsing, no per-rule counts).
run grep grep -c -E -f "$WORK/union.ere" "$LOG"

# Reference counts per pattern: over the physical lines (what mtail sees) and the logical ones.
: >"$WORK/reference.tsv"
while IFS=$'\t' read -r name ere; do
  printf '%s\t%s\t%s\n' "$name" "$(grep -c -E -e "$ere" "$LOG" || true)" \
    "$(grep -c -E -e "$ere" "$WORK/logical.txt" || true)" >>"$WORK/reference.tsv"
done <"$WORK/patterns.tsv"

python3 - "$WORK" "$LINES" "$SIZE" "$(cat "$WORK/grep.out")" <<'PY'
import re, statistics, sys
work, lines, size, grep_lines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def med(name):
    rows = [l.split() for l in open(f"{work}/{name}.times") if l.strip()]
    return (max(statistics.median(float(r[0]) for r in rows), 0.01),
            statistics.median(int(r[1]) for r in rows),
            max(statistics.median(float(r[2]) + float(r[3]) for r in rows), 0.01))

def per_rule(name, exporter):
    counts = {}
    for l in open(f"{work}/{name}.out"):
        if exporter:
            m = re.match(r'log_pattern_matches_total\{.*?rule="([^"]+)".*\} (\S+)$', l)
        else:
            m = re.match(r'([a-z_0-9]+)(?:\{.*\})? (\S+)$', l)
        if m:
            counts[m[1]] = counts.get(m[1], 0) + int(float(m[2]))
    return counts

ref = {n: (int(p), int(q)) for n, p, q in (l.split("\t") for l in open(f"{work}/reference.tsv"))}
exp, exp1000, mt = per_rule("exporter", True), per_rule("exporter1000", True), per_rule("mtail", False)
exp1, mt1 = per_rule("exporter1", True), per_rule("mtail1", False)
total = lambda c, names: sum(c.get(n, 0) for n in names)
names = list(ref)
rows = [
    ("log_pattern_exporter replay, 1 rule", "exporter1", total(exp1, names[:1])),
    ("mtail --one_shot, 1 counter", "mtail1", total(mt1, names[:1])),
    ("log_pattern_exporter replay, 12 rules", "exporter", total(exp, names)),
    ("mtail --one_shot, 12 counters", "mtail", total(mt, names)),
    ("grep -c -E (union; floor)", "grep", f"{int(grep_lines):,} lines"),
    ("log_pattern_exporter replay, 1000 rules", "exporter1000", total(exp1000, names)),
]
runs = len(open(f"{work}/exporter.times").read().split("\n")) - 1
print(f"log_pattern bench: {lines} logical CRI lines, {size / 1e6:.1f} MB, median of {runs} runs")
print(f"{'tool':<42} {'wall s':>8} {'cpu s':>7} {'lines/s':>12} {'peak RSS MiB':>13} {'matches':>14}")
for label, name, count in rows:
    wall, rss, cpu = med(name)
    count = f"{count:,}" if isinstance(count, int) else count
    print(f"{label:<42} {wall:>8.2f} {cpu:>7.2f} {lines / wall:>12,.0f} {rss / 1024:>13.1f} {count:>14}")
(ew, er, ec), (mw, mr, mc), (gw, _, gc) = med("exporter"), med("mtail"), med("grep")
(ow, orss, _), (m1w, m1r, _), (kw, _, _) = med("exporter1"), med("mtail1"), med("exporter1000")
def target(ok):
    return "met" if ok else "MISSED"
print(f"{'ratio exporter(1) / mtail(1)':<42} speed {m1w / ow:.1f}x, peak RSS {orss / m1r:.2f}x")
print(f"{'ratio exporter(12) / mtail(12)':<42} speed {mw / ew:.1f}x (target >= 15x: {target(mw / ew >= 15)}), "
      f"peak RSS {er / mr:.2f}x (target <= 1: {target(er <= mr)})")
print(f"{'ratio exporter(12) / grep':<42} time {ew / gw:.2f}x (target <= 1.5x: {target(ew / gw <= 1.5)}), "
      f"cpu {ec / gc:.2f}x")
print(f"{'exporter, 1000 rules':<42} {lines / kw:,.0f} lines/s (target >= 1,000,000: {target(lines / kw >= 1e6)})")
bad = []
for n, (phys, logical) in ref.items():
    if exp.get(n, 0) != logical:
        bad.append(f"{n}: exporter {exp.get(n, 0)}, grep over logical lines {logical}")
    if mt.get(n, 0) != phys:
        bad.append(f"{n}: mtail {mt.get(n, 0)}, grep over physical lines {phys}")
    if exp1000.get(n, 0) != exp.get(n, 0):
        bad.append(f"{n}: 1000 rules {exp1000.get(n, 0)}, 12 rules {exp.get(n, 0)}")
extra = sum(v for k, v in exp1000.items() if k not in ref)
if extra:
    bad.append(f"the 988 never-matching rules counted {extra}")
if bad:
    print("COUNTS DIFFER:\n  " + "\n  ".join(bad))
else:
    print("counts: per rule, exporter = grep -c over logical lines, mtail = grep -c over physical "
          f"lines, 1000 rules = 12 rules; exporter - mtail = {total(exp, names) - total(mt, names):,} "
          "(matches that need CRI partials joined)")
PY
