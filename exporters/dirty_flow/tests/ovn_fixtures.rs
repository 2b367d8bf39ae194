//! The checks over flows that real OVN (Debian's OVN 23.03: ovn-northd and ovn-controller
//! programming an OVS sandbox) installed, captured by `tests/fixtures/ovn/capture.sh`: a healthy
//! node must show 0 for every check, and the node broken on purpose must be caught.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use dirty_flow_exporter::checks::{BridgeReport, BridgeScan, Ports};
use dirty_flow_exporter::config::{Config, OnOff};
use dirty_flow_exporter::controller::{
    apply, parse_connection_status, parse_controllers, Controller, OvnStatus,
};
use dirty_flow_exporter::inventory::parse_inventory;

fn fixture(name: &str) -> String {
    let p = format!("{}/tests/fixtures/ovn/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Scans a captured br-int dump with the default config, the captured inventory and OVN's
/// bridge as the collector gives it: the overlap check on, a paused packet resumed by
/// ovn-controller.
fn scan(dump: &str, inventory: &str) -> BridgeReport {
    scan_text(&fixture(dump), inventory)
}

/// [`scan`] of a dump's text, with the captured groups when the scan asks for them.
fn scan_text(dump: &str, inventory: &str) -> BridgeReport {
    scan_as(dump, inventory, Controller::Ovn)
}

/// [`scan_text`] with what `ctl` may change in a paused packet.
fn scan_as(dump: &str, inventory: &str, ctl: Controller) -> BridgeReport {
    let cfg = Config::default();
    let inv = parse_inventory(&fixture(inventory)).unwrap();
    let ports = Ports::new(&inv["br-int"]).with_resume(ctl.resume());
    let mut s = BridgeScan::new(&cfg, Some(ports), 10);
    for line in dump.lines() {
        s.feed_line(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    if s.wants_groups() {
        // The groups as dumped at the flows' version.
        let at13 = dump.starts_with("OFPST_FLOW reply (OF1.3)");
        s.set_groups(&fixture(if at13 {
            "healthy_br-int_groups_at13.txt"
        } else {
            "healthy_br-int_groups.txt"
        }));
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
    // Before any controller default: equal actions, impossible conntrack states, ACL hint
    // bits no path sets together (ingress, and egress after table 41 writes reg0 to 0), pairs
    // only a tracked packet matches where none arrives tracked (neighbour discovery and MLD
    // in tables 16 and 46, NAT label bits no flow or bucket writes in table 15), and ct_clear
    // or not before tables that never read the state (table 43) are no overlap (617 pairs,
    // 293 flows by the per-table comparison alone; 111 without the registers, 91 without the
    // reset table, 61 without the conntrack searches, 20 in table 46 when a packet
    // ovn-controller resumes could be anything).
    assert_eq!(
        counts(&r),
        want(&[("missing_port", 0), ("stale_cookie", 0), ("overlap", 0)])
    );
}

#[test]
fn a_paused_packet_that_could_be_anything_leaves_table_46_in_doubt() {
    // The same capture, as if a controller not known paused the DHCP requests of table 28
    // (`controller(pause)`): the resumed packet could be a tracked neighbour solicitation, so
    // table 46's neighbour discovery and MLD flows overlap the flows needing a conntrack state.
    let r = scan_as(
        &fixture("healthy_br-int.txt"),
        "healthy_inventory.json",
        Controller::None,
    );
    assert_eq!(counts(&r)["overlap"], 20);
    let ov = r.checks.iter().find(|c| c.name == "overlap").unwrap();
    assert!(
        ov.evidence.iter().all(|e| e.table == "46"),
        "{:#?}",
        ov.evidence
    );
}

#[test]
fn a_bridge_whose_overlap_check_is_off_makes_no_conntrack_search() {
    // Switched off by the config: the finding is dropped, so the searches it alone needs (and
    // the extra dump-groups) are not made; the per-table comparison's count stands as it is.
    let mut cfg = Config::default();
    cfg.bridge_checks
        .insert(("br-int".into(), "overlap".into()), OnOff::Off);
    let inv = parse_inventory(&fixture("healthy_inventory.json")).unwrap();
    let ports = Ports::new(&inv["br-int"])
        .with_overlap(cfg.check_on("br-int", "overlap"))
        .with_resume(Controller::Ovn.resume());
    assert!(ports.overlap_off());
    let mut s = BridgeScan::new(&cfg, Some(ports), 10);
    for line in fixture("healthy_br-int.txt").lines() {
        s.feed_line(line).unwrap();
    }
    assert!(!s.wants_groups());
    let r = s.finish();
    assert_eq!(counts(&r)["overlap"], 61, "the count without the searches");
}

/// The healthy capture with `extra` flows, each put after the last flow of its table (the
/// dump stays in table order).
fn healthy_with(extra: &[(u8, &str)]) -> String {
    let mut lines: Vec<String> = fixture("healthy_br-int.txt")
        .lines()
        .map(String::from)
        .collect();
    for &(table, flow) in extra {
        let tag = format!(" table={table},");
        let at = lines.iter().rposition(|l| l.contains(&tag)).unwrap() + 1;
        lines.insert(
            at,
            format!(" cookie=0x1, duration=1.0s, table={table}, n_packets=0, n_bytes=0, {flow}"),
        );
    }
    lines.join("\n")
}

fn overlap_tables(r: &BridgeReport) -> (u64, Vec<String>) {
    let ov = r.checks.iter().find(|c| c.name == "overlap").unwrap();
    (
        ov.dirty,
        ov.evidence
            .iter()
            .map(|e| format!("{} {}", e.table, e.flow))
            .collect(),
    )
}

#[test]
fn real_overlaps_added_to_a_healthy_ovn_node_are_caught() {
    let base = overlap_tables(&scan("healthy_br-int.txt", "healthy_inventory.json")).0;
    for (why, extra, table, more) in [
        (
            "two flows for neighbour solicitations, one sending on, one dropping",
            "priority=65532,icmp6,metadata=0x1,nw_ttl=255,icmp_type=135,icmp_code=0 actions=drop",
            16,
            2,
        ),
        (
            "established TCP a tracked packet brings, against the ACL's established flow",
            "priority=1,ct_state=+est+trk,tcp,metadata=0x1,tp_dst=22 actions=drop",
            16,
            2,
        ),
        (
            "a label bit the load balancer's group writes (bit 1)",
            "priority=50,ct_state=-new+est-rel+trk,ct_label=0x2/0x2,ip,metadata=0x3 actions=drop",
            15,
            2,
        ),
        (
            // Against the two flows of the same priority that send multicast and the router's
            // packets on without it.
            "ct_clear before table 44, which runs ct for IPv4 of metadata 1",
            "priority=110,ip,reg15=0x1,metadata=0x1 actions=ct_clear,resubmit(,44)",
            43,
            3,
        ),
    ] {
        let r = scan_text(&healthy_with(&[(table, extra)]), "healthy_inventory.json");
        let (dirty, shown) = overlap_tables(&r);
        assert_eq!(dirty, base + more, "{why}: {shown:#?}");
        assert!(
            shown.iter().any(|e| e.starts_with(&format!("{table} "))),
            "{why}: {shown:#?}"
        );
    }
}

/// As the collector reports it: the dump scanned, then the bridge's controller (read from the
/// captured database) and ovn-controller's answer applied.
fn report(dump: &str, inventory: &str, ovn: &OvnStatus) -> BridgeReport {
    let mut r = scan(dump, inventory);
    let ctl = parse_controllers(&fixture("healthy_controllers.json")).unwrap();
    assert_eq!(ctl["br-int"], Controller::Ovn);
    apply(
        &mut r,
        "br-int",
        ctl["br-int"],
        &Config::default(),
        Some(ovn),
    );
    r
}

fn incomplete(r: &BridgeReport) -> Vec<&str> {
    r.checks
        .iter()
        .filter(|c| c.incomplete)
        .map(|c| c.name.as_str())
        .collect()
}

#[test]
fn healthy_ovn_node_shows_nothing_with_the_shipped_defaults() {
    let connected = parse_connection_status(&fixture("healthy_connection_status.txt"));
    assert_eq!(connected, OvnStatus::Connected);
    let r = report("healthy_br-int.txt", "healthy_inventory.json", &connected);
    assert_eq!(
        counts(&r),
        want(&[("missing_port", 0), ("stale_cookie", 0), ("overlap", 0)])
    );
    assert!(incomplete(&r).is_empty());
    assert!(r.checks.iter().all(|c| c.evidence.is_empty()));
}

#[test]
fn ovn_controller_stopped_and_a_port_deleted_is_caught() {
    // ovn-controller was stopped (its pidfile and socket gone) and vif1-3 (ofport 3) deleted:
    // its two flows stay.
    let gone = OvnStatus::Unreachable("ovn-controller.pid: No such file or directory".into());
    let r = report(
        "controller_down_port_deleted_br-int.txt",
        "controller_down_port_deleted_inventory.json",
        &gone,
    );
    assert_eq!(
        counts(&r),
        want(&[("missing_port", 2), ("stale_cookie", 0), ("overlap", 0)])
    );
    // ovn-controller cannot be asked: staleness is unknown, not 0.
    assert_eq!(incomplete(&r), vec!["stale_cookie"]);
    let missing = r.checks.iter().find(|c| c.name == "missing_port").unwrap();
    assert!(
        missing
            .evidence
            .iter()
            .all(|e| e.flow.contains("in_port=3") || e.flow.contains("output:3")),
        "{:#?}",
        missing.evidence
    );
}

#[test]
fn a_flow_to_a_deleted_port_added_by_hand_is_caught() {
    let connected = parse_connection_status(&fixture("healthy_connection_status.txt"));
    let r = report(
        "hand_flow_br-int.txt",
        "hand_flow_inventory.json",
        &connected,
    );
    assert_eq!(
        counts(&r),
        want(&[("missing_port", 1), ("stale_cookie", 0), ("overlap", 0)])
    );
    let missing = r.checks.iter().find(|c| c.name == "missing_port").unwrap();
    assert!(missing.evidence[0].flow.contains("actions=output:77"));
}

/// The exporter asks for OpenFlow 1.0 to 1.3 first: each state of the node, dumped at 1.3
/// (`*_at13.txt`, the same node at the same moment as the 1.5 dump), parses exactly and gives
/// the checks the same answers as at 1.5.
#[test]
fn every_state_of_the_node_reads_the_same_at_openflow_1_3() {
    let connected = parse_connection_status(&fixture("healthy_connection_status.txt"));
    let gone = OvnStatus::Unreachable("ovn-controller.pid: No such file or directory".into());
    for (dump, inventory, ovn) in [
        ("healthy_br-int", "healthy_inventory.json", &connected),
        ("hand_flow_br-int", "hand_flow_inventory.json", &connected),
        (
            "controller_down_port_deleted_br-int",
            "controller_down_port_deleted_inventory.json",
            &gone,
        ),
    ] {
        let at13 = format!("{dump}_at13.txt");
        assert!(
            fixture(&at13).starts_with("OFPST_FLOW reply (OF1.3)"),
            "{at13}"
        );
        let (r13, r15) = (
            report(&at13, inventory, ovn),
            report(&format!("{dump}.txt"), inventory, ovn),
        );
        assert_eq!(r13.parse_errors, 0, "{at13}");
        assert_eq!((r13.flows, &r13.tables), (r15.flows, &r15.tables), "{at13}");
        assert_eq!(counts(&r13), counts(&r15), "{at13}");
        assert_eq!(incomplete(&r13), incomplete(&r15), "{at13}");
    }
}

#[test]
fn ovn_controller_cut_off_from_its_database_leaves_every_flow_unmanaged() {
    let cut = parse_connection_status(&fixture("sb_down_connection_status.txt"));
    assert_eq!(cut, OvnStatus::Disconnected("not connected".into()));
    let r = report("healthy_br-int.txt", "healthy_inventory.json", &cut);
    assert_eq!(
        counts(&r),
        want(&[("missing_port", 0), ("stale_cookie", 1515), ("overlap", 0)])
    );
}
