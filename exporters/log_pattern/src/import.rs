//! `import-loki-rules FILE`: Loki ruler rules to this exporter's rules plus Prometheus rules.
//!
//! A Loki recording or alerting rule such as
//! `sum by (namespace) (rate({app="x"} |= "Reconciler error" [5m])) > 0` becomes (a) an
//! exporter rule counting the lines of the log query (`expr: '{app="x"} |= "Reconciler
//! error"'`, keeping only the grouping labels) and (b) a Prometheus rule with the original
//! `record`/`alert` name, labels and annotations over the exporter's counter:
//! `sum by (namespace) (rate(log_pattern_matches_total{rule="..."}[5m])) > 0`.
//! `count_over_time` becomes `increase` (extrapolated, as Prometheus does). Translated are
//! `[sum|min|max|avg [by (labels)]] (rate|count_over_time)(LOG QUERY [RANGE]) [CMP NUMBER]`
//! with a log query this exporter supports; every other rule is reported with the reason and
//! left out of both outputs, so nothing wrong is written.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;

#[derive(Debug, Deserialize)]
struct LokiFile {
    groups: Vec<LokiGroup>,
}

#[derive(Debug, Deserialize)]
struct LokiGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    rules: Vec<LokiRule>,
}

#[derive(Debug, Deserialize)]
struct LokiRule {
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    alert: Option<String>,
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct OutRules {
    rules: Vec<OutRule>,
}

#[derive(Debug, Serialize)]
struct OutRule {
    name: String,
    expr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_labels: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
struct PromFile {
    groups: Vec<PromGroup>,
}

#[derive(Debug, Serialize)]
struct PromGroup {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    rules: Vec<PromRule>,
}

#[derive(Debug, Serialize)]
struct PromRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<String>,
    expr: String,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    for_: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// The result of an import: both files' text and one report line per Loki rule.
#[derive(Debug)]
pub struct Import {
    pub rules_yaml: String,
    pub prometheus_yaml: String,
    pub report: Vec<String>,
    pub skipped: usize,
}

/// What the translatable shape of a Loki expression holds.
#[derive(Debug, PartialEq)]
struct Shape {
    agg: Option<String>,
    by: Option<Vec<String>>,
    func: String,
    query: String,
    range: String,
    cmp: String,
}

fn shape(expr: &str) -> Result<Shape, String> {
    let unsupported = || {
        "only [sum|min|max|avg [by (labels)]] (rate|count_over_time)(LOG QUERY [RANGE]) [CMP NUMBER] can be translated".to_string()
    };
    let re = |s: &str| regex::Regex::new(s).map_err(|e| e.to_string());
    let text = expr.trim();
    // A trailing comparison with a number.
    let cmp_re = re(r"(?s)^(.*\))\s*(>=|<=|==|!=|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)$")?;
    let (body, cmp) = match cmp_re.captures(text) {
        Some(c) => (c[1].trim().to_string(), format!(" {} {}", &c[2], &c[3])),
        None => (text.to_string(), String::new()),
    };
    let agg_re =
        re(r"(?s)^(sum|min|max|avg)\s*(?:by\s*\(([^)]*)\))?\s*\((.*?)\)\s*(?:by\s*\(([^)]*)\))?$")?;
    let (agg, by, inner) = match agg_re.captures(&body) {
        Some(c) => {
            let by = c.get(2).or(c.get(4)).map(|m| {
                m.as_str()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            });
            (Some(c[1].to_string()), by, c[3].trim().to_string())
        }
        None => (None, None, body.clone()),
    };
    let func_re = re(r"(?s)^(rate|count_over_time)\s*\((.*)\[\s*([0-9]+[smhdwy])\s*\]\s*\)$")?;
    let c = func_re.captures(&inner).ok_or_else(unsupported)?;
    let query = c[2].trim().to_string();
    crate::logql::parse(&query)
        .map_err(|e| format!("log query {query:?}: {e}; {}", unsupported()))?;
    Ok(Shape {
        agg,
        by,
        func: c[1].to_string(),
        query,
        range: c[3].to_string(),
        cmp,
    })
}

fn rule_name(base: &str, taken: &mut std::collections::HashSet<String>) -> String {
    // CamelCase alert names become snake_case; anything else not [a-z0-9] becomes `_`.
    let mut name = String::new();
    let mut prev_lower = false;
    for c in base.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            name.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        name.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        });
    }
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "loki_");
    }
    let mut candidate = name.clone();
    let mut i = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{name}_{i}");
        i += 1;
    }
    candidate
}

/// Translates the Loki rule file text.
pub fn translate(path: &Path, text: &str) -> Result<Import, Error> {
    let file: LokiFile = common::config::parse_yaml(path, text)?;
    let mut out_rules = Vec::new();
    let mut groups = Vec::new();
    let mut report = Vec::new();
    let mut skipped = 0;
    let mut taken = std::collections::HashSet::new();
    for g in &file.groups {
        let mut prom = Vec::new();
        for r in &g.rules {
            let title = match (&r.record, &r.alert) {
                (Some(n), _) => format!("{}/record {n}", g.name),
                (None, Some(n)) => format!("{}/alert {n}", g.name),
                (None, None) => format!("{}/(unnamed)", g.name),
            };
            let result = (|| -> Result<(OutRule, PromRule), String> {
                let base = r
                    .record
                    .as_deref()
                    .or(r.alert.as_deref())
                    .ok_or("a rule needs `record` or `alert`")?;
                let s = shape(&r.expr)?;
                let parsed = crate::logql::parse(&s.query)
                    .map_err(|e| format!("log query {:?}: {e}", s.query))?;
                if parsed.parser.is_some() && s.by.as_ref().is_some_and(|b| !b.is_empty()) {
                    return Err("grouping by labels of a parser stage cannot be translated".into());
                }
                let name = rule_name(base, &mut taken);
                let keep = match (&s.agg, &s.by) {
                    (Some(_), Some(by)) => Some(by.clone()),
                    (Some(_), None) => Some(Vec::new()),
                    (None, _) => None,
                };
                let fun = if s.func == "rate" { "rate" } else { "increase" };
                let series = format!(
                    "{fun}(log_pattern_matches_total{{rule=\"{name}\"}}[{}])",
                    s.range
                );
                let expr = match (&s.agg, &s.by) {
                    (Some(a), Some(by)) => {
                        format!("{a} by ({}) ({series}){}", by.join(", "), s.cmp)
                    }
                    (Some(a), None) => format!("{a}({series}){}", s.cmp),
                    (None, _) => format!("{series}{}", s.cmp),
                };
                Ok((
                    OutRule {
                        name,
                        expr: s.query,
                        keep_labels: keep,
                    },
                    PromRule {
                        record: r.record.clone(),
                        alert: r.alert.clone(),
                        expr,
                        for_: r.for_.clone(),
                        labels: r.labels.clone(),
                        annotations: r.annotations.clone(),
                    },
                ))
            })();
            match result {
                Ok((o, p)) => {
                    report.push(format!("{title}: translated as rule {}", o.name));
                    out_rules.push(o);
                    prom.push(p);
                }
                Err(e) => {
                    skipped += 1;
                    report.push(format!("{title}: NOT translated: {e}"));
                }
            }
        }
        if !prom.is_empty() {
            groups.push(PromGroup {
                name: g.name.clone(),
                interval: g.interval.clone(),
                rules: prom,
            });
        }
    }
    let rules_yaml = format!(
        "# Imported from {} by log_pattern_exporter import-loki-rules.\n{}",
        path.display(),
        serde_yaml_ng::to_string(&OutRules { rules: out_rules }).map_err(yaml_err)?
    );
    // The written rule file must load: a failure here is a bug of the importer, not written.
    crate::config::parse(Path::new("imported rules"), &rules_yaml)?;
    let prometheus_yaml = format!(
        "# Imported from {} by log_pattern_exporter import-loki-rules.\n{}",
        path.display(),
        serde_yaml_ng::to_string(&PromFile { groups }).map_err(yaml_err)?
    );
    Ok(Import {
        rules_yaml,
        prometheus_yaml,
        report,
        skipped,
    })
}

fn yaml_err(e: serde_yaml_ng::Error) -> Error {
    Error::Import(e.to_string())
}

/// Reads `input`, writes both outputs; returns the report.
pub fn run(input: &Path, rules_out: &Path, prometheus_out: &Path) -> Result<Import, Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Replay { path, source }
    };
    let text = crate::config::read_text(input, crate::config::MAX_CONFIG_BYTES, "Loki rule file")?;
    let import = translate(input, &text)?;
    std::fs::write(rules_out, &import.rules_yaml).map_err(io(rules_out))?;
    std::fs::write(prometheus_out, &import.prometheus_yaml).map_err(io(prometheus_out))?;
    Ok(import)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let s = shape(r#"sum by (namespace, container) (rate({ns="x"} |= "a[1]" [5m])) > 0.5"#)
            .unwrap();
        assert_eq!(s.agg.as_deref(), Some("sum"));
        assert_eq!(s.by, Some(vec!["namespace".into(), "container".into()]));
        assert_eq!((s.func.as_str(), s.range.as_str()), ("rate", "5m"));
        assert_eq!(s.query, r#"{ns="x"} |= "a[1]""#);
        assert_eq!(s.cmp, " > 0.5");
        let s = shape(r#"sum(count_over_time({a="b"}[1h])) by (pod)"#).unwrap();
        assert_eq!(s.by, Some(vec!["pod".into()]));
        let s = shape(r#"rate({a="b"}[1m])"#).unwrap();
        assert_eq!((s.agg, s.by), (None, None));
        for bad in [
            r#"sum(rate({a="b"}[5m])) / sum(rate({a="c"}[5m]))"#,
            r#"topk(3, rate({a="b"}[5m]))"#,
            r#"sum(bytes_rate({a="b"}[5m]))"#,
            r#"quantile_over_time(0.9, {a="b"} | json | unwrap x [5m])"#,
        ] {
            assert!(shape(bad).is_err(), "{bad}");
        }
    }
}
