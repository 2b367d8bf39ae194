//! The configuration file (`--config.file`): counting rules and extra log sources.
//!
//! Part 1 of the exporter supports the simplest rule, a line that contains a string; the LogQL
//! rule language of part 2 replaces [`Rule`] without touching the tailer, which only hands each
//! line to a [`crate::rules::LineSink`]. Sources beside the Kubernetes pod tree are path globs
//! whose `{name}` components become labels.

use std::collections::BTreeMap;
use std::path::Path;

use common::ConfigError;
use serde::Deserialize;

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
    /// The line matches when it contains this string.
    pub contains: String,
    /// How many label combinations this rule may create; further ones go to one overflow series.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
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
}

/// Loads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let config: Config = common::config::load_yaml(path)?;
    validate(&config).map_err(|m| ConfigError::invalid(path, m))?;
    Ok(config)
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
    if matches!(name, "rule" | "stream" | "overflow") {
        return Err(format!("label name {name:?} is reserved"));
    }
    Ok(())
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
        if r.contains.is_empty() {
            return Err(format!("rule {:?}: `contains` is empty", r.name));
        }
        if r.max_series == 0 {
            return Err(format!("rule {:?}: max_series must be at least 1", r.name));
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
        let c: Config =
            common::config::parse_yaml(Path::new("c.yml"), text).map_err(|e| e.to_string())?;
        validate(&c)?;
        Ok(c)
    }

    #[test]
    fn valid_and_invalid_configs() {
        let c = parse(
            "rules:\n- name: oom\n  contains: Out of memory\nsources:\n- path: /var/log/app/{service}/*.log\n  labels: {job: app}\nstart_at: beginning\n",
        )
        .unwrap();
        assert_eq!(c.rules[0].max_series, DEFAULT_MAX_SERIES);
        assert_eq!(c.start_at, StartAt::Beginning);
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
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
