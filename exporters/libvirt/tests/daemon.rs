//! The exporter binary against a libvirtd it does not own: libvirtd (test driver over a unix
//! socket) is killed mid-run and restarted. `libvirt_up` goes to 0 while the exporter keeps
//! answering, and comes back to 1 once libvirtd is back. The real output passes
//! `promtool check metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod support;

use std::path::Path;
use std::time::Duration;

use support::{promtool_check, value, wait_for, ExporterProc, Libvirtd};

#[test]
fn libvirtd_killed_and_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/overlapping.xml");
    let mut daemon = Libvirtd::start_test_driver(tmp.path());
    let exporter = ExporterProc::start(&[
        format!("--libvirt.uri={}", daemon.test_uri(&node)),
        "--libvirt.timeout=3s".into(),
        "--libvirt.reconnect-backoff-max=500ms".into(),
        "--path.procfs=".into(),
    ]);

    let (status, body) = exporter.scrape();
    assert_eq!(status, 200);
    assert_eq!(value(&body, "libvirt_up "), Some(1.0), "{body}");
    assert_eq!(value(&body, "libvirt_domains "), Some(2.0));
    assert_eq!(
        value(
            &body,
            r#"libvirt_domain_pinning_overlap_cpus{domain="instance-00000001"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &body,
            r#"libvirt_scrape_collector_success{collector="domain"}"#
        ),
        Some(1.0)
    );
    let lint = promtool_check(&body);
    assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");

    // libvirtd dies (SIGKILL, as a crash would).
    daemon.guard.kill_with(9);
    for _ in 0..3 {
        let (status, body) = exporter.scrape();
        assert_eq!(status, 200, "the exporter must keep serving");
        assert_eq!(value(&body, "libvirt_up "), Some(0.0), "{body}");
        assert_eq!(
            value(
                &body,
                r#"libvirt_scrape_collector_success{collector="domain"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &body,
                r#"libvirt_scrape_collector_success{collector="host"}"#
            ),
            Some(0.0)
        );
        assert!(
            !body.contains("libvirt_domain_info_state"),
            "stale domain series after the daemon died"
        );
        let lint = promtool_check(&body);
        assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");
    }

    // Back: the exporter re-opens the connection by itself.
    let _daemon = Libvirtd::start_test_driver(tmp.path());
    let mut last = String::new();
    wait_for(
        "libvirt_up 1 after restart",
        Duration::from_secs(20),
        || {
            last = exporter.scrape().1;
            value(&last, "libvirt_up ") == Some(1.0)
        },
    );
    assert_eq!(value(&last, "libvirt_domains "), Some(2.0));
    assert!(value(&last, "libvirt_connections_opened_total").unwrap() >= 2.0);
}
