//! Every exporter binary, started as a user starts it: it serves its endpoints and the
//! framework's metrics, its output passes `promtool check metrics`, SIGTERM stops it cleanly,
//! and `--config.check` gives exit 0 on a good file and 1 with FILE:LINE:COLUMN on a broken one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Command;
use std::time::Duration;

use e2e_tests::{bin, free_port, http_get, promtool_check_metrics, wait_http_ok, ChildGuard};

struct Case {
    binary: &'static str,
    prefix: &'static str,
    args: Vec<String>,
}

fn cases(tmp: &std::path::Path) -> Vec<Case> {
    let pods = tmp.join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    vec![
        Case {
            binary: "log_pattern_exporter",
            prefix: "log_pattern",
            args: vec![
                format!("--path.pods={}", pods.display()),
                format!("--state.file={}", tmp.join("state.json").display()),
            ],
        },
        Case {
            binary: "libvirt_exporter",
            prefix: "libvirt",
            args: vec!["--libvirt.uri=test:///default".into()],
        },
        Case {
            binary: "dirty_flow_exporter",
            prefix: "ovs",
            // No OVS here: collectors fail, the exporter must still serve valid output.
            args: vec![format!("--ovs.rundir={}", tmp.join("no-ovs").display())],
        },
    ]
}

#[test]
fn each_binary_serves_valid_metrics_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    for case in cases(tmp.path()) {
        let port = free_port();
        let mut child = ChildGuard::spawn(
            Command::new(bin(case.binary))
                .args(&case.args)
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
        );
        let base = format!("http://127.0.0.1:{port}");
        assert!(
            wait_http_ok(&format!("{base}/-/healthy"), Duration::from_secs(20)),
            "{} did not come up",
            case.binary
        );
        let (status, _, landing) = http_get(&format!("{base}/"), &[]).unwrap();
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&landing).contains(case.binary));
        let (status, head, body) = http_get(&format!("{base}/metrics"), &[]).unwrap();
        assert_eq!(status, 200, "{}", case.binary);
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains(&format!("{}_build_info{{", case.prefix)),
            "{}: {text}",
            case.binary
        );
        assert!(text.contains("process_start_time_seconds "), "{text}");
        if let Err(lint) = promtool_check_metrics(&body) {
            panic!("{}: promtool check metrics: {lint}\n{text}", case.binary);
        }
        // OpenMetrics output parses too (promtool reads the text format only).
        let (status, head, body) = http_get(
            &format!("{base}/metrics"),
            &[("Accept", "application/openmetrics-text;version=1.0.0")],
        )
        .unwrap();
        assert_eq!(status, 200);
        assert!(head.contains("application/openmetrics-text"), "{head}");
        assert!(String::from_utf8_lossy(&body).ends_with("# EOF\n"));
        let exit = child.terminate(Duration::from_secs(15));
        assert!(
            exit.is_some_and(|s| s.success()),
            "{} did not exit 0 on SIGTERM: {exit:?}",
            case.binary
        );
    }
}

#[test]
fn config_check_reports_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    // log_pattern_exporter and dirty_flow_exporter have configuration files.
    for (binary, good) in [
        ("log_pattern_exporter", "rules: []\n"),
        ("dirty_flow_exporter", "{}\n"),
    ] {
        let good_path = tmp.path().join(format!("{binary}-good.yml"));
        std::fs::write(&good_path, good).unwrap();
        let out = Command::new(bin(binary))
            .arg(format!("--config.file={}", good_path.display()))
            .arg("--config.check")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{binary}: {out:?}");
        let bad_path = tmp.path().join(format!("{binary}-bad.yml"));
        std::fs::write(&bad_path, "# comment\nnot_a_known_key: 1\n").unwrap();
        let out = Command::new(bin(binary))
            .arg(format!("--config.file={}", bad_path.display()))
            .arg("--config.check")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{binary}: {out:?}");
        let msg = String::from_utf8_lossy(&out.stderr);
        let expected = format!("{}:2:1:", bad_path.display());
        assert!(msg.contains(&expected), "{binary}: {msg}");
        // A missing file is an error naming it, not a panic.
        let out = Command::new(bin(binary))
            .arg("--config.file=/nonexistent/x.yml")
            .arg("--config.check")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.yml"));
    }
}

#[test]
fn bad_flags_and_busy_ports_are_clear_startup_errors() {
    let out = Command::new(bin("libvirt_exporter"))
        .arg("--web.listen-address=not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-address"));
    let out = Command::new(bin("libvirt_exporter"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let out = Command::new(bin("libvirt_exporter"))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}
