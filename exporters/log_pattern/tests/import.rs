//! `import-loki-rules` on a sample Loki ruler file: the exporter rules load and count like the
//! Loki queries, the Prometheus rules pass `promtool check rules`, untranslatable rules are
//! reported one by one and appear in neither output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
    let minute = |k: usize| {
        let mut web_text = String::new();
        for i in 0..100 {
            let level = if k < 30 && i < 10 { "error" } else { "info" };
            web_text += &cri(&format!("level={level} msg=\"request {i}\""));
        }
        let api_text = if (10..25).contains(&k) {
            cri("GET https://admin:hunter2@db.internal/ 200")
        } else {
            cri("GET https://db.internal/ 200")
        };
        vec![(web.clone(), web_text), (api.clone(), api_text)]
    };
    // Loki: 10% errors over every 5m window from minute 1 to 29 (> 5% from minute 1, firing
    // once true for 10m); 0% from minute 35 on. Credentials in the 5m window from minute 10
    // to 28 (firing from 20), none from 29 on.
    let high = "    exp_alerts:\n    - exp_labels: {severity: page}\n      exp_annotations: {summary: High request latency}\n";
    let leak = "    exp_alerts:\n    - exp_labels: {severity: critical, pod: api-1}\n      exp_annotations: {message: \" is leaking http basic auth credentials.\"}\n";
    fires_and_resolves(
        d.path(),
        &rules,
        &[prom],
        50,
        minute,
        &[
            ("8m", "HighPercentageError", None),
            ("20m", "HighPercentageError", Some(high.into())),
            ("29m", "HighPercentageError", Some(high.into())),
            ("40m", "HighPercentageError", None),
            ("15m", "http-credentials-leaked", None),
            ("22m", "http-credentials-leaked", Some(leak.into())),
            ("27m", "http-credentials-leaked", Some(leak.into())),
            ("35m", "http-credentials-leaked", None),
        ],
    );
}

/// Appends `minute(k)`'s lines to their files for each minute k, reads the exporter's rule
/// counters after each minute with `replay` (the rules of `rules`), and runs `promtool test
/// rules` of `proms` over them: each case is (eval time, alert, the `exp_alerts` YAML
/// expected, none when the alert must not fire).
fn fires_and_resolves(
    dir: &Path,
    rules: &Path,
    proms: &[PathBuf],
    minutes: usize,
    minute: impl Fn(usize) -> Vec<(PathBuf, String)>,
    cases: &[(&str, &str, Option<String>)],
) {
    let read = |files: &[PathBuf], _lines: usize| {
        let out = run_ok(
            Command::new(BIN)
                .args(["replay", &format!("--config.file={}", rules.display())])
                .args(files),
        );
        String::from_utf8(out.stdout).unwrap()
    };
    counters_fire_and_resolve(dir, proms, minutes, minute, read, cases);
}

/// [`fires_and_resolves`] with the counters read by `read(files, lines written so far)`. A
/// minute without lines repeats the counters of the minute before; a series that appears at
/// minute k has no sample before.
fn counters_fire_and_resolve(
    dir: &Path,
    proms: &[PathBuf],
    minutes: usize,
    minute: impl Fn(usize) -> Vec<(PathBuf, String)>,
    mut read: impl FnMut(&[PathBuf], usize) -> String,
    cases: &[(&str, &str, Option<String>)],
) {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut lines = 0;
    let mut series: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    for k in 0..minutes {
        let new = minute(k);
        if new.is_empty() && k > 0 {
            for v in series.values_mut() {
                let last = *v.last().unwrap();
                v.push(last);
            }
            continue;
        }
        for (f, text) in new {
            append(&f, &text);
            lines += text.lines().count();
            if !files.contains(&f) {
                files.push(f);
            }
        }
        let text = read(&files, lines);
        for (name, v) in samples(&text) {
            if name.contains("{rule=\"") && name.split('{').next().unwrap().ends_with("_total") {
                let values = series.entry(name).or_insert_with(|| vec![None; k]);
                values.push(Some(v));
            }
        }
        assert!(
            series.values().all(|v| v.len() == k + 1),
            "a series vanished: {series:?}"
        );
    }
    let mut test = format!(
        "rule_files: [{}]\nevaluation_interval: 1m\ntests:\n- interval: 1m\n  input_series:\n",
        proms
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (name, values) in &series {
        let values: Vec<String> = values
            .iter()
            .map(|v| v.map_or("_".to_string(), |v| v.to_string()))
            .collect();
        test += &format!("  - series: '{name}'\n    values: '{}'\n", values.join(" "));
    }
    test += "  alert_rule_test:\n";
    for (t, alert, firing) in cases {
        test += &format!("  - eval_time: {t}\n    alertname: {alert}\n");
        test += firing.as_deref().unwrap_or("    exp_alerts: []\n");
    }
    let test_file = dir.join("loki_rules.test.yml");
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

/// A real ruler fixture (`tests/fixtures/loki_rules/DIR`, see SOURCE there) as Loki reads it:
/// `%%juju_topology%%` replaced by `topology` as the charm's library does, imported with
/// `args` (label maps, a config whose sources carry the log agent's labels).
struct Fixture {
    dir: &'static str,
    topology: &'static str,
    args: Vec<String>,
}

fn fixtures(config: &Path) -> Vec<Fixture> {
    let map = |m: &[&str]| m.iter().map(|m| format!("--label-map={m}")).collect();
    std::fs::write(
        config,
        "sources:\n- path: /var/log/github-runner-metrics.log\n  labels: {filename: /var/log/github-runner-metrics.log}\n",
    )
    .unwrap();
    vec![
        Fixture {
            dir: "canonical-loki-k8s-operator",
            topology: "",
            args: map(&["app=container", "env=namespace"]),
        },
        Fixture {
            dir: "canonical-haproxy-operator",
            topology: r#"juju_model="cos",juju_application="haproxy""#,
            args: map(&["juju_model=namespace", "juju_application=container"]),
        },
        Fixture {
            dir: "canonical-synapse-operator",
            topology: r#"juju_model="cos",juju_application="synapse""#,
            args: map(&[
                "juju_model=namespace",
                "juju_application=pod",
                "pebble_service=container",
            ]),
        },
        Fixture {
            dir: "canonical-github-runner-operator",
            topology: "",
            args: vec![format!("--config.file={}", config.display())],
        },
    ]
}

/// Imports every rule file of `fx` (each on its own, as Loki loads them) into `out`; returns
/// the report, the exporter rules of all files in one file, and the Prometheus rule files.
fn import_fixture(fx: &Fixture, out: &Path) -> (String, PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/loki_rules")
        .join(fx.dir);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("rule" | "rules")
            )
        })
        .collect();
    inputs.sort();
    std::fs::create_dir_all(out).unwrap();
    let (mut report, mut rules, mut proms) = (String::new(), String::from("rules:\n"), Vec::new());
    for input in inputs {
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&input)
            .unwrap()
            .replace("%%juju_topology%%", fx.topology);
        let loki = out.join(&name);
        std::fs::write(&loki, text).unwrap();
        let (r, p) = (
            out.join(format!("{name}.exporter.yml")),
            out.join(format!("{name}.prometheus.yml")),
        );
        let o = Command::new(BIN)
            .arg("import-loki-rules")
            .arg(&loki)
            .arg(format!("--output.rules={}", r.display()))
            .arg(format!("--output.prometheus={}", p.display()))
            .args(&fx.args)
            .output()
            .unwrap();
        let rep = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(matches!(o.status.code(), Some(0 | 2)), "{name}: {rep}");
        report += &rep;
        run_ok(Command::new("promtool").args(["check", "rules"]).arg(&p));
        // The files' rule lists in one exporter rule file (names are unique per fixture).
        let body = std::fs::read_to_string(&r).unwrap();
        for line in body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("rules:"))
        {
            rules += line;
            rules.push('\n');
        }
        proms.push(p);
    }
    let rules_file = out.join("exporter.yml");
    std::fs::write(&rules_file, rules).unwrap();
    (report, rules_file, proms)
}

/// The real ruler files: at least 80% of their hand-written rules translate; each refused
/// rule is listed with its reason.
#[test]
fn real_ruler_files_translate_at_least_80_percent() {
    let d = tempfile::tempdir().unwrap();
    let (mut translated, mut total) = (0, 0);
    for fx in fixtures(&d.path().join("config.yml")) {
        let (report, _, _) = import_fixture(&fx, &d.path().join(fx.dir));
        let ok = report.matches(": translated as rule").count();
        let refused: Vec<&str> = report
            .lines()
            .filter(|l| l.contains(": NOT translated: "))
            .collect();
        println!("{}: {ok} of {} rules translate", fx.dir, ok + refused.len());
        for r in &refused {
            println!("  refused: {r}");
        }
        translated += ok;
        total += ok + refused.len();
    }
    println!("all fixtures: {translated} of {total} rules translate");
    assert!(total >= 16, "{total}");
    assert!(translated * 5 >= total * 4, "{translated} of {total}");
}

/// The expected `exp_alerts` of one per-stream alert of the pod `ns/pod/container`.
fn stream_alert(
    rule: &str,
    severity: &str,
    (ns, pod, c): (&str, &str, &str),
    annotations: &str,
) -> String {
    format!(
        "    exp_alerts:\n    - exp_labels: {{severity: {severity}, rule: {rule}, namespace: {ns}, pod: {pod}, container: {c}}}\n      exp_annotations: {annotations}\n"
    )
}

/// haproxy-operator's hacluster rules (`count_over_time(... |~ ... [5m]) > 0`, for 0s) over
/// a pacemaker log: each alert fires in the minutes where Loki's 5m window holds one of its
/// lines and resolves when none is left.
#[test]
fn haproxy_ruler_files_fire_and_resolve_as_in_loki() {
    let d = tempfile::tempdir().unwrap();
    let fx = fixtures(&d.path().join("config.yml")).remove(1);
    let (report, rules, proms) = import_fixture(&fx, &d.path().join("import"));
    assert_eq!(
        report.matches(": translated as rule").count(),
        4,
        "{report}"
    );
    let log = container_dir(&d.path().join("pods"), "cos", "haproxy-0", "haproxy").join("0.log");
    // Minutes 5-6 quorum lost, 10-11 a node lost, 20-21 the VIP started, 30-31 stopped.
    let minute = |k: usize| {
        let mut text =
            cri("pacemaker-controld[812]: notice: State transition S_IDLE -> S_POLICY_ENGINE");
        text += &cri(match k {
            5 | 6 => "pacemaker-schedulerd[811]: warning: resource management disabled due to lack of quorum",
            10 | 11 => "pacemaker-controld[812]: notice: Node node-2 is no longer a peer",
            20 | 21 => "IPaddr2(res_haproxy_ingress_vip)[901]: INFO: Bringing device ens3 up",
            30 | 31 => "pacemaker-controld[812]: notice: Stopping res_haproxy_ingress_vip",
            _ => "pacemaker-based[809]: notice: Local CIB 0.42.7 differs",
        });
        vec![(log.clone(), text)]
    };
    let at = ("cos", "haproxy-0", "haproxy");
    let quorum = stream_alert(
        "haproxy_no_quorum_error",
        "critical",
        at,
        "{summary: Resource Management was disable on 1 or more node due to lack of quorum}",
    );
    let lost = stream_alert(
        "haproxy_node_lost_error",
        "critical",
        at,
        "{summary: Node  was lost}",
    );
    let started = stream_alert(
        "haproxy_vip_started",
        "warning",
        at,
        "{summary: Haproxy VIP resource started}",
    );
    let stopped = stream_alert(
        "haproxy_vip_stopped",
        "warning",
        at,
        "{summary: Haproxy VIP resource stopped}",
    );
    fires_and_resolves(
        d.path(),
        &rules,
        &proms,
        40,
        minute,
        &[
            ("3m", "HaproxyNoQuorumError", None),
            ("7m", "HaproxyNoQuorumError", Some(quorum.clone())),
            ("9m", "HaproxyNoQuorumError", Some(quorum)),
            ("14m", "HaproxyNoQuorumError", None),
            ("8m", "HaproxyNodeLostError", None),
            ("12m", "HaproxyNodeLostError", Some(lost)),
            ("18m", "HaproxyNodeLostError", None),
            ("18m", "HaproxyVipStarted", None),
            ("23m", "HaproxyVipStarted", Some(started)),
            ("28m", "HaproxyVipStarted", None),
            ("28m", "HaproxyVipStopped", None),
            ("34m", "HaproxyVipStopped", Some(stopped)),
            ("39m", "HaproxyVipStopped", None),
        ],
    );
}

/// synapse-operator's rules (`rate({..., pebble_service=S} |= "..." [5m]) > 0`, for 5m), one
/// container per Pebble service: each alert is pending for the first 5 minutes of its error
/// lines, fires while Loki's window still holds one after that, and resolves.
#[test]
fn synapse_ruler_files_fire_and_resolve_as_in_loki() {
    let d = tempfile::tempdir().unwrap();
    let fx = fixtures(&d.path().join("config.yml")).remove(2);
    let (report, rules, proms) = import_fixture(&fx, &d.path().join("import"));
    assert_eq!(
        report.matches(": translated as rule").count(),
        4,
        "{report}"
    );
    let pods = d.path().join("pods");
    let log = |c: &str| container_dir(&pods, "cos", "synapse", c).join("0.log");
    let (synapse, mjolnir, moderation, nginx) = (
        log("synapse"),
        log("mjolnir"),
        log("moderation"),
        log("synapse-nginx"),
    );
    // Errors of synapse in minutes 10-19, mjolnir 20-29, moderation 5-14, nginx 30-39.
    let minute = |k: usize| {
        let pick = |range: std::ops::Range<usize>, bad: &str, good: &str| {
            cri(if range.contains(&k) { bad } else { good })
        };
        vec![
            (synapse.clone(), pick(10..20, "2024-01-15 10:00:00,000 - synapse.http.server - 124 - ERROR - GET-42 - Failed handle request", "2024-01-15 10:00:00,000 - synapse.access.http.8008 - 473 - INFO - GET-41 - 200")),
            (mjolnir.clone(), pick(20..30, "[2024-01-15 10:00:00.000] [ERROR] [Mjolnir@startup] Failed to sync ban list", "[2024-01-15 10:00:00.000] [INFO] [Mjolnir] Syncing lists")),
            (moderation.clone(), pick(5..15, "[2024-01-15 10:00:00.000] [ERROR] [moderation] Request failed", "[2024-01-15 10:00:00.000] [INFO] [moderation] Ready")),
            (nginx.clone(), pick(30..40, "2024/01/15 10:00:00 [emerg] 1#1: bind() to 0.0.0.0:8080 failed (98: Address in use)", "2024/01/15 10:00:00 [notice] 1#1: start worker processes")),
        ]
    };
    let at = |c: &'static str| ("cos", "synapse", c);
    let error = stream_alert("synapse_error_found", "error", at("synapse"), "{summary: Synapse errors detected., description: This alert is triggered when Synapse logs an error level message in the last 5 minutes.}");
    let mj = stream_alert("synapse_mjolnir_error_found", "error", at("mjolnir"), "{summary: Synapse Mjolnir error detected., description: This alert is triggered when Synapse Mjolnir logs an error level message in the last 5 minutes.}");
    let md = stream_alert("synapse_moderation_error_found", "error", at("moderation"), "{summary: Synapse Moderation error detected., description: This alert is triggered when Moderation logs an error level message in the last 5 minutes.}");
    let ng = stream_alert("synapse_nginxemerg_found", "critical", at("synapse-nginx"), "{summary: Synapse NGINX emerg detected., description: This alert is triggered when Synapse NGINX logs an emerg level message in the last 5 minutes.}");
    fires_and_resolves(
        d.path(),
        &rules,
        &proms,
        50,
        minute,
        &[
            ("12m", "SynapseErrorFound", None),
            ("17m", "SynapseErrorFound", Some(error.clone())),
            ("22m", "SynapseErrorFound", Some(error)),
            ("30m", "SynapseErrorFound", None),
            ("23m", "SynapseMjolnirErrorFound", None),
            ("27m", "SynapseMjolnirErrorFound", Some(mj.clone())),
            ("32m", "SynapseMjolnirErrorFound", Some(mj)),
            ("40m", "SynapseMjolnirErrorFound", None),
            ("8m", "SynapseModerationErrorFound", None),
            ("12m", "SynapseModerationErrorFound", Some(md.clone())),
            ("17m", "SynapseModerationErrorFound", Some(md)),
            ("25m", "SynapseModerationErrorFound", None),
            ("33m", "SynapseNGINXEmergFound", None),
            ("37m", "SynapseNGINXEmergFound", Some(ng.clone())),
            ("42m", "SynapseNGINXEmergFound", Some(ng)),
            ("49m", "SynapseNGINXEmergFound", None),
        ],
    );
}

/// github-runner-operator's translated rules over its JSON metrics log, read by the running
/// exporter from a source whose `filename` label is the one Loki's agent sets: the queue
/// idle-time average, the repo-policy 4xx ratio, the per-stream 5xx and crashed-runner alerts
/// each fire and resolve where Loki's evaluation of the same lines does.
#[test]
fn github_runner_ruler_files_fire_and_resolve_as_in_loki() {
    let d = tempfile::tempdir().unwrap();
    let fx = fixtures(&d.path().join("config.yml")).remove(3);
    let (report, rules, proms) = import_fixture(&fx, &d.path().join("import"));
    assert_eq!(
        report.matches(": translated as rule").count(),
        4,
        "{report}"
    );
    let log = d.path().join("github-runner-metrics.log");
    std::fs::write(&log, "").unwrap();
    let config = d.path().join("exporter.yml");
    std::fs::write(
        &config,
        format!(
            "{}start_at: beginning\nsources:\n- path: {}\n  labels: {{filename: /var/log/github-runner-metrics.log}}\n",
            std::fs::read_to_string(&rules).unwrap(),
            log.display()
        ),
    )
    .unwrap();
    let pods = d.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let exp = Exporter::start(
        d.path(),
        &args(&pods, &d.path().join("state.json"), &config, &[]),
    );
    let read = |_: &[PathBuf], lines: usize| {
        let mut last = String::new();
        let ok = e2e_tests::wait_until(
            std::time::Duration::from_secs(20),
            std::time::Duration::from_millis(10),
            || {
                last = exp.scrape();
                samples(&last)
                    .iter()
                    .filter(|(k, _)| k.starts_with("log_pattern_lines_read_total"))
                    .map(|(_, v)| v)
                    .sum::<f64>()
                    >= lines as f64
            },
        );
        assert!(ok, "{lines} lines not read: {last}\n{}", exp.logs());
        last
    };
    // A runner starts every 10 minutes (idle 600 s, 60 s in minutes 60-219) and stops at
    // minute 5 of each 10: the repo-policy check fails with 403 at the stops of minutes
    // 5-235, a 503 at minute 1. A reconciliation at minute 3 of each 10 counts 3 crashed
    // runners in minutes 103-163, else none.
    let start = |idle: u32| {
        format!("{{\"event\": \"runner_start\", \"flavor\": \"small\", \"idle\": {idle}, \"queue_duration\": 30}}\n")
    };
    let stop = |status: &str, code: u32| {
        format!("{{\"event\": \"runner_stop\", \"flavor\": \"small\", \"status\": \"{status}\", \"status_info\": {{\"code\": {code}}}, \"repo\": \"canonical/repo-x\"}}\n")
    };
    let minute = |k: usize| -> Vec<(PathBuf, String)> {
        let text = match k % 10 {
            0 => start(if (60..220).contains(&k) { 60 } else { 600 }),
            3 => format!(
                "{{\"event\": \"reconciliation\", \"flavor\": \"small\", \"crashed_runners\": {}, \"idle_runners\": 2}}\n",
                if (103..=163).contains(&k) { 3 } else { 0 }
            ),
            1 if k == 1 => stop("repo-policy-check-failure", 503),
            5 if k <= 235 => stop("repo-policy-check-failure", 403),
            5 => stop("normal", 200),
            _ => String::new(),
        };
        if text.is_empty() {
            Vec::new()
        } else {
            vec![(log.clone(), text)]
        }
    };
    // Loki: the 1h idle average is below 300 s from minute 90 to 239 (firing after 2h, from
    // 210); the 10m 4xx share is 1 (> 0.5) from minute 11 (the 503 stop at 1 halves it
    // before) to 244 (firing after 3h, from 191); the 503 is in the 1h window from minute 1
    // to 60. The 10m sum of crashed runners is 3 (> 2) from minute 103 to 172 (firing after
    // 15m, from 118).
    let idle = "    exp_alerts:\n    - exp_labels: {severity: high, type: runner-capacity, flavor: small}\n      exp_annotations: {description: 'Idle time for application \"small\" is on average smaller than 5 minutes.', summary: 'Idle time for application \"small\" is too short'}\n".to_string();
    let ratio = "    exp_alerts:\n    - exp_labels: {severity: high, type: runner-failure, filename: /var/log/github-runner-metrics.log}\n      exp_annotations: {description: More than 50 % of jobs have failed the repo-policy check (4xx status code), summary: Too many repo-policy check failures}\n".to_string();
    let server = "    exp_alerts:\n    - exp_labels: {severity: high, type: runner-failure, rule: repo_policy_server_error, filename: /var/log/github-runner-metrics.log, event: runner_stop, status: repo-policy-check-failure, repo: canonical/repo-x, http_code: \"503\"}\n      exp_annotations: {description: A repo-policy server error (503) was encountered in a runner in unit  and repository canonical/repo-x., summary: Repo-policy server error in unit .}\n".to_string();
    let crashed = "    exp_alerts:\n    - exp_labels: {severity: high, type: runner-failure, rule: crashed_runner, filename: /var/log/github-runner-metrics.log, event: reconciliation}\n      exp_annotations: {summary: A runner in unit  crashed.}\n".to_string();
    counters_fire_and_resolve(
        d.path(),
        &proms,
        250,
        minute,
        read,
        &[
            ("85m", "Short idle time", None),
            ("200m", "Short idle time", None),
            ("215m", "Short idle time", Some(idle.clone())),
            ("235m", "Short idle time", Some(idle)),
            ("245m", "Short idle time", None),
            ("185m", "Repo-policy check failures", None),
            ("200m", "Repo-policy check failures", Some(ratio.clone())),
            ("240m", "Repo-policy check failures", Some(ratio)),
            ("248m", "Repo-policy check failures", None),
            ("0m", "Repo-policy server error", None),
            ("30m", "Repo-policy server error", Some(server.clone())),
            ("58m", "Repo-policy server error", Some(server)),
            ("65m", "Repo-policy server error", None),
            ("100m", "Crashed runner", None),
            ("110m", "Crashed runner", None),
            ("125m", "Crashed runner", Some(crashed.clone())),
            ("170m", "Crashed runner", Some(crashed)),
            ("178m", "Crashed runner", None),
        ],
    );
}
