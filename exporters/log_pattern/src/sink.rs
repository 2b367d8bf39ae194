//! The seam between the tailer and the rules: what a line is ([`Line`]), how a source is named
//! ([`Labels`], [`SourceId`]), what the tailer feeds lines into ([`LineSink`]) and the counter
//! values it saves and serves ([`SeriesValue`]).
//!
//! The tailer knows nothing about rules. When it starts following a file it registers the
//! file's source labels once ([`LineSink::source`]), so a rule engine can resolve its selectors
//! per file rather than per line; then it hands every logical line to [`LineSink::on_line`].
//! [`crate::rules::Rules`] is the engine; counter values are exported and restored as
//! [`SeriesValue`]s so they are saved atomically with the file offsets.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::Rule;
use crate::format::Stream;

/// Ordered label pairs of a source (e.g. namespace, pod, container).
pub type Labels = Vec<(String, String)>;

/// One logical line (partials joined), as rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub message: &'a [u8],
    pub stream: Stream,
    /// The line's own timestamp (Unix seconds), when the format has one.
    pub timestamp: Option<f64>,
}

/// Interned identity of a source label set.
pub type SourceId = usize;

/// A saved counter value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesValue {
    /// The rule's tenant (`""`: the platform's rules).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tenant: String,
    pub rule: String,
    /// Source labels; empty with `overflow` set for the overflow series.
    pub labels: Labels,
    #[serde(default)]
    pub overflow: bool,
    pub value: u64,
    /// The rule's own metric name, when it is not the default `matches`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// For `| unwrap` rules: the numbers behind the series (`value` counts observations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num: Option<Num>,
}

/// Metric name under which each `| unwrap` rule's lines without a usable number are counted.
pub const UNWRAP_ERRORS: &str = "unwrap_errors";

/// Metric name of each tenant's count of lines that went to an overflow series (its value has
/// the tenant and no rule).
pub const TENANT_OVERFLOW: &str = "ruleset_series_overflow";

/// What an `| unwrap` rule's series holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumKind {
    /// A counter adding the numbers.
    Sum,
    /// The last number.
    Gauge,
    Histogram,
}

/// The numbers of one `| unwrap` series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Num {
    pub kind: NumKind,
    pub sum: f64,
    pub last: f64,
    /// Histogram upper bounds and non-cumulative counts (one more, for +Inf).
    #[serde(default)]
    pub bounds: Vec<f64>,
    #[serde(default)]
    pub buckets: Vec<u64>,
}

impl Num {
    pub(crate) fn new(kind: NumKind, bounds: &[f64]) -> Self {
        let n = if kind == NumKind::Histogram {
            bounds.len() + 1
        } else {
            0
        };
        Self {
            kind,
            sum: 0.0,
            last: 0.0,
            bounds: if n > 0 { bounds.to_vec() } else { Vec::new() },
            buckets: vec![0; n],
        }
    }

    pub(crate) fn observe(&mut self, x: f64) {
        self.sum += x;
        self.last = x;
        if self.kind == NumKind::Histogram {
            let i = self
                .bounds
                .iter()
                .position(|&b| x <= b)
                .unwrap_or(self.bounds.len());
            if let Some(c) = self.buckets.get_mut(i) {
                *c += 1;
            }
        }
    }

    /// Adds saved values of the same shape; `false` (nothing changed) otherwise.
    pub(crate) fn merge(&mut self, o: &Num) -> bool {
        if o.kind != self.kind || o.bounds != self.bounds || o.buckets.len() != self.buckets.len() {
            return false;
        }
        self.sum += o.sum;
        self.last = o.last;
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        true
    }
}

/// What `log_pattern_rule_info` says of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleInfo {
    /// `""` for the platform's rules.
    pub tenant: String,
    pub rule: String,
    pub alert: bool,
    pub severity: &'static str,
}

/// What the tailer feeds lines into.
pub trait LineSink: Send {
    /// Interns a source's label set; called once per file, not per line.
    fn source(&mut self, labels: &Labels) -> SourceId;
    /// Examines one logical line of `source`.
    fn on_line(&mut self, source: SourceId, line: &Line<'_>);
    /// Current counter values, for saving and serving.
    fn values(&self) -> Vec<SeriesValue>;
    /// Resumes from saved values (values of unknown rules are dropped).
    fn restore(&mut self, values: &[SeriesValue]);
    /// Drops the series still at 0 that no source of `live` (the sources of the files
    /// followed now) counts into, freeing their place in the series budgets: the zero series
    /// of pods whose logs are gone. Series that counted something stay (see
    /// [`LineSink::expire_series`]). Sources not in `live` are forgotten: a file of theirs
    /// found later interns them again.
    fn retain_sources(&mut self, live: &[SourceId]) {
        let _ = live;
    }
    /// Drops the series that no source of `live` has counted into for `retention` (up to
    /// `now`): the series of pods whose files are all gone, once Prometheus has had time to
    /// scrape their last value. Returns how many were dropped.
    fn expire_series(&mut self, live: &[SourceId], retention: Duration, now: Instant) -> usize {
        let _ = (live, retention, now);
        0
    }
    /// The rules, for `log_pattern_rule_info`.
    fn rule_info(&self) -> Vec<RuleInfo> {
        Vec::new()
    }
    /// Replaces the rules, keeping sources and the values of unchanged rules; on error the
    /// old rules stay.
    fn reload(&mut self, rules: &[Rule]) -> Result<(), BuildError> {
        let _ = rules;
        Err(BuildError("this sink cannot reload rules".into()))
    }
}

/// Why rules cannot be compiled.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the literal matcher: {0}")]
pub struct BuildError(pub(crate) String);
