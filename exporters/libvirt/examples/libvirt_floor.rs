//! The floor of a scrape: the bare libvirt calls it needs (list, bulk stats with NOWAIT, pin
//! info per domain), with no parsing and no metrics, timed on the same libvirtd as the exporter.
//! Used by `bench/bench.sh`; prints one line per iteration:
//! `floor_seconds <s> with_vcpus_seconds <s> with_stats_seconds <s> domains <n>`:
//! - `floor`: the calls the issue counts;
//! - `with_vcpus`: plus `virDomainGetVcpus` per domain (the kernel's view of vCPU affinity, which
//!   the exporter asks for only when due);
//! - `with_stats`: plus the per-domain calls that stand in for the stat groups the test driver's
//!   bulk stats lack (`virDomainGetInfo`, `virDomainMemoryStats`, `virDomainBlockStats` and
//!   `virDomainInterfaceStats` per device, `virDomainGetVcpus`): what the exporter must call on
//!   the test driver by default, and never on QEMU. Device names come from each domain's XML,
//!   read once before timing.
//!
//! With `FLOOR_EVENT_LOOP` set, libvirt's default event loop is registered and run first, as the
//! exporter does to receive domain events: libvirt then watches every connection's socket from
//! that loop, and each call wakes it (this variant shows what that costs the same calls).
//!
//! Usage: libvirt_floor URI ITERATIONS CONCURRENCY. With ITERATIONS 0, one iteration per line
//! read from stdin, on the same connection (the bench interleaves the floor with scrapes
//! without opening and closing a connection between them: on the test driver, libvirtd loads
//! and frees the whole node file for each, which would slow the scrape that follows).

#![forbid(unsafe_code)]

use std::time::Instant;

use libvirt_exporter::stats_fallback::{self, Missing};
use virt::connect::Connect;
use virt::sys;

/// Which calls a pass makes per domain.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    Floor,
    Vcpus,
    Stats,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let uri = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "qemu:///system".into());
    let iterations: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let concurrency: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8).max(1);
    virt::error::clear_error_callback();
    if std::env::var_os("FLOOR_EVENT_LOOP").is_some() {
        if let Err(e) = libvirt_exporter::ffi::start_event_loop() {
            eprintln!("cannot start libvirt's event loop: {e}");
            std::process::exit(1);
        }
    }
    let conn = match Connect::open_read_only(Some(&uri)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot open {uri}: {e}");
            std::process::exit(1);
        }
    };
    let ncpus = conn.node_info().map(|n| n.cpus).unwrap_or(1);
    // Disk and interface targets per domain name, outside the timed passes.
    let devices: std::collections::HashMap<String, (Vec<String>, Vec<String>)> = conn
        .list_all_domains(0)
        .unwrap_or_default()
        .iter()
        .filter_map(|d| {
            let x = libvirt_exporter::domain_xml::parse_domain_xml(&d.xml_desc(0).ok()?).ok()?;
            Some((
                x.name.clone(),
                (
                    x.disks.iter().map(|d| d.target_dev.clone()).collect(),
                    x.interfaces.iter().map(|i| i.target_dev.clone()).collect(),
                ),
            ))
        })
        .collect();
    let once = || {
        let floor = run(&conn, ncpus, concurrency, Pass::Floor, &devices);
        let with_vcpus = run(&conn, ncpus, concurrency, Pass::Vcpus, &devices);
        let with_stats = run(&conn, ncpus, concurrency, Pass::Stats, &devices);
        println!(
            "floor_seconds {:.6} with_vcpus_seconds {:.6} with_stats_seconds {:.6} domains {}",
            floor.0, with_vcpus.0, with_stats.0, floor.1
        );
    };
    if iterations == 0 {
        println!("ready");
        for _ in std::io::stdin().lines().map_while(Result::ok) {
            once();
        }
    } else {
        for _ in 0..iterations {
            once();
        }
    }
}

/// One pass of the bare calls: (seconds, domains listed).
fn run(
    conn: &Connect,
    ncpus: u32,
    concurrency: usize,
    pass: Pass,
    devices: &std::collections::HashMap<String, (Vec<String>, Vec<String>)>,
) -> (f64, usize) {
    let start = Instant::now();
    let domains = conn.list_all_domains(0).unwrap_or_default();
    let stats = libvirt_exporter::ffi::all_domain_stats(
        conn,
        libvirt_exporter::snapshot::STATS_GROUPS,
        sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
    )
    .unwrap_or_default();
    let chunk = stats.len().div_ceil(concurrency).max(1);
    std::thread::scope(|s| {
        for part in stats.chunks(chunk) {
            s.spawn(move || {
                for r in part {
                    let _ = libvirt_exporter::ffi::vcpu_pin_info(
                        &r.domain,
                        2,
                        ncpus,
                        sys::VIR_DOMAIN_AFFECT_LIVE,
                    );
                    if pass != Pass::Floor {
                        let _ = libvirt_exporter::ffi::vcpus(&r.domain, 2, ncpus);
                    }
                    if pass == Pass::Stats {
                        let name = r.domain.name().unwrap_or_default();
                        if let Some((disks, ifaces)) = devices.get(&name) {
                            let disks: Vec<&str> = disks.iter().map(String::as_str).collect();
                            let ifaces: Vec<&str> = ifaces.iter().map(String::as_str).collect();
                            let _ = stats_fallback::fetch(&r.domain, Missing::ALL, &disks, &ifaces);
                        }
                    }
                }
            });
        }
    });
    (start.elapsed().as_secs_f64(), domains.len())
}
