#!/usr/bin/env python3
"""Tests the Grafana dashboards.

    test.py --check                 valid JSON, schema basics, and no drift from generate.py
    test.py --prometheus URL        every panel query returns data from a real Prometheus
                                    (scraping the demo's exporters with the shipped rules), and
                                    so does every query of inovex's Grafana dashboard
                                    (inovex/libvirt-openstack.json) that the libvirt test driver
                                    can feed, for one running demo domain
            [--wait SECONDS]        retrying until they all do, for a Prometheus just started

Exit status 0 when everything holds; the failures are printed otherwise.
"""
import argparse
import glob
import json
import os
import sys
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate  # noqa: E402


def load_all():
    boards = {}
    for path in sorted(glob.glob(os.path.join(HERE, "*.json"))):
        with open(path, encoding="utf-8") as f:
            boards[os.path.basename(path)] = json.load(f)
    return boards


def queries(board):
    for p in board["panels"]:
        for t in p.get("targets", []):
            yield p["title"], t["expr"]


def check():
    errors = []
    rendered = generate.render()
    boards = load_all()
    if set(boards) != set(rendered):
        errors.append(f"dashboards on disk {sorted(boards)} != generated {sorted(rendered)}")
    for name, text in rendered.items():
        on_disk = os.path.join(HERE, name)
        if os.path.exists(on_disk) and open(on_disk, encoding="utf-8").read() != text:
            errors.append(f"{name} differs from generate.py output: run python3 dashboards/generate.py")
    for name, b in boards.items():
        if b.get("schemaVersion", 0) < 36:
            errors.append(f"{name}: schemaVersion {b.get('schemaVersion')} is too old")
        var_names = [v["name"] for v in b["templating"]["list"]]
        for v in ("datasource", "rack", "node"):
            if v not in var_names:
                errors.append(f"{name}: variable {v} missing")
        ids = [p["id"] for p in b["panels"]]
        if len(ids) != len(set(ids)):
            errors.append(f"{name}: duplicate panel ids")
        for p in b["panels"]:
            if p["type"] == "row":
                continue
            if not p.get("targets"):
                errors.append(f"{name}: panel {p['title']!r} has no query")
            if p.get("datasource", {}).get("uid") != "${datasource}":
                errors.append(f"{name}: panel {p['title']!r} does not use the datasource variable")
            for t in p.get("targets", []):
                # Per-node boards filter every query on $node. The fleet board reads only recorded
                # series (level:metric:operations), never raw per-node series.
                if name == "fleet.json":
                    if not any(":" in tok for tok in t["expr"].replace("(", " ").split() if tok[:1].isalpha()):
                        errors.append(f"{name}: {p['title']!r} query reads no recorded series: {t['expr']}")
                elif '$node' not in t["expr"]:
                    errors.append(f"{name}: {p['title']!r} query does not filter on $node: {t['expr']}")
    return errors


# What Grafana puts in place of the dashboard and built-in variables for a live query: every node
# and rack, and the intervals Grafana derives from the time range and scrape interval.
LIVE_VARIABLES = {
    "${node}": ".*",
    "$node": ".*",
    "${rack}": ".*",
    "$rack": ".*",
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}


def live_query(expr):
    for var in sorted(LIVE_VARIABLES, key=len, reverse=True):
        expr = expr.replace(var, LIVE_VARIABLES[var])
    return expr


def run_queries(url, wait=0.0):
    """Runs every panel query; with `wait`, repeats them (quietly) until all return data or
    `wait` seconds have passed, for a Prometheus that has only just started scraping."""
    deadline = time.monotonic() + wait
    while True:
        total, errors = query_all(url)
        if not errors or time.monotonic() >= deadline:
            break
        time.sleep(2)
    print(f"dashboards: {total - len(errors)} of {total} panel queries returned data")
    return errors


def instant(url, q):
    """The result of one instant query, or an error message."""
    full = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        with urllib.request.urlopen(full, timeout=10) as r:
            data = json.load(r)
    except Exception as e:  # noqa: BLE001 - report any failure per query
        return None, f"query failed: {e}"
    if data.get("status") != "success":
        return None, str(data.get("error"))
    return data["data"]["result"], None


def query_all(url):
    errors = []
    total = 0
    for name, b in load_all().items():
        for title, expr in queries(b):
            total += 1
            q = live_query(expr)
            result, err = instant(url, q)
            if err:
                errors.append(f"{name}: {title!r}: {err}: {q}")
            elif not result:
                errors.append(f"{name}: {title!r}: no data: {q}")
    n, inovex_errors = query_inovex(url)
    return total + n, errors + inovex_errors


# inovex/prometheus-libvirt-exporter's Grafana dashboard (MIT, inovex/LICENSE), as published at
# commit 8dbcadd5afc9a96c1fd8f09b22a8a4c276b8c111. Its panels select one VM through $dom_id.
INOVEX = os.path.join(HERE, "inovex", "libvirt-openstack.json")

# Panels whose series the libvirt test driver cannot produce, and why. Every other panel must
# return data for a running demo domain.
INOVEX_NOT_FED = {
    # vcpu.<n>.delay comes from QEMU's schedstat (bulk stats, and --domain.vcpu-detail); the test
    # driver's virDomainGetVcpus has no wait or delay time.
    "CPU • Steal Time %",
    # rd.times / wr.times come from the bulk block group; the test driver's virDomainBlockStats
    # has bytes and requests only.
    "Storage • Read Latency",
    "Storage • Write Latency",
}


def inovex_queries():
    with open(INOVEX, encoding="utf-8") as f:
        board = json.load(f)

    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield p["title"], t["expr"]
    return list(walk(board["panels"]))


def query_inovex(url):
    """Runs each inovex panel query for one running domain with a disk and an interface."""
    errors = []
    disks, err = instant(url, "libvirt_domain_block_stats_read_bytes_total")
    nics, err2 = instant(url, "libvirt_domain_interface_stats_receive_bytes_total")
    if err or err2:
        return 1, [f"inovex: choosing a domain: {err or err2}"]
    both = sorted({r["metric"]["domain"] for r in disks} & {r["metric"]["domain"] for r in nics})
    if not both:
        return 1, ["inovex: no domain with block and interface counters to select"]
    dom = both[0]
    total = 0
    for title, expr in inovex_queries():
        total += 1
        q = expr.replace("$dom_id", dom).replace("$__rate_interval", "5m")
        result, err = instant(url, q)
        if err:
            errors.append(f"inovex: {title!r}: {err}: {q}")
        elif not result and title not in INOVEX_NOT_FED:
            errors.append(f"inovex: {title!r}: no data: {q}")
    return total, errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--prometheus")
    ap.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                    help="with --prometheus: retry until every query has data, up to SECONDS")
    args = ap.parse_args()
    errors = []
    if args.check:
        errors += check()
        if not errors:
            print(f"dashboards: {len(load_all())} dashboards valid and up to date")
    if args.prometheus:
        errors += run_queries(args.prometheus, args.wait)
    for e in errors:
        print("FAIL", e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
