//! `<prefix>_build_info` and the standard `process_*` metrics, read from procfs on each scrape.
//!
//! The names and meanings are those of the Go client's process collector, so existing
//! dashboards and alerts (`process_resident_memory_bytes`, `process_open_fds / process_max_fds`)
//! work unchanged.

use crate::collector::Sink;

/// Version of the suite (all exporters share the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git revision the binary was built from, or `unknown`.
pub const REVISION: &str = env!("BUILD_REVISION");
/// Version of the compiler that built the binary.
pub const RUSTC_VERSION: &str = env!("BUILD_RUSTC_VERSION");

/// Writes `<prefix>_build_info{version,revision,rustc} 1`.
pub fn build_info(sink: &mut Sink) {
    sink.info_value(
        "build",
        "A metric with a constant '1' value labeled by version, revision and rustc version",
        &[
            ("version", VERSION),
            ("revision", REVISION),
            ("rustc", RUSTC_VERSION),
        ],
    );
}

/// Writes the process metrics of this process (into a sink without prefix). Anything procfs
/// cannot read is left out (and logged at debug level): a missing process metric must never
/// fail a scrape.
pub fn process_metrics(sink: &mut Sink) {
    let me = match procfs::process::Process::myself() {
        Ok(p) => p,
        Err(err) => {
            tracing::debug!(error = %err, "cannot read /proc/self");
            return;
        }
    };
    let tps = procfs::ticks_per_second() as f64;
    let page = procfs::page_size() as f64;
    if let Ok(stat) = me.stat() {
        sink.counter_value(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            (stat.utime + stat.stime) as f64 / tps,
        );
        sink.gauge_value(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            stat.rss as f64 * page,
        );
        sink.gauge_value(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            stat.vsize as f64,
        );
        if let Ok(boot) = procfs::boot_time_secs() {
            sink.gauge_value(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                boot as f64 + stat.starttime as f64 / tps,
            );
        }
    }
    if let Ok(n) = me.fd_count() {
        sink.gauge_value(
            "process_open_fds",
            "Number of open file descriptors",
            n as f64,
        );
    }
    if let Ok(limits) = me.limits() {
        if let procfs::process::LimitValue::Value(v) = limits.max_open_files.soft_limit {
            sink.gauge_value(
                "process_max_fds",
                "Maximum number of open file descriptors",
                v as f64,
            );
        }
    }
}
