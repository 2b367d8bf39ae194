//! The errors of this crate that end a command (`run`, `replay`, `import-loki-rules`, the
//! config check); each module's own errors convert into [`Error`].

use std::path::PathBuf;

use common::ConfigError;

use crate::sink;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start inotify: {0}")]
    Inotify(std::io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("the tailing thread has stopped")]
    Stopped,
    #[error(transparent)]
    Exporter(#[from] common::Error),
    #[error("{}: {source}", path.display())]
    Replay {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the metrics")]
    Encode,
    #[error(transparent)]
    Rules(#[from] sink::BuildError),
    #[error("cannot write the imported rules: {0}")]
    Import(String),
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(std::io::Error),
}
