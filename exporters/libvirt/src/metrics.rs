//! Small helpers for one scrape's registry metrics: labelled gauge and counter families and
//! single values. The per-domain families (tens of thousands of series) are written as text with
//! [`common::text::TextFamily`] instead.
//!
//! Every scrape starts from fresh families, so a domain that disappeared leaves no stale series.
//! Label sets are plain `(name, value)` lists; counters get prometheus-client's `_total`.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label set. Names are mostly literals, borrowed rather than allocated for each series.
pub type Labels = Vec<(Cow<'static, str>, String)>;

pub use common::text::FxBuild;

/// Builds a label set from pairs.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (Cow::Borrowed(*k), (*v).to_string()))
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
