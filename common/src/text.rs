//! Metric families written straight to OpenMetrics text: the one way collectors write metrics
//! (through [`crate::Sink`]'s `gauge`, `counter`, `info` and `histogram`).
//!
//! A [`TextFamily`] writes each sample line as it is pushed, from borrowed label pairs, into one
//! buffer per family. prometheus-client's registry keeps an owned label set per series and
//! encodes them later through a chain of `dyn Write` encoders, which at 30k series (libvirt:
//! about 30 series per domain, 1,000 domains a node) costs about a third of a scrape's wall
//! time. The bytes are exactly what prometheus-client writes for the same family (same HELP
//! period, label escaping, `dtoa` floats and plain decimal integers, `_total` on counters,
//! `_info` on info metrics, a histogram's `_sum`, `_count` and cumulative `_bucket` lines with
//! `le` first), so the framework's rewrite to the classic text format applies unchanged; the
//! tests below compare the two.
//!
//! A sample value is any [`Value`]: an `f64` is written as prometheus-client writes a float
//! (`1.0`), a `u64` or `i64` as it writes an integer (`1`).
//!
//! A family keeps one series per label set, as a prometheus-client `Family` does (here the first
//! sample wins and repeats are dropped): a duplicated series makes Prometheus reject the whole
//! scrape. A family without a sample
//! is not written at all, unless made with [`TextFamily::written_when_empty`].

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// A fast non-cryptographic hasher (FxHash's multiply-rotate) for per-scrape maps and sets: keys
/// come from the node (libvirt, OVS), not from the network, and a scrape hashes tens of thousands
/// of them (SipHash, the std default, was a visible share of a scrape's CPU time).
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
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

/// The type of a [`TextFamily`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// Samples are written with `_total` appended.
    Counter,
    /// Samples are written with `_info` appended, value 1.
    Info,
    /// Samples are pushed with [`TextFamily::push_histogram`].
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    fn type_name(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Info => "info",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value, written as prometheus-client writes that type.
pub trait Value: Copy {
    /// Appends the value's text.
    fn write(self, out: &mut String);
}

impl Value for f64 {
    fn write(self, out: &mut String) {
        out.push_str(dtoa::Buffer::new().format(self));
    }
}

impl Value for u64 {
    fn write(self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "{self}");
    }
}

impl Value for i64 {
    fn write(self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "{self}");
    }
}

/// One metric family being written as OpenMetrics text.
#[derive(Debug)]
pub struct TextFamily {
    /// The full name, prefix included.
    name: String,
    help: String,
    kind: Kind,
    /// Sample lines, each ending in `\n`.
    body: String,
    /// Sample lines of shared families appended after `body`, uncopied.
    shared: Vec<Arc<str>>,
    /// Label-set hash -> byte range of that label set in `body`, for dropping repeats.
    seen: HashMap<u64, (u32, u32), FxBuild>,
    samples: usize,
    /// Whether the descriptor is written even without a sample.
    when_empty: bool,
}

/// A finished family whose sample lines are shared, uncopied, by the families it is appended
/// to ([`TextFamily::append_shared`]): for series rendered once and sent on every scrape.
#[derive(Debug, Clone)]
pub struct SharedFamily {
    name: String,
    help: String,
    kind: Kind,
    body: Arc<str>,
    samples: usize,
}

impl SharedFamily {
    /// How many samples the family holds.
    pub fn len(&self) -> usize {
        self.samples
    }

    /// Whether the family has no sample.
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }
}

impl TextFamily {
    /// A family `<prefix>_<name>` (just `name` when `prefix` is empty). `help` gets a final
    /// period, as prometheus-client's `Registry::register` adds one. Collectors take theirs from
    /// [`crate::Sink`] (`gauge`, `counter`, `info`, `histogram`), which passes its prefix.
    pub fn new(prefix: &str, name: &str, help: &str, kind: Kind) -> Self {
        let name = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}_{name}")
        };
        Self {
            name,
            help: format!("{help}."),
            kind,
            body: String::new(),
            shared: Vec::new(),
            seen: HashMap::default(),
            samples: 0,
            when_empty: false,
        }
    }

    /// An empty family with the same name, help and type as `other`.
    pub fn empty_like(other: &SharedFamily) -> Self {
        Self {
            name: other.name.clone(),
            help: other.help.clone(),
            kind: other.kind,
            body: String::new(),
            shared: Vec::new(),
            seen: HashMap::default(),
            samples: 0,
            when_empty: false,
        }
    }

    /// Makes the family write its descriptor (`# HELP`, `# TYPE`) even when it has no sample:
    /// for a family whose presence tells a reader the metric exists though nothing was counted
    /// under any label yet.
    pub fn written_when_empty(mut self) -> Self {
        self.when_empty = true;
        self
    }

    /// Freezes the family so that its samples can be appended to others without a copy.
    pub fn share(self) -> SharedFamily {
        let mut body = self.body;
        for part in &self.shared {
            body.push_str(part);
        }
        SharedFamily {
            name: self.name,
            help: self.help,
            kind: self.kind,
            body: Arc::from(body),
            samples: self.samples,
        }
    }

    /// Appends the samples of `other` (a family of the same name) after this family's own, as
    /// they are and without a copy, and without checking them against this family's label sets:
    /// for parts whose label sets cannot collide, such as the series of different domains
    /// rendered apart and cached.
    pub fn append_shared(&mut self, other: &SharedFamily) {
        debug_assert_eq!(self.name, other.name);
        if other.samples > 0 {
            self.shared.push(Arc::clone(&other.body));
            self.samples += other.samples;
        }
    }

    /// How many samples the family holds.
    pub fn len(&self) -> usize {
        self.samples
    }

    /// Whether the family has no sample.
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// Whether [`TextFamily::write_to`] writes anything: it has a sample, or is
    /// [`TextFamily::written_when_empty`].
    pub fn is_written(&self) -> bool {
        self.samples > 0 || self.when_empty
    }

    /// Appends a sample of a gauge, counter or info family (an info sample's value is 1 by
    /// convention). The value is written as given, as prometheus-client writes a constant
    /// metric's (a collector whose source marks "unknown" with -1 leaves such a sample out
    /// itself); a label set already present is dropped (first wins).
    pub fn push<K: AsRef<str>, V: AsRef<str>>(&mut self, labels: &[(K, V)], value: impl Value) {
        debug_assert!(
            self.kind != Kind::Histogram,
            "{}: use push_histogram",
            self.name
        );
        let suffix = match self.kind {
            Kind::Counter => "_total",
            Kind::Info => "_info",
            Kind::Gauge | Kind::Histogram => "",
        };
        if self.start_line(suffix, None, labels, true) {
            self.finish_line(value);
            self.samples += 1;
        }
    }

    /// Appends one series of a histogram family: `buckets` are (upper bound, observations in
    /// that bucket alone), the last bound `f64::INFINITY`, as prometheus-client's
    /// `encode_histogram` takes them; `_sum`, `_count` and the cumulative `_bucket` lines are
    /// written. A label set already present is dropped (first wins).
    pub fn push_histogram<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        labels: &[(K, V)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        debug_assert_eq!(self.kind, Kind::Histogram, "{}", self.name);
        if !self.start_line("_sum", None, labels, true) {
            return;
        }
        self.finish_line(sum);
        self.start_line("_count", None, labels, false);
        self.finish_line(count);
        let mut cumulative = 0u64;
        let mut le = dtoa::Buffer::new();
        for &(bound, n) in buckets {
            cumulative = cumulative.saturating_add(n);
            let bound = if bound == f64::INFINITY {
                "+Inf"
            } else {
                le.format(bound)
            };
            self.start_line("_bucket", Some(bound), labels, false);
            self.finish_line(cumulative);
        }
        self.samples += 1;
    }

    /// Writes `<name><suffix>{le="..",labels}` (`le` first when given, as prometheus-client
    /// writes bucket lines). With `dedupe`, a label set seen before is cut again and `false`
    /// returned.
    fn start_line<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        suffix: &str,
        le: Option<&str>,
        labels: &[(K, V)],
        dedupe: bool,
    ) -> bool {
        let line_start = self.body.len();
        self.body.push_str(&self.name);
        self.body.push_str(suffix);
        let labels_start = self.body.len();
        if le.is_some() || !labels.is_empty() {
            self.body.push('{');
            if let Some(le) = le {
                self.body.push_str("le=\"");
                self.body.push_str(le);
                self.body.push('"');
                if !labels.is_empty() {
                    self.body.push(',');
                }
            }
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.body.push(',');
                }
                self.body.push_str(k.as_ref());
                self.body.push_str("=\"");
                push_escaped(&mut self.body, v.as_ref());
                self.body.push('"');
            }
            self.body.push('}');
        }
        if !dedupe {
            return true;
        }
        let labels_end = self.body.len();
        let key = {
            let mut h = FxBuild::default().build_hasher();
            h.write(&self.body.as_bytes()[labels_start..labels_end]);
            h.finish()
        };
        let (Ok(start), Ok(end)) = (u32::try_from(labels_start), u32::try_from(labels_end)) else {
            // A family of more than 4 GiB: no dedupe past that point.
            return true;
        };
        match self.seen.get(&key) {
            Some(&(s, e))
                if self.body.as_bytes().get(s as usize..e as usize)
                    == self.body.as_bytes().get(labels_start..labels_end) =>
            {
                self.body.truncate(line_start);
                return false;
            }
            // A hash collision of two different label sets: both are kept.
            Some(_) => {}
            None => {
                self.seen.insert(key, (start, end));
            }
        }
        true
    }

    fn finish_line(&mut self, value: impl Value) {
        self.body.push(' ');
        value.write(&mut self.body);
        self.body.push('\n');
    }

    /// Bytes [`TextFamily::write_to`] writes.
    pub fn encoded_len(&self) -> usize {
        if !self.is_written() {
            return 0;
        }
        let shared: usize = self.shared.iter().map(|p| p.len()).sum();
        "# HELP  \n# TYPE  \n".len()
            + self.name.len() * 2
            + self.help.len()
            + self.kind.type_name().len()
            + self.body.len()
            + shared
    }

    /// Appends the family (descriptor and samples) to `out`, if [`TextFamily::is_written`].
    pub fn write_to(&self, out: &mut String) {
        out.reserve(self.encoded_len());
        // A String takes every write.
        let _ = self.encode(out);
    }

    /// Writes the family (descriptor and samples) to `out`, if [`TextFamily::is_written`].
    pub fn encode<W: std::fmt::Write>(&self, out: &mut W) -> std::fmt::Result {
        if !self.is_written() {
            return Ok(());
        }
        for part in [
            "# HELP ",
            &self.name,
            " ",
            &self.help,
            "\n# TYPE ",
            &self.name,
            " ",
            self.kind.type_name(),
            "\n",
            &self.body,
        ] {
            out.write_str(part)?;
        }
        for part in &self.shared {
            out.write_str(part)?;
        }
        Ok(())
    }
}

/// Appends a label value with OpenMetrics escaping (`\\`, `\"`, `\n`).
fn push_escaped(out: &mut String, v: &str) {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prometheus_client::encoding::text::encode_registry;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    use std::sync::atomic::AtomicU64;

    type L = Vec<(String, String)>;

    fn pairs(l: &[(&str, &str)]) -> L {
        l.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn bytes_equal_prometheus_client_for_gauges_and_counters() {
        let samples: [(&[(&str, &str)], f64); 5] = [
            (&[("domain", "a"), ("vcpu", "0")], 1.0),
            (&[("domain", "quo\"te\\back\nline"), ("vcpu", "1")], 2.5e-7),
            (&[("domain", "ünïcode"), ("vcpu", "2")], 123_456_789_012.0),
            (&[("domain", ""), ("vcpu", "3")], 0.1),
            (&[("domain", "big"), ("vcpu", "4")], 1e21),
        ];
        for kind in [Kind::Gauge, Kind::Counter] {
            let mut reg = Registry::with_prefix("t");
            match kind {
                Kind::Gauge => {
                    let fam = Family::<L, Gauge<f64, AtomicU64>>::default();
                    for (l, v) in samples {
                        fam.get_or_create(&pairs(l)).set(v);
                    }
                    reg.register("x", "Help of x", fam);
                }
                _ => {
                    let fam = Family::<L, Counter<f64, AtomicU64>>::default();
                    for (l, v) in samples {
                        fam.get_or_create(&pairs(l)).inc_by(v);
                    }
                    reg.register("x", "Help of x", fam);
                }
            }
            let mut want = String::new();
            encode_registry(&mut want, &reg).unwrap();
            let mut fam = TextFamily::new("t", "x", "Help of x", kind);
            for (l, v) in samples {
                fam.push(l, v);
            }
            let mut got = String::new();
            fam.write_to(&mut got);
            // prometheus-client's Family orders series by hash; compare the sets of lines.
            let mut w: Vec<&str> = want.lines().collect();
            let mut g: Vec<&str> = got.lines().collect();
            assert_eq!(&g[..2], &w[..2], "descriptor of {kind:?}");
            w.sort_unstable();
            g.sort_unstable();
            assert_eq!(g, w, "{kind:?}");
        }
    }

    /// What prometheus-client writes for one registered metric.
    fn registered(name: &str, metric: impl prometheus_client::registry::Metric) -> String {
        let mut reg = Registry::with_prefix("t");
        reg.register(name, "Help of x", metric);
        let mut out = String::new();
        encode_registry(&mut out, &reg).unwrap();
        out
    }

    #[test]
    fn bytes_equal_prometheus_client_for_integers_infos_histograms_and_empty_families() {
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::histogram::Histogram;
        use prometheus_client::metrics::info::Info;

        let mut f = TextFamily::new("t", "x", "Help of x", Kind::Counter);
        f.push::<&str, &str>(&[], 7u64);
        let mut got = String::new();
        f.write_to(&mut got);
        assert_eq!(got, registered("x", ConstCounter::new(7u64)));

        let mut f = TextFamily::new("t", "x", "Help of x", Kind::Gauge);
        f.push::<&str, &str>(&[], -3i64);
        let mut got = String::new();
        f.write_to(&mut got);
        assert_eq!(got, registered("x", ConstGauge::new(-3i64)));

        let mut f = TextFamily::new("t", "x", "Help of x", Kind::Info);
        f.push(&[("version", "1.\"0"), ("rustc", "r")], 1u64);
        let mut got = String::new();
        f.write_to(&mut got);
        let info = Info::new(vec![
            ("version".to_string(), "1.\"0".to_string()),
            ("rustc".to_string(), "r".to_string()),
        ]);
        assert_eq!(got, registered("x", info));

        for labels in [pairs(&[]), pairs(&[("source", "pods"), ("k", "v")])] {
            // A family writes `{}` for an empty label set: an unlabelled one is a plain metric.
            let fam =
                Family::<L, Histogram>::new_with_constructor(|| Histogram::new([0.5, 1.0, 10.0]));
            let plain = Histogram::new([0.5, 1.0, 10.0]);
            for v in [0.1, 0.7, 0.7, 3.0, 99.0] {
                fam.get_or_create(&labels).observe(v);
                plain.observe(v);
            }
            let want = if labels.is_empty() {
                registered("x", plain)
            } else {
                registered("x", fam)
            };
            let mut f = TextFamily::new("t", "x", "Help of x", Kind::Histogram);
            let buckets = [(0.5, 1), (1.0, 2), (10.0, 1), (f64::INFINITY, 1)];
            f.push_histogram(&labels, &buckets, 103.5, 5);
            f.push_histogram(&labels, &buckets, 0.0, 0);
            let mut got = String::new();
            f.write_to(&mut got);
            assert_eq!(got, want, "{labels:?}");
        }

        // An empty prometheus-client family is not written either.
        let f = TextFamily::new("t", "x", "Help of x", Kind::Counter);
        let mut got = String::new();
        f.write_to(&mut got);
        assert_eq!(got, registered("x", Family::<L, Counter>::default()));
        let f = f.written_when_empty();
        f.write_to(&mut got);
        assert_eq!(got, "# HELP t_x Help of x.\n# TYPE t_x counter\n");
        assert_eq!(got.len(), f.encoded_len());
    }

    #[test]
    fn repeated_label_sets_are_written_once_first_wins() {
        let mut f = TextFamily::new("t", "x", "X", Kind::Gauge);
        f.push(&[("domain", "a"), ("vcpu", "0")], 1.0);
        f.push(&[("domain", "a"), ("vcpu", "1")], 2.0);
        f.push(&[("domain", "a"), ("vcpu", "0")], 3.0);
        f.push(&[("domain", "b"), ("vcpu", "0")], 4.0);
        assert_eq!(f.len(), 3);
        let mut out = String::new();
        f.write_to(&mut out);
        let samples: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                r#"t_x{domain="a",vcpu="0"} 1.0"#,
                r#"t_x{domain="a",vcpu="1"} 2.0"#,
                r#"t_x{domain="b",vcpu="0"} 4.0"#,
            ]
        );
    }

    #[test]
    fn shared_families_are_appended_after_own_samples() {
        let mut a = TextFamily::new("t", "x", "X", Kind::Gauge);
        a.push(&[("domain", "a")], 1.0);
        let a = a.share();
        let mut b = TextFamily::new("t", "x", "X", Kind::Gauge);
        b.push(&[("domain", "b")], 2.0);
        let b = b.share();
        assert_eq!((a.len(), b.is_empty()), (1, false));
        let mut all = TextFamily::empty_like(&a);
        all.push(&[("domain", "own")], 0.0);
        all.append_shared(&a);
        all.append_shared(&b);
        assert_eq!(all.len(), 3);
        let mut out = String::new();
        all.write_to(&mut out);
        assert_eq!(out.len(), all.encoded_len());
        assert_eq!(
            out,
            "# HELP t_x X.\n# TYPE t_x gauge\nt_x{domain=\"own\"} 0.0\nt_x{domain=\"a\"} 1.0\nt_x{domain=\"b\"} 2.0\n"
        );
    }

    #[test]
    fn empty_families_write_nothing_and_counters_write_their_value_as_given() {
        let mut f = TextFamily::new("t", "c", "C", Kind::Counter);
        assert!(f.is_empty());
        let mut out = String::new();
        f.write_to(&mut out);
        assert_eq!(out, "");
        f.push::<&str, &str>(&[], 5.0);
        f.push(&[("k", "neg")], -1.5);
        f.write_to(&mut out);
        assert_eq!(
            out,
            "# HELP t_c C.\n# TYPE t_c counter\nt_c_total 5.0\nt_c_total{k=\"neg\"} -1.5\n"
        );
    }
}
