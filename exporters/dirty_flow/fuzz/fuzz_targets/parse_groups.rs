//! Fuzzes the `dump-groups` and `dump-meters` parsers and the judging of their results against
//! the groups and meters flows name: no input may panic.
#![no_main]

use dirty_flow_exporter::checks::groups::{judge, parse_groups, parse_meters, FlowRefs};
use dirty_flow_exporter::checks::Ports;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let groups = parse_groups(text.to_string());
    let meters = parse_meters(&text);
    let _ = judge(
        &FlowRefs::default(),
        groups.as_ref().map_err(String::as_str),
        meters.as_ref().map_err(String::as_str),
        Some(&Ports::default()),
        5,
    );
});
