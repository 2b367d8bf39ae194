//! Where the memory of a scan goes, for the README's benchmark section: streams a dump file line
//! by line into a [`BridgeScan`] (as the exporter does, never holding the file), runs the
//! whole-dump checks twice (the second with the overlap cache of the first, as in steady state),
//! and prints the live heap bytes (a counting global allocator, in this binary only) at each
//! point, the peak, the scan's parts per flow, and the process's VmHWM.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::BufRead;
use std::sync::atomic::{AtomicUsize, Ordering};

use dirty_flow_exporter::checks::{BridgeScan, OverlapCache};
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
        let mut scan = BridgeScan::new(&cfg, None, 5);
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path).expect("open"));
        let mut line = String::new();
        while reader.read_line(&mut line).expect("read") > 0 {
            let _ = scan.feed_line(&line);
            line.clear();
        }
        drop(reader);
        let fed = LIVE.load(Ordering::Relaxed) - base;
        let feed_peak = PEAK.load(Ordering::Relaxed) - base;
        let parts = scan.heap_bytes();
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let before_finish = LIVE.load(Ordering::Relaxed);
        let report = scan.finish_cached(&mut cache);
        let finish_peak = PEAK.load(Ordering::Relaxed) - before_finish;
        let flows = report.flows.max(1) as usize;
        println!("run {run}: {} flows", report.flows);
        println!(
            "  held after the dump:  {} ({} bytes/flow); peak while streaming {}",
            mib(fed),
            fed / flows,
            mib(feed_peak)
        );
        for (name, bytes) in parts {
            println!(
                "    {name:<12} {:>10} ({} bytes/flow)",
                mib(bytes),
                bytes / flows
            );
        }
        println!(
            "  checks (finish):      {} more at their peak (overlap cache kept: {} groups)",
            mib(finish_peak),
            cache.checked + cache.reused
        );
        println!(
            "  peak live heap:       {}; VmHWM so far {}",
            mib(fed + finish_peak),
            hwm()
        );
    }
}
