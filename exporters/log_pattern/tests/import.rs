//! `import-loki-rules` on a sample Loki ruler file: the exporter rules load and count like the
//! Loki queries, the Prometheus rules pass `promtool check rules`, untranslatable rules are
//! reported one by one and appear in neither output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use e2e_tests::{run_ok, samples};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_log_pattern_exporter");

#[test]
fn imports_a_loki_rule_file() {
    let d = tempfile::tempdir().unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loki/rules.yml");
    let rules = d.path().join("rules.yml");
    let prom = d.path().join("prometheus.yml");
    let out = Command::new(BIN)
        .arg("import-loki-rules")
        .arg(&input)
        .arg(format!("--output.rules={}", rules.display()))
        .arg(format!("--output.prometheus={}", prom.display()))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "some rules are untranslatable: {report}"
    );
    for want in [
        "ruler-test/record namespace:reconciler_errors:rate5m: translated as rule namespace_reconciler_errors_rate5m",
        "ruler-test/alert NovaErrorsHigh: translated as rule nova_errors_high",
        "ruler-test/record stream:oom:rate1m: translated as rule stream_oom_rate1m",
        "ruler-test/record stream:oom:rate1m: warning: no source carries label \"job\"",
        "ruler-test/record namespace:error_ratio:rate5m: translated as rules namespace_error_ratio_rate5m, namespace_error_ratio_rate5m_2",
        "ruler-test/alert BusiestContainerErrors: translated as rule busiest_container_errors (approximation: count_over_time as increase() (extrapolated over the range); streams are the exporter's sources (files))",
        "ruler-test/alert HeartbeatMissing: translated as rule heartbeat_missing",
        "ruler-test/record errors:or_zero: translated as rule errors_or_zero",
        "untranslatable/record unwrap:sum: translated as rule unwrap_sum (approximation: sum_over_time as increase() of a running sum (extrapolated over the range))",
        "untranslatable/record p99:latency: NOT translated",
        "untranslatable/record json:by:level: translated as rule json_by_level (approximation: grouping labels no source carries are taken from the parser stage)",
        "untranslatable/record bytes: translated as rule bytes (approximation: bytes counted by a label_format/unwrap rule",
        "1 rule(s) not translated",
    ] {
        assert!(report.contains(want), "missing {want:?} in:\n{report}");
    }
    assert!(
        !report.contains("NovaErrorsHigh: warning"),
        "namespace and container are pod log labels: {report}"
    );
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let prom_text = std::fs::read_to_string(&prom).unwrap();
    for skipped in ["p99", "latency"] {
        assert!(!rules_text.contains(skipped), "{rules_text}");
        assert!(!prom_text.contains(skipped), "{prom_text}");
    }
    assert!(
        prom_text.contains(
            "expr: sum by (namespace) (rate(log_pattern_matches_total{rule=\"namespace_reconciler_errors_rate5m\"}[5m]))"
        ),
        "{prom_text}"
    );
    assert!(
        prom_text.contains("sum by (container) (increase(log_pattern_matches_total{rule=\"nova_errors_high\"}[10m])) > 5"),
        "{prom_text}"
    );
    for want in [
        "sum by (namespace) (rate(log_pattern_matches_total{rule=\"namespace_error_ratio_rate5m\"}[5m])) / sum by (namespace) (rate(log_pattern_matches_total{rule=\"namespace_error_ratio_rate5m_2\"}[5m]))",
        "max by (namespace) ((increase(log_pattern_matches_total{rule=\"busiest_container_errors\"}[10m]) > 0)) > 0",
        "(((sum(increase(log_pattern_matches_total{rule=\"heartbeat_missing\"}[15m])) == 0) + 1) or absent(log_pattern_matches_total{rule=\"heartbeat_missing\"}))",
        "sum(rate(log_pattern_matches_total{rule=\"errors_or_zero\"}[5m])) or vector(0)",
    ] {
        assert!(prom_text.contains(want), "missing {want:?} in:\n{prom_text}");
    }
    assert!(
        rules_text.contains("name: json_by_level\n  expr: '{app=\"a\"} | json'\n  keep_labels: []\n  labels:\n  - level"),
        "{rules_text}"
    );
    assert!(prom_text.contains("team: platform"), "{prom_text}");
    assert!(prom_text.contains("for: 10m"), "{prom_text}");

    // The Prometheus rules are valid for promtool.
    run_ok(Command::new("promtool").args(["check", "rules"]).arg(&prom));

    // The exporter rules load and count what the Loki queries select.
    let pods = d.path().join("pods");
    let a = container_dir(&pods, "ruler-test", "op-1", "manager").join("0.log");
    std::fs::write(
        &a,
        cri("E0115 \"Reconciler error\" err=x")
            + &cri("Reconciled")
            + &cri("Reconciler error again"),
    )
    .unwrap();
    let n = container_dir(&pods, "openstack", "nova-api-1", "nova-api").join("0.log");
    std::fs::write(
        &n,
        cri("2024 7 ERROR nova.api x")
            + &cri("2024 7 ERROR nova.api retrying")
            + &cri("2024 7 INFO nova.api"),
    )
    .unwrap();
    let out = run_ok(
        Command::new(BIN)
            .args(["replay", &format!("--config.file={}", rules.display())])
            .args([&a, &n]),
    );
    let got = String::from_utf8(out.stdout).unwrap();
    let s = samples(&got);
    assert_eq!(
        s.get("log_pattern_matches_total{rule=\"namespace_reconciler_errors_rate5m\",namespace=\"ruler-test\"}"),
        Some(&2.0),
        "{got}"
    );
    assert_eq!(
        s.get("log_pattern_matches_total{rule=\"nova_errors_high\",container=\"nova-api\"}"),
        Some(&1.0),
        "{got}"
    );
}

/// Selector labels a configured source carries are no warning; a file that cannot be read or
/// parsed writes nothing (exit 1), and no temporary file is left behind.
#[test]
fn config_sources_and_all_or_nothing() {
    let d = tempfile::tempdir().unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loki/rules.yml");
    let config = d.path().join("config.yml");
    std::fs::write(
        &config,
        "sources:\n- path: /var/log/{job}/*.log\n- path: /var/log/x.log\n  labels: {app: a}\n",
    )
    .unwrap();
    let rules = d.path().join("rules.yml");
    let prom = d.path().join("prometheus.yml");
    let run = |input: &Path| {
        Command::new(BIN)
            .arg("import-loki-rules")
            .arg(input)
            .arg(format!("--output.rules={}", rules.display()))
            .arg(format!("--output.prometheus={}", prom.display()))
            .arg(format!("--config.file={}", config.display()))
            .output()
            .unwrap()
    };
    let out = run(&input);
    let report = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(!report.contains("warning"), "{report}");
    assert!(rules.exists() && prom.exists());

    std::fs::remove_file(&rules).unwrap();
    std::fs::remove_file(&prom).unwrap();
    let bad = d.path().join("bad.yml");
    std::fs::write(
        &bad,
        "groups:\n  - name: x\n    rules: [ {record: a, expr: 1\n",
    )
    .unwrap();
    let out = run(&bad);
    let report = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("bad.yml:"),
        "the error names the file: {report}"
    );
    assert!(!rules.exists() && !prom.exists(), "nothing written");
    // Stream label names mapped to the sources' names: no warning, the selector uses them.
    let mapped = |maps: &[&str]| {
        Command::new(BIN)
            .arg("import-loki-rules")
            .arg(&input)
            .arg(format!("--output.rules={}", rules.display()))
            .arg(format!("--output.prometheus={}", prom.display()))
            .args(maps.iter().map(|m| format!("--label-map={m}")))
            .output()
            .unwrap()
    };
    let out = mapped(&["job=container", "app=container"]);
    let report = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(!report.contains("warning"), "{report}");
    assert!(report.contains("label job is container here"), "{report}");
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    assert!(rules_text.contains("{container=`kernel`}"), "{rules_text}");
    std::fs::remove_file(&rules).unwrap();
    std::fs::remove_file(&prom).unwrap();
    let out = mapped(&["job"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected FROM=TO"));
    assert!(!rules.exists() && !prom.exists(), "nothing written");
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `bytes_over_time` and `sum_over_time` become counters of their own that add, over the
/// lines Loki's query selects, each line's bytes and each unwrapped value; a
/// `quantile_over_time` with declared buckets a histogram of the values.
#[test]
fn byte_and_unwrap_sums_count_what_loki_sums() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("loki.yml");
    std::fs::write(
        &input,
        r#"groups:
  - name: sums
    rules:
      - record: ns:bytes:1h
        expr: sum by (namespace) (bytes_over_time({namespace="ns"} |= "GET" [1h]))
      - record: ns:took:1h
        expr: sum by (namespace) (sum_over_time({namespace="ns"} | logfmt | unwrap took | __error__="" [1h]))
      - record: ns:took:p90
        expr: quantile_over_time(0.9, {namespace="ns"} | logfmt | unwrap took | __error__="" [1h]) by (namespace)
        annotations:
          log_pattern_buckets: "1, 2, 5"
"#,
    )
    .unwrap();
    let rules = d.path().join("rules.yml");
    let prom = d.path().join("prometheus.yml");
    run_ok(
        Command::new(BIN)
            .arg("import-loki-rules")
            .arg(&input)
            .arg(format!("--output.rules={}", rules.display()))
            .arg(format!("--output.prometheus={}", prom.display())),
    );
    run_ok(Command::new("promtool").args(["check", "rules"]).arg(&prom));
    let lines = [
        "GET /a took=1.5",
        "POST /b took=2",
        "GET /c took=x",
        "GET /d took=0.25",
    ];
    let pods = d.path().join("pods");
    let f = container_dir(&pods, "ns", "web-1", "web").join("0.log");
    std::fs::write(&f, lines.iter().map(|l| cri(l)).collect::<String>()).unwrap();
    let out = run_ok(
        Command::new(BIN)
            .args(["replay", &format!("--config.file={}", rules.display())])
            .arg(&f),
    );
    let got = String::from_utf8(out.stdout).unwrap();
    let s = samples(&got);
    let bytes: usize = lines
        .iter()
        .filter(|l| l.contains("GET"))
        .map(|l| l.len())
        .sum();
    assert_eq!(
        s.get("log_pattern_ns_bytes_1h_bytes_total{rule=\"ns_bytes_1h\",namespace=\"ns\"}"),
        Some(&(bytes as f64)),
        "{got}"
    );
    // took=x carries __error__ and is filtered out, as in the Loki query.
    assert_eq!(
        s.get("log_pattern_ns_took_1h_sum_total{rule=\"ns_took_1h\",namespace=\"ns\"}"),
        Some(&3.75),
        "{got}"
    );
    assert_eq!(
        s.get("log_pattern_ns_took_p90_hist_count{rule=\"ns_took_p90\",namespace=\"ns\"}"),
        Some(&3.0),
        "{got}"
    );
    assert_eq!(
        s.get(
            "log_pattern_ns_took_p90_hist_bucket{le=\"1.0\",rule=\"ns_took_p90\",namespace=\"ns\"}"
        ),
        Some(&1.0),
        "{got}"
    );
    let prom_text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        prom_text.contains("sum by (namespace) (increase(log_pattern_ns_bytes_1h_bytes_total{rule=\"ns_bytes_1h\"}[1h]))"),
        "{prom_text}"
    );
    assert!(
        prom_text.contains("(histogram_quantile(0.9, sum by (le, namespace) (rate(log_pattern_ns_took_p90_hist_bucket{rule=\"ns_took_p90\"}[1h]))) >= -Inf)"),
        "{prom_text}"
    );
    assert!(!prom_text.contains("log_pattern_buckets"), "{prom_text}");
}

/// A real Loki ruler file (`tests/fixtures/loki_rules/`, Apache-2.0, see SOURCE there): every
/// hand-written rule translates, and `promtool test rules` over the exporter's counters, read
/// minute by minute while the lines arrive, shows each alert firing and resolving where Loki's
/// evaluation of the same lines fires and resolves (checked away from the minute a window
/// edge falls on, where a scraped counter and Loki's line timestamps can differ by a minute).
#[test]
fn real_ruler_file_alerts_fire_and_resolve_as_in_loki() {
    let d = tempfile::tempdir().unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/loki_rules/canonical-loki-k8s-operator/alerting.rule");
    let rules = d.path().join("rules.yml");
    let prom = d.path().join("prometheus.yml");
    let out = Command::new(BIN)
        .arg("import-loki-rules")
        .arg(&input)
        .arg(format!("--output.rules={}", rules.display()))
        .arg(format!("--output.prometheus={}", prom.display()))
        .args(["--label-map=app=container", "--label-map=env=namespace"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "every rule translates: {report}"
    );
    assert_eq!(
        report.matches(": translated as rule").count(),
        2,
        "{report}"
    );

    // Minute k: 100 lines of web-1 (container foo, namespace production), 10 of them errors
    // in minutes 0-29; one line of api-1 (namespace prod), leaking credentials in minutes
    // 10-24.
    let pods = d.path().join("pods");
    let web = container_dir(&pods, "production", "web-1", "foo").join("0.log");
    let api = container_dir(&pods, "prod", "api-1", "api").join("0.log");
    let (mut web_text, mut api_text) = (String::new(), String::new());
    let mut series: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    const MINUTES: usize = 50;
    for k in 0..MINUTES {
        for i in 0..100 {
            let level = if k < 30 && i < 10 { "error" } else { "info" };
            web_text += &cri(&format!("level={level} msg=\"request {i}\""));
        }
        api_text += &if (10..25).contains(&k) {
            cri("GET https://admin:hunter2@db.internal/ 200")
        } else {
            cri("GET https://db.internal/ 200")
        };
        std::fs::write(&web, &web_text).unwrap();
        std::fs::write(&api, &api_text).unwrap();
        let out = run_ok(
            Command::new(BIN)
                .args(["replay", &format!("--config.file={}", rules.display())])
                .args([&web, &api]),
        );
        let text = String::from_utf8(out.stdout).unwrap();
        for (name, v) in samples(&text) {
            if name.starts_with("log_pattern_matches_total{") {
                series.entry(name).or_default().push(v);
            }
        }
    }
    assert!(series.values().all(|v| v.len() == MINUTES), "{series:?}");
    let mut test = format!(
        "rule_files: [{}]\nevaluation_interval: 1m\ntests:\n- interval: 1m\n  input_series:\n",
        prom.display()
    );
    for (name, values) in &series {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        test += &format!("  - series: '{name}'\n    values: '{}'\n", values.join(" "));
    }
    // Loki: 10% errors over every 5m window from minute 1 to 29 (> 5% from minute 1, firing
    // once true for 10m); 0% from minute 35 on. Credentials in the 5m window from minute 10
    // to 28 (firing from 20), none from 29 on.
    let high = "    exp_alerts:\n    - exp_labels: {severity: page}\n      exp_annotations: {summary: High request latency}\n";
    let leak = "    exp_alerts:\n    - exp_labels: {severity: critical, pod: api-1}\n      exp_annotations: {message: \" is leaking http basic auth credentials.\"}\n";
    test += "  alert_rule_test:\n";
    for (t, alert, firing) in [
        ("8m", "HighPercentageError", None),
        ("20m", "HighPercentageError", Some(high)),
        ("29m", "HighPercentageError", Some(high)),
        ("40m", "HighPercentageError", None),
        ("15m", "http-credentials-leaked", None),
        ("22m", "http-credentials-leaked", Some(leak)),
        ("27m", "http-credentials-leaked", Some(leak)),
        ("35m", "http-credentials-leaked", None),
    ] {
        test += &format!("  - eval_time: {t}\n    alertname: {alert}\n");
        test += firing.unwrap_or("    exp_alerts: []\n");
    }
    let test_file = d.path().join("loki_rules.test.yml");
    std::fs::write(&test_file, &test).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&test_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
