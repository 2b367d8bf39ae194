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
//!
//! What a collector gathers goes into a [`Sink`]: a prometheus-client [`Registry`] (the sink
//! derefs to it), plus families written straight to text ([`TextFamily`]) for collectors with
//! tens of thousands of constant series, appended after the registry's families.

use std::ops::{Deref, DerefMut};

use futures::future::BoxFuture;
use prometheus_client::registry::Registry;

use crate::text::{Kind, TextFamily};

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
    /// The collector's name: lower case, `[a-z0-9_]`; the `name` of the [`crate::cli::CollectorFlag`]
    /// its module declares (with its help and default), which the flag parsing reads.
    fn name(&self) -> &'static str;

    /// Gathers this collector's metrics into `sink`.
    fn collect<'a>(&'a self, sink: &'a mut Sink) -> BoxFuture<'a, Result<(), CollectError>>;
}

/// Where one collector's metrics of one scrape go: a registry with the exporter's prefix, and
/// families already written as OpenMetrics text.
#[derive(Debug)]
pub struct Sink {
    prefix: String,
    registry: Registry,
    text: Vec<TextFamily>,
}

impl Sink {
    /// An empty sink whose metric names take `prefix` (without the trailing underscore).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            registry: Registry::with_prefix(prefix),
            text: Vec::new(),
        }
    }

    /// The metric prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A new text family named with this sink's prefix, to fill and then [`Sink::push`].
    pub fn family(&self, name: &str, help: &str, kind: Kind) -> TextFamily {
        TextFamily::new(&self.prefix, name, help, kind)
    }

    /// Appends a finished text family (it is not written when it has no sample). Its name must
    /// not be one registered in the registry too.
    pub fn push(&mut self, family: TextFamily) {
        if !family.is_empty() {
            self.text.push(family);
        }
    }

    /// Bytes the text families will take (to size the scrape's buffer once).
    pub fn text_len(&self) -> usize {
        self.text.iter().map(TextFamily::encoded_len).sum()
    }

    /// Encodes the registry's families, then the text families, as OpenMetrics (without `# EOF`).
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)?;
        for family in &self.text {
            family.write_to(out);
        }
        Ok(())
    }
}

impl Deref for Sink {
    type Target = Registry;
    fn deref(&self) -> &Registry {
        &self.registry
    }
}

impl DerefMut for Sink {
    fn deref_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn sink_writes_the_registry_then_its_non_empty_text_families() {
        let mut sink = Sink::new("x");
        assert_eq!(sink.prefix(), "x");
        let g: Gauge = Gauge::default();
        g.set(3);
        sink.register("reg", "From the registry", g);
        let mut fam = sink.family("text", "As text", Kind::Gauge);
        fam.push(&[("domain", "a")], 1.0);
        sink.push(fam);
        sink.push(sink.family("empty", "Never written", Kind::Counter));
        let mut out = String::new();
        sink.encode(&mut out).unwrap();
        assert_eq!(
            out,
            "# HELP x_reg From the registry.\n# TYPE x_reg gauge\nx_reg 3\n# HELP x_text As text.\n# TYPE x_text gauge\nx_text{domain=\"a\"} 1.0\n"
        );
        assert_eq!(
            sink.text_len(),
            out.len() - out.find("# HELP x_text").unwrap()
        );
    }
}
