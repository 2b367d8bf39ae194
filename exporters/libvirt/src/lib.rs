//! libvirt_exporter: libvirt domains with their nova metadata and CPU pinning.
//!
//! `main.rs` is thin; the flags, the collectors and their parsers live here so tests reach them.
//! Layout: pure parsers (`cpuset`, `xmltree`, `domain_xml`, `nova`, `nova_conf`, `procfs`) and
//! the pinning analysis (`pinning`) know nothing of libvirt; `ffi` is the one module with unsafe
//! code; `connection` and `snapshot` do the I/O; `collector/` turns a snapshot into metrics.
//! Every module except `ffi` forbids unsafe code.
#![deny(unsafe_code)]

pub(crate) mod capabilities;
pub(crate) mod collector;
pub(crate) mod connection;
pub mod cpuset;
pub mod domain_xml;
pub(crate) mod error;
pub mod events_helper;
pub mod ffi;
pub(crate) mod metrics;
pub mod nova;
pub(crate) mod nova_conf;
pub(crate) mod nova_policy;
pub(crate) mod pinning;
pub(crate) mod procfs;
pub mod snapshot;
pub mod stats_fallback;
pub(crate) mod xmltree;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::cli::{parse_duration, CollectorFlag, LogArgs, WebArgs};
use common::{Collector, Exporter, ExporterInfo};

pub use error::{Error, ParseError};

/// Identity of this exporter.
pub const INFO: ExporterInfo = ExporterInfo {
    name: "libvirt_exporter",
    prefix: "libvirt",
    description: "Exports libvirt domains with their OpenStack nova metadata and CPU pinning.",
    default_listen: ":9177",
};

/// The collectors this exporter has: name, help, enabled by default.
pub const COLLECTORS: &[CollectorFlag] = &[
    collector::domain::FLAG,
    collector::host::FLAG,
    collector::job::FLAG,
    collector::storage_pool::FLAG,
];

/// A call timeout: zero would time every libvirt call out at once.
fn parse_call_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than 0".into());
    }
    Ok(d)
}

/// nova's sets are given as nova.conf spells them, read as nova reads them.
fn parse_cpuset_flag(s: &str) -> Result<cpuset::CpuSet, String> {
    nova_conf::parse_nova_cpu_spec(s).map_err(|e| e.to_string())
}

/// Command-line flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "libvirt_exporter", version, about = INFO.description)]
pub struct Flags {
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// libvirt connection URI (opened read-only).
    #[arg(long = "libvirt.uri", default_value = "qemu:///system")]
    pub libvirt_uri: String,
    /// Timeout of each libvirt call (a domain that does not answer in time is reported, not fatal).
    #[arg(long = "libvirt.timeout", default_value = "5s", value_parser = parse_call_timeout, value_name = "DURATION")]
    pub libvirt_timeout: Duration,
    /// Longest wait between attempts to re-open a lost libvirt connection.
    #[arg(long = "libvirt.reconnect-backoff-max", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub reconnect_backoff_max: Duration,
    /// Follow libvirt's domain events to fetch a domain's XML only when it changed (otherwise
    /// every XML is fetched on every scrape).
    #[arg(long = "libvirt.events", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub events: bool,
    /// Fetch every domain's XML at least this often, even with events (a safety net for missed
    /// events).
    #[arg(long = "libvirt.xml-refresh-interval", default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub xml_refresh_interval: Duration,
    /// Fill stat groups missing from libvirt's bulk stats of a running domain (drivers other
    /// than QEMU, e.g. the test driver) with per-domain calls (virDomainGetInfo,
    /// virDomainMemoryStats, virDomainBlockStats, virDomainInterfaceStats).
    #[arg(long = "libvirt.stats-fallback", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub stats_fallback: bool,
    /// How often to repeat virDomainGetVcpus (the kernel's vCPU affinity as libvirt reads it)
    /// for a running domain that declares pinning; new and changed domains, changed pin info
    /// and a shown mismatch are checked on the next scrape anyway. 0s: every scrape.
    #[arg(long = "libvirt.vcpuinfo-interval", default_value = "1m", value_parser = parse_duration, value_name = "DURATION")]
    pub vcpuinfo_interval: Duration,
    /// How often to repeat virDomainGetVcpuPinInfo for a running domain whose XML is cached
    /// (libvirt's pin info changes only through libvirt, whose events make the XML and the pin
    /// info be fetched again on the next scrape); a shown mismatch is checked every scrape.
    /// Without events every scrape asks anyway. 0s: every scrape.
    #[arg(long = "libvirt.pininfo-interval", default_value = "1m", value_parser = parse_duration, value_name = "DURATION")]
    pub pininfo_interval: Duration,
    /// Domains queried in parallel on each scrape (worker threads on the one connection).
    #[arg(long = "libvirt.concurrency", default_value_t = 8, value_name = "N")]
    pub concurrency: usize,
    /// procfs mount point, to read the kernel's affinity of QEMU's vCPU threads; empty disables.
    #[arg(long = "path.procfs", default_value = "/proc", value_name = "PATH")]
    pub procfs: String,
    /// nova's cpu_dedicated_set (overrides --nova.config-file).
    #[arg(long = "nova.cpu-dedicated-set", value_parser = parse_cpuset_flag, value_name = "CPUS")]
    pub nova_cpu_dedicated_set: Option<cpuset::CpuSet>,
    /// nova's cpu_shared_set (overrides --nova.config-file).
    #[arg(long = "nova.cpu-shared-set", value_parser = parse_cpuset_flag, value_name = "CPUS")]
    pub nova_cpu_shared_set: Option<cpuset::CpuSet>,
    /// nova.conf to read cpu_dedicated_set and cpu_shared_set from ([compute] section), on
    /// every scrape. Nothing else of it is read.
    #[arg(long = "nova.config-file", value_name = "FILE")]
    pub nova_config_file: Option<PathBuf>,
    /// libvirt_domain_pinning_overlap_info series exported per domain: the other domains sharing
    /// its dedicated host CPUs, first by name (n domains on one CPU would make n x (n - 1)
    /// series). The rest is counted in libvirt_domain_pinning_overlap_info_omitted;
    /// libvirt_domain_pinning_overlap_cpus stays exact.
    #[arg(long = "pinning.evidence-limit", default_value_t = 5, value_name = "N")]
    pub pinning_evidence_limit: usize,
    /// Per-vCPU series: libvirt_domain_vcpu_{state,time_seconds_total,wait_seconds_total,
    /// delay_seconds_total,cpu,maximum} and libvirt_domain_vcpu_pinning_info (2 to 7 series per
    /// vCPU). Without it the domain's declared pinning is one libvirt_domain_pinning_info series.
    #[arg(long = "domain.vcpu-detail", default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub vcpu_detail: bool,
    /// The guest's own memory figures beyond the defaults:
    /// libvirt_domain_memory_stats_{unused_bytes,disk_caches_bytes,minor_fault_total,
    /// hugetlb_pgalloc_total,hugetlb_pgfail_total,last_update_timestamp_seconds}.
    #[arg(long = "domain.memory-detail", default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub memory_detail: bool,
}

/// Builds every collector of this exporter (enabled or not), in the order of [`COLLECTORS`].
pub fn collectors(flags: &Flags) -> Vec<Arc<dyn Collector>> {
    let libvirt = Arc::new(connection::Libvirt::new(
        flags.libvirt_uri.clone(),
        flags.libvirt_timeout,
        flags.reconnect_backoff_max,
        flags.events,
    ));
    let procfs = (!flags.procfs.is_empty()).then(|| PathBuf::from(&flags.procfs));
    let gatherer = Arc::new(
        snapshot::Gatherer::new(
            Arc::clone(&libvirt),
            flags.concurrency,
            procfs,
            flags.xml_refresh_interval,
            flags.stats_fallback,
            flags.vcpuinfo_interval,
            flags.pininfo_interval,
        )
        .with_vcpu_fallback(flags.vcpu_detail),
    );
    let nova = collector::domain::NovaSetsSource {
        dedicated: flags.nova_cpu_dedicated_set.clone(),
        shared: flags.nova_cpu_shared_set.clone(),
        config_file: flags.nova_config_file.clone(),
        ..Default::default()
    };
    vec![
        Arc::new(collector::domain::DomainCollector::new(
            gatherer,
            nova,
            collector::domain::Options {
                evidence_limit: flags.pinning_evidence_limit,
                vcpu_detail: flags.vcpu_detail,
                memory_detail: flags.memory_detail,
            },
        )),
        Arc::new(collector::host::HostCollector::new(Arc::clone(&libvirt))),
        Arc::new(collector::job::JobCollector::new(
            Arc::clone(&libvirt),
            flags.concurrency,
        )),
        Arc::new(collector::storage_pool::StoragePoolCollector::new(
            libvirt,
            flags.concurrency,
        )),
    ]
}

/// Runs the exporter until SIGTERM/SIGINT; an error only if it cannot start.
pub async fn run(
    flags: Flags,
    enabled: Vec<&'static str>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Exporter::new(INFO, flags.web.clone(), collectors(&flags), enabled)
        .run()
        .await?;
    // A libvirt call stuck past its timeout (a hung libvirtd, a blocked procfs read) may still
    // hold a blocking thread: common::block_on_main does not wait for it.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_list_matches_flags() {
        let flags = <Flags as clap::Parser>::parse_from(["libvirt_exporter"]);
        let names: Vec<_> = collectors(&flags).iter().map(|c| c.name()).collect();
        let flag_names: Vec<_> = COLLECTORS.iter().map(|c| c.name).collect();
        assert_eq!(names, flag_names);
    }

    #[test]
    fn pininfo_interval_flag() {
        let f = <Flags as clap::Parser>::parse_from(["x"]);
        assert_eq!(f.pininfo_interval, std::time::Duration::from_secs(60));
        let f = <Flags as clap::Parser>::parse_from(["x", "--libvirt.pininfo-interval=0s"]);
        assert!(f.pininfo_interval.is_zero());
        for bad in ["", "10", "soon", "-1s"] {
            let arg = format!("--libvirt.pininfo-interval={bad}");
            assert!(
                <Flags as clap::Parser>::try_parse_from(["x", arg.as_str()]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn detail_flags_are_off_by_default_and_take_an_optional_value() {
        let f = <Flags as clap::Parser>::parse_from(["x"]);
        assert!(!f.vcpu_detail && !f.memory_detail);
        let f = <Flags as clap::Parser>::parse_from([
            "x",
            "--domain.vcpu-detail",
            "--domain.memory-detail=true",
        ]);
        assert!(f.vcpu_detail && f.memory_detail);
        let f = <Flags as clap::Parser>::parse_from(["x", "--domain.vcpu-detail=false"]);
        assert!(!f.vcpu_detail);
        assert!(
            <Flags as clap::Parser>::try_parse_from(["x", "--domain.vcpu-detail=maybe"]).is_err()
        );
    }

    #[test]
    fn a_zero_call_timeout_is_a_startup_error() {
        // Every libvirt call would time out at once: the exporter could never answer.
        for bad in ["0s", "0ms", "0"] {
            let arg = format!("--libvirt.timeout={bad}");
            assert!(
                <Flags as clap::Parser>::try_parse_from(["x", arg.as_str()]).is_err(),
                "{bad:?}"
            );
        }
        let f = <Flags as clap::Parser>::try_parse_from(["x", "--libvirt.timeout=250ms"]).unwrap();
        assert_eq!(f.libvirt_timeout, std::time::Duration::from_millis(250));
    }

    #[test]
    fn nova_set_flags_read_like_nova() {
        let f = <Flags as clap::Parser>::try_parse_from([
            "x",
            "--nova.cpu-dedicated-set=^8-9,4-15",
            "--nova.cpu-shared-set=0-3,",
        ])
        .unwrap();
        let sets = collector::domain::NovaSetsSource {
            dedicated: f.nova_cpu_dedicated_set,
            shared: f.nova_cpu_shared_set,
            config_file: None,
            ..Default::default()
        }
        .resolve()
        .0;
        assert_eq!(
            sets.dedicated.map(|s| s.to_string()).as_deref(),
            Some("4-7,10-15")
        );
        assert_eq!(sets.shared.map(|s| s.to_string()).as_deref(), Some("0-3"));
        // An empty value is nova's "unset" (a templated flag left empty), not an empty set that
        // would put every pinned CPU outside it.
        let f =
            <Flags as clap::Parser>::try_parse_from(["x", "--nova.cpu-dedicated-set="]).unwrap();
        let sets = collector::domain::NovaSetsSource {
            dedicated: f.nova_cpu_dedicated_set,
            shared: None,
            config_file: None,
            ..Default::default()
        }
        .resolve()
        .0;
        assert_eq!(sets.dedicated, None);
    }

    #[test]
    fn bad_cpuset_flag_is_a_startup_error() {
        let r = <Flags as clap::Parser>::try_parse_from(["x", "--nova.cpu-dedicated-set=4-x"]);
        assert!(r.is_err());
        let f =
            <Flags as clap::Parser>::try_parse_from(["x", "--nova.cpu-shared-set=0-3"]).unwrap();
        assert_eq!(
            f.nova_cpu_shared_set.map(|s| s.to_string()).as_deref(),
            Some("0-3")
        );
    }
}
