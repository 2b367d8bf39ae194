//! The checks over flows that real OVN (Debian's OVN 23.03: ovn-northd and ovn-controller
//! programming an OVS sandbox) installed, captured by `tests/fixtures/ovn/capture.sh`: a healthy
//! node must show 0 for every check, and the node broken on purpose must be caught.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use dirty_flow_exporter::checks::{BridgeReport, BridgeScan, Ports};
use dirty_flow_exporter::config::Config;
use dirty_flow_exporter::inventory::parse_inventory;

fn fixture(name: &str) -> String {
    let p = format!("{}/tests/fixtures/ovn/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Scans a captured br-int dump with the default config and the captured inventory.
fn scan(dump: &str, inventory: &str) -> BridgeReport {
    let cfg = Config::default();
    let inv = parse_inventory(&fixture(inventory)).unwrap();
    let mut s = BridgeScan::new(&cfg, Some(Ports::new(&inv["br-int"])), 10);
    for line in fixture(dump).lines() {
        s.feed_line(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    s.finish()
}

fn counts(r: &BridgeReport) -> BTreeMap<String, u64> {
    r.checks.iter().map(|c| (c.name.clone(), c.dirty)).collect()
}

fn want(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(n, c)| (n.to_string(), c)).collect()
}

#[test]
fn healthy_ovn_node_parses_exactly() {
    let r = scan("healthy_br-int.txt", "healthy_inventory.json");
    assert_eq!((r.flows, r.parse_errors, r.replies), (1515, 0, 5));
    assert_eq!(r.tables.len(), 50);
    // Before any controller default: equal actions and impossible conntrack states are no
    // overlap (617 pairs, 293 flows by the per-table comparison alone), what is left needs
    // the path a packet took (README: What an overlap means).
    assert_eq!(
        counts(&r),
        want(&[("missing_port", 0), ("stale_cookie", 0), ("overlap", 111)])
    );
}
