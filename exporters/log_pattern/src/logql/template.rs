//! Go's `text/template` as `| line_format` and `| label_format` use it: the data is the line's
//! labels (a `map[string]string`; a missing label is the empty string, Loki's
//! `missingkey=zero`), and the functions are the ones Loki documents (its own, the `sprig`
//! ones it picks, and Go's builtins).
//!
//! The language: text and `{{ }}` actions with `{{-`/`-}}` trimming and `{{/* */}}` comments;
//! pipelines (`.name | lower | printf "%s!"`), parenthesised pipelines, `$` variables
//! (`:=`, `=`), `if`/`else if`/`else`/`end`, `with`, `range` over the labels; literals
//! (strings with Go escapes, raw strings, numbers, characters, `true`, `false`, `nil`).
//! Not supported (refused when the query is parsed): `define`, `template`, `block`, `break`,
//! `continue`, and the functions that read clocks or time zones (`__timestamp__`, `now`,
//! `date`, `toDate`, `toDateInZone`, `unixEpoch`, `unixEpochMillis`, `unixEpochNanos`) or
//! return Go objects (`fromJson`).
//!
//! An error while a line is formatted (a function given the wrong type, a comparison of a
//! string with a number, division by zero, an output over [`MAX_OUTPUT`] bytes) is returned
//! as a message; the stage sets `__error__="TemplateFormatErr"` with it, as Loki does. A
//! hand-written engine: the Go-template crate for Rust (gtmpl 0.7, passively maintained) hangs
//! on `{{ .a } `, starts a thread per template and prints a missing key as `<no value>`.

use std::fmt::Write as _;

/// Longest output of one template, in bytes (Go's has no bound; a line's labels and line
/// must not be able to take the exporter's memory).
pub const MAX_OUTPUT: usize = 64 * 1024;
/// Deepest nesting of parentheses and blocks.
const MAX_DEPTH: usize = 64;

/// Functions refused at parse time, with the reason.
const REFUSED: &[(&str, &str)] = &[
    ("__timestamp__", "reads the entry's timestamp"),
    ("now", "reads the clock"),
    ("date", "formats times"),
    ("toDate", "parses times"),
    ("toDateInZone", "parses times in a time zone"),
    ("unixEpoch", "formats times"),
    ("unixEpochMillis", "formats times"),
    ("unixEpochNanos", "formats times"),
    ("fromJson", "returns Go objects"),
];

/// Every function a template may call.
const FUNCS: &[&str] = &[
    // Go's builtins.
    "and",
    "or",
    "not",
    "len",
    "index",
    "slice",
    "print",
    "printf",
    "println",
    "urlquery",
    "html",
    "js",
    "call",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge", // Loki's.
    "__line__",
    "ToLower",
    "ToUpper",
    "Replace",
    "Trim",
    "TrimLeft",
    "TrimRight",
    "TrimPrefix",
    "TrimSuffix",
    "TrimSpace",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    "count",
    "urldecode",
    "urlencode",
    "bytes",
    "duration",
    "duration_seconds", // sprig's, as Loki picks them.
    "b64enc",
    "b64dec",
    "lower",
    "upper",
    "title",
    "trunc",
    "substr",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "indent",
    "nindent",
    "replace",
    "repeat",
    "trim",
    "trimAll",
    "trimSuffix",
    "trimPrefix",
    "int",
    "float64",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "addf",
    "subf",
    "mulf",
    "divf",
    "max",
    "min",
    "maxf",
    "minf",
    "ceil",
    "floor",
    "round",
    "default",
];

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

/// A template value.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// The labels (the data), sorted by name.
    Map(std::sync::Arc<Vec<(String, String)>>),
    Nil,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Pipe, Vec<Node>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Pipe {
    /// Variables declared (`:=`) or assigned (`=`).
    vars: Vec<String>,
    assign: bool,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Arg {
    /// `.` then fields.
    Dot(Vec<String>),
    /// `$x` then fields.
    Var(String, Vec<String>),
    Func(String),
    Lit(Val),
    Sub(Box<Pipe>, Vec<String>),
}

// ---- lexer ------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// `.` or `.a.b`.
    Field(Vec<String>),
    /// `$x.a.b`.
    Var(String, Vec<String>),
    /// `.a.b` right after `)`.
    Chain(Vec<String>),
    Ident(String),
    Str(String),
    Num(String),
    Char(char),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

/// The pieces of the text: literal text and the tokens of each action.
enum Piece {
    Text(String),
    Action(Vec<Tok>),
}

fn lex(src: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let text = if trim_next { rest.trim_start() } else { rest };
            out.push(Piece::Text(text.to_string()));
            break;
        };
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let mut inner = &rest[open + 2..];
        if inner.starts_with("- ") || inner.starts_with("-\t") || inner.starts_with("-\n") {
            text = text.trim_end();
            inner = &inner[1..];
        }
        if !text.is_empty() {
            out.push(Piece::Text(text.to_string()));
        }
        let t = inner.trim_start();
        if let Some(c) = t.strip_prefix("/*") {
            let Some(end) = c.find("*/") else {
                return Err("unclosed comment".into());
            };
            let after = &c[end + 2..];
            let (after, trim) = close(after).ok_or("comment ends before closing delimiter")?;
            trim_next = trim;
            rest = after;
            continue;
        }
        let (toks, after, trim) = lex_action(inner)?;
        out.push(Piece::Action(toks));
        trim_next = trim;
        rest = after;
    }
    Ok(out)
}

/// `}}` or ` -}}` at the start of `s` (after spaces): the rest and whether to trim.
fn close(s: &str) -> Option<(&str, bool)> {
    let t = s.trim_start();
    if let Some(r) = t.strip_prefix("}}") {
        return Some((r, false));
    }
    if t.len() < s.len() {
        if let Some(r) = t.strip_prefix("-}}") {
            return Some((r, true));
        }
    }
    None
}

fn lex_action(s: &str) -> Result<(Vec<Tok>, &str, bool), String> {
    let mut toks = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    let ident_end = |from: usize| {
        s[from..]
            .find(|c: char| !(c == '_' || c.is_alphanumeric()))
            .map_or(s.len(), |n| from + n)
    };
    // `.a.b` at `from`: the names and the end.
    let chain = |mut from: usize| {
        let mut names = Vec::new();
        while b.get(from) == Some(&b'.') {
            let end = ident_end(from + 1);
            if end == from + 1 {
                break;
            }
            names.push(s[from + 1..end].to_string());
            from = end;
        }
        (names, from)
    };
    loop {
        if let Some((after, trim)) = close(&s[i..]) {
            return Ok((toks, after, trim));
        }
        let Some(&c) = b.get(i) else {
            return Err("unclosed action".into());
        };
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                toks.push(Tok::RParen);
                let (names, j) = chain(i + 1);
                if !names.is_empty() {
                    toks.push(Tok::Chain(names));
                }
                i = j;
            }
            b'|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            b',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            b':' if b.get(i + 1) == Some(&b'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            b'=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            b'"' => {
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None | Some(b'\n') => return Err("unterminated quoted string".into()),
                        Some(b'\\') => j += 2,
                        Some(b'"') => break,
                        _ => j += 1,
                    }
                }
                toks.push(Tok::Str(unquote(&s[i + 1..j])?));
                i = j + 1;
            }
            b'`' => {
                let end = s[i + 1..]
                    .find('`')
                    .ok_or("unterminated raw quoted string")?;
                toks.push(Tok::Str(s[i + 1..i + 1 + end].replace('\r', "")));
                i += end + 2;
            }
            b'\'' => {
                let end = s[i + 1..]
                    .find('\'')
                    .ok_or("unterminated character constant")?;
                let u = unquote(&s[i + 1..i + 1 + end])?;
                let mut cs = u.chars();
                match (cs.next(), cs.next()) {
                    (Some(ch), None) => toks.push(Tok::Char(ch)),
                    _ => return Err(format!("malformed character constant: '{u}'")),
                }
                i += end + 2;
            }
            b'.' if b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) => {
                let j = number_end(s, i);
                toks.push(Tok::Num(s[i..j].to_string()));
                i = j;
            }
            b'.' => {
                let (names, j) = chain(i);
                toks.push(Tok::Field(names));
                i = j.max(i + 1);
            }
            b'$' => {
                let end = ident_end(i + 1);
                let (names, j) = chain(end);
                toks.push(Tok::Var(s[i..end].to_string(), names));
                i = j;
            }
            b'0'..=b'9' | b'-' | b'+' => {
                let j = number_end(s, i);
                if j == i + 1 && !c.is_ascii_digit() {
                    return Err(format!("bad number syntax: {:?}", c as char));
                }
                toks.push(Tok::Num(s[i..j].to_string()));
                i = j;
            }
            _ if c == b'_' || c.is_ascii_alphabetic() => {
                let j = ident_end(i);
                toks.push(Tok::Ident(s[i..j].to_string()));
                i = j;
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or_default();
                return Err(format!("unexpected {ch:?} in command"));
            }
        }
    }
}

fn number_end(s: &str, from: usize) -> usize {
    let b = s.as_bytes();
    let mut j = from + 1;
    while let Some(&c) = b.get(j) {
        let exp_sign = matches!(c, b'+' | b'-') && matches!(b[j - 1], b'e' | b'E' | b'p' | b'P');
        if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exp_sign {
            j += 1;
        } else {
            break;
        }
    }
    j
}

/// Go's escapes in a double-quoted string.
fn unquote(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut cs = s.chars();
    while let Some(c) = cs.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = cs.next().ok_or("unterminated escape")?;
        let hex = |cs: &mut std::str::Chars<'_>, n: usize| -> Result<u32, String> {
            let h: String = cs.by_ref().take(n).collect();
            if h.len() != n {
                return Err(format!("invalid escape \\{e}"));
            }
            u32::from_str_radix(&h, 16).map_err(|_| format!("invalid escape \\{e}{h}"))
        };
        let ch = match e {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'v' => '\x0b',
            '\\' | '"' | '\'' => e,
            'x' => char::from_u32(hex(&mut cs, 2)?).ok_or("invalid \\x escape")?,
            'u' => char::from_u32(hex(&mut cs, 4)?).ok_or("invalid \\u escape")?,
            'U' => char::from_u32(hex(&mut cs, 8)?).ok_or("invalid \\U escape")?,
            _ => return Err(format!("invalid syntax: unknown escape \\{e}")),
        };
        out.push(ch);
    }
    Ok(out)
}

// ---- parser -----------------------------------------------------------------------------------

struct TParser {
    pieces: std::vec::IntoIter<Piece>,
    depth: usize,
}

/// How a list of nodes ended.
enum Close {
    Eof,
    End,
    Else(Vec<Tok>),
}

impl Template {
    /// Parses a template; the error says what is wrong.
    pub fn parse(src: &str) -> Result<Self, String> {
        let mut p = TParser {
            pieces: lex(src)?.into_iter(),
            depth: 0,
        };
        let (nodes, end) = p.list()?;
        match end {
            Close::Eof => Ok(Self { nodes }),
            Close::End => Err("unexpected {{end}}".into()),
            Close::Else(_) => Err("unexpected {{else}}".into()),
        }
    }
}

impl TParser {
    fn list(&mut self) -> Result<(Vec<Node>, Close), String> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.next() {
            let toks = match piece {
                Piece::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Piece::Action(t) => t,
            };
            let keyword = match toks.first() {
                Some(Tok::Ident(k)) => k.as_str(),
                None => return Err("missing value for command".into()),
                _ => "",
            };
            match keyword {
                "end" if toks.len() == 1 => return Ok((nodes, Close::End)),
                "end" => return Err("unexpected tokens after end".into()),
                "else" => return Ok((nodes, Close::Else(toks[1..].to_vec()))),
                "if" | "with" | "range" => {
                    let node = self.block(keyword, toks[1..].to_vec())?;
                    nodes.push(node);
                }
                "define" | "template" | "block" | "break" | "continue" => {
                    return Err(format!("{{{{{keyword}}}}} is not supported"))
                }
                _ => nodes.push(Node::Action(pipeline(&toks, 0)?)),
            }
        }
        Ok((nodes, Close::Eof))
    }

    fn block(&mut self, keyword: &str, toks: Vec<Tok>) -> Result<Node, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("blocks nested deeper than {MAX_DEPTH}"));
        }
        let pipe = pipeline(&toks, 0)?;
        if keyword == "range" && pipe.vars.len() > 2 || keyword != "range" && pipe.vars.len() > 1 {
            return Err(format!("too many declarations in {keyword}"));
        }
        let (then, end) = self.list()?;
        let els = match end {
            Close::Eof => {
                return Err(format!(
                    "unexpected EOF: {{{{{keyword}}}}} without {{{{end}}}}"
                ))
            }
            Close::End => Vec::new(),
            Close::Else(rest) if rest.is_empty() => match self.list()? {
                (els, Close::End) => els,
                _ => {
                    return Err(format!(
                        "expected {{{{end}}}} after {{{{else}}}} of {keyword}"
                    ))
                }
            },
            Close::Else(rest) => match rest.first() {
                // `else if` / `else with`: a nested block sharing the {{end}}.
                Some(Tok::Ident(k)) if k == keyword && keyword != "range" => {
                    vec![self.block(keyword, rest[1..].to_vec())?]
                }
                _ => return Err(format!("unexpected tokens after else in {keyword}")),
            },
        };
        self.depth -= 1;
        Ok(match keyword {
            "if" => Node::If(pipe, then, els),
            "with" => Node::With(pipe, then, els),
            _ => Node::Range(pipe, then, els),
        })
    }
}

/// A pipeline from tokens (`depth`: of parentheses).
fn pipeline(toks: &[Tok], depth: usize) -> Result<Pipe, String> {
    if depth > MAX_DEPTH {
        return Err(format!("parentheses nested deeper than {MAX_DEPTH}"));
    }
    let mut toks = toks;
    let mut vars = Vec::new();
    let mut assign = false;
    // `$x :=`, `$x =`, `$k, $v :=`
    let decl_len = toks
        .iter()
        .position(|t| matches!(t, Tok::Declare | Tok::Assign));
    if let Some(n) = decl_len {
        let names: Vec<&Tok> = toks[..n].iter().filter(|t| **t != Tok::Comma).collect();
        let all_vars = !names.is_empty()
            && names
                .iter()
                .all(|t| matches!(t, Tok::Var(_, f) if f.is_empty()))
            && n == names.len() * 2 - 1;
        if all_vars {
            vars = names
                .iter()
                .filter_map(|t| match t {
                    Tok::Var(v, _) => Some(v.clone()),
                    _ => None,
                })
                .collect();
            assign = toks[n] == Tok::Assign;
            toks = &toks[n + 1..];
        }
    }
    let mut cmds = Vec::new();
    let mut cmd = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let arg = match &toks[i] {
            Tok::Pipe => {
                if cmd.is_empty() {
                    return Err("missing command before |".into());
                }
                cmds.push(std::mem::take(&mut cmd));
                i += 1;
                continue;
            }
            Tok::LParen => {
                let mut level = 0;
                let mut j = i;
                loop {
                    match toks.get(j) {
                        Some(Tok::LParen) => level += 1,
                        Some(Tok::RParen) => {
                            level -= 1;
                            if level == 0 {
                                break;
                            }
                        }
                        None => return Err("unclosed left paren".into()),
                        _ => {}
                    }
                    j += 1;
                }
                let inner = pipeline(&toks[i + 1..j], depth + 1)?;
                i = j;
                let mut fields = Vec::new();
                if let Some(Tok::Chain(f)) = toks.get(i + 1) {
                    fields.clone_from(f);
                    i += 1;
                }
                Arg::Sub(Box::new(inner), fields)
            }
            Tok::RParen => return Err("unexpected right paren".into()),
            Tok::Chain(_) => return Err("unexpected . after term".into()),
            Tok::Field(f) => Arg::Dot(f.clone()),
            Tok::Var(v, f) => Arg::Var(v.clone(), f.clone()),
            Tok::Ident(name) => match name.as_str() {
                "true" => Arg::Lit(Val::Bool(true)),
                "false" => Arg::Lit(Val::Bool(false)),
                "nil" => Arg::Lit(Val::Nil),
                _ => {
                    if let Some((_, why)) = REFUSED.iter().find(|(n, _)| n == name) {
                        return Err(format!("function {name:?} is not supported: it {why}"));
                    }
                    if !FUNCS.contains(&name.as_str()) {
                        return Err(format!("function {name:?} not defined"));
                    }
                    Arg::Func(name.clone())
                }
            },
            Tok::Str(s) => Arg::Lit(Val::Str(s.clone())),
            Tok::Char(c) => Arg::Lit(Val::Int(i64::from(u32::from(*c)))),
            Tok::Num(n) => Arg::Lit(number(n)?),
            Tok::Declare | Tok::Assign | Tok::Comma => {
                return Err("unexpected declaration or comma in command".into())
            }
        };
        cmd.push(arg);
        i += 1;
    }
    if cmd.is_empty() {
        return Err(if cmds.is_empty() {
            "missing value for command".into()
        } else {
            "missing command after |".into()
        });
    }
    cmds.push(cmd);
    for c in &cmds[1..] {
        if !matches!(c[0], Arg::Func(_)) {
            return Err("non executable command in pipeline stage".into());
        }
    }
    Ok(Pipe { vars, assign, cmds })
}

fn number(n: &str) -> Result<Val, String> {
    let bad = || format!("bad number syntax: {n:?}");
    let t = n.replace('_', "");
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    let radix = |p: &str, r| {
        body.strip_prefix(p)
            .map(|d| i64::from_str_radix(d, r).map_err(|_| bad()))
    };
    if let Some(v) = radix("0x", 16)
        .or_else(|| radix("0X", 16))
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0b", 2))
    {
        let v = v?;
        return Ok(Val::Int(if neg { -v } else { v }));
    }
    if !body.contains(['.', 'e', 'E']) {
        if let Ok(v) = t.parse::<i64>() {
            return Ok(Val::Int(v));
        }
    }
    match t.parse::<f64>() {
        Ok(v) if body.starts_with(|c: char| c.is_ascii_digit() || c == '.') => Ok(Val::Float(v)),
        _ => Err(bad()),
    }
}

// ---- execution --------------------------------------------------------------------------------

struct Exec<'a> {
    line: &'a str,
    vars: Vec<(String, Val)>,
    out: String,
}

type R<T> = Result<T, String>;

impl Template {
    /// Formats with the line's labels (`data`: name, value) and the line (`__line__`).
    pub fn render(&self, data: &[(String, String)], line: &str) -> Result<String, String> {
        let mut labels = data.to_vec();
        labels.sort();
        let root = Val::Map(std::sync::Arc::new(labels));
        let mut ex = Exec {
            line,
            vars: vec![("$".into(), root.clone())],
            out: String::new(),
        };
        ex.nodes(&self.nodes, &root)?;
        Ok(ex.out)
    }
}

impl Exec<'_> {
    fn write(&mut self, s: &str) -> R<()> {
        if self.out.len() + s.len() > MAX_OUTPUT {
            return Err(format!("output longer than {MAX_OUTPUT} bytes"));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn nodes(&mut self, nodes: &[Node], dot: &Val) -> R<()> {
        let mark = self.vars.len();
        for n in nodes {
            match n {
                Node::Text(t) => self.write(t)?,
                Node::Action(p) => {
                    let v = self.pipe(p, dot)?;
                    if p.vars.is_empty() {
                        self.write(&show(&v))?;
                    }
                }
                Node::If(p, then, els) => {
                    let v = self.pipe(p, dot)?;
                    self.nodes(if truth(&v) { then } else { els }, dot)?;
                }
                Node::With(p, then, els) => {
                    let v = self.pipe(p, dot)?;
                    if truth(&v) {
                        self.nodes(then, &v)?;
                    } else {
                        self.nodes(els, dot)?;
                    }
                }
                Node::Range(p, then, els) => self.range(p, then, els, dot)?,
            }
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn range(&mut self, p: &Pipe, then: &[Node], els: &[Node], dot: &Val) -> R<()> {
        let inner = Pipe {
            vars: Vec::new(),
            assign: false,
            cmds: p.cmds.clone(),
        };
        let v = self.pipe(&inner, dot)?;
        let items: Vec<(Val, Val)> = match &v {
            Val::Map(m) => m
                .iter()
                .map(|(k, v)| (Val::Str(k.clone()), Val::Str(v.clone())))
                .collect(),
            Val::Int(n) => (0..*n).map(|i| (Val::Int(i), Val::Int(i))).collect(),
            Val::Nil => Vec::new(),
            other => return Err(format!("range can't iterate over {}", show(other))),
        };
        if items.is_empty() {
            return self.nodes(els, dot);
        }
        for (k, v) in items {
            let mark = self.vars.len();
            match p.vars.as_slice() {
                [a] => self.vars.push((a.clone(), v.clone())),
                [a, b] => {
                    self.vars.push((a.clone(), k));
                    self.vars.push((b.clone(), v.clone()));
                }
                _ => {}
            }
            self.nodes(then, &v)?;
            self.vars.truncate(mark);
        }
        Ok(())
    }

    fn pipe(&mut self, p: &Pipe, dot: &Val) -> R<Val> {
        let mut piped: Option<Val> = None;
        for cmd in &p.cmds {
            piped = Some(self.cmd(cmd, dot, piped)?);
        }
        let v = piped.unwrap_or(Val::Nil);
        for name in &p.vars {
            if p.assign {
                let slot = self
                    .vars
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| format!("undefined variable: {name}"))?;
                slot.1 = v.clone();
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn cmd(&mut self, args: &[Arg], dot: &Val, piped: Option<Val>) -> R<Val> {
        let Arg::Func(name) = &args[0] else {
            if args.len() > 1 || piped.is_some() {
                return Err("can't give argument to non-function".into());
            }
            return self.arg(&args[0], dot);
        };
        let rest = &args[1..];
        if name == "and" || name == "or" {
            let n = rest.len() + usize::from(piped.is_some());
            if n == 0 {
                return Err(format!(
                    "wrong number of args for {name}: want at least 1 got 0"
                ));
            }
            let mut last = Val::Nil;
            for a in rest {
                last = self.arg(a, dot)?;
                if truth(&last) == (name == "or") {
                    return Ok(last);
                }
            }
            return Ok(piped.unwrap_or(last));
        }
        let mut vals = Vec::with_capacity(rest.len() + 1);
        for a in rest {
            vals.push(self.arg(a, dot)?);
        }
        vals.extend(piped);
        call(name, &vals, self.line).map_err(|e| format!("error calling {name}: {e}"))
    }

    fn arg(&mut self, a: &Arg, dot: &Val) -> R<Val> {
        match a {
            Arg::Dot(fields) => fields_of(dot.clone(), fields),
            Arg::Var(name, fields) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("undefined variable: {name}"))?;
                fields_of(v, fields)
            }
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Sub(p, fields) => {
                let v = self.pipe(p, dot)?;
                fields_of(v, fields)
            }
            Arg::Func(name) => {
                call(name, &[], self.line).map_err(|e| format!("error calling {name}: {e}"))
            }
        }
    }
}

fn fields_of(mut v: Val, fields: &[String]) -> R<Val> {
    for f in fields {
        v = match &v {
            Val::Map(m) => Val::Str(
                m.iter()
                    .find(|(k, _)| k == f)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
            ),
            Val::Nil => return Err(format!("nil pointer evaluating interface {{}}.{f}")),
            other => return Err(format!("can't evaluate field {f} in type {}", kind(other))),
        };
    }
    Ok(v)
}

fn truth(v: &Val) -> bool {
    match v {
        Val::Str(s) => !s.is_empty(),
        Val::Int(i) => *i != 0,
        Val::Float(f) => *f != 0.0,
        Val::Bool(b) => *b,
        Val::Map(m) => !m.is_empty(),
        Val::Nil => false,
    }
}

fn kind(v: &Val) -> &'static str {
    match v {
        Val::Str(_) => "string",
        Val::Int(_) => "int",
        Val::Float(_) => "float64",
        Val::Bool(_) => "bool",
        Val::Map(_) => "map[string]string",
        Val::Nil => "nil",
    }
}

/// A value as Go's `fmt` prints it with `%v`.
fn show(v: &Val) -> String {
    match v {
        Val::Str(s) => s.clone(),
        Val::Int(i) => i.to_string(),
        Val::Float(f) => go_float(*f),
        Val::Bool(b) => b.to_string(),
        Val::Map(m) => {
            let items: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", items.join(" "))
        }
        Val::Nil => "<nil>".into(),
    }
}

/// `fmt`'s `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): the shortest digits, an
/// exponent below 1e-4 and from 1e6 on.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

// ---- functions --------------------------------------------------------------------------------

fn want_n(args: &[Val], n: usize) -> R<()> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!("wrong number of args: want {n} got {}", args.len()))
    }
}

fn s(v: &Val) -> R<&str> {
    match v {
        Val::Str(s) => Ok(s),
        other => Err(format!(
            "wrong type for value; expected string; got {}",
            kind(other)
        )),
    }
}

fn int(v: &Val) -> R<i64> {
    match v {
        Val::Int(i) => Ok(*i),
        other => Err(format!(
            "wrong type for value; expected int; got {}",
            kind(other)
        )),
    }
}

/// sprig's `toInt64` (spf13/cast): numbers truncate, strings parse (0 when they do not).
fn cast_int(v: &Val) -> i64 {
    match v {
        Val::Int(i) => *i,
        Val::Float(f) => *f as i64,
        Val::Bool(b) => i64::from(*b),
        Val::Str(s) => parse_go_int(s).unwrap_or(0),
        _ => 0,
    }
}

fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, b) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = b.strip_prefix("0x").or_else(|| b.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if b.len() > 1 && b.starts_with('0') {
        i64::from_str_radix(&b[1..], 8).ok()?
    } else {
        b.parse::<i64>().ok().filter(|_| !b.starts_with('+'))?
    };
    Some(if neg { -v } else { v })
}

/// sprig's `toFloat64`.
fn cast_float(v: &Val) -> f64 {
    match v {
        Val::Int(i) => *i as f64,
        Val::Float(f) => *f,
        Val::Bool(b) => f64::from(u8::from(*b)),
        Val::Str(s) => super::pipeline::parse_go_float(s).unwrap_or(0.0),
        _ => 0.0,
    }
}

fn string_fn(args: &[Val], n: usize, f: impl Fn(&[&str]) -> String) -> R<Val> {
    want_n(args, n)?;
    let strs = args.iter().map(s).collect::<R<Vec<&str>>>()?;
    Ok(Val::Str(f(&strs)))
}

fn bool_fn(args: &[Val], f: impl Fn(&str, &str) -> bool) -> R<Val> {
    want_n(args, 2)?;
    Ok(Val::Bool(f(s(&args[0])?, s(&args[1])?)))
}

/// Calls a template function with its evaluated arguments.
fn call(name: &str, a: &[Val], line: &str) -> R<Val> {
    match name {
        "__line__" => {
            want_n(a, 0)?;
            Ok(Val::Str(line.to_string()))
        }
        "not" | "len" | "index" | "slice" | "print" | "println" | "printf" | "urlquery"
        | "html" | "js" | "call" | "eq" | "ne" | "lt" | "le" | "gt" | "ge" => builtin(name, a),
        "trunc" | "substr" | "indent" | "nindent" | "repeat" | "int" | "float64" | "add"
        | "sub" | "mul" | "div" | "mod" | "max" | "min" | "addf" | "subf" | "mulf" | "divf"
        | "maxf" | "minf" | "ceil" | "floor" | "round" | "default" => number_call(name, a),
        _ => string_call(name, a),
    }
}

/// Go's builtin functions.
fn builtin(name: &str, a: &[Val]) -> R<Val> {
    match name {
        "not" => {
            want_n(a, 1)?;
            Ok(Val::Bool(!truth(&a[0])))
        }
        "len" => {
            want_n(a, 1)?;
            match &a[0] {
                Val::Str(s) => Ok(Val::Int(s.len() as i64)),
                Val::Map(m) => Ok(Val::Int(m.len() as i64)),
                other => Err(format!("len of type {}", kind(other))),
            }
        }
        "index" => index(a),
        "slice" => slice(a),
        "print" => Ok(Val::Str(sprint(a))),
        "println" => {
            let items: Vec<String> = a.iter().map(show).collect();
            Ok(Val::Str(format!("{}\n", items.join(" "))))
        }
        "printf" => {
            let (f, rest) = a
                .split_first()
                .ok_or("wrong number of args: want at least 1")?;
            Ok(Val::Str(sprintf(s(f)?, rest)))
        }
        "urlquery" => Ok(Val::Str(query_escape(&sprint(a)))),
        "html" => Ok(Val::Str(html_escape(&sprint(a)))),
        "js" => Ok(Val::Str(js_escape(&sprint(a)))),
        "call" => Err("call of a non-function".into()),
        "eq" => {
            let (first, rest) = a.split_first().ok_or("missing argument for comparison")?;
            if rest.is_empty() {
                return Err("missing argument for comparison".into());
            }
            for r in rest {
                if compare(first, r)? == std::cmp::Ordering::Equal {
                    return Ok(Val::Bool(true));
                }
            }
            Ok(Val::Bool(false))
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            want_n(a, 2)?;
            if name != "ne" && matches!(a[0], Val::Bool(_)) {
                return Err("invalid type for comparison".into());
            }
            let o = compare(&a[0], &a[1])?;
            use std::cmp::Ordering::*;
            Ok(Val::Bool(match name {
                "ne" => o != Equal,
                "lt" => o == Less,
                "le" => o != Greater,
                "gt" => o == Greater,
                _ => o != Less,
            }))
        }
        _ => Err(format!("function {name:?} not defined")),
    }
}

/// Loki's and sprig's string functions.
fn string_call(name: &str, a: &[Val]) -> R<Val> {
    let str1 = |f: fn(&str) -> String| string_fn(a, 1, |x| f(x[0]));
    match name {
        "ToLower" | "lower" => str1(|x| x.to_lowercase()),
        "ToUpper" | "upper" => str1(|x| x.to_uppercase()),
        "TrimSpace" | "trim" => str1(|x| x.trim().to_string()),
        "title" => str1(title),
        "b64enc" => str1(|x| b64enc(x.as_bytes())),
        "b64dec" => str1(b64dec),
        "urlencode" => str1(query_escape),
        "urldecode" => {
            want_n(a, 1)?;
            query_unescape(s(&a[0])?).map(Val::Str)
        }
        "Replace" => {
            want_n(a, 4)?;
            let n = int(&a[3])?;
            let (src, old, new) = (s(&a[0])?, s(&a[1])?, s(&a[2])?);
            Ok(Val::Str(if n < 0 {
                src.replace(old, new)
            } else {
                src.replacen(old, new, usize::try_from(n).unwrap_or(0))
            }))
        }
        "replace" => string_fn(a, 3, |x| x[2].replace(x[0], x[1])),
        "Trim" => string_fn(a, 2, |x| x[0].trim_matches(|c| x[1].contains(c)).into()),
        "trimAll" => string_fn(a, 2, |x| x[1].trim_matches(|c| x[0].contains(c)).into()),
        "TrimLeft" => string_fn(a, 2, |x| {
            x[0].trim_start_matches(|c| x[1].contains(c)).into()
        }),
        "TrimRight" => string_fn(a, 2, |x| x[0].trim_end_matches(|c| x[1].contains(c)).into()),
        "TrimPrefix" => string_fn(a, 2, |x| x[0].strip_prefix(x[1]).unwrap_or(x[0]).into()),
        "TrimSuffix" => string_fn(a, 2, |x| x[0].strip_suffix(x[1]).unwrap_or(x[0]).into()),
        "trimPrefix" => string_fn(a, 2, |x| x[1].strip_prefix(x[0]).unwrap_or(x[1]).into()),
        "trimSuffix" => string_fn(a, 2, |x| x[1].strip_suffix(x[0]).unwrap_or(x[1]).into()),
        "contains" => bool_fn(a, |sub, x| x.contains(sub)),
        "hasPrefix" => bool_fn(a, |p, x| x.starts_with(p)),
        "hasSuffix" => bool_fn(a, |p, x| x.ends_with(p)),
        "regexReplaceAll" | "regexReplaceAllLiteral" | "count" => regex_fn(name, a),
        "bytes" | "duration" | "duration_seconds" => {
            want_n(a, 1)?;
            let v = s(&a[0])?;
            let r = if name == "bytes" {
                super::pipeline::parse_bytes(v)
            } else {
                super::pipeline::parse_go_duration(v)
            };
            r.map(Val::Float)
        }
        _ => Err(format!("function {name:?} not defined")),
    }
}

/// sprig's functions with numbers (and `default`).
fn number_call(name: &str, a: &[Val]) -> R<Val> {
    match name {
        "trunc" => {
            want_n(a, 2)?;
            let (c, x) = (int(&a[0])?, s(&a[1])?);
            let l = x.len() as i64;
            let out = if c < 0 && l + c > 0 {
                byte_range(x, (l + c) as usize, x.len())?
            } else if c >= 0 && l > c {
                byte_range(x, 0, c as usize)?
            } else {
                x
            };
            Ok(Val::Str(out.to_string()))
        }
        "substr" => {
            want_n(a, 3)?;
            let (start, end, x) = (int(&a[0])?, int(&a[1])?, s(&a[2])?);
            let l = x.len() as i64;
            let out = if start < 0 {
                byte_range(
                    x,
                    0,
                    usize::try_from(end).map_err(|_| "slice bounds out of range")?,
                )?
            } else if end < 0 || end > l {
                byte_range(x, start as usize, x.len())?
            } else {
                byte_range(x, start as usize, end as usize)?
            };
            Ok(Val::Str(out.to_string()))
        }
        "indent" | "nindent" => {
            want_n(a, 2)?;
            let n = int(&a[0])?;
            let pad = " ".repeat(usize::try_from(n).unwrap_or(0).min(MAX_OUTPUT));
            let body = format!("{pad}{}", s(&a[1])?.replace('\n', &format!("\n{pad}")));
            Ok(Val::Str(if name == "nindent" {
                format!("\n{body}")
            } else {
                body
            }))
        }
        "repeat" => {
            want_n(a, 2)?;
            let (n, x) = (int(&a[0])?, s(&a[1])?);
            let n = usize::try_from(n).map_err(|_| "strings: negative Repeat count")?;
            if n.saturating_mul(x.len()) > MAX_OUTPUT {
                return Err(format!("output longer than {MAX_OUTPUT} bytes"));
            }
            Ok(Val::Str(x.repeat(n)))
        }
        "int" => {
            want_n(a, 1)?;
            Ok(Val::Int(cast_int(&a[0])))
        }
        "float64" => {
            want_n(a, 1)?;
            Ok(Val::Float(cast_float(&a[0])))
        }
        "add" | "sub" | "mul" | "div" | "mod" | "max" | "min" => int_math(name, a),
        "addf" | "subf" | "mulf" | "divf" | "maxf" | "minf" => float_math(name, a),
        "ceil" | "floor" => {
            want_n(a, 1)?;
            let x = cast_float(&a[0]);
            Ok(Val::Float(if name == "ceil" {
                x.ceil()
            } else {
                x.floor()
            }))
        }
        "round" => {
            if a.len() < 2 || a.len() > 3 {
                return Err(format!("wrong number of args: want 2 or 3 got {}", a.len()));
            }
            let (x, p) = (cast_float(&a[0]), int(&a[1])?);
            let on = a.get(2).map_or(Ok(0.5), |v| match v {
                Val::Float(f) => Ok(*f),
                Val::Int(i) => Ok(*i as f64),
                other => Err(format!(
                    "wrong type for value; expected float64; got {}",
                    kind(other)
                )),
            })?;
            let pow = 10f64.powi(i32::try_from(p).unwrap_or(0));
            let digit = pow * x;
            let frac = digit - digit.trunc();
            let r = if frac >= on {
                digit.ceil()
            } else {
                digit.floor()
            };
            Ok(Val::Float(r / pow))
        }
        "default" => {
            let (d, given) = a
                .split_first()
                .ok_or("wrong number of args: want at least 1")?;
            Ok(match given.first() {
                Some(g) if truth(g) => g.clone(),
                _ => d.clone(),
            })
        }
        _ => Err(format!("function {name:?} not defined")),
    }
}

fn byte_range(x: &str, from: usize, to: usize) -> R<&str> {
    x.get(from..to)
        .ok_or_else(|| format!("slice bounds out of range [{from}:{to}] of a string of {} bytes (or inside a character)", x.len()))
}

fn regex_fn(name: &str, a: &[Val]) -> R<Val> {
    let n = if name == "count" { 2 } else { 3 };
    want_n(a, n)?;
    let re = super::re2::compile(s(&a[0])?)?;
    let x = s(&a[1])?;
    Ok(match name {
        "count" => Val::Int(re.find_iter(x).count() as i64),
        "regexReplaceAll" => Val::Str(re.replace_all(x, s(&a[2])?).into_owned()),
        _ => Val::Str(re.replace_all(x, regex::NoExpand(s(&a[2])?)).into_owned()),
    })
}

fn int_math(name: &str, a: &[Val]) -> R<Val> {
    let v: Vec<i64> = a.iter().map(cast_int).collect();
    let need = if name == "add" { 0 } else { 1 };
    if v.len() < need || (matches!(name, "sub" | "div" | "mod") && v.len() != 2) {
        return Err(format!("wrong number of args for {name}: got {}", v.len()));
    }
    Ok(Val::Int(match name {
        "add" => v.iter().fold(0i64, |x, y| x.wrapping_add(*y)),
        "sub" => v[0].wrapping_sub(v[1]),
        "mul" => v.iter().fold(1i64, |x, y| x.wrapping_mul(*y)),
        "div" | "mod" if v[1] == 0 => return Err("runtime error: integer divide by zero".into()),
        "div" => v[0].wrapping_div(v[1]),
        "mod" => v[0].wrapping_rem(v[1]),
        "max" => v.iter().copied().max().unwrap_or_default(),
        _ => v.iter().copied().min().unwrap_or_default(),
    }))
}

fn float_math(name: &str, a: &[Val]) -> R<Val> {
    let v: Vec<f64> = a.iter().map(cast_float).collect();
    let Some((&first, rest)) = v.split_first() else {
        return Ok(Val::Float(0.0));
    };
    Ok(Val::Float(match name {
        "addf" => v.iter().sum(),
        "subf" => rest.iter().fold(first, |x, y| x - y),
        "mulf" => rest.iter().fold(first, |x, y| x * y),
        "divf" => {
            if rest.contains(&0.0) {
                return Err("decimal division by 0".into());
            }
            rest.iter().fold(first, |x, y| x / y)
        }
        "maxf" => rest.iter().fold(first, |x, y| x.max(*y)),
        _ => rest.iter().fold(first, |x, y| x.min(*y)),
    }))
}

/// Go's `eq`/`lt` comparison of basic kinds; different kinds are an error.
fn compare(a: &Val, b: &Val) -> R<std::cmp::Ordering> {
    use std::cmp::Ordering;
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Int(x), Val::Int(y)) => Ok(x.cmp(y)),
        (Val::Float(x), Val::Float(y)) => Ok(x.partial_cmp(y).unwrap_or(Ordering::Less)),
        (Val::Bool(x), Val::Bool(y)) => Ok(x.cmp(y)),
        (Val::Nil, Val::Nil) => Ok(Ordering::Equal),
        (Val::Map(_), _) | (_, Val::Map(_)) | (Val::Nil, _) | (_, Val::Nil) => {
            Err("invalid type for comparison".into())
        }
        _ => Err("incompatible types for comparison".into()),
    }
}

fn index(a: &[Val]) -> R<Val> {
    let (item, keys) = a
        .split_first()
        .ok_or("wrong number of args: want at least 1")?;
    let mut v = item.clone();
    for k in keys {
        v = match (&v, k) {
            (Val::Map(m), Val::Str(k)) => Val::Str(
                m.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
            ),
            (Val::Str(s), Val::Int(i)) => {
                let b = usize::try_from(*i)
                    .ok()
                    .and_then(|i| s.as_bytes().get(i))
                    .ok_or_else(|| format!("index out of range: {i}"))?;
                Val::Int(i64::from(*b))
            }
            (Val::Nil, _) => return Err("index of untyped nil".into()),
            (x, k) => return Err(format!("cannot index {} with {}", kind(x), kind(k))),
        };
    }
    Ok(v)
}

fn slice(a: &[Val]) -> R<Val> {
    let (item, idx) = a
        .split_first()
        .ok_or("wrong number of args: want at least 1")?;
    let Val::Str(x) = item else {
        return Err(format!("can't slice item of type {}", kind(item)));
    };
    if idx.len() > 2 {
        return Err("too many slice indexes".into());
    }
    let from = idx.first().map_or(Ok(0), int)?;
    let to = idx.get(1).map_or(Ok(x.len() as i64), int)?;
    let (from, to) = (
        usize::try_from(from).map_err(|_| "index out of range")?,
        usize::try_from(to).map_err(|_| "index out of range")?,
    );
    if from > to || to > x.len() {
        return Err(format!("index out of range: {to}"));
    }
    let bytes = &x.as_bytes()[from..to];
    Ok(Val::Str(String::from_utf8_lossy(bytes).into_owned()))
}

/// `fmt.Sprint`: a space between operands when neither is a string.
fn sprint(a: &[Val]) -> String {
    let mut out = String::new();
    for (i, v) in a.iter().enumerate() {
        if i > 0 && !matches!(v, Val::Str(_)) && !matches!(a[i - 1], Val::Str(_)) {
            out.push(' ');
        }
        out.push_str(&show(v));
    }
    out
}

/// `fmt.Sprintf` for the verbs a log line needs: `%v %s %q %d %f %F %e %g %x %X %t %c %%`,
/// with the flags `-`, `+`, `0` and width and precision. A verb that does not fit its
/// operand is written as Go writes it (`%!d(string=x)`).
fn sprintf(f: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut cs = f.chars().peekable();
    while let Some(c) = cs.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero) = (false, false, false);
        while let Some(&fl) = cs.peek() {
            match fl {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' | '#' => {}
                _ => break,
            }
            cs.next();
        }
        let digits = |cs: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            let mut n: Option<usize> = None;
            while let Some(d) = cs.peek().and_then(|c| c.to_digit(10)) {
                n = Some(
                    n.unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add(d as usize)
                        .min(4096),
                );
                cs.next();
            }
            n
        };
        let width = digits(&mut cs);
        let prec = if cs.peek() == Some(&'.') {
            cs.next();
            Some(digits(&mut cs).unwrap_or(0))
        } else {
            None
        };
        let Some(verb) = cs.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let body = match format_verb(verb, arg, prec, plus) {
            Some(b) => b,
            None => {
                let _ = write!(out, "%!{verb}({}={})", kind(arg), show(arg));
                continue;
            }
        };
        let w = width.unwrap_or(0);
        let n = body.chars().count();
        if n >= w {
            out.push_str(&body);
        } else if minus {
            out.push_str(&body);
            out.extend(std::iter::repeat_n(' ', w - n));
        } else if zero && !matches!(arg, Val::Str(_)) {
            let (sign, digits) = match body.strip_prefix(['-', '+']) {
                Some(d) => (&body[..1], d),
                None => ("", body.as_str()),
            };
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', w - n));
            out.push_str(digits);
        } else {
            out.extend(std::iter::repeat_n(' ', w - n));
            out.push_str(&body);
        }
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", kind(a), show(a)))
            .collect();
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    out
}

fn format_verb(verb: char, arg: &Val, prec: Option<usize>, plus: bool) -> Option<String> {
    let sign = |s: String, neg: bool| if plus && !neg { format!("+{s}") } else { s };
    Some(match (verb, arg) {
        ('v', Val::Float(f)) | ('g', Val::Float(f)) if prec.is_none() => {
            sign(go_float(*f), *f < 0.0)
        }
        ('v', Val::Int(i)) | ('d', Val::Int(i)) => sign(i.to_string(), *i < 0),
        ('v', _) => show(arg),
        ('s', Val::Str(x)) => match prec {
            Some(p) => x.chars().take(p).collect(),
            None => x.clone(),
        },
        ('s', Val::Map(_)) => show(arg),
        ('q', Val::Str(x)) => go_quote(x),
        ('q', Val::Int(i)) => format!(
            "'{}'",
            char::from_u32(u32::try_from(*i).ok()?).unwrap_or('\u{FFFD}')
        ),
        ('t', Val::Bool(b)) => b.to_string(),
        ('c', Val::Int(i)) => char::from_u32(u32::try_from(*i).ok()?)
            .unwrap_or('\u{FFFD}')
            .to_string(),
        ('x', Val::Int(i)) => format!("{i:x}"),
        ('X', Val::Int(i)) => format!("{i:X}"),
        ('o', Val::Int(i)) => format!("{i:o}"),
        ('b', Val::Int(i)) => format!("{i:b}"),
        ('x', Val::Str(x)) => x.bytes().map(|b| format!("{b:02x}")).collect(),
        ('X', Val::Str(x)) => x.bytes().map(|b| format!("{b:02X}")).collect(),
        ('f' | 'F', Val::Float(f)) => sign(format!("{f:.*}", prec.unwrap_or(6)), *f < 0.0),
        ('e', Val::Float(f)) => {
            let e = format!("{f:.*e}", prec.unwrap_or(6));
            let (m, x) = e.split_once('e')?;
            let x: i32 = x.parse().ok()?;
            let s = if x < 0 { '-' } else { '+' };
            sign(format!("{m}e{s}{:02}", x.abs()), *f < 0.0)
        }
        ('g', Val::Float(f)) => {
            let p = prec.unwrap_or(6).max(1);
            let exp = if *f == 0.0 {
                0
            } else {
                f.abs().log10().floor() as i32
            };
            if exp < -4 || exp >= p as i32 {
                let e = format!("{f:.*e}", p - 1);
                let (m, x) = e.split_once('e')?;
                let m = if m.contains('.') {
                    m.trim_end_matches('0').trim_end_matches('.')
                } else {
                    m
                };
                let x: i32 = x.parse().ok()?;
                format!("{m}e{}{:02}", if x < 0 { '-' } else { '+' }, x.abs())
            } else {
                let decimals = usize::try_from(p as i32 - 1 - exp).unwrap_or(0);
                let s = format!("{f:.decimals$}");
                if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    s
                }
            }
        }
        _ => return None,
    })
}

/// `strconv.Quote`.
fn go_quote(x: &str) -> String {
    let mut out = String::from("\"");
    for c in x.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `strings.Title`: the first letter of each word upper case.
fn title(x: &str) -> String {
    let mut prev_sep = true;
    x.chars()
        .map(|c| {
            let sep = !(c.is_alphanumeric() || c == '_');
            let out = if prev_sep {
                c.to_uppercase().next().unwrap_or(c)
            } else {
                c
            };
            prev_sep = sep;
            out
        })
        .collect()
}

/// `url.QueryEscape`.
fn query_escape(x: &str) -> String {
    let mut out = String::new();
    for b in x.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// `url.QueryUnescape`.
fn query_unescape(x: &str) -> R<String> {
    let b = x.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = x
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        format!(
                            "invalid URL escape {:?}",
                            String::from_utf8_lossy(&b[i..(i + 3).min(b.len())])
                        )
                    })?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `template.HTMLEscapeString`.
fn html_escape(x: &str) -> String {
    let mut out = String::new();
    for c in x.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `template.JSEscapeString`.
fn js_escape(x: &str) -> String {
    let mut out = String::new();
    for c in x.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' | '>' | '&' | '=' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn b64enc(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | u32::from(x) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// sprig's `b64dec`: the decoded text, or Go's error message as the text.
fn b64dec(x: &str) -> String {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    let b = x.as_bytes();
    let pad_at = b.iter().position(|&c| c == b'=').unwrap_or(b.len());
    let illegal = |i: usize| format!("illegal base64 data at input byte {i}");
    for (i, &c) in b[..pad_at].iter().enumerate() {
        let Some(v) = B64.iter().position(|&d| d == c) else {
            return illegal(i);
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits & 0xff) as u8);
        }
    }
    let pads = b.len() - pad_at;
    let ok_len = b.len() % 4 == 0 && pads <= 2 && b[pad_at..].iter().all(|&c| c == b'=');
    if !ok_len || (pads > 0 && pad_at % 4 < 2) {
        return illegal(pad_at.min(b.len().saturating_sub(1)));
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &str, labels: &[(&str, &str)]) -> Result<String, String> {
        let data: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Template::parse(t)?.render(&data, "the line")
    }

    #[test]
    fn go_template_semantics() {
        let l = &[("a", "x"), ("n", "42"), ("s", "Hello World")];
        let ok = |t: &str, want: &str| assert_eq!(run(t, l).as_deref(), Ok(want), "{t}");
        ok("{{.a}}-{{.missing}}|", "x-|");
        ok("{{ .a | upper }} {{ __line__ }}", "X the line");
        ok("{{ printf \"%s %s\" .a .n }}", "x 42");
        ok("{{ $.a }}{{ print $ }}", "xmap[a:x n:42 s:Hello World]");
        ok("{{ if eq .a \"x\" }}yes{{ else }}no{{ end }}", "yes");
        ok(
            "{{ if eq .a \"y\" }}1{{ else if .n }}2{{ else }}3{{ end }}",
            "2",
        );
        ok("{{ with .missing }}set{{ else }}unset{{ end }}", "unset");
        ok("{{ with .a }}{{ . }}{{ end }}", "x");
        ok("a  {{- .a -}}  b", "axb");
        ok("{{/* note */}}{{ .a }}", "x");
        ok("{{ $x := .a }}{{ $x = \"z\" }}{{ $x }}", "z");
        ok(
            "{{ range $k, $v := . }}{{ $k }}={{ $v }};{{ end }}",
            "a=x;n=42;s=Hello World;",
        );
        ok(
            "{{ printf \"%s=%5.2f|%-4d|%05d|%q\" .a 3.14159 7 42 .a }}",
            "x= 3.14|7   |00042|\"x\"",
        );
        ok("{{ printf \"%d\" .a }}", "%!d(string=x)");
        ok(
            "{{ .n | int | add 8 }} {{ div 7 2 }} {{ mod 7 2 }}",
            "50 3 1",
        );
        ok(
            "{{ addf 1.5 2 }} {{ mulf 1e3 1e3 }} {{ divf 1 3 }}",
            "3.5 1e+06 0.3333333333333333",
        );
        ok(
            "{{ round 2.556 2 }} {{ ceil 1.2 }} {{ floor \"1.8\" }}",
            "2.56 2 1",
        );
        ok(
            "{{ .s | lower | title }} {{ trunc 5 .s }} {{ substr 6 11 .s }}",
            "Hello World Hello World",
        );
        ok(
            "{{ regexReplaceAll \"(o)\" .s \"[$1]\" }} {{ count \"l\" .s }}",
            "Hell[o] W[o]rld 3",
        );
        ok(
            "{{ regexReplaceAllLiteral \"o\" .s \"$1\" }}",
            "Hell$1 W$1rld",
        );
        ok(
            "{{ .missing | default \"none\" }} {{ .a | default \"none\" }}",
            "none x",
        );
        ok(
            "{{ \"a b&c\" | urlencode }} {{ \"a+b%26c\" | urldecode }}",
            "a+b%26c a b&c",
        );
        ok(
            "{{ .s | b64enc }} {{ \"SGVsbG8=\" | b64dec }}",
            "SGVsbG8gV29ybGQ= Hello",
        );
        ok(
            "{{ \"1.5MB\" | bytes }} {{ \"1m30s\" | duration }}",
            "1.5e+06 90",
        );
        ok(
            "{{ Replace .s \"o\" \"0\" 1 }} {{ TrimPrefix .s \"Hello \" }} {{ trimAll \"Hd\" .s }}",
            "Hell0 World World ello Worl",
        );
        ok(
            "{{ contains \"World\" .s }} {{ hasPrefix \"x\" .a }} {{ len .s }}",
            "true true 11",
        );
        ok(
            "{{ and .a .missing }}|{{ or .missing .a }}|{{ not .a }}",
            "|x|false",
        );
        ok(
            "{{ index . \"a\" }} {{ lt .a \"y\" }} {{ ne 1 2 }}",
            "x true true",
        );
        ok("{{ (printf \"%s-%s\" .a .a) | upper }}", "X-X");
        ok("{{ print 1 2 \"a\" 3 }}", "1 2a3");
        ok("{{ 3.0 }} {{ 1e21 }} {{ 0.00001 }}", "3 1e+21 1e-05");
    }

    #[test]
    fn errors_at_render_and_parse() {
        let l = &[("a", "x"), ("n", "42")];
        for t in [
            "{{ eq .n 42 }}",
            "{{ upper 3 }}",
            "{{ .a.b }}",
            "{{ div 1 0 }}",
            "{{ repeat 100000 \"xx\" }}",
            "{{ index .a 5 }}",
            "{{ $y = 1 }}",
            "{{ .a 1 }}",
            "{{ (print .a).b }}",
        ] {
            assert!(run(t, l).is_err(), "{t} renders");
        }
        for t in [
            "{{ .a } ",
            "{{",
            "{{ nope }}",
            "{{ now }}",
            "{{ if .a }}x",
            "{{ end }}",
            "{{ .a | }}",
            "{{ define \"x\" }}{{ end }}",
            "{{ (.a }}",
            "{{ \"x }}",
            "{{ 1x }}",
        ] {
            assert!(Template::parse(t).is_err(), "{t} parses");
        }
        let deep = format!("{{{{ {}1{} }}}}", "(".repeat(100), ")".repeat(100));
        assert!(Template::parse(&deep).is_err());
    }
}
