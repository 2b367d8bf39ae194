#!/usr/bin/env python3
"""Generates the Grafana dashboards of the suite (dashboards/*.json) from one description.

One source keeps the dashboards consistent: the same datasource/rack/node variables, the same
label filters, the same join of nova names from the info metric. Run it after editing; the test
(`dashboards/test.py --check`) fails when the JSON files and this generator drift apart.

    python3 dashboards/generate.py          # rewrite dashboards/*.json
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_VERSION = 39  # Grafana 11

# Every query filters on these two variables.
SEL = 'node=~"$node"'


def variables():
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
            },
            {
                "name": "rack",
                "label": "Rack",
                "type": "query",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": {"query": "label_values(topology:node_rack:info, rack)", "refId": "rack"},
                "definition": "label_values(topology:node_rack:info, rack)",
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "refresh": 2,
                "current": {"text": "All", "value": "$__all"},
                "hide": 0,
            },
            {
                "name": "node",
                "label": "Node",
                "type": "query",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": {
                    "query": 'label_values(topology:node_rack:info{rack=~"$rack"}, node)',
                    "refId": "node",
                },
                "definition": 'label_values(topology:node_rack:info{rack=~"$rack"}, node)',
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "refresh": 2,
                "current": {"text": "All", "value": "$__all"},
                "hide": 0,
            },
        ]
    }


class Board:
    def __init__(self, uid, title, description):
        self.uid, self.title, self.description = uid, title, description
        self.panels = []
        self.y = 0
        self.x = 0
        self.row_h = 0

    def row(self, title):
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": len(self.panels) + 1,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self):
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def panel(self, kind, title, targets, w=12, h=8, unit=None, description="", options=None, overrides=None):
        if self.x + w > 24:
            self._newline()
        p = {
            "type": kind,
            "title": title,
            "description": description,
            "id": len(self.panels) + 1,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "targets": [
                {
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "expr": expr,
                    "legendFormat": legend,
                    "refId": chr(ord("A") + i),
                    **({"format": "table", "instant": True} if kind == "table" else {}),
                }
                for i, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": {**({"unit": unit} if unit else {})}, "overrides": overrides or []},
            "options": options or {},
        }
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)

    def json(self):
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["cloud-node-exporters"],
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "templating": variables(),
            "annotations": {"list": []},
            "links": [
                {"type": "dashboards", "tags": ["cloud-node-exporters"], "asDropdown": True, "title": "Suite"}
            ],
            "panels": self.panels,
        }


# Nova names joined onto per-domain series from the one info metric (labels stay on one series).
NOVA = f'on (node, domain) group_left (instance_name, project_name) libvirt_domain_openstack_info{{{SEL}}}'


def overview():
    b = Board("cne-overview", "Compute node overview", "One compute node at a glance: targets, VMs, flows, logs.")
    b.row("Health")
    b.panel("stat", "Targets up", [(f'sum by (job) (up{{{SEL}}})', "{{job}}")], w=6, h=5)
    b.panel("stat", "Dirty flows", [(f'sum(ovs_dirty_flows{{{SEL}}})', "dirty flows")], w=6, h=5,
            description="Any value above 0 is an alert (OvsDirtyFlows).")
    # Findings are exported only while they have CPUs: each sum falls back to 0.
    b.panel("stat", "Broken pinning (CPUs)", [(f'(sum(libvirt_domain_pinning_overlap_cpus{{{SEL}}}) or vector(0)) + (sum(libvirt_domain_pinning_dedicated_in_shared_cpus{{{SEL}}}) or vector(0))', "CPUs")], w=6, h=5)
    b.panel("stat", "Failing collectors", [(f'count({{__name__=~"(libvirt|ovs|log_pattern)_scrape_collector_success", {SEL}}} == 0) or vector(0)', "collectors")], w=6, h=5)
    b.row("Workload")
    b.panel("timeseries", "Domains by state", [(f'sum by (state) (libvirt_domains_by_state{{{SEL}}})', "{{state}}")])
    b.panel("timeseries", "Log pattern matches /s", [(f'sum by (rule) (rate(log_pattern_matches_total{{{SEL}}}[5m]))', "{{rule}}")], unit="ops")
    b.panel("timeseries", "OpenFlow flows per bridge", [(f'sum by (bridge) (ovs_flows{{{SEL}}})', "{{bridge}}")])
    b.panel("timeseries", "Exporter memory", [(f'process_resident_memory_bytes{{{SEL}}}', "{{job}}")], unit="bytes")
    return b


def libvirt():
    b = Board("cne-libvirt", "libvirt domains", "Domains with nova names, their resources, and CPU pinning.")
    b.row("Domains")
    b.panel("timeseries", "Domains by state", [(f'sum by (node, state) (libvirt_domains_by_state{{{SEL}}})', "{{node}} {{state}}")])
    b.panel("table", "Instances (nova metadata)", [(f'libvirt_domain_openstack_info{{{SEL}}}', "")],
            options={"showHeader": True})
    b.row("Resources per domain")
    b.panel("timeseries", "CPU (cores)", [(f'rate(libvirt_domain_info_cpu_time_seconds_total{{{SEL}}}[5m]) * {NOVA}', "{{instance_name}} ({{project_name}})")], unit="short")
    b.panel("timeseries", "Memory in use", [(f'libvirt_domain_memory_stats_current_balloon_bytes{{{SEL}}} * {NOVA}', "{{instance_name}} ({{project_name}})")], unit="bytes")
    b.panel("timeseries", "Disk read+write", [(f'sum by (node, domain) (rate(libvirt_domain_block_stats_read_bytes_total{{{SEL}}}[5m]) + rate(libvirt_domain_block_stats_write_bytes_total{{{SEL}}}[5m])) * {NOVA}', "{{instance_name}}")], unit="Bps")
    b.panel("timeseries", "Network receive+transmit", [(f'sum by (node, domain) (rate(libvirt_domain_interface_stats_receive_bytes_total{{{SEL}}}[5m]) + rate(libvirt_domain_interface_stats_transmit_bytes_total{{{SEL}}}[5m])) * {NOVA}', "{{instance_name}}")], unit="Bps")
    b.row("CPU pinning")
    b.panel("timeseries", "Pinned vCPUs per host CPU", [(f'libvirt_host_cpu_pinned_vcpus{{{SEL}}}', "cpu {{cpu}}")],
            description="More than one dedicated vCPU on a host CPU is broken pinning.")
    b.panel("table", "Declared pinning", [(f'libvirt_domain_pinning_info{{{SEL}}}', "")],
            description="Per domain: its vCPUs by class, the host CPUs they claim or float over, the emulator threads' pin. Per vCPU with --domain.vcpu-detail (libvirt_domain_vcpu_pinning_info).")
    # Findings are exported only while they have CPUs: 0 when a node has none.
    b.panel("timeseries", "Broken pinning", [
        (f'libvirt_domain_pinning_overlap_cpus{{{SEL}}} or on () vector(0)', "shared host CPUs: {{domain}}"),
        (f'libvirt_domain_pinning_dedicated_in_shared_cpus{{{SEL}}} or on () vector(0)', "dedicated in shared set: {{domain}}"),
        (f'libvirt_domain_pinning_affinity_mismatch_vcpus{{{SEL}}} or on () vector(0)', "live affinity differs: {{domain}}"),
    ], w=24)
    b.panel("table", "Overlapping pins", [(f'libvirt_domain_pinning_overlap_info{{{SEL}}}', "")], w=24)
    return b


def ovs():
    b = Board("cne-ovs", "Open vSwitch flows", "OpenFlow flows per bridge and table, and the dirty ones.")
    b.row("Flows")
    b.panel("timeseries", "Flows per bridge and table", [(f'ovs_flows{{{SEL}}}', "{{node}} {{bridge}} table {{table}}")])
    b.panel("timeseries", "Dump duration", [(f'ovs_dump_duration_seconds{{{SEL}}}', "{{node}} {{bridge}}")], unit="s")
    b.row("Dirty flows")
    b.panel("timeseries", "Dirty flows per check", [(f'ovs_dirty_flows{{{SEL}}}', "{{node}} {{bridge}} {{check}}")])
    b.panel("stat", "Parse errors", [(f'sum(ovs_flow_parse_errors{{{SEL}}})', "lines")], w=6)
    b.panel("stat", "Failed interfaces", [(f'sum(ovs_failed_interfaces{{{SEL}}})', "interfaces")], w=6)
    b.panel("table", "Offending flows (evidence)", [(f'ovs_dirty_flow_info{{{SEL}}}', "")], w=24)
    return b


def log_pattern():
    b = Board("cne-log-pattern", "Log patterns", "Log lines matching rules, and the tailer's own health.")
    b.row("Matches")
    b.panel("timeseries", "Matches /s per rule and namespace", [(f'sum by (rule, namespace) (rate(log_pattern_matches_total{{{SEL}}}[5m]))', "{{rule}} {{namespace}}")], unit="ops")
    b.panel("timeseries", "Lines read /s", [(f'sum by (node) (rate(log_pattern_lines_read_total{{{SEL}}}[5m]))', "{{node}}")], unit="ops")
    b.row("Tailer health")
    b.panel("timeseries", "Backlog (bytes not yet read)", [(f'sum by (node) (log_pattern_backlog_bytes{{{SEL}}})', "{{node}}")], unit="bytes")
    b.panel("timeseries", "Event lag p99", [(f'histogram_quantile(0.99, sum by (node, source, le) (rate(log_pattern_event_lag_seconds_bucket{{{SEL}}}[5m])))', "{{node}} {{source}}")], unit="s")
    b.panel("timeseries", "Files watched", [(f'log_pattern_files_watched{{{SEL}}}', "{{node}}")])
    b.panel("timeseries", "Seconds since last state save", [(f'time() - log_pattern_state_last_save_timestamp_seconds{{{SEL}}}', "{{node}}")], unit="s")
    return b


def health():
    b = Board("cne-exporter-health", "Exporter health", "Collector success and durations, scrape time.")
    b.panel("timeseries", "Collector success", [(f'{{__name__=~"(libvirt|ovs|log_pattern)_scrape_collector_success", {SEL}}}', "{{job}} {{collector}}")], w=24)
    b.panel("timeseries", "Collector duration", [(f'{{__name__=~"(libvirt|ovs|log_pattern)_scrape_collector_duration_seconds", {SEL}}}', "{{job}} {{collector}}")], unit="s")
    b.panel("timeseries", "Scrape duration", [(f'scrape_duration_seconds{{job=~"log_pattern|libvirt|dirty_flow", {SEL}}}', "{{job}} {{node}}")], unit="s")
    b.panel("timeseries", "Samples per scrape", [(f'scrape_samples_scraped{{job=~"log_pattern|libvirt|dirty_flow", {SEL}}}', "{{job}} {{node}}")])
    b.panel("timeseries", "Open file descriptors", [(f'process_open_fds{{{SEL}}}', "{{job}}")])
    return b


# Fleet-wide panels read the recorded series of alerts/rules/recording.rules.yml (docs/scaling.md),
# never the raw per-VM series of every node; the rack variable filters through the topology.
# Series aggregated over nodes (per project, namespace, job) are summed once more: a long-term
# store fed by several Prometheus shards holds one such series per shard (alerts/tests/fleet.py).
RACK = 'on (node) group_left (rack) topology:node_rack:info{rack=~"$rack"}'


def fleet():
    b = Board("cne-fleet", "Fleet (recorded)",
              "Every compute node at once, from recording rules: cheap at thousands of hypervisors.")
    b.row("What is broken where")
    b.panel("timeseries", "Dirty flows per rack and check", [('rack:ovs_dirty_flows:sum{rack=~"$rack"}', "{{rack}} {{check}}")])
    b.panel("table", "Nodes with the most broken pinning (host CPUs)", [(f'topk(20, node:libvirt_pinning_broken_cpus:sum * {RACK})', "")])
    b.row("Workload")
    b.panel("timeseries", "Guest CPU per project (cores, top 20)", [("topk(20, sum by (project_id, project_name) (project:libvirt_domain_cpu_seconds:rate5m))", "{{project_name}}")])
    b.panel("timeseries", "VMs per project (top 20)", [("topk(20, sum by (project_id, project_name) (project:libvirt_domains:count))", "{{project_name}}")])
    b.panel("timeseries", "Guest CPU per node (cores, top 20)", [(f"topk(20, node:libvirt_domain_cpu_seconds:rate5m * {RACK})", "{{node}}")])
    b.panel("timeseries", "Domains by state", [(f"sum by (state) (node:libvirt_domains_by_state:sum * {RACK})", "{{state}}")])
    b.panel("timeseries", "Log matches /s per namespace and rule (top 20)", [("topk(20, sum by (namespace, rule) (namespace_rule:log_pattern_matches:rate5m))", "{{namespace}} {{rule}}")], unit="ops")
    b.panel("timeseries", "OpenFlow flows per bridge", [(f"sum by (bridge) (node:ovs_flows:sum * {RACK})", "{{bridge}}")])
    b.row("Cost")
    b.panel("timeseries", "Series per scrape, all targets of each exporter", [("sum by (job) (job:scrape_samples_scraped:sum)", "{{job}}")], w=24,
            description="The input of the capacity plan in docs/scaling.md.")
    return b


BOARDS = {
    "overview.json": overview,
    "libvirt.json": libvirt,
    "ovs.json": ovs,
    "log_pattern.json": log_pattern,
    "exporter_health.json": health,
    "fleet.json": fleet,
}


def render():
    return {name: json.dumps(fn().json(), indent=2, sort_keys=True) + "\n" for name, fn in BOARDS.items()}


def main():
    for name, text in render().items():
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            f.write(text)
    print(f"wrote {len(BOARDS)} dashboards", file=sys.stderr)


if __name__ == "__main__":
    main()
