//! The collector abstraction every exporter implements, and the [`Sink`] it writes into.
//!
//! A collector gathers one area of metrics (libvirt domains, OVS flows, log counters) into a fresh
//! [`Sink`] on each scrape. The sink already carries the exporter's prefix, so a collector writes
//! `domain_info`, not `libvirt_domain_info`. Collectors run concurrently, each in its own task
//! under the scrape's timeout (see [`crate::scrape`]): an error, a panic or a timeout in one never
//! affects another.
//!
//! A collector that fails may still have written metrics before failing (for example
//! `libvirt_up 0`); those are kept on `Err`, like node_exporter keeps what a failing collector
//! sent. On a panic or a timeout nothing of that collector is kept.
//!
//! # Writing metrics
//!
//! Every metric goes through the sink, as OpenMetrics text ([`crate::text`]), one way:
//!
//! ```
//! # let mut sink = common::Sink::new("libvirt");
//! // A labelled family: take it from the sink, push samples, push it back.
//! let mut f = sink.gauge("domain_vcpus", "Number of vCPUs");
//! f.push(&[("domain", "instance-1")], 4.0);
//! sink.push(f);
//! // One unlabelled sample in one line.
//! sink.gauge_value("up", "Whether libvirt answered", 1.0);
//! sink.counter_value("connections_opened", "Connections opened", 3u64);
//! sink.info_value("host", "Host CPU model", &[("model", "EPYC")]);
//! // Histograms: buckets (bound, count in that bucket), sum and count.
//! let mut h = sink.histogram("lag_seconds", "Lag");
//! h.push_histogram(&[("source", "pods")], &[(1.0, 2), (f64::INFINITY, 1)], 7.5, 3);
//! sink.push(h);
//! ```
//!
//! [`Sink::gauge`], [`Sink::counter`], [`Sink::info`] and [`Sink::histogram`] give a
//! [`TextFamily`]; a sample's value is an `f64` (written `1.0`) or an integer (`u64`/`i64`,
//! written `1`), as prometheus-client writes them. Counters get `_total` and info metrics `_info`
//! appended; never write them yourself. Families are written in the order they are pushed, each
//! name once; a family without a sample is not written (unless
//! [`TextFamily::written_when_empty`]). A collector that renders the same series on every scrape
//! may keep them between scrapes with [`TextFamily::share`] and [`TextFamily::append_shared`]
//! (libvirt's per-domain cache does).

use futures::future::BoxFuture;

use crate::text::{Kind, TextFamily, Value};

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

/// Where one collector's metrics of one scrape go: families written as OpenMetrics text, named
/// with the exporter's prefix (see the module doc).
#[derive(Debug)]
pub struct Sink {
    prefix: String,
    text: Vec<TextFamily>,
}

impl Sink {
    /// An empty sink whose metric names take `prefix` (without the trailing underscore).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            text: Vec::new(),
        }
    }

    /// The metric prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A gauge family `<prefix>_<name>` to fill with [`TextFamily::push`], then [`Sink::push`].
    pub fn gauge(&self, name: &str, help: &str) -> TextFamily {
        TextFamily::new(&self.prefix, name, help, Kind::Gauge)
    }

    /// A counter family (`_total` is appended to each sample's name).
    pub fn counter(&self, name: &str, help: &str) -> TextFamily {
        TextFamily::new(&self.prefix, name, help, Kind::Counter)
    }

    /// An info family (`_info` is appended to each sample's name; push value 1).
    pub fn info(&self, name: &str, help: &str) -> TextFamily {
        TextFamily::new(&self.prefix, name, help, Kind::Info)
    }

    /// A histogram family, filled with [`TextFamily::push_histogram`].
    pub fn histogram(&self, name: &str, help: &str) -> TextFamily {
        TextFamily::new(&self.prefix, name, help, Kind::Histogram)
    }

    /// Appends a finished family, written after those pushed before it. A family without a
    /// sample is dropped unless it is [`TextFamily::written_when_empty`]. One name is pushed
    /// once.
    pub fn push(&mut self, family: TextFamily) {
        if family.is_written() {
            self.text.push(family);
        }
    }

    /// Pushes an unlabelled gauge of one sample.
    pub fn gauge_value(&mut self, name: &str, help: &str, value: impl Value) {
        self.push_one(self.gauge(name, help), &[], value);
    }

    /// Pushes an unlabelled counter of one sample.
    pub fn counter_value(&mut self, name: &str, help: &str, value: impl Value) {
        self.push_one(self.counter(name, help), &[], value);
    }

    /// Pushes an info metric of one series (`<name>_info{labels} 1`).
    pub fn info_value(&mut self, name: &str, help: &str, labels: &[(&str, &str)]) {
        self.push_one(self.info(name, help), labels, 1u64);
    }

    fn push_one(&mut self, mut family: TextFamily, labels: &[(&str, &str)], value: impl Value) {
        family.push(labels, value);
        self.push(family);
    }

    /// Bytes [`Sink::encode`] writes (to size the scrape's buffer once).
    pub fn text_len(&self) -> usize {
        self.text.iter().map(TextFamily::encoded_len).sum()
    }

    /// Writes the families, in the order they were pushed, as OpenMetrics (without `# EOF`).
    /// Fails only if `out` does (a `String` never does).
    pub fn encode<W: std::fmt::Write>(&self, out: &mut W) -> std::fmt::Result {
        for family in &self.text {
            family.encode(out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sink_writes_its_non_empty_families_in_push_order() {
        let mut sink = Sink::new("x");
        assert_eq!(sink.prefix(), "x");
        let mut fam = sink.gauge("text", "As text");
        fam.push(&[("domain", "a")], 1.0);
        sink.push(fam);
        sink.push(sink.counter("empty", "Never written"));
        sink.gauge_value("one", "One value", 3i64);
        sink.counter_value("count", "A count", 2u64);
        sink.info_value("build", "Build", &[("version", "1")]);
        let mut out = String::new();
        sink.encode(&mut out).unwrap();
        assert_eq!(
            out,
            "# HELP x_text As text.\n# TYPE x_text gauge\nx_text{domain=\"a\"} 1.0\n\
             # HELP x_one One value.\n# TYPE x_one gauge\nx_one 3\n\
             # HELP x_count A count.\n# TYPE x_count counter\nx_count_total 2\n\
             # HELP x_build Build.\n# TYPE x_build info\nx_build_info{version=\"1\"} 1\n"
        );
        assert_eq!(sink.text_len(), out.len());
    }
}
