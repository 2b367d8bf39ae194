//! Building one scrape's constant metrics: families of `(labels, value)` registered in one go.
//!
//! Every scrape starts from fresh families, so a domain that disappeared leaves no stale series.
//! Label sets are plain `(name, value)` lists; counters get prometheus-client's `_total`.
#![forbid(unsafe_code)]

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label set.
pub type Labels = Vec<(String, String)>;

/// Builds a label set from pairs.
pub fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// A gauge family being filled.
#[derive(Default)]
pub struct Gauges(Family<Labels, Gauge<f64, AtomicU64>>);

impl Gauges {
    pub fn set(&self, labels: Labels, value: f64) {
        self.0.get_or_create(&labels).set(value);
    }
    pub fn register(self, reg: &mut Registry, name: &str, help: &str) {
        reg.register(name, help, self.0);
    }
}

/// A counter family being filled (values copied from libvirt's own counters).
#[derive(Default)]
pub struct Counters(Family<Labels, Counter<f64, AtomicU64>>);

impl Counters {
    pub fn set(&self, labels: Labels, value: f64) {
        if value.is_finite() && value >= 0.0 {
            self.0.get_or_create(&labels).inc_by(value);
        }
    }
    pub fn register(self, reg: &mut Registry, name: &str, help: &str) {
        reg.register(name, help, self.0);
    }
}

/// Registers a single unlabelled gauge.
pub fn gauge(reg: &mut Registry, name: &str, help: &str, value: f64) {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(value);
    reg.register(name, help, g);
}

/// Registers a single unlabelled counter.
pub fn counter(reg: &mut Registry, name: &str, help: &str, value: f64) {
    let c = Counter::<f64, AtomicU64>::default();
    if value.is_finite() && value >= 0.0 {
        c.inc_by(value);
    }
    reg.register(name, help, c);
}

/// The type of a [`ConstFamily`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// A family of constant samples encoded straight from a list: no hashing, no copy of the label
/// sets (a scrape of 1,000 domains has about 40k series). Identical label sets are emitted once
/// (the first wins).
#[derive(Debug)]
pub struct ConstFamily {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Labels, f64)>,
}

impl ConstFamily {
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    pub fn push(&mut self, labels: Labels, value: f64) {
        if self.kind == Kind::Counter && !(value.is_finite() && value >= 0.0) {
            return;
        }
        self.samples.push((labels, value));
    }

    /// Registers the family (the registry's prefix applies).
    pub fn register(self, reg: &mut Registry) {
        if !self.samples.is_empty() {
            reg.register_collector(Box::new(self));
        }
    }
}

impl prometheus_client::collector::Collector for ConstFamily {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        // `Registry::register` ends help with a period; do the same.
        let help = format!("{}.", self.help);
        let kind = match self.kind {
            Kind::Gauge => MetricType::Gauge,
            Kind::Counter => MetricType::Counter,
        };
        let mut family = encoder.encode_descriptor(self.name, &help, None, kind)?;
        let mut seen = std::collections::HashSet::with_capacity(self.samples.len());
        for (labels, value) in &self.samples {
            if !seen.insert(labels) {
                continue;
            }
            let enc = family.encode_family(labels)?;
            match self.kind {
                Kind::Gauge => ConstGauge::new(*value).encode(enc)?,
                Kind::Counter => ConstCounter::new(*value).encode(enc)?,
            }
        }
        Ok(())
    }
}
