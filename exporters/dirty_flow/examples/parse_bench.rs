//! Parser throughput for `bench/bench.sh`: parses every line of a dump file (info, match fields
//! expanded to value/mask constraints, actions tokenized), repeating until a second has passed,
//! and prints `lines seconds lines_per_second`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Instant;

use dirty_flow_exporter::parse::fields::expand_match;
use dirty_flow_exporter::parse::{parse_line, Line};

fn main() {
    let path = std::env::args().nth(1).expect("usage: parse_bench FILE");
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let mut fields = Vec::new();
    let (mut n, mut errors, mut actions) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 1.0 {
        for l in &lines {
            match parse_line(l) {
                Ok(Line::Flow(f)) => {
                    expand_match(f.match_text, &mut fields);
                    actions += f.actions().count() as u64;
                }
                Ok(_) => {}
                Err(_) => errors += 1,
            }
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("parsed {n} lines, {errors} errors, {actions} actions");
    println!("{n} {secs:.3} {:.0}", n as f64 / secs);
}
