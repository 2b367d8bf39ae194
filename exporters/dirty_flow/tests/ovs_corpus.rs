//! The OVS corpus (`tests/fixtures/ovs_corpus/`): every flow of Open vSwitch's own test suite
//! that OVS 3.1 loads and prints, dumped by `ovs-ofctl` at OpenFlow 1.0 and 1.5. Every line
//! parses, every flow is counted (per table and in total), and the line-level facts hold.
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
    for name in ["dump_of10.txt", "dump_of15.txt"] {
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
    for name in ["dump_of10.txt", "dump_of15.txt"] {
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
