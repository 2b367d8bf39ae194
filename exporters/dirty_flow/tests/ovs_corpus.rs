//! The OVS corpus (`tests/fixtures/ovs_corpus/`): every flow of Open vSwitch's own test suite
//! that OVS 3.1 loads and prints, dumped by `ovs-ofctl` at OpenFlow 1.0, 1.3 and 1.5. Every line
//! parses, every flow is counted (per table and in total), and the line-level facts hold; the
//! checks read the same from the flows of the 1.5 dump dumped at 1.3 (the versions the
//! exporter asks for first) as from the 1.5 dump.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use dirty_flow_exporter::checks::{BridgeScan, Ports};
use dirty_flow_exporter::config::Config;
use dirty_flow_exporter::parse::{parse_line, Line};

fn corpus(name: &str) -> String {
    let p = format!(
        "{}/tests/fixtures/ovs_corpus/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap()
}

#[test]
fn every_flow_of_the_ovs_corpus_parses_and_is_counted() {
    for name in [
        "dump_of10.txt",
        "dump_of13.txt",
        "dump_of15.txt",
        "dump_of15_at13.txt",
    ] {
        let dump = corpus(name);
        let flow_lines: Vec<&str> = dump.lines().filter(|l| l.starts_with(' ')).collect();
        let headers = dump.lines().filter(|l| l.contains(" reply ")).count();
        assert!(flow_lines.len() > 800, "{name}: {}", flow_lines.len());
        assert!(headers >= 2, "{name}: the dump spans replies");

        // Each line on its own, and the table each flow names.
        let mut per_table: BTreeMap<String, u64> = BTreeMap::new();
        for l in &flow_lines {
            match parse_line(l) {
                Ok(Line::Flow(f)) => {
                    assert!(l.ends_with(f.text), "{name}: {l}");
                    assert!(!f.actions_text.is_empty(), "{name}: {l}");
                    *per_table.entry(f.table.to_string()).or_default() += 1;
                }
                other => panic!("{name}: {l:?} -> {other:?}"),
            }
        }

        // Through a scan with ports known (the port walk included), as the exporter reads it.
        let cfg = Config::default();
        let mut scan = BridgeScan::new(&cfg, Some(Ports::default()), 5);
        for l in dump.lines() {
            scan.feed_line(l)
                .unwrap_or_else(|e| panic!("{name}: {l:?}: {e}"));
        }
        let r = scan.finish();
        assert_eq!(r.parse_errors, 0, "{name}");
        assert_eq!(r.flows, flow_lines.len() as u64, "{name}");
        assert_eq!(r.replies, headers as u64, "{name}");
        assert_eq!(r.tables, per_table, "{name}");
    }
}

#[test]
fn the_corpus_holds_the_lines_ovs_prints_with_quirks() {
    for name in ["dump_of10.txt", "dump_of13.txt", "dump_of15.txt"] {
        let dump = corpus(name);
        for quirk in [
            // Loaded as `tun_gbp_flags=0/0x1`.
            "tun_gbp_flags=0 ",
            "mpls_bos=0 actions=drop",
            "packet_type=(1,0x800)",
            "packet_type=(1,0x894f)",
            "actions=group:",
            "conjunction(",
        ] {
            assert!(dump.contains(quirk), "{name} lacks {quirk:?}");
        }
    }
}

/// Flows, flows per table, and per check (name, dirty, incomplete).
type Verdicts = (u64, BTreeMap<String, u64>, Vec<(String, u64, bool)>);

/// What the checks make of a whole dump, with the evidence left out (its text differs between
/// versions: `load:` for some `set_field:`).
fn verdicts(dump: &str) -> Verdicts {
    let cfg = Config::default();
    let mut scan = BridgeScan::new(&cfg, Some(Ports::default()), 5);
    for l in dump.lines() {
        scan.feed_line(l).unwrap();
    }
    let r = scan.finish();
    let checks = r
        .checks
        .iter()
        .map(|c| (c.name.clone(), c.dirty, c.incomplete))
        .collect();
    (r.flows, r.tables, checks)
}

#[test]
fn the_checks_read_the_same_from_a_1_3_dump_as_from_a_1_5_dump_of_the_same_flows() {
    let at13 = corpus("dump_of15_at13.txt");
    assert!(at13.contains("OFPST_FLOW reply (OF1.3)"), "not a 1.3 dump");
    let (of13, of15) = (verdicts(&at13), verdicts(&corpus("dump_of15.txt")));
    assert_eq!(of13, of15);
    // Not vacuous: the corpus has dirty flows of several kinds.
    let found: Vec<&str> = of15
        .2
        .iter()
        .filter(|(_, dirty, _)| *dirty > 0)
        .map(|(n, _, _)| n.as_str())
        .collect();
    assert!(
        found.contains(&"missing_port") && found.contains(&"overlap"),
        "{found:?}"
    );
}
