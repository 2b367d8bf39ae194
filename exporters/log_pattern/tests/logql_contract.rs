//! The LogQL contract (`tests/fixtures/logql/contract.yaml`): every case's query, line and
//! stream labels give Loki's verdict and labels, through the expression evaluator
//! (`Expr::evaluate`) and through the rule engine that counts lines in the exporter (the line
//! is counted exactly when Loki keeps it; the labels a rule extracts are Loki's).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use e2e_tests::Rng;
use log_pattern_exporter::config::Rule;
use log_pattern_exporter::format::Stream;
use log_pattern_exporter::logql::template::Template;
use log_pattern_exporter::logql::{parse, ERROR_DETAILS_LABEL, ERROR_LABEL};
use log_pattern_exporter::rules::Rules;
use log_pattern_exporter::sink::{Line, LineSink, UNWRAP_ERRORS};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    why: String,
    query: String,
    line: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    want: Option<BTreeMap<String, String>>,
    #[serde(default)]
    dropped: bool,
}

fn cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/logql/contract.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let cases: Vec<Case> = serde_yaml_ng::from_str(&text).unwrap();
    for c in &cases {
        assert!(
            c.dropped != c.want.is_some(),
            "{}: give exactly one of `want` and `dropped: true`",
            c.why
        );
    }
    cases
}

#[test]
fn evaluator_gives_lokis_verdict_and_labels() {
    let mut failures = Vec::new();
    for c in cases() {
        let expr = match parse(&c.query) {
            Ok(e) => e,
            Err(e) => {
                failures.push(format!("{}: {}: refused: {e}", c.why, c.query));
                continue;
            }
        };
        let labels: Vec<(String, String)> = c.labels.clone().into_iter().collect();
        let got = expr
            .evaluate(&labels, c.line.as_bytes())
            .map(|p| p.labels.into_iter().collect::<BTreeMap<_, _>>());
        if got != c.want {
            failures.push(format!(
                "{}: {} on {:?}\n    want {:?}\n    got  {:?}",
                c.why, c.query, c.line, c.want, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rule_engine_counts_what_loki_keeps() {
    let mut failures = Vec::new();
    for c in cases() {
        let expr = parse(&c.query).unwrap();
        let mut rule = Rule::new("contract", expr);
        // The rule extracts the parsed labels Loki reports (under their names before the
        // `_extracted` rename, as a rule's `labels` names them).
        // A stream label the pipeline replaced or removed (`| label_format app=...`) is
        // extracted too, under its own name, and its series label is Loki's value.
        let replaced: Vec<String> = match &c.want {
            Some(want) if !c.query.contains("| keep") => c
                .labels
                .iter()
                .filter(|(k, v)| *k != "stream" && want.get(*k) != Some(*v))
                .filter(|(k, _)| !want.contains_key(&format!("{k}_extracted")))
                .map(|(k, _)| k.clone())
                .collect(),
            _ => Vec::new(),
        };
        let mut extracted: Vec<String> = c
            .want
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .filter(|k| k != ERROR_LABEL && k != ERROR_DETAILS_LABEL && !c.labels.contains_key(k))
            .map(|k| match k.strip_suffix("_extracted") {
                Some(base) if c.labels.contains_key(base) => base.to_string(),
                _ => k,
            })
            .collect();
        extracted.extend(replaced.iter().cloned());
        if !c.query.contains("| keep") {
            rule.labels = extracted;
        }
        let mut rules = Rules::new(&[rule]).unwrap();
        let stream = match c.labels.get("stream").map(String::as_str) {
            Some("stdout") => Stream::Stdout,
            Some("stderr") => Stream::Stderr,
            _ => Stream::None,
        };
        let source: Vec<(String, String)> = c
            .labels
            .iter()
            .filter(|(k, _)| *k != "stream")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let id = rules.source(&source);
        rules.on_line(
            id,
            &Line {
                message: c.line.as_bytes(),
                stream,
                timestamp: None,
            },
        );
        let values = rules.values();
        let errors: u64 = values
            .iter()
            .filter(|v| v.metric.as_deref() == Some(UNWRAP_ERRORS))
            .map(|v| v.value)
            .sum();
        let counted: u64 = values
            .iter()
            .filter(|v| v.metric.as_deref() != Some(UNWRAP_ERRORS))
            .map(|v| v.value)
            .sum();
        let has_error = c.want.as_ref().is_some_and(|w| w.contains_key(ERROR_LABEL));
        let unwrap = c.query.contains("| unwrap");
        // An `| unwrap` rule measures a line without error and counts one with an error in
        // unwrap_errors_total; a counting rule counts every line Loki keeps.
        let want_count = u64::from(c.want.is_some() && !(unwrap && has_error));
        let want_errors = u64::from(unwrap && has_error);
        if errors != want_errors {
            failures.push(format!(
                "{}: {} on {:?}: {errors} unwrap error(s), want {want_errors}",
                c.why, c.query, c.line
            ));
        }
        if counted != want_count {
            failures.push(format!(
                "{}: {} on {:?}: counted {counted}, Loki {}",
                c.why,
                c.query,
                c.line,
                if c.dropped { "drops it" } else { "keeps it" }
            ));
            continue;
        }
        if let Some(want) = &c.want {
            for v in values.iter().filter(|v| v.value > 0) {
                for (k, val) in &v.labels {
                    let expected = want.get(k).map(String::as_str).unwrap_or("");
                    let is_source = source.iter().any(|(s, _)| s == k) && !replaced.contains(k);
                    if !is_source && val != expected {
                        failures.push(format!(
                            "{}: {}: series label {k}={val:?}, Loki {expected:?}",
                            c.why, c.query
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Mutated templates parse or are refused, and render or fail, without a panic or a
/// hang.
#[test]
fn mutated_line_format_templates_never_panic() {
    let seeds = [
        "{{ if eq .a \"x\" }}y{{ else if .n }}z{{ else }}w{{ end }}",
        "{{ printf \"%s=%5.2f %d %x %q %v %-3s %08.3f\" .a 3.14 1 2 .a . .a 2.5 }}",
        "{{ range $k, $v := . }}{{ $k }}={{ $v | upper }}{{ end }}",
        "{{- with .a -}}{{ . | trunc -2 }}{{ end }}{{/* c */}}",
        "{{ $x := (add 1 .n) }}{{ $x = div $x 2 }}{{ substr 1 3 .a }}{{ index . \"a\" 0 }}",
        "{{ regexReplaceAll \"(a+)\" .a \"${1}b\" | b64enc | b64dec | urlencode }}",
        "{{ round 1.5 0 0.4 }}{{ slice .a 1 }}{{ repeat 3 .a | indent 2 }}",
    ];
    let alphabet: Vec<char> = "{}.$|()\"`'%-=:0123456789abenx \\\n,*+".chars().collect();
    let data = vec![
        ("a".to_string(), "xaé".to_string()),
        ("n".to_string(), "4".to_string()),
    ];
    let mut rng = Rng::new(17);
    let (mut parsed, mut rendered) = (0, 0);
    for _ in 0..4000 {
        let mut c: Vec<char> = seeds[rng.below(seeds.len())].chars().collect();
        for _ in 0..=rng.below(4) {
            let i = rng.below(c.len() + 1);
            let ch = alphabet[rng.below(alphabet.len())];
            match rng.below(3) {
                0 if i < c.len() => {
                    c.remove(i);
                }
                1 if i < c.len() => c[i] = ch,
                _ => c.insert(i, ch),
            }
        }
        let t: String = c.into_iter().collect();
        if let Ok(tpl) = Template::parse(&t) {
            parsed += 1;
            if tpl.render(&data, "line").is_ok() {
                rendered += 1;
            }
        }
    }
    assert!(
        parsed > 100 && rendered > 100,
        "{parsed} parsed, {rendered} rendered"
    );
}
