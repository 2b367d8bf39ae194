//! The configuration file (`--config.file`): counting rules and extra log sources.
//!
//! Part 1 of the exporter supports the simplest rule, a line that contains a string; the LogQL
//! rule language of part 2 replaces [`Rule`] without touching the tailer, which only hands each
//! line to a [`crate::sink::LineSink`]. Sources beside the Kubernetes pod tree are path globs
//! whose `{name}` components become labels.

use std::collections::BTreeMap;
use std::path::Path;

use common::ConfigError;
use serde::Deserialize;

use crate::logql::Expr;

/// Default per-rule series budget.
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Counting rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Generic file sources beside the pod log tree.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Where to start reading files that exist at the very first start (no saved state).
    #[serde(default)]
    pub start_at: StartAt,
    /// Grants and budgets of the tenants whose rule sets `--config.dir` holds (platform file
    /// only; see [`crate::tenants`]).
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantGrant>,
}

/// What the platform file says of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantGrant {
    /// The namespaces the tenant's rules see (replaces the default: the namespace named like
    /// the tenant).
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// Overrides `--tenant.max-rules`.
    #[serde(default)]
    pub max_rules: Option<usize>,
    /// Overrides `--tenant.max-series`.
    #[serde(default)]
    pub max_series: Option<usize>,
}

/// A tenant's rule set file (`--config.dir`): rules only; sources, `start_at` and grants are
/// the platform's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSetFile {
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// Whose rules a rule is and what they may see; set by [`crate::tenants`], never read from a
/// file. Rules without one (the platform's) see every source and have no tenant budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub tenant: String,
    /// Namespaces whose lines the rules may count (ANDed into every selector).
    pub namespaces: Vec<String>,
    /// Series budget shared by all the tenant's rules.
    pub max_series: usize,
}

/// Where files found at the very first start begin to be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// At their end (after the last complete line): history is not counted.
    #[default]
    End,
    /// From their first byte.
    Beginning,
}

/// One counting rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// A LogQL log query: stream selector and line filters (see [`crate::logql`]).
    #[serde(default)]
    pub expr: Option<Expr>,
    /// Legacy form of part 1: the line contains this string (same as `expr: '{} |= "…"'`).
    #[serde(default)]
    pub contains: Option<String>,
    /// How many label combinations this rule may create; further ones go to one overflow series.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Whether the shipped `LogPatternMatched` alert fires when this rule matches.
    #[serde(default)]
    pub alert: bool,
    /// The alert's severity (exported on `log_pattern_rule_info`).
    #[serde(default)]
    pub severity: Severity,
    /// Counts go to `log_pattern_<metric>_total` instead of `log_pattern_matches_total`.
    #[serde(default)]
    pub metric: Option<String>,
    /// Source labels the rule's series keep (default: all); e.g. `[namespace, container]`
    /// drops `pod` for lower cardinality.
    #[serde(default)]
    pub keep_labels: Option<Vec<String>>,
    /// Labels extracted by the expression's parser stage that the rule's series carry.
    #[serde(default)]
    pub labels: Vec<String>,
    /// With `| unwrap field`: counter (adds the number), gauge (last value) or histogram.
    #[serde(default, rename = "type")]
    pub kind: RuleType,
    /// Histogram bucket upper bounds (default: Prometheus' defaults).
    #[serde(default)]
    pub buckets: Option<Vec<f64>>,
    /// The tenant binding (not part of the file).
    #[serde(skip)]
    pub binding: Option<std::sync::Arc<Binding>>,
}

/// What a rule's series hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleType {
    /// Matching lines, or with `| unwrap` the sum of the extracted numbers.
    #[default]
    Counter,
    /// The last extracted number (needs `| unwrap`).
    Gauge,
    /// Extracted numbers in buckets (needs `| unwrap`).
    Histogram,
}

/// Prometheus' default histogram buckets.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Rule {
    /// A rule with default options.
    pub fn new(name: &str, expr: Expr) -> Self {
        Self {
            name: name.to_string(),
            expr: Some(expr),
            contains: None,
            max_series: DEFAULT_MAX_SERIES,
            alert: false,
            severity: Severity::default(),
            metric: None,
            keep_labels: None,
            labels: Vec::new(),
            kind: RuleType::Counter,
            buckets: None,
            binding: None,
        }
    }

    /// The rule's expression (`contains` turned into one).
    pub fn expression(&self) -> Expr {
        match (&self.expr, &self.contains) {
            (Some(e), _) => e.clone(),
            (None, Some(c)) => Expr::contains(c),
            (None, None) => Expr::contains(""),
        }
    }

    /// The tenant the rule belongs to (`""`: the platform).
    pub fn tenant(&self) -> &str {
        self.binding.as_deref().map_or("", |b| b.tenant.as_str())
    }

    /// The metric name the rule counts into (without prefix and `_total`).
    pub fn metric_name(&self) -> &str {
        self.metric.as_deref().unwrap_or(DEFAULT_METRIC)
    }
}

/// The metric rules count into unless they name their own.
pub const DEFAULT_METRIC: &str = "matches";

/// Metric names of the exporter itself, which a rule's `metric` may not take.
pub const RESERVED_METRICS: &[&str] = &[
    "lines_read",
    "read_bytes",
    "files_opened",
    "rotations",
    "truncations",
    "truncated_unread_bytes",
    "files_lost",
    "long_lines",
    "invalid_utf8_lines",
    "parse_errors",
    "read_errors",
    "inotify_overflows",
    "rescans",
    "event_lag_seconds",
    "timestamp_parse_errors",
    "files_watched",
    "rotated_files_open",
    "directories_watched",
    "backlog_bytes",
    "state_saves",
    "state_save_failures",
    "state_load_failures",
    "state_last_save_timestamp_seconds",
    "rule",
    "config_reloads",
    "unwrap_errors",
    "config_last_reload_successful",
    "ruleset_valid",
    "ruleset_last_reload_success_timestamp_seconds",
    "ruleset_reloads",
    "ruleset_rules",
    "ruleset_rules_over_budget",
    "ruleset_rules_limit",
    "ruleset_series",
    "ruleset_series_limit",
    "ruleset_series_overflow",
    "scrape_collector_success",
    "scrape_collector_duration_seconds",
];

/// An alerting rule's severity (the `severity` label of `log_pattern_rule_info`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    #[default]
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

fn default_max_series() -> usize {
    DEFAULT_MAX_SERIES
}

/// A generic source: an absolute path pattern. A component may hold `*` (any characters but
/// `/`) and `{label}` (the same, captured as a label), e.g. `/var/log/app/{service}/error.log`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub path: String,
    /// Static labels added to every line of this source.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Where and how the lines carry their own time, for the event lag (see
    /// [`crate::timestamp`]).
    #[serde(default)]
    pub timestamp: Option<crate::timestamp::TimestampConfig>,
}

/// Largest platform configuration file read (`--config.file`): far above any real rule file,
/// far below what would strain the exporter's memory.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Deepest nesting of YAML collections (flow `[`, `{`, and compact `- - x`) a rule file may have. Rule files need a
/// handful of levels; the YAML parser's time grows with the square of the nesting, so a deeper
/// file is refused before it is parsed.
pub const MAX_NESTING: usize = 64;

/// Reads the regular file `path` of at most `cap` bytes ([`common::config::read_regular_file`]:
/// opened without blocking, refused unread when it is a FIFO, a device or too large); `what`
/// names the file's role in messages.
pub fn read_capped(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>, ConfigError> {
    use std::io::ErrorKind;
    common::config::read_regular_file(path, cap).map_err(|e| match e.kind() {
        ErrorKind::InvalidInput => ConfigError::invalid(path, format!("{e}; a {what} must be one")),
        ErrorKind::InvalidData => ConfigError::invalid(path, format!("{e} for a {what}")),
        _ => ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

/// [`read_capped`] for a text file: content that is not UTF-8 is an error naming the file.
pub fn read_text(path: &Path, cap: u64, what: &str) -> Result<String, ConfigError> {
    String::from_utf8(read_capped(path, cap, what)?).map_err(|e| {
        ConfigError::invalid(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Loads and validates a configuration file (at most [`MAX_CONFIG_BYTES`], a regular file).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_text(path, MAX_CONFIG_BYTES, "configuration file")?;
    parse(path, &text)
}

/// What `--config.check` warns about in a valid configuration: a rule whose `expr` selector
/// is `{}`, which Loki refuses and this exporter reads as every source.
pub fn warnings(config: &Config) -> Vec<String> {
    config
        .rules
        .iter()
        .filter(|r| r.expr.as_ref().is_some_and(|e| e.matchers.is_empty()))
        .map(|r| {
            format!(
                "rule {:?}: the selector {{}} selects every source here; Loki refuses a query without a matcher, so the rule does not move back to Loki as it is",
                r.name
            )
        })
        .collect()
}

/// Parses and validates configuration text (`path` is for messages).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    common::config::check_yaml_nesting(path, text, MAX_NESTING)?;
    let config: Config = common::config::parse_yaml(path, text)
        .map_err(|e| refine_timestamp(text, refine(text, e)))?;
    validate(&config).map_err(|m| ConfigError::invalid(path, m))?;
    Ok(config)
}

/// Parses and validates a tenant's rule set file (rules only; `path` is for messages).
pub fn parse_rule_set(path: &Path, text: &str) -> Result<Vec<Rule>, ConfigError> {
    common::config::check_yaml_nesting(path, text, MAX_NESTING)?;
    let file: RuleSetFile = common::config::parse_yaml(path, text).map_err(|e| refine(text, e))?;
    let config = Config {
        rules: file.rules,
        ..Config::default()
    };
    validate(&config).map_err(|m| ConfigError::invalid(path, m))?;
    Ok(config.rules)
}

/// Whether `name` is a Kubernetes namespace name (an RFC 1123 DNS label), the form tenant
/// names and granted namespaces take.
pub fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(inner)
        && b.last().is_some_and(inner)
        && b.iter().all(|c| inner(c) || *c == b'-')
}

/// The YAML parser places an expression error at its rule; when the expression is written on
/// one line (plain or quoted, no escapes before the error), move the position onto the exact
/// character.
fn refine(text: &str, err: ConfigError) -> ConfigError {
    let ConfigError::Parse {
        path,
        line,
        column,
        message,
    } = err
    else {
        return err;
    };
    let exact = (|| {
        let offset: usize = message
            .split("at offset ")
            .nth(1)?
            .split(' ')
            .next()?
            .parse()
            .ok()?;
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate().skip(line.checked_sub(1)?) {
            let Some(at) = l.find("expr:") else {
                continue;
            };
            let rest = &l[at + 5..];
            let value = rest.trim_start();
            let mut start = at + 5 + (rest.len() - value.len());
            let body = match value.chars().next()? {
                q @ ('\'' | '"') => {
                    start += 1;
                    let b = &value[1..];
                    let stop = if q == '"' { "\\" } else { "''" };
                    let before: String = b.chars().take(offset).collect();
                    if before.contains(stop) || before.contains(q) {
                        return None;
                    }
                    b
                }
                _ => value,
            };
            if body.chars().count() < offset {
                return None;
            }
            let col = l[..start].chars().count() + offset + 1;
            return Some((i + 1, col));
        }
        None
    })();
    let (line, column) = exact.unwrap_or((line, column));
    ConfigError::Parse {
        path,
        line,
        column,
        message,
    }
}

/// The YAML parser places a source's `timestamp` error at the source; move the position onto
/// the value of the key the message names (`format`, `timezone`, `regex`, `field`), or onto
/// `timestamp` itself, searching from the source's line.
fn refine_timestamp(text: &str, err: ConfigError) -> ConfigError {
    let ConfigError::Parse {
        path,
        line,
        column,
        message,
    } = err
    else {
        return err;
    };
    let exact = (|| {
        let what = message.split("timestamp: ").nth(1)?;
        let key = ["format", "timezone", "regex", "field"]
            .into_iter()
            .find(|k| what.starts_with(k))
            .unwrap_or("timestamp");
        let needle = format!("{key}:");
        for (i, l) in text.lines().enumerate().skip(line.checked_sub(1)?) {
            if let Some(at) = l.find(&needle) {
                let rest = &l[at + needle.len()..];
                let start = at + needle.len() + (rest.len() - rest.trim_start().len());
                return Some((i + 1, l[..start].chars().count() + 1));
            }
        }
        None
    })();
    let (line, column) = exact.unwrap_or((line, column));
    ConfigError::Parse {
        path,
        line,
        column,
        message,
    }
}

/// Label names a source may not use: the rule label, the line's stream, reserved names.
fn check_label_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && !name.starts_with("__")
        && name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if !valid {
        return Err(format!("{name:?} is not a valid label name"));
    }
    if matches!(name, "rule" | "stream" | "overflow" | "tenant") {
        return Err(format!("label name {name:?} is reserved"));
    }
    Ok(())
}

/// Checks `type`, `buckets` and `| unwrap` of a rule.
fn check_metric_type(r: &Rule) -> Result<(), String> {
    let expr = r.expression();
    let name = &r.name;
    if r.kind != RuleType::Counter && expr.unwrap.is_none() {
        return Err(format!(
            "rule {name:?}: a {:?} needs `| unwrap field` at the end of expr",
            r.kind
        ));
    }
    if expr.unwrap.is_some() && r.metric.is_none() {
        return Err(format!(
            "rule {name:?}: a rule with `| unwrap` needs its own `metric` (it does not count lines)"
        ));
    }
    if let (Some(field), Some(names)) = (&expr.unwrap, expr.added_labels()) {
        if !names.contains(field) {
            return Err(format!(
                "rule {name:?}: unwrap field {field:?} is not a named group or parameter of a parser stage, nor set by label_format"
            ));
        }
    }
    if let Some(b) = &r.buckets {
        if r.kind != RuleType::Histogram {
            return Err(format!(
                "rule {name:?}: `buckets` is only for type: histogram"
            ));
        }
        if b.is_empty() || !b.iter().all(|x| x.is_finite()) || !b.windows(2).all(|w| w[0] < w[1]) {
            return Err(format!(
                "rule {name:?}: buckets must be finite and strictly increasing"
            ));
        }
    }
    Ok(())
}

/// What a rule's metric holds: rules sharing a metric must agree on it.
pub fn metric_shape(r: &Rule) -> String {
    format!(
        "{:?} unwrap={} buckets={:?}",
        r.kind,
        r.expression().unwrap.is_some(),
        r.buckets
    )
}

/// Semantic checks; the message names the offending rule or source.
pub fn validate(config: &Config) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for r in &config.rules {
        if r.name.is_empty() {
            return Err("a rule has an empty name".into());
        }
        if !seen.insert(r.name.as_str()) {
            return Err(format!("rule {:?} is defined twice", r.name));
        }
        match (&r.expr, &r.contains) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "rule {:?}: give either `expr` or `contains`, not both",
                    r.name
                ))
            }
            (None, None) => return Err(format!("rule {:?}: `expr` is missing", r.name)),
            (None, Some(c)) if c.is_empty() => {
                return Err(format!("rule {:?}: `contains` is empty", r.name))
            }
            _ => {}
        }
        if let Some(m) = &r.metric {
            let valid = !m.is_empty()
                && m.chars().enumerate().all(|(i, c)| {
                    c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
                });
            if !valid || m.ends_with("_total") || m.ends_with("_info") {
                return Err(format!(
                    "rule {:?}: metric {m:?} must be [a-zA-Z_][a-zA-Z0-9_]* without the _total suffix (the exporter adds log_pattern_ and _total)",
                    r.name
                ));
            }
            if RESERVED_METRICS.contains(&m.as_str()) {
                return Err(format!(
                    "rule {:?}: metric {m:?} is one of the exporter's own",
                    r.name
                ));
            }
        }
        if !r.labels.is_empty() {
            let expr = r.expression();
            if !expr.adds_labels() {
                return Err(format!(
                    "rule {:?}: `labels` needs a parser stage in expr (| json, | logfmt, | regexp, | pattern) or | label_format",
                    r.name
                ));
            }
            let names = expr.added_labels();
            for l in &r.labels {
                check_label_name(l).map_err(|e| format!("rule {:?}: labels: {e}", r.name))?;
                if names.as_ref().is_some_and(|n| !n.contains(l)) {
                    return Err(format!(
                        "rule {:?}: label {l:?} is not a named group of the regexp stage",
                        r.name
                    ));
                }
            }
        }
        check_metric_type(r)?;
        if let Some(keep) = &r.keep_labels {
            for l in keep {
                check_label_name(l).map_err(|e| format!("rule {:?}: keep_labels: {e}", r.name))?;
            }
        }
        if r.max_series == 0 {
            return Err(format!("rule {:?}: max_series must be at least 1", r.name));
        }
    }
    let mut shapes: std::collections::HashMap<&str, (String, &str)> = Default::default();
    for r in &config.rules {
        let shape = metric_shape(r);
        if let Some((other, first)) = shapes.get(r.metric_name()) {
            if *other != shape {
                return Err(format!(
                    "rules {first:?} and {:?} share metric {:?} but differ in type, unwrap or buckets",
                    r.name,
                    r.metric_name()
                ));
            }
        } else {
            shapes.insert(r.metric_name(), (shape, &r.name));
        }
    }
    for (tenant, grant) in &config.tenants {
        if !is_dns_label(tenant) {
            return Err(format!(
                "tenants: {tenant:?} is not a tenant name (a namespace-style name: a-z, 0-9, '-', at most 63)"
            ));
        }
        for ns in grant.namespaces.iter().flatten() {
            if !is_dns_label(ns) {
                return Err(format!("tenants: {tenant}: {ns:?} is not a namespace name"));
            }
        }
        if grant.max_rules == Some(0) || grant.max_series == Some(0) {
            return Err(format!(
                "tenants: {tenant}: max_rules and max_series must be at least 1"
            ));
        }
    }
    for s in &config.sources {
        let pattern = crate::discovery::GlobPattern::parse(&s.path)
            .map_err(|e| format!("source {:?}: {e}", s.path))?;
        for name in s
            .labels
            .keys()
            .map(String::as_str)
            .chain(pattern.capture_names())
        {
            check_label_name(name).map_err(|e| format!("source {:?}: {e}", s.path))?;
        }
        for name in pattern.capture_names() {
            if s.labels.contains_key(name) {
                return Err(format!(
                    "source {:?}: label {name:?} is both captured and static",
                    s.path
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        super::parse(Path::new("c.yml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_selector_is_warned_about() {
        let c = parse("rules:\n- {name: every, expr: '{} |= \"x\"'}\n- {name: some, expr: '{a=\"b\"}'}\n- {name: legacy, contains: x}\n").unwrap();
        let w = warnings(&c);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("rule \"every\": the selector {} selects every source"),
            "{w:?}"
        );
    }

    #[test]
    fn valid_and_invalid_configs() {
        let c = parse(
            "rules:\n- name: oom\n  contains: Out of memory\nsources:\n- path: /var/log/app/{service}/*.log\n  labels: {job: app}\nstart_at: beginning\n",
        )
        .unwrap();
        assert_eq!(c.rules[0].max_series, DEFAULT_MAX_SERIES);
        assert_eq!(c.start_at, StartAt::Beginning);
        // A label set by `| label_format` may be a rule's label and its unwrap field.
        parse("rules:\n- {name: a, expr: '{} | regexp \"(?P<x>.)\" | label_format y=x', labels: [y]}\n- {name: b, expr: '{} | label_format n=`{{ len __line__ }}` | unwrap n', metric: m}\n")
            .unwrap();
        let cases = [
            (
                "rules:\n- {name: a, contains: x}\n- {name: a, contains: y}\n",
                "twice",
            ),
            ("rules:\n- {name: a, contains: ''}\n", "empty"),
            (
                "rules:\n- {name: a, contains: x, max_series: 0}\n",
                "max_series",
            ),
            ("sources:\n- path: relative/*.log\n", "absolute"),
            ("sources:\n- path: /a/{rule}/x.log\n", "reserved"),
            ("sources:\n- path: /a/{x}/x.log\n  labels: {x: y}\n", "both"),
            (
                "sources:\n- path: /a/b.log\n  labels: {'1x': y}\n",
                "valid label",
            ),
            ("start_at: middle\n", "unknown variant"),
            ("rule: []\n", "unknown field"),
            ("rules:\n- {name: a}\n", "`expr` is missing"),
            ("rules:\n- {name: a, contains: x, expr: '{}'}\n", "not both"),
            (
                "rules:\n- {name: a, expr: '{}', metric: x_total}\n",
                "without the _total suffix",
            ),
            (
                "rules:\n- {name: a, expr: '{}', metric: lines_read}\n",
                "exporter's own",
            ),
            (
                "rules:\n- {name: a, expr: '{}', keep_labels: ['a-b']}\n",
                "keep_labels",
            ),
            (
                "rules:\n- {name: a, expr: '{}', severity: fatal}\n",
                "unknown variant",
            ),
            (
                "rules:\n- {name: a, expr: '{}', labels: [x]}\n",
                "needs a parser stage",
            ),
            (
                "rules:\n- {name: a, expr: '{} | label_format y=x', labels: [x]}\n",
                "not a named group",
            ),
            ("rules:\n- {name: a, expr: '{}', type: gauge}\n", "needs `| unwrap"),
            (
                "rules:\n- {name: a, expr: '{} | json | unwrap x'}\n",
                "needs its own `metric`",
            ),
            (
                "rules:\n- {name: a, expr: '{} | regexp \"(?P<x>.)\" | unwrap y', metric: m}\n",
                "not a named group",
            ),
            (
                "rules:\n- {name: a, expr: '{} | json | unwrap x', metric: m, buckets: [1]}\n",
                "only for type: histogram",
            ),
            (
                "rules:\n- {name: a, expr: '{} | json | unwrap x', metric: m, type: histogram, buckets: [2, 1]}\n",
                "strictly increasing",
            ),
            (
                "rules:\n- {name: a, expr: '{} | json | unwrap x', metric: m, type: gauge}\n- {name: b, expr: '{}', metric: m}\n",
                "share metric",
            ),
            ("rules:\n- {name: a, expr: '{}', type: summary}\n", "unknown variant"),
            (
                "rules:\n- {name: a, expr: '{} | regexp \"(?P<x>.)\"', labels: [y]}\n",
                "not a named group",
            ),
            (
                "rules:\n- {name: a, expr: '{} | json', labels: [rule]}\n",
                "reserved",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    /// Hostile YAML: an alias bomb gets a message saying what and which limit
    /// (`common::config::parse_yaml`; the parser gives no position); deep nesting is refused before parsing with its position; brackets
    /// inside quoted scalars and comments do not count.
    #[test]
    fn alias_bombs_and_deep_nesting_have_meaningful_errors() {
        let mut text = format!(
            "rules:\n- &r {{name: x, contains: y, keep_labels: &k [&s namespace{}]}}\n",
            ", *s".repeat(200)
        );
        text.push_str(&"- *r\n".repeat(3000));
        let err = parse(&text).unwrap_err();
        assert!(
            err.starts_with("c.yml: repetition limit exceeded: aliases (*name) expand to far more"),
            "{err}"
        );
        assert!(err.contains("alias bomb"), "{err}");
        let deep = format!(
            "rules:\n- {{name: a, contains: x, keep_labels: {}",
            "[".repeat(70)
        );
        let err = parse(&deep).unwrap_err();
        assert!(
            err.starts_with("c.yml:2:102: brackets nested more than 64"),
            "{err}"
        );
        let compact = format!("rules:\n{}x\n", "- ".repeat(100_000));
        let err = parse(&compact).unwrap_err();
        assert!(
            err.starts_with("c.yml:2:129: block sequences (`- - ...`) nested more than 64"),
            "{err}"
        );
        let quoted = format!(
            "# {b}\nrules:\n- {{name: a, contains: '{b}''{b}', keep_labels: [namespace]}}\n- {{name: b, expr: \"{{}} |= \\\"{b}\\\"\"}}\n",
            b = "[{".repeat(100)
        );
        let c = parse(&quoted).unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].contains.as_deref().map(str::len), Some(401));
        // A regex over the compiled size limit: file, line, column, rule, offset and the limit.
        let err = parse("rules:\n- name: big\n  expr: '{} |~ \"(a{1000}){1000}\"'\n").unwrap_err();
        assert!(err.starts_with("c.yml:3:16: rules[0]: "), "{err}");
        assert!(err.contains("at offset 6 of the expression"), "{err}");
        assert!(err.contains("size limit of 10485760 bytes"), "{err}");
    }

    #[test]
    fn expr_errors_name_line_column_and_offset() {
        let text = "rules:\n  - name: ok\n    expr: '{namespace=\"x\"} |= \"a\"'\n  - name: bad\n    expr: '{namespace=\"x\"} |= \"a\" | distinct x'\n";
        let err = parse(text).unwrap_err();
        // Line 5: the value starts at column 12, + 25: the `d` of distinct.
        assert!(err.starts_with("c.yml:5:37: "), "{err}");
        assert!(err.contains("at offset 25 of the expression"), "{err}");
        // Flow style, double-quoted YAML with escapes before the error: the rule's position.
        let err = parse("rules:\n- {name: a, expr: \"{a=\\\"b\\\"} | distinct x\"}\n").unwrap_err();
        assert!(err.starts_with("c.yml:2:3: "), "{err}");
        let err = parse("rules:\n- {name: a, expr: \"{} | distinct x\"}\n").unwrap_err();
        assert!(err.starts_with("c.yml:2:25: "), "{err}");
        assert!(err.contains("`| distinct` stage is not supported"), "{err}");
        assert!(err.contains("supported: a stream selector"), "{err}");
        let c = parse(
            "rules:\n- name: r\n  expr: '{} |= \"x\"'\n  alert: true\n  severity: critical\n  metric: my_errors\n  keep_labels: [namespace]\n  max_series: 5\n",
        )
        .unwrap();
        let r = &c.rules[0];
        assert!(r.alert);
        assert_eq!(r.severity, Severity::Critical);
        assert_eq!(r.metric_name(), "my_errors");
        assert_eq!(r.expression().filters.len(), 1);
    }

    /// A source's timestamp that cannot parse is refused with the file, line and column.
    #[test]
    fn source_timestamp_errors_have_positions() {
        let c = parse(
            "sources:\n- path: /var/log/app/*.log\n  timestamp: {field: time, format: rfc3339, timezone: '+02:00'}\n- path: /var/log/b/*.log\n  timestamp: {format: rfc3164, timezone: Europe/Berlin}\n",
        )
        .unwrap();
        assert!(c.sources[0].timestamp.is_some());
        assert!(c.sources[1].timestamp.is_some());
        let cases = [
            (
                "sources:\n- path: /var/log/app/*.log\n  timestamp:\n    format: '%Y-%m-%d %H:%Q'\n",
                "c.yml:4:13: ",
                "%Q is not supported",
            ),
            (
                "sources:\n- path: /a.log\n- path: /b.log\n  timestamp: {format: rfc9999}\n",
                "c.yml:4:23: ",
                "is not one of",
            ),
            (
                "sources:\n- path: /a.log\n  timestamp: {format: rfc3339, timezone: Europe/Pariss}\n",
                "c.yml:3:42: ",
                "timezone \"Europe/Pariss\" is neither a UTC offset",
            ),
            (
                "sources:\n- path: /a.log\n  timestamp:\n    format: rfc3164\n    timezone: Mars/Olympus_Mons\n",
                "c.yml:5:15: ",
                "zone of the tz database",
            ),
        ];
        for (text, at, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(at), "{text:?}: {err}");
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
