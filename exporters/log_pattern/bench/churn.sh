#!/usr/bin/env bash
# Benchmark: pod churn on a busy batch node. The release exporter follows a kubelet-style pod tree
# into which RATE short-lived pods per second are created for SECONDS (5 CRI lines each, 2
# matching; each pod's directory removed a second after its last line), at the default
# --tail.max-open-files (1024) and --tail.rotate-wait (5s), with --series.retention=RETENTION.
# Prints the pods created, the matches written and counted, descriptor errors, the files still
# open, the series of churned pods left, and the exporter's RSS before the churn, at its peak and
# once the retention has passed. Not a pass/fail test (run by `make bench`).
#
# Env: RATE (default 500), SECONDS_ (default 60), RETENTION (default 10s), BIN (exporter binary;
# default <target>/release/log_pattern_exporter, built if missing), KEEP=1 keeps the work directory.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
RATE="${RATE:-500}"
SECS="${SECONDS_:-60}"
RETENTION="${RETENTION:-10s}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${BIN:-$TARGET/release/log_pattern_exporter}"
if [[ ! -x "$BIN" ]]; then
  (cd "$ROOT" && cargo build --release -p log_pattern_exporter)
fi
command -v python3 >/dev/null || { echo "missing python3 (scripts/install-deps.sh installs it)" >&2; exit 1; }

# shellcheck source=../../../scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
WORK="$(mktemp -d)"
cleanup() {
  stop_spawned
  [[ "${KEEP:-0}" == 1 ]] || rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/pods"
cat >"$WORK/rules.yml" <<'YML'
rules:
  - name: by_namespace
    contains: ERROR
    keep_labels: [namespace]
  - name: by_pod
    contains: ERROR
YML
PORT=$(free_port)
spawn exporter "$WORK/exporter.log" "$BIN" --web.listen-address="127.0.0.1:$PORT" \
  --path.pods="$WORK/pods" --state.file="$WORK/state.json" --config.file="$WORK/rules.yml" \
  --series.retention="$RETENTION"
PID=${PID_OF[exporter]}

python3 - "$PORT" "$PID" "$WORK/pods" "$RATE" "$SECS" "$RETENTION" <<'PY'
import collections, os, re, shutil, sys, time, urllib.request

port, pid, pods, rate, secs, retention = sys.argv[1:7]
pid, rate, secs = int(pid), int(rate), int(secs)
retention_s = float(retention[:-1]) * {"s": 1, "m": 60}[retention[-1]]
TS = "2024-01-15T10:00:00.000000000Z"

def get(path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except Exception:
        return 0, ""

def rss_kib(kind="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(kind + r":\s+(\d+)", f.read()).group(1))

def scrape():
    out = {}
    for line in get("/metrics")[1].splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out

def total(m, prefix):
    return sum(v for k, v in m.items() if k.startswith(prefix))

deadline = time.time() + 30
while get("/-/ready")[0] != 200:
    if time.time() > deadline:
        sys.exit("exporter not ready")
    time.sleep(0.05)
# One pod that stays, and a warm-up wave so that the first figure is not an empty process.
keep = os.path.join(pods, "default_keeper_uid", "main")
os.makedirs(keep)
with open(os.path.join(keep, "0.log"), "w") as f:
    f.write(f"{TS} stdout F ERROR keeper\n")
time.sleep(2)
scrape()
before = rss_kib()
before_anon, before_file = rss_kib("RssAnon"), rss_kib("RssFile")
peak = before

ended = collections.deque()
written = 1
start = time.time()
n = 0
while time.time() - start < secs:
    due = int((time.time() - start) * rate)
    while n < due:
        d = os.path.join(pods, f"ns{n % 8}_churn-{n}_uid-{n}", "job")
        os.makedirs(d)
        with open(os.path.join(d, "0.log"), "w") as f:
            f.write(f"{TS} stdout F starting\n{TS} stderr F ERROR cannot reach the database\n"
                    f"{TS} stdout F retrying\n{TS} stderr F ERROR giving up\n{TS} stdout F exit 1\n")
        written += 2
        ended.append((time.time() + 1.0, os.path.dirname(d)))
        n += 1
    while ended and ended[0][0] <= time.time():
        shutil.rmtree(ended.popleft()[1])
    peak = max(peak, rss_kib())
    time.sleep(0.002)
churn = time.time() - start
while ended:
    t, d = ended.popleft()
    time.sleep(max(0.0, t - time.time()))
    shutil.rmtree(d)
# Counted once the backlog is read (before the retention drops the churned namespaces' series).
deadline = time.time() + 60
counted = 0
while True:
    m = scrape()
    counted = max(counted, total(m, 'log_pattern_matches_total{rule="by_namespace"'))
    if counted >= written or time.time() > deadline:
        break
    time.sleep(0.2)
peak = max(peak, rss_kib())
time.sleep(retention_s + 5)
m = scrape()
after = rss_kib()
after_anon, after_file = rss_kib("RssAnon"), rss_kib("RssFile")
series = sum(1 for k in m if k.startswith('log_pattern_matches_total{rule="by_pod"') and "churn-" in k)
print(f"pod churn: {n} pods in {churn:.1f} s ({n / churn:.0f}/s), each removed 1 s after its last line")
print(f"{'matches written':<40} {written:>12}")
print(f"{'matches counted':<40} {counted:>12.0f}")
tmf = m.get('log_pattern_read_errors_total{reason="too_many_files"}', 0)
print(f"{'read errors (too_many_files)':<40} {tmf:>12.0f}")
print(f"{'read errors (all)':<40} {total(m, 'log_pattern_read_errors_total{'):>12.0f}")
print(f"{'vanished before a look (dirs + files)':<40} {total(m, 'log_pattern_discovery_vanished_total{'):>12.0f}")
print(f"{'files open after':<40} {m.get('log_pattern_files_watched', -1):>12.0f}")
print(f"{'series of churned pods after retention':<40} {series:>12}")
print(f"{'RSS before / peak / after (MiB)':<40} {before / 1024:>6.1f} / {peak / 1024:.1f} / {after / 1024:.1f}")
print(f"{'RSS after - before (MiB)':<40} {(after - before) / 1024:>12.1f}")
print(f"{'  of which anonymous (heap, stacks)':<40} {(after_anon - before_anon) / 1024:>12.1f}")
print(f"{'  of which file-backed (code pages)':<40} {(after_file - before_file) / 1024:>12.1f}")
PY
