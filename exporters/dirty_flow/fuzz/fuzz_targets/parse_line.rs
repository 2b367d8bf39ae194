//! Fuzzes the dump-flows line parser and everything a scan does with a parsed line (port
//! references, match expansion, the per-table and end-of-dump checks): no input may panic.
#![no_main]

use dirty_flow_exporter::checks::{BridgeScan, Ports};
use dirty_flow_exporter::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let cfg = Config::default();
    let mut scan = BridgeScan::new(&cfg, Some(Ports::default()), 3);
    for line in text.lines() {
        let _ = scan.feed_line(line);
    }
    let _ = scan.finish();
});
