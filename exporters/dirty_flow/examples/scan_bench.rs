//! Timing of the checks over a dump file, for profiling: feeds every line into a
//! [`BridgeScan`] (parse, per-flow checks and each table's checks, as the collector does while
//! the dump streams; the overlap cache is the previous run's, the first run has none), then
//! checks the last table, and prints `flows feed_seconds finish_seconds
//! overlap_groups_checked/reused`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Instant;

use dirty_flow_exporter::checks::{BridgeScan, OverlapCache, Ports};
use dirty_flow_exporter::config::Config;
use dirty_flow_exporter::inventory::parse_inventory;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: scan_bench DUMP [VSCTL_JSON] [RUNS]");
    let inv = args.next().map(|p| {
        parse_inventory(&std::fs::read_to_string(p).expect("read inventory")).expect("inventory")
    });
    let runs: usize = args.next().map_or(5, |r| r.parse().expect("runs"));
    let text = std::fs::read_to_string(&path).expect("read");
    let cfg = Config::default();
    let ports = inv
        .as_ref()
        .and_then(|i| i.values().next())
        .map(|i| Ports::new(i));
    let mut cache = OverlapCache::default();
    for _ in 0..runs {
        let start = Instant::now();
        let mut scan = BridgeScan::new(&cfg, ports.clone(), 5).with_cache(cache);
        for l in text.lines() {
            let _ = scan.feed_line(l);
        }
        let fed = start.elapsed();
        let (report, kept) = scan.finish_cached();
        cache = kept;
        let done = start.elapsed();
        println!(
            "{} {:.3} {:.3} {}/{} dirty={:?}",
            report.flows,
            fed.as_secs_f64(),
            (done - fed).as_secs_f64(),
            cache.checked,
            cache.reused,
            report
                .checks
                .iter()
                .map(|c| (c.name.as_str(), c.dirty))
                .collect::<Vec<_>>()
        );
    }
}
