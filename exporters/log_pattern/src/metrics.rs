//! The encoding of what one scrape serves ([`Snapshot`]): the rule counters, the tailer's
//! [`Counters`] and [`Gauges`] ([`crate::tail::counters`]) and [`SaveStats`], which describe the
//! state file itself and live only as long as the process. [`encode`] turns a [`Snapshot`] into
//! fresh prometheus-client metrics on each scrape.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::sink::{Num, NumKind, RuleInfo, SeriesValue};
use crate::tail::counters::{Counters, Gauges, LagHistogram, LAG_BUCKETS};

/// State-file statistics of this process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SaveStats {
    pub saves: u64,
    pub failures: u64,
    pub last_success_timestamp: f64,
    pub load_failures: u64,
}

/// Everything one scrape serves.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub counters: Counters,
    pub matches: Vec<SeriesValue>,
    /// The rules in force, for `rule_info`.
    pub rules: Vec<RuleInfo>,
    pub gauges: Gauges,
    pub saves: SaveStats,
}

/// Lag histograms with labels, encoded in the given order.
#[derive(Debug)]
struct ConstHistograms(Vec<(Vec<(String, String)>, LagHistogram)>);

impl EncodeMetric for ConstHistograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            let buckets: Vec<(f64, u64)> = LAG_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .enumerate()
                .map(|(i, b)| (b, h.buckets.get(i).copied().unwrap_or(0)))
                .collect();
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
        }
        Ok(())
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Counters with labels, encoded in the given order (a prometheus-client `Family` is a hash
/// map, whose order would change from scrape to scrape and break golden files).
#[derive(Debug, Default)]
pub struct ConstCounters(pub Vec<(Vec<(String, String)>, u64)>);

impl EncodeMetric for ConstCounters {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, v) in &self.0 {
            encoder
                .encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(v, None)?;
        }
        Ok(())
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Gauges with labels, encoded in the given order.
#[derive(Debug, Default)]
pub struct ConstGauges(pub Vec<(Vec<(String, String)>, u64)>);

impl EncodeMetric for ConstGauges {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, v) in &self.0 {
            let v = i64::try_from(*v).unwrap_or(i64::MAX);
            encoder.encode_family(labels)?.encode_gauge(&v)?;
        }
        Ok(())
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// The series of one rule metric: line counters, or the numbers of `| unwrap` rules (all of
/// one kind, which the config validation guarantees per metric).
#[derive(Debug, Default)]
struct RuleFamily {
    kind: Option<NumKind>,
    series: Vec<RuleSeries>,
}

/// Labels, observation (or line) count, and the numbers of an `| unwrap` series.
type RuleSeries = (Vec<(String, String)>, u64, Option<Num>);

impl EncodeMetric for RuleFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, count, num) in &self.series {
            let mut e = encoder.encode_family(labels)?;
            match (self.kind, num) {
                (Some(NumKind::Sum), Some(n)) => {
                    e.encode_counter::<NoLabelSet, _, u64>(&n.sum, None)?;
                }
                (Some(NumKind::Gauge), Some(n)) => e.encode_gauge(&n.last)?,
                (Some(NumKind::Histogram), Some(n)) => {
                    let buckets: Vec<(f64, u64)> = n
                        .bounds
                        .iter()
                        .copied()
                        .chain([f64::INFINITY])
                        .zip(n.buckets.iter().copied())
                        .collect();
                    e.encode_histogram::<NoLabelSet>(n.sum, *count, &buckets, None)?;
                }
                _ => e.encode_counter::<NoLabelSet, _, u64>(count, None)?,
            }
        }
        Ok(())
    }
    fn metric_type(&self) -> MetricType {
        match self.kind {
            None | Some(NumKind::Sum) => MetricType::Counter,
            Some(NumKind::Gauge) => MetricType::Gauge,
            Some(NumKind::Histogram) => MetricType::Histogram,
        }
    }
}

/// Info series (value 1), encoded as an info metric (`_info` is appended).
#[derive(Debug, Default)]
struct ConstInfo(Vec<Vec<(String, String)>>);

impl EncodeMetric for ConstInfo {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for labels in &self.0 {
            encoder.encode_info(labels)?;
        }
        Ok(())
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Info
    }
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge_u(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

fn by_label(label: &str, map: &BTreeMap<String, u64>, keys: &[&str]) -> ConstCounters {
    // Known keys start at 0 so rate() sees the first increase.
    let mut all: BTreeMap<&str, u64> = keys.iter().map(|k| (*k, 0)).collect();
    for (k, v) in map {
        *all.entry(k.as_str()).or_default() += v;
    }
    ConstCounters(
        all.into_iter()
            .map(|(k, v)| (vec![(label.to_string(), k.to_string())], v))
            .collect(),
    )
}

/// Registers every metric of `snap` (the registry already has the `log_pattern` prefix).
pub fn encode(snap: &Snapshot, r: &mut Registry) {
    encode_rule_series(snap, r);
    encode_tailer(&snap.counters, &snap.gauges, r);
    encode_saves(&snap.saves, r);
}

/// The rules' series (`matches` and the rules' own metrics), one info series per rule in
/// force, and the per-tenant overflow and series counts.
fn encode_rule_series(snap: &Snapshot, r: &mut Registry) {
    // Rule series, grouped by metric (`matches` first, then rules' own metrics by name).
    let mut by_metric: BTreeMap<&str, RuleFamily> = BTreeMap::new();
    by_metric.insert(crate::config::DEFAULT_METRIC, RuleFamily::default());
    // Per tenant: overflowed lines, and series in force (overflow and error series aside).
    let mut tenants: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for s in &snap.matches {
        if s.metric.as_deref() == Some(crate::sink::TENANT_OVERFLOW) {
            tenants.entry(&s.tenant).or_default().0 += s.value;
            continue;
        }
        if !s.tenant.is_empty()
            && !s.overflow
            && s.metric.as_deref() != Some(crate::sink::UNWRAP_ERRORS)
        {
            tenants.entry(&s.tenant).or_default().1 += 1;
        }
        let mut labels = Vec::with_capacity(s.labels.len() + 2);
        if !s.tenant.is_empty() {
            labels.push(("tenant".to_string(), s.tenant.clone()));
        }
        labels.push(("rule".to_string(), s.rule.clone()));
        if s.overflow {
            labels.push(("overflow".into(), "true".into()));
        } else {
            labels.extend(s.labels.iter().cloned());
        }
        let metric = s.metric.as_deref().unwrap_or(crate::config::DEFAULT_METRIC);
        let family = by_metric.entry(metric).or_default();
        family.kind = s.num.as_ref().map(|n| n.kind);
        family.series.push((labels, s.value, s.num.clone()));
    }
    if let Some(matches) = by_metric.remove(crate::config::DEFAULT_METRIC) {
        r.register(
            crate::config::DEFAULT_METRIC,
            "Log lines that matched a rule, by rule and source labels; past a rule's series budget, counted in its overflow=\"true\" series",
            matches,
        );
    }
    if let Some(errors) = by_metric.remove(crate::sink::UNWRAP_ERRORS) {
        r.register(
            crate::sink::UNWRAP_ERRORS,
            "Lines of | unwrap rules whose extracted field is not a number (not observed), by rule",
            errors,
        );
    }
    for (name, family) in by_metric {
        let help = match family.kind {
            None => "Log lines that matched the rules naming this metric, by rule and source labels (overflow=\"true\" past a rule's series budget)",
            Some(NumKind::Sum) => "Sum of the numbers extracted (| unwrap) from matching log lines, by rule and labels (overflow=\"true\" past a rule's series budget)",
            Some(NumKind::Gauge) => "Last number extracted (| unwrap) from a matching log line, by rule and labels (overflow=\"true\" past a rule's series budget)",
            Some(NumKind::Histogram) => "Numbers extracted (| unwrap) from matching log lines, by rule and labels (overflow=\"true\" past a rule's series budget)",
        };
        r.register(name, help, family);
    }
    r.register(
        "rule",
        "One series per rule in force: whether the LogPatternMatched alert fires for it, and its severity",
        ConstInfo(
            snap.rules
                .iter()
                .map(|i| {
                    let tenant = (!i.tenant.is_empty())
                        .then(|| ("tenant".to_string(), i.tenant.clone()));
                    tenant
                        .into_iter()
                        .chain([
                            ("rule".to_string(), i.rule.clone()),
                            ("alert".to_string(), i.alert.to_string()),
                            ("severity".to_string(), i.severity.to_string()),
                        ])
                        .collect()
                })
                .collect(),
        ),
    );
    if !tenants.is_empty() {
        let label = |t: &str| vec![("tenant".to_string(), t.to_string())];
        r.register(
            crate::sink::TENANT_OVERFLOW,
            "Lines of a tenant's rules counted into an overflow series (past a rule's max_series or the tenant's series budget), by tenant",
            ConstCounters(tenants.iter().map(|(t, (o, _))| (label(t), *o)).collect()),
        );
        r.register(
            "ruleset_series",
            "Series of a tenant's rules in force (overflow series aside), by tenant",
            ConstGauges(tenants.iter().map(|(t, (_, n))| (label(t), *n)).collect()),
        );
    }
}

/// What the tailer counted and holds: lines and bytes read, files, rotations, errors, rescans,
/// event lag.
fn encode_tailer(c: &Counters, g: &Gauges, r: &mut Registry) {
    r.register(
        "lines_read",
        "Logical log lines read (partial lines joined)",
        counter(c.lines_read),
    );
    r.register(
        "read_bytes",
        "Bytes read from log files",
        counter(c.bytes_read),
    );
    r.register(
        "files_opened",
        "Log files started to be followed",
        counter(c.files_opened),
    );
    r.register(
        "rotations",
        "Followed files that were renamed, replaced or removed",
        counter(c.rotations),
    );
    r.register(
        "truncations",
        "Files that shrank below the read offset (copytruncate) and were read again from byte 0",
        counter(c.truncations),
    );
    r.register(
        "truncated_unread_bytes",
        "Bytes lost to a truncation before they could be read (from the last size seen)",
        counter(c.truncated_unread_bytes),
    );
    r.register("files_lost", "Files in the saved state that could no longer be found at start (their unread rest is lost)", counter(c.files_lost));
    r.register(
        "long_lines",
        "Lines longer than --tail.max-line-bytes (partials joined), cut to that length",
        counter(c.long_lines),
    );
    r.register(
        "invalid_utf8_lines",
        "Lines that are not valid UTF-8 (matched as bytes)",
        counter(c.invalid_utf8_lines),
    );
    r.register(
        "parse_errors",
        "Lines that do not parse in their file's format (matched as plain text)",
        by_label("format", &c.parse_errors, &["cri", "docker"]),
    );
    r.register(
        "read_errors",
        "Files or directories that could not be read, by reason",
        by_label("reason", &c.read_errors, &["permission_denied", "io"]),
    );
    r.register(
        "inotify_overflows",
        "inotify event queue overflows (each triggers a full rescan)",
        counter(c.inotify_overflows),
    );
    r.register(
        "rescans",
        "Directory scans, by trigger",
        by_label(
            "trigger",
            &c.rescans,
            &["start", "periodic", "inotify", "overflow"],
        ),
    );
    let source = |s: &str| vec![("source".to_string(), s.to_string())];
    r.register(
        "event_lag_seconds",
        "Read time minus the line's own timestamp, by source (\"pods\": the pod log tree's CRI or Docker timestamp; a glob source: its path pattern)",
        ConstHistograms(
            std::iter::once((source(crate::timestamp::PODS), c.lag.clone()))
                .chain(c.source_lag.iter().map(|(k, h)| (source(k), h.clone())))
                .collect(),
        ),
    );
    r.register(
        "timestamp_parse_errors",
        "Lines of a source with a configured timestamp whose stamp did not parse (matched as usual, no lag observed), by source",
        by_label("source", &c.timestamp_parse_errors, &[]),
    );
    r.register(
        "files_watched",
        "Log files open and followed, rotated ones included",
        gauge_u(g.files_open),
    );
    r.register(
        "rotated_files_open",
        "Rotated files still open until read to their end",
        gauge_u(g.files_rotated_open),
    );
    r.register(
        "directories_watched",
        "Directories under an inotify watch",
        gauge_u(g.dirs_watched),
    );
    r.register(
        "backlog_bytes",
        "Bytes written to followed files but not yet read (size minus offset)",
        gauge_u(g.backlog_bytes),
    );
}

/// The state file's saves.
fn encode_saves(s: &SaveStats, r: &mut Registry) {
    r.register(
        "state_saves",
        "Successful state file saves by this process",
        counter(s.saves),
    );
    r.register(
        "state_save_failures",
        "Failed state file saves by this process (values served stay those of the last good save)",
        counter(s.failures),
    );
    r.register(
        "state_load_failures",
        "State files that could not be read or parsed at start and were set aside",
        counter(s.load_failures),
    );
    let ts = Gauge::<f64, AtomicU64>::default();
    ts.set(s.last_success_timestamp);
    r.register(
        "state_last_save_timestamp_seconds",
        "Time of the last successful state save (0: none yet)",
        ts,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let mut h = LagHistogram::default();
        h.observe(0.01);
        h.observe(-3.0);
        h.observe(7.0);
        h.observe(1e6);
        assert_eq!(h.count, 4);
        assert_eq!(h.buckets[0], 2);
        assert_eq!(h.buckets[7], 1);
        assert_eq!(h.buckets[10], 1);
        let mut snap = Snapshot::default();
        snap.counters.lag = h;
        let mut app = LagHistogram::default();
        app.observe(3.0);
        snap.counters
            .source_lag
            .insert("/var/log/app/*.log".into(), app);
        snap.counters
            .timestamp_parse_errors
            .insert("/var/log/app/*.log".into(), 5);
        let mut r = Registry::with_prefix("log_pattern");
        encode(&snap, &mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(
            out.contains("log_pattern_event_lag_seconds_bucket{le=\"0.05\",source=\"pods\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("log_pattern_event_lag_seconds_bucket{le=\"+Inf\",source=\"pods\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("log_pattern_parse_errors_total{format=\"cri\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("log_pattern_event_lag_seconds_bucket{le=\"2.5\",source=\"/var/log/app/*.log\"} 0\nlog_pattern_event_lag_seconds_bucket{le=\"5.0\",source=\"/var/log/app/*.log\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "log_pattern_timestamp_parse_errors_total{source=\"/var/log/app/*.log\"} 5\n"
            ),
            "{out}"
        );
    }
}
