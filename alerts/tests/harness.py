#!/usr/bin/env python3
"""Tests of alerts/ against the real Prometheus and the real Alertmanager, on 127.0.0.1 only.

Subcommands (alerts/test.sh runs them all):
  gen         the topology generator: good and bad mappings (exit codes, file:line messages).
  lint        loads every shipped rule file into a real Prometheus and checks each alert through
              its /api/v1/rules view: severity, summary, description naming node (or rack),
              runbook_url pointing at an existing docs/runbooks/<alert>.md with its three sections,
              the rack join; and that alerts/tests/*.test.yml has a firing and a non-firing case
              for every alert.
  inhibition  posts hand-made alerts to a real Alertmanager running the shipped inhibit rules and
              checks which ones end up suppressed, including alerts missing `rack` or `node`
              (the "equal label missing on both sides" trap). A second Alertmanager with naive
              rules shows that the same cases do fall into the trap there, so the check can fail.
  golden      serves the exporters' golden exposition files (their real output) to a real
              Prometheus with the shipped rules: the libvirt alerts raised must be exactly those
              the files call for; metric names the rules use are looked up in them.
  storm       a simulated rack of 40 compute nodes x 20 VMs (+ a second rack and two rack-less
              nodes), served by a loopback HTTP server per node that can be switched off; real
              Prometheus scrapes them with the shipped rules, real Alertmanager with the shipped
              routes and inhibitions notifies a loopback webhook. Prints raw alerts against
              notifications for: one dirty flow, one node down, the whole rack down.

Time is scaled by 1/30 in the storm: 30s scrape/evaluation -> 1s, every `for`/`keep_firing_for`
of the shipped rules and Alertmanager's group_wait/group_interval divided by 30 as well.
Daemons run in a temporary directory and are stopped by PID, also on failure or Ctrl-C.
Python 3 standard library only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ALERTS = os.path.dirname(HERE)
REPO = os.path.dirname(ALERTS)
RULES_DIR = os.path.join(ALERTS, "rules")
AM_CONFIG = os.path.join(ALERTS, "alertmanager.yml")
RUNBOOKS = os.path.join(REPO, "docs", "runbooks")
GEN = os.path.join(ALERTS, "topology", "gen_rules.py")

PROMETHEUS = os.environ.get("PROMETHEUS", "prometheus")
ALERTMANAGER = os.environ.get("ALERTMANAGER", "prometheus-alertmanager")

TIME_SCALE = 30  # production seconds per test second
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK_SECTIONS = ("## Meaning", "## How to check", "## How to fix")


class Failure(Exception):
    """A test assertion or a component that did not behave."""


def log(msg):
    print(msg, flush=True)


# --- processes --------------------------------------------------------------------------------


class Daemons:
    """Starts daemons in a temp dir and stops exactly those, by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []
        self.cleanups = []  # loopback servers and the like, closed after the daemons

    def start(self, name, argv):
        logf = open(os.path.join(self.workdir, f"{name}.log"), "wb")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, cwd=self.workdir, preexec_fn=_die_with_parent)
        logf.close()
        self.procs.append((name, p))
        return p

    def check_alive(self):
        for name, p in self.procs:
            if p.poll() is not None:
                raise Failure(f"{name} (pid {p.pid}) exited with {p.returncode}:\n{self.tail(name)}")

    def tail(self, name, lines=20):
        try:
            with open(os.path.join(self.workdir, f"{name}.log"), "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop_all(self):
        self._stop_procs()
        for fn in reversed(self.cleanups):
            fn()
        self.cleanups = []

    def _stop_procs(self):
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def _die_with_parent():
    """In the child before exec: SIGTERM it when this harness dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_HANDED_OUT = set()


def rebindable_port():
    """A free loopback port outside the kernel's ephemeral range, so that no outgoing connection
    (Prometheus opens one per scrape) can take it while a simulated node is switched off and the
    node can listen on it again."""
    import random

    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    candidates = [p for p in range(10000, 65536) if not lo <= p <= hi and p not in _HANDED_OUT]
    for p in random.sample(candidates, min(500, len(candidates))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", p))
                _HANDED_OUT.add(p)
                return p
            except OSError:
                continue
    raise Failure("no free loopback port outside the ephemeral range")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, data=None, timeout=5):
    body = None
    headers = {}
    if data is not None:
        body = json.dumps(data).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw.strip() else None


def wait_until(desc, pred, timeout, interval=0.25, daemons=None):
    deadline = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < deadline:
        if daemons:
            daemons.check_alive()
        try:
            v = pred()
            if v:
                return v
        except (urllib.error.URLError, ConnectionError, OSError, ValueError) as e:
            last_err = e
        time.sleep(interval)
    raise Failure(f"timed out after {timeout}s waiting for {desc}" + (f" (last error: {last_err})" if last_err else ""))


def with_workdir(fn):
    """Runs fn(daemons) in a fresh temp dir; always stops the daemons and removes the dir."""
    workdir = tempfile.mkdtemp(prefix="alerts-test-")
    daemons = Daemons(workdir)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, on_signal)
    try:
        return fn(daemons)
    finally:
        daemons.stop_all()
        signal.signal(signal.SIGTERM, old)
        if os.environ.get("KEEP_TMP"):
            log(f"  (kept {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# --- durations and config rewriting -----------------------------------------------------------

_DUR = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(s):
    s = s.strip().strip("\"'")
    pos, total = 0, 0.0
    for m in _DUR.finditer(s):
        if m.start() != pos:
            raise ValueError(f"bad duration {s!r}")
        total += int(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"bad duration {s!r}")
    return total


def fmt_duration(seconds):
    ms = max(1, int(round(seconds * 1000)))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def scale_rule_durations(text, factor):
    """Divides every `for:`, `keep_firing_for:` and group `interval:` of a rule file by factor (at
    least 1s)."""

    def sub(m):
        return m.group(1) + fmt_duration(max(1.0, parse_duration(m.group(2)) / factor))

    return re.sub(r"^(\s*(?:for|keep_firing_for|interval):\s*)(\S+)\s*$", sub, text, flags=re.M)


def am_test_config(shipped, hook_base, factor):
    """The shipped Alertmanager config with scaled group timings and every receiver replaced by a
    loopback webhook `<hook_base>/<receiver name>`. Routes and inhibit rules stay verbatim."""
    m = re.search(r"^receivers:\s*$", shipped, flags=re.M)
    if not m:
        raise Failure("alertmanager.yml: no top-level `receivers:` section")
    head, section = shipped[: m.start()], shipped[m.end():]
    if re.search(r"^[A-Za-z_]", section, flags=re.M):
        raise Failure("alertmanager.yml: `receivers:` must be the last top-level section")
    names = re.findall(r"^  - name:\s*(\S+)\s*$", section, flags=re.M)
    if not names:
        raise Failure("alertmanager.yml: no receivers found")

    def scale(m):
        return m.group(1) + fmt_duration(max(1.0, parse_duration(m.group(2)) / factor))

    head = re.sub(r"^(\s*(?:group_wait|group_interval):\s*)(\S+)\s*$", scale, head, flags=re.M)
    # No repeats during a test run.
    head = re.sub(r"^(\s*repeat_interval:\s*)(\S+)\s*$", r"\g<1>1h", head, flags=re.M)
    out = [head.rstrip("\n"), "", "receivers:"]
    for n in names:
        out += [
            f"  - name: {n}",
            "    webhook_configs:",
            f"      - url: {json.dumps(hook_base + '/' + n)}",
            "        send_resolved: true",
        ]
    return "\n".join(out) + "\n", names


# --- webhook receiver -------------------------------------------------------------------------


class Webhook:
    """Records every notification Alertmanager delivers: (monotonic time, receiver, payload)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.notes = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"unparsable": body.decode("utf-8", "replace")}
                with outer.lock:
                    outer.notes.append((time.monotonic(), self.path.strip("/"), payload))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def since(self, t0):
        with self.lock:
            return [n for n in self.notes if n[0] >= t0]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --- Prometheus / Alertmanager helpers -------------------------------------------------------


def start_prometheus(daemons, config, rule_texts):
    d = os.path.join(daemons.workdir, "prometheus")
    os.makedirs(os.path.join(d, "rules"), exist_ok=True)
    for name, text in rule_texts.items():
        with open(os.path.join(d, "rules", name), "w") as f:
            f.write(text)
    config = dict(config)
    config["rule_files"] = [os.path.join(d, "rules", "*.yml")]
    with open(os.path.join(d, "prometheus.yml"), "w") as f:
        json.dump(config, f, indent=1)  # JSON is YAML
    port = free_port()
    daemons.start(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={d}/prometheus.yml",
            f"--storage.tsdb.path={d}/data",
            f"--web.listen-address=127.0.0.1:{port}",
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    wait_until("Prometheus ready", lambda: urllib.request.urlopen(url + "/-/ready", timeout=2).status == 200, 30, daemons=daemons)
    return url


def start_alertmanager(daemons, name, config_text):
    d = os.path.join(daemons.workdir, name)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "alertmanager.yml")
    with open(cfg, "w") as f:
        f.write(config_text)
    port = free_port()
    daemons.start(
        name,
        [
            ALERTMANAGER,
            f"--config.file={cfg}",
            f"--storage.path={d}/data",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(f"{name} ready", lambda: urllib.request.urlopen(url + "/-/ready", timeout=2).status == 200, 30, daemons=daemons)
    return url


def prom_query(url, q):
    r = http(url + "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
    return r["data"]["result"]


def prom_alerts(url, state="firing"):
    return [a for a in http(url + "/api/v1/alerts")["data"]["alerts"] if a["state"] == state]


def am_alerts(url):
    return http(url + "/api/v2/alerts")


def shipped_rules(group_interval=None):
    """The shipped rule files by name; with group_interval, every group's own `interval:` set to
    it (tests that evaluate every second must not wait for the fast lane's 15 s)."""
    out = {}
    for n in sorted(os.listdir(RULES_DIR)):
        if n.endswith(".yml"):
            with open(os.path.join(RULES_DIR, n)) as f:
                out[n] = f.read()
            if group_interval:
                out[n] = re.sub(r"^(\s*interval:\s*)\S+", r"\g<1>" + group_interval, out[n], flags=re.M)
    return out


# --- gen ---------------------------------------------------------------------------------------


def cmd_gen(_args):
    def run(text, *extra):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text)
            path = f.name
        try:
            p = subprocess.run([sys.executable, GEN, path, *extra], capture_output=True, text=True)
            return p.returncode, p.stdout, p.stderr.replace(path, "MAP")
        finally:
            os.unlink(path)

    cases = [
        ("good", "# c\nn1 r1\n\nn2  r1  # trailing\nn3\tr2\n", 0, ""),
        ("duplicate node", "n1 r1\nn1 r2\n", 2, "MAP:2: node 'n1' already mapped on line 1"),
        ("three fields", "n1 r1 x\n", 2, "MAP:1: expected '<node> <rack>'"),
        ("bad name", "n1 \"r1\"\n", 2, "MAP:1: invalid rack name"),
        ("empty", "# nothing\n", 2, "no '<node> <rack>' lines"),
    ]
    for name, text, rc, err in cases:
        got_rc, out, got_err = run(text)
        if got_rc != rc or err not in got_err:
            raise Failure(f"gen {name}: rc {got_rc} (want {rc}), stderr {got_err!r} (want {err!r})")
        if rc == 0:
            for node, rack in (("n1", "r1"), ("n2", "r1"), ("n3", "r2")):
                if f'labels: {{node: "{node}", rack: "{rack}"}}' not in out:
                    raise Failure(f"gen good: {node}->{rack} missing in output:\n{out}")
            if out.count("record: topology_static_node_rack_info") != 3:
                raise Failure("gen good: expected 3 rules")
        log(f"  ok  gen: {name}")


# --- lint --------------------------------------------------------------------------------------


def test_coverage():
    """alertname -> {"fire", "quiet"} from the promtool test files (exp_alerts non-empty / [])."""
    cov = {}
    for n in sorted(os.listdir(HERE)):
        if not n.endswith(".test.yml"):
            continue
        current = None
        with open(os.path.join(HERE, n)) as f:
            for line in f:
                m = re.match(r"^\s*(?:-\s*)?alertname:\s*(\S+)\s*$", line)
                if m:
                    current = m.group(1)
                    continue
                m = re.match(r"^\s*exp_alerts:\s*(.*?)\s*$", line)
                if m and current:
                    cov.setdefault(current, set()).add("quiet" if m.group(1) == "[]" else "fire")
                    current = None
    return cov


def cmd_lint(_args):
    def body(daemons):
        url = start_prometheus(daemons, {"global": {"evaluation_interval": "1m"}}, shipped_rules())
        groups = wait_until("rules loaded", lambda: http(url + "/api/v1/rules")["data"]["groups"], 20, daemons=daemons)
        alerts = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
        if not alerts:
            raise Failure("no alerting rules loaded")
        cov = test_coverage()
        problems = []
        names = set()
        for r in alerts:
            name, labels, ann, q = r["name"], r.get("labels", {}), r.get("annotations", {}), r["query"]
            if name in names:
                problems.append(f"{name}: defined twice")
            names.add(name)
            sev = labels.get("severity", "")
            if sev not in SEVERITIES and "{{" not in sev:
                problems.append(f"{name}: severity {sev!r} not one of {sorted(SEVERITIES)}")
            for a in ("summary", "description", "runbook_url"):
                if not ann.get(a):
                    problems.append(f"{name}: annotation {a} missing")
            loc = "$labels.rack" if name == "RackDown" else "$labels.node"
            if loc not in ann.get("description", ""):
                problems.append(f"{name}: description does not name {loc}")
            # ExporterTargetWithoutNodeLabel is about a target that has no node, hence no rack.
            if name not in ("RackDown", "ExporterTargetWithoutNodeLabel") and "$labels.rack" not in ann.get("description", ""):
                problems.append(f"{name}: description does not name $labels.rack")
            want = f"/docs/runbooks/{name}.md"
            if not ann.get("runbook_url", "").endswith(want):
                problems.append(f"{name}: runbook_url {ann.get('runbook_url')!r} does not end in {want}")
            path = os.path.join(RUNBOOKS, f"{name}.md")
            if not os.path.isfile(path):
                problems.append(f"{name}: runbook {os.path.relpath(path, REPO)} missing")
            else:
                with open(path) as f:
                    text = f.read()
                for s in RUNBOOK_SECTIONS:
                    if s not in text:
                        problems.append(f"{name}: runbook lacks section {s!r}")
            # NodeNotScraped reads the rack from the mapping itself; the other has no node at all.
            if name not in ("ExporterTargetWithoutNodeLabel", "NodeNotScraped") and "topology:node_rack:info" not in q:
                problems.append(f"{name}: expression not joined with topology:node_rack:info (no rack label)")
            got = cov.get(name, set())
            for case in ("fire", "quiet"):
                if case not in got:
                    problems.append(f"{name}: no promtool test case where it must {'fire' if case == 'fire' else 'not fire'}")
        # The storm ladder (availability.rules.yml): RackDown before NodeDown before ExporterDown.
        dur = {r["name"]: r.get("duration", 0) for r in alerts}
        ladder = [dur.get(n) for n in ("RackDown", "NodeDown", "ExporterDown")]
        if None in ladder or not ladder[0] < ladder[1] < ladder[2]:
            problems.append(f"`for` of RackDown < NodeDown < ExporterDown does not hold: {ladder}")
        # Runbooks: none without its alert, and the index lists every one.
        with open(os.path.join(RUNBOOKS, "README.md")) as f:
            index = f.read()
        for n in sorted(os.listdir(RUNBOOKS)):
            if n.endswith(".md") and n != "README.md":
                if n[:-3] not in names:
                    problems.append(f"docs/runbooks/{n}: no alert of that name")
                if f"({n})" not in index:
                    problems.append(f"docs/runbooks/README.md does not list {n}")
        for extra in sorted(set(cov) - names):
            problems.append(f"tests name alert {extra!r} that no rule defines")
        for p in problems:
            log(f"  FAIL lint: {p}")
        if problems:
            raise Failure(f"{len(problems)} lint problem(s)")
        log(f"  ok  lint: {len(alerts)} alerts: severity, summary, description with node/rack, runbook, rack join, fire+quiet tests")

    with_workdir(body)


# --- inhibition --------------------------------------------------------------------------------

NAIVE_INHIBIT = """inhibit_rules:
  - source_matchers: [alertname="RackDown"]
    target_matchers: [alertname!="RackDown"]
    equal: [rack]
  - source_matchers: [alertname="NodeDown"]
    target_matchers: [alertname!="NodeDown"]
    equal: [node]
"""

# (case id, labels, expected state with the shipped rules, expected state with the naive rules).
# Under the naive rules every alert without `rack` is silenced by the rack-less RackDown S4 (and
# every alert without `node` by S5): that is the trap the shipped matchers close.
INHIBIT_CASES = [
    # sources
    ("S1", {"alertname": "RackDown", "rack": "r1"}, "active", "suppressed"),
    ("S2", {"alertname": "NodeDown", "node": "n5", "rack": "r2"}, "active", "active"),
    ("S3", {"alertname": "NodeDown", "node": "lone-1"}, "active", "suppressed"),
    # malformed sources, e.g. from a hand-written rule or another Prometheus: no rack / no node.
    ("S4", {"alertname": "RackDown"}, "active", "suppressed"),
    ("S5", {"alertname": "NodeDown"}, "active", "suppressed"),
    ("S6", {"alertname": "LibvirtDown", "instance": "n7:9177", "node": "n7"}, "active", "suppressed"),
    # node alerts under the down rack r1 (NodeDown included)
    ("T1", {"alertname": "ExporterDown", "node": "n1", "rack": "r1", "job": "libvirt"}, "suppressed", "suppressed"),
    ("T2", {"alertname": "NodeDown", "node": "n2", "rack": "r1"}, "suppressed", "suppressed"),
    # another rack: never inhibited across racks
    ("T3", {"alertname": "OvsDirtyFlows", "node": "n3", "rack": "r3"}, "active", "active"),
    # same rack as the down node n5, another node: never across nodes
    ("T4", {"alertname": "OvsDirtyFlows", "node": "n6", "rack": "r2"}, "active", "active"),
    ("T5", {"alertname": "OvsDirtyFlows", "node": "n5", "rack": "r2"}, "suppressed", "suppressed"),
    # THE TRAP: a rack-less alert of another node, and an alert with neither node nor rack.
    ("T6", {"alertname": "OvsDirtyFlows", "node": "lone-2"}, "active", "suppressed"),
    ("T8", {"alertname": "ClusterWideProblem"}, "active", "suppressed"),
    # rack-less alert of the rack-less down node lone-1: inhibited by node name, as it should be
    ("T7", {"alertname": "OvsDirtyFlows", "node": "lone-1"}, "suppressed", "suppressed"),
    # same node name in another rack: not the node that is down
    ("T9", {"alertname": "OvsDirtyFlows", "node": "n5", "rack": "r9"}, "active", "suppressed"),
    # libvirt down silences that exporter's failing collectors, not another node's
    ("T10", {"alertname": "ExporterCollectorFailing", "instance": "n7:9177", "node": "n7", "collector": "domains"}, "suppressed", "suppressed"),
    ("T11", {"alertname": "ExporterCollectorFailing", "instance": "n8:9177", "node": "n8", "collector": "domains"}, "active", "suppressed"),
    ("S8", {"alertname": "OvsFlowDumpFailing", "instance": "n8:9852", "node": "n8", "bridge": "br-int"}, "active", "suppressed"),
    ("T14", {"alertname": "ExporterCollectorFailing", "instance": "n8:9852", "node": "n8", "collector": "flows"}, "suppressed", "suppressed"),
    # Fluent Bit: expired retries silence the dropped-records alert of the same output only
    ("S7", {"alertname": "FluentBitRetriesFailing", "instance": "n7:2020", "node": "n7", "name": "forward.0"}, "active", "suppressed"),
    ("T12", {"alertname": "FluentBitRecordsDropped", "instance": "n7:2020", "node": "n7", "name": "forward.0"}, "suppressed", "suppressed"),
    ("T13", {"alertname": "FluentBitRecordsDropped", "instance": "n7:2020", "node": "n7", "name": "es.0"}, "active", "suppressed"),
]


def check_inhibition(am_url, column):
    now = time.time()
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + "Z"
    posted = [
        {"labels": dict(labels, case=cid), "annotations": {"summary": cid}, "startsAt": iso(now - 60), "endsAt": iso(now + 600)}
        for cid, labels, _, _ in INHIBIT_CASES
    ]
    http(am_url + "/api/v2/alerts", posted)
    want = {cid: (ship if column == 0 else naive) for cid, _, ship, naive in INHIBIT_CASES}

    def states():
        got = {a["labels"]["case"]: a["status"]["state"] for a in am_alerts(am_url)}
        return got if got == want else None

    try:
        wait_until("inhibition states", states, 10)
    except Failure:
        got = {a["labels"]["case"]: a["status"]["state"] for a in am_alerts(am_url)}
        bad = [f"{c}: {got.get(c)} (want {want[c]})" for c in want if got.get(c) != want[c]]
        raise Failure("; ".join(bad))
    return want


def cmd_inhibition(_args):
    with open(AM_CONFIG) as f:
        shipped = f.read()

    def body(daemons):
        hook = Webhook()
        try:
            cfg, _ = am_test_config(shipped, f"http://127.0.0.1:{hook.port}", TIME_SCALE)
            naive = re.sub(r"^inhibit_rules:.*?(?=^\S)", NAIVE_INHIBIT, cfg, flags=re.M | re.S)
            if naive == cfg:
                raise Failure("could not build the naive control config")
            am = start_alertmanager(daemons, "alertmanager-shipped", cfg)
            am_naive = start_alertmanager(daemons, "alertmanager-naive", naive)
            states = check_inhibition(am, 0)
            sup = sorted(c for c, s in states.items() if s == "suppressed")
            log(f"  ok  inhibition (shipped rules): {len(states)} cases, suppressed exactly {', '.join(sup)}")
            log("      rack-less alerts of other nodes (T6) and alerts without node/rack (T8) stay active")
            states = check_inhibition(am_naive, 1)
            trapped = [c for c in ("T6", "T8", "T9", "T11") if states[c] == "suppressed"]
            log(f"  ok  inhibition (naive control rules): the trap is real there, {', '.join(trapped)} wrongly suppressed")
        finally:
            hook.close()

    with_workdir(body)


# --- storm: simulated nodes -------------------------------------------------------------------

JOBS = ("libvirt", "ovs", "log_pattern", "fluentbit")
VMS_PER_NODE = 20


class SimNode:
    """One compute node's exporters on one loopback port (/metrics/<job>); switchable off/on.
    Off closes the listening socket, so Prometheus gets "connection refused" like a dead node."""

    def __init__(self, name, rack):
        self.name, self.rack = name, rack
        self.port = rebindable_port()
        self.server = None
        self.dirty = False
        self.lines_read = 0
        self.static = {job: self._static(job) for job in JOBS}

    def _static(self, job):
        n = self.name
        vms = [f"instance-{n}-{i:04x}" for i in range(VMS_PER_NODE)]
        L = []
        if job == "libvirt":
            L.append("libvirt_up 1")
            for i, d in enumerate(vms):
                L += [
                    f'libvirt_domain_info_state{{domain="{d}",state_desc="the domain is running"}} 1',
                    f'libvirt_domain_vcpu_current{{domain="{d}"}} 4',
                    f'libvirt_domain_memory_stats_maximum_bytes{{domain="{d}"}} 8589934592',
                    f'libvirt_domain_memory_stats_current_balloon_bytes{{domain="{d}"}} 8589934592',
                    f'libvirt_domain_info_cpu_time_seconds_total{{domain="{d}"}} {1000 + i}',
                    f'libvirt_domain_openstack_info{{domain="{d}",instance_id="{i:08d}-0000-4000-8000-000000000000",flavor_name="m1.large",project_name="demo"}} 1',
                    f'libvirt_domain_block_stats_read_bytes_total{{domain="{d}",target_device="vda"}} {i * 4096}',
                    f'libvirt_domain_interface_stats_receive_bytes_total{{domain="{d}",target_device="tap{i:03d}"}} {i * 1500}',
                    f'libvirt_domain_pinning_info{{domain="{d}",dedicated_vcpus="0-3",dedicated_cpus="{4 * i}-{4 * i + 3}"}} 1',
                ]
            L += self._framework("libvirt", ("domains", "host", "pinning"))
        elif job == "ovs":
            L.append('ovs_dump_success{bridge="br-int"} 1')
            for t in range(4):
                L.append(f'ovs_flows{{bridge="br-int",table="{t}"}} {100 + t}')
            L += self._framework("ovs", ("flows",))
        elif job == "log_pattern":
            for r in ("nova_error", "kernel_oom_killer"):
                L.append(f'log_pattern_rule_info{{rule="{r}",alert="true",severity=""}} 1')
                L.append(f'log_pattern_matches_total{{rule="{r}",namespace="openstack",pod="nova-compute-{n}",container="nova-compute"}} 0')
            L.append("log_pattern_backlog_bytes 0")
            L.append("log_pattern_state_save_failures_total 0")
            L.append('log_pattern_parse_errors_total{format="cri"} 0')
            for le in ("0.1", "1", "10", "60", "+Inf"):
                L.append(f'log_pattern_event_lag_seconds_bucket{{le="{le}"}} 1000')
            L += self._framework("log_pattern", ("pods",))
        elif job == "fluentbit":
            L += [
                f'fluentbit_uptime{{hostname="{n}"}} 1000',
                'fluentbit_input_storage_chunks_up{name="tail.0"} 3',
                'fluentbit_output_retries_failed_total{name="forward.0"} 0',
                'fluentbit_output_dropped_records_total{name="forward.0"} 0',
            ]
        return "\n".join(L) + "\n"

    @staticmethod
    def _framework(prefix, collectors):
        L = [f'{prefix}_build_info{{version="0.1.0",revision="test",rustc="1.85"}} 1']
        for c in collectors:
            L.append(f'{prefix}_scrape_collector_success{{collector="{c}"}} 1')
            L.append(f'{prefix}_scrape_collector_duration_seconds{{collector="{c}"}} 0.002')
        return L

    def exposition(self, job):
        text = self.static[job]
        if job == "ovs":
            for check in ("missing_port", "stale_cookie", "overlap"):
                v = 1 if (self.dirty and check == "missing_port") else 0
                text += f'ovs_dirty_flows{{bridge="br-int",check="{check}"}} {v}\n'
            if self.dirty:
                text += (
                    'ovs_dirty_flow_info{bridge="br-int",check="missing_port",table="0",priority="100",'
                    'cookie="0x1234",flow="priority=100,in_port=77 actions=output:99"} 1\n'
                )
        elif job == "log_pattern":
            self.lines_read += 100
            text += f"log_pattern_lines_read_total {self.lines_read}\n"
            text += f"log_pattern_state_last_save_timestamp_seconds {time.time():.3f}\n"
        return text

    def up(self):
        node = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                job = self.path.rsplit("/", 1)[-1]
                if job not in JOBS:
                    self.send_error(404)
                    return
                body = node.exposition(job).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.server = srv

    def down(self):
        srv, self.server = self.server, None
        if srv:
            srv.shutdown()
            srv.server_close()


def parallel(fn, items):
    ts = [threading.Thread(target=fn, args=(i,)) for i in items]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def note_alerts(note):
    return note[2].get("alerts", [])


def describe_notes(notes):
    out = []
    for _, recv, p in notes:
        names = sorted({a["labels"].get("alertname") for a in p.get("alerts", [])})
        out.append(f"{recv}:{p.get('status')}:{','.join(names)}:{json.dumps(p.get('groupLabels', {}), sort_keys=True)}x{len(p.get('alerts', []))}")
    return out


def cmd_storm(args):
    with open(AM_CONFIG) as f:
        shipped_am = f.read()
    racks = {"r1": [f"r1-n{i:02d}" for i in range(1, args.nodes + 1)], "r2": ["r2-n01", "r2-n02", "r2-n03"]}
    loners = ["lone-01", "lone-02"]  # in no rack: their alerts carry no `rack`
    nodes = {n: SimNode(n, r) for r, ns in racks.items() for n in ns}
    nodes.update({n: SimNode(n, None) for n in loners})
    results = []

    def body(daemons):
        hook = Webhook()
        try:
            run_storm(daemons, hook, shipped_am, racks, loners, nodes, results)
        finally:
            hook.close()
            parallel(lambda n: n.down(), list(nodes.values()))

    t_start = time.monotonic()
    with_workdir(body)
    log("")
    log("  storm summary (raw = alerts firing in Prometheus; AM = active/suppressed in Alertmanager)")
    log(f"  {'scenario':<34} {'raw':>5} {'AM act/sup':>11} {'notifications':>14}  {'limit':<6} first notification after")
    for r in results:
        first = "" if r.get("first") is None else f"{r['first']:.1f}s (x{TIME_SCALE} = {r['first'] * TIME_SCALE / 60:.1f} min in production)"
        log(f"  {r['name']:<34} {r['raw']:>5} {r['am']:>11} {r['notes']:>14}  {r['limit']:<6} {first}")
    log(f"  wall time {time.monotonic() - t_start:.0f}s")


def run_storm(daemons, hook, shipped_am, racks, loners, nodes, results):
    parallel(lambda n: n.up(), list(nodes.values()))

    # Rack r1 through the static mapping and the shipped generator; rack r2 through
    # kube-state-metrics' kube_node_labels (a loopback target); rack-less nodes in neither.
    mapping = os.path.join(daemons.workdir, "node-rack.txt")
    with open(mapping, "w") as f:
        for n in racks["r1"]:
            f.write(f"{n} r1\n")
    ksm_text = "".join(
        f'kube_node_labels{{node="{n}",label_topology_kubernetes_io_rack="r2",label_kubernetes_io_os="linux"}} 1\n' for n in racks["r2"]
    ) + 'kube_node_labels{node="lone-01",label_kubernetes_io_os="linux"} 1\n'

    class KSM(BaseHTTPRequestHandler):
        def do_GET(self):
            b = ksm_text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)

        def log_message(self, *a):
            pass

    ksm = ThreadingHTTPServer(("127.0.0.1", 0), KSM)
    ksm.daemon_threads = True
    threading.Thread(target=ksm.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    daemons.cleanups.append(lambda: (ksm.shutdown(), ksm.server_close()))
    topo = subprocess.run([sys.executable, GEN, mapping], capture_output=True, text=True, check=True).stdout

    rules = {n: scale_rule_durations(t, TIME_SCALE) for n, t in shipped_rules().items()}
    rules["topology-static.yml"] = topo
    am_cfg, receivers = am_test_config(shipped_am, f"http://127.0.0.1:{hook.port}", TIME_SCALE)
    if os.environ.get("STORM_MUTATE") == "no-inhibit":
        # Self-check of this test: without the inhibit rules the limits must be exceeded.
        am_cfg = re.sub(r"^inhibit_rules:.*?(?=^\S)", "inhibit_rules: []\n", am_cfg, flags=re.M | re.S)
        log("  MUTATED: inhibit rules removed; this run is expected to FAIL")
    am = start_alertmanager(daemons, "alertmanager", am_cfg)
    am_port = am.rsplit(":", 1)[1]
    scrape = []
    for job in JOBS:
        scrape.append(
            {
                "job_name": job,
                "metrics_path": f"/metrics/{job}",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{n.port}"], "labels": {"node": n.name}} for n in nodes.values()
                ],
            }
        )
    scrape.append({"job_name": "kube-state-metrics", "static_configs": [{"targets": [f"127.0.0.1:{ksm.server_address[1]}"]}]})
    prom = start_prometheus(
        daemons,
        {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": scrape,
        },
        rules,
    )
    n_targets = len(nodes) * len(JOBS) + 1
    rack_nodes = racks["r1"]
    log(f"  storm: {len(rack_nodes)} nodes x {VMS_PER_NODE} VMs in rack r1 (static mapping), {len(racks['r2'])} in r2 "
        f"(kube_node_labels), {len(loners)} rack-less; {n_targets} targets; receivers {', '.join(receivers)}")

    def count(q):
        r = prom_query(prom, q)
        return int(float(r[0]["value"][1])) if r else 0

    wait_until(f"all {n_targets} targets up", lambda: count("count(up == 1)") == n_targets, 60, daemons=daemons)
    wait_until("rack mapping evaluated", lambda: count('count(topology:node_rack:info{rack!=""})') == sum(map(len, racks.values())), 30, daemons=daemons)
    # Healthy fleet: a few evaluation rounds with nothing pending or firing.
    time.sleep(3)
    noisy = prom_alerts(prom, "firing") + prom_alerts(prom, "pending")
    if noisy:
        raise Failure("alerts on a healthy fleet: " + ", ".join(sorted({a["labels"]["alertname"] for a in noisy})))
    log("  ok  healthy fleet: no alert pending or firing")

    settle = parse_duration(re.search(r"group_interval:\s*(\S+)", am_cfg).group(1)) + 2

    def am_summary(pred=lambda a: True):
        al = [a for a in am_alerts(am) if pred(a["labels"])]
        act = sum(1 for a in al if a["status"]["state"] == "active")
        sup = sum(1 for a in al if a["status"]["state"] == "suppressed")
        return act, sup

    def firing_notes(t0, pred=lambda note: True):
        return [n for n in hook.since(t0) if n[2].get("status") == "firing" and pred(n)]

    def quiet(t_recover, what, resolved_for):
        """Waits until nothing fires, Alertmanager holds no alert and every group that notified
        `firing` has sent its `resolved` notification, so that no scenario leaks into the next.
        resolved_for: the (alertname, node) pairs whose resolution must be notified."""
        wait_until(f"{what}: alerts resolved", lambda: not prom_alerts(prom, "firing") and not prom_alerts(prom, "pending"), 40, daemons=daemons)
        wait_until(f"{what}: Alertmanager empty", lambda: not am_alerts(am), 30, daemons=daemons)

        def all_resolved():
            got = {(x["labels"].get("alertname"), x["labels"].get("node")) for n in hook.since(t_recover)
                   if n[2].get("status") == "resolved" for x in note_alerts(n)}
            return set(resolved_for) <= got

        wait_until(f"{what}: resolved notifications", all_resolved, settle + 5, daemons=daemons)
        bad = firing_notes(t_recover)
        if bad:
            raise Failure(f"{what}: recovery sent firing notifications: {describe_notes(bad)}")
        return [n for n in hook.since(t_recover) if n[2].get("status") == "resolved"]

    # --- 1. one dirty flow on one node ------------------------------------------------------
    victim = nodes[rack_nodes[6]]
    t0 = time.monotonic()
    victim.dirty = True
    wait_until("OvsDirtyFlows firing", lambda: any(a["labels"]["alertname"] == "OvsDirtyFlows" for a in prom_alerts(prom)), 20, daemons=daemons)
    wait_until("a notification", lambda: firing_notes(t0), 20, daemons=daemons)
    raw = len(prom_alerts(prom))
    act, sup = am_summary()
    time.sleep(settle)
    notes = firing_notes(t0)
    results.append({"name": "one dirty flow on one node", "raw": raw, "am": f"{act}/{sup}", "notes": len(notes), "limit": "== 1", "first": notes[0][0] - t0 if notes else None})
    if len(notes) != 1:
        raise Failure(f"dirty flow: {len(notes)} notifications, want exactly 1: {describe_notes(notes)}")
    alerts = note_alerts(notes[0])
    a = alerts[0]
    if len(alerts) != 1 or a["labels"].get("alertname") != "OvsDirtyFlows" or a["labels"].get("node") != victim.name or a["labels"].get("rack") != "r1":
        raise Failure(f"dirty flow: unexpected notification {describe_notes(notes)} labels {a['labels']}")
    desc = a["annotations"].get("description", "")
    for want in ("br-int", "missing_port", victim.name, "rack r1", "table=0 cookie=0x1234 priority=100,in_port=77 actions=output:99"):
        if want not in desc:
            raise Failure(f"dirty flow: description lacks {want!r}: {desc!r}")
    log(f"  ok  dirty flow: 1 notification to {notes[0][1]}: {a['annotations']['summary']}")
    log(f"      {desc}")
    t_rec = time.monotonic()
    victim.dirty = False
    resolved = quiet(t_rec, "dirty flow cleared", [("OvsDirtyFlows", victim.name)])
    log(f"      recovery: {describe_notes(resolved)}")

    # --- 2. one node down -------------------------------------------------------------------
    victim = nodes[rack_nodes[2]]
    t0 = time.monotonic()
    victim.down()

    def node_firing():
        al = [a for a in prom_alerts(prom) if a["labels"].get("node") == victim.name]
        names = [a["labels"]["alertname"] for a in al]
        return names.count("NodeDown") == 1 and names.count("ExporterDown") == len(JOBS)

    wait_until("NodeDown + ExporterDown firing", node_firing, 30, daemons=daemons)
    wait_until("Alertmanager has them", lambda: sum(am_summary()) == 1 + len(JOBS), 10, daemons=daemons)
    time.sleep(settle)
    raw = len(prom_alerts(prom))
    act, sup = am_summary()
    notes = firing_notes(t0)
    results.append({"name": "one node down", "raw": raw, "am": f"{act}/{sup}", "notes": len(notes), "limit": "<= 1", "first": notes[0][0] - t0 if notes else None})
    names = sorted({x["labels"]["alertname"] for n in notes for x in note_alerts(n)})
    if len(notes) != 1 or names != ["NodeDown"]:
        raise Failure(f"node down: {len(notes)} notifications ({describe_notes(notes)}), want exactly 1 NodeDown")
    log(f"  ok  node down: {raw} alerts firing, {sup} suppressed, 1 notification ({notes[0][1]}: NodeDown {victim.name})")
    t_rec = time.monotonic()
    victim.up()
    resolved = quiet(t_rec, "node back", [("NodeDown", victim.name)])
    log(f"      recovery: {describe_notes(resolved)}")

    # --- 3. the whole rack down, with controls outside it ------------------------------------
    # Controls: a dirty flow in rack r2 (never inhibited across racks); rack-less node lone-01
    # down while rack-less lone-02 has a dirty flow (the equal-label-missing-on-both-sides trap:
    # lone-01's NodeDown must not silence lone-02).
    t0 = time.monotonic()
    parallel(lambda n: nodes[n].down(), rack_nodes + ["lone-01"])
    nodes["r2-n01"].dirty = True
    nodes["lone-02"].dirty = True

    def rack_firing():
        al = prom_alerts(prom)
        in_rack = [a for a in al if a["labels"].get("rack") == "r1"]
        nd = sum(1 for a in in_rack if a["labels"]["alertname"] == "NodeDown")
        ed = sum(1 for a in in_rack if a["labels"]["alertname"] == "ExporterDown")
        rd = sum(1 for a in in_rack if a["labels"]["alertname"] == "RackDown")
        return (rd, nd, ed) == (1, len(rack_nodes), len(rack_nodes) * len(JOBS)) and len(al) == 1 + len(rack_nodes) * (1 + len(JOBS)) + 1 + len(JOBS) + 2

    wait_until("RackDown, every NodeDown and ExporterDown, controls firing", rack_firing, 40, daemons=daemons)
    wait_until("Alertmanager has them", lambda: sum(am_summary()) == len(prom_alerts(prom)), 15, daemons=daemons)
    time.sleep(settle)
    in_r1 = lambda labels: labels.get("rack") == "r1"
    raw = sum(1 for a in prom_alerts(prom) if in_r1(a["labels"]))
    act, sup = am_summary(in_r1)
    rack_notes = firing_notes(t0, lambda n: n[2].get("groupLabels", {}).get("rack") == "r1")
    results.append({"name": "whole rack down (40 nodes)", "raw": raw, "am": f"{act}/{sup}", "notes": len(rack_notes), "limit": "<= 2", "first": rack_notes[0][0] - t0 if rack_notes else None})
    names = sorted({x["labels"]["alertname"] for n in rack_notes for x in note_alerts(n)})
    if not 1 <= len(rack_notes) <= 2 or "RackDown" not in names:
        raise Failure(f"rack down: {len(rack_notes)} notifications for rack r1 ({describe_notes(rack_notes)}), want 1..2 with RackDown")
    log(f"  ok  rack down: {raw} alerts firing in r1, {sup} suppressed, {len(rack_notes)} notification(s): {', '.join(names)}")

    # Controls: each delivered exactly once, none suppressed.
    all_notes = firing_notes(t0)
    other = [n for n in all_notes if n not in rack_notes]

    def delivered(alertname, node, rack):
        return sum(1 for n in other for x in note_alerts(n)
                   if x["labels"].get("alertname") == alertname and x["labels"].get("node") == node and x["labels"].get("rack") == rack)

    controls = [("OvsDirtyFlows", "r2-n01", "r2"), ("OvsDirtyFlows", "lone-02", None), ("NodeDown", "lone-01", None)]
    for alertname, node, rack in controls:
        if delivered(alertname, node, rack) != 1:
            raise Failure(f"control {alertname} on {node} (rack {rack}): delivered {delivered(alertname, node, rack)} times, want 1; notes {describe_notes(other)}")
    controls = [(a, n) for a, n, _ in controls]
    if len(other) != len(controls):
        raise Failure(f"unexpected notifications outside rack r1: {describe_notes(other)}")
    lone_sup = am_summary(lambda l: l.get("node") == "lone-01" and l.get("alertname") == "ExporterDown")
    if lone_sup != (0, len(JOBS)):
        raise Failure(f"lone-01's ExporterDown alerts: active/suppressed {lone_sup}, want 0/{len(JOBS)}")
    results.append({"name": "  controls outside r1 (3 alerts)", "raw": len(prom_alerts(prom)) - raw - len(JOBS), "am": "3/0", "notes": len(other), "limit": "== 3", "first": None})
    log("  ok  controls: r2 dirty flow, rack-less lone-02 dirty flow and lone-01 NodeDown each notified once;"
        " lone-01's ExporterDown suppressed by its own NodeDown only")

    t_rec = time.monotonic()
    parallel(lambda n: nodes[n].up(), rack_nodes + ["lone-01"])
    nodes["r2-n01"].dirty = False
    nodes["lone-02"].dirty = False
    resolved = quiet(t_rec, "rack back", [("RackDown", None)] + controls)
    time.sleep(settle)
    bad = firing_notes(t_rec)
    resolved = [n for n in hook.since(t_rec) if n[2].get("status") == "resolved"]
    if bad:
        raise Failure(f"recovery sent firing notifications: {describe_notes(bad)}")
    log(f"  ok  recovery: no firing notification; {len(resolved)} resolved notification(s): {describe_notes(resolved)}")
    if os.environ.get("STORM_DEBUG"):
        t_first = hook.notes[0][0] if hook.notes else 0
        for t, recv, p in hook.notes:
            log(f"      +{t - t_first:6.1f}s {describe_notes([(t, recv, p)])[0]}")


# --- golden: the rules against the exporters' real output --------------------------------------

GOLDEN_GLOB_ROOT = os.path.join(REPO, "exporters")
PREFIXES = {"libvirt": "libvirt", "ovs": "dirty_flow", "log_pattern": "log_pattern"}
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

# Alerts whose condition is "this metric > 0" (or a state code), so the expected alerts can be read
# straight off an exposition file: exporter -> [(alert, metric, test, extra labels)]. The alerts
# are compared on (alertname, node, domain, set, bridge, check).
PLAIN = {
    "libvirt": [
        ("LibvirtPinningSharedHostCpu", "libvirt_domain_pinning_overlap_cpus", lambda v: v > 0, {}),
        ("LibvirtPinningDedicatedInSharedSet", "libvirt_domain_pinning_dedicated_in_shared_cpus", lambda v: v > 0, {}),
        ("LibvirtPinningOutsideNovaSet", "libvirt_domain_pinning_outside_dedicated_set_cpus", lambda v: v > 0, {"set": "dedicated"}),
        ("LibvirtPinningOutsideNovaSet", "libvirt_domain_pinning_outside_shared_set_cpus", lambda v: v > 0, {"set": "shared"}),
        ("LibvirtPinningAffinityMismatch", "libvirt_domain_pinning_affinity_mismatch_vcpus", lambda v: v > 0, {}),
        ("LibvirtPinningEmulatorOnDedicatedCpu", "libvirt_domain_pinning_emulator_overlap_cpus", lambda v: v > 0, {}),
        ("LibvirtPinningNumaMismatch", "libvirt_domain_pinning_numa_remote_cpus", lambda v: v > 0, {}),
        ("LibvirtNovaMetadataMalformed", "libvirt_domain_openstack_metadata_malformed", lambda v: v == 1, {}),
        ("LibvirtDomainCrashed", "libvirt_domain_info_state", lambda v: v == 6, {}),
        ("LibvirtDomainPausedUnexpectedly", "libvirt_domain_info_state", lambda v: v == 3, {}),
        ("LibvirtDown", "libvirt_up", lambda v: v == 0, {}),
    ],
    "dirty_flow": [
        ("OvsDirtyFlows", "ovs_dirty_flows", lambda v: v > 0, {}),
        ("OvsFlowDumpFailing", "ovs_dump_success", lambda v: v == 0, {}),
        ("OvsFlowParseErrors", "ovs_flow_parse_errors", lambda v: v > 0, {}),
    ],
}
PLAIN_KEY = ("domain", "set", "bridge", "check")


def golden_files():
    out = []
    for exp in sorted(os.listdir(GOLDEN_GLOB_ROOT)):
        d = os.path.join(GOLDEN_GLOB_ROOT, exp, "tests", "golden")
        if os.path.isdir(d):
            out += [(exp, os.path.join(d, n)) for n in sorted(os.listdir(d)) if n.endswith(".prom")]
    return out


def parse_exposition(text):
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            labels = {k: bytes(v, "utf-8").decode("unicode_escape") for k, v in _LABEL.findall(m.group(3) or "")}
            samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def rule_metric_names(groups):
    names = set()
    for g in groups:
        for r in g["rules"]:
            text = r["query"] + " " + " ".join(r.get("annotations", {}).values())
            names |= {n for n in re.findall(r"\b((?:libvirt|ovs|log_pattern)_[a-z0-9_]+)\b", text) if not n.endswith("_exporter")}
    return names


def cmd_golden(_args):
    files = golden_files()
    if not files:
        log("  skip golden: no exporters/*/tests/golden/*.prom yet")
        return

    def body(daemons):
        # One loopback server; each golden file is a target /<exporter>/<file> with node=<file>.
        contents = {}
        for exp, path in files:
            with open(path) as f:
                # Golden files mask changing values (times, durations) as <volatile>: serve 0.
                text = re.sub(r"\s<volatile>$", " 0", f.read(), flags=re.M)
                contents[f"/{exp}/{os.path.basename(path)}"] = text.replace("# EOF\n", "")

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                body = contents.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                b = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)

            def log_message(self, *a):
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        try:
            scrape = []
            for path in contents:
                exp, name = path.strip("/").split("/")
                node = f"{exp}-{name[:-5]}"
                job = {"dirty_flow": "ovs"}.get(exp, exp)
                scrape.append({"job_name": f"{job}-{name[:-5]}", "metrics_path": path,
                               "static_configs": [{"targets": [f"127.0.0.1:{srv.server_address[1]}"], "labels": {"node": node}}]})
            prom = start_prometheus(
                daemons,
                {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}, "scrape_configs": scrape},
                shipped_rules("1s"),
            )
            try:
                wait_until("golden targets scraped", lambda: len(prom_query(prom, "up == 1")) == len(scrape), 30, daemons=daemons)
            except Failure:
                errs = [f"{t['scrapeUrl']}: {t['lastError']}" for t in http(prom + "/api/v1/targets")["data"]["activeTargets"] if t["lastError"]]
                raise Failure("golden files do not scrape:\n    " + "\n    ".join(errs))
            time.sleep(3)  # a few evaluation rounds; `for` alerts show as pending

            # 1. Names: every exporter metric the rules use appears in that exporter's golden output.
            groups = http(prom + "/api/v1/rules")["data"]["groups"]
            exported = {}
            for exp, path in files:
                text = contents[f"/{exp}/{os.path.basename(path)}"]
                exported.setdefault(exp, set()).update(n for n, _, _ in parse_exposition(text))
                # A family declared with no sample this time (nothing wrong) still has its TYPE line.
                exported[exp].update(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
            missing = []
            for name in sorted(rule_metric_names(groups)):
                prefix = next(p for p in PREFIXES if name.startswith(p + "_"))
                exp = PREFIXES[prefix]
                if exp in exported and name not in exported[exp]:
                    missing.append(f"{name} (not in exporters/{exp}/tests/golden)")
            for exp in sorted(set(PREFIXES.values()) - set(exported)):
                log(f"  note golden: exporters/{exp} has no golden files yet; its metric names are not checked")
            for m in missing:
                log(f"  WARN golden: rules use {m}")

            # 2. Semantics: the alerts (pending or firing) are exactly what the files say.
            names = {a for rows in PLAIN.values() for a, _, _, _ in rows}
            alerts = prom_alerts(prom, "pending") + prom_alerts(prom, "firing")
            got = sorted({(a["labels"]["alertname"], a["labels"]["node"]) + tuple(a["labels"].get(k, "") for k in PLAIN_KEY)
                          for a in alerts if a["labels"]["alertname"] in names})
            want = set()
            for exp, path in files:
                node = f"{exp}-{os.path.basename(path)[:-5]}"
                for alert, metric, test, extra in PLAIN.get(exp, []):
                    for n, labels, v in parse_exposition(contents[f"/{exp}/{os.path.basename(path)}"]):
                        if n == metric and test(v):
                            labels = dict(labels, **extra)
                            want.add((alert, node) + tuple(labels.get(k, "") for k in PLAIN_KEY))
            want = sorted(want)
            if got != want:
                raise Failure(f"alerts on the golden files differ:\n    got  {got}\n    want {want}")
            kinds = sorted({w[0] for w in want})
            log(f"  ok  golden: {len(files)} real exporter outputs scraped; {len(want)} alerts exactly as the files say ({', '.join(kinds)})")
            # The overlap alert names the other domain, from libvirt_domain_pinning_overlap_info.
            for a in alerts:
                if a["labels"]["alertname"] == "LibvirtPinningSharedHostCpu":
                    desc = a["annotations"]["description"]
                    if "host CPUs" not in desc.split("also claims", 1)[-1]:
                        raise Failure(f"SharedHostCpu description lacks the other domain: {desc!r}")
            if missing:
                log(f"  ({len(missing)} metric name(s) used by the rules are not in the golden files: see WARN lines)")
        finally:
            srv.shutdown()
            srv.server_close()

    with_workdir(body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("gen")
    sub.add_parser("lint")
    sub.add_parser("inhibition")
    sub.add_parser("golden")
    st = sub.add_parser("storm")
    st.add_argument("--nodes", type=int, default=40, help="nodes in the rack that goes down")
    args = ap.parse_args()
    fn = {"gen": cmd_gen, "lint": cmd_lint, "inhibition": cmd_inhibition, "golden": cmd_golden, "storm": cmd_storm}[args.cmd]
    try:
        fn(args)
    except Failure as e:
        log(f"  FAIL {args.cmd}: {e}")
        return 1
    except KeyboardInterrupt as e:
        log(f"  interrupted: {e}")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
