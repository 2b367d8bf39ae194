//! Seeded property tests ("fuzzing" on stable Rust, in the normal `cargo test`): the container
//! line parsers and line reader, and the rule YAML loader, fed a bounded number of mutations of
//! the committed corpora (the replay fixtures' CRI, Docker json-file and plain logs, the rule
//! library `rules/*.yml`, the demo and fixture rule files). Each case must end in a value or an
//! error, never a panic, and keep the invariants checked below. The generator is a fixed-seed
//! xorshift, so a failure names its iteration and reproduces exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::Rng;
use std::path::{Path, PathBuf};

use log_pattern_exporter::config;
use log_pattern_exporter::format::{self, Format};
use log_pattern_exporter::rules::Rules;
use log_pattern_exporter::sink::LineSink;
use log_pattern_exporter::tail::counters::Counters;
use log_pattern_exporter::tail::lines::{Ctx, LineReader};

/// Bytes that matter to the parsers: separators, quotes, escapes, brackets, YAML indicators,
/// invalid UTF-8.
const SPECIAL: &[u8] = b"\n\r \t{}[]\"'\\:,-|&*!#%@`P F0Z.+\xff\xc3\x00";

/// One random edit of `data`, drawing spliced pieces from `corpus`.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 => {
            let b = SPECIAL[rng.below(SPECIAL.len())];
            let most = if rng.below(8) == 0 { 200 } else { 3 };
            let n = 1 + rng.below(most);
            let at = rng.below(len + 1);
            data.splice(at..at, std::iter::repeat_n(b, n));
        }
        2 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(32)).min(len);
            data.drain(a..b);
        }
        3 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            let piece = data[a..b].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, piece);
        }
        4 => {
            let other = &corpus[rng.below(corpus.len())];
            if !other.is_empty() {
                let a = rng.below(other.len());
                let b = (a + 1 + rng.below(128)).min(other.len());
                let at = rng.below(len + 1);
                data.splice(at..at, other[a..b].iter().copied());
            }
        }
        5 if len > 0 => data.truncate(rng.below(len)),
        6 if len > 0 => {
            let i = rng.below(len);
            data[i] = SPECIAL[rng.below(SPECIAL.len())];
        }
        _ => {
            let at = rng.below(len + 1);
            data.insert(at, rng.next_u64() as u8);
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files_under(&p, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
}

/// The committed log fixtures (CRI, Docker json-file, plain), whole files.
fn log_corpus() -> Vec<Vec<u8>> {
    let mut paths = Vec::new();
    files_under(&root().join("tests/fixtures/replay"), "log", &mut paths);
    assert!(paths.len() >= 3, "{paths:?}");
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The committed rule files.
fn rule_corpus() -> Vec<Vec<u8>> {
    let mut paths = Vec::new();
    files_under(&root().join("rules"), "yml", &mut paths);
    paths.push(root().join("demo/rules.yml"));
    paths.push(root().join("tests/fixtures/replay/rules.yml"));
    assert!(paths.len() >= 8, "{paths:?}");
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Feeds `input` in random chunks to a reader over `sink`; checks the reader's invariants.
fn read_all(rng: &mut Rng, input: &[u8], sink: &mut dyn LineSink, cap: usize) -> Counters {
    let mut counters = Counters::default();
    let mut reader = LineReader::default();
    let source = sink.source(&vec![("pod".into(), "p".into())]);
    let mut ctx = Ctx {
        sink,
        source,
        counters: &mut counters,
        cap,
        now: Some(1_705_312_800.0),
        stamps: &Default::default(),
    };
    let mut fed = 0usize;
    while fed < input.len() {
        let n = (1 + rng.below(300)).min(input.len() - fed);
        reader.feed(&input[fed..fed + n], &mut ctx);
        fed += n;
        assert_eq!(reader.position(), fed as u64, "every byte fed is consumed");
        assert!(reader.offset <= fed as u64);
        assert!(reader.partials.iter().all(|p| p.len() <= cap));
    }
    let newlines = input.iter().filter(|&&b| b == b'\n').count() as u64;
    assert!(ctx.counters.lines_read <= newlines);
    reader.finish(&mut ctx);
    assert_eq!(reader.offset, input.len() as u64);
    // At most one line per physical line, plus the unterminated rest and one partial per
    // stream at the end.
    assert!(ctx.counters.lines_read <= newlines + 3);
    assert_eq!(ctx.counters.bytes_read, input.len() as u64);
    counters
}

/// Mutated CRI, Docker and plain lines and files: the line parsers return a record or an
/// error, the reader consumes every byte, joins partials within the cap and counts lines
/// within the physical lines' number; the rules count without panicking.
#[test]
fn line_parsers_and_reader_survive_mutated_logs() {
    let corpus = log_corpus();
    let rules_text =
        std::fs::read_to_string(root().join("tests/fixtures/replay/rules.yml")).unwrap();
    let cfg = config::parse(Path::new("rules.yml"), &rules_text).unwrap();
    let mut rng = Rng::new(0x0005_eed0_f109_9a7e);
    let lines: Vec<Vec<u8>> = corpus
        .iter()
        .flat_map(|f| f.split(|&b| b == b'\n').map(<[u8]>::to_vec))
        .filter(|l| !l.is_empty())
        .collect();
    for i in 0..10_000 {
        let mut line = lines[rng.below(lines.len())].clone();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut line, &lines);
        }
        let detected = format::detect(&line);
        for f in [Format::Cri, Format::Docker, Format::Plain] {
            match format::parse(f, &line) {
                Ok(r) => {
                    assert!(r.message.len() <= line.len() * 2 + 16, "iteration {i}");
                    if detected == Some(f) {
                        assert!(f != Format::Plain);
                    }
                }
                Err(e) => {
                    assert_ne!(f, Format::Plain, "iteration {i}");
                    assert!(!e.to_string().is_empty());
                    assert_ne!(detected, Some(f), "iteration {i}: detected yet malformed");
                }
            }
        }
        let _ = format::resembles(&line);
        let _ = format::parse_rfc3339(&line);
    }
    for i in 0..300 {
        let mut file = corpus[i % corpus.len()].clone();
        for _ in 0..1 + rng.below(12) {
            mutate(&mut rng, &mut file, &corpus);
        }
        let mut rules = Rules::new(&cfg.rules).unwrap();
        let cap = [16, 200, 256 * 1024][rng.below(3)];
        let c = read_all(&mut rng, &file, &mut rules, cap);
        let matched: u64 = rules.values().iter().map(|v| v.value).sum();
        assert!(
            c.lines_read > 0 || matched == 0,
            "iteration {i}: matches without lines"
        );
    }
}

/// Mutated rule files: the loader returns rules or an error that names the file; rules that
/// load build a rule engine (or a build error) that counts lines without panicking.
#[test]
fn rule_yaml_loader_survives_mutated_rule_files() {
    let corpus = rule_corpus();
    let mut rng = Rng::new(0x0123_4567_89ab_cdef);
    let sample: &[u8] = b"2024-01-15T10:00:00.000000001Z stderr F ERROR Out of memory: Killed process 1 (x) level=error latency_ms=900 route=/a {\"a\":1}\n{\"log\":\"panic: runtime error\\n\",\"stream\":\"stderr\",\"time\":\"2024-01-15T10:00:00Z\"}\nTraceback (most recent call last):\n";
    let (mut ok, mut err) = (0, 0);
    for i in 0..1_000 {
        let mut text = corpus[i % corpus.len()].clone();
        for _ in 0..1 + rng.below(6) {
            mutate(&mut rng, &mut text, &corpus);
        }
        let text = String::from_utf8_lossy(&text);
        let path = Path::new("t.yml");
        let results = [
            config::parse(path, &text).map(|c| c.rules),
            config::parse_rule_set(path, &text),
        ];
        for r in results {
            match r {
                Ok(rules) => {
                    ok += 1;
                    if let Ok(mut engine) = Rules::new(&rules) {
                        read_all(&mut rng, sample, &mut engine, 4096);
                    }
                }
                Err(e) => {
                    err += 1;
                    let m = e.to_string();
                    assert!(m.starts_with("t.yml"), "iteration {i}: {m}");
                    assert!(!m.contains(":0:0:"), "iteration {i}: no position: {m}");
                }
            }
        }
    }
    // The mutations reach both outcomes (a generator that only breaks files tests little).
    assert!(ok > 100 && err > 100, "ok {ok}, errors {err}");
}
