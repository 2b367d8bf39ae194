//! The collector abstraction every exporter implements.
//!
//! A collector gathers one area of metrics (libvirt domains, OVS flows, log counters) into a fresh
//! [`Registry`] on each scrape. The registry it receives already carries the exporter's prefix, so
//! a collector registers `domain_info`, not `libvirt_domain_info`. Collectors run concurrently,
//! each in its own task under the scrape's timeout (see [`crate::scrape`]): an error, a panic or a
//! timeout in one never affects another.
//!
//! A collector that fails may still have registered metrics before failing (for example
//! `libvirt_up 0`); those are kept on `Err`, like node_exporter keeps what a failing collector
//! sent. On a panic or a timeout nothing of that collector is kept.

use futures::future::BoxFuture;
use prometheus_client::registry::Registry;

/// Why a collector failed; logged once per scrape and reflected in
/// `<prefix>_scrape_collector_success{collector} 0`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CollectError(pub String);

impl CollectError {
    /// Builds an error from anything displayable (use `{:#}`-style context in the message).
    pub fn new(msg: impl std::fmt::Display) -> Self {
        Self(msg.to_string())
    }
}

/// One named area of metrics.
///
/// The name is the module file, the `--collector.<name>` flag and the `collector` label value.
pub trait Collector: Send + Sync + 'static {
    /// The collector's name: lower case, `[a-z0-9_]`.
    fn name(&self) -> &'static str;

    /// One line for `--help`.
    fn help(&self) -> &'static str {
        ""
    }

    /// Whether the collector runs when neither `--collector.<name>` nor
    /// `--no-collector.<name>` is given.
    fn default_enabled(&self) -> bool {
        true
    }

    /// Gathers this collector's metrics into `registry`.
    fn collect<'a>(&'a self, registry: &'a mut Registry)
        -> BoxFuture<'a, Result<(), CollectError>>;
}
