//! Parser and checks over dumps captured from a real ovs-vswitchd sandbox
//! (`tests/fixtures/capture.sh`), plus randomized garbage that must never panic.

use e2e_tests::Rng;
use std::collections::BTreeMap;

use dirty_flow_exporter::checks::{BridgeScan, Ports};
use dirty_flow_exporter::config::Config;
use dirty_flow_exporter::inventory::parse_inventory;
use dirty_flow_exporter::parse::{parse_line, Line, Table};

fn fixture(name: &str) -> String {
    let p = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Parses every line; returns (flows, headers) and fails on any parse error.
fn parse_all(text: &str) -> (Vec<String>, usize) {
    let mut flows = Vec::new();
    let mut headers = 0;
    for (n, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Line::Flow(f)) => flows.push(f.text.to_string()),
            Ok(Line::Header(_)) => headers += 1,
            Ok(Line::Empty) => {}
            Err(e) => panic!("line {}: {e}: {line:?}", n + 1),
        }
    }
    (flows, headers)
}

#[test]
fn every_fixture_line_parses() {
    for (name, want_flows, want_headers) in [
        ("dump_of10.txt", 34, 1),
        ("dump_of13.txt", 34, 1),
        ("dump_of15.txt", 34, 1),
        ("dump_no_stats.txt", 34, 0),
        ("dump_names.txt", 34, 0),
        ("dump_multi_reply.txt", 1200, 2),
        ("dump_multi_reply_of13.txt", 1200, 2),
    ] {
        let (flows, headers) = parse_all(&fixture(name));
        assert_eq!(flows.len(), want_flows, "{name}");
        assert_eq!(headers, want_headers, "{name}");
    }
}

#[test]
fn versions_agree_on_flow_identity() {
    // Every OpenFlow version prints the same set of (table, priority, cookie, match).
    let key = |name: &str| {
        let text = fixture(name);
        let mut keys: Vec<(String, u16, u64, String)> = text
            .lines()
            .filter_map(|l| match parse_line(l) {
                Ok(Line::Flow(f)) => Some((
                    f.table.to_string(),
                    f.priority,
                    f.cookie,
                    f.match_text.to_string(),
                )),
                _ => None,
            })
            .collect();
        keys.sort();
        keys
    };
    let of10 = key("dump_of10.txt");
    assert_eq!(of10, key("dump_of13.txt"));
    assert_eq!(of10, key("dump_of15.txt"));
    assert_eq!(of10, key("dump_no_stats.txt"));
}

#[test]
fn fixture_details() {
    let text = fixture("dump_of15.txt");
    let flows: Vec<_> = text
        .lines()
        .filter_map(|l| match parse_line(l) {
            Ok(Line::Flow(f)) => Some(f),
            _ => None,
        })
        .collect();
    let imp = flows
        .iter()
        .find(|f| f.importance == 7)
        .expect("importance flow");
    assert_eq!(
        (imp.cookie, imp.priority, imp.idle_timeout, imp.hard_timeout),
        (1, 100, 300, 600)
    );
    assert!(imp.duration.is_some() && imp.idle_age.is_some());
    let default_prio = flows.iter().filter(|f| f.priority == 32768).count();
    assert_eq!(default_prio, 1);
    let learn = flows
        .iter()
        .find(|f| f.actions_text.starts_with("learn("))
        .expect("learn flow");
    assert_eq!(learn.actions().count(), 1);
    let ct = flows
        .iter()
        .find(|f| f.actions_text.starts_with("ct(commit,zone=5"))
        .expect("ct flow");
    let names: Vec<_> = ct.actions().map(|a| a.name).collect();
    assert_eq!(names, vec!["ct", "output"]);

    let named = fixture("dump_names.txt");
    assert!(named
        .lines()
        .any(|l| matches!(parse_line(l), Ok(Line::Flow(f)) if f.table == Table::Name("acl"))));
}

#[test]
fn checks_over_the_fixture() {
    let inv = parse_inventory(&fixture("vsctl_inventory.json")).unwrap();
    let cfg = Config::default();
    for name in ["dump_of10.txt", "dump_of13.txt", "dump_of15.txt"] {
        let mut scan = BridgeScan::new(&cfg, Some(Ports::new(&inv["br-int"])), 10);
        for l in fixture(name).lines() {
            scan.feed_line(l).unwrap();
        }
        let r = scan.finish();
        assert_eq!(r.flows, 34, "{name}");
        assert_eq!(r.parse_errors, 0);
        let by: BTreeMap<_, _> = r.checks.iter().map(|c| (c.name.as_str(), c)).collect();
        // output:99 is the only port reference the sandbox lacks; enqueue:1, in_port=3 etc. exist.
        let mp = by["missing_port"];
        assert_eq!(mp.dirty, 1, "{name}: {:?}", mp.evidence);
        assert!(mp.evidence[0].flow.contains("output:99"));
        assert_eq!(mp.evidence[0].table, "10");
        assert_eq!(mp.evidence[0].cookie, 0xabc);
        // The two priority-50 tcp flows of table 10 overlap (10.0.0.0/24 -> 10.1.0.5:80);
        // the priority-9 flows of table 31 (in_port=LOCAL vs a multicast dl_dst) too.
        let ov = by["overlap"];
        assert_eq!(ov.dirty, 4, "{name}: {:?}", ov.evidence);
        // Cookies: 0x0 dominates; the flows are seconds old, so within grace: none stale.
        assert_eq!(by["stale_cookie"].dirty, 0);
        assert_eq!(r.tables["10"], 4);
    }
}

#[test]
fn randomized_garbage_never_panics() {
    let corpus: Vec<String> = ["dump_of10.txt", "dump_of13.txt", "dump_no_stats.txt"]
        .iter()
        .flat_map(|n| fixture(n).lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let alphabet = b" ,=()[]:/.-+>_0x19afzACTIONS\t\xc3\xa9";
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let cfg = Config::default();
    let mut scan = BridgeScan::new(&cfg, Some(Ports::default()), 3);
    let mut errors = 0;
    for _ in 0..20_000 {
        let base = corpus[rng.below(corpus.len())].clone();
        let mut bytes = base.into_bytes();
        for _ in 0..1 + rng.below(6) {
            match rng.below(4) {
                0 if !bytes.is_empty() => {
                    let i = rng.below(bytes.len());
                    bytes[i] = alphabet[rng.below(alphabet.len())];
                }
                1 if !bytes.is_empty() => {
                    let i = rng.below(bytes.len());
                    bytes.remove(i);
                }
                2 => {
                    let i = rng.below(bytes.len() + 1);
                    bytes.insert(i, alphabet[rng.below(alphabet.len())]);
                }
                _ => {
                    let cut = rng.below(bytes.len() + 1);
                    bytes.truncate(cut);
                }
            }
        }
        let line = String::from_utf8_lossy(&bytes);
        if scan.feed_line(&line).is_err() {
            errors += 1;
        }
    }
    // Pure random bytes too.
    for _ in 0..5_000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let line = String::from_utf8_lossy(&bytes);
        if scan.feed_line(&line).is_err() {
            errors += 1;
        }
    }
    let r = scan.finish();
    assert_eq!(r.parse_errors, errors);
    assert!(
        errors > 1000,
        "mutations should break many lines, got {errors}"
    );
}
