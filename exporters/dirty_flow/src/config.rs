//! The checks file (`--config.file`): allowed cookies and user-defined checks.

use std::path::Path;

use common::ConfigError;
use serde::Deserialize;

/// The whole checks file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Cookies the bridge's owner uses now; flows with any other cookie are stale.
    #[serde(default)]
    pub allowed_cookies: Vec<String>,
}

/// Loads and validates a checks file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let config: Config = common::config::load_yaml(path)?;
    for c in &config.allowed_cookies {
        let hex = c.strip_prefix("0x").unwrap_or(c);
        if u64::from_str_radix(hex, 16).is_err() {
            return Err(ConfigError::invalid(
                path,
                format!("allowed_cookies: {c:?} is not a hex cookie"),
            ));
        }
    }
    Ok(config)
}
