//! The rule expression language: a LogQL log query (stream selector + line filters).
//!
//! `{namespace="x", pod=~"nova-.*", container!="sidecar", stream="stderr"} |= "ERROR" !~ "retry"`
//! is what Loki users already write in their ruler rules, so rules move here unchanged. The
//! selector's matchers (`=`, `!=`, `=~`, `!~`; regexes anchored as in Prometheus and Loki) test a
//! file's source labels, except `stream`, which is tested per line (a CRI file holds both
//! streams); a label a source lacks is the empty string, as in Prometheus. Line filters (`|=`,
//! `!=`, `|~`, `!~`; regexes unanchored) must all hold. `{}` selects every source. Everything
//! else of LogQL (parser stages, metric queries, `or` in filters) is rejected with an error that
//! gives its character offset in the expression and says what is supported.
//!
//! Parsing is a small hand-written scanner: the grammar is tiny, and a hand-written one gives the
//! precise positions and messages users need.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// What the grammar supports, appended to errors.
pub const SUPPORTED: &str = "supported: a stream selector {label=\"v\", label!=\"v\", label=~\"re\", label!~\"re\"} followed by line filters |= \"text\", != \"text\", |~ \"re\", !~ \"re\"";

/// A parse error at a character offset (0-based) of the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at offset {offset} of the expression: {message}")]
pub struct ExprError {
    pub offset: usize,
    pub message: String,
}

/// A label matcher's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

/// One `label op "value"` of the selector.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// Anchored regex for `=~`/`!~`.
    regex: Option<regex::Regex>,
}

impl Matcher {
    /// Whether `value` (empty when the label is absent) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Eq, _) => value == self.value,
            (MatchOp::Ne, _) => value != self.value,
            (MatchOp::Re, Some(r)) => r.is_match(value),
            (MatchOp::NotRe, Some(r)) => !r.is_match(value),
            (_, None) => false,
        }
    }
}

/// A line filter's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    /// `|=`
    Contains,
    /// `!=`
    NotContains,
    /// `|~`
    Matches,
    /// `!~`
    NotMatches,
}

/// One line filter.
#[derive(Debug, Clone)]
pub struct Filter {
    pub op: FilterOp,
    pub value: String,
    /// Unanchored regex for `|~`/`!~`.
    pub regex: Option<regex::bytes::Regex>,
}

/// A parsed rule expression.
#[derive(Debug, Clone)]
pub struct Expr {
    /// The source text (rules are compared by it on reload).
    pub text: String,
    pub matchers: Vec<Matcher>,
    pub filters: Vec<Filter>,
}

impl Expr {
    /// The expression of the legacy `contains: TEXT` rule: `{} |= "TEXT"`.
    pub fn contains(text: &str) -> Self {
        Self {
            text: format!("{{}} |= {text:?}"),
            matchers: Vec::new(),
            filters: vec![Filter {
                op: FilterOp::Contains,
                value: text.to_string(),
                regex: None,
            }],
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Expr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(|e| {
            serde::de::Error::custom(format!("invalid expr {text:?}: {e}; {SUPPORTED}"))
        })
    }
}

/// Parses an expression.
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    let mut p = Parser {
        chars: text.char_indices().collect(),
        pos: 0,
    };
    let matchers = p.selector()?;
    let mut filters = Vec::new();
    loop {
        p.ws();
        if p.at_end() {
            break;
        }
        filters.push(p.filter()?);
    }
    Ok(Expr {
        text: text.to_string(),
        matchers,
        filters,
    })
}

struct Parser {
    /// (byte offset, char); positions reported are indices into this (character offsets).
    chars: Vec<(usize, char)>,
    pos: usize,
}

/// LogQL functions users may paste from a recording rule.
const METRIC_FUNCTIONS: &[&str] = &[
    "sum",
    "count",
    "avg",
    "min",
    "max",
    "topk",
    "bottomk",
    "rate",
    "count_over_time",
    "bytes_over_time",
    "bytes_rate",
    "sum_over_time",
    "avg_over_time",
    "quantile_over_time",
    "absent_over_time",
    "rate_counter",
];

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError {
        offset,
        message: message.into(),
    })
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn peek2(&self) -> Option<char> {
        self.chars.get(self.pos + 1).map(|&(_, c)| c)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn ident(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            let ok = c == '_' || c.is_ascii_alphabetic() || (!s.is_empty() && c.is_ascii_digit());
            if !ok {
                break;
            }
            s.push(c);
            self.pos += 1;
        }
        s
    }

    fn selector(&mut self) -> Result<Vec<Matcher>, ExprError> {
        self.ws();
        if self.peek() != Some('{') {
            let start = self.pos;
            let word = self.ident();
            if METRIC_FUNCTIONS.contains(&word.as_str()) {
                return err(
                    start,
                    format!("metric queries ({word}(...)) are not supported: a rule is the log query inside, and the exporter counts the lines it selects (import-loki-rules translates recording rules)"),
                );
            }
            return err(
                start,
                "expected a stream selector `{...}` (`{}` selects every source)",
            );
        }
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            self.ws();
            match self.peek() {
                Some('}') => {
                    self.pos += 1;
                    return Ok(out);
                }
                None => return err(self.pos, "unterminated stream selector: expected `}`"),
                _ => {}
            }
            out.push(self.matcher()?);
            self.ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {}
                None => return err(self.pos, "unterminated stream selector: expected `}`"),
                Some(c) => return err(self.pos, format!("expected `,` or `}}`, found {c:?}")),
            }
        }
    }

    fn matcher(&mut self) -> Result<Matcher, ExprError> {
        let start = self.pos;
        let name = self.ident();
        if name.is_empty() {
            return err(start, "expected a label name");
        }
        if name.starts_with("__") {
            return err(start, format!("label name {name:?} is reserved"));
        }
        self.ws();
        let op_at = self.pos;
        let op = match (self.peek(), self.peek2()) {
            (Some('='), Some('~')) => MatchOp::Re,
            (Some('!'), Some('=')) => MatchOp::Ne,
            (Some('!'), Some('~')) => MatchOp::NotRe,
            (Some('='), _) => MatchOp::Eq,
            _ => return err(op_at, "expected a matcher operator: =, !=, =~ or !~"),
        };
        self.pos += if op == MatchOp::Eq { 1 } else { 2 };
        self.ws();
        let value_at = self.pos;
        let value = self.string()?;
        let regex = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| regex_error(value_at, &e.to_string()))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    fn filter(&mut self) -> Result<Filter, ExprError> {
        let at = self.pos;
        let op = match (self.peek(), self.peek2()) {
            (Some('|'), Some('=')) => FilterOp::Contains,
            (Some('!'), Some('=')) => FilterOp::NotContains,
            (Some('|'), Some('~')) => FilterOp::Matches,
            (Some('!'), Some('~')) => FilterOp::NotMatches,
            (Some('|'), Some('>')) | (Some('!'), Some('>')) => {
                return err(at, "pattern line filters (|> and !>) are not supported")
            }
            (Some('|'), _) => {
                self.pos += 1;
                self.ws();
                let word_at = self.pos;
                let word = self.ident();
                let what = if word.is_empty() {
                    "a pipeline stage".to_string()
                } else {
                    format!("the `| {word}` stage")
                };
                return err(
                    word_at.min(self.chars.len()),
                    format!("{what} is not supported (no parser, label filter or format stages)"),
                );
            }
            (Some('['), _) => return err(at, "range selectors ([5m]) are not supported: a rule is a log query, not a metric query"),
            (Some(c), _) => {
                let word_at = self.pos;
                if self.ident() == "or" {
                    return err(word_at, "`or` between line filters is not supported: use |~ \"a|b\"");
                }
                return err(at, format!("expected a line filter (|=, !=, |~, !~), found {c:?}"));
            }
            (None, _) => return err(at, "expected a line filter"),
        };
        self.pos += 2;
        self.ws();
        let value_at = self.pos;
        let value = self.string()?;
        let regex = match op {
            FilterOp::Matches | FilterOp::NotMatches => Some(
                regex::bytes::Regex::new(&value)
                    .map_err(|e| regex_error(value_at, &e.to_string()))?,
            ),
            FilterOp::Contains | FilterOp::NotContains => {
                if value.is_empty() {
                    return err(value_at, "empty line filter string");
                }
                None
            }
        };
        Ok(Filter { op, value, regex })
    }

    /// A double-quoted string (Go escapes) or a backquoted raw string.
    fn string(&mut self) -> Result<String, ExprError> {
        let start = self.pos;
        let quote = match self.peek() {
            Some(q @ ('"' | '`')) => q,
            _ => return err(start, "expected a string in double quotes or backquotes"),
        };
        self.pos += 1;
        let mut s = String::new();
        loop {
            let Some(c) = self.peek() else {
                return err(start, "unterminated string");
            };
            self.pos += 1;
            if c == quote {
                return Ok(s);
            }
            if c == '\\' && quote == '"' {
                let esc_at = self.pos - 1;
                let Some(e) = self.peek() else {
                    return err(start, "unterminated string");
                };
                self.pos += 1;
                s.push(match e {
                    '"' => '"',
                    '\\' => '\\',
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    _ => {
                        return err(
                            esc_at,
                            format!("unknown escape \\{e} (use \\\\ for a backslash, or a `backquoted` string for regexes)"),
                        )
                    }
                });
            } else {
                s.push(c);
            }
        }
    }
}

fn regex_error(offset: usize, message: &str) -> ExprError {
    // The regex crate's message spans several lines with a caret diagram; keep the last line.
    let last = message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message);
    ExprError {
        offset,
        message: format!("invalid regex: {}", last.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_construct() {
        let e = parse(
            r#"{namespace="x", pod=~"nova-.*", container!="sidecar", app!~"a|b", stream="stderr",} |= "ERROR" != "retry" |~ `time(d)?out` !~ "(?i)debug""#,
        )
        .unwrap();
        let ops: Vec<_> = e.matchers.iter().map(|m| (m.name.as_str(), m.op)).collect();
        assert_eq!(
            ops,
            [
                ("namespace", MatchOp::Eq),
                ("pod", MatchOp::Re),
                ("container", MatchOp::Ne),
                ("app", MatchOp::NotRe),
                ("stream", MatchOp::Eq)
            ]
        );
        assert!(e.matchers[1].matches("nova-api-1"));
        assert!(!e.matchers[1].matches("x-nova-api"), "regex is anchored");
        assert!(
            e.matchers[2].matches(""),
            "absent label is the empty string"
        );
        assert!(!e.matchers[3].matches("a"));
        assert!(e.matchers[3].matches("ab"));
        let f: Vec<_> = e.filters.iter().map(|f| (f.op, f.value.as_str())).collect();
        assert_eq!(
            f,
            [
                (FilterOp::Contains, "ERROR"),
                (FilterOp::NotContains, "retry"),
                (FilterOp::Matches, "time(d)?out"),
                (FilterOp::NotMatches, "(?i)debug"),
            ]
        );
        assert!(e.filters[2]
            .regex
            .as_ref()
            .unwrap()
            .is_match(b"a timedout b"));
        let e = parse("{}").unwrap();
        assert!(e.matchers.is_empty() && e.filters.is_empty());
        let e = parse(r#" { a = "q\"\\\n" } "#).unwrap();
        assert_eq!(e.matchers[0].value, "q\"\\\n");
    }

    #[test]
    fn errors_point_at_the_position() {
        let cases: &[(&str, usize, &str)] = &[
            (r#"namespace="x""#, 0, "expected a stream selector"),
            (r#"sum(rate({a="b"}[5m]))"#, 0, "metric queries (sum(...))"),
            (r#"count_over_time({a="b"}[5m])"#, 0, "metric queries"),
            (r#"{a="b""#, 6, "unterminated stream selector"),
            (r#"{a="b" c="d"}"#, 7, "expected `,` or `}`"),
            (r#"{a>"b"}"#, 2, "matcher operator"),
            (r#"{="b"}"#, 1, "expected a label name"),
            (r#"{__name__="b"}"#, 1, "reserved"),
            (r#"{a=b}"#, 3, "expected a string"),
            (r#"{a="b}"#, 3, "unterminated string"),
            (r#"{a=~"("}"#, 4, "invalid regex"),
            (
                r#"{a="b"} |= "x" | json"#,
                17,
                "`| json` stage is not supported",
            ),
            (r#"{a="b"} | logfmt"#, 10, "`| logfmt` stage"),
            (r#"{a="b"} |~ "(x""#, 11, "invalid regex"),
            (r#"{a="b"} |= """#, 11, "empty line filter"),
            (r#"{a="b"} |> "<_>""#, 8, "pattern line filters"),
            (r#"{a="b"} |= "x" or "y""#, 15, "`or` between line filters"),
            (r#"{a="b"} "x""#, 8, "expected a line filter"),
            (r#"{a="b"}[5m]"#, 7, "range selectors"),
            (r#"{a="\d"}"#, 4, "unknown escape \\d"),
            (r#"{a="b"} |="#, 10, "expected a string"),
        ];
        for &(text, offset, want) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.offset, offset, "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn offsets_count_characters() {
        let e = parse("{a=\"é\"} | json").unwrap_err();
        assert_eq!(e.offset, 10);
    }
}
