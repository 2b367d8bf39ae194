//! The stages after the line filters of a log query, evaluated as Loki evaluates them.
//!
//! A line enters with its stream labels; parser stages add labels (a parsed name that a stream
//! label already has becomes `<name>_extracted`), label filters test the labels (a parsed label
//! wins over the stream label of the same name), `drop`/`keep` remove labels, `decolorize`
//! rewrites the line for the filters after it. A parser that cannot read the line does not
//! drop it: it sets `__error__` (`JSONParserErr`, `LogfmtParserErr` with `--strict`) and
//! `__error_details__`, and the line goes on, so `| json | __error__=""` is how a query keeps
//! only the lines that are JSON. A numeric, duration or bytes filter on a value that is not
//! one keeps the line with `__error__="LabelFilterErr"` (unless an error is already set).
//! Values are kept as the line wrote them (`1e3` stays `1e3`).

use std::borrow::Cow;

use super::template::Template;
use super::{CmpOp, Filter, Matcher};

/// Error label names and values, as Loki spells them.
pub const ERROR_LABEL: &str = "__error__";
pub const ERROR_DETAILS_LABEL: &str = "__error_details__";
const JSON_ERR: &str = "JSONParserErr";
const LOGFMT_ERR: &str = "LogfmtParserErr";
const LABEL_FILTER_ERR: &str = "LabelFilterErr";
const SAMPLE_ERR: &str = "SampleExtractionErr";
const TEMPLATE_ERR: &str = "TemplateFormatErr";
const DUPLICATE_SUFFIX: &str = "_extracted";

/// One step of a JSON path (`a.b[0]["c d"]`).
#[derive(Debug, Clone, PartialEq)]
pub enum PathPart {
    Key(String),
    Index(usize),
}

/// A parser stage.
#[derive(Debug, Clone)]
pub enum ParserStage {
    /// `| json` (every field; nested objects flattened with `_`), or `| json a="x.y", b`
    /// (only those paths).
    Json {
        fields: Vec<(String, Vec<PathPart>)>,
    },
    /// `| logfmt [--strict] [--keep-empty] [a="key", b]`.
    Logfmt {
        strict: bool,
        keep_empty: bool,
        fields: Vec<(String, String)>,
    },
    /// `| regexp "(?P<name>...)"`: the named groups of the first match.
    Regexp(regex::bytes::Regex),
    /// `| pattern "<ip> - <_> <status>"`.
    Pattern(Pattern),
    /// `| unpack`: a line Promtail's `pack` stage wrote (a JSON object whose `_entry` is the
    /// line, its other string fields labels) becomes that line and those labels.
    Unpack,
}

impl ParserStage {
    /// The labels the stage can extract (`None`: any name may occur).
    pub fn names(&self) -> Option<Vec<String>> {
        match self {
            ParserStage::Regexp(re) => {
                Some(re.capture_names().flatten().map(String::from).collect())
            }
            ParserStage::Pattern(p) => Some(p.names()),
            ParserStage::Json { fields } if !fields.is_empty() => {
                Some(fields.iter().map(|(n, _)| n.clone()).collect())
            }
            ParserStage::Logfmt { fields, .. } if !fields.is_empty() => {
                Some(fields.iter().map(|(n, _)| n.clone()).collect())
            }
            _ => None,
        }
    }

    /// The labels extracted from `line` as a parser after no stream labels would set them,
    /// without the error labels (for tools and tests).
    pub fn extract(&self, line: &[u8]) -> Vec<(String, String)> {
        let base = Vec::new();
        let mut st = State::new(&base);
        self.run(line, &mut st);
        st.parsed
    }

    fn run(&self, line: &[u8], st: &mut State<'_>) {
        match self {
            ParserStage::Json { fields } if fields.is_empty() => json_all(line, st),
            ParserStage::Json { fields } => json_fields(line, fields, st),
            ParserStage::Logfmt {
                strict,
                keep_empty,
                fields,
            } => logfmt(line, *strict, *keep_empty, fields, st),
            ParserStage::Regexp(re) => {
                if let Some(c) = re.captures(line) {
                    for name in re.capture_names().flatten() {
                        if let Some(m) = c.name(name) {
                            let key = st.parsed_name(&sanitize_key(name));
                            st.set(key, lossy(m.as_bytes()));
                        }
                    }
                }
            }
            ParserStage::Pattern(p) => {
                for (name, v) in p.names_iter().zip(p.matches(line)) {
                    let key = st.parsed_name(name);
                    st.set(key, lossy(v));
                }
            }
            ParserStage::Unpack => {
                unpack(line, st);
            }
        }
    }
}

/// Loki's label values replace invalid UTF-8 with spaces.
fn lossy(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => String::from_utf8_lossy(b).replace('\u{FFFD}', " "),
    }
}

/// A label name as Loki makes it from a field name: trimmed, `_` before a leading digit, every
/// character but `[A-Za-z0-9_]` turned into `_`.
pub fn sanitize_key(key: &str) -> String {
    let key = key.trim();
    let mut out = String::with_capacity(key.len() + 1);
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// A filter on labels.
#[derive(Debug, Clone)]
pub enum LabelFilter {
    /// `name op "string"` (`__error__` tests the error).
    Str(Matcher),
    /// `name op number`.
    Num { name: String, op: CmpOp, value: f64 },
    /// `name op 5s` (Go durations, in seconds).
    Duration { name: String, op: CmpOp, value: f64 },
    /// `name op 5MB` (humanize bytes).
    Bytes { name: String, op: CmpOp, value: f64 },
    /// `name = ip("...")` / `name != ip("...")`: a line with an error passes; a label the
    /// line lacks fails both.
    Ip {
        name: String,
        negate: bool,
        matcher: super::ip::IpMatch,
    },
}

/// Label filters joined with `and` (also `,` and a space) and `or`.
#[derive(Debug, Clone)]
pub enum LabelExpr {
    Filter(LabelFilter),
    And(Box<LabelExpr>, Box<LabelExpr>),
    Or(Box<LabelExpr>, Box<LabelExpr>),
}

/// A label named in `| drop` or `| keep`, optionally with a matcher on its value.
#[derive(Debug, Clone)]
pub struct LabelSel {
    pub name: String,
    pub matcher: Option<Matcher>,
}

/// How `| unwrap` reads its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// `| unwrap x`: Go's ParseFloat.
    Float,
    /// `| unwrap duration(x)` / `duration_seconds(x)`: a Go duration, in seconds.
    Duration,
    /// `| unwrap bytes(x)`: a byte size.
    Bytes,
}

/// One stage after the line filters.
#[derive(Debug, Clone)]
pub enum Stage {
    /// `| unwrap [conv(]name[)]`: the line's number; a value that does not convert sets
    /// `__error__="SampleExtractionErr"` (label filters after it may drop the line).
    Unwrap(String, Conversion),
    Parser(ParserStage),
    Labels(LabelExpr),
    /// A line filter after a stage that rewrites the line.
    Line(Filter),
    Drop(Vec<LabelSel>),
    Keep(Vec<LabelSel>),
    Decolorize,
    /// `| line_format "template"`: the line becomes the template's output (a template that
    /// fails keeps the line and sets `__error__="TemplateFormatErr"`).
    LineFormat(Box<Template>),
    /// `| label_format a="template", b=c`.
    LabelFormat(Vec<LabelFmt>),
}

/// One label of `| label_format`.
#[derive(Debug, Clone)]
pub struct LabelFmt {
    pub name: String,
    pub how: LabelFmtKind,
}

/// How `| label_format` sets a label.
#[derive(Debug, Clone)]
pub enum LabelFmtKind {
    /// `dst=src`: the value of `src` moves to `dst` (when `src` is set).
    Rename(String),
    /// `dst="template"`.
    Template(Box<Template>),
}

/// The labels of a line while it goes through the stages.
struct State<'a> {
    base: &'a [(String, String)],
    parsed: Vec<(String, String)>,
    deleted: Vec<String>,
    err: String,
    details: String,
}

impl<'a> State<'a> {
    fn new(base: &'a [(String, String)]) -> Self {
        Self {
            base,
            parsed: Vec::new(),
            deleted: Vec::new(),
            err: String::new(),
            details: String::new(),
        }
    }

    fn base_has(&self, name: &str) -> bool {
        self.base.iter().any(|(k, v)| k == name && !v.is_empty())
    }

    /// The name a parser gives a field named `name`.
    fn parsed_name(&self, name: &str) -> String {
        if self.base_has(name) {
            format!("{name}{DUPLICATE_SUFFIX}")
        } else {
            name.to_string()
        }
    }

    fn set(&mut self, name: String, value: String) {
        match self.parsed.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.parsed.push((name, value)),
        }
    }

    fn set_err(&mut self, err: &str, details: String) {
        if self.err.is_empty() {
            self.err = err.to_string();
            self.details = details;
        }
    }

    /// A template's error replaces any earlier one, as in Loki.
    fn replace_err(&mut self, err: &str, details: String) {
        self.err = err.to_string();
        self.details = details;
    }

    /// A label's value with Loki's precedence: parsed, then (unless dropped) the stream's.
    fn get(&self, name: &str) -> Option<&str> {
        if let Some((_, v)) = self.parsed.iter().find(|(k, _)| k == name) {
            return Some(v);
        }
        if self.deleted.iter().any(|d| d == name) {
            return None;
        }
        self.base
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// The value a label filter tests: `__error__` is the error; every other name (also
    /// `__error_details__`, which Loki keeps apart from the labels) is looked up as a label.
    fn value_for_filter(&self, name: &str) -> &str {
        match name {
            ERROR_LABEL => &self.err,
            _ => self.get(name).unwrap_or(""),
        }
    }

    /// The value a `| drop name=~"..."` matcher tests: the error and its details included.
    fn value_for_drop(&self, name: &str) -> &str {
        match name {
            ERROR_DETAILS_LABEL => &self.details,
            _ => self.value_for_filter(name),
        }
    }

    fn undelete(&mut self, name: &str) {
        self.deleted.retain(|d| d != name);
    }

    fn delete(&mut self, name: &str) {
        match name {
            ERROR_LABEL => self.err.clear(),
            ERROR_DETAILS_LABEL => self.details.clear(),
            _ => {
                self.parsed.retain(|(k, _)| k != name);
                if !self.deleted.iter().any(|d| d == name) {
                    self.deleted.push(name.to_string());
                }
            }
        }
    }

    /// Every label now (name, value), without empty values.
    fn labels(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .base
            .iter()
            .filter(|(k, v)| {
                !v.is_empty()
                    && !self.deleted.iter().any(|d| d == k)
                    && !self.parsed.iter().any(|(p, _)| p == k)
            })
            .cloned()
            .collect();
        out.extend(self.parsed.iter().filter(|(_, v)| !v.is_empty()).cloned());
        if !self.err.is_empty() {
            out.push((ERROR_LABEL.into(), self.err.clone()));
        }
        if !self.details.is_empty() {
            out.push((ERROR_DETAILS_LABEL.into(), self.details.clone()));
        }
        out.sort();
        out
    }
}

/// The result of the stages for a line that passed them.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    /// Every label of the line, sorted by name (stream labels, parsed labels, `__error__`,
    /// `__error_details__`), without empty values.
    pub labels: Vec<(String, String)>,
    /// With `| unwrap`: `None` when the label is absent, else the converted number (`None`
    /// inside when it does not convert).
    pub value: Option<Option<f64>>,
}

impl Processed {
    /// A label's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.labels[i].1.as_str())
    }
}

/// Runs `stages` on a line; `None` when a stage drops it.
pub fn run(stages: &[Stage], base: &[(String, String)], line: &[u8]) -> Option<Processed> {
    let mut st = State::new(base);
    let mut line: Cow<'_, [u8]> = Cow::Borrowed(line);
    let mut value = None;
    for stage in stages {
        match stage {
            Stage::Unwrap(name, conv) => {
                let parsed = st.get(name).map(|v| match conv {
                    Conversion::Float => parse_go_float(v),
                    Conversion::Duration => parse_go_duration(v),
                    Conversion::Bytes => parse_bytes(v),
                });
                value = parsed.map(|p| match p {
                    Ok(x) => Some(x),
                    Err(e) => {
                        st.set_err(SAMPLE_ERR, e);
                        None
                    }
                });
            }
            Stage::Parser(ParserStage::Unpack) => {
                if let Some(entry) = unpack(&line, &mut st) {
                    line = Cow::Owned(entry);
                }
            }
            Stage::Parser(p) => p.run(&line, &mut st),
            Stage::Labels(e) => {
                if !label_expr(e, &mut st) {
                    return None;
                }
            }
            Stage::Line(f) => {
                if !f.test(&line) {
                    return None;
                }
            }
            Stage::Drop(sels) => {
                for s in sels {
                    let hit = match &s.matcher {
                        None => true,
                        Some(m) => {
                            let v = st.value_for_drop(&s.name).to_string();
                            !v.is_empty() && m.matches(&v)
                        }
                    };
                    if hit {
                        st.delete(&s.name);
                    }
                }
            }
            Stage::Keep(sels) => {
                for (name, value) in st.labels() {
                    if name == ERROR_LABEL || name == ERROR_DETAILS_LABEL {
                        continue;
                    }
                    let keep = sels.iter().any(|s| {
                        s.name == name && s.matcher.as_ref().is_none_or(|m| m.matches(&value))
                    });
                    if !keep {
                        st.delete(&name);
                    }
                }
            }
            Stage::Decolorize => {
                if let Some(re) = ansi() {
                    let out = re.replace_all(&line, &b""[..]).into_owned();
                    line = Cow::Owned(out);
                }
            }
            Stage::LineFormat(t) => match t.render(&st.labels(), &String::from_utf8_lossy(&line)) {
                Ok(out) => line = Cow::Owned(out.into_bytes()),
                Err(e) => st.replace_err(TEMPLATE_ERR, e),
            },
            Stage::LabelFormat(fmts) => label_format(fmts, &line, &mut st),
        }
    }
    Some(Processed {
        labels: st.labels(),
        value,
    })
}

/// `| label_format`: renames first see the labels as they are; the templates all see the
/// labels as they were at the first template of the stage.
fn label_format(fmts: &[LabelFmt], line: &[u8], st: &mut State<'_>) {
    let mut data: Option<Vec<(String, String)>> = None;
    for f in fmts {
        match &f.how {
            LabelFmtKind::Rename(src) => {
                if let Some(v) = st.get(src).map(str::to_string) {
                    st.set(f.name.clone(), v);
                    st.delete(src);
                }
            }
            LabelFmtKind::Template(t) => {
                let data = data.get_or_insert_with(|| st.labels());
                match t.render(data, &String::from_utf8_lossy(line)) {
                    Ok(v) => {
                        st.undelete(&f.name);
                        st.set(f.name.clone(), v);
                    }
                    Err(e) => st.replace_err(TEMPLATE_ERR, e),
                }
            }
        }
    }
}

fn ansi() -> Option<&'static regex::bytes::Regex> {
    static RE: std::sync::OnceLock<Option<regex::bytes::Regex>> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        // CSI and OSC sequences (ECMA-48), as terminals and colouring libraries write them.
        regex::bytes::Regex::new(
            r"(?-u:\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_])",
        )
        .ok()
    })
    .as_ref()
}

fn label_expr(e: &LabelExpr, st: &mut State<'_>) -> bool {
    match e {
        LabelExpr::And(a, b) => label_expr(a, st) & label_expr(b, st),
        LabelExpr::Or(a, b) => label_expr(a, st) || label_expr(b, st),
        LabelExpr::Filter(f) => label_filter(f, st),
    }
}

fn cmp(op: CmpOp, v: f64, want: f64) -> bool {
    match op {
        CmpOp::Eq => v == want,
        CmpOp::Ne => v != want,
        CmpOp::Gt => v > want,
        CmpOp::Ge => v >= want,
        CmpOp::Lt => v < want,
        CmpOp::Le => v <= want,
    }
}

fn label_filter(f: &LabelFilter, st: &mut State<'_>) -> bool {
    type Parse = fn(&str) -> Result<f64, String>;
    let (name, op, want, parse): (&str, CmpOp, f64, Parse) = match f {
        LabelFilter::Str(m) => return m.matches(st.value_for_filter(&m.name)),
        LabelFilter::Ip {
            name,
            negate,
            matcher,
        } => {
            if !st.err.is_empty() {
                return true;
            }
            return st
                .get(name)
                .is_some_and(|v| matcher.test(v.as_bytes()) != *negate);
        }
        LabelFilter::Num { name, op, value } => (name, *op, *value, parse_go_float),
        LabelFilter::Duration { name, op, value } => (name, *op, *value, parse_go_duration),
        LabelFilter::Bytes { name, op, value } => (name, *op, *value, parse_bytes),
    };
    let Some(v) = st.get(name) else {
        return false;
    };
    match parse(v) {
        Ok(x) => cmp(op, x, want),
        Err(e) => {
            st.set_err(LABEL_FILTER_ERR, e);
            true
        }
    }
}

/// Go's `strconv.ParseFloat` for the decimal forms (no surrounding space, `Inf`, `NaN`).
pub fn parse_go_float(s: &str) -> Result<f64, String> {
    let bad = || format!("strconv.ParseFloat: parsing {s:?}: invalid syntax");
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = t.to_ascii_lowercase();
    let special = matches!(lower.as_str(), "inf" | "infinity" | "nan");
    if !special
        && (t.is_empty()
            || !t
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-' | '_'))
            || t.contains('_'))
    {
        return Err(bad());
    }
    s.parse::<f64>().map_err(|_| bad())
}

/// Go's `time.ParseDuration`, in seconds.
pub fn parse_go_duration(s: &str) -> Result<f64, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (neg, mut t) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if t == "0" {
        return Ok(0.0);
    }
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0;
    while !t.is_empty() {
        let n = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let num = &t[..n];
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let x: f64 = num.parse().map_err(|_| bad())?;
        t = &t[n..];
        let u = t
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(t.len());
        let unit = match &t[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            other => return Err(format!("time: unknown unit {other:?} in duration {s:?}")),
        };
        total += x * unit;
        t = &t[u..];
    }
    Ok(if neg { -total } else { total })
}

/// `humanize.ParseBytes`: `42`, `5MB` (1000s), `5MiB` (1024s), `1.5 kB`, case-insensitive.
pub fn parse_bytes(s: &str) -> Result<f64, String> {
    let bad = || format!("strconv.ParseFloat: parsing {s:?}: invalid syntax");
    let t = s.trim_start();
    let n = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(t.len());
    let num: String = t[..n].chars().filter(|&c| c != ',').collect();
    let x: f64 = num.parse().map_err(|_| bad())?;
    let unit = t[n..].trim().to_ascii_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024f64.powi(2),
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024f64.powi(6),
        _ => return Err(format!("unhandled size name: {unit}")),
    };
    Ok((x * mult).floor())
}

// ---- JSON -------------------------------------------------------------------------------------

/// A parsed JSON value; scalars keep their text as written.
#[derive(Debug)]
enum Json<'a> {
    Object(Vec<(&'a [u8], Json<'a>)>, &'a [u8]),
    Array(Vec<Json<'a>>, &'a [u8]),
    /// Raw text between the quotes.
    Str(&'a [u8]),
    Num(&'a [u8]),
    Bool(bool),
    Null,
}

const MALFORMED_OBJECT: &str = "Value looks like object, but can't find closing '}' symbol";
const MALFORMED_JSON: &str = "Malformed JSON error";
const UNEXPECTED_JSON_OBJECT: &str = "expecting json object(6), but it is not";

struct JsonReader<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl<'a> JsonReader<'a> {
    fn ws(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn string(&mut self) -> Result<&'a [u8], &'static str> {
        // at the opening quote
        let start = self.i + 1;
        let mut j = start;
        while let Some(&c) = self.b.get(j) {
            match c {
                b'\\' => j += 2,
                b'"' => {
                    self.i = j + 1;
                    return Ok(&self.b[start..j]);
                }
                _ => j += 1,
            }
        }
        Err("Value is string, but can't find closing '\"' symbol")
    }

    fn value(&mut self) -> Result<Json<'a>, &'static str> {
        self.ws();
        let start = self.i;
        match self.b.get(self.i) {
            Some(b'{') => self.object(),
            Some(b'[') => {
                self.depth += 1;
                if self.depth > 512 {
                    return Err(MALFORMED_JSON);
                }
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                } else {
                    loop {
                        items.push(self.value()?);
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err("Value is array, but can't find closing ']' symbol"),
                        }
                    }
                }
                self.depth -= 1;
                Ok(Json::Array(items, &self.b[start..self.i]))
            }
            Some(b'"') => self.string().map(Json::Str),
            Some(_) => {
                let mut j = self.i;
                while self.b.get(j).is_some_and(|c| {
                    !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    j += 1;
                }
                let tok = &self.b[self.i..j];
                self.i = j;
                match tok {
                    b"true" => Ok(Json::Bool(true)),
                    b"false" => Ok(Json::Bool(false)),
                    b"null" => Ok(Json::Null),
                    t if !t.is_empty()
                        && t.iter().all(|c| {
                            c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')
                        }) =>
                    {
                        Ok(Json::Num(t))
                    }
                    _ => Err("Unknown value type"),
                }
            }
            None => Err(MALFORMED_JSON),
        }
    }

    fn object(&mut self) -> Result<Json<'a>, &'static str> {
        let start = self.i;
        self.depth += 1;
        if self.depth > 512 {
            return Err(MALFORMED_JSON);
        }
        self.i += 1;
        let mut fields = Vec::new();
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Json::Object(fields, &self.b[start..self.i]));
        }
        loop {
            self.ws();
            if self.b.get(self.i) != Some(&b'"') {
                return Err(MALFORMED_JSON);
            }
            let key = self.string()?;
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return Err(MALFORMED_JSON);
            }
            self.i += 1;
            let v = self.value()?;
            fields.push((key, v));
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(MALFORMED_OBJECT),
            }
        }
        self.depth -= 1;
        Ok(Json::Object(fields, &self.b[start..self.i]))
    }
}

/// The first JSON object of the line (text after it is ignored, as Loki does).
fn json_object(line: &[u8]) -> Result<Json<'_>, &'static str> {
    let mut r = JsonReader {
        b: line,
        i: 0,
        depth: 0,
    };
    r.ws();
    if r.b.get(r.i) != Some(&b'{') {
        return Err(MALFORMED_OBJECT);
    }
    r.object()
}

/// A JSON string's content unescaped (`""` when an escape is invalid).
fn unescape(raw: &[u8]) -> String {
    if !raw.contains(&b'\\') {
        return lossy(raw);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    match serde_json::from_slice::<String>(&quoted) {
        Ok(s) => s.replace('\u{FFFD}', " "),
        Err(_) => {
            // Invalid UTF-8 inside: unescape what serde_json can after a lossy pass.
            let l = String::from_utf8_lossy(&quoted).into_owned();
            serde_json::from_str::<String>(&l)
                .map(|s| s.replace('\u{FFFD}', " "))
                .unwrap_or_default()
        }
    }
}

fn scalar(v: &Json<'_>) -> Option<String> {
    match v {
        Json::Str(raw) => Some(unescape(raw)),
        Json::Num(raw) => Some(lossy(raw)),
        Json::Bool(b) => Some(b.to_string()),
        Json::Null => Some(String::new()),
        Json::Object(..) | Json::Array(..) => None,
    }
}

fn json_all(line: &[u8], st: &mut State<'_>) {
    match json_object(line) {
        Ok(Json::Object(fields, _)) => {
            for (k, v) in &fields {
                json_field(&mut Vec::new(), k, v, st);
            }
        }
        Ok(_) => {}
        Err(e) => st.set_err(JSON_ERR, e.to_string()),
    }
}

/// Adds field `key` (under the path `prefix`) with value `v`.
fn json_field(prefix: &mut Vec<String>, key: &[u8], v: &Json<'_>, st: &mut State<'_>) {
    let key = unescape(key);
    match v {
        Json::Object(fields, _) => {
            prefix.push(key);
            for (k, v) in fields {
                json_field(prefix, k, v, st);
            }
            prefix.pop();
        }
        Json::Array(..) => {}
        _ => {
            let name = if prefix.is_empty() {
                let n = sanitize_key(&key);
                if n.is_empty() {
                    return;
                }
                st.parsed_name(&n)
            } else {
                let joined = join_prefix(prefix.iter().map(String::as_str).chain([key.as_str()]));
                if st.base_has(&joined) {
                    join_prefix(
                        prefix
                            .iter()
                            .map(String::as_str)
                            .chain([format!("{key}{DUPLICATE_SUFFIX}").as_str()]),
                    )
                } else {
                    joined
                }
            };
            if name.is_empty() {
                return;
            }
            if let Some(s) = scalar(v) {
                st.set(name, s);
            }
        }
    }
}

/// Nested keys joined with `_`, each part trimmed and sanitised, empty parts skipped, `_`
/// before a leading digit.
fn join_prefix<'s>(parts: impl Iterator<Item = &'s str>) -> String {
    let mut out = String::new();
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        // The separator, or `_` before a leading digit.
        if !out.is_empty() || p.starts_with(|c: char| c.is_ascii_digit()) {
            out.push('_');
        }
        out.extend(p.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        }));
    }
    out
}

/// `| unpack`: the packed entry, when the line has one (its labels are set only then, as
/// Loki does); a line that is not a JSON object sets `JSONParserErr`.
fn unpack(line: &[u8], st: &mut State<'_>) -> Option<Vec<u8>> {
    if line.is_empty() {
        return None;
    }
    if line[0] != b'{' {
        st.set_err(JSON_ERR, UNEXPECTED_JSON_OBJECT.into());
        return None;
    }
    let fields = match json_object(line) {
        Ok(Json::Object(fields, _)) => fields,
        Ok(_) => return None,
        Err(e) => {
            st.set_err(JSON_ERR, e.to_string());
            return None;
        }
    };
    let mut entry = None;
    let mut labels = Vec::new();
    for (k, v) in &fields {
        let Json::Str(raw) = v else { continue };
        if *k == b"_entry" {
            entry = Some(unescape(raw).into_bytes());
        } else {
            labels.push((st.parsed_name(&lossy(k)), unescape(raw)));
        }
    }
    if entry.is_some() {
        for (k, v) in labels {
            st.set(k, v);
        }
    }
    entry
}

fn json_fields(line: &[u8], fields: &[(String, Vec<PathPart>)], st: &mut State<'_>) {
    let root = match json_object(line) {
        Ok(r) => r,
        Err(e) => {
            st.set_err(JSON_ERR, e.to_string());
            return;
        }
    };
    for (name, path) in fields {
        let mut v = Some(&root);
        for part in path {
            v = match (v, part) {
                (Some(Json::Object(fs, _)), PathPart::Key(k)) => fs
                    .iter()
                    .rev()
                    .find(|(fk, _)| unescape(fk) == *k)
                    .map(|(_, v)| v),
                (Some(Json::Array(items, _)), PathPart::Index(i)) => items.get(*i),
                _ => None,
            };
        }
        let value = match v {
            None => String::new(),
            Some(Json::Object(_, raw) | Json::Array(_, raw)) => lossy(raw),
            Some(s) => scalar(s).unwrap_or_default(),
        };
        let key = st.parsed_name(name);
        st.set(key, value);
    }
}

// ---- logfmt -----------------------------------------------------------------------------------

/// One key/value of a logfmt line, or the syntax error that ended it.
enum Pair<'a> {
    Ok(&'a [u8], Option<Cow<'a, [u8]>>),
    Err(String),
}

/// Scans logfmt pairs as go-logfmt does: a key runs to `=` or a space (a `"` in it is an
/// error); an unquoted value runs to a space (`=` or `"` in it is an error); a quoted value
/// takes JSON escapes.
fn logfmt_pairs(line: &[u8]) -> Vec<Pair<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    let skip_value = |i: &mut usize| {
        while *i < n && line[*i] > b' ' {
            *i += 1;
        }
    };
    loop {
        while i < n && line[i] <= b' ' {
            i += 1;
        }
        if i >= n {
            return out;
        }
        let start = i;
        while i < n && line[i] > b' ' && line[i] != b'=' && line[i] != b'"' {
            i += 1;
        }
        let key = &line[start..i];
        let bad_key = std::str::from_utf8(key).is_err();
        if i < n && line[i] == b'"' {
            out.push(Pair::Err(format!(
                "logfmt syntax error at pos {} : unexpected '\"'",
                i + 1
            )));
            skip_value(&mut i);
            continue;
        }
        if i >= n || line[i] <= b' ' {
            out.push(if bad_key {
                Pair::Err(format!(
                    "logfmt syntax error at pos {} : invalid key",
                    i + 1
                ))
            } else {
                Pair::Ok(key, None)
            });
            continue;
        }
        // line[i] == '='
        if key.is_empty() {
            out.push(Pair::Err(format!(
                "logfmt syntax error at pos {} : unexpected '='",
                i + 1
            )));
            skip_value(&mut i);
            continue;
        }
        if bad_key {
            out.push(Pair::Err(format!(
                "logfmt syntax error at pos {} : invalid key",
                i + 1
            )));
            skip_value(&mut i);
            continue;
        }
        i += 1;
        if i >= n || line[i] <= b' ' {
            out.push(Pair::Ok(key, None));
            continue;
        }
        if line[i] == b'"' {
            let q = i;
            let mut j = i + 1;
            let mut esc = false;
            let mut has_esc = false;
            let mut end = None;
            while j < n {
                let c = line[j];
                if esc {
                    esc = false;
                } else if c == b'\\' {
                    esc = true;
                    has_esc = true;
                } else if c == b'"' {
                    end = Some(j);
                    break;
                }
                j += 1;
            }
            let Some(end) = end else {
                out.push(Pair::Err(format!(
                    "logfmt syntax error at pos {} : unterminated quoted value",
                    n + 1
                )));
                return out;
            };
            i = end + 1;
            if has_esc {
                match serde_json::from_slice::<String>(&line[q..=end]) {
                    Ok(s) => out.push(Pair::Ok(key, Some(Cow::Owned(s.into_bytes())))),
                    Err(_) => out.push(Pair::Err(format!(
                        "logfmt syntax error at pos {} : invalid quoted value",
                        end + 2
                    ))),
                }
            } else {
                out.push(Pair::Ok(key, Some(Cow::Borrowed(&line[q + 1..end]))));
            }
            continue;
        }
        let vs = i;
        while i < n && line[i] > b' ' && line[i] != b'=' && line[i] != b'"' {
            i += 1;
        }
        if i < n && (line[i] == b'=' || line[i] == b'"') {
            out.push(Pair::Err(format!(
                "logfmt syntax error at pos {} : unexpected {:?}",
                i + 1,
                line[i] as char
            )));
            skip_value(&mut i);
            continue;
        }
        out.push(Pair::Ok(key, Some(Cow::Borrowed(&line[vs..i]))));
    }
}

fn logfmt(
    line: &[u8],
    strict: bool,
    keep_empty: bool,
    fields: &[(String, String)],
    st: &mut State<'_>,
) {
    for pair in logfmt_pairs(line) {
        let (key, value) = match pair {
            Pair::Ok(k, v) => (k, v),
            Pair::Err(e) => {
                if strict {
                    st.set_err(LOGFMT_ERR, e);
                    return;
                }
                continue;
            }
        };
        let key = String::from_utf8_lossy(key);
        let value = value.map(|v| lossy(&v)).unwrap_or_default();
        if fields.is_empty() {
            let name = sanitize_key(&key);
            if name.is_empty() || (!keep_empty && value.is_empty()) {
                continue;
            }
            let name = st.parsed_name(&name);
            st.set(name, value);
        } else {
            for (label, k) in fields {
                if *k == key {
                    let name = st.parsed_name(label);
                    st.set(name, value.clone());
                }
            }
        }
    }
}

// ---- pattern ----------------------------------------------------------------------------------

/// A Loki pattern: literals and captures `<name>` / `<_>`.
#[derive(Debug, Clone)]
pub struct Pattern {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(Vec<u8>),
    /// `None`: `<_>`.
    Cap(Option<String>),
}

impl Pattern {
    /// Parses a pattern; `filter` for `|>`/`!>` (only `<_>`), else a parser stage (at least one
    /// named capture).
    pub fn parse(text: &str, filter: bool) -> Result<Self, String> {
        let mut parts: Vec<Part> = Vec::new();
        let mut rest = text;
        let mut lit = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('<') {
                let n = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                let name = &after[..n];
                let valid = !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && after[n..].starts_with('>');
                if valid {
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    if matches!(parts.last(), Some(Part::Cap(_))) {
                        return Err(format!(
                            "found consecutive capture '<{name}>': invalid expression"
                        ));
                    }
                    parts.push(Part::Cap((name != "_").then(|| name.to_string())));
                    rest = &after[n + 1..];
                    continue;
                }
            }
            let c = rest.chars().next().unwrap_or_default();
            let mut b = [0; 4];
            lit.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            rest = &rest[c.len_utf8()..];
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        let p = Self { parts };
        if filter {
            if let Some(n) = p.names().first() {
                return Err(format!("named captures are not allowed: found '<{n}>'"));
            }
        } else {
            if !p.parts.iter().any(|x| matches!(x, Part::Cap(_))) {
                return Err("at least one capture is required".into());
            }
            let names = p.names();
            for (i, n) in names.iter().enumerate() {
                if names[..i].contains(n) {
                    return Err(format!("duplicate capture name ({n}): invalid expression"));
                }
            }
        }
        Ok(p)
    }

    /// The named captures, in order.
    pub fn names(&self) -> Vec<String> {
        self.names_iter().map(String::from).collect()
    }

    fn names_iter(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Cap(Some(n)) => Some(n.as_str()),
            _ => None,
        })
    }

    /// The named captures' values, in order (fewer when the line ends early).
    pub fn matches<'l>(&self, mut line: &'l [u8]) -> Vec<&'l [u8]> {
        let mut out = Vec::new();
        if line.is_empty() || self.parts.is_empty() {
            return out;
        }
        let mut parts = &self.parts[..];
        if let Some(Part::Lit(l)) = parts.first() {
            if !line.starts_with(l) {
                return out;
            }
            line = &line[l.len()..];
            parts = &parts[1..];
        }
        while let Some(Part::Cap(name)) = parts.first() {
            let Some(Part::Lit(l)) = parts.get(1) else {
                if name.is_some() {
                    out.push(line);
                }
                return out;
            };
            parts = &parts[2..];
            match memchr::memmem::find(line, l) {
                None => {
                    if name.is_some() {
                        out.push(line);
                    }
                    return out;
                }
                Some(i) => {
                    if name.is_some() {
                        out.push(&line[..i]);
                    }
                    line = &line[i + l.len()..];
                }
            }
        }
        out
    }

    /// Whether the line matches as a `|>` filter.
    pub fn test(&self, line: &[u8]) -> bool {
        if line.is_empty() || self.parts.is_empty() {
            return line.is_empty() && self.parts.is_empty();
        }
        let mut off = 0;
        for (i, p) in self.parts.iter().enumerate() {
            let Part::Lit(l) = p else { continue };
            let Some(j) = memchr::memmem::find(&line[off..], l) else {
                return false;
            };
            if i != 0 && j == 0 {
                return false;
            }
            off += j + l.len();
        }
        let ends_with_capture = matches!(self.parts.last(), Some(Part::Cap(_)));
        ends_with_capture == (off != line.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_numbers_durations_bytes() {
        assert_eq!(parse_go_float("1e3"), Ok(1000.0));
        assert!(parse_go_float(" 5").is_err());
        assert!(parse_go_float("0x10").is_err());
        assert!(parse_go_float("+Inf").unwrap().is_infinite());
        assert_eq!(parse_go_duration("1m30s"), Ok(90.0));
        assert_eq!(parse_go_duration("250ms"), Ok(0.25));
        assert_eq!(parse_go_duration("-1.5h"), Ok(-5400.0));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5x").is_err());
        assert_eq!(parse_bytes("5MB"), Ok(5e6));
        assert_eq!(parse_bytes("1KiB"), Ok(1024.0));
        assert_eq!(parse_bytes("1.5 kb"), Ok(1500.0));
        assert_eq!(parse_bytes("42"), Ok(42.0));
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn patterns() {
        let p =
            Pattern::parse("<ip> - <_> [<ts>] \"<method> <path> <_>\" <status>", false).unwrap();
        let line = br#"10.0.0.1 - - [06/Dec/2026:05:00:00 +0000] "GET /x HTTP/1.1" 200"#;
        let got: Vec<_> = p.matches(line).into_iter().map(lossy).collect();
        assert_eq!(
            got,
            ["10.0.0.1", "06/Dec/2026:05:00:00 +0000", "GET", "/x", "200"]
        );
        assert!(Pattern::parse("<a><b>", false).is_err());
        assert!(Pattern::parse("plain", false).is_err());
        assert!(Pattern::parse("<a> <a>", false).is_err());
        assert!(Pattern::parse("<a> x", true).is_err());
        let f = Pattern::parse("<_> error <_>", true).unwrap();
        assert!(f.test(b"an error here"));
        assert!(
            !f.test(b"error here"),
            "the first capture needs a character"
        );
        assert!(!f.test(b"an error "), "the last capture needs a character");
        assert!(!f.test(b"no match"));
    }
}
