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
pub const SUPPORTED: &str = "supported: a stream selector {label=\"v\", label!=\"v\", label=~\"re\", label!~\"re\"} followed by line filters |= \"text\", != \"text\", |~ \"re\", !~ \"re\", at most one parser stage | json, | logfmt or | regexp \"(?P<name>re)\", after it label filters | name=\"v\" (also !=, =~, !~) or | name > 1.5 (also >=, <, <=, ==, !=), and last | unwrap name";

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
    /// The parser stage, which extracts labels from the line.
    pub parser: Option<ParserStage>,
    /// Filters on extracted labels (all must hold).
    pub label_filters: Vec<LabelFilter>,
    /// `| unwrap field`: the extracted number the rule adds, sets or observes.
    pub unwrap: Option<String>,
}

/// A parser stage.
#[derive(Debug, Clone)]
pub enum ParserStage {
    /// `| json`: top-level fields; nested objects flattened with `_` (`a_b`), as Loki does.
    Json,
    /// `| logfmt`: `key=value` and `key="quoted value"` pairs.
    Logfmt,
    /// `| regexp "(?P<name>...)"`: the named groups of the first match.
    Regexp(regex::bytes::Regex),
}

/// Longest extracted value kept, in bytes (longer ones are cut): bounds series memory.
pub const MAX_VALUE_BYTES: usize = 256;

fn cut(mut v: String) -> String {
    if v.len() > MAX_VALUE_BYTES {
        let mut n = MAX_VALUE_BYTES;
        while !v.is_char_boundary(n) {
            n -= 1;
        }
        v.truncate(n);
    }
    v
}

impl ParserStage {
    /// The labels the stage extracts from `line` (none when the line does not parse).
    pub fn extract(&self, line: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match self {
            ParserStage::Json => {
                if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(line) {
                    flatten_json("", &m, &mut out);
                }
            }
            ParserStage::Logfmt => logfmt(line, &mut out),
            ParserStage::Regexp(re) => {
                if let Some(c) = re.captures(line) {
                    for name in re.capture_names().flatten() {
                        if let Some(m) = c.name(name) {
                            out.push((
                                name.to_string(),
                                cut(String::from_utf8_lossy(m.as_bytes()).into_owned()),
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    /// Named groups of a regexp stage (`None` for the other parsers: any name may occur).
    pub fn names(&self) -> Option<Vec<String>> {
        match self {
            ParserStage::Regexp(re) => {
                Some(re.capture_names().flatten().map(String::from).collect())
            }
            _ => None,
        }
    }
}

fn label_name(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn flatten_json(
    prefix: &str,
    m: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, String)>,
) {
    for (k, v) in m {
        let name = if prefix.is_empty() {
            label_name(k)
        } else {
            format!("{prefix}_{}", label_name(k))
        };
        match v {
            serde_json::Value::Object(inner) => flatten_json(&name, inner, out),
            serde_json::Value::String(s) => out.push((name, cut(s.clone()))),
            serde_json::Value::Number(n) => out.push((name, n.to_string())),
            serde_json::Value::Bool(b) => out.push((name, b.to_string())),
            serde_json::Value::Null | serde_json::Value::Array(_) => {}
        }
    }
}

/// `key=value key="quoted \"value\"" flag` pairs; malformed parts are skipped.
fn logfmt(line: &[u8], out: &mut Vec<(String, String)>) {
    let s = String::from_utf8_lossy(line);
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() && chars.peek().is_none() {
            return;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some('t') => value.push('\t'),
                            Some(o) => value.push(o),
                            None => break,
                        },
                        _ => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        } else if key.is_empty() {
            chars.next();
            continue;
        }
        if !key.is_empty() {
            out.push((label_name(&key), cut(value)));
        }
    }
}

/// A numeric comparison of a label filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A filter on an extracted label.
#[derive(Debug, Clone)]
pub enum LabelFilter {
    /// `name op "string"`.
    Str(Matcher),
    /// `name op number`: false when the value is missing or not a number.
    Num { name: String, op: CmpOp, value: f64 },
}

impl LabelFilter {
    /// The label it tests.
    pub fn name(&self) -> &str {
        match self {
            LabelFilter::Str(m) => &m.name,
            LabelFilter::Num { name, .. } => name,
        }
    }

    /// Whether `value` (empty when the label was not extracted) passes.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            LabelFilter::Str(m) => m.matches(value),
            LabelFilter::Num {
                op, value: want, ..
            } => {
                let Ok(v) = value.trim().parse::<f64>() else {
                    return false;
                };
                match op {
                    CmpOp::Eq => v == *want,
                    CmpOp::Ne => v != *want,
                    CmpOp::Gt => v > *want,
                    CmpOp::Ge => v >= *want,
                    CmpOp::Lt => v < *want,
                    CmpOp::Le => v <= *want,
                }
            }
        }
    }
}

/// One step after the selector.
enum Step {
    Filter(Filter),
    Parser(ParserStage),
    Label(LabelFilter),
    Unwrap(String),
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
            parser: None,
            label_filters: Vec::new(),
            unwrap: None,
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
    let mut parser = None;
    let mut label_filters = Vec::new();
    let mut unwrap = None;
    loop {
        p.ws();
        if p.at_end() {
            break;
        }
        let at = p.pos;
        if unwrap.is_some() {
            return err(at, "`| unwrap` must be the last stage");
        }
        match p.step()? {
            Step::Unwrap(field) => {
                if parser.is_none() {
                    return err(
                        at,
                        "`| unwrap` needs a parser stage (| json, | logfmt, | regexp) before it",
                    );
                }
                unwrap = Some(field);
            }
            Step::Filter(f) => filters.push(f),
            Step::Parser(s) => {
                if parser.is_some() {
                    return err(at, "only one parser stage is supported");
                }
                parser = Some(s);
            }
            Step::Label(l) => {
                if parser.is_none() {
                    return err(
                        at,
                        "a label filter needs a parser stage (| json, | logfmt, | regexp) before it",
                    );
                }
                label_filters.push(l);
            }
        }
    }
    Ok(Expr {
        text: text.to_string(),
        matchers,
        filters,
        parser,
        label_filters,
        unwrap,
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

    fn step(&mut self) -> Result<Step, ExprError> {
        if self.peek() != Some('|') || matches!(self.peek2(), Some('=' | '~' | '>')) {
            return self.filter().map(Step::Filter);
        }
        self.pos += 1;
        self.ws();
        let word_at = self.pos;
        let word = self.ident();
        match word.as_str() {
            "json" => Ok(Step::Parser(ParserStage::Json)),
            "logfmt" => Ok(Step::Parser(ParserStage::Logfmt)),
            "regexp" => {
                self.ws();
                let at = self.pos;
                let value = self.string()?;
                let re = regex::bytes::Regex::new(&value)
                    .map_err(|e| regex_error(at, &e.to_string()))?;
                if re.capture_names().flatten().next().is_none() {
                    return err(at, "the regexp stage needs named groups: (?P<name>...)");
                }
                Ok(Step::Parser(ParserStage::Regexp(re)))
            }
            "" => err(word_at, "expected a stage or label filter after `|`"),
            "unwrap" => {
                self.ws();
                let at = self.pos;
                let field = self.ident();
                if field.is_empty() {
                    return err(
                        at,
                        "expected the name of an extracted label after `| unwrap`",
                    );
                }
                if self.peek() == Some('(') {
                    return err(
                        at,
                        "unwrap conversion functions (duration(), bytes()) are not supported",
                    );
                }
                Ok(Step::Unwrap(field))
            }
            "pattern" | "unpack" | "line_format" | "label_format" | "drop" | "keep"
            | "decolorize" | "distinct" => {
                err(word_at, format!("the `| {word}` stage is not supported"))
            }
            _ => self.label_filter(word).map(Step::Label),
        }
    }

    fn label_filter(&mut self, name: String) -> Result<LabelFilter, ExprError> {
        self.ws();
        let at = self.pos;
        let two: String = self.chars[self.pos..]
            .iter()
            .take(2)
            .map(|&(_, c)| c)
            .collect();
        let (len, str_op, cmp) = match two.as_str() {
            "=~" => (2, Some(MatchOp::Re), None),
            "!~" => (2, Some(MatchOp::NotRe), None),
            "==" => (2, Some(MatchOp::Eq), Some(CmpOp::Eq)),
            "!=" => (2, Some(MatchOp::Ne), Some(CmpOp::Ne)),
            ">=" => (2, None, Some(CmpOp::Ge)),
            "<=" => (2, None, Some(CmpOp::Le)),
            _ => match two.chars().next() {
                Some('=') => (1, Some(MatchOp::Eq), Some(CmpOp::Eq)),
                Some('>') => (1, None, Some(CmpOp::Gt)),
                Some('<') => (1, None, Some(CmpOp::Lt)),
                _ => {
                    return err(
                        at,
                        format!("unknown stage `| {name}`; a label filter needs an operator: =, !=, =~, !~, >, >=, <, <=, =="),
                    )
                }
            },
        };
        self.pos += len;
        self.ws();
        let value_at = self.pos;
        if matches!(self.peek(), Some('"' | '`')) {
            let Some(op) = str_op else {
                return err(value_at, "a comparison needs a number");
            };
            let value = self.string()?;
            let regex = match op {
                MatchOp::Re | MatchOp::NotRe => Some(
                    regex::Regex::new(&format!("^(?:{value})$"))
                        .map_err(|e| regex_error(value_at, &e.to_string()))?,
                ),
                _ => None,
            };
            return Ok(LabelFilter::Str(Matcher {
                name,
                op,
                value,
                regex,
            }));
        }
        let mut num = String::new();
        while let Some(c) = self
            .peek()
            .filter(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        {
            num.push(c);
            self.pos += 1;
        }
        let (Some(op), Ok(value)) = (cmp, num.parse::<f64>()) else {
            return err(value_at, "expected a string or a number");
        };
        Ok(LabelFilter::Num { name, op, value })
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
                r#"{a="b"} |= "x" | unpack"#,
                17,
                "`| unpack` stage is not supported",
            ),
            (r#"{a="b"} | line_format "x""#, 10, "`| line_format` stage"),
            (r#"{a="b"} | level="error""#, 8, "needs a parser stage"),
            (r#"{a="b"} | json | logfmt"#, 15, "only one parser stage"),
            (r#"{a="b"} | json | level ~ "x""#, 23, "needs an operator"),
            (r#"{a="b"} | json | n > "x""#, 21, "needs a number"),
            (r#"{a="b"} | json | n > abc"#, 21, "a string or a number"),
            (r#"{a="b"} | regexp "(x)""#, 17, "named groups"),
            (r#"{a="b"} | regexp "(?P<x>""#, 17, "invalid regex"),
            (r#"{a="b"} | json | n =~ "(""#, 22, "invalid regex"),
            (r#"{a="b"} | "#, 10, "expected a stage"),
            (r#"{a="b"} | unwrap x"#, 8, "`| unwrap` needs a parser"),
            (
                r#"{a="b"} | json | unwrap x | n > 1"#,
                26,
                "must be the last stage",
            ),
            (r#"{a="b"} | json | unwrap "#, 24, "expected the name"),
            (
                r#"{a="b"} | json | unwrap duration(x)"#,
                24,
                "conversion functions",
            ),
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
    fn parser_stages_and_label_filters() {
        let e = parse(
            r#"{} |= "level" | logfmt | level="error" | latency_ms >= 250 | code != 200 | msg !~ "(?i)retry.*""#,
        )
        .unwrap();
        assert!(matches!(e.parser, Some(ParserStage::Logfmt)));
        assert_eq!(e.filters.len(), 1);
        assert_eq!(e.label_filters.len(), 4);
        let fields = e.parser.as_ref().unwrap().extract(
            br#"ts=2024 level=error msg="db \"slow\" query" latency_ms=300.5 code=500 flag"#,
        );
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("msg"), Some("db \"slow\" query"));
        assert_eq!(get("flag"), Some(""));
        assert!(e
            .label_filters
            .iter()
            .all(|f| f.matches(get(f.name()).unwrap_or(""))));
        assert!(!e.label_filters[1].matches("100"));
        assert!(!e.label_filters[1].matches("not a number"));
        assert!(!e.label_filters[2].matches("200.0"));
        assert!(!e.label_filters[3].matches("Retrying soon"));

        let e = parse(r#"{} | json | user_name="bob" | unwrap took_ms"#).unwrap();
        assert_eq!(e.unwrap.as_deref(), Some("took_ms"));
        let fields =
            e.parser.as_ref().unwrap().extract(
                br#"{"user":{"name":"bob","id":7},"ok":true,"tags":[1],"n":null,"a-b":"x"}"#,
            );
        let mut keys: Vec<_> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        keys.sort();
        assert_eq!(keys, ["a_b=x", "ok=true", "user_id=7", "user_name=bob"]);
        assert!(e.parser.as_ref().unwrap().extract(b"not json").is_empty());

        let e = parse(r#"{} | regexp `Killed process \d+ \((?P<process>[^)]+)\)`"#).unwrap();
        let p = e.parser.as_ref().unwrap();
        assert_eq!(p.names(), Some(vec!["process".to_string()]));
        assert_eq!(
            p.extract(b"Out of memory: Killed process 42 (qemu-kvm) total-vm:1kB"),
            [("process".to_string(), "qemu-kvm".to_string())]
        );
        let long = format!("Killed process 1 ({})", "x".repeat(1000));
        assert_eq!(p.extract(long.as_bytes())[0].1.len(), MAX_VALUE_BYTES);
    }

    #[test]
    fn offsets_count_characters() {
        let e = parse("{a=\"é\"} | unpack").unwrap_err();
        assert_eq!(e.offset, 10);
    }
}
