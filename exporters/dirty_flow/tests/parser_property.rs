//! A seeded property test of the flow-line parser, run by plain `cargo test` (bounded: a fixed
//! number of cases from a fixed seed, so a failure reproduces). Seeds are the lines of the OVS
//! corpus (`tests/fixtures/ovs_corpus/`); mutations are structural (splicing match items and
//! actions between lines, deep nesting, stray parentheses, commas and blanks, truncation, bytes
//! of every kind). The same inputs also go through a scan with ports known, as the cargo-fuzz
//! target in `fuzz/` does.
//!
//! Properties: no panic; a line that parses keeps its text (`text` is the line's end, and
//! parsing `text` alone gives back priority, match and actions); match items and actions,
//! joined with commas, give back the match and the actions; the scan counts exactly the lines
//! that fail.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use dirty_flow_exporter::checks::{BridgeScan, Ports};
use dirty_flow_exporter::config::Config;
use dirty_flow_exporter::parse::{parse_flow, parse_line, split_match, Line};
use e2e_tests::Rng;

fn corpus() -> Vec<String> {
    ["dump_of10.txt", "dump_of15.txt"]
        .iter()
        .flat_map(|n| {
            let p = format!(
                "{}/tests/fixtures/ovs_corpus/{n}",
                env!("CARGO_MANIFEST_DIR")
            );
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A piece of another line: a match item or an action (split naively: also mid-parenthesis).
fn piece<'a>(rng: &mut Rng, line: &'a str) -> &'a str {
    let parts: Vec<&str> = line.split([',', ' ']).filter(|p| !p.is_empty()).collect();
    parts.get(rng.below(parts.len())).copied().unwrap_or("")
}

fn mutate(rng: &mut Rng, seeds: &[String], line: &str) -> String {
    let mut s = line.to_string();
    for _ in 0..1 + rng.below(4) {
        let other = &seeds[rng.below(seeds.len())];
        let donor = piece(rng, other);
        let at = {
            let mut i = rng.below(s.len() + 1);
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        match rng.below(10) {
            0 => s.insert_str(at, donor),
            1 => s.insert_str(at, &format!(",{donor}")),
            2 => {
                let n = 1 + rng.below(600);
                let word = ["clone(", "write_actions(", "ct(exec(", "(", "learn("][rng.below(5)];
                s.insert_str(
                    at,
                    &format!("{}{}", word.repeat(n), ")".repeat(rng.below(n + 1))),
                );
            }
            3 => s.insert(at, ['(', ')', ',', ' ', '=', '\t', '>', '/'][rng.below(8)]),
            4 => s.truncate(at),
            5 => {
                let end = (at + rng.below(20)).min(s.len());
                if s.is_char_boundary(end) {
                    s.replace_range(at..end, "");
                }
            }
            6 => s.insert(
                at,
                char::from_u32(rng.below(0x3000) as u32).unwrap_or('\u{fffd}'),
            ),
            7 => {
                s = s.replacen(
                    " actions=",
                    [" actions=", "actions=", " actions= ", ", actions="][rng.below(4)],
                    1,
                )
            }
            8 => s.insert_str(
                at,
                ["priority=", "table=", "cookie=0x", "packet_type=(", "0x"][rng.below(5)],
            ),
            _ => {
                // Another line's actions on this line's head.
                if let (Some(a), Some(b)) = (s.find(" actions="), other.find(" actions=")) {
                    s = format!("{}{}", &s[..a], &other[b..]);
                }
            }
        }
    }
    s
}

fn check_properties(line: &str) -> bool {
    match parse_line(line) {
        Ok(Line::Flow(f)) => {
            let trimmed = line.trim_end_matches(['\n', '\r']);
            assert!(trimmed.trim_end().ends_with(f.text), "{line:?}");
            let again = parse_flow(f.text).unwrap_or_else(|e| panic!("{:?}: {e}", f.text));
            assert_eq!(
                (again.priority, again.match_text, again.actions_text),
                (f.priority, f.match_text, f.actions_text),
                "{line:?}"
            );
            let items: Vec<String> = split_match(f.match_text)
                .map(|(k, v)| v.map_or(k.to_string(), |v| format!("{k}={v}")))
                .collect();
            assert_eq!(items.join(","), f.match_text, "{line:?}");
            let actions: Vec<&str> = f.actions().map(|a| a.text).collect();
            assert_eq!(actions.join(","), f.actions_text, "{line:?}");
            true
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

#[test]
fn mutated_corpus_lines_keep_the_parser_properties() {
    let seeds = corpus();
    assert!(seeds.len() > 1000);
    // Every seed holds the properties unmutated.
    for l in &seeds {
        assert!(check_properties(l), "{l:?}");
    }
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let cfg = Config::default();
    let mut scan = BridgeScan::new(&cfg, Some(Ports::default()), 3);
    let (mut ok, mut bad) = (0u64, 0u64);
    for _ in 0..30_000 {
        let base = &seeds[rng.below(seeds.len())];
        let line = mutate(&mut rng, &seeds, base);
        let parsed = check_properties(&line);
        let fed = scan.feed_line(&line);
        assert_eq!(parsed, fed.is_ok(), "{line:?}");
        if parsed {
            ok += 1;
        } else {
            bad += 1;
        }
    }
    let r = scan.finish();
    assert_eq!(r.parse_errors, bad);
    // The mutations reach both sides.
    assert!(ok > 3_000 && bad > 3_000, "ok {ok}, bad {bad}");
}
