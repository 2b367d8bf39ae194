//! Building one scrape's constant metrics: families of `(labels, value)` registered in one go.
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

/// A fast non-cryptographic hasher (FxHash's multiply-rotate) for the exporter's own maps and
/// sets: keys come from libvirt, not from the network, and a scrape hashes tens of thousands of
/// them (SipHash, the std default, was a visible share of a scrape's CPU time).
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn write_usize(&mut self, i: usize) {
        self.write(&i.to_le_bytes());
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `BuildHasher` of [`FxHasher`].
pub type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

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
        let mut seen: std::collections::HashSet<&Labels, FxBuild> =
            std::collections::HashSet::with_capacity_and_hasher(
                self.samples.len(),
                FxBuild::default(),
            );
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn identical_label_sets_are_emitted_once_first_wins() {
        let mut f = ConstFamily::new("x", "X", Kind::Gauge);
        f.push(labels([("domain", "a"), ("vcpu", "0")]), 1.0);
        f.push(labels([("domain", "a"), ("vcpu", "1")]), 2.0);
        f.push(labels([("domain", "a"), ("vcpu", "0")]), 3.0);
        f.push(labels([("domain", "b"), ("vcpu", "0")]), 4.0);
        let mut reg = Registry::with_prefix("t");
        f.register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &reg).unwrap();
        let samples: Vec<&str> = out.lines().filter(|l| l.starts_with("t_x{")).collect();
        assert_eq!(
            samples,
            [
                r#"t_x{domain="a",vcpu="0"} 1.0"#,
                r#"t_x{domain="a",vcpu="1"} 2.0"#,
                r#"t_x{domain="b",vcpu="0"} 4.0"#,
            ]
        );
    }
}
