//! The checks over flows that neutron's real Open vSwitch agent (neutron 29 from PyPI, native
//! OpenFlow, `firewall_driver=openvswitch`, programming an OVS sandbox's br-int, br-tun and
//! br-ex for a VLAN and a VXLAN network with eight ports) installed, captured by
//! `tests/fixtures/neutron/capture.sh`: with the shipped checks file, a healthy node must show 0
//! for every check on every bridge, and each node broken on purpose must be caught by the right
//! check.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use dirty_flow_exporter::checks::groups::{judge, parse_groups, parse_meters};
use dirty_flow_exporter::checks::{BridgeReport, BridgeScan, Ports};
use dirty_flow_exporter::config::{load, Config};
use dirty_flow_exporter::controller::{apply, parse_controllers, Controller};
use dirty_flow_exporter::inventory::parse_inventory;

fn fixture(name: &str) -> String {
    let p = format!(
        "{}/tests/fixtures/neutron/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The checks file the DaemonSet and the systemd unit ship.
fn shipped() -> Config {
    let p = format!(
        "{}/../../deploy/kubernetes/base/config/flow-checks.yml",
        env!("CARGO_MANIFEST_DIR")
    );
    load(std::path::Path::new(&p)).unwrap()
}

/// Moves every `duration=` of a dump by `secs`: the same flows, dumped that much later (or
/// earlier).
fn shifted(dump: &str, secs: f64) -> String {
    dump.lines()
        .map(|l| match l.split_once("duration=") {
            Some((head, rest)) => {
                let (d, tail) = rest.split_once('s').unwrap();
                let d = d.parse::<f64>().unwrap() + secs;
                assert!(d >= 0.0, "{l}");
                format!("{head}duration={d:.3}s{tail}\n")
            }
            None => format!("{l}\n"),
        })
        .collect()
}

/// As the collector reports a bridge: its dump scanned with the bridge's ports (`reg5` naming
/// a port on neutron's bridges), then the bridge's controller, read from the captured
/// database, applied.
fn report_text(cfg: &Config, dump: &str, inventory: &str, bridge: &str) -> BridgeReport {
    let ctl = parse_controllers(&fixture("healthy_controllers.json")).unwrap();
    let controller = ctl[bridge];
    let inv = parse_inventory(&fixture(inventory)).unwrap();
    let ports = Ports::new(&inv[bridge]).with_reg5(controller == Controller::Neutron);
    let mut s = BridgeScan::new(cfg, Some(ports), 10);
    for line in dump.lines() {
        s.feed_line(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let mut r = s.finish();
    apply(&mut r, bridge, controller, cfg, None);
    r
}

fn report(dump: &str, inventory: &str, bridge: &str) -> BridgeReport {
    report_text(&shipped(), &fixture(dump), inventory, bridge)
}

fn counts(r: &BridgeReport) -> BTreeMap<String, u64> {
    r.checks.iter().map(|c| (c.name.clone(), c.dirty)).collect()
}

fn want(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(n, c)| (n.to_string(), c)).collect()
}

fn clean() -> BTreeMap<String, u64> {
    want(&[
        ("missing_port", 0),
        ("stale_cookie", 0),
        ("overlap", 0),
        ("flood_in_table_0", 0),
    ])
}

fn evidence<'r>(r: &'r BridgeReport, check: &str) -> Vec<&'r str> {
    let c = r.checks.iter().find(|c| c.name == check).unwrap();
    c.evidence.iter().map(|e| e.flow.as_str()).collect()
}

const BRIDGES: [&str; 3] = ["br-int", "br-tun", "br-ex"];

/// br-int flows of the first agent run that its restart did not replace.
const OLD_COOKIE_FLOWS: usize = 12;
/// br-int flows naming port 3 (ofport 13) by `in_port`, `output` or neutron's `reg5`.
const PORT_13_FLOWS: u64 = 47;
/// Those of them naming it by number (`in_port=13`, `output:13`).
const PORT_13_BY_NUMBER: u64 = 27;

#[test]
fn every_bridge_is_neutrons_by_the_database() {
    let ctl = parse_controllers(&fixture("healthy_controllers.json")).unwrap();
    let got: Vec<(&str, Controller)> = ctl.iter().map(|(b, c)| (b.as_str(), *c)).collect();
    assert_eq!(
        got,
        vec![
            ("br-ex", Controller::Neutron),
            ("br-int", Controller::Neutron),
            ("br-tun", Controller::Neutron),
        ]
    );
}

#[test]
fn healthy_neutron_node_shows_nothing_with_the_shipped_defaults() {
    for (b, flows, tables) in [("br-int", 400, 18), ("br-tun", 16, 8), ("br-ex", 3, 1)] {
        let r = report(&format!("healthy_{b}.txt"), "healthy_inventory.json", b);
        assert_eq!(
            (r.flows, r.parse_errors, r.tables.len()),
            (flows, 0, tables),
            "{b}"
        );
        assert_eq!(counts(&r), clean(), "{b}: {:#?}", r.checks);
        assert!(r.checks.iter().all(|c| !c.incomplete), "{b}");
    }
    // Long after (the agent's run older than any grace): still nothing.
    for b in BRIDGES {
        let dump = shifted(&fixture(&format!("healthy_{b}.txt")), 86_400.0);
        let r = report_text(&shipped(), &dump, "healthy_inventory.json", b);
        assert_eq!(counts(&r), clean(), "{b}");
    }
}

#[test]
fn healthy_neutron_node_has_no_dangling_group_or_meter() {
    let groups = parse_groups(fixture("healthy_br-int_groups.txt")).unwrap();
    let inv = parse_inventory(&fixture("healthy_inventory.json")).unwrap();
    let ports = Ports::new(&inv["br-int"]).with_reg5(true);
    let r = report("healthy_br-int.txt", "healthy_inventory.json", "br-int");
    let meters = parse_meters(&fixture("healthy_br-int_meters.txt")).unwrap();
    let j = judge(&r.refs, Ok(&groups), Ok(&meters), Some(&ports), 10);
    assert!(j.unknown.is_empty() && j.candidates.is_empty(), "{j:?}");
    assert!(j.checks.iter().all(|c| c.dirty == 0), "{j:?}");
}

#[test]
fn a_flow_to_a_deleted_port_added_by_hand_is_caught() {
    let r = report("hand_flow_br-int.txt", "hand_flow_inventory.json", "br-int");
    assert_eq!(
        counts(&r),
        want(&[
            ("missing_port", 1),
            ("stale_cookie", 0),
            ("overlap", 0),
            ("flood_in_table_0", 0),
        ])
    );
    assert_eq!(
        evidence(&r, "missing_port"),
        vec!["priority=100,in_port=99,dl_dst=fa:16:3e:00:09:09 actions=output:77"]
    );
}

/// The cookies of a dump, with their flows, most flows first.
fn cookies(dump: &str) -> Vec<(u64, usize)> {
    let mut n: BTreeMap<u64, usize> = BTreeMap::new();
    for l in dump.lines() {
        if let Some(c) = l
            .strip_prefix(" cookie=0x")
            .and_then(|r| r.split(',').next())
        {
            *n.entry(u64::from_str_radix(c, 16).unwrap()).or_default() += 1;
        }
    }
    let mut v: Vec<(u64, usize)> = n.into_iter().collect();
    v.sort_by_key(|c| std::cmp::Reverse(c.1));
    v
}

#[test]
fn an_agent_restart_on_a_quiet_node_leaves_the_old_cookies_flows_and_they_are_caught() {
    // The agent was restarted after running past stale_cookie's window, with no port event
    // since: its new run replaced most of br-int's flows with its new cookie, the old run's
    // firewall flows whose conjunction ids changed stay with the old cookie.
    let dump = fixture("restart_quiet_br-int.txt");
    let c = cookies(&dump);
    assert_eq!(c.len(), 2, "{c:x?}");
    let (old, left) = c[1];
    assert_eq!(left, OLD_COOKIE_FLOWS);
    let r = report(
        "restart_quiet_br-int.txt",
        "restart_quiet_inventory.json",
        "br-int",
    );
    assert_eq!(
        counts(&r),
        want(&[
            ("missing_port", 0),
            ("stale_cookie", OLD_COOKIE_FLOWS as u64),
            ("overlap", 0),
            ("flood_in_table_0", 0),
        ])
    );
    let stale = r.checks.iter().find(|c| c.name == "stale_cookie").unwrap();
    assert!(stale.evidence.iter().all(|e| e.cookie == old));
    // br-tun and br-ex: the new run's flows replaced every flow of the old one.
    for b in ["br-tun", "br-ex"] {
        let r = report(
            &format!("restart_quiet_{b}.txt"),
            "restart_quiet_inventory.json",
            b,
        );
        assert_eq!(counts(&r), clean(), "{b}");
    }
}

#[test]
fn the_old_cookie_is_not_stale_within_the_grace_of_the_new_run() {
    // The dump was taken past the grace; as if taken when the new run had just synced (its
    // oldest flow a few seconds old), the old cookie is not judged yet.
    let dump = fixture("restart_quiet_br-int.txt");
    let grace = shipped().stale_cookie.grace.as_secs_f64();
    let earlier = shifted(&dump, -grace);
    let r = report_text(
        &shipped(),
        &earlier,
        "restart_quiet_inventory.json",
        "br-int",
    );
    assert_eq!(counts(&r), clean());
}

#[test]
fn a_port_event_after_the_restart_clears_the_old_cookie() {
    // A VM booted (a ninth port): at this first port event after its first sync, the agent
    // deleted every flow of other cookies.
    for b in BRIDGES {
        let dump = fixture(&format!("restart_port_event_{b}.txt"));
        assert_eq!(cookies(&dump).len(), 1, "{b}");
        let r = report(
            &format!("restart_port_event_{b}.txt"),
            "restart_port_event_inventory.json",
            b,
        );
        assert_eq!(counts(&r), clean(), "{b}");
    }
}

#[test]
fn agent_stopped_and_a_port_deleted_is_caught_with_neutrons_register() {
    // The agent was stopped and port 3 (ofport 13) deleted: its flows stay. 20 of them name the
    // port only in neutron's register (reg5=0xd): missing_port counts them on neutron's bridge.
    let r = report(
        "agent_down_port_deleted_br-int.txt",
        "agent_down_port_deleted_inventory.json",
        "br-int",
    );
    assert_eq!(
        counts(&r),
        want(&[
            ("missing_port", PORT_13_FLOWS),
            ("stale_cookie", 0),
            ("overlap", 0),
            ("flood_in_table_0", 0),
        ])
    );
    let named = |f: &str| {
        f.split([',', ' ']).any(|t| {
            let t = t.trim_start_matches("actions=");
            matches!(t, "in_port=13" | "reg5=0xd" | "output:13")
        })
    };
    let shown = evidence(&r, "missing_port");
    assert_eq!(shown.len(), 10);
    assert!(shown.iter().all(|f| named(f)), "{shown:#?}");
    // Without the register, only the flows naming the port by number are seen.
    let cfg = shipped();
    let inv = parse_inventory(&fixture("agent_down_port_deleted_inventory.json")).unwrap();
    let mut s = BridgeScan::new(&cfg, Some(Ports::new(&inv["br-int"])), 10);
    for line in fixture("agent_down_port_deleted_br-int.txt").lines() {
        s.feed_line(line).unwrap();
    }
    let plain = s.finish();
    assert_eq!(counts(&plain)["missing_port"], PORT_13_BY_NUMBER);
}

/// The exporter asks for OpenFlow 1.0 to 1.3 first: every captured state of every bridge,
/// dumped at 1.3 right after the 1.4 dump (`*_at13.txt`), parses exactly and gives the checks
/// the same answers.
#[test]
fn every_state_of_every_bridge_reads_the_same_at_openflow_1_3() {
    let all = ["br-int", "br-tun", "br-ex"];
    for (state, bridges) in [
        ("healthy", &all[..]),
        ("hand_flow", &all[..1]),
        ("restart_quiet", &all[..]),
        ("restart_port_event", &all[..]),
        ("agent_down_port_deleted", &all[..1]),
    ] {
        let inventory = format!("{state}_inventory.json");
        for b in bridges {
            let (at13, at14) = (format!("{state}_{b}_at13.txt"), format!("{state}_{b}.txt"));
            assert!(
                fixture(&at13).starts_with("OFPST_FLOW reply (OF1.3)"),
                "{at13}"
            );
            assert!(
                fixture(&at14).starts_with("OFPST_FLOW reply (OF1.4)"),
                "{at14}"
            );
            let (r13, r14) = (report(&at13, &inventory, b), report(&at14, &inventory, b));
            assert_eq!(r13.parse_errors, 0, "{at13}");
            assert_eq!((r13.flows, &r13.tables), (r14.flows, &r14.tables), "{at13}");
            assert_eq!(counts(&r13), counts(&r14), "{at13}");
            let incomplete = |r: &BridgeReport| r.checks.iter().filter(|c| c.incomplete).count();
            assert_eq!(incomplete(&r13), incomplete(&r14), "{at13}");
        }
    }
}
