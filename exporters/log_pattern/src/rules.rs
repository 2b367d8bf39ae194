//! Turning lines into counters: the [`LineSink`] seam between the tailer and the rules.
//!
//! The tailer knows nothing about rules. When it starts following a file it registers the
//! file's source labels once ([`LineSink::source`]), so a rule engine can resolve its selectors
//! per file rather than per line; then it hands every logical line to [`LineSink::on_line`].
//! Part 1 implements the simplest engine, [`SimpleRules`] (a line contains a string); the LogQL
//! engine of part 2 implements the same trait. Counter values are exported and restored as
//! [`SeriesValue`]s so they are saved atomically with the file offsets.
//!
//! Cardinality is bounded per rule: past `max_series` label combinations, counts go to a single
//! `{rule="…",overflow="true"}` series.

use std::collections::HashMap;

use memchr::memmem;
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
    pub rule: String,
    /// Source labels; empty with `overflow` set for the overflow series.
    pub labels: Labels,
    #[serde(default)]
    pub overflow: bool,
    pub value: u64,
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
}

struct CompiledRule {
    name: String,
    finder: memmem::Finder<'static>,
    max_series: usize,
    counts: HashMap<SourceId, u64>,
    overflow: u64,
}

/// Rules of the form "the line contains this string".
pub struct SimpleRules {
    rules: Vec<CompiledRule>,
    sources: Vec<Labels>,
    index: HashMap<Labels, SourceId>,
}

impl std::fmt::Debug for SimpleRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimpleRules")
            .field("rules", &self.rules.len())
            .field("sources", &self.sources.len())
            .finish()
    }
}

impl SimpleRules {
    pub fn new(rules: &[Rule]) -> Self {
        Self {
            rules: rules
                .iter()
                .map(|r| CompiledRule {
                    name: r.name.clone(),
                    finder: memmem::Finder::new(r.contains.as_bytes()).into_owned(),
                    max_series: r.max_series,
                    counts: HashMap::new(),
                    overflow: 0,
                })
                .collect(),
            sources: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn add(rule: &mut CompiledRule, source: SourceId, n: u64) {
        let len = rule.counts.len();
        match rule.counts.get_mut(&source) {
            Some(v) => *v += n,
            None if len < rule.max_series => {
                rule.counts.insert(source, n);
            }
            None => rule.overflow += n,
        }
    }
}

impl LineSink for SimpleRules {
    fn source(&mut self, labels: &Labels) -> SourceId {
        if let Some(&id) = self.index.get(labels) {
            return id;
        }
        let id = self.sources.len();
        self.sources.push(labels.clone());
        self.index.insert(labels.clone(), id);
        id
    }

    fn on_line(&mut self, source: SourceId, line: &Line<'_>) {
        for rule in &mut self.rules {
            if rule.finder.find(line.message).is_some() {
                Self::add(rule, source, 1);
            }
        }
    }

    fn values(&self) -> Vec<SeriesValue> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let mut series: Vec<_> = rule
                .counts
                .iter()
                .map(|(&src, &value)| SeriesValue {
                    rule: rule.name.clone(),
                    labels: self.sources.get(src).cloned().unwrap_or_default(),
                    overflow: false,
                    value,
                })
                .collect();
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            out.extend(series);
            if rule.overflow > 0 {
                out.push(SeriesValue {
                    rule: rule.name.clone(),
                    labels: Vec::new(),
                    overflow: true,
                    value: rule.overflow,
                });
            }
        }
        out
    }

    fn restore(&mut self, values: &[SeriesValue]) {
        for v in values {
            let Some(i) = self.rules.iter().position(|r| r.name == v.rule) else {
                continue;
            };
            if v.overflow {
                self.rules[i].overflow += v.value;
            } else {
                let src = self.source(&v.labels);
                Self::add(&mut self.rules[i], src, v.value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, contains: &str, max_series: usize) -> Rule {
        Rule {
            name: name.into(),
            contains: contains.into(),
            max_series,
        }
    }

    fn line(msg: &str) -> Line<'_> {
        Line {
            message: msg.as_bytes(),
            stream: Stream::Stdout,
            timestamp: None,
        }
    }

    fn labels(pod: &str) -> Labels {
        vec![("pod".into(), pod.into())]
    }

    #[test]
    fn counts_and_budget() {
        let mut r = SimpleRules::new(&[rule("err", "ERROR", 2), rule("oom", "Out of memory", 10)]);
        let a = r.source(&labels("a"));
        assert_eq!(r.source(&labels("a")), a);
        let b = r.source(&labels("b"));
        let c = r.source(&labels("c"));
        r.on_line(a, &line("x ERROR y"));
        r.on_line(a, &line("no match"));
        r.on_line(b, &line("ERROR Out of memory"));
        r.on_line(c, &line("ERROR"));
        r.on_line(c, &line("ERROR"));
        let v = r.values();
        let get = |rule: &str, l: &[(String, String)], overflow: bool| {
            v.iter()
                .find(|s| s.rule == rule && s.labels == l && s.overflow == overflow)
                .map(|s| s.value)
        };
        assert_eq!(get("err", &labels("a"), false), Some(1));
        assert_eq!(get("err", &labels("b"), false), Some(1));
        assert_eq!(get("err", &labels("c"), false), None);
        assert_eq!(get("err", &[], true), Some(2));
        assert_eq!(get("oom", &labels("b"), false), Some(1));

        // Restoring into a fresh engine yields the same values; unknown rules are dropped.
        let mut r2 = SimpleRules::new(&[rule("err", "ERROR", 2)]);
        r2.restore(&v);
        let v2 = r2.values();
        assert_eq!(
            v2,
            v.iter()
                .filter(|s| s.rule == "err")
                .cloned()
                .collect::<Vec<_>>()
        );
    }
}
