//! `import-loki-rules FILE`: Loki ruler rules to this exporter's rules plus Prometheus rules.
//!
//! A Loki recording or alerting rule such as
//! `sum by (namespace) (rate({app="x"} |= "Reconciler error" [5m])) > 0` becomes (a) an
//! exporter rule per range function counting the lines of its log query (`expr: '{app="x"} |=
//! "Reconciler error"'`, keeping only the grouping labels when a `sum by` is directly around
//! it, else every source label so that each series is one stream) and (b) a Prometheus rule
//! with the original `record`/`alert` name, labels and annotations, the same expression over
//! the exporter's counter, `sum by (namespace) (rate(log_pattern_matches_total{rule="..."}[5m]))`
//! compared with 0 as written. The metric expression is parsed as LogQL's grammar (aggregations with `by`/`without`
//! and parameters, binary operators with `bool`/`on`/`ignoring`/`group_*`, numbers,
//! `vector()`, parentheses), so ratios, comparisons and `or vector(0)` carry over as written.
//! `count_over_time` becomes `increase` (extrapolated, as Prometheus does: a named
//! approximation); per-stream aggregations (`max`, `min`, `avg`, `count`, `topk`, ...) see only
//! the series that counted a line in the range, as Loki's streams without lines have no series;
//! `absent_over_time` is 1 when the rule's series counted nothing in the range or do not exist.
//! `bytes_over_time`/`bytes_rate` and `sum_over_time`/`rate` over `| unwrap` (inside a `sum`)
//! get rules with a counter of their own (`metric`) that adds each line's bytes (a
//! `label_format` of `len __line__` unwrapped) or each unwrapped value; `offset` and
//! `label_replace` carry over; `quantile_over_time` becomes `histogram_quantile` over a
//! histogram rule when the Loki rule declares its buckets (annotation `log_pattern_buckets`);
//! `avg_over_time(...) by (l)` is the `sum_over_time` sum over the line count. Per stream after
//! parser stages that name their labels, the exporter rule carries those labels (Loki's
//! streams then split by them); a series of extracted labels that did not exist one range ago
//! counts all its lines as in the range (it is born with its first line counted).
//! Each rule is reported on its own: translated, translated with a named approximation, or
//! refused with the reason; a refused rule is left out of both outputs and never stops the
//! others. A file holding one rule at the top level (as Juju charms ship them) is one group
//! named after the file. Both files are written whole (a temporary file renamed) or not at all.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A ruler file (`groups:`), or one rule at the top level as Juju charms ship their
/// `src/loki_alert_rules/*.rule` files (read as one group named after the file).
#[derive(Debug, Deserialize)]
struct LokiFile {
    groups: Vec<LokiGroup>,
}

#[derive(Debug, Deserialize)]
struct LokiGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    rules: Vec<LokiRule>,
}

#[derive(Debug, Deserialize)]
struct LokiRule {
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    alert: Option<String>,
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct OutRules {
    rules: Vec<OutRule>,
}

#[derive(Debug, Serialize)]
struct OutRule {
    name: String,
    expr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_labels: Option<Vec<String>>,
    /// Labels of the parser stage the series carry (grouping labels no source has).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    labels: Vec<String>,
    /// The counter a `| unwrap` rule adds its numbers to (or its histogram).
    #[serde(skip_serializing_if = "Option::is_none")]
    metric: Option<String>,
    /// `histogram` for a quantile.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    buckets: Option<Vec<f64>>,
}

#[derive(Debug, Serialize)]
struct PromFile {
    groups: Vec<PromGroup>,
}

#[derive(Debug, Serialize)]
struct PromGroup {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    rules: Vec<PromRule>,
}

#[derive(Debug, Serialize)]
struct PromRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<String>,
    expr: String,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    for_: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// The result of an import: both files' text and one report line per Loki rule.
#[derive(Debug)]
pub struct Import {
    pub rules_yaml: String,
    pub prometheus_yaml: String,
    pub report: Vec<String>,
    pub skipped: usize,
}

/// A LogQL metric expression.
#[derive(Debug, Clone, PartialEq)]
enum M {
    Num(String),
    /// `vector(N)`
    Vector(String),
    Paren(Box<M>),
    Agg {
        op: String,
        /// `(without, labels)`
        grouping: Option<(bool, Vec<String>)>,
        param: Option<Box<M>>,
        inner: Box<M>,
    },
    Range {
        func: String,
        query: String,
        range: String,
        /// `offset 1h`
        offset: Option<String>,
        /// The φ of `quantile_over_time(φ, ...)`, as written, and its `by (...)`.
        param: Option<(String, Option<Vec<String>>)>,
    },
    /// `label_replace(inner, "dst", "replacement", "src", "regex")`: the four strings.
    LabelReplace {
        inner: Box<M>,
        args: [String; 4],
    },
    Bin {
        op: String,
        /// `bool`, `on (...)`, `group_left (...)` as written.
        modifiers: String,
        l: Box<M>,
        r: Box<M>,
    },
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "topk",
    "bottomk",
    "stddev",
    "stdvar",
    "sort",
    "sort_desc",
];
const RANGE_FUNCTIONS: &[&str] = &[
    "rate",
    "count_over_time",
    "bytes_over_time",
    "bytes_rate",
    "absent_over_time",
    "sum_over_time",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "first_over_time",
    "last_over_time",
    "stdvar_over_time",
    "stddev_over_time",
    "quantile_over_time",
    "rate_counter",
];

struct P<'a> {
    s: &'a str,
    i: usize,
    /// Nesting of parentheses and calls (bounded: hostile input must not exhaust the stack).
    depth: usize,
    /// Terms parsed so far (bounded: the tree they form is walked recursively).
    terms: usize,
}

impl P<'_> {
    fn rest(&self) -> &str {
        &self.s[self.i..]
    }

    fn ws(&mut self) {
        let r = self.rest();
        self.i += r.len() - r.trim_start().len();
    }

    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.rest().starts_with(t) {
            self.i += t.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: &str) -> Result<(), String> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(format!(
                "expected `{t}` at offset {} of the expression",
                self.i
            ))
        }
    }

    fn word(&mut self) -> String {
        self.ws();
        let n = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(self.rest().len());
        let w = self.rest()[..n].to_string();
        self.i += n;
        w
    }

    fn peek_word(&mut self) -> String {
        let at = self.i;
        let w = self.word();
        self.i = at;
        w
    }

    /// `(a, b)`
    fn labels(&mut self) -> Result<Vec<String>, String> {
        self.expect("(")?;
        let mut out = Vec::new();
        loop {
            if self.eat(")") {
                return Ok(out);
            }
            let w = self.word();
            if w.is_empty() {
                return Err(format!("expected a label name at offset {}", self.i));
            }
            out.push(w);
            if !self.eat(",") {
                self.expect(")")?;
                return Ok(out);
            }
        }
    }

    fn expr(&mut self, min_prec: u8) -> Result<M, String> {
        let mut left = self.unary()?;
        loop {
            self.ws();
            let Some((op, prec)) = self.bin_op() else {
                return Ok(left);
            };
            if prec < min_prec {
                return Ok(left);
            }
            self.i += op.len();
            let mut modifiers = String::new();
            loop {
                let w = self.peek_word();
                match w.as_str() {
                    "bool" => {
                        self.word();
                        modifiers.push_str(" bool");
                    }
                    "on" | "ignoring" | "group_left" | "group_right" => {
                        self.word();
                        self.ws();
                        let labels = if self.rest().starts_with('(') {
                            format!(" ({})", self.labels()?.join(", "))
                        } else {
                            String::new()
                        };
                        modifiers.push_str(&format!(" {w}{labels}"));
                    }
                    _ => break,
                }
            }
            // `^` is right-associative, the others left.
            let next = if op == "^" { prec } else { prec + 1 };
            let right = self.expr(next)?;
            left = M::Bin {
                op: op.to_string(),
                modifiers,
                l: Box::new(left),
                r: Box::new(right),
            };
        }
    }

    fn bin_op(&self) -> Option<(&'static str, u8)> {
        let r = self.rest();
        let word_op = |w: &str| {
            r.starts_with(w)
                && !r[w.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        };
        for (op, prec) in [
            ("==", 3),
            ("!=", 3),
            (">=", 3),
            ("<=", 3),
            (">", 3),
            ("<", 3),
            ("+", 4),
            ("-", 4),
            ("*", 5),
            ("/", 5),
            ("%", 5),
            ("^", 6),
        ] {
            if r.starts_with(op) {
                return Some((op, prec));
            }
        }
        for (op, prec) in [("or", 1), ("and", 2), ("unless", 2)] {
            if word_op(op) {
                return Some((op, prec));
            }
        }
        None
    }

    fn unary(&mut self) -> Result<M, String> {
        self.depth += 1;
        self.terms += 1;
        let r = if self.depth > 64 {
            Err("the expression is nested deeper than 64".to_string())
        } else if self.terms > 1000 {
            Err("the expression has more than 1000 terms".to_string())
        } else {
            self.unary_inner()
        };
        self.depth -= 1;
        r
    }

    fn unary_inner(&mut self) -> Result<M, String> {
        self.ws();
        if self.rest().starts_with('(') {
            self.i += 1;
            let e = self.expr(0)?;
            self.expect(")")?;
            return Ok(M::Paren(Box::new(e)));
        }
        if self
            .rest()
            .starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
        {
            let n = self
                .rest()
                .char_indices()
                .skip(1)
                .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '.'))
                .map_or(self.rest().len(), |(i, _)| i);
            let num = self.rest()[..n].to_string();
            num.parse::<f64>()
                .map_err(|_| format!("expected a number, found {num:?}"))?;
            self.i += n;
            return Ok(M::Num(num));
        }
        let at = self.i;
        let w = self.word();
        if w == "vector" {
            self.expect("(")?;
            let M::Num(n) = self.unary()? else {
                return Err("vector() takes a number".into());
            };
            self.expect(")")?;
            return Ok(M::Vector(n));
        }
        if AGGREGATIONS.contains(&w.as_str()) {
            let mut grouping = self.grouping()?;
            self.expect("(")?;
            let mut param = None;
            if matches!(w.as_str(), "topk" | "bottomk") {
                param = Some(Box::new(self.expr(0)?));
                self.expect(",")?;
            }
            let inner = self.expr(0)?;
            self.expect(")")?;
            if grouping.is_none() {
                grouping = self.grouping()?;
            }
            return Ok(M::Agg {
                op: w,
                grouping,
                param,
                inner: Box::new(inner),
            });
        }
        if RANGE_FUNCTIONS.contains(&w.as_str()) {
            self.expect("(")?;
            let mut param = None;
            if w == "quantile_over_time" {
                let M::Num(q) = self.unary()? else {
                    return Err("quantile_over_time takes a number first".into());
                };
                self.expect(",")?;
                self.ws();
                param = Some(q);
            }
            let (query, range) = self.log_range()?;
            self.ws();
            let mut offset = None;
            if self.peek_word() == "offset" {
                self.word();
                let d = self.word();
                if d.is_empty()
                    || !d
                        .chars()
                        .all(|c| c.is_ascii_digit() || "smhdwy".contains(c))
                {
                    return Err(format!("invalid offset {d:?}"));
                }
                offset = Some(d);
            }
            if self.eat(")") {
                let param = match param {
                    Some(q) if self.peek_word() == "by" => {
                        self.word();
                        Some((q, Some(self.labels()?)))
                    }
                    Some(q) if self.peek_word() != "without" => Some((q, None)),
                    None if w == "avg_over_time" && self.peek_word() == "by" => {
                        self.word();
                        let by = self.labels()?;
                        return avg_by(query, range, offset, by);
                    }
                    _ if self.peek_word() == "by" || self.peek_word() == "without" => {
                        return Err(format!("{w}(...) by/without (...) (grouping an unwrap range aggregation) cannot be translated"));
                    }
                    _ => None,
                };
                return Ok(M::Range {
                    func: w,
                    query,
                    range,
                    offset,
                    param,
                });
            }
            return Err(format!("expected `)` after the range of {w}(...)"));
        }
        if w == "label_replace" {
            self.expect("(")?;
            let inner = self.expr(0)?;
            let mut args: [String; 4] = Default::default();
            for a in &mut args {
                self.expect(",")?;
                self.ws();
                *a = self.quoted()?;
            }
            self.expect(")")?;
            return Ok(M::LabelReplace {
                inner: Box::new(inner),
                args,
            });
        }
        if w == "absent" || w.is_empty() {
            return Err(format!(
                "{} at offset {at} cannot be translated",
                if w.is_empty() {
                    "this expression".to_string()
                } else {
                    format!("{w}(...)")
                }
            ));
        }
        Err(format!("unknown function or keyword {w:?} at offset {at}"))
    }

    /// A double-quoted string (Go escapes) or a backquoted one, as written.
    fn quoted(&mut self) -> Result<String, String> {
        let b = self.s.as_bytes();
        let q = *b.get(self.i).ok_or("expected a string")?;
        if q != b'"' && q != b'`' {
            return Err(format!("expected a string at offset {}", self.i));
        }
        let mut j = self.i + 1;
        while j < b.len() && b[j] != q {
            if b[j] == b'\\' && q == b'"' {
                j += 1;
            }
            j += 1;
        }
        if j >= b.len() {
            return Err("unterminated string".into());
        }
        let text = self.s[self.i..=j].to_string();
        self.i = j + 1;
        Ok(text)
    }

    fn grouping(&mut self) -> Result<Option<(bool, Vec<String>)>, String> {
        match self.peek_word().as_str() {
            "by" => {
                self.word();
                Ok(Some((false, self.labels()?)))
            }
            "without" => {
                self.word();
                Ok(Some((true, self.labels()?)))
            }
            _ => Ok(None),
        }
    }

    /// The log query and range of `func(LOG QUERY [RANGE])`: the query runs to the `[` outside
    /// its strings.
    fn log_range(&mut self) -> Result<(String, String), String> {
        let start = self.i;
        let b = self.s.as_bytes();
        let mut j = self.i;
        let mut quote = None;
        while j < b.len() {
            let c = b[j];
            match quote {
                Some(q) => {
                    if c == b'\\' && q == b'"' {
                        j += 1;
                    } else if c == q {
                        quote = None;
                    }
                }
                None if c == b'"' || c == b'`' => quote = Some(c),
                None if c == b'[' => break,
                None => {}
            }
            j += 1;
        }
        if j >= b.len() {
            return Err("expected a range `[5m]` after the log query".into());
        }
        let query = self.s[start..j].trim().to_string();
        let close = self.s[j..]
            .find(']')
            .ok_or("expected `]` after the range")?
            + j;
        let range = self.s[j + 1..close].trim().to_string();
        if range.is_empty()
            || !range
                .chars()
                .all(|c| c.is_ascii_digit() || "smhdwy".contains(c))
        {
            return Err(format!("invalid range [{range}]"));
        }
        self.i = close + 1;
        Ok((query, range))
    }
}

/// `avg_over_time(Q | unwrap x [r]) by (l)`: the sum of the values over the number of lines,
/// `sum by (l) (sum_over_time(...)) / sum by (l) (count_over_time(Q [r]))` (the form Loki's
/// own query sharding evaluates), without the groups that had no line (0/0).
fn avg_by(
    query: String,
    range: String,
    offset: Option<String>,
    by: Vec<String>,
) -> Result<M, String> {
    let lines = without_unwrap(&query).map_err(|e| format!("avg_over_time(...) by (...): {e}"))?;
    let sum = |func: &str, query: String| M::Agg {
        op: "sum".into(),
        grouping: Some((false, by.clone())),
        param: None,
        inner: Box::new(M::Range {
            func: func.into(),
            query,
            range: range.clone(),
            offset: offset.clone(),
            param: None,
        }),
    };
    let ratio = M::Bin {
        op: "/".into(),
        modifiers: String::new(),
        l: Box::new(sum("sum_over_time", query.clone())),
        r: Box::new(sum("count_over_time", lines)),
    };
    Ok(M::Paren(Box::new(M::Bin {
        op: ">=".into(),
        modifiers: String::new(),
        l: Box::new(ratio),
        r: Box::new(M::Num("-Inf".into())),
    })))
}

/// `query` without the `| unwrap NAME` that ends it (the lines whose values it adds).
fn without_unwrap(query: &str) -> Result<String, String> {
    let field = crate::logql::parse(query)
        .map_err(|e| format!("log query {query:?}: {e}"))?
        .unwrap
        .ok_or("the query has no `| unwrap`")?;
    query
        .rfind("| unwrap")
        .map(|i| query[..i].trim_end().to_string())
        .filter(|q| {
            query[q.len()..].split_whitespace().collect::<Vec<_>>()
                == ["|", "unwrap", field.as_str()]
        })
        .ok_or_else(|| "translated when `| unwrap NAME` ends its query".to_string())
}

fn parse_metric(text: &str) -> Result<M, String> {
    let mut p = P {
        s: text,
        i: 0,
        depth: 0,
        terms: 0,
    };
    let e = p.expr(0)?;
    p.ws();
    if !p.rest().is_empty() {
        return Err(format!(
            "unexpected {:?} at offset {} of the expression",
            p.rest(),
            p.i
        ));
    }
    Ok(e)
}

/// Labels a source can carry, and the stream label names a cluster's log agent uses mapped
/// to them (`--label-map app=container`).
struct Known {
    labels: Vec<String>,
    map: Vec<(String, String)>,
}

/// One exporter rule the translation asks for.
struct Wanted {
    query: String,
    keep: Option<Vec<String>>,
    /// Extracted labels (grouping labels after a parser stage).
    labels: Vec<String>,
    /// The rule's own metric (a sum of `| unwrap` values or of line bytes, or a histogram).
    metric: Option<String>,
    /// `type: histogram` with these buckets.
    buckets: Option<Vec<f64>>,
}

/// What an exporter rule measures for a range function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Lines,
    /// The bytes of each line (`bytes_over_time`, `bytes_rate`).
    Bytes,
    /// The query's `| unwrap` value (`sum_over_time`, `rate`).
    Unwrap,
    /// The query's `| unwrap` values in the rule's buckets (`quantile_over_time`).
    Histogram,
}

/// The label the byte count of a line is carried in (`| label_format` then `| unwrap`).
const BYTES_LABEL: &str = "log_line_bytes";

/// Translation state of one Loki rule.
struct Tr<'a> {
    base: &'a str,
    taken: &'a mut std::collections::HashSet<String>,
    rules: Vec<(Wanted, String)>,
    notes: Vec<String>,
    warnings: Vec<String>,
    known: &'a Known,
    /// The Loki rule's declared histogram buckets (`log_pattern_buckets`).
    buckets: Option<Vec<f64>>,
    /// A label a per-stream series does not carry (the unwrapped one, also for the line
    /// count of the same query without `| unwrap`).
    drop: Option<String>,
}

/// The annotation of a Loki rule that declares the buckets of its quantiles.
const BUCKETS_ANNOTATION: &str = "log_pattern_buckets";

/// The buckets an annotation declares: finite, strictly increasing numbers.
fn parse_buckets(text: &str) -> Result<Vec<f64>, String> {
    let b: Vec<f64> = text
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{BUCKETS_ANNOTATION}: {text:?} is not a list of numbers"))?;
    if b.is_empty() || !b.iter().all(|x| x.is_finite()) || !b.windows(2).all(|w| w[0] < w[1]) {
        return Err(format!(
            "{BUCKETS_ANNOTATION}: {text:?} must be finite and strictly increasing"
        ));
    }
    Ok(b)
}

impl<'a> Tr<'a> {
    /// A translation of one Loki rule named `base`, whose metric names must avoid `taken`.
    fn new(
        base: &'a str,
        taken: &'a mut std::collections::HashSet<String>,
        known: &'a Known,
        buckets: Option<Vec<f64>>,
    ) -> Self {
        Self {
            base,
            taken,
            rules: Vec::new(),
            notes: Vec::new(),
            warnings: Vec::new(),
            known,
            buckets,
            drop: None,
        }
    }

    /// The name a label has here (`--label-map`).
    fn mapped(&mut self, label: &str) -> String {
        match self.known.map.iter().find(|(from, _)| from == label) {
            Some((from, to)) => {
                self.note(&format!("label {from} is {to} here"));
                to.clone()
            }
            None => label.to_string(),
        }
    }

    /// `query` with its selector's label names mapped.
    fn map_query(&mut self, query: &str) -> Result<String, String> {
        let parsed = crate::logql::parse(query).map_err(|e| format!("log query {query:?}: {e}"))?;
        if !parsed
            .matchers
            .iter()
            .any(|m| self.known.map.iter().any(|(f, _)| *f == m.name))
        {
            return Ok(query.to_string());
        }
        let end = selector_end(query).ok_or("cannot find the end of the stream selector")?;
        let mut parts = Vec::new();
        for m in &parsed.matchers {
            let op = match m.op {
                crate::logql::MatchOp::Eq => "=",
                crate::logql::MatchOp::Ne => "!=",
                crate::logql::MatchOp::Re => "=~",
                crate::logql::MatchOp::NotRe => "!~",
            };
            let value = if m.value.contains('`') {
                format!("{:?}", m.value)
            } else {
                format!("`{}`", m.value)
            };
            parts.push(format!("{}{op}{value}", self.mapped(&m.name)));
        }
        Ok(format!("{{{}}}{}", parts.join(", "), &query[end..]))
    }

    /// The exporter rule for `query` (made once per query, keep and measure): its name and,
    /// for a sum, its metric.
    fn rule_for(
        &mut self,
        query: &str,
        keep: Option<Vec<String>>,
        measure: Measure,
    ) -> Result<(String, Option<String>), String> {
        let mut mapped = self.map_query(query)?;
        let keep = keep.map(|k| k.iter().map(|l| self.mapped(l)).collect::<Vec<_>>());
        let parsed =
            crate::logql::parse(&mapped).map_err(|e| format!("log query {mapped:?}: {e}"))?;
        match (measure, parsed.unwrap.is_some()) {
            (Measure::Lines, true) => {
                return Err("a range function over lines (rate, count_over_time) of a query with `| unwrap`: Loki refuses it".into())
            }
            (Measure::Unwrap | Measure::Histogram, false) => {
                return Err("an unwrap range aggregation needs `| unwrap` in its query".into())
            }
            (Measure::Bytes, true) => {
                return Err("bytes_over_time/bytes_rate of a query with `| unwrap`: Loki refuses it".into())
            }
            (Measure::Bytes, false) => {
                mapped.push_str(&format!(
                    " | label_format {BYTES_LABEL}=`{{{{ len __line__ }}}}` | unwrap {BYTES_LABEL}"
                ));
            }
            _ => {}
        }
        let query = mapped.as_str();
        let mut keep = keep;
        let mut labels = Vec::new();
        if let Some(parser) = &parsed.parser {
            let Some(by) = keep.take() else {
                // Per stream, Loki's series are the stream labels plus every label the stages
                // add: exact when the stages name them all and drop none.
                let names = parsed
                    .added_labels()
                    .filter(|_| !parsed.stages.iter().any(|s| matches!(s, crate::logql::pipeline::Stage::Drop(_) | crate::logql::pipeline::Stage::Keep(_))))
                    .ok_or("a per-stream aggregation after a parser stage that does not name its labels (Loki's streams then split by every parsed label) cannot be translated")?;
                // Loki's per-stream series of `| unwrap x` do not carry x.
                let mut names: Vec<String> = names
                    .into_iter()
                    .filter(|n| Some(n) != parsed.unwrap.as_ref() && Some(n) != self.drop.as_ref())
                    .collect();
                names.sort();
                names.dedup();
                return self.add_rule(query, None, names, measure);
            };
            // Grouping labels a source carries stay source labels; the others are the
            // parser's, carried as extracted labels.
            let (source, extracted): (Vec<String>, Vec<String>) =
                by.into_iter().partition(|l| self.known.labels.contains(l));
            if let Some(names) = parser.names() {
                if let Some(l) = extracted.iter().find(|l| !names.contains(l)) {
                    return Err(format!(
                        "grouping label {l:?} is neither a source label nor extracted by the parser stage"
                    ));
                }
            }
            if !extracted.is_empty() {
                self.note("grouping labels no source carries are taken from the parser stage");
            }
            keep = Some(source);
            labels = extracted;
        }
        self.add_rule(query, keep, labels, measure)
    }

    /// Warns of selector labels no source carries and adds the exporter rule (once per
    /// query, kept and extracted labels and measure).
    fn add_rule(
        &mut self,
        query: &str,
        keep: Option<Vec<String>>,
        labels: Vec<String>,
        measure: Measure,
    ) -> Result<(String, Option<String>), String> {
        let parsed = crate::logql::parse(query).map_err(|e| format!("log query {query:?}: {e}"))?;
        for m in &parsed.matchers {
            if !m.matches("") && !self.known.labels.contains(&m.name) {
                let w = format!(
                    "warning: no source carries label {:?} (sources carry {}): the rule selects nothing until one does",
                    m.name,
                    self.known.labels.join(", ")
                );
                if !self.warnings.contains(&w) {
                    self.warnings.push(w);
                }
            }
        }
        if let Some((w, n)) = self
            .rules
            .iter()
            .find(|(w, _)| w.query == query && w.keep == keep && w.labels == labels)
        {
            return Ok((n.clone(), w.metric.clone()));
        }
        let name = rule_name(self.base, self.taken);
        let metric = match measure {
            Measure::Lines => None,
            Measure::Bytes => Some(format!("{name}_bytes")),
            Measure::Unwrap => Some(format!("{name}_sum")),
            Measure::Histogram => Some(format!("{name}_hist")),
        };
        self.rules.push((
            Wanted {
                query: query.to_string(),
                keep,
                labels,
                metric: metric.clone(),
                buckets: (measure == Measure::Histogram)
                    .then(|| self.buckets.clone())
                    .flatten(),
            },
            name.clone(),
        ));
        Ok((name, metric))
    }

    fn note(&mut self, n: &str) {
        if !self.notes.iter().any(|x| x == n) {
            self.notes.push(n.to_string());
        }
    }

    /// PromQL for a range function; `keep`: the labels its series keep (`None`: all, one
    /// series per stream).
    fn range(
        &mut self,
        func: &str,
        query: &str,
        range: &str,
        keep: Option<Vec<String>>,
        per_stream: bool,
    ) -> Result<String, String> {
        let series = |name: &str, metric: &Option<String>| match metric {
            None => format!("log_pattern_matches_total{{rule=\"{name}\"}}"),
            Some(m) => format!("log_pattern_{m}_total{{rule=\"{name}\"}}"),
        };
        let unwrap = crate::logql::parse(query)
            .map(|q| q.unwrap.is_some())
            .unwrap_or(false);
        let (measure, fun) = match (func, unwrap) {
            ("rate", false) => (Measure::Lines, "rate"),
            ("count_over_time", _) => (Measure::Lines, "increase"),
            ("rate", true) => (Measure::Unwrap, "rate"),
            ("sum_over_time", _) => (Measure::Unwrap, "increase"),
            ("bytes_rate", _) => (Measure::Bytes, "rate"),
            ("bytes_over_time", _) => (Measure::Bytes, "increase"),
            ("absent_over_time", _) => {
                let (name, metric) = self.rule_for(query, Some(Vec::new()), Measure::Lines)?;
                let s = series(&name, &metric);
                return Ok(format!(
                    "(((sum(increase({s}[{range}])) == 0) + 1) or absent({s}))"
                ));
            }
            _ => {
                return Err(format!(
                    "{func} (an unwrap range aggregation) cannot be translated: the exporter keeps sums of unwrapped values, not each value"
                ))
            }
        };
        if measure == Measure::Unwrap && per_stream {
            // A per-stream sum can be 0 or negative: a stream has a series where a line
            // counter of the same query without `| unwrap` counted lines in the range.
            let lines = without_unwrap(query)
                .map_err(|e| format!("{func} over `| unwrap` per stream: {e}"))?;
            self.drop = crate::logql::parse(query).ok().and_then(|q| q.unwrap);
            let sum = self.rule_for(query, None, measure);
            let count = self.rule_for(&lines, None, Measure::Lines);
            self.drop = None;
            let ((name, metric), (lines_name, _)) = (sum?, count?);
            if fun == "increase" {
                self.note(&format!(
                    "{func} as increase() of a running sum (extrapolated over the range)"
                ));
            }
            self.note("streams are the exporter's sources (files)");
            let sum = self.counted(&series(&name, &metric), &name, fun, range)?;
            let count =
                self.counted(&series(&lines_name, &None), &lines_name, "increase", range)?;
            return Ok(format!("({sum} and ignoring (rule) {count} > 0)"));
        }
        let (name, metric) = self.rule_for(query, keep, measure)?;
        match (fun, measure) {
            ("increase", Measure::Lines) => {
                self.note("count_over_time as increase() (extrapolated over the range)")
            }
            ("increase", _) => self.note(&format!(
                "{func} as increase() of a running sum (extrapolated over the range)"
            )),
            _ => {}
        }
        if measure == Measure::Bytes {
            self.note("bytes counted by a label_format/unwrap rule: a line that still carries __error__ is not counted (Loki fails the query instead)");
        }
        let e = self.counted(&series(&name, &metric), &name, fun, range)?;
        Ok(if per_stream {
            self.note("streams are the exporter's sources (files)");
            format!("({e} > 0)")
        } else {
            e
        })
    }

    /// `fun(s[range])` over the series `s` of the exporter rule `name`. A series of extracted
    /// labels is born with its first line counted (it has no 0 before): where it did not
    /// exist `range` ago, every line it counted is in the range.
    fn counted(&self, s: &str, name: &str, fun: &str, range: &str) -> Result<String, String> {
        let e = format!("{fun}({s}[{range}])");
        if !self
            .rules
            .iter()
            .any(|(w, n)| n == name && !w.labels.is_empty())
        {
            return Ok(e);
        }
        let per = if fun == "rate" {
            let secs = common::cli::parse_duration(range)
                .map_err(|e| format!("range {range:?}: {e}"))?
                .as_secs_f64();
            format!(" / {secs}")
        } else {
            " * 1".to_string()
        };
        Ok(format!(
            "({e} and {s} offset {range} or {s}{per} unless {s} offset {range})"
        ))
    }

    /// `quantile_over_time(φ, Q | unwrap x [r])` per stream: `histogram_quantile` over a
    /// histogram rule with the Loki rule's declared buckets (`log_pattern_buckets`).
    fn quantile(
        &mut self,
        q: &str,
        by: Option<&[String]>,
        query: &str,
        range: &str,
    ) -> Result<String, String> {
        if self.buckets.is_none() {
            return Err(format!("quantile_over_time needs the rule's buckets: an annotation {BUCKETS_ANNOTATION}: \"0.1, 0.5, 1\" (the exporter keeps a histogram, not each value)"));
        }
        let (name, metric) =
            self.rule_for(query, by.map(<[String]>::to_vec), Measure::Histogram)?;
        let m = metric.unwrap_or_default();
        self.note("quantile_over_time as histogram_quantile() over the rule's buckets (interpolated within a bucket)");
        let rate = format!("rate(log_pattern_{m}_bucket{{rule=\"{name}\"}}[{range}])");
        let inner = match by {
            Some(labels) => {
                let mut l: Vec<String> = labels.iter().map(|x| self.mapped(x)).collect();
                l.insert(0, "le".into());
                format!("sum by ({}) ({rate})", l.join(", "))
            }
            None => {
                self.note("streams are the exporter's sources (files)");
                rate
            }
        };
        // A stream or group without values in the range is NaN here and no series in Loki.
        Ok(format!("(histogram_quantile({q}, {inner}) >= -Inf)"))
    }

    fn emit(&mut self, m: &M) -> Result<String, String> {
        Ok(match m {
            M::Num(n) => n.clone(),
            M::Vector(n) => format!("vector({n})"),
            M::Paren(e) => format!("({})", self.emit(e)?),
            M::Bin {
                op,
                modifiers,
                l,
                r,
            } => {
                let vector = |e: &M| !matches!(e, M::Num(_));
                if vector(l)
                    && vector(r)
                    && (unaggregated(l) || unaggregated(r))
                    && !matches!(op.as_str(), "or" | "and" | "unless")
                {
                    return Err("a binary operation between queries that are not aggregated cannot be translated: the exporter's series carry a rule label of their own".into());
                }
                format!("{} {op}{modifiers} {}", self.emit(l)?, self.emit(r)?)
            }
            M::Range {
                func,
                query,
                range,
                offset,
                param,
            } => {
                let e = match param {
                    Some((q, by)) => self.quantile(q, by.as_deref(), query, range)?,
                    None => self.range(func, query, range, None, true)?,
                };
                with_offset(e, range, offset)
            }
            M::LabelReplace { inner, args } => {
                let [dst, repl, src, re] = args;
                let src = match src.get(1..src.len().saturating_sub(1)) {
                    Some(name) if !name.is_empty() => {
                        let q = &src[..1];
                        format!("{q}{}{q}", self.mapped(name))
                    }
                    _ => src.clone(),
                };
                format!(
                    "label_replace({}, {dst}, {repl}, {src}, {re})",
                    self.emit(inner)?
                )
            }
            M::Agg {
                op,
                grouping,
                param,
                inner,
            } => {
                let inner_s = match (op.as_str(), grouping, inner.as_ref()) {
                    (
                        "sum",
                        None | Some((false, _)),
                        M::Range {
                            func,
                            query,
                            range,
                            offset,
                            param: None,
                        },
                    ) if func != "absent_over_time" => {
                        let keep = grouping.as_ref().map_or(Vec::new(), |(_, l)| l.clone());
                        let e = self.range(func, query, range, Some(keep), false)?;
                        with_offset(e, range, offset)
                    }
                    _ => self.emit(inner)?,
                };
                let grouping = grouping
                    .as_ref()
                    .map(|(w, l)| (*w, l.iter().map(|x| self.mapped(x)).collect::<Vec<_>>()));
                let g = match &grouping {
                    None => String::new(),
                    Some((false, l)) => format!(" by ({})", l.join(", ")),
                    Some((true, l)) => {
                        let mut l = l.clone();
                        l.push("rule".into());
                        format!(" without ({})", l.join(", "))
                    }
                };
                let p = match param {
                    Some(p) => format!("{}, ", self.emit(p)?),
                    None => String::new(),
                };
                if g.is_empty() {
                    format!("{op}({p}{inner_s})")
                } else {
                    format!("{op}{g} ({p}{inner_s})")
                }
            }
        })
    }
}

/// `[range]` of a translated range function followed by `offset`, when the query had one.
fn with_offset(e: String, range: &str, offset: &Option<String>) -> String {
    match offset {
        None => e,
        Some(o) => {
            // `offset RANGE` (series born within the range) moves by the offset too.
            let total = [range, o.as_str()]
                .iter()
                .map(|d| common::cli::parse_duration(d).map(|d| d.as_secs_f64()))
                .sum::<Result<f64, _>>();
            let e = match total {
                Ok(t) => e.replace(&format!(" offset {range}"), &format!(" offset {t}s")),
                Err(_) => e,
            };
            e.replace(&format!("[{range}]"), &format!("[{range}] offset {o}"))
        }
    }
}

/// Whether `m` yields series with the rule's own labels (no aggregation over them).
fn unaggregated(m: &M) -> bool {
    match m {
        M::Range { func, .. } => func != "absent_over_time",
        M::Paren(e) | M::LabelReplace { inner: e, .. } => unaggregated(e),
        M::Bin { l, r, .. } => unaggregated(l) || unaggregated(r),
        M::Agg { .. } | M::Num(_) | M::Vector(_) => false,
    }
}

/// The byte offset just after the stream selector `{...}` that starts `query` (braces inside
/// strings skipped).
fn selector_end(query: &str) -> Option<usize> {
    let b = query.as_bytes();
    let start = query.find('{')?;
    let mut quote = None;
    let mut i = start + 1;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) => {
                if c == b'\\' && q == b'"' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == b'"' || c == b'`' => quote = Some(c),
            None if c == b'}' => return Some(i + 1),
            None => {}
        }
        i += 1;
    }
    None
}

/// The labels sources can carry: the pod log labels, and the labels of `config`'s sources.
fn known_labels(config: Option<&crate::config::Config>, map: &[(String, String)]) -> Known {
    let mut labels: Vec<String> = ["namespace", "pod", "container", "stream"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for s in config.map(|c| c.sources.as_slice()).unwrap_or_default() {
        labels.extend(s.labels.keys().cloned());
        let mut rest = s.path.as_str();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            labels.push(rest[open + 1..open + close].to_string());
            rest = &rest[open + close..];
        }
    }
    labels.dedup();
    Known {
        labels,
        map: map.to_vec(),
    }
}

fn rule_name(base: &str, taken: &mut std::collections::HashSet<String>) -> String {
    // CamelCase alert names become snake_case; anything else not [a-z0-9] becomes `_`.
    let mut name = String::new();
    let mut prev_lower = false;
    for c in base.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            name.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        name.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        });
    }
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "loki_");
    }
    let mut candidate = name.clone();
    let mut i = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{name}_{i}");
        i += 1;
    }
    candidate
}

/// A translated rule: exporter rules, the Prometheus rule, approximations, warnings.
type Translated = (Vec<OutRule>, PromRule, Vec<String>, Vec<String>);

/// Translates the Loki rule file text (selector labels checked against the pod log labels).
pub fn translate(path: &Path, text: &str) -> Result<Import, Error> {
    translate_with(path, text, None, &[])
}

/// Translates the Loki rule file text; selector labels are checked against the pod log labels
/// and the labels of `config`'s sources.
pub fn translate_with(
    path: &Path,
    text: &str,
    config: Option<&crate::config::Config>,
    label_map: &[(String, String)],
) -> Result<Import, Error> {
    let top: serde_yaml_ng::Value = common::config::parse_yaml(path, text)?;
    let file = if top.get("groups").is_some() || top.get("expr").is_none() {
        common::config::parse_yaml::<LokiFile>(path, text)?
    } else {
        LokiFile {
            groups: vec![LokiGroup {
                name: path
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
                interval: None,
                rules: vec![common::config::parse_yaml(path, text)?],
            }],
        }
    };
    let known = known_labels(config, label_map);
    let mut out_rules = Vec::new();
    let mut groups = Vec::new();
    let mut report = Vec::new();
    let mut skipped = 0;
    let mut taken = std::collections::HashSet::new();
    for g in &file.groups {
        let mut prom = Vec::new();
        for r in &g.rules {
            let title = match (&r.record, &r.alert) {
                (Some(n), _) => format!("{}/record {n}", g.name),
                (None, Some(n)) => format!("{}/alert {n}", g.name),
                (None, None) => format!("{}/(unnamed)", g.name),
            };
            let before = taken.clone();
            let result = (|| -> Result<Translated, String> {
                let base = r
                    .record
                    .as_deref()
                    .or(r.alert.as_deref())
                    .ok_or("a rule needs `record` or `alert`")?;
                let m = parse_metric(r.expr.trim())?;
                let buckets = r
                    .annotations
                    .get(BUCKETS_ANNOTATION)
                    .map(|b| parse_buckets(b))
                    .transpose()?;
                let mut tr = Tr::new(base, &mut taken, &known, buckets);
                let expr = tr.emit(&m)?;
                if tr.rules.is_empty() {
                    return Err("the expression has no log query".into());
                }
                let mut outs = Vec::new();
                for (w, name) in std::mem::take(&mut tr.rules) {
                    let o = OutRule {
                        name,
                        expr: w.query,
                        keep_labels: w.keep,
                        labels: w.labels,
                        metric: w.metric,
                        kind: w.buckets.is_some().then(|| "histogram".to_string()),
                        buckets: w.buckets,
                    };
                    // Each exporter rule must load by itself, or the rule is refused.
                    let one = serde_yaml_ng::to_string(&OutRules {
                        rules: vec![OutRule {
                            name: o.name.clone(),
                            expr: o.expr.clone(),
                            keep_labels: o.keep_labels.clone(),
                            labels: o.labels.clone(),
                            metric: o.metric.clone(),
                            kind: o.kind.clone(),
                            buckets: o.buckets.clone(),
                        }],
                    })
                    .map_err(|e| e.to_string())?;
                    crate::config::parse(Path::new("imported rule"), &one)
                        .map_err(|e| format!("the exporter rule would not load: {e}"))?;
                    outs.push(o);
                }
                Ok((
                    outs,
                    PromRule {
                        record: r.record.clone(),
                        alert: r.alert.clone(),
                        expr,
                        for_: r.for_.clone(),
                        labels: r.labels.clone(),
                        annotations: r
                            .annotations
                            .iter()
                            .filter(|(k, _)| *k != BUCKETS_ANNOTATION)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    },
                    tr.notes,
                    tr.warnings,
                ))
            })();
            match result {
                Ok((outs, p, notes, warnings)) => {
                    let names: Vec<&str> = outs.iter().map(|o| o.name.as_str()).collect();
                    let mut line = if names.len() == 1 {
                        format!("{title}: translated as rule {}", names[0])
                    } else {
                        format!("{title}: translated as rules {}", names.join(", "))
                    };
                    if !notes.is_empty() {
                        line.push_str(&format!(" (approximation: {})", notes.join("; ")));
                    }
                    report.push(line);
                    for w in warnings {
                        report.push(format!("{title}: {w}"));
                    }
                    out_rules.extend(outs);
                    prom.push(p);
                }
                Err(e) => {
                    taken = before;
                    skipped += 1;
                    report.push(format!("{title}: NOT translated: {e}"));
                }
            }
        }
        if !prom.is_empty() {
            groups.push(PromGroup {
                name: g.name.clone(),
                interval: g.interval.clone(),
                rules: prom,
            });
        }
    }
    let rules_yaml = format!(
        "# Imported from {} by log_pattern_exporter import-loki-rules.\n{}",
        path.display(),
        serde_yaml_ng::to_string(&OutRules { rules: out_rules }).map_err(yaml_err)?
    );
    // The written rule file must load: a failure here is a bug of the importer, not written.
    crate::config::parse(Path::new("imported rules"), &rules_yaml)?;
    let prometheus_yaml = format!(
        "# Imported from {} by log_pattern_exporter import-loki-rules.\n{}",
        path.display(),
        serde_yaml_ng::to_string(&PromFile { groups }).map_err(yaml_err)?
    );
    Ok(Import {
        rules_yaml,
        prometheus_yaml,
        report,
        skipped,
    })
}

fn yaml_err(e: serde_yaml_ng::Error) -> Error {
    Error::Import(e.to_string())
}

/// Writes `text` to a temporary file beside `path`; the caller renames it into place.
fn write_temp(path: &Path, text: &str) -> Result<std::path::PathBuf, Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        Error::Replay {
            path: tmp.clone(),
            source,
        }
    })?;
    Ok(tmp)
}

/// Reads `input` (and the exporter's `config`, for its sources' labels), writes both outputs
/// whole or neither; returns the report. `label_map` holds `FROM=TO` label names.
pub fn run(
    input: &Path,
    rules_out: &Path,
    prometheus_out: &Path,
    config: Option<&Path>,
    label_map: &[String],
) -> Result<Import, Error> {
    let mut map = Vec::new();
    for m in label_map {
        match m.split_once('=') {
            Some((from, to)) if !from.is_empty() && !to.is_empty() => {
                map.push((from.trim().to_string(), to.trim().to_string()))
            }
            _ => {
                return Err(Error::Import(format!(
                    "--label-map {m:?}: expected FROM=TO (a Loki stream label name, the name a source has)"
                )))
            }
        }
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Replay { path, source }
    };
    let text = crate::config::read_text(input, crate::config::MAX_CONFIG_BYTES, "Loki rule file")?;
    let config = config.map(crate::config::load).transpose()?;
    let import = translate_with(input, &text, config.as_ref(), &map)?;
    let a = write_temp(rules_out, &import.rules_yaml)?;
    let b = match write_temp(prometheus_out, &import.prometheus_yaml) {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&a);
            return Err(e);
        }
    };
    let renamed = std::fs::rename(&a, rules_out)
        .map_err(io(rules_out))
        .and_then(|()| std::fs::rename(&b, prometheus_out).map_err(io(prometheus_out)));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&a);
        let _ = std::fs::remove_file(&b);
        return Err(e);
    }
    Ok(import)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Wants = Vec<(String, Option<Vec<String>>)>;

    fn tr(expr: &str) -> Result<(String, Wants, Vec<String>), String> {
        let m = parse_metric(expr)?;
        let known = known_labels(None, &[("app".into(), "container".into())]);
        let mut taken = std::collections::HashSet::new();
        let mut t = Tr::new("r", &mut taken, &known, Some(vec![0.1, 1.0]));
        let e = t.emit(&m)?;
        let rules = t
            .rules
            .iter()
            .map(|(w, _)| (w.query.clone(), w.keep.clone()))
            .collect();
        Ok((e, rules, t.warnings))
    }

    #[test]
    fn expressions() {
        let m = |n: &str| format!("log_pattern_matches_total{{rule=\"{n}\"}}");
        let cases: &[(&str, String)] = &[
            (
                r#"sum by (namespace, container) (rate({namespace="x"} |= "a[1]" [5m])) > 0.5"#,
                format!("sum by (namespace, container) (rate({}[5m])) > 0.5", m("r")),
            ),
            (
                r#"sum(count_over_time({namespace="b"}[1h])) by (pod)"#,
                format!("sum by (pod) (increase({}[1h]))", m("r")),
            ),
            (
                r#"sum(rate({namespace="a"} |= "error" [5m])) / sum(rate({namespace="a"}[5m]))"#,
                format!("sum(rate({}[5m])) / sum(rate({}[5m]))", m("r"), m("r_2")),
            ),
            (
                r#"max by (namespace) (count_over_time({namespace="a"}[5m]))"#,
                format!("max by (namespace) ((increase({}[5m]) > 0))", m("r")),
            ),
            (
                r#"sum by (pod) (count_over_time({namespace="a"}[5m]) > 0)"#,
                format!("sum by (pod) ((increase({}[5m]) > 0) > 0)", m("r")),
            ),
            (
                r#"sum(rate({namespace="a"} |= "x" [5m])) or vector(0)"#,
                format!("sum(rate({}[5m])) or vector(0)", m("r")),
            ),
            (
                r#"absent_over_time({namespace="a"} |= "heartbeat" [10m])"#,
                format!(
                    "(((sum(increase({s}[10m])) == 0) + 1) or absent({s}))",
                    s = m("r")
                ),
            ),
            (
                r#"topk(3, sum by (pod) (rate({namespace="a"}[5m])))"#,
                format!("topk(3, sum by (pod) (rate({}[5m])))", m("r")),
            ),
            (
                r#"sum without (pod) (rate({namespace="a"}[5m])) > bool 2"#,
                format!(
                    "sum without (pod, rule) ((rate({}[5m]) > 0)) > bool 2",
                    m("r")
                ),
            ),
        ];
        for (expr, want) in cases {
            let (got, _, _) = tr(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(&got, want, "{expr}");
        }
        // Sums of unwrapped values and of line bytes are counters of their own.
        let sums: &[(&str, &str, &str)] = &[
            (
                r#"sum by (pod) (sum_over_time({namespace="a"} | logfmt | unwrap took [5m]))"#,
                r#"sum by (pod) (increase(log_pattern_r_sum_total{rule="r"}[5m]))"#,
                r#"{namespace="a"} | logfmt | unwrap took"#,
            ),
            (
                r#"sum(rate({namespace="a"} | json | unwrap bytes(size) | __error__="" [1m]))"#,
                r#"sum(rate(log_pattern_r_sum_total{rule="r"}[1m]))"#,
                r#"{namespace="a"} | json | unwrap bytes(size) | __error__="""#,
            ),
            (
                r#"sum by (namespace) (bytes_over_time({namespace="a"} |= "x" [1h]))"#,
                r#"sum by (namespace) (increase(log_pattern_r_bytes_total{rule="r"}[1h]))"#,
                r#"{namespace="a"} |= "x" | label_format log_line_bytes=`{{ len __line__ }}` | unwrap log_line_bytes"#,
            ),
            (
                r#"max(bytes_rate({namespace="a"}[5m]))"#,
                r#"max((rate(log_pattern_r_bytes_total{rule="r"}[5m]) > 0))"#,
                r#"{namespace="a"} | label_format log_line_bytes=`{{ len __line__ }}` | unwrap log_line_bytes"#,
            ),
        ];
        for (expr, want, query) in sums {
            let (got, rules, _) = tr(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(&got, want, "{expr}");
            assert_eq!(rules[0].0, *query, "{expr}");
        }
        // offset and label_replace carry over (label_replace's source label mapped).
        let (got, _, _) = tr(
            r#"label_replace(sum by (app) (rate({namespace="a"}[5m] offset 1h)), "svc", "$1", "app", "nova-(.*)")"#,
        )
        .unwrap();
        assert_eq!(
            got,
            format!(
                r#"label_replace(sum by (container) (rate({}[5m] offset 1h)), "svc", "$1", "container", "nova-(.*)")"#,
                m("r")
            )
        );
        let (got, _, _) =
            tr(r#"max(quantile_over_time(0.99, {namespace="a"} | regexp "took=(?P<took>\\S+)" | unwrap took [5m]) by (pod))"#)
                .unwrap();
        assert_eq!(
            got,
            r#"max((histogram_quantile(0.99, sum by (le, pod) (rate(log_pattern_r_hist_bucket{rule="r"}[5m]))) >= -Inf))"#
        );
        let (got, _, _) =
            tr(r#"quantile_over_time(0.5, {namespace="a"} |= "x" | label_format t=`{{ len __line__ }}` | unwrap t [1m])"#)
                .unwrap();
        assert_eq!(
            got,
            r#"(histogram_quantile(0.5, rate(log_pattern_r_hist_bucket{rule="r"}[1m])) >= -Inf)"#
        );
        assert!(parse_buckets("1, 0.5").is_err() && parse_buckets("x").is_err());
        assert_eq!(parse_buckets(" 0.1,1 ,5"), Ok(vec![0.1, 1.0, 5.0]));
        let (got, _, _) = tr(r#"max(count_over_time({namespace="a"}[5m] offset 10m))"#).unwrap();
        assert_eq!(
            got,
            format!("max((increase({}[5m] offset 10m) > 0))", m("r"))
        );
        // The same log query twice is one exporter rule; keep labels follow the aggregation.
        let (_, rules, _) = tr(
            r#"sum by (pod) (rate({namespace="a"}[5m])) / sum by (pod) (rate({namespace="a"}[5m]))"#,
        )
        .unwrap();
        assert_eq!(
            rules,
            [(
                r#"{namespace="a"}"#.to_string(),
                Some(vec!["pod".to_string()])
            )]
        );
        let (e, rules, _) =
            tr(r#"sum by (namespace, level) (rate({namespace="a"} | json [5m]))"#).unwrap();
        // A series of extracted labels born within the range: its value is its count.
        let born = |f: &str, s: &str, r: &str, per: &str| {
            format!("({f}({s}[{r}]) and {s} offset {r} or {s}{per} unless {s} offset {r})")
        };
        assert_eq!(
            e,
            format!(
                "sum by (namespace, level) ({})",
                born("rate", &m("r"), "5m", " / 300")
            )
        );
        assert_eq!(rules[0].1, Some(vec!["namespace".to_string()]));
        let (_, rules, warnings) = tr(r#"max(rate({job="a"}[5m]))"#).unwrap();
        assert_eq!(rules[0].1, None, "max keeps one series per stream");
        assert!(warnings[0].contains("\"job\""), "{warnings:?}");
        // A mapped label: the selector and the grouping use the source's name.
        let (e, rules, warnings) =
            tr(r#"sum by (app) (rate({app=~"nova-.*", namespace="x"} |= "}" [5m]))"#).unwrap();
        assert_eq!(e, format!("sum by (container) (rate({}[5m]))", m("r")));
        assert_eq!(
            rules,
            [(
                r#"{container=~`nova-.*`, namespace=`x`} |= "}""#.to_string(),
                Some(vec!["container".to_string()])
            )]
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        // Per stream after parsers that name their labels: Loki's series are the stream's
        // labels plus the parsed ones, which the rule keeps as extracted labels.
        let m2 = parse_metric(
            r#"count_over_time({namespace="a"} | json e="event" | e="stop" | logfmt code, e [1h]) > 0"#,
        )
        .unwrap();
        let known = known_labels(None, &[]);
        let mut taken = std::collections::HashSet::new();
        let mut t = Tr::new("r", &mut taken, &known, None);
        assert_eq!(
            t.emit(&m2).unwrap(),
            format!("({} > 0) > 0", born("increase", &m("r"), "1h", " * 1"))
        );
        assert_eq!(t.rules[0].0.keep, None);
        assert_eq!(t.rules[0].0.labels, ["code", "e"]);
        // avg_over_time by: the sum of the values over the lines of the query without unwrap.
        let (e, rules, _) = tr(
            r#"avg_over_time({namespace="a"} | logfmt idle, flavor | unwrap idle [1h]) by (flavor) < 300"#,
        )
        .unwrap();
        assert_eq!(
            e,
            format!(
                "(sum by (flavor) ({}) / sum by (flavor) ({}) >= -Inf) < 300",
                born(
                    "increase",
                    "log_pattern_r_sum_total{rule=\"r\"}",
                    "1h",
                    " * 1"
                ),
                born("increase", &m("r_2"), "1h", " * 1")
            )
        );
        assert_eq!(
            rules.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
            [
                r#"{namespace="a"} | logfmt idle, flavor | unwrap idle"#,
                r#"{namespace="a"} | logfmt idle, flavor"#
            ]
        );
        // With `offset`, the born-within-range test moves by it too.
        let (e, _, _) = tr(
            r#"sum by (level) (count_over_time({namespace="a"} | logfmt level [10m] offset 1h))"#,
        )
        .unwrap();
        let s = m("r");
        assert_eq!(
            e,
            format!("sum by (level) ((increase({s}[10m] offset 1h) and {s} offset 4200s or {s} * 1 unless {s} offset 4200s))")
        );
        // A per-stream sum of unwrapped values: where the same query without the unwrap
        // counted lines (a sum can be 0), per stream and parsed label but the unwrapped one.
        let mut taken = std::collections::HashSet::new();
        let mut t = Tr::new("r", &mut taken, &known, None);
        let e = t
            .emit(&parse_metric(r#"sum_over_time({namespace="a"} | json e="event", n="crashed" | e="x" | unwrap n [10m]) > 2"#).unwrap())
            .unwrap();
        let (sum, lines) = ("log_pattern_r_sum_total{rule=\"r\"}", m("r_2"));
        assert_eq!(
            e,
            format!(
                "({} and ignoring (rule) {} > 0) > 2",
                born("increase", sum, "10m", " * 1"),
                born("increase", &lines, "10m", " * 1")
            )
        );
        let got: Vec<_> = t
            .rules
            .iter()
            .map(|(w, _)| (w.query.as_str(), w.keep.clone(), w.labels.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    r#"{namespace="a"} | json e="event", n="crashed" | e="x" | unwrap n"#,
                    None,
                    vec!["e".to_string()]
                ),
                (
                    r#"{namespace="a"} | json e="event", n="crashed" | e="x""#,
                    None,
                    vec!["e".to_string()]
                ),
            ]
        );
        let deep = "(".repeat(100_000);
        assert!(tr(&deep).unwrap_err().contains("nested deeper than 64"));
        let long = vec!["1"; 2000].join(" + ");
        assert!(tr(&long).unwrap_err().contains("more than 1000 terms"));
        for (bad, why) in [
            (
                r#"max(sum_over_time({a="b"} | logfmt | unwrap x [5m]))"#,
                "does not name its labels",
            ),
            (
                r#"sum(avg_over_time({a="b"} | logfmt | unwrap x [5m]))"#,
                "avg_over_time (an unwrap range aggregation)",
            ),
            (r#"sum(sum_over_time({a="b"} [5m]))"#, "needs `| unwrap`"),
            (
                r#"sum(bytes_rate({a="b"} | logfmt | unwrap x [5m]))"#,
                "Loki refuses",
            ),
            (r#"sum(rate({a="b"}[5m] offset))"#, "invalid offset"),
            (
                r#"label_replace(sum(rate({a="b"}[5m])), "x", "$1", "y")"#,
                "expected `,`",
            ),
            (
                r#"quantile_over_time(0.9, {a="b"} | json [5m])"#,
                "needs `| unwrap`",
            ),
            (
                r#"quantile_over_time(0.9, {a="b"} | json | unwrap x [5m])"#,
                "after a parser stage",
            ),
            (
                r#"sum_over_time({a="b"} | json | unwrap x [5m]) by (a)"#,
                "by/without",
            ),
            (r#"max(rate({a="b"} | json [5m]))"#, "after a parser stage"),
            (
                r#"max(rate({a="b"} | json x="x" | drop x [5m]))"#,
                "after a parser stage",
            ),
            (
                r#"avg_over_time({a="b"} | logfmt x | unwrap x | __error__="" [5m]) by (a)"#,
                "ends its query",
            ),
            (
                r#"avg_over_time({a="b"} | logfmt x | unwrap x [5m]) without (a)"#,
                "by/without",
            ),
            (
                r#"sum by (other) (rate({a="b"} | regexp "(?P<level>\\w+)" [5m]))"#,
                "neither a source label nor extracted",
            ),
            (r#"rate({a="b"}[5m]) / rate({a="c"}[5m])"#, "not aggregated"),
            (r#"sum(rate({a="b"} | distinct x [5m]))"#, "distinct"),
            (r#"sum(rate({a="b"}[5m])"#, "expected `)`"),
        ] {
            let e = tr(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
