//! The floor of a scrape: the bare libvirt calls it needs (list, bulk stats with NOWAIT, pin
//! info per domain), with no parsing and no metrics, timed on the same libvirtd as the exporter.
//! Used by `bench/bench.sh`; prints one line per iteration:
//! `floor_seconds <s> with_vcpus_seconds <s> domains <n>`, the second adding the
//! `virDomainGetVcpus` call per running domain that the exporter also makes (the kernel's view of
//! vCPU affinity).
//!
//! Usage: libvirt_floor URI ITERATIONS CONCURRENCY

#![forbid(unsafe_code)]

use std::time::Instant;

use virt::connect::Connect;
use virt::sys;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let uri = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "qemu:///system".into());
    let iterations: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let concurrency: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4).max(1);
    virt::error::clear_error_callback();
    let conn = match Connect::open_read_only(Some(&uri)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot open {uri}: {e}");
            std::process::exit(1);
        }
    };
    let ncpus = conn.node_info().map(|n| n.cpus).unwrap_or(1);
    for _ in 0..iterations {
        let floor = run(&conn, ncpus, concurrency, false);
        let with_vcpus = run(&conn, ncpus, concurrency, true);
        println!(
            "floor_seconds {:.6} with_vcpus_seconds {:.6} domains {}",
            floor.0, with_vcpus.0, floor.1
        );
    }
}

/// One pass of the bare calls: (seconds, domains listed).
fn run(conn: &Connect, ncpus: u32, concurrency: usize, vcpus: bool) -> (f64, usize) {
    {
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
                        if vcpus {
                            let _ = libvirt_exporter::ffi::vcpus(&r.domain, 2, ncpus);
                        }
                    }
                });
            }
        });
        (start.elapsed().as_secs_f64(), domains.len())
    }
}
