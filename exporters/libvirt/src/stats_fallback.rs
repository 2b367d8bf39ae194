//! Per-domain calls that stand in for stat groups missing from libvirt's bulk stats.
//!
//! `virConnectGetAllDomainStats` is complete for QEMU (every group's `*.count` / marker key is
//! present for a running domain, even with `NOWAIT`), but some drivers, such as libvirt's test
//! driver, return only the `state` group. For a running domain whose bulk record lacks a group
//! the exporter exports, that group is filled from the older per-domain calls, under the same
//! key names as the bulk stats (`cpu.time`, `balloon.*`, `block.<i>.*`, `net.<i>.*`), so the
//! encoder has one path:
//! - cpu-total and balloon: `virDomainGetInfo` (CPU time, current and maximum memory) and, for
//!   balloon, `virDomainMemoryStats`;
//! - block: `virDomainBlockStats` per disk target named in the domain's XML;
//! - interface: `virDomainInterfaceStats` per interface target named in the XML;
//! - vcpu: per-vCPU state and time come from `virDomainGetVcpus`, which the gatherer calls.
//!
//! Only missing groups are fetched, so a driver with complete bulk stats pays nothing. The calls
//! run together on the blocking pool under one `--libvirt.timeout`; a call that fails is named in
//! [`Fetched::errors`] and the others are kept.
#![forbid(unsafe_code)]

use virt::domain::Domain;
use virt::sys;

use crate::ffi::TypedValue;
use crate::snapshot::Stats;

/// The bulk stat groups that can be filled in, in the order of [`Missing::groups`].
pub const GROUPS: [&str; 5] = ["cpu_total", "balloon", "vcpu", "block", "interface"];
/// Index of the vcpu group in [`GROUPS`].
pub const VCPU: usize = 2;

/// Which groups a domain's bulk stats lack (by each group's marker key).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    /// `cpu.time`.
    pub cpu_total: bool,
    /// `balloon.current`.
    pub balloon: bool,
    /// `vcpu.current` (filled by `virDomainGetVcpus`, not here).
    pub vcpu: bool,
    /// `block.count`.
    pub block: bool,
    /// `net.count`.
    pub interface: bool,
}

impl Missing {
    /// Every group.
    pub const ALL: Self = Self {
        cpu_total: true,
        balloon: true,
        vcpu: true,
        block: true,
        interface: true,
    };

    /// The groups absent from one domain's bulk stats.
    pub fn of(stats: &Stats) -> Self {
        Self {
            cpu_total: !stats.contains_key("cpu.time"),
            balloon: !stats.contains_key("balloon.current"),
            vcpu: !stats.contains_key("vcpu.current"),
            block: !stats.contains_key("block.count"),
            interface: !stats.contains_key("net.count"),
        }
    }

    /// Whether any group this module fetches is missing.
    pub fn needs_calls(&self) -> bool {
        self.cpu_total || self.balloon || self.block || self.interface
    }

    /// Flags in the order of [`GROUPS`].
    pub fn groups(&self) -> [bool; 5] {
        [
            self.cpu_total,
            self.balloon,
            self.vcpu,
            self.block,
            self.interface,
        ]
    }
}

/// Stats fetched by the per-domain calls, named as the bulk stats name them.
#[derive(Debug, Default)]
pub struct Fetched {
    pub params: Vec<(String, TypedValue)>,
    /// Calls that failed (`domain_info`, `memory_stats`, `block_stats`, `interface_stats`).
    pub errors: Vec<&'static str>,
}

impl Fetched {
    fn put(&mut self, key: String, v: i64) {
        // Per-domain calls report -1 for what the driver does not know; bulk stats omit it.
        if v >= 0 {
            self.params.push((key, TypedValue::UInt(v as u64)));
        }
    }
}

/// `virDomainMemoryStats` tags and their bulk stats names.
const MEMORY_TAGS: &[(u32, &str)] = &[
    (sys::VIR_DOMAIN_MEMORY_STAT_SWAP_IN, "balloon.swap_in"),
    (sys::VIR_DOMAIN_MEMORY_STAT_SWAP_OUT, "balloon.swap_out"),
    (
        sys::VIR_DOMAIN_MEMORY_STAT_MAJOR_FAULT,
        "balloon.major_fault",
    ),
    (
        sys::VIR_DOMAIN_MEMORY_STAT_MINOR_FAULT,
        "balloon.minor_fault",
    ),
    (sys::VIR_DOMAIN_MEMORY_STAT_UNUSED, "balloon.unused"),
    (sys::VIR_DOMAIN_MEMORY_STAT_AVAILABLE, "balloon.available"),
    (sys::VIR_DOMAIN_MEMORY_STAT_RSS, "balloon.rss"),
    (sys::VIR_DOMAIN_MEMORY_STAT_USABLE, "balloon.usable"),
    (
        sys::VIR_DOMAIN_MEMORY_STAT_DISK_CACHES,
        "balloon.disk_caches",
    ),
    (
        sys::VIR_DOMAIN_MEMORY_STAT_LAST_UPDATE,
        "balloon.last-update",
    ),
    (
        sys::VIR_DOMAIN_MEMORY_STAT_HUGETLB_PGALLOC,
        "balloon.hugetlb_pgalloc",
    ),
    (
        sys::VIR_DOMAIN_MEMORY_STAT_HUGETLB_PGFAIL,
        "balloon.hugetlb_pgfail",
    ),
];

/// Fetches the `missing` groups of a running domain with `disks` and `interfaces` (target device
/// names from its XML). Blocks: run it on the blocking pool.
pub fn fetch(dom: &Domain, missing: Missing, disks: &[&str], interfaces: &[&str]) -> Fetched {
    let mut out = Fetched::default();
    if missing.cpu_total || missing.balloon {
        out.domain_info(dom, missing);
    }
    if missing.balloon {
        out.memory_stats(dom);
    }
    if missing.block {
        out.block_stats(dom, disks);
    }
    if missing.interface {
        out.interface_stats(dom, interfaces);
    }
    out
}

impl Fetched {
    /// `virDomainGetInfo`: CPU time, current and maximum memory.
    fn domain_info(&mut self, dom: &Domain, missing: Missing) {
        match dom.info() {
            Ok(info) => {
                if missing.cpu_total {
                    self.params
                        .push(("cpu.time".into(), TypedValue::UInt(info.cpu_time)));
                }
                if missing.balloon {
                    self.params
                        .push(("balloon.current".into(), TypedValue::UInt(info.memory)));
                    self.params
                        .push(("balloon.maximum".into(), TypedValue::UInt(info.max_mem)));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "virDomainGetInfo failed");
                self.errors.push("domain_info");
            }
        }
    }

    /// `virDomainMemoryStats`, the tags the bulk stats name.
    fn memory_stats(&mut self, dom: &Domain) {
        match dom.memory_stats(0) {
            Ok(stats) => {
                for s in stats {
                    if let Some((_, key)) = MEMORY_TAGS.iter().find(|(t, _)| *t == s.tag) {
                        self.params.push(((*key).into(), TypedValue::UInt(s.val)));
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "virDomainMemoryStats failed");
                self.errors.push("memory_stats");
            }
        }
    }

    /// `virDomainBlockStats` per disk target, numbered as the bulk stats number them.
    fn block_stats(&mut self, dom: &Domain, disks: &[&str]) {
        let mut n = 0usize;
        for dev in disks.iter().filter(|d| !d.is_empty()) {
            match dom.block_stats(dev) {
                Ok(s) => {
                    self.params
                        .push((format!("block.{n}.name"), TypedValue::Str((*dev).into())));
                    self.put(format!("block.{n}.rd.reqs"), s.rd_req);
                    self.put(format!("block.{n}.rd.bytes"), s.rd_bytes);
                    self.put(format!("block.{n}.wr.reqs"), s.wr_req);
                    self.put(format!("block.{n}.wr.bytes"), s.wr_bytes);
                    n += 1;
                }
                Err(e) => {
                    tracing::debug!(device = %dev, error = %e, "virDomainBlockStats failed");
                    self.errors.push("block_stats");
                }
            }
        }
        self.params
            .push(("block.count".into(), TypedValue::UInt(n as u64)));
    }

    /// `virDomainInterfaceStats` per interface target, numbered as the bulk stats number them.
    fn interface_stats(&mut self, dom: &Domain, interfaces: &[&str]) {
        let mut n = 0usize;
        for dev in interfaces.iter().filter(|d| !d.is_empty()) {
            match dom.interface_stats(dev) {
                Ok(s) => {
                    self.params
                        .push((format!("net.{n}.name"), TypedValue::Str((*dev).into())));
                    for (k, v) in [
                        ("rx.bytes", s.rx_bytes),
                        ("rx.pkts", s.rx_packets),
                        ("rx.errs", s.rx_errs),
                        ("rx.drop", s.rx_drop),
                        ("tx.bytes", s.tx_bytes),
                        ("tx.pkts", s.tx_packets),
                        ("tx.errs", s.tx_errs),
                        ("tx.drop", s.tx_drop),
                    ] {
                        self.put(format!("net.{n}.{k}"), v);
                    }
                    n += 1;
                }
                Err(e) => {
                    tracing::debug!(device = %dev, error = %e, "virDomainInterfaceStats failed");
                    self.errors.push("interface_stats");
                }
            }
        }
        self.params
            .push(("net.count".into(), TypedValue::UInt(n as u64)));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn complete_bulk_stats_need_no_calls() {
        let full: Stats = [
            "state.state",
            "cpu.time",
            "balloon.current",
            "vcpu.current",
            "block.count",
            "net.count",
        ]
        .iter()
        .map(|k| ((*k).to_string(), TypedValue::UInt(0)))
        .collect();
        let m = Missing::of(&full);
        assert_eq!(m, Missing::default());
        assert!(!m.needs_calls());

        let state_only: Stats = [("state.state".to_string(), TypedValue::Int(1))]
            .into_iter()
            .collect();
        let m = Missing::of(&state_only);
        assert_eq!(m.groups(), [true; 5]);
        assert!(m.needs_calls());

        // vCPUs alone are filled by virDomainGetVcpus, not here.
        let mut no_vcpu = full.clone();
        no_vcpu.remove("vcpu.current");
        let m = Missing::of(&no_vcpu);
        assert!(m.vcpu && !m.needs_calls());
    }

    /// The test driver's `test:///default` has one running domain `test` with disk `vda` and
    /// interface `testnet0`; its counters derive from the wall clock.
    #[test]
    fn test_driver_domain_is_filled_and_bad_devices_are_errors() {
        virt::error::clear_error_callback();
        let conn = virt::connect::Connect::open_read_only(Some("test:///default")).unwrap();
        let dom = conn.lookup_domain_by_name("test").unwrap();
        let got = fetch(
            &dom,
            Missing::ALL,
            &["vda", "nosuchdisk"],
            &["testnet0", ""],
        );
        let map: HashMap<_, _> = got.params.into_iter().collect();
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as f64;
        let num = |k: &str| map.get(k).and_then(TypedValue::as_f64).unwrap();
        // cpu.time is in nanoseconds: the test driver reports the current time.
        assert!((num("cpu.time") / 1e3 - now_us).abs() < 60e6, "{map:?}");
        assert!(num("balloon.current") > 0.0 && num("balloon.maximum") > 0.0);
        assert!(map.contains_key("balloon.rss"));
        assert_eq!(num("block.count"), 1.0);
        assert_eq!(map["block.0.name"].as_str(), Some("vda"));
        // rd.bytes is statbase/20 and rd.reqs statbase/10 (statbase: microseconds since epoch).
        assert!((num("block.0.rd.bytes") * 20.0 / now_us - 1.0).abs() < 0.01);
        assert!((num("block.0.rd.reqs") * 10.0 / now_us - 1.0).abs() < 0.01);
        assert_eq!(num("net.count"), 1.0);
        assert_eq!(map["net.0.name"].as_str(), Some("testnet0"));
        assert!((num("net.0.rx.bytes") * 10.0 / now_us - 1.0).abs() < 0.01);
        assert_eq!(got.errors, vec!["block_stats"]);

        // Only what is missing is fetched.
        let got = fetch(
            &dom,
            Missing {
                interface: true,
                ..Missing::default()
            },
            &["vda"],
            &["testnet0"],
        );
        assert!(got.params.iter().all(|(k, _)| k.starts_with("net.")));
    }
}
