//! LogQL rules in the running exporter: live counting of appended lines, zero-initialised series,
//! reload by SIGHUP and `POST /-/reload` (good, broken, changed rule files), counters that
//! survive a reload and a restart, `--config.check` on good and bad files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use e2e_tests::{run_ok, sample, wait_for};
use support::*;

const T: Duration = Duration::from_secs(20);

fn post_reload(port: u16) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"POST /-/reload HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let code = r
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = r.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (code, body.unwrap_or_default())
}

const API: &str = "namespace=\"nova\",pod=\"api\",container=\"app\"";
const SIDE: &str = "namespace=\"nova\",pod=\"api\",container=\"sidecar\"";

const RULES_V1: &str = r#"start_at: beginning
rules:
  - name: nova_error
    expr: '{namespace="nova", container!="sidecar"} |= "ERROR" != "retrying"'
    alert: true
    severity: critical
  - name: warn
    expr: '{} |~ "WARN(ING)?"'
"#;

const RULES_BROKEN: &str = r#"rules:
  - name: nova_error
    expr: '{namespace="nova"} |= "ERROR" | distinct x'
"#;

const RULES_V2: &str = r#"start_at: beginning
rules:
  - name: nova_error
    expr: '{namespace="nova", container!="sidecar"} |= "ERROR" != "retrying"'
    alert: true
    severity: critical
  - name: fresh
    expr: '{namespace="nova"} |= "FRESH"'
    keep_labels: [namespace, container]
  - name: latency
    expr: '{namespace="nova"} |= "ms=" | logfmt | unwrap ms'
    keep_labels: []
    metric: nova_request_ms
    type: histogram
    buckets: [10, 100]
"#;

#[test]
fn live_counts_zero_init_and_reload() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    let app = container_dir(&pods, "nova", "api", "app").join("0.log");
    std::fs::write(&app, cri("ERROR first") + &cri("ERROR retrying later")).unwrap();
    let cfg = write_config(d.path(), RULES_V1);
    let state = d.path().join("state.json");
    let mut exp = Exporter::start(d.path(), &args(&pods, &state, &cfg, &[]));
    let key =
        |rule: &str, labels: &str| format!("log_pattern_matches_total{{rule=\"{rule}\",{labels}}}");
    wait_for("the first match", T, || {
        sample(&exp.scrape(), &key("nova_error", API)) == Some(1.0)
    });
    let text = exp.scrape();
    assert_eq!(
        sample(&text, &key("warn", API)),
        Some(0.0),
        "zero-initialised"
    );
    assert_eq!(
        sample(
            &text,
            "log_pattern_rule_info{rule=\"nova_error\",alert=\"true\",severity=\"critical\"}"
        ),
        Some(1.0)
    );

    // A new container: its series exist at 0 as soon as it is seen, before any match.
    let side = container_dir(&pods, "nova", "api", "sidecar").join("0.log");
    std::fs::write(&side, cri("hello")).unwrap();
    wait_for("the sidecar's zero series", T, || {
        sample(&exp.scrape(), &key("warn", SIDE)) == Some(0.0)
    });
    assert_eq!(
        sample(&exp.scrape(), &key("nova_error", SIDE)),
        None,
        "not selected"
    );

    // Appended lines show up in the scraped counters.
    append(&app, &(cri("ERROR second") + &cri("WARNING disk")));
    append(&side, &cri("ERROR in the sidecar, WARN too"));
    wait_for("appended lines", T, || {
        let t = exp.scrape();
        sample(&t, &key("nova_error", API)) == Some(2.0)
            && sample(&t, &key("warn", SIDE)) == Some(1.0)
    });
    assert_eq!(sample(&exp.scrape(), &key("warn", API)), Some(1.0));

    // A broken file is rejected by SIGHUP: counted, the old rules keep counting.
    std::fs::write(&cfg, RULES_BROKEN).unwrap();
    exp.signal("-HUP");
    wait_for("the failed reload", T, || {
        sample(
            &exp.scrape(),
            "log_pattern_config_reloads_total{result=\"failure\"}",
        ) == Some(1.0)
    });
    let t = exp.scrape();
    assert_eq!(
        sample(&t, "log_pattern_config_last_reload_successful"),
        Some(0.0)
    );
    assert!(
        exp.logs().contains("rule file reload failed"),
        "{}",
        exp.logs()
    );
    append(&app, &cri("ERROR third"));
    wait_for("old rules still counting", T, || {
        sample(&exp.scrape(), &key("nova_error", API)) == Some(3.0)
    });
    // The same broken file over HTTP: 500 and the reason.
    let (code, body) = post_reload(exp.port);
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("`| distinct` stage is not supported"),
        "{body}"
    );

    // A changed file over HTTP: the unchanged rule continues, the removed one is gone, the new
    // one starts at 0 on the containers already seen.
    std::fs::write(&cfg, RULES_V2).unwrap();
    let (code, body) = post_reload(exp.port);
    assert_eq!((code, body.as_str()), (200, "reloaded 3 rules\n"));
    let t = exp.scrape();
    assert_eq!(sample(&t, &key("nova_error", API)), Some(3.0));
    assert_eq!(
        sample(&t, "log_pattern_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(
        sample(&t, "log_pattern_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    assert!(
        !t.contains("rule=\"warn\""),
        "removed rule still exported:\n{t}"
    );
    let fresh = |c: &str| {
        format!("log_pattern_matches_total{{rule=\"fresh\",namespace=\"nova\",container=\"{c}\"}}")
    };
    assert_eq!(sample(&t, &fresh("app")), Some(0.0));
    assert_eq!(sample(&t, &fresh("sidecar")), Some(0.0));
    append(
        &app,
        &(cri("ERROR FRESH") + &cri("WARN not counted any more") + &cri("req ms=50")),
    );
    let hist = |s: &str| format!("log_pattern_nova_request_ms_{s}{{rule=\"latency\"}}");
    wait_for("new rules counting", T, || {
        let t = exp.scrape();
        sample(&t, &fresh("app")) == Some(1.0)
            && sample(&t, &key("nova_error", API)) == Some(4.0)
            && sample(&t, &hist("count")) == Some(1.0)
    });

    // A restart (SIGKILL) resumes every counter from the state file and reads nothing twice.
    exp.kill();
    let exp = Exporter::start(d.path(), &args(&pods, &state, &cfg, &[]));
    append(&app, &cri("ERROR after restart"));
    wait_for("the restarted exporter", T, || {
        sample(&exp.scrape(), &key("nova_error", API)) == Some(5.0)
    });
    append(&app, &cri("req ms=5"));
    wait_for("the histogram continuing", T, || {
        sample(&exp.scrape(), &hist("count")) == Some(2.0)
    });
    let t = exp.scrape();
    assert_eq!(sample(&t, &fresh("app")), Some(1.0));
    assert_eq!(sample(&t, &fresh("sidecar")), Some(0.0));
    assert_eq!(sample(&t, &hist("sum")), Some(55.0));
    assert_eq!(
        sample(
            &t,
            "log_pattern_nova_request_ms_bucket{le=\"10.0\",rule=\"latency\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn config_check_reports_the_position() {
    let d = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_log_pattern_exporter");
    let good = write_config(d.path(), RULES_V1);
    run_ok(
        Command::new(bin)
            .arg(format!("--config.file={}", good.display()))
            .arg("--config.check"),
    );
    // RULES_V1's rule `warn` selects `{}`: valid here, warned about.
    let msg = out_text(&good, bin);
    assert!(
        msg.contains("warning: rule \"warn\": the selector {} selects every source"),
        "{msg}"
    );
    assert!(!msg.contains("nova_error\": the selector"), "{msg}");
    assert!(msg.contains("configuration is valid"), "{msg}");
    let bad = write_config(d.path(), RULES_BROKEN);
    let out = Command::new(bin)
        .arg(format!("--config.file={}", bad.display()))
        .arg("--config.check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Line 3; the value starts at column 12, `distinct` is at offset 32 of the expression.
    assert!(msg.contains("rules.yml:3:44: "), "{msg}");
    assert!(msg.contains("at offset 32"), "{msg}");
    assert!(msg.contains("supported: a stream selector"), "{msg}");
}

/// What `--config.check` prints on a valid file (stdout and stderr).
fn out_text(path: &std::path::Path, bin: &str) -> String {
    let out = Command::new(bin)
        .arg(format!("--config.file={}", path.display()))
        .arg("--config.check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A `| label_format` onto a source label's name, listed in the rule's `labels`, gives the
/// series Loki's value of that label (the formatted one), not an empty `<name>_extracted`.
#[test]
fn label_format_onto_a_source_label_replaces_it() {
    let d = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_log_pattern_exporter");
    let config = write_config(
        d.path(),
        "rules:\n- name: ns\n  expr: '{namespace=\"prod\"} |= \"GET\" | label_format namespace=\"x-{{.namespace}}\"'\n  labels: [namespace]\n",
    );
    let log = container_dir(&d.path().join("pods"), "prod", "web-1", "web").join("0.log");
    std::fs::write(&log, cri("GET /a") + &cri("POST /b") + &cri("GET /c")).unwrap();
    let out = run_ok(
        Command::new(bin)
            .args(["replay", &format!("--config.file={}", config.display())])
            .arg(&log),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let counted: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("log_pattern_matches_total{"))
        .collect();
    assert_eq!(
        counted,
        ["log_pattern_matches_total{rule=\"ns\",namespace=\"x-prod\",pod=\"web-1\",container=\"web\"} 2"],
        "{text}"
    );
}
