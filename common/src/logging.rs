//! Logging setup for `--log.level` and `--log.format` (logfmt, as the Go exporters log, or JSON).
//! Logs go to stderr; stdout stays free for commands that print results.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

use crate::cli::{LogArgs, LogFormat, LogLevel};

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(args: &LogArgs) {
    let level = match args.level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    };
    let registry = tracing_subscriber::registry().with(level);
    let result = match args.format {
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    let _ = result;
}
