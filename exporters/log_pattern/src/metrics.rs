//! The encoding of what one scrape serves ([`Snapshot`]): the rule counters, the tailer's
//! [`Counters`] and [`Gauges`] ([`crate::tail::counters`]) and [`SaveStats`], which describe the
//! state file itself and live only as long as the process. [`encode`] writes a [`Snapshot`]
//! into the scrape's [`Sink`] on each scrape, series in the order given (a golden file holds
//! them).

use std::collections::BTreeMap;

use common::text::TextFamily;
use common::Sink;

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

/// The series of one rule metric: line counters, or the numbers of `| unwrap` rules (all of
/// one kind, which the config validation guarantees per metric).
#[derive(Debug, Default)]
struct RuleFamily {
    kind: Option<NumKind>,
    series: Vec<RuleSeries>,
}

/// Labels, observation (or line) count, and the numbers of an `| unwrap` series.
type RuleSeries = (Vec<(String, String)>, u64, Option<Num>);

impl RuleFamily {
    /// The family `name`, written even without a series.
    fn write(self, sink: &Sink, name: &str, help: &str) -> TextFamily {
        let mut f = match self.kind {
            None | Some(NumKind::Sum) => sink.counter(name, help),
            Some(NumKind::Gauge) => sink.gauge(name, help),
            Some(NumKind::Histogram) => sink.histogram(name, help),
        }
        .written_when_empty();
        for (labels, count, num) in &self.series {
            match (self.kind, num) {
                (Some(NumKind::Sum), Some(n)) => f.push(labels, n.sum),
                (Some(NumKind::Gauge), Some(n)) => f.push(labels, n.last),
                (Some(NumKind::Histogram), Some(n)) => {
                    let buckets: Vec<(f64, u64)> = n
                        .bounds
                        .iter()
                        .copied()
                        .chain([f64::INFINITY])
                        .zip(n.buckets.iter().copied())
                        .collect();
                    f.push_histogram(labels, &buckets, n.sum, *count);
                }
                _ => f.push(labels, *count),
            }
        }
        f
    }
}

/// Counters by one label, known keys first at 0 (so rate() sees the first increase), in key
/// order; written even without a series.
fn by_label(
    sink: &Sink,
    (name, help): (&str, &str),
    label: &str,
    map: &BTreeMap<String, u64>,
    keys: &[&str],
) -> TextFamily {
    let mut all: BTreeMap<&str, u64> = keys.iter().map(|k| (*k, 0)).collect();
    for (k, v) in map {
        *all.entry(k.as_str()).or_default() += v;
    }
    let mut f = sink.counter(name, help).written_when_empty();
    for (k, v) in all {
        f.push(&[(label, k)], v);
    }
    f
}

/// Writes every metric of `snap` (the sink has the `log_pattern` prefix).
pub fn encode(snap: &Snapshot, sink: &mut Sink) {
    encode_rule_series(snap, sink);
    encode_tailer(&snap.counters, &snap.gauges, sink);
    encode_saves(&snap.saves, sink);
}

/// Per tenant: lines counted into overflow series, and series in force.
type TenantCounts<'a> = BTreeMap<&'a str, (u64, u64)>;

/// The rule series grouped by metric (`matches` always present), and the per-tenant counts.
fn group_series(snap: &Snapshot) -> (BTreeMap<&str, RuleFamily>, TenantCounts<'_>) {
    let mut by_metric: BTreeMap<&str, RuleFamily> = BTreeMap::new();
    by_metric.insert(crate::config::DEFAULT_METRIC, RuleFamily::default());
    let mut tenants = TenantCounts::new();
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
    (by_metric, tenants)
}

/// The rules' series (`matches` first, then `unwrap_errors`, then the rules' own metrics by
/// name), one info series per rule in force, and the per-tenant overflow and series counts.
fn encode_rule_series(snap: &Snapshot, sink: &mut Sink) {
    let (mut by_metric, tenants) = group_series(snap);
    if let Some(matches) = by_metric.remove(crate::config::DEFAULT_METRIC) {
        let f = matches.write(
            sink,
            crate::config::DEFAULT_METRIC,
            "Log lines that matched a rule, by rule and source labels; past a rule's series budget, counted in its overflow=\"true\" series",
        );
        sink.push(f);
    }
    if let Some(errors) = by_metric.remove(crate::sink::UNWRAP_ERRORS) {
        let f = errors.write(
            sink,
            crate::sink::UNWRAP_ERRORS,
            "Lines of | unwrap rules whose extracted field is not a number (not observed), by rule",
        );
        sink.push(f);
    }
    for (name, family) in by_metric {
        let help = match family.kind {
            None => "Log lines that matched the rules naming this metric, by rule and source labels (overflow=\"true\" past a rule's series budget)",
            Some(NumKind::Sum) => "Sum of the numbers extracted (| unwrap) from matching log lines, by rule and labels (overflow=\"true\" past a rule's series budget)",
            Some(NumKind::Gauge) => "Last number extracted (| unwrap) from a matching log line, by rule and labels (overflow=\"true\" past a rule's series budget)",
            Some(NumKind::Histogram) => "Numbers extracted (| unwrap) from matching log lines, by rule and labels (overflow=\"true\" past a rule's series budget)",
        };
        let f = family.write(sink, name, help);
        sink.push(f);
    }
    encode_rule_info(&snap.rules, sink);
    if !tenants.is_empty() {
        let mut overflow = sink.counter(
            crate::sink::TENANT_OVERFLOW,
            "Lines of a tenant's rules counted into an overflow series (past a rule's max_series or the tenant's series budget), by tenant",
        );
        let mut series = sink.gauge(
            "ruleset_series",
            "Series of a tenant's rules in force (overflow series aside), by tenant",
        );
        for (t, (o, n)) in &tenants {
            overflow.push(&[("tenant", *t)], *o);
            series.push(&[("tenant", *t)], *n);
        }
        sink.push(overflow);
        sink.push(series);
    }
}

/// `rule_info`: one series per rule in force.
fn encode_rule_info(rules: &[RuleInfo], sink: &mut Sink) {
    let mut info = sink
        .info(
            "rule",
            "One series per rule in force: whether the LogPatternMatched alert fires for it, and its severity",
        )
        .written_when_empty();
    for i in rules {
        let (alert, severity) = (i.alert.to_string(), i.severity.to_string());
        let tenant = (!i.tenant.is_empty()).then_some(("tenant", i.tenant.as_str()));
        let labels: Vec<(&str, &str)> = tenant
            .into_iter()
            .chain([
                ("rule", i.rule.as_str()),
                ("alert", alert.as_str()),
                ("severity", severity.as_str()),
            ])
            .collect();
        info.push(&labels, 1u64);
    }
    sink.push(info);
}

/// What the tailer counted and holds: lines and bytes read, files, rotations, errors, rescans,
/// event lag.
fn encode_tailer(c: &Counters, g: &Gauges, sink: &mut Sink) {
    for (name, help, v) in [
        ("lines_read", "Logical log lines read (partial lines joined)", c.lines_read),
        ("read_bytes", "Bytes read from log files", c.bytes_read),
        ("files_opened", "Log files started to be followed", c.files_opened),
        ("rotations", "Followed files that were renamed, replaced or removed", c.rotations),
        ("truncations", "Files that shrank below the read offset (copytruncate) and were read again from byte 0", c.truncations),
        ("truncated_unread_bytes", "Bytes lost to a truncation before they could be read (from the last size seen)", c.truncated_unread_bytes),
        ("files_lost", "Files in the saved state that could no longer be found at start (their unread rest is lost)", c.files_lost),
        ("long_lines", "Lines longer than --tail.max-line-bytes (partials joined), cut to that length", c.long_lines),
        ("invalid_utf8_lines", "Lines that are not valid UTF-8 (matched as bytes)", c.invalid_utf8_lines),
    ] {
        sink.counter_value(name, help, v);
    }
    let parse_errors = (
        "parse_errors",
        "Lines that do not parse in their file's format (matched as plain text)",
    );
    let f = by_label(
        sink,
        parse_errors,
        "format",
        &c.parse_errors,
        &["cri", "docker"],
    );
    sink.push(f);
    let read_errors = (
        "read_errors",
        "Files or directories that could not be read, by reason",
    );
    let f = by_label(
        sink,
        read_errors,
        "reason",
        &c.read_errors,
        &["permission_denied", "io"],
    );
    sink.push(f);
    sink.counter_value(
        "inotify_overflows",
        "inotify event queue overflows (each triggers a full rescan)",
        c.inotify_overflows,
    );
    let rescans = ("rescans", "Directory scans, by trigger");
    let triggers = ["start", "periodic", "inotify", "overflow"];
    let f = by_label(sink, rescans, "trigger", &c.rescans, &triggers);
    sink.push(f);
    let vanished = (
        "discovery_vanished",
        "Directories and log files an inotify event named as created that were removed before a scan could list them (their lines are lost), by kind",
    );
    let kinds = ["directory", "file"];
    let f = by_label(sink, vanished, "kind", &c.discovery_vanished, &kinds);
    sink.push(f);
    encode_lag(c, sink);
    for (name, help, v) in [
        (
            "files_watched",
            "Log files open and followed, rotated ones included",
            g.files_open,
        ),
        (
            "rotated_files_open",
            "Rotated files still open until read to their end",
            g.files_rotated_open,
        ),
        (
            "directories_watched",
            "Directories under an inotify watch",
            g.dirs_watched,
        ),
        (
            "backlog_bytes",
            "Bytes written to followed files but not yet read (size minus offset)",
            g.backlog_bytes,
        ),
    ] {
        sink.gauge_value(name, help, i64::try_from(v).unwrap_or(i64::MAX));
    }
}

/// `event_lag_seconds` by source, and `timestamp_parse_errors`.
fn encode_lag(c: &Counters, sink: &mut Sink) {
    let mut lag = sink
        .histogram(
            "event_lag_seconds",
            "Read time minus the line's own timestamp, by source (\"pods\": the pod log tree's CRI or Docker timestamp; a glob source: its path pattern)",
        )
        .written_when_empty();
    let sources = std::iter::once((crate::timestamp::PODS, &c.lag))
        .chain(c.source_lag.iter().map(|(k, h)| (k.as_str(), h)));
    for (source, h) in sources {
        lag.push_histogram(&[("source", source)], &lag_buckets(h), h.sum, h.count);
    }
    sink.push(lag);
    let errors = ("timestamp_parse_errors", "Lines of a source with a configured timestamp whose stamp did not parse (matched as usual, no lag observed), by source");
    let f = by_label(sink, errors, "source", &c.timestamp_parse_errors, &[]);
    sink.push(f);
}

/// A lag histogram's buckets as (upper bound, count in that bucket).
fn lag_buckets(h: &LagHistogram) -> Vec<(f64, u64)> {
    LAG_BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .enumerate()
        .map(|(i, b)| (b, h.buckets.get(i).copied().unwrap_or(0)))
        .collect()
}

/// The state file's saves.
fn encode_saves(s: &SaveStats, sink: &mut Sink) {
    sink.counter_value(
        "state_saves",
        "Successful state file saves by this process",
        s.saves,
    );
    sink.counter_value(
        "state_save_failures",
        "Failed state file saves by this process (values served stay those of the last good save)",
        s.failures,
    );
    sink.counter_value(
        "state_load_failures",
        "State files that could not be read or parsed at start and were set aside",
        s.load_failures,
    );
    sink.gauge_value(
        "state_last_save_timestamp_seconds",
        "Time of the last successful state save (0: none yet)",
        s.last_success_timestamp,
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
        let mut sink = Sink::new("log_pattern");
        encode(&snap, &mut sink);
        let mut out = String::new();
        sink.encode(&mut out).unwrap();
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
