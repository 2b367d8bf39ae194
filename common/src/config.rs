//! Loading YAML configuration files with errors that name file, line and column.
//!
//! Every exporter's config (and the web config) goes through [`load_yaml`], so `--config.check`
//! and a startup failure print the same `FILE:LINE:COLUMN: message`. Semantic checks belong in
//! `Deserialize` impls (or `deserialize_with`) where they can, so that they get a position too.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl ConfigError {
    /// An error about the file as a whole (no position known).
    pub fn invalid(path: &Path, message: impl std::fmt::Display) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

/// Reads and deserializes a YAML file.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_yaml(path, &text)
}

/// Deserializes YAML text; `path` is used for messages only.
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    serde_yaml_ng::from_str(text).map_err(|err| {
        let (line, column) = err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        // The message ends with " at line L column C"; the position is already in front.
        let mut message = err.to_string();
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })
}

/// Implements `--config.check`: prints the verdict and exits 0 (valid) or 1 (invalid).
pub fn check_and_exit<T, E: std::fmt::Display>(path: &Path, result: Result<T, E>) -> ! {
    match result {
        Ok(_) => {
            println!("{}: configuration is valid", path.display());
            std::process::exit(0)
        }
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct C {
        a: u32,
    }

    #[test]
    fn errors_have_positions() {
        let p = Path::new("x.yml");
        assert!(parse_yaml::<C>(p, "a: 1\n").is_ok());
        let err = parse_yaml::<C>(p, "a: 1\nb: 2\n").unwrap_err().to_string();
        assert!(err.starts_with("x.yml:2:1: "), "{err}");
        assert!(err.contains("unknown field `b`"), "{err}");
        let err = parse_yaml::<C>(p, "a: [\n").unwrap_err().to_string();
        assert!(err.starts_with("x.yml:"), "{err}");
        let err = parse_yaml::<C>(p, "a: notanumber\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.yml:1:"), "{err}");
    }
}
