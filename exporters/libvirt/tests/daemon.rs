//! The exporter binary against a libvirtd it does not own: libvirtd (test driver over a unix
//! socket) is killed mid-run and restarted. `libvirt_up` goes to 0 while the exporter keeps
//! answering, and comes back to 1 once libvirtd is back. The real output passes
//! `promtool check metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod support;

use std::path::Path;
use std::time::Duration;

use e2e_tests::{assert_promtool_clean, sample_value, wait_for};
use support::{ExporterProc, Libvirtd};

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
    assert_eq!(sample_value(&body, "libvirt_up "), Some(1.0), "{body}");
    assert_eq!(sample_value(&body, "libvirt_domains "), Some(2.0));
    assert_eq!(
        sample_value(
            &body,
            r#"libvirt_domain_pinning_overlap_cpus{domain="instance-00000001"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_value(
            &body,
            r#"libvirt_scrape_collector_success{collector="domain"}"#
        ),
        Some(1.0)
    );
    assert_promtool_clean(&body);

    // libvirtd dies (SIGKILL, as a crash would).
    daemon.guard.kill();
    for _ in 0..3 {
        let (status, body) = exporter.scrape();
        assert_eq!(status, 200, "the exporter must keep serving");
        assert_eq!(sample_value(&body, "libvirt_up "), Some(0.0), "{body}");
        assert_eq!(
            sample_value(
                &body,
                r#"libvirt_scrape_collector_success{collector="domain"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample_value(
                &body,
                r#"libvirt_scrape_collector_success{collector="host"}"#
            ),
            Some(0.0)
        );
        assert!(
            !body.contains("libvirt_domain_info_state"),
            "stale domain series after the daemon died"
        );
        assert_promtool_clean(&body);
    }

    // Back: the exporter re-opens the connection by itself.
    let _daemon = Libvirtd::start_test_driver(tmp.path());
    let mut last = String::new();
    wait_for(
        "libvirt_up 1 after restart",
        Duration::from_secs(20),
        || {
            last = exporter.scrape().1;
            sample_value(&last, "libvirt_up ") == Some(1.0)
        },
    );
    assert_eq!(sample_value(&last, "libvirt_domains "), Some(2.0));
    assert!(sample_value(&last, "libvirt_connections_opened_total").unwrap() >= 2.0);
}

/// Domain events from a daemon reach the exporter through its events helper process (the
/// exporter itself never registers libvirt's event loop): a change made by another client is
/// seen on the next scrape, with only that domain's XML fetched again. When the helper dies, the
/// exporter notices, fetches everything and starts a new one.
#[test]
fn remote_events_through_the_helper() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Libvirtd::start_test_driver(tmp.path());
    let sock = tmp.path().join("sock");
    // test:///default is one shared node in the daemon: other clients' changes are visible.
    let ro = format!(
        "test+unix:///default?socket={}/libvirt-sock-ro",
        sock.display()
    );
    let rw = format!(
        "test+unix:///default?socket={}/libvirt-sock",
        sock.display()
    );
    let exporter = ExporterProc::start(&[
        format!("--libvirt.uri={ro}"),
        "--libvirt.timeout=3s".into(),
        "--path.procfs=".into(),
    ]);
    let helpers = || -> Vec<u32> {
        let out = std::process::Command::new("ps")
            .args([
                "-o",
                "pid=,args=",
                "--ppid",
                &exporter.guard.pid().to_string(),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("--internal.libvirt-events-helper"))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let state = r#"libvirt_domain_info_state{domain="test",state_desc="#;
    let body = exporter.scrape().1;
    assert_eq!(sample_value(&body, "libvirt_up "), Some(1.0), "{body}");
    assert!(
        body.contains(&format!("{state}\"the domain is running\"}} 1")),
        "{body}"
    );
    let fetches = sample_value(&body, "libvirt_domain_xml_fetches_total").unwrap();
    assert_eq!(helpers().len(), 1, "one events helper");

    let virsh = |args: &[&str]| {
        let st = std::process::Command::new("virsh")
            .args(["-c", &rw])
            .args(args)
            .output()
            .unwrap();
        assert!(st.status.success(), "virsh {args:?}: {st:?}");
    };
    // nova's metadata lives in the XML, which is fetched again only when an event says so
    // (the periodic refresh is minutes away and the connection stays the same).
    virsh(&[
        "metadata",
        "test",
        "http://openstack.org/xmlns/libvirt/nova/1.1",
        "--key",
        "nova",
        "--set",
        "<instance><name>evented</name></instance>",
        "--live",
    ]);
    let mut body = String::new();
    wait_for("the new nova metadata", Duration::from_secs(10), || {
        body = exporter.scrape().1;
        body.contains(r#"instance_name="evented""#)
    });
    assert!(
        sample_value(&body, "libvirt_domain_events_total").unwrap() >= 1.0,
        "{body}"
    );
    assert_eq!(
        sample_value(&body, "libvirt_domain_xml_fetches_total"),
        Some(fetches + 1.0),
        "the changed domain's XML is fetched once"
    );
    assert_eq!(
        sample_value(&body, "libvirt_connections_opened_total"),
        Some(1.0)
    );
    let unsupported = r#"libvirt_domain_job_info_failures_total{reason="unsupported"}"#;
    let asked = sample_value(&body, unsupported).unwrap();
    virsh(&["suspend", "test"]);
    wait_for("the paused state", Duration::from_secs(10), || {
        body = exporter.scrape().1;
        body.contains(&format!("{state}\"the domain is paused by user\"}} 3"))
    });
    // The suspend's event, through the helper, makes the job collector ask that domain for
    // its job (as the metadata change's did); the test driver has none to give, which is
    // counted.
    assert_eq!(
        sample_value(
            &body,
            r#"libvirt_domain_paused_reason_info{domain="test",reason="user"}"#
        ),
        Some(1.0),
        "{body}"
    );
    wait_for(
        "the job stats asked on the event",
        Duration::from_secs(10),
        || {
            body = exporter.scrape().1;
            sample_value(&body, unsupported) > Some(asked)
        },
    );

    // The helper dies: the exporter re-opens and starts another one.
    let old = helpers();
    let _ = std::process::Command::new("kill")
        .arg(old[0].to_string())
        .status();
    wait_for("a new events helper", Duration::from_secs(20), || {
        let body = exporter.scrape().1;
        sample_value(&body, "libvirt_up ") == Some(1.0)
            && sample_value(&body, "libvirt_connections_opened_total") == Some(2.0)
            && helpers().iter().any(|p| !old.contains(p))
    });
    assert_eq!(helpers().len(), 1, "the old helper is reaped");
    drop(exporter);
    drop(daemon);
}

/// The `storage_pool` collector (off by default) through libvirtd: the test driver's default
/// pool with its sizes; a pool destroyed by another client keeps only its state, one undefined
/// disappears; the exposition passes promtool.
#[test]
fn storage_pools_through_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Libvirtd::start_test_driver(tmp.path());
    let sock = tmp.path().join("sock");
    let ro = format!(
        "test+unix:///default?socket={}/libvirt-sock-ro",
        sock.display()
    );
    let rw = format!(
        "test+unix:///default?socket={}/libvirt-sock",
        sock.display()
    );
    let virsh = |args: &[&str]| {
        let st = std::process::Command::new("virsh")
            .args(["-c", &rw])
            .args(args)
            .output()
            .unwrap();
        assert!(st.status.success(), "virsh {args:?}: {st:?}");
    };
    let off = ExporterProc::start(&[format!("--libvirt.uri={ro}"), "--path.procfs=".into()]);
    let body = off.scrape().1;
    assert!(
        !body.contains("libvirt_storage_pool_"),
        "off by default: {body}"
    );
    drop(off);

    let exporter = ExporterProc::start(&[
        format!("--libvirt.uri={ro}"),
        "--path.procfs=".into(),
        "--collector.storage_pool".into(),
    ]);
    let body = exporter.scrape().1;
    let v = |body: &str, m: &str| {
        sample_value(
            body,
            &format!(r#"libvirt_storage_pool_{m}{{storage_pool="default-pool"}}"#),
        )
    };
    assert_eq!(v(&body, "state"), Some(2.0), "{body}");
    let capacity = v(&body, "capacity_bytes").unwrap();
    let allocation = v(&body, "allocation_bytes").unwrap();
    let available = v(&body, "available_bytes").unwrap();
    assert!(
        capacity > 0.0 && capacity == allocation + available,
        "{body}"
    );
    assert_eq!(
        sample_value(
            &body,
            r#"libvirt_scrape_collector_success{collector="storage_pool"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_value(
            &body,
            r#"libvirt_storage_pool_info_failures_total{reason="not_found"}"#
        ),
        Some(0.0)
    );
    assert_promtool_clean(&body);

    virsh(&["pool-destroy", "default-pool"]);
    let body = exporter.scrape().1;
    assert_eq!(v(&body, "state"), Some(0.0), "{body}");
    assert_eq!(v(&body, "available_bytes"), None, "{body}");

    virsh(&["pool-undefine", "default-pool"]);
    let body = exporter.scrape().1;
    assert_eq!(v(&body, "state"), None, "{body}");
    assert_eq!(
        sample_value(
            &body,
            r#"libvirt_scrape_collector_success{collector="storage_pool"}"#
        ),
        Some(1.0)
    );
    drop(exporter);
    drop(daemon);
}
