//! The rule file (`--config.file`). Part 1 of the exporter supports the simplest rule: a line
//! that contains a string. The LogQL rule language replaces this in part 2.

use std::path::Path;

use common::ConfigError;
use serde::Deserialize;

/// The whole rule file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One counting rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// The line matches when it contains this string.
    pub contains: String,
}

/// Loads and validates a rule file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let config: Config = common::config::load_yaml(path)?;
    let mut seen = std::collections::HashSet::new();
    for r in &config.rules {
        if !seen.insert(r.name.as_str()) {
            return Err(ConfigError::invalid(
                path,
                format!("rule {:?} is defined twice", r.name),
            ));
        }
    }
    Ok(config)
}
