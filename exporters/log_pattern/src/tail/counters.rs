//! The tailer's own counters and gauges.
//!
//! [`Counters`] are plain numbers owned by the tailer thread, saved in the state file with the
//! offsets (so they never reset) and served from the last durable save. [`Gauges`] describe the
//! present (files open, backlog) and are not saved. [`crate::metrics::encode`] serves both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Upper bounds of the event lag histogram, in seconds.
pub const LAG_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

/// A histogram of read time minus the line's own timestamp.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LagHistogram {
    /// Non-cumulative counts per bucket of [`LAG_BUCKETS`], then +Inf.
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl LagHistogram {
    pub fn observe(&mut self, seconds: f64) {
        let v = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        if self.buckets.len() != LAG_BUCKETS.len() + 1 {
            self.buckets.resize(LAG_BUCKETS.len() + 1, 0);
        }
        let i = LAG_BUCKETS
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(LAG_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// Counters saved with the offsets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub lines_read: u64,
    pub bytes_read: u64,
    pub files_opened: u64,
    pub rotations: u64,
    pub truncations: u64,
    /// Bytes lost to a truncation before they were read (an estimate from the last size seen).
    pub truncated_unread_bytes: u64,
    /// Files in the saved state that were gone at restart.
    pub files_lost: u64,
    pub long_lines: u64,
    pub invalid_utf8_lines: u64,
    /// By format.
    pub parse_errors: BTreeMap<String, u64>,
    /// By reason (permission_denied, not_found, io).
    pub read_errors: BTreeMap<String, u64>,
    pub inotify_overflows: u64,
    /// By trigger (periodic, inotify, overflow, start).
    pub rescans: BTreeMap<String, u64>,
    /// Entries an inotify event named as created that were gone before a scan listed them, by
    /// kind (directory, file).
    pub discovery_vanished: BTreeMap<String, u64>,
    /// Lag of the pod log tree's lines (their CRI or Docker timestamp).
    pub lag: LagHistogram,
    /// Lag of glob sources' lines, by source (its path pattern).
    pub source_lag: BTreeMap<String, LagHistogram>,
    /// Lines of a source with a `timestamp` whose stamp did not parse, by source.
    pub timestamp_parse_errors: BTreeMap<String, u64>,
}

impl Counters {
    pub fn inc(map: &mut BTreeMap<String, u64>, key: &str) {
        *map.entry(key.to_string()).or_default() += 1;
    }
}

/// Present-tense values, not saved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    pub files_open: u64,
    pub files_rotated_open: u64,
    pub dirs_watched: u64,
    pub backlog_bytes: u64,
}
