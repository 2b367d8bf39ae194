#!/usr/bin/env python3
"""The fleet layout of docs/scaling.md on real components, on 127.0.0.1 only: Prometheus shards
of whole racks, one shared Alertmanager, one VictoriaMetrics receiving every shard's remote write.

    fleet.py                                   the small run of alerts/test.sh (2 shards x 2 racks
                                               x 2 nodes: 24 exporter processes)
    fleet.py --racks-per-shard 3 --nodes-per-rack 4 --time-scale 10   the larger run of `make fleet`

What runs:
  - per node, three real exporter processes with their own port: libvirt_exporter on libvirt's
    in-process test driver (test:///ABS/exporters/libvirt/demo/node.xml, the demo's nova
    domains), log_pattern_exporter on the node's own pod log tree (lines appended during the
    run) and dirty_flow_exporter on one Open vSwitch sandbox that all nodes share (the demo's
    flows, one of them dirty);
  - per shard, a real Prometheus configured from the deploy/kubernetes/shards objects:
    it is given every target of the fleet with the node name and rack as Kubernetes service
    discovery would give them (`__meta_kubernetes_pod_node_name`,
    `__meta_kubernetes_node_label_topology_kubernetes_io_rack`), and applies the shard
    PodMonitor's relabelling (the rack `keep`, `node`, `rack`, `job`), its external labels and
    its remote-write filter; it evaluates the shipped alerts/rules with every `for` scaled by
    1/30 as harness.py's storm does (--time-scale; the shipped 30 s intervals become 1 s);
  - shard A also loads the static node-to-rack mapping of its own racks (alerts/topology);
    FLEET_MAPPING=fleet gives it the whole fleet's mapping instead (by hand: shows why not);
  - one real Alertmanager with the shipped routes and inhibitions (receivers replaced by a
    loopback webhook), one real VictoriaMetrics (`victoria-metrics`, Debian package).

What is asserted:
  1. each shard scrapes exactly the targets of its racks; VictoriaMetrics holds every `up`
     series once (count == exporter processes) and, per node, as many series as the shard
     that scrapes the node sends (the remote-write filter applied there): nothing lost,
     nothing counted twice; one topology:node_rack:info per node;
  2. every recorded series of alerts/rules/recording.rules.yml (and topology:node_rack:info)
     is in VictoriaMetrics once per shard series, with the same value; every fleet dashboard
     query (dashboards/fleet.json) and every overview query whose series the filter keeps
     returns from VictoriaMetrics the sum of both shards' answers; overview queries over raw
     series that the filter drops return nothing from VictoriaMetrics (they stay in the shard);
  3. every exporter of one rack of shard A stopped (by PID): shard A fires RackDown for that
     rack, whose NodeDown/ExporterDown alerts the shared Alertmanager suppresses, and one
     notification (RackDown) is sent for the rack; shard A's other rack and shard B have no
     availability alert and no notification; VictoriaMetrics sees the rack's `up` at 0 and the
     fleet's `up` count unchanged.
Daemons run in a temp dir and are stopped by PID, also on failure or Ctrl-C. Python 3 standard
library, plus PyYAML (python3-yaml) to read the manifests.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
from harness import Failure, log, wait_until  # noqa: E402

REPO = h.REPO
SHARDS_DIR = os.path.join(REPO, "deploy", "kubernetes", "shards")
NODE_XML = os.path.join(REPO, "exporters", "libvirt", "demo", "node.xml")
VICTORIA = os.environ.get("VICTORIA_METRICS", "victoria-metrics")
BIN_DIR = os.environ.get("BIN_DIR", os.path.join(REPO, "target", "debug"))
RACK_LABEL = "__meta_kubernetes_node_label_topology_kubernetes_io_rack"
NODE_LABEL = "__meta_kubernetes_pod_node_name"
PORT_JOBS = {"libvirt": "libvirt", "log-pattern": "log_pattern", "dirty-flow": "dirty_flow"}  # PodMonitor port -> job
OVS_SANDBOX = os.path.join(REPO, "exporters", "dirty_flow", "demo", "ovs-sandbox.sh")
OVS_CHECKS = os.path.join(REPO, "exporters", "dirty_flow", "demo", "checks.yml")
AVAILABILITY = {"RackDown", "NodeDown", "ExporterDown"}

LOG_RULES = """start_at: beginning
rules:
  - name: nova_errors
    expr: '{namespace="openstack"} |= "ERROR"'
"""


# --- the shipped shard layout ------------------------------------------------------------------


def render_shards():
    """The shard layout's objects, read from the files deploy/kubernetes/shards/kustomization.yaml
    lists (kustomize adds only the namespace to them; deploy/test.sh renders and validates the
    whole overlay): {shard: {"podmonitor": ..., "prometheus": ...}}."""
    with open(os.path.join(SHARDS_DIR, "kustomization.yaml")) as f:
        resources = yaml.safe_load(f)["resources"]
    shards = {}
    for res in resources:
        path = os.path.join(SHARDS_DIR, res)
        if not os.path.isfile(path):
            continue  # ../base
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if not d:
                    continue
                if d["kind"] == "Prometheus":
                    shards.setdefault(d["spec"]["externalLabels"]["shard"], {})["prometheus"] = d
                elif d["kind"] == "PodMonitor":
                    shards.setdefault(d["metadata"]["labels"]["shard"], {})["podmonitor"] = d
    if len(shards) < 2 or any(set(v) != {"prometheus", "podmonitor"} for v in shards.values()):
        raise Failure(f"deploy/kubernetes/shards: want a PodMonitor and a Prometheus per shard, got {sorted(shards)}")
    return dict(sorted(shards.items()))


def snake(relabel):
    """A prometheus-operator RelabelConfig (camelCase) as a Prometheus relabel_config."""
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label", "regex": "regex", "action": "action",
            "replacement": "replacement", "separator": "separator", "modulus": "modulus"}
    out = {}
    for k, v in relabel.items():
        if k not in keys:
            raise Failure(f"relabelling field {k} not handled by this test")
        out[keys[k]] = v.lower() if k == "action" else v
    return out


def shard_racks(podmonitor):
    """The racks a shard keeps, from its `keep` regex (an alternation of rack names)."""
    racks = set()
    for ep in podmonitor["spec"]["podMetricsEndpoints"]:
        for r in ep.get("relabelings", []):
            if r.get("action") == "keep" and r.get("sourceLabels") == [RACK_LABEL]:
                racks.add(r["regex"])
    if len(racks) != 1:
        raise Failure(f"{podmonitor['metadata']['name']}: want one rack `keep` regex on every endpoint, got {racks}")
    regex = racks.pop()
    if not re.fullmatch(r"[\w.-]+(\|[\w.-]+)*", regex):
        raise Failure(f"{podmonitor['metadata']['name']}: rack regex {regex!r} is not a list of names")
    return regex.split("|")


# --- processes -----------------------------------------------------------------------------------


class Node:
    def __init__(self, name, rack):
        self.name, self.rack = name, rack
        self.ports = {}  # PodMonitor port name -> loopback port
        self.procs = []
        self.log_file = None


def start_ovs(daemons):
    """One Open vSwitch sandbox (dummy datapath, the demo's flows, one of them dirty), read by
    every node's dirty_flow_exporter; stopped by its pidfiles after the exporters."""
    d = os.path.join(daemons.workdir, "ovs")
    daemons.cleanups.append(lambda: subprocess.run(["bash", OVS_SANDBOX, "stop", d], capture_output=True))
    p = subprocess.run(["bash", OVS_SANDBOX, "start", d], capture_output=True, text=True)
    if p.returncode != 0:
        raise Failure(f"the OVS sandbox did not start: {p.stderr}")
    return d


def start_exporters(daemons, node, ovs):
    d = os.path.join(daemons.workdir, "nodes", node.name)
    pod = os.path.join(d, "pods", f"openstack_nova-compute-{node.name}_uid-{node.name}", "nova-compute")
    os.makedirs(pod)
    node.log_file = os.path.join(pod, "0.log")
    append_lines(node, 3)
    rules = os.path.join(d, "rules.yml")
    with open(rules, "w") as f:
        f.write(LOG_RULES)
    node.ports = {port: h.rebindable_port() for port in PORT_JOBS}
    node.procs.append(daemons.start(f"{node.name}-libvirt", [
        os.path.join(BIN_DIR, "libvirt_exporter"), f"--libvirt.uri=test://{NODE_XML}",
        f"--web.listen-address=127.0.0.1:{node.ports['libvirt']}", "--log.level=warn",
    ]))
    node.procs.append(daemons.start(f"{node.name}-log_pattern", [
        os.path.join(BIN_DIR, "log_pattern_exporter"), f"--path.pods={os.path.join(d, 'pods')}",
        f"--config.file={rules}", f"--state.file={os.path.join(d, 'state.json')}",
        f"--web.listen-address=127.0.0.1:{node.ports['log-pattern']}", "--log.level=warn",
    ]))
    node.procs.append(daemons.start(f"{node.name}-dirty_flow", [
        os.path.join(BIN_DIR, "dirty_flow_exporter"), f"--ovs.rundir={ovs}", f"--ovs.db=unix:{ovs}/db.sock",
        f"--config.file={OVS_CHECKS}", f"--web.listen-address=127.0.0.1:{node.ports['dirty-flow']}", "--log.level=warn",
    ]))


def append_lines(node, n):
    ts = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
    with open(node.log_file, "a") as f:
        for i in range(n):
            f.write(f"{ts} stdout F ERROR nova.compute.manager [req-{i}] instance failed on {node.name}\n")


def stop_exporters(daemons, node):
    """Stops this node's exporters by PID and forgets them (Daemons would restart nothing)."""
    for p in node.procs:
        p.terminate()
    for p in node.procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    daemons.procs = [(n, p) for n, p in daemons.procs if p not in node.procs]
    node.procs = []


def start_victoria(daemons):
    d = os.path.join(daemons.workdir, "victoria-metrics")
    os.makedirs(d)
    port = h.free_port()
    daemons.start("victoria-metrics", [
        VICTORIA, f"-storageDataPath={d}/data", f"-httpListenAddr=127.0.0.1:{port}",
        # Instant queries see samples up to the query time (default: 30 s behind), uncached.
        "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=WARN",
    ])
    url = f"http://127.0.0.1:{port}"
    wait_until("VictoriaMetrics healthy", lambda: urllib.request.urlopen(url + "/health", timeout=2).read().strip() == b"OK", 30, daemons=daemons)
    return url


def start_shard(daemons, shard, objs, nodes, rules, am_port, vm_url, interval):
    """Starts a Prometheus for one shard, configured from its PodMonitor and Prometheus;
    returns its URL (not yet ready)."""
    pm, prom = objs["podmonitor"], objs["prometheus"]["spec"]
    scrape = []
    for ep in pm["spec"]["podMetricsEndpoints"]:
        scrape.append({
            "job_name": f"shard-{shard}/{ep['port']}",
            "static_configs": [
                {"targets": [f"127.0.0.1:{n.ports[ep['port']]}"], "labels": {NODE_LABEL: n.name, RACK_LABEL: n.rack}}
                for n in nodes
            ],
            "relabel_configs": [snake(r) for r in ep["relabelings"]],
        })
    rw = []
    for w in prom["remoteWrite"]:
        rw.append({
            "url": vm_url + "/api/v1/write",
            "write_relabel_configs": [snake(r) for r in w.get("writeRelabelConfigs", [])],
            # Sent within a second in the test (Prometheus's default deadline is 5 s).
            "queue_config": {"batch_send_deadline": "1s", "max_samples_per_send": 5000},
        })
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval,
                   "external_labels": prom["externalLabels"]},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": scrape,
        "remote_write": rw,
    }
    d = os.path.join(daemons.workdir, f"prometheus-{shard}")
    os.makedirs(os.path.join(d, "rules"))
    for name, text in rules.items():
        with open(os.path.join(d, "rules", name), "w") as f:
            f.write(text)
    config["rule_files"] = [os.path.join(d, "rules", "*.yml")]
    with open(os.path.join(d, "prometheus.yml"), "w") as f:
        json.dump(config, f, indent=1)
    port = h.free_port()
    daemons.start(f"prometheus-{shard}", [
        h.PROMETHEUS, f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data",
        f"--web.listen-address=127.0.0.1:{port}", "--rules.alert.resend-delay=1s", "--log.level=warn",
    ])
    return f"http://127.0.0.1:{port}"


# --- queries -------------------------------------------------------------------------------------


def query(url, q, t=None):
    params = {"query": q}
    if t is not None:
        params["time"] = f"{t:.3f}"
    r = h.http(url + "/api/v1/query?" + urllib.parse.urlencode(params), timeout=10)
    if r.get("status") != "success":
        raise Failure(f"{url}: {q}: {r}")
    res = r["data"]
    if res["resultType"] == "scalar":
        return {(): float(res["result"][1])}
    return {tuple(sorted(x["metric"].items())): float(x["value"][1]) for x in res["result"]}


def without(series, label):
    out = {}
    for k, v in series.items():
        key = tuple(kv for kv in k if kv[0] != label)
        out[key] = out.get(key, 0.0) + v
    return out


def merged(results):
    """Shard answers merged as one Prometheus over the whole fleet would give them, for sums and
    unions: the same label set in two shards adds up."""
    out = {}
    for r in results:
        for k, v in r.items():
            out[k] = out.get(k, 0.0) + v
    return out


def close(a, b):
    if set(a) != set(b):
        return False
    return all(abs(a[k] - b[k]) <= 1e-9 * max(1.0, abs(a[k]), abs(b[k])) for k in a)


def fmt(series, limit=6):
    items = sorted(series.items())
    s = ", ".join(f"{dict(k)}={v:g}" for k, v in items[:limit])
    return "{" + s + (f", ... ({len(items)} series)" if len(items) > limit else "") + "}"


def same_at_one_instant(desc, vm, shards, fn, timeout=30):
    """Runs fn(url, t) -> series on every shard and VictoriaMetrics at one instant t a few seconds
    back (so that the shards' samples have been written), until the answers agree; returns the
    last (vm answer, shard answers) for the failure message otherwise."""
    last = {}

    def agree():
        t = time.time() - 3
        shard_answers = [fn(u, t) for u in shards]
        vm_answer = fn(vm, t)
        last["v"] = (vm_answer, shard_answers)
        return fn.check(vm_answer, shard_answers)

    try:
        wait_until(desc, agree, timeout, interval=1)
    except Failure:
        vm_answer, shard_answers = last.get("v", ({}, []))
        raise Failure(f"{desc}: VictoriaMetrics {fmt(vm_answer)} vs shards " + " + ".join(fmt(s) for s in shard_answers))
    return last["v"]


class Q:
    """A query and how the VictoriaMetrics answer must relate to the shards' answers."""

    def __init__(self, expr, check):
        self.expr, self.check = expr, check

    def __call__(self, url, t):
        return query(url, self.expr, t)


def check_equal_sum(vm_answer, shard_answers):
    """The store's answer is the fleet total: with the shards' `shard` external label set aside,
    its series are those of the shards' answers summed. Two store series that differ only in
    `shard` (a per-shard partial that a fleet panel would show as two lines) fail."""
    flat = without(vm_answer, "shard")
    return len(flat) == len(vm_answer) and close(flat, merged(shard_answers))


def check_topk(k):
    """As check_equal_sum, for `topk(k, ...)`: the store's k series are the k largest of the
    shards' answers summed (by value: which of several equal values topk keeps is arbitrary)."""

    def check(vm_answer, shard_answers):
        flat = without(vm_answer, "shard")
        total = merged(shard_answers)
        if len(flat) != len(vm_answer) or len(flat) != min(k, len(total)):
            return False
        if any(key not in total or not close({0: v}, {0: total[key]}) for key, v in flat.items()):
            return False
        top = sorted(total.values(), reverse=True)[:k]
        return close(dict(enumerate(sorted(flat.values(), reverse=True))), dict(enumerate(top)))

    return check


def check_each_shard_series_once(vm_answer, shard_answers):
    """VictoriaMetrics holds each shard's series (given their shard's external label by
    _with_shard_label): the same series and values, none missing, none extra."""
    return close(vm_answer, merged(shard_answers))


# --- the run -------------------------------------------------------------------------------------


def cmd_fleet(args):
    shards = render_shards()
    names = list(shards)[:2]
    layout = {}  # shard -> [Node]
    for s in names:
        racks = shard_racks(shards[s]["podmonitor"])
        if len(racks) < args.racks_per_shard:
            raise Failure(f"shard {s} lists {len(racks)} racks, the run wants {args.racks_per_shard}")
        layout[s] = [Node(f"{rack}-n{i:02d}", rack) for rack in racks[: args.racks_per_shard] for i in range(1, args.nodes_per_rack + 1)]
    all_nodes = [n for ns in layout.values() for n in ns]
    for b in ("libvirt_exporter", "log_pattern_exporter", "dirty_flow_exporter"):
        if not os.access(os.path.join(BIN_DIR, b), os.X_OK):
            raise Failure(f"{BIN_DIR}/{b} not built: cargo build --workspace --bins")

    def body(daemons):
        hook = h.Webhook()
        daemons.cleanups.append(hook.close)
        stop = threading.Event()
        daemons.cleanups.append(stop.set)
        run(daemons, hook, shards, names, layout, all_nodes, stop, args.time_scale)

    t0 = time.monotonic()
    h.with_workdir(body)
    log(f"  fleet: wall time {time.monotonic() - t0:.0f}s")


def run(daemons, hook, shards, names, layout, all_nodes, stop, scale):
    with open(h.AM_CONFIG) as f:
        am_cfg, _ = h.am_test_config(f.read(), f"http://127.0.0.1:{hook.port}", scale)
    if os.environ.get("FLEET_MUTATE") == "no-inhibit":
        # Self-check of this test: without the inhibit rules the rack must page more than once.
        am_cfg = re.sub(r"^inhibit_rules:.*?(?=^\S)", "inhibit_rules: []\n", am_cfg, flags=re.M | re.S)
        log("  MUTATED: inhibit rules removed; this run is expected to FAIL")
    am = h.start_alertmanager(daemons, "alertmanager", am_cfg)
    vm = start_victoria(daemons)
    ovs = start_ovs(daemons)
    # From this thread: a child gets SIGTERM when the thread that started it ends (PDEATHSIG).
    for n in all_nodes:
        start_exporters(daemons, n, ovs)

    def feed():  # the log exporters' match counters keep growing: rates are not all zero
        while not stop.wait(1):
            for n in all_nodes:
                try:
                    append_lines(n, 1)
                except OSError:
                    return  # the work dir is being removed

    threading.Thread(target=feed, daemon=True).start()
    interval = h.fmt_duration(30 / scale)  # the shipped 30 s scrape and evaluation interval, scaled
    rules = {n: h.scale_rule_durations(t, scale) for n, t in h.shipped_rules(interval).items()}
    prom = {}
    for i, s in enumerate(names):
        shard_rules = dict(rules)
        if i == 0:
            # Shard A also has the static node-to-rack mapping (alerts/topology), of its own racks
            # only, as docs/scaling.md says; shard B knows racks from the `rack` target label alone.
            mapped = all_nodes if os.environ.get("FLEET_MAPPING") == "fleet" else layout[s]
            shard_rules["topology-static.yml"] = static_mapping(daemons, s, mapped)
        prom[s] = start_shard(daemons, s, shards[s], all_nodes, shard_rules, am.rsplit(":", 1)[1], vm, interval)
    for s in names:
        wait_until(f"prometheus-{s} ready", lambda: urllib.request.urlopen(prom[s] + "/-/ready", timeout=2).status == 200, 30, daemons=daemons)
    n_proc = len(all_nodes) * len(PORT_JOBS)
    log(f"  fleet: shards {', '.join(f'{s} ({len(layout[s])} nodes, racks {sorted({n.rack for n in layout[s]})})' for s in names)}; "
        f"{n_proc} exporter processes; every shard is given all {n_proc} targets and keeps its racks")

    def count(url, q):
        r = query(url, q)
        return int(next(iter(r.values()))) if r else 0

    # 1. Each shard scrapes exactly its racks; VictoriaMetrics holds every series once.
    for s in names:
        want = len(layout[s]) * len(PORT_JOBS)
        wait_until(f"shard {s}: {want} targets up", lambda: count(prom[s], "count(up == 1)") == want, 60, daemons=daemons)
        got = {dict(k)["node"] for k in query(prom[s], "up")}
        if got != {n.name for n in layout[s]}:
            raise Failure(f"shard {s} scrapes nodes {sorted(got)}, want {sorted(n.name for n in layout[s])}")
        dropped = [t for t in h.http(prom[s] + "/api/v1/targets?state=dropped")["data"]["droppedTargets"]]
        if len(dropped) != n_proc - want:
            raise Failure(f"shard {s}: {len(dropped)} targets dropped by the rack relabelling, want {n_proc - want}")
    log("  ok  each shard scrapes exactly the exporters of its racks (the others dropped by the shipped `keep`)")
    wait_until(f"VictoriaMetrics: {n_proc} up series", lambda: count(vm, "count(up == 1)") == n_proc, 60, daemons=daemons)
    for s in names:
        wait_until(f"shard {s}: recorded series evaluated", lambda: query(prom[s], "node:libvirt_domain_cpu_seconds:rate5m"), 30, daemons=daemons)
    # Healthy fleet: no availability alert. (The demo's node.xml holds a pair of guests sharing
    # dedicated CPUs: LibvirtPinningSharedHostCpu fires on every node, in both shards.)
    time.sleep(2)
    for s in names:
        noisy = [x for x in h.prom_alerts(prom[s], "firing") + h.prom_alerts(prom[s], "pending") if x["labels"]["alertname"] in AVAILABILITY]
        if noisy:
            raise Failure(f"shard {s}: availability alerts on a healthy fleet: {[x['labels'] for x in noisy]}")

    filt = [r for w in shards[names[0]]["prometheus"]["spec"]["remoteWrite"] for r in w.get("writeRelabelConfigs", [])
            if r.get("sourceLabels") == ["__name__"] and r.get("action") == "keep"]
    keep = filt[0]["regex"] if filt else ".+"
    shard_urls = [prom[s] for s in names]

    # Per node: the series the shard sends (its remote-write filter) == the series the store holds.
    per_node = Q(f'count by (node) ({{__name__=~"{keep}", node!=""}})', None)
    per_node_vm = Q('count by (node) ({node!=""})', None)

    def node_counts(url, t):
        return (per_node_vm if url == vm else per_node)(url, t)

    node_counts.check = check_equal_sum
    vm_nodes, _ = same_at_one_instant("series per node: store == shard", vm, shard_urls, node_counts)
    if len(vm_nodes) != len(all_nodes):
        raise Failure(f"VictoriaMetrics has series of {len(vm_nodes)} nodes, want {len(all_nodes)}")
    up_count = count(vm, "count(up)")
    if up_count != n_proc:
        raise Failure(f"VictoriaMetrics: count(up) = {up_count}, want {n_proc} (one per exporter process)")
    topo = query(vm, "count by (node) (topology:node_rack:info)")
    if len(topo) != len(all_nodes) or any(v != 1 for v in topo.values()):
        raise Failure(f"VictoriaMetrics: topology:node_rack:info per node {fmt(topo)}, want exactly one for each of {len(all_nodes)} nodes")
    log(f"  ok  VictoriaMetrics: count(up) = {up_count} = exporter processes; one topology:node_rack:info per node; per node, the same series count "
        f"as its shard sends ({min(vm_nodes.values()):g}..{max(vm_nodes.values()):g} series per node)")

    in_shards = sum(count(u, 'count({__name__=~".+"})') for u in shard_urls)
    in_store = count(vm, 'count({__name__=~".+"})')
    raw_node = [v for u in shard_urls for v in query(u, 'count by (node) ({node!=""})').values()]
    log(f"      series: {in_store} in VictoriaMetrics, {in_shards} in the shards ({100 * in_store / in_shards:.0f}%); "
        f"per node {min(raw_node):g}..{max(raw_node):g} in its shard")

    # 2. Recorded series: each shard's series once in the store, same values.
    with open(os.path.join(h.RULES_DIR, "recording.rules.yml")) as f:
        records = [r["record"] for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "record" in r]
    records.append("topology:node_rack:info")
    empty = []
    for rec in records:
        q = Q(rec, check_each_shard_series_once)
        vm_answer, shard_answers = same_at_one_instant(f"recorded {rec}", vm, shard_urls, _with_shard_label(q, {prom[s]: s for s in names}))
        if not vm_answer:
            empty.append(rec)
    log(f"  ok  {len(records) - len(empty)} recorded series: every shard series in VictoriaMetrics once, same value"
        + (f" (no data in this fleet: {', '.join(empty)})" if empty else ""))

    # Dashboards: fleet totals from the store == the sum of both shards.
    dashboards = load_dashboards_test()

    compared, kept_in_shard, no_data = [], [], []
    for name, board in dashboards.load_all().items():
        if name not in ("fleet.json", "overview.json"):
            continue
        for title, expr in dashboards.queries(board):
            live = dashboards.live_query(expr)
            topk = re.match(r"\s*topk\((\d+),", live)
            q = Q(live, check_topk(int(topk.group(1))) if topk else check_equal_sum)
            t = time.time() - 3
            if not any(q(u, t) for u in shard_urls):
                no_data.append(f"{name}: {title}")
                continue
            names_read = metric_names(q.expr)
            if not any(re.fullmatch(keep, m) for m in names_read):
                # Raw series the remote-write filter drops: none of them may reach the store.
                leaked = [m for m in names_read if query(vm, f'count({{__name__=~"{m}"}})')]
                if leaked:
                    raise Failure(f"{name}: {title!r}: {leaked} reached VictoriaMetrics through the filter {keep!r}")
                kept_in_shard.append(f"{name}: {title}")
                continue
            same_at_one_instant(f"{name}: {title!r}", vm, shard_urls, q)
            compared.append(f"{name}: {title}")
    fleet_panels = sum(1 for c in compared if c.startswith("fleet.json"))
    fleet_total = sum(1 for _ in dashboards.queries(dashboards.load_all()["fleet.json"]))
    log(f"  ok  {len(compared)} dashboard queries: VictoriaMetrics == sum over the shards "
        f"({fleet_panels} of {fleet_total} fleet.json panels; the others had no data in this fleet: {len(no_data)})")
    for c in compared:
        log(f"        {c}")
    log(f"      {len(kept_in_shard)} overview queries read raw series that stay in the shards (remote-write filter)")
    if fleet_panels < fleet_total - len([x for x in no_data if x.startswith("fleet.json")]):
        raise Failure("not every fleet.json panel with data was compared")

    # 3. One rack of shard A down.
    a, b = names
    victim_rack = layout[a][0].rack
    victims = [n for n in layout[a] if n.rack == victim_rack]
    t0 = time.monotonic()
    for n in victims:
        stop_exporters(daemons, n)
    log(f"  fleet: stopped the {len(victims) * len(PORT_JOBS)} exporter processes of rack {victim_rack} (shard {a}) by PID")

    def a_firing():
        names_ = sorted(x["labels"]["alertname"] for x in h.prom_alerts(prom[a]) if x["labels"].get("rack") == victim_rack)
        want = sorted(["RackDown"] + ["NodeDown"] * len(victims) + ["ExporterDown"] * len(victims) * len(PORT_JOBS))
        return names_ == want

    wait_until(f"shard {a}: RackDown, NodeDown, ExporterDown of rack {victim_rack} firing", a_firing, 40, daemons=daemons)
    settle = h.parse_duration(re.search(r"group_interval:\s*(\S+)", am_cfg).group(1)) + 2

    def am_state():
        st = {}
        for x in h.am_alerts(am):
            if x["labels"].get("rack") == victim_rack and x["labels"]["alertname"] in AVAILABILITY:
                st.setdefault(x["status"]["state"], []).append(x["labels"]["alertname"])
        return st

    want_suppressed = len(victims) * (1 + len(PORT_JOBS))
    try:
        wait_until("Alertmanager: RackDown active, the rack's other alerts suppressed",
                   lambda: sorted(am_state().get("active", [])) == ["RackDown"] and len(am_state().get("suppressed", [])) == want_suppressed,
                   20, daemons=daemons)
    except Failure:
        st = am_state()
        raise Failure(f"Alertmanager, rack {victim_rack}: active {sorted(st.get('active', []))}, "
                      f"{len(st.get('suppressed', []))} suppressed (want RackDown active, {want_suppressed} suppressed)")
    time.sleep(settle)
    notes = [n for n in hook.since(t0) if n[2].get("status") == "firing"]
    rack_notes = [n for n in notes if n[2].get("groupLabels", {}).get("rack") == victim_rack]
    others = [n for n in notes if n not in rack_notes and any(x["labels"]["alertname"] in AVAILABILITY for x in h.note_alerts(n))]
    rack_notes = [n for n in rack_notes if any(x["labels"]["alertname"] in AVAILABILITY for x in h.note_alerts(n))]
    sent = sorted({x["labels"]["alertname"] for n in rack_notes for x in h.note_alerts(n)})
    if len(rack_notes) != 1 or sent != ["RackDown"] or rack_notes[0][1] != "pager":
        raise Failure(f"rack {victim_rack}: {len(rack_notes)} notifications ({h.describe_notes(rack_notes)}), want one RackDown page")
    if others:
        raise Failure(f"availability notifications outside rack {victim_rack}: {h.describe_notes(others)}")
    for s in (a, b):
        al = [x for x in h.prom_alerts(prom[s], "firing") + h.prom_alerts(prom[s], "pending")
              if x["labels"]["alertname"] in AVAILABILITY and x["labels"].get("rack") != victim_rack]
        if al:
            raise Failure(f"shard {s}: availability alerts outside rack {victim_rack}: {[x['labels'] for x in al]}")
    if any(x["labels"].get("rack") == victim_rack or x["labels"].get("node", "").startswith(victim_rack)
           for x in h.prom_alerts(prom[b], "firing") + h.prom_alerts(prom[b], "pending")):
        raise Failure(f"shard {b} alerts on rack {victim_rack}, which it does not scrape")
    log(f"  ok  rack {victim_rack} down: shard {a} fires RackDown + {len(victims)} NodeDown + {len(victims) * len(PORT_JOBS)} ExporterDown; "
        f"Alertmanager suppresses all but RackDown; 1 page (RackDown); shard {a}'s other racks and shard {b}: no alert, no notification")

    wait_until("VictoriaMetrics: the rack's up at 0, the fleet's count unchanged",
               lambda: count(vm, f'count(up{{rack="{victim_rack}"}} == 0)') == len(victims) * len(PORT_JOBS) and count(vm, "count(up)") == n_proc
               and count(vm, "sum(up)") == n_proc - len(victims) * len(PORT_JOBS), 20, daemons=daemons)
    log(f"  ok  VictoriaMetrics: sum(up) = {n_proc - len(victims) * len(PORT_JOBS)} of count(up) = {n_proc}")


def load_dashboards_test():
    """dashboards/test.py (its panel query extraction and Grafana variable substitution)."""
    import importlib.util

    sys.path.insert(0, os.path.join(REPO, "dashboards"))  # it imports generate.py beside it
    spec = importlib.util.spec_from_file_location("dashboards_test", os.path.join(REPO, "dashboards", "test.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def static_mapping(daemons, shard, nodes):
    """The rule file alerts/topology/gen_rules.py makes of these nodes' racks."""
    path = os.path.join(daemons.workdir, f"node-rack-{shard}.txt")
    with open(path, "w") as f:
        f.writelines(f"{n.name} {n.rack}\n" for n in nodes)
    return subprocess.run([sys.executable, h.GEN, path], capture_output=True, text=True, check=True).stdout


def metric_names(expr):
    """The metric names a PromQL expression reads (bare names, and `__name__` matchers)."""
    names = re.findall(r'__name__=~?"([^"]+)"', expr)
    e = re.sub(r"\{[^}]*\}", "", expr)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        if not m.group(2) and m.group(1) not in ("or", "and", "unless", "offset", "bool"):
            names.append(m.group(1))
    return names


def _with_shard_label(q, shard_of):
    """For a recorded series: the store's answer with each series' `shard` label, compared with
    the shards' answers given their shard's label."""

    def fn(url, t):
        r = q(url, t)
        if url in shard_of:
            return {tuple(sorted(k + (("shard", shard_of[url]),))): v for k, v in r.items()}
        return r

    fn.check = q.check
    return fn


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--racks-per-shard", type=int, default=2)
    ap.add_argument("--nodes-per-rack", type=int, default=2)
    ap.add_argument("--time-scale", type=int, default=h.TIME_SCALE,
                    help="production seconds per test second (30: 1 s scrape and evaluation interval)")
    args = ap.parse_args()
    try:
        cmd_fleet(args)
    except Failure as e:
        log(f"  FAIL fleet: {e}")
        return 1
    except KeyboardInterrupt as e:
        log(f"  interrupted: {e}")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
