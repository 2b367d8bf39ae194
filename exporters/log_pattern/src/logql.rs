//! The rule expression language: a LogQL log query, with Loki's meaning.
//!
//! `{namespace="x", pod=~"nova-.*", stream="stderr"} |= "ERROR" != "retry" | json | level="error"`
//! is what Loki users already write in their ruler rules, so rules move here unchanged. The
//! selector's matchers (`=`, `!=`, `=~`, `!~`; regexes anchored as in Prometheus and Loki) test a
//! file's source labels, except `stream`, which is tested per line (a CRI file holds both
//! streams); a label a source lacks is the empty string, as in Prometheus. `{}` selects every
//! source (Loki needs at least one matcher). Line filters (`|=`, `!=`, `|~`, `!~`, `|>`, `!>`,
//! `or` between their strings) must all hold. The stages after them ([`pipeline`]): parsers
//! `| json`, `| logfmt`, `| regexp`, `| pattern` with their parameter forms, label filters
//! (string, number, duration and bytes comparisons joined with `and`, `,`, `or` and
//! parentheses), `| drop`, `| keep`, `| decolorize`, `| line_format` and `| label_format` (Go
//! templates, [`template`]), and last `| unwrap field`. Regexes are Go's RE2 dialect ([`re2`]),
//! strings take Go's escapes; `ip("...")` filters lines and labels ([`ip`]). What this exporter
//! does not evaluate (metric queries, `distinct`) is rejected with an error that gives its character offset in the
//! expression.
//!
//! Parsing is a small hand-written scanner: the grammar is small, and a hand-written one gives
//! the precise positions and messages users need.

use std::fmt;

use serde::{Deserialize, Deserializer};

pub mod ip;
pub mod pipeline;
pub mod re2;
pub mod template;

pub use pipeline::{
    Conversion, LabelExpr, LabelFilter, LabelFmt, LabelFmtKind, LabelSel, ParserStage, PathPart,
    Pattern, Processed, Stage, ERROR_DETAILS_LABEL, ERROR_LABEL,
};

/// What the grammar supports, appended to errors.
pub const SUPPORTED: &str = "supported: a stream selector {label=\"v\", label!=\"v\", label=~\"re\", label!~\"re\"} followed by line filters |= \"text\", != \"text\", |~ \"re\", !~ \"re\", |> \"pattern\", !> \"pattern\" (with `or` between strings), |= ip(\"10.0.0.0/8\") and != ip(...), stages | json [a=\"path\", ...], | unpack, | logfmt [--strict] [--keep-empty] [a=\"key\", ...], | regexp \"(?P<name>re)\", | pattern \"<name> ...\", | drop, | keep, | decolorize, | line_format \"{{.label}}\" and | label_format dst=\"{{.src}}\", dst=src (Go templates), label filters | name=\"v\" (also !=, =~, !~), | name=ip(\"10.0.0.1-10.0.0.9\") (also !=), | name > 1.5 (also >=, <, <=, ==, !=; numbers, durations 5s, bytes 5MB) joined with and, `,`, or and parentheses, and last | unwrap name (or duration(name), bytes(name)), then label filters only";

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

/// One `label op "value"` of the selector or of a label filter.
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
    /// `|>`
    Pattern,
    /// `!>`
    NotPattern,
    /// `|= ip("...")`
    Ip,
    /// `!= ip("...")`
    NotIp,
}

/// One line filter.
#[derive(Debug, Clone)]
pub struct Filter {
    pub op: FilterOp,
    /// The string (for `|=` with `or`: the regex of the alternatives).
    pub value: String,
    /// Unanchored regex for `|~`/`!~` (and `|= "a" or "b"`).
    pub regex: Option<regex::bytes::Regex>,
    /// `|>`/`!>`: the patterns joined by `or`.
    pub patterns: Vec<Pattern>,
    /// `|= ip("...")`/`!= ip("...")`.
    pub ip: Option<ip::IpMatch>,
}

impl Filter {
    /// Whether the line passes the filter.
    pub fn test(&self, line: &[u8]) -> bool {
        let has =
            || self.value.is_empty() || memchr::memmem::find(line, self.value.as_bytes()).is_some();
        match self.op {
            FilterOp::Contains => has(),
            FilterOp::NotContains => !has(),
            FilterOp::Matches => self.regex.as_ref().is_some_and(|r| r.is_match(line)),
            FilterOp::NotMatches => self.regex.as_ref().is_some_and(|r| !r.is_match(line)),
            FilterOp::Pattern => self.patterns.iter().any(|p| p.test(line)),
            FilterOp::NotPattern => !self.patterns.iter().any(|p| p.test(line)),
            FilterOp::Ip => self.ip.as_ref().is_some_and(|m| m.test(line)),
            FilterOp::NotIp => !self.ip.as_ref().is_some_and(|m| m.test(line)),
        }
    }
}

/// A parsed rule expression.
#[derive(Debug, Clone)]
pub struct Expr {
    /// The source text (rules are compared by it on reload).
    pub text: String,
    pub matchers: Vec<Matcher>,
    /// The line filters before any stage that rewrites the line (all must hold).
    pub filters: Vec<Filter>,
    /// The first parser stage (what `labels` of a rule can name).
    pub parser: Option<ParserStage>,
    /// Every stage after the selector but the filters above, in order.
    pub stages: Vec<Stage>,
    /// `| unwrap field`: the number the rule adds, sets or observes (the stages hold it as
    /// [`Stage::Unwrap`], followed only by label filters).
    pub unwrap: Option<String>,
}

/// Longest extracted value a series keeps, in bytes (longer ones are cut): bounds series
/// memory. Filters see the whole value.
pub const MAX_VALUE_BYTES: usize = 256;

/// `v` cut to [`MAX_VALUE_BYTES`] on a character boundary.
pub fn cut(v: &str) -> &str {
    if v.len() <= MAX_VALUE_BYTES {
        return v;
    }
    let mut n = MAX_VALUE_BYTES;
    while !v.is_char_boundary(n) {
        n -= 1;
    }
    &v[..n]
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

/// One step after the selector.
enum Step {
    Filters(Vec<Filter>),
    Stage(Stage),
    Unwrap(String, Conversion),
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
                patterns: Vec::new(),
                ip: None,
            }],
            parser: None,
            stages: Vec::new(),
            unwrap: None,
        }
    }

    /// Loki's verdict on one line of a stream with `labels` (including `stream` when the
    /// source has one): `None` when the query does not select it, else every label of the
    /// line after the pipeline (sorted; `__error__` and `__error_details__` when set).
    pub fn evaluate(&self, labels: &[(String, String)], line: &[u8]) -> Option<Processed> {
        let get = |name: &str| {
            labels
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str())
        };
        if !self.matchers.iter().all(|m| m.matches(get(&m.name))) {
            return None;
        }
        if !self.filters.iter().all(|f| f.test(line)) {
            return None;
        }
        pipeline::run(&self.stages, labels, line)
    }
}

impl Expr {
    /// The labels the stages can add (parsers, `| label_format`), by name; `None` when any
    /// name may occur (`| json`, `| logfmt` without parameters).
    pub fn added_labels(&self) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for s in &self.stages {
            match s {
                Stage::Parser(p) => out.extend(p.names()?),
                Stage::LabelFormat(fs) => out.extend(fs.iter().map(|f| f.name.clone())),
                _ => {}
            }
        }
        Some(out)
    }

    /// Whether a stage adds labels a rule's `labels` may name.
    pub fn adds_labels(&self) -> bool {
        self.stages
            .iter()
            .any(|s| matches!(s, Stage::Parser(_) | Stage::LabelFormat(_)))
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
        depth: 0,
        terms: 0,
    };
    let matchers = p.selector()?;
    let mut filters = Vec::new();
    let mut parser = None;
    let mut stages = Vec::new();
    let mut unwrap = None;
    // After `| decolorize` line filters test the rewritten line, in the pipeline.
    let mut rewritten = false;
    loop {
        p.ws();
        if p.at_end() {
            break;
        }
        let at = p.pos;
        let step = p.step()?;
        if unwrap.is_some() && !matches!(step, Step::Stage(Stage::Labels(_))) {
            return err(at, "only label filters may follow `| unwrap`");
        }
        match step {
            Step::Unwrap(field, conv) => {
                if parser.is_none() && !stages.iter().any(|s| matches!(s, Stage::LabelFormat(_))) {
                    return err(
                        at,
                        "`| unwrap` needs a parser stage (| json, | logfmt, | regexp, | pattern) or | label_format before it",
                    );
                }
                stages.push(Stage::Unwrap(field.clone(), conv));
                unwrap = Some(field);
            }
            Step::Filters(fs) if rewritten => stages.extend(fs.into_iter().map(Stage::Line)),
            Step::Filters(fs) => filters.extend(fs),
            Step::Stage(s) => {
                match &s {
                    Stage::Parser(ps) if parser.is_none() => parser = Some(ps.clone()),
                    Stage::Decolorize
                    | Stage::LineFormat(_)
                    | Stage::Parser(ParserStage::Unpack) => rewritten = true,
                    _ => {}
                }
                stages.push(s);
            }
        }
    }
    Ok(Expr {
        text: text.to_string(),
        matchers,
        filters,
        parser,
        stages,
        unwrap,
    })
}

struct Parser {
    /// (byte offset, char); positions reported are indices into this (character offsets).
    chars: Vec<(usize, char)>,
    pos: usize,
    /// Nesting of parentheses in label filters (bounded: hostile input must not exhaust the
    /// stack).
    depth: usize,
    /// Label filters in the current stage (bounded: the tree they form is walked recursively).
    terms: usize,
}

/// Deepest nesting of parentheses in label filters.
const MAX_DEPTH: usize = 64;
/// Most label filters in one stage.
const MAX_TERMS: usize = 256;

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

fn compile_anchored(value: &str, at: usize) -> Result<regex::Regex, ExprError> {
    re2::compile(&format!("^(?:{value})$")).map_err(|e| regex_error(at, &e))
}

fn cmp_str(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "==",
        CmpOp::Ne => "!=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
    }
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

    /// Whether the next word is `word` (followed by no identifier character).
    fn at_word(&self, word: &str) -> bool {
        let n = word.chars().count();
        let got: String = self.chars[self.pos.min(self.chars.len())..]
            .iter()
            .take(n)
            .map(|&(_, c)| c)
            .collect();
        got == word
            && !self
                .chars
                .get(self.pos + n)
                .is_some_and(|&(_, c)| c == '_' || c.is_ascii_alphanumeric())
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
            out.push(self.matcher(true)?);
            self.ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {}
                None => return err(self.pos, "unterminated stream selector: expected `}`"),
                Some(c) => return err(self.pos, format!("expected `,` or `}}`, found {c:?}")),
            }
        }
    }

    fn matcher(&mut self, selector: bool) -> Result<Matcher, ExprError> {
        let start = self.pos;
        let name = self.ident();
        if name.is_empty() {
            return err(start, "expected a label name");
        }
        if selector && name.starts_with("__") {
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
            MatchOp::Re | MatchOp::NotRe => Some(compile_anchored(&value, value_at)?),
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
            return self.filter().map(Step::Filters);
        }
        self.pos += 1;
        self.ws();
        self.terms = 0;
        let word_at = self.pos;
        if self.peek() == Some('(') {
            return self.label_or(None).map(|e| Step::Stage(Stage::Labels(e)));
        }
        let word = self.ident();
        let stage = |s| Ok(Step::Stage(s));
        match word.as_str() {
            "json" => {
                let fields = self.params(true)?;
                let mut out = Vec::new();
                for (name, path, at) in fields {
                    let path = match path {
                        Some(p) => json_path(&p).map_err(|m| ExprError {
                            offset: at,
                            message: m,
                        })?,
                        None => vec![PathPart::Key(name.clone())],
                    };
                    out.push((name, path));
                }
                stage(Stage::Parser(ParserStage::Json { fields: out }))
            }
            "logfmt" => {
                let (mut strict, mut keep_empty) = (false, false);
                loop {
                    self.ws();
                    if self.peek() != Some('-') || self.peek2() != Some('-') {
                        break;
                    }
                    let at = self.pos;
                    self.pos += 2;
                    let flag: String = {
                        let mut f = String::new();
                        while let Some(c) = self
                            .peek()
                            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                        {
                            f.push(c);
                            self.pos += 1;
                        }
                        f
                    };
                    match flag.as_str() {
                        "strict" => strict = true,
                        "keep-empty" => keep_empty = true,
                        _ => {
                            return err(
                                at,
                                format!("unknown logfmt flag --{flag} (--strict, --keep-empty)"),
                            )
                        }
                    }
                }
                let fields = self
                    .params(false)?
                    .into_iter()
                    .map(|(n, k, _)| (n.clone(), k.unwrap_or(n)))
                    .collect();
                stage(Stage::Parser(ParserStage::Logfmt {
                    strict,
                    keep_empty,
                    fields,
                }))
            }
            "regexp" => {
                self.ws();
                let at = self.pos;
                let value = self.string()?;
                let re = re2::compile_bytes(&value).map_err(|e| regex_error(at, &e))?;
                let names: Vec<&str> = re.capture_names().flatten().collect();
                if names.is_empty() {
                    return err(at, "the regexp stage needs named groups: (?P<name>...)");
                }
                for (i, n) in names.iter().enumerate() {
                    if names[..i].contains(n) {
                        return err(at, format!("duplicate extracted label name '{n}'"));
                    }
                }
                stage(Stage::Parser(ParserStage::Regexp(re)))
            }
            "pattern" => {
                self.ws();
                let at = self.pos;
                let value = self.string()?;
                let p = Pattern::parse(&value, false).map_err(|m| ExprError {
                    offset: at,
                    message: format!("invalid pattern: {m}"),
                })?;
                stage(Stage::Parser(ParserStage::Pattern(p)))
            }
            "drop" | "keep" => {
                let mut sels = Vec::new();
                loop {
                    self.ws();
                    let at = self.pos;
                    let name = self.ident();
                    if name.is_empty() {
                        return err(at, format!("expected a label name after `| {word}`"));
                    }
                    self.ws();
                    let matcher = if matches!(self.peek(), Some('=' | '!')) {
                        self.pos = at;
                        Some(self.matcher(false)?)
                    } else {
                        None
                    };
                    sels.push(LabelSel { name, matcher });
                    self.ws();
                    if self.peek() == Some(',') {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                stage(if word == "drop" {
                    Stage::Drop(sels)
                } else {
                    Stage::Keep(sels)
                })
            }
            "decolorize" => stage(Stage::Decolorize),
            "" => err(word_at, "expected a stage or label filter after `|`"),
            "unwrap" => {
                self.ws();
                let at = self.pos;
                let mut field = self.ident();
                if field.is_empty() {
                    return err(
                        at,
                        "expected the name of an extracted label after `| unwrap`",
                    );
                }
                self.ws();
                let mut conv = Conversion::Float;
                if self.peek() == Some('(') {
                    conv = match field.as_str() {
                        "duration" | "duration_seconds" => Conversion::Duration,
                        "bytes" => Conversion::Bytes,
                        _ => {
                            return err(
                                at,
                                format!("unknown unwrap conversion {field}() (duration(), duration_seconds(), bytes())"),
                            )
                        }
                    };
                    self.pos += 1;
                    self.ws();
                    let name_at = self.pos;
                    field = self.ident();
                    self.ws();
                    if field.is_empty() || self.peek() != Some(')') {
                        return err(name_at, "expected a label name and `)`");
                    }
                    self.pos += 1;
                }
                Ok(Step::Unwrap(field, conv))
            }
            "line_format" => {
                self.ws();
                let at = self.pos;
                let value = self.string()?;
                let t = template::Template::parse(&value).map_err(|m| ExprError {
                    offset: at,
                    message: format!("invalid line template: {m}"),
                })?;
                stage(Stage::LineFormat(Box::new(t)))
            }
            "label_format" => self
                .label_format()
                .map(|f| Step::Stage(Stage::LabelFormat(f))),
            "unpack" => stage(Stage::Parser(ParserStage::Unpack)),
            "distinct" => err(
                word_at,
                "the `| distinct` stage is not supported: it keeps the first line of each label combination within a query's range, and a rule counts every line as it comes, with no range",
            ),
            _ => self
                .label_or(Some((word, word_at)))
                .map(|e| Step::Stage(Stage::Labels(e))),
        }
    }

    /// `dst="template", dst=src, ...` after `| label_format`.
    fn label_format(&mut self) -> Result<Vec<LabelFmt>, ExprError> {
        let mut out: Vec<LabelFmt> = Vec::new();
        loop {
            self.ws();
            let at = self.pos;
            let name = self.ident();
            if name.is_empty() {
                return err(at, "expected a label name after `| label_format`");
            }
            if name == ERROR_LABEL {
                return err(at, format!("{ERROR_LABEL} cannot be formatted"));
            }
            if out.iter().any(|f| f.name == name) {
                return err(
                    at,
                    format!(
                        "multiple label name '{name}' not allowed in a single format operation"
                    ),
                );
            }
            self.ws();
            if self.peek() != Some('=') {
                return err(self.pos, "expected `=` after the label name");
            }
            self.pos += 1;
            self.ws();
            let value_at = self.pos;
            let how = if matches!(self.peek(), Some('"' | '`')) {
                let value = self.string()?;
                let t = template::Template::parse(&value).map_err(|m| ExprError {
                    offset: value_at,
                    message: format!("invalid template for label '{name}': {m}"),
                })?;
                LabelFmtKind::Template(Box::new(t))
            } else {
                let src = self.ident();
                if src.is_empty() {
                    return err(value_at, "expected a template string or a label name");
                }
                LabelFmtKind::Rename(src)
            };
            out.push(LabelFmt { name, how });
            self.ws();
            if self.peek() == Some(',') {
                self.pos += 1;
            } else {
                return Ok(out);
            }
        }
    }

    /// `a="x", b, ...` after `| json` / `| logfmt` (`path`: the value is a JSON path).
    #[allow(clippy::type_complexity)]
    fn params(&mut self, path: bool) -> Result<Vec<(String, Option<String>, usize)>, ExprError> {
        let mut out = Vec::new();
        loop {
            self.ws();
            if !self
                .peek()
                .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
            {
                if !out.is_empty() {
                    return err(self.pos, "expected a label name after `,`");
                }
                return Ok(out);
            }
            let name = self.ident();
            self.ws();
            let mut value = None;
            let mut at = self.pos;
            if self.peek() == Some('=') {
                self.pos += 1;
                self.ws();
                at = self.pos;
                value = Some(self.string()?);
                if !path && value.as_deref() == Some("") {
                    return err(at, "empty logfmt key");
                }
            }
            out.push((name, value, at));
            self.ws();
            if self.peek() == Some(',') {
                self.pos += 1;
            } else {
                return Ok(out);
            }
        }
    }

    /// Label filters joined by `or` (lowest precedence).
    fn label_or(&mut self, first: Option<(String, usize)>) -> Result<LabelExpr, ExprError> {
        let mut left = self.label_and(first)?;
        loop {
            self.ws();
            if self.at_word("or") {
                self.pos += 2;
                let right = self.label_and(None)?;
                left = LabelExpr::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    /// Label filters joined by `and`, `,` or a space.
    fn label_and(&mut self, first: Option<(String, usize)>) -> Result<LabelExpr, ExprError> {
        let mut left = self.label_atom(first)?;
        loop {
            self.ws();
            if self.peek() == Some(',') {
                self.pos += 1;
            } else if self.at_word("and") {
                self.pos += 3;
            } else if self.at_word("or")
                || !self
                    .peek()
                    .is_some_and(|c| c == '(' || c == '_' || c.is_ascii_alphabetic())
            {
                return Ok(left);
            }
            let right = self.label_atom(None)?;
            left = LabelExpr::And(Box::new(left), Box::new(right));
        }
    }

    fn label_atom(&mut self, first: Option<(String, usize)>) -> Result<LabelExpr, ExprError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return err(
                self.pos,
                format!("more than {MAX_TERMS} label filters in one stage"),
            );
        }
        let (name, at) = match first {
            Some(f) => f,
            None => {
                self.ws();
                if self.peek() == Some('(') {
                    if self.depth >= MAX_DEPTH {
                        return err(
                            self.pos,
                            format!("parentheses nested deeper than {MAX_DEPTH}"),
                        );
                    }
                    self.pos += 1;
                    self.depth += 1;
                    let e = self.label_or(None)?;
                    self.depth -= 1;
                    self.ws();
                    if self.peek() != Some(')') {
                        return err(self.pos, "expected `)`");
                    }
                    self.pos += 1;
                    return Ok(e);
                }
                let at = self.pos;
                let name = self.ident();
                if name.is_empty() {
                    return err(at, "expected a label name");
                }
                (name, at)
            }
        };
        let _ = at;
        self.label_filter(name).map(LabelExpr::Filter)
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
        if self.at_word("ip") {
            let negate = match (len, str_op) {
                (1, Some(MatchOp::Eq)) => false,
                (2, Some(MatchOp::Ne)) => true,
                _ => return err(at, "an ip(\"...\") label filter takes = or !="),
            };
            let (_, matcher) = self.ip_call()?;
            return Ok(LabelFilter::Ip {
                name,
                negate,
                matcher,
            });
        }
        if matches!(self.peek(), Some('"' | '`')) {
            let Some(op) = str_op else {
                return err(value_at, "a comparison needs a number");
            };
            let value = self.string()?;
            let regex = match op {
                MatchOp::Re | MatchOp::NotRe => Some(compile_anchored(&value, value_at)?),
                _ => None,
            };
            return Ok(LabelFilter::Str(Matcher {
                name,
                op,
                value,
                regex,
            }));
        }
        let mut tok = String::new();
        while let Some(c) = self
            .peek()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | 'µ' | 'μ'))
        {
            tok.push(c);
            self.pos += 1;
        }
        let Some(op) = cmp else {
            return err(value_at, "expected a string or a number");
        };
        if !tok.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '.' | '-' | '+')) {
            return err(value_at, "expected a string or a number");
        }
        if let Ok(value) = pipeline::parse_go_float(&tok) {
            return Ok(LabelFilter::Num { name, op, value });
        }
        if let Ok(value) = pipeline::parse_go_duration(&tok) {
            return Ok(LabelFilter::Duration { name, op, value });
        }
        if let Ok(value) = pipeline::parse_bytes(&tok) {
            return Ok(LabelFilter::Bytes { name, op, value });
        }
        err(
            value_at,
            format!(
                "expected a number, a duration (5s) or a byte size (5MB) after {}, found {tok:?}",
                cmp_str(op)
            ),
        )
    }

    fn filter(&mut self) -> Result<Vec<Filter>, ExprError> {
        let at = self.pos;
        let op = match (self.peek(), self.peek2()) {
            (Some('|'), Some('=')) => FilterOp::Contains,
            (Some('!'), Some('=')) => FilterOp::NotContains,
            (Some('|'), Some('~')) => FilterOp::Matches,
            (Some('!'), Some('~')) => FilterOp::NotMatches,
            (Some('|'), Some('>')) => FilterOp::Pattern,
            (Some('!'), Some('>')) => FilterOp::NotPattern,
            (Some('['), _) => return err(at, "range selectors ([5m]) are not supported: a rule is a log query, not a metric query"),
            (Some(c), _) => {
                return err(at, format!("expected a line filter (|=, !=, |~, !~, |>, !>), found {c:?}"));
            }
            (None, _) => return err(at, "expected a line filter"),
        };
        self.pos += 2;
        self.ws();
        if self.at_word("ip") {
            let op = match op {
                FilterOp::Contains => FilterOp::Ip,
                FilterOp::NotContains => FilterOp::NotIp,
                _ => return err(at, "ip(\"...\") line filters take |= or !="),
            };
            let (value, m) = self.ip_call()?;
            return Ok(vec![Filter {
                op,
                value,
                regex: None,
                patterns: Vec::new(),
                ip: Some(m),
            }]);
        }
        // The strings, joined by `or`.
        let mut values = Vec::new();
        loop {
            self.ws();
            let value_at = self.pos;
            values.push((self.string()?, value_at));
            let save = self.pos;
            self.ws();
            if self.at_word("or") {
                self.pos += 2;
                self.ws();
                if !matches!(self.peek(), Some('"' | '`')) {
                    return err(self.pos, "expected a string after `or`");
                }
            } else {
                self.pos = save;
                break;
            }
        }
        let one = |op, value: String, regex| Filter {
            op,
            value,
            regex,
            patterns: Vec::new(),
            ip: None,
        };
        let regex = |v: &str, at: usize| re2::compile_bytes(v).map_err(|e| regex_error(at, &e));
        Ok(match op {
            FilterOp::Contains if values.len() == 1 => {
                vec![one(op, values.remove(0).0, None)]
            }
            FilterOp::Contains => {
                let alts: Vec<String> = values.iter().map(|(v, _)| regex::escape(v)).collect();
                let text = alts.join("|");
                let re =
                    regex::bytes::Regex::new(&text).map_err(|e| regex_error(at, &e.to_string()))?;
                vec![one(FilterOp::Matches, text, Some(re))]
            }
            // !(a or b) = !a and !b
            FilterOp::NotContains => values.into_iter().map(|(v, _)| one(op, v, None)).collect(),
            FilterOp::NotMatches => values
                .into_iter()
                .map(|(v, a)| Ok(one(op, v.clone(), Some(regex(&v, a)?))))
                .collect::<Result<_, ExprError>>()?,
            FilterOp::Matches => {
                for (v, a) in &values {
                    regex(v, *a)?;
                }
                let text = values
                    .iter()
                    .map(|(v, _)| format!("(?:{v})"))
                    .collect::<Vec<_>>()
                    .join("|");
                let re = if values.len() == 1 {
                    regex(&values[0].0, values[0].1)?
                } else {
                    regex(&text, values[0].1)?
                };
                let value = if values.len() == 1 {
                    values.remove(0).0
                } else {
                    text
                };
                vec![one(op, value, Some(re))]
            }
            FilterOp::Pattern | FilterOp::NotPattern => {
                let mut patterns = Vec::new();
                for (v, a) in &values {
                    patterns.push(Pattern::parse(v, true).map_err(|m| ExprError {
                        offset: *a,
                        message: format!("invalid pattern: {m}"),
                    })?);
                }
                let value = values
                    .iter()
                    .map(|(v, _)| v.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ");
                vec![Filter {
                    op,
                    value,
                    regex: None,
                    patterns,
                    ip: None,
                }]
            }
            // Not produced by the scan above (ip() returned before it).
            FilterOp::Ip | FilterOp::NotIp => return err(at, "ip(\"...\") takes one pattern"),
        })
    }

    /// `ip("pattern")` at the position.
    fn ip_call(&mut self) -> Result<(String, ip::IpMatch), ExprError> {
        self.pos += 2;
        self.ws();
        if self.peek() != Some('(') {
            return err(self.pos, "expected `(` after ip");
        }
        self.pos += 1;
        self.ws();
        let at = self.pos;
        let value = self.string()?;
        let m = ip::IpMatch::parse(&value).map_err(|message| ExprError {
            offset: at,
            message,
        })?;
        self.ws();
        if self.peek() != Some(')') {
            return err(self.pos, "expected `)`");
        }
        self.pos += 1;
        Ok((value, m))
    }

    /// A double-quoted string (Go escapes, as `strconv.Unquote` reads them) or a backquoted
    /// raw string.
    fn string(&mut self) -> Result<String, ExprError> {
        let start = self.pos;
        let quote = match self.peek() {
            Some(q @ ('"' | '`')) => q,
            _ => return err(start, "expected a string in double quotes or backquotes"),
        };
        self.pos += 1;
        let mut s: Vec<u8> = Vec::new();
        let push = |s: &mut Vec<u8>, c: char| {
            let mut b = [0; 4];
            s.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        };
        loop {
            let Some(c) = self.peek() else {
                return err(start, "unterminated string");
            };
            self.pos += 1;
            if c == quote {
                break;
            }
            if quote == '`' {
                // Go drops carriage returns from raw strings.
                if c != '\r' {
                    push(&mut s, c);
                }
                continue;
            }
            if c == '\n' {
                return err(self.pos - 1, "newline in string");
            }
            if c != '\\' {
                push(&mut s, c);
                continue;
            }
            let esc_at = self.pos - 1;
            let Some(e) = self.peek() else {
                return err(start, "unterminated string");
            };
            self.pos += 1;
            let hex = |n: usize, this: &mut Self| -> Result<u32, ExprError> {
                let mut v = 0u32;
                for _ in 0..n {
                    let d = this.peek().and_then(|c| c.to_digit(16));
                    let Some(d) = d else {
                        return err(
                            esc_at,
                            format!("invalid escape \\{e}: expected {n} hex digits"),
                        );
                    };
                    v = v * 16 + d;
                    this.pos += 1;
                }
                Ok(v)
            };
            match e {
                '"' => s.push(b'"'),
                '\\' => s.push(b'\\'),
                'a' => s.push(7),
                'b' => s.push(8),
                'f' => s.push(12),
                'n' => s.push(b'\n'),
                'r' => s.push(b'\r'),
                't' => s.push(b'\t'),
                'v' => s.push(11),
                'x' => {
                    let v = hex(2, self)?;
                    s.push(v as u8);
                }
                'u' | 'U' => {
                    let v = hex(if e == 'u' { 4 } else { 8 }, self)?;
                    let Some(c) = char::from_u32(v) else {
                        return err(esc_at, format!("invalid escape \\{e}: {v:X} is not a Unicode character"));
                    };
                    push(&mut s, c);
                }
                '0'..='7' => {
                    let mut v = e as u32 - '0' as u32;
                    for _ in 0..2 {
                        let Some(d) = self.peek().and_then(|c| c.to_digit(8)) else {
                            return err(esc_at, "invalid octal escape: expected 3 octal digits");
                        };
                        v = v * 8 + d;
                        self.pos += 1;
                    }
                    if v > 255 {
                        return err(esc_at, "invalid octal escape: above \\377");
                    }
                    s.push(v as u8);
                }
                _ => {
                    return err(
                        esc_at,
                        format!("unknown escape \\{e} (use \\\\ for a backslash, or a `backquoted` string for regexes)"),
                    )
                }
            }
        }
        String::from_utf8(s).map_err(|_| ExprError {
            offset: start,
            message: "the string's \\x or octal escapes do not form UTF-8: not supported".into(),
        })
    }
}

/// Parses a JSON path of `| json label="path"`: `a.b`, `a[0]`, `["a b"]`, `a["b"][1]`.
fn json_path(text: &str) -> Result<Vec<PathPart>, String> {
    let bad = || format!("invalid JSON path {text:?}");
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' if !out.is_empty() => i += 1,
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'"') {
                    let start = i + 1;
                    let end = chars[start..]
                        .iter()
                        .position(|&c| c == '"')
                        .ok_or_else(bad)?
                        + start;
                    out.push(PathPart::Key(chars[start..end].iter().collect()));
                    i = end + 1;
                } else {
                    let start = i;
                    while chars.get(i).is_some_and(char::is_ascii_digit) {
                        i += 1;
                    }
                    let n: String = chars[start..i].iter().collect();
                    out.push(PathPart::Index(n.parse().map_err(|_| bad())?));
                }
                if chars.get(i) != Some(&']') {
                    return Err(bad());
                }
                i += 1;
            }
            _ => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|&c| c != '.' && c != '[' && c != ']' && c != '"')
                {
                    i += 1;
                }
                if i == start {
                    return Err(bad());
                }
                out.push(PathPart::Key(chars[start..i].iter().collect()));
            }
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
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
                r#"{a="b"} |= "x" | distinct a"#,
                17,
                "`| distinct` stage is not supported",
            ),
            (
                r#"{a="b"} | line_format "{{.a""#,
                22,
                "invalid line template",
            ),
            (
                r#"{a="b"} | label_format x="{{ now }}""#,
                25,
                "\"now\" is not supported",
            ),
            (
                r#"{a="b"} | label_format __error__=a"#,
                23,
                "cannot be formatted",
            ),
            (
                r#"{a="b"} | label_format x=a, x=b"#,
                28,
                "multiple label name 'x'",
            ),
            (r#"{a="b"} | distinct x"#, 10, "`| distinct` stage"),
            (r#"{a="b"} |= ip("10.0.0.0/33")"#, 14, "ip: invalid pattern"),
            (r#"{a="b"} |~ ip("10.0.0.1")"#, 8, "take |= or !="),
            (
                r#"{a="b"} | logfmt | x > ip("10.0.0.1")"#,
                21,
                "takes = or !=",
            ),
            (r#"{a="b"} | json | level ~ "x""#, 23, "needs an operator"),
            (r#"{a="b"} | json | n > "x""#, 21, "needs a number"),
            (r#"{a="b"} | json | n > abc"#, 21, "a string or a number"),
            (r#"{a="b"} | regexp "(x)""#, 17, "named groups"),
            (r#"{a="b"} | regexp "(?P<x>""#, 17, "invalid regex"),
            (r#"{a="b"} | json | n =~ "(""#, 22, "invalid regex"),
            (r#"{a="b"} | "#, 10, "expected a stage"),
            (r#"{a="b"} | unwrap x"#, 8, "`| unwrap` needs a parser"),
            (
                r#"{a="b"} | json | unwrap x | json"#,
                26,
                "only label filters may follow",
            ),
            (r#"{a="b"} | json | unwrap "#, 24, "expected the name"),
            (
                r#"{a="b"} | json | unwrap seconds(x)"#,
                24,
                "unknown unwrap conversion",
            ),
            (r#"{a="b"} |~ "(x""#, 11, "invalid regex"),
            (r#"{a="b"} "x""#, 8, "expected a line filter"),
            (r#"{a="b"}[5m]"#, 7, "range selectors"),
            (r#"{a="\d"}"#, 4, "unknown escape \\d"),
            (r#"{a="b"} |="#, 10, "expected a string"),
            (
                r#"{a="b"} |~ "(?x)a b""#,
                11,
                "Go's flags are i, m, s and U",
            ),
            (r#"{a="b"} |~ "a{1001}""#, 11, "invalid repeat count"),
            (
                r#"{a="b"} |> "<a> x""#,
                11,
                "named captures are not allowed",
            ),
            (r#"{a="b"} | pattern "<a><b>""#, 18, "consecutive capture"),
            (
                r#"{a="b"} | pattern "no captures""#,
                18,
                "at least one capture",
            ),
            (r#"{a="b"} |= "\xff""#, 11, "do not form UTF-8"),
            (r#"{a="b"} |= "\u00""#, 12, "4 hex digits"),
            (r#"{a="b"} |= "a" or"#, 17, "expected a string"),
            (r#"{a="b"} | logfmt --bogus"#, 17, "unknown logfmt flag"),
            (r#"{a="b"} | json | n > 5parsecs"#, 21, "a byte size"),
            (r#"{a="b"} | json | (n > 5"#, 23, "expected `)`"),
            (r#"{a="b"} | json a="b[x]""#, 17, "invalid JSON path"),
            (r#"{a="b"} | regexp "(?P<a>.)(?P<a>.)""#, 17, "duplicate"),
        ];
        for &(text, offset, want) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.offset, offset, "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let text = format!("{{}} | json | {}a=\"1\"", "(".repeat(100_000));
        let e = parse(&text).unwrap_err();
        assert_eq!(e.offset, 12 + MAX_DEPTH, "{e}");
        assert!(e.message.contains("nested deeper than 64"), "{e}");
        let many = format!("{{}} | logfmt | {}", vec!["a=\"1\""; 300].join(" and "));
        let e = parse(&many).unwrap_err();
        assert!(e.message.contains("more than 256 label filters"), "{e}");
        let ok = format!("{{}} | logfmt | {}", vec!["a=\"1\""; 200].join(" and "));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn parser_stages_and_label_filters() {
        let e = parse(
            r#"{} |= "level" | logfmt | level="error" | latency_ms >= 250 | code != 200 | msg !~ "(?i)retry.*""#,
        )
        .unwrap();
        assert!(matches!(e.parser, Some(ParserStage::Logfmt { .. })));
        assert_eq!((e.filters.len(), e.stages.len()), (1, 5));
        let got = e
            .evaluate(
                &[],
                br#"ts=2024 level=error msg="db \"slow\" query" latency_ms=300.5 code=500 flag"#,
            )
            .unwrap();
        assert_eq!(got.get("msg"), Some("db \"slow\" query"));
        assert_eq!(got.get("flag"), None, "empty values are not labels");
        for rejected in [
            "level=error latency_ms=100 code=500",
            "level=error latency_ms=300 code=200",
            "level=error latency_ms=300 code=500 msg=Retrying",
        ] {
            assert!(e.evaluate(&[], rejected.as_bytes()).is_none(), "{rejected}");
        }

        let e = parse(r#"{} | regexp `Killed process \d+ \((?P<process>[^)]+)\)`"#).unwrap();
        let p = e.parser.as_ref().unwrap();
        assert_eq!(p.names(), Some(vec!["process".to_string()]));
        assert_eq!(
            p.extract(b"Out of memory: Killed process 42 (qemu-kvm) total-vm:1kB"),
            [("process".to_string(), "qemu-kvm".to_string())]
        );
        let long = "x".repeat(1000);
        assert_eq!(cut(&long).len(), MAX_VALUE_BYTES);
        assert_eq!(cut("é").len(), 2);
    }

    #[test]
    fn offsets_count_characters() {
        let e = parse("{a=\"é\"} | distinct a").unwrap_err();
        assert_eq!(e.offset, 10);
    }
}
