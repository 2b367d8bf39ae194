//! `<prefix>_build_info` and the standard `process_*` metrics, read from procfs on each scrape.
//!
//! The names and meanings are those of the Go client's process collector, so existing
//! dashboards and alerts (`process_resident_memory_bytes`, `process_open_fds / process_max_fds`)
//! work unchanged.

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Version of the suite (all exporters share the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git revision the binary was built from, or `unknown`.
pub const REVISION: &str = env!("BUILD_REVISION");
/// Version of the compiler that built the binary.
pub const RUSTC_VERSION: &str = env!("BUILD_RUSTC_VERSION");

/// Registers `build_info{version,revision,rustc} 1` (the registry adds the prefix).
pub fn register_build_info(registry: &mut Registry) {
    registry.register(
        "build",
        "A metric with a constant '1' value labeled by version, revision and rustc version",
        Info::new(vec![
            ("version".to_string(), VERSION.to_string()),
            ("revision".to_string(), REVISION.to_string()),
            ("rustc".to_string(), RUSTC_VERSION.to_string()),
        ]),
    );
}

/// Registers the process metrics of this process. Anything procfs cannot read is left out (and
/// logged at debug level): a missing process metric must never fail a scrape.
pub fn register_process_metrics(registry: &mut Registry) {
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
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            ConstCounter::new((stat.utime + stat.stime) as f64 / tps),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            ConstGauge::new(stat.rss as f64 * page),
        );
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            ConstGauge::new(stat.vsize as f64),
        );
        if let Ok(boot) = procfs::boot_time_secs() {
            registry.register(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                ConstGauge::new(boot as f64 + stat.starttime as f64 / tps),
            );
        }
    }
    if let Ok(n) = me.fd_count() {
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            ConstGauge::new(n as f64),
        );
    }
    if let Ok(limits) = me.limits() {
        if let procfs::process::LimitValue::Value(v) = limits.max_open_files.soft_limit {
            registry.register(
                "process_max_fds",
                "Maximum number of open file descriptors",
                ConstGauge::new(v as f64),
            );
        }
    }
}
