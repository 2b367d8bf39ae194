//! `replay` over fixture logs of every format (golden exposition), and `promtool check metrics`
//! over both the replay output and a live scrape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e_tests::{assert_promtool_clean, run_ok, samples, sum_samples, wait_for};
use support::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replay")
}

fn replay() -> String {
    let dir = fixtures();
    // Relative paths keep the output independent of the checkout location.
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_log_pattern_exporter"))
            .current_dir(&dir)
            .args([
                "replay",
                "--config.file=rules.yml",
                "--tail.max-line-bytes=200",
                "pods/kube-system_coredns-5d78c9869d-x7k2p_8f1e2d3c-1111-2222-3333-444455556666/coredns/0.log",
                "pods/default_web-1_0a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff/nginx/0.log",
                "kern.log",
            ]),
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn replay_matches_golden_exposition() {
    let got = replay();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/replay.prom");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(got, want, "rerun with UPDATE_GOLDEN=1 and review the diff");
    // What the golden file says, spelled out.
    let s = samples(&got);
    let m = |k: &str| s.get(k).copied().unwrap_or(-1.0);
    // CRI: partial joined (1), [ERROR] lines incl. invalid UTF-8 and the over-long one.
    assert_eq!(m("log_pattern_matches_total{rule=\"error_upper\",namespace=\"kube-system\",pod=\"coredns-5d78c9869d-x7k2p\",container=\"coredns\"}"), 4.0);
    assert_eq!(m("log_pattern_matches_total{rule=\"oom\",namespace=\"default\",pod=\"web-1\",container=\"nginx\"}"), 1.0);
    assert_eq!(m("log_pattern_matches_total{rule=\"oom\"}"), 1.0);
    // kern.log's last line has no newline: read at the end of the replay.
    assert_eq!(m("log_pattern_matches_total{rule=\"error\"}"), 1.0);
    assert_eq!(m("log_pattern_parse_errors_total{format=\"cri\"}"), 1.0);
    assert_eq!(m("log_pattern_parse_errors_total{format=\"docker\"}"), 1.0);
    assert_eq!(m("log_pattern_invalid_utf8_lines_total"), 1.0);
    assert_eq!(m("log_pattern_long_lines_total"), 1.0);
    // 8 CRI (one P+F pair), 4 Docker (one split pair), 3 plain.
    assert_eq!(m("log_pattern_lines_read_total"), 15.0);
    assert_eq!(m("log_pattern_matches_total{rule=\"coredns_plugin_errors\",namespace=\"kube-system\",plugin=\"plugin/errors\"}"), 1.0);
    assert_eq!(
        sum_samples(
            &got,
            "log_pattern_matches_total{rule=\"coredns_plugin_errors\""
        ),
        1.0
    );
    // | unwrap: histogram with configured buckets, counter adding the number, gauge, errors.
    let h = "rule=\"nginx_response_bytes\",namespace=\"default\",method=\"GET\"";
    assert_eq!(
        m(&format!(
            "log_pattern_nginx_response_bytes_bucket{{le=\"100.0\",{h}}}"
        )),
        0.0
    );
    assert_eq!(
        m(&format!(
            "log_pattern_nginx_response_bytes_bucket{{le=\"1000.0\",{h}}}"
        )),
        1.0
    );
    assert_eq!(
        m(&format!("log_pattern_nginx_response_bytes_sum{{{h}}}")),
        612.0
    );
    assert_eq!(
        m("log_pattern_nginx_sent_bytes_total{rule=\"nginx_bytes_sum\"}"),
        612.0
    );
    assert_eq!(
        m("log_pattern_nginx_last_status{rule=\"nginx_last_status\"}"),
        200.0
    );
    assert_eq!(
        m("log_pattern_unwrap_errors_total{rule=\"nginx_bad_unwrap\"}"),
        1.0
    );
    assert_eq!(
        m("log_pattern_unwrap_errors_total{rule=\"nginx_response_bytes\"}"),
        0.0
    );
    // Selectors: label =, =~, !=, !~ and the per-line stream; absent labels are "".
    let coredns =
        "namespace=\"kube-system\",pod=\"coredns-5d78c9869d-x7k2p\",container=\"coredns\"";
    assert_eq!(
        m(&format!(
            "log_pattern_matches_total{{rule=\"kube_system_stderr\",{coredns}}}"
        )),
        2.0
    );
    assert_eq!(
        sum_samples(
            &got,
            "log_pattern_matches_total{rule=\"kube_system_stderr\""
        ),
        2.0
    );
    assert_eq!(
        m(&format!(
            "log_pattern_dns_timeouts_total{{rule=\"dns_timeout\",{coredns}}}"
        )),
        1.0
    );
    assert!(
        !got.contains("rule=\"nova_only\",namespace"),
        "selector matches no source"
    );
    // keep_labels [namespace]; `!~` drops the broken writer's line; kern.log has no namespace.
    assert_eq!(
        m("log_pattern_matches_total{rule=\"errors_by_namespace\",namespace=\"default\"}"),
        1.0
    );
    assert_eq!(
        m("log_pattern_matches_total{rule=\"errors_by_namespace\"}"),
        1.0
    );
    // Zero-initialised series for a selected source without a match.
    assert_eq!(m("log_pattern_matches_total{rule=\"error_upper\",namespace=\"default\",pod=\"web-1\",container=\"nginx\"}"), 0.0);
    assert_eq!(
        m("log_pattern_matches_total{rule=\"legacy_contains\"}"),
        1.0
    );
    assert_eq!(
        m("log_pattern_rule_info{rule=\"oom\",alert=\"true\",severity=\"critical\"}"),
        1.0
    );
    assert_eq!(
        m("log_pattern_rule_info{rule=\"error\",alert=\"false\",severity=\"warning\"}"),
        1.0
    );
}

#[test]
fn promtool_finds_nothing_in_replay_or_live_output() {
    assert_promtool_clean(&replay());
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    let c = container_dir(&pods, "ns", "p", "c");
    std::fs::write(c.join("0.log"), cri("an ERROR")).unwrap();
    let cfg = write_config(
        d.path(),
        "rules:\n- name: error\n  contains: ERROR\nstart_at: beginning\n",
    );
    let exp = Exporter::start(
        d.path(),
        &args(&pods, &d.path().join("state.json"), &cfg, &[]),
    );
    let mut last = String::new();
    wait_for("a match", std::time::Duration::from_secs(20), || {
        last = exp.scrape();
        sum_samples(&last, "log_pattern_matches_total{") >= 1.0
    });
    assert_promtool_clean(&last);
}
