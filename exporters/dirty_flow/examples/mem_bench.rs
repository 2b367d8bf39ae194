//! Where the memory of a scan goes, for the README's benchmark section: streams a dump file line
//! by line into a [`BridgeScan`] (as the exporter does, never holding the file) twice (the
//! second with the overlap cache of the first, as in steady state), and prints the live heap
//! bytes (a counting global allocator, in this binary only): the peak while streaming, the
//! largest table's store, what the end of the dump holds, and the process's VmHWM.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::BufRead;
use std::sync::atomic::{AtomicUsize, Ordering};

use dirty_flow_exporter::checks::{BridgeScan, OverlapCache, Ports};
use dirty_flow_exporter::config::Config;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn added(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        added(l.size());
        // SAFETY: forwarded as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        added(l.size());
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // Counted as the new block allocated before the old one is freed (the worst case).
        added(new);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn mib(b: usize) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default()
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: mem_bench DUMP (the default dump-flows output)");
    let cfg = Config::default();
    let mut cache = OverlapCache::default();
    for run in 1..=2 {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        // Ports known from the start, as in the exporter once the database answered.
        let mut scan = BridgeScan::new(&cfg, Some(Ports::default()), 5).with_cache(cache);
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path).expect("open"));
        let mut line = String::new();
        while reader.read_line(&mut line).expect("read") > 0 {
            let _ = scan.feed_line(&line);
            line.clear();
        }
        drop(reader);
        let fed = LIVE.load(Ordering::Relaxed) - base;
        let feed_peak = PEAK.load(Ordering::Relaxed) - base;
        let store_peak = scan.peak_store_bytes();
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let before_finish = LIVE.load(Ordering::Relaxed);
        let (report, kept) = scan.finish_cached();
        cache = kept;
        let finish_peak = PEAK.load(Ordering::Relaxed) - before_finish;
        let flows = report.flows.max(1) as usize;
        let largest = report.tables.values().copied().max().unwrap_or(0);
        println!(
            "run {run}: {} flows in {} tables, the largest {largest}",
            report.flows,
            report.tables.len()
        );
        println!(
            "  peak live heap while streaming (tables checked as the dump moves on): {} ({} bytes/flow of the bridge)",
            mib(feed_peak),
            feed_peak / flows
        );
        println!(
            "    of which the largest table store: {} ({} bytes/flow of that table)",
            mib(store_peak),
            store_peak / (largest.max(1) as usize)
        );
        println!(
            "  held at the end of the dump: {}; the last table's checks: {} more",
            mib(fed),
            mib(finish_peak)
        );
        println!(
            "  overlap cache: {} groups; VmHWM so far {}",
            cache.checked + cache.reused,
            hwm()
        );
    }
}
