//! Seeded mutation test of the parsers of what libvirt hands the exporter: domain XML
//! (`parse_domain_xml`, which reads nova's metadata and its CPU policy too) and nova's metadata
//! element on its own (`parse_nova_metadata`). The seeds are the committed fixtures, those nova
//! itself wrote (`tests/fixtures/nova/`) among them; each round mutates one seed (cut, repeat,
//! insert XML-significant text, deep nesting, entities, truncation, non-ASCII) and the parsers
//! must return `Ok` or `Err`, never panic. Bounded rounds, a fixed seed: the same cases every
//! run; `LIBVIRT_FUZZ_ROUNDS` and `LIBVIRT_FUZZ_SEED` vary them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use e2e_tests::Rng;
use std::path::Path;

use libvirt_exporter::domain_xml::parse_domain_xml;
use libvirt_exporter::nova::parse_nova_metadata;

/// Every `<domain ...>...</domain>` of the fixture files (node files hold several).
fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "xml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("<domain") {
            let Some(len) = rest[start..].find("</domain>") else {
                break;
            };
            let end = start + len + "</domain>".len();
            out.push(rest[start..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

/// The byte offset of a char boundary at or before `i`.
fn boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

const PIECES: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "&",
    "&amp;",
    "&#0;",
    "&#x110000;",
    "&lt;",
    "\"",
    "'",
    "=",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<?xml version='1.0'?>",
    "<!DOCTYPE d [<!ENTITY e 'x'>]>",
    "&e;",
    "\u{0}",
    "\u{feff}",
    "é",
    "\u{10ffff}",
    "-1",
    "18446744073709551616",
    "0-",
    "0-4095",
    "^0",
    ",",
    "1-0",
    "dedicated",
    "mixed",
    "shared",
    "isolate",
    "share",
    "hw:cpu_policy",
    "hw_cpu_dedicated_mask",
    "<nova:property name='hw_cpu_policy'>",
    "</nova:property>",
    "<vcpupin vcpu='0' cpuset='0'/>",
    "<emulatorpin cpuset='1'/>",
    "<memnode cellid='9' mode='strict' nodeset='7'/>",
];

fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut s = seed.to_string();
    for _ in 0..=rng.below(4) {
        let a = boundary(&s, rng.below(s.len() + 1));
        let b = boundary(&s, a + rng.below(64));
        match rng.below(7) {
            0 => s.replace_range(a..b, ""),
            1 => {
                let piece = s[a..b].to_string();
                s.insert_str(a, &piece.repeat(1 + rng.below(8)));
            }
            2 => s.insert_str(a, PIECES[rng.below(PIECES.len())]),
            3 => s.truncate(a),
            4 => {
                let n = 1 + rng.below(3000);
                s.insert_str(a, &format!("{}{}", "<x>".repeat(n), "</x>".repeat(n)));
            }
            5 => s.replace_range(a..b, PIECES[rng.below(PIECES.len())]),
            _ => {
                // Text inside an attribute value.
                if let Some(q) = s[a..].find('\'') {
                    let at = a + q + 1;
                    s.insert_str(at, PIECES[rng.below(PIECES.len())]);
                }
            }
        }
    }
    s
}

#[test]
fn domain_xml_and_nova_metadata_parsers_survive_mutations_of_real_domains() {
    let seeds = seeds();
    assert!(seeds.len() >= 10, "only {} seed domains", seeds.len());
    let rounds: usize = std::env::var("LIBVIRT_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    let seed: u64 = std::env::var("LIBVIRT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1157);
    let mut rng = Rng::new(seed | 1);
    // Every seed parses (the mutations start from valid domains).
    for s in &seeds {
        parse_domain_xml(s).unwrap_or_else(|e| panic!("seed does not parse: {e}\n{s}"));
    }
    let (mut ok, mut err) = (0usize, 0usize);
    for round in 0..rounds {
        let pick = rng.below(seeds.len());
        let case = mutate(&mut rng, &seeds[pick]);
        let outcome = std::panic::catch_unwind(|| {
            let domain = parse_domain_xml(&case);
            if let Some(start) = case.find("<nova:instance") {
                let end = case[start..]
                    .find("</nova:instance>")
                    .map_or(case.len(), |e| start + e + "</nova:instance>".len());
                let _ = parse_nova_metadata(&case[start..end]);
            }
            domain.is_ok()
        });
        match outcome {
            Ok(true) => ok += 1,
            Ok(false) => err += 1,
            Err(_) => panic!("round {round} (seed {seed:#x}) panicked on:\n{case}"),
        }
    }
    // Both outcomes are reached: the mutations are neither all harmless nor all fatal.
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}
