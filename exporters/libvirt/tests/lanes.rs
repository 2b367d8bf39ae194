//! The workers' own connections to libvirtd (`Lane`s) from outside: the exporter binary against
//! a real libvirtd, whose admin interface counts its clients. With `--libvirt.concurrency=N`
//! on a remote URI, the first scrape opens N connections beside the main one and the events
//! helper's, later scrapes keep them, one worker shares the main connection; and the series
//! are those of one worker.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod support;

use std::path::Path;
use std::process::Command;

/// libvirtd's clients, per `virt-admin srv-clients-list`.
fn clients(daemon: &support::Libvirtd) -> usize {
    let uri = format!(
        "libvirtd:///system?socket={}",
        daemon.dir.join("sock/libvirt-admin-sock").display()
    );
    let out = Command::new("virt-admin")
        .args(["-c", &uri, "srv-clients-list", "libvirtd"])
        .output()
        .expect("virt-admin (package libvirt-clients) must be installed");
    assert!(out.status.success(), "{out:?}");
    // A header line and a rule, then one line per client.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .count()
}

fn exporter(daemon: &support::Libvirtd, concurrency: usize) -> support::ExporterProc {
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dedicated.xml");
    support::ExporterProc::start(&[
        format!("--libvirt.uri={}", daemon.test_uri(&node)),
        format!("--libvirt.concurrency={concurrency}"),
        "--path.procfs=".into(),
    ])
}

/// The per-domain series (name and labels, not values), and the failed calls of this scrape.
fn domain_series(body: &str) -> (std::collections::BTreeSet<&str>, Option<f64>) {
    let series = body
        .lines()
        .filter(|l| l.starts_with("libvirt_domain_"))
        .filter_map(|l| l.rsplit_once(' ').map(|(k, _)| k))
        .collect();
    (
        series,
        e2e_tests::sample_with(body, "libvirt_domains_scrape_errors", &[]),
    )
}

#[test]
fn each_worker_gets_its_own_connection_kept_across_scrapes() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = support::Libvirtd::start_test_driver(tmp.path());
    let shared = exporter(&daemon, 1);
    let (_, one) = shared.scrape();
    // The main connection and the events helper's.
    assert_eq!(clients(&daemon), 2);
    let three = exporter(&daemon, 3);
    let (_, first) = three.scrape();
    assert_eq!(clients(&daemon), 2 + 2 + 3);
    let (_, second) = three.scrape();
    assert_eq!(clients(&daemon), 2 + 2 + 3, "connections opened again");
    // The same series as with one worker, every call answered, the counters there.
    let (series, errors) = domain_series(&one);
    assert_eq!(errors, Some(0.0), "{one}");
    assert!(series.iter().any(|s| s.contains("cpu_time")), "{one}");
    for body in [&first, &second] {
        assert_eq!(domain_series(body), (series.clone(), Some(0.0)), "{body}");
    }
    drop(three);
    e2e_tests::wait_for(
        "the exporter's connections closed",
        std::time::Duration::from_secs(10),
        || clients(&daemon) == 2,
    );
}
