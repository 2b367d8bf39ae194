//! Reading a line's own timestamp allocates nothing, in a zone of the tz database too: the
//! offset of the hour last read is kept, so a line asks the zone only when its hour changes,
//! and that lookup allocates nothing either. A global allocator counts the allocations of the
//! test's thread around 20,000 lines that cross both of a year's transitions (a binary of its
//! own, so no other test's allocations are counted).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The counting allocator below: `GlobalAlloc` is an unsafe trait, its methods pass the calls
// on to the system allocator unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use log_pattern_exporter::timestamp::TimestampConfig;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

// SAFETY: every method passes its arguments to `System` unchanged and only adds one to a
// thread-local counter (const-initialised, no destructor, so it never allocates itself).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's guarantees for `layout` hold for `System` as they do here.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` was allocated by `System` (through `alloc` above) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through `alloc` above) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn stamps_in_a_zone_with_daylight_saving_time_are_read_without_allocating() {
    let configs = [
        "{format: '%Y-%m-%d %H:%M:%S,%f', timezone: Europe/Berlin}",
        "{field: time, format: '2006-01-02 15:04:05', timezone: America/New_York}",
        "{format: rfc3164, timezone: Europe/Berlin}",
        "{format: rfc3339, timezone: Asia/Kolkata}",
    ];
    // 2026-01-01 to 2026-12-31 in steps of 26 minutes 11 seconds: every hour of the year
    // but a few, both transitions' gaps and folds among them.
    let lines: Vec<Vec<String>> = (0..20_000)
        .map(|i| {
            let local =
                time::OffsetDateTime::from_unix_timestamp(1_767_225_600 + i * 1571).unwrap();
            let (y, m, d) = (local.year(), u8::from(local.month()), local.day());
            let (hh, mm, ss) = (local.hour(), local.minute(), local.second());
            let mon = &format!("{:?}", local.month())[..3];
            vec![
                format!("{y}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02},327 INFO app: served"),
                format!(r#"{{"level":"info","time":"{y}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}"}}"#),
                format!("<13>{mon} {d:2} {hh:02}:{mm:02}:{ss:02} node1 app[1]: served"),
                format!("{y}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02} served"),
            ]
        })
        .collect();
    let configs: Vec<TimestampConfig> = configs
        .iter()
        .map(|c| serde_yaml_ng::from_str(c).unwrap())
        .collect();
    // Read in the year: 2026-12-31T23:00Z (RFC 3164 stamps take their year from it).
    let now = 1_798_758_000.0;
    let before = allocations();
    let mut parsed = 0;
    for line in &lines {
        for (c, text) in configs.iter().zip(line) {
            parsed += usize::from(c.parse_at(text.as_bytes(), now).is_some());
        }
    }
    let allocated = allocations() - before;
    assert_eq!(parsed, lines.len() * configs.len());
    assert_eq!(allocated, 0, "{allocated} allocations for {parsed} stamps");
}
