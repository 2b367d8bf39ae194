//! The crate's one error type.
//!
//! Parsers (`parse_*`) return it with the offending input named, so a fixture that fails says
//! why; the libvirt layer wraps libvirt's own message and the call that failed, so a log line or
//! an `Err` from a collector reads as "list domains: <libvirt message>".
#![forbid(unsafe_code)]

/// Everything that can go wrong in this exporter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that is not well-formed XML.
    #[error("malformed XML: {0}")]
    Xml(String),
    /// Well-formed input whose content is not what we expect (a field that is not a number...).
    #[error("invalid {what}: {value:?}")]
    Invalid { what: &'static str, value: String },
    /// A CPU list such as `0-3,^2` that cannot be read.
    #[error("invalid CPU list {0:?}")]
    CpuList(String),
    /// A libvirt call that failed.
    #[error("{call}: {message}")]
    Libvirt { call: &'static str, message: String },
    /// A libvirt call that did not answer in time.
    #[error("{call}: no answer within {seconds}s")]
    Timeout { call: &'static str, seconds: f64 },
    /// No connection to libvirt (opening failed, or waiting for the reconnect backoff).
    #[error("libvirt is not connected: {0}")]
    NotConnected(String),
    /// A file that cannot be read (nova.conf, procfs).
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What the parsers return: the same enum, named for readers of `parse_*` signatures.
pub type ParseError = Error;

impl Error {
    pub(crate) fn invalid(what: &'static str, value: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            value: value.into(),
        }
    }

    pub(crate) fn libvirt(call: &'static str, err: &virt::error::Error) -> Self {
        Self::Libvirt {
            call,
            message: err.message().to_string(),
        }
    }
}
