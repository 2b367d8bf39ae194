//! One line of `ovs-ofctl dump-flows` output: a reply header or a flow.
//!
//! The grammar, as OVS 3.x prints it (OpenFlow 1.0 through 1.5, with or without `--no-stats`):
//!
//! ```text
//! NXST_FLOW reply (xid=0x4): flags=[more]                 <- header, repeats every ~1000 flows
//! OFPST_FLOW reply (OF1.3) (xid=0x2):
//!  cookie=0x1, duration=0.1s, table=40, n_packets=0, n_bytes=0, idle_timeout=300,
//!  hard_timeout=600, send_flow_rem reset_counts importance=7, idle_age=0, hard_age=1,
//!  priority=100,in_port=2 actions=output:1                <- one line in reality
//! ```
//!
//! The info items are `key=value, ` pairs, the flags bare words followed by a single space, the
//! match one word (`priority=N,` first unless it is 32768, then fields and protocol shorthands
//! separated by commas) and the actions everything after ` actions=`. Every info item is
//! optional (`--no-stats` drops the counters, `table=0` and `cookie=0x0`). The parser borrows
//! from the line and allocates nothing; match fields and actions are iterated lazily (their
//! syntax is validated here, once, so that iteration cannot fail).

use super::actions::{validate_actions, ActionIter};

/// The priority OVS omits from its output.
pub const DEFAULT_PRIORITY: u16 = 32768;

/// Why a line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no ` actions=` in the line")]
    NoActions,
    #[error("empty actions")]
    EmptyActions,
    #[error("unbalanced parentheses in the actions")]
    Unbalanced,
    #[error("actions nested more than {0} parentheses deep")]
    TooDeep(usize),
    #[error("empty action between commas")]
    EmptyAction,
    #[error("unknown info field {0:?}")]
    UnknownField(String),
    #[error("invalid value {value:?} for {field}")]
    BadValue { field: &'static str, value: String },
    #[error("info field {0:?} lacks its trailing comma")]
    MissingComma(String),
    #[error("malformed match {0:?}")]
    BadMatch(String),
    #[error("unexpected line: {0:?}")]
    Unexpected(String),
}

/// A table as printed: a number, or a name when the bridge's Flow_Table has one and the dump
/// was made with `--names`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table<'a> {
    Id(u8),
    Name(&'a str),
}

impl std::fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Table::Id(n) => write!(f, "{n}"),
            Table::Name(s) => f.write_str(s),
        }
    }
}

/// Flow flags (OpenFlow `OFPFF_*`), printed as bare words.
pub mod flags {
    pub const SEND_FLOW_REM: u8 = 1;
    pub const CHECK_OVERLAP: u8 = 2;
    pub const RESET_COUNTS: u8 = 4;
    pub const NO_PACKET_COUNTS: u8 = 8;
    pub const NO_BYTE_COUNTS: u8 = 16;

    /// The bit of a flag word, if it is one.
    pub fn from_word(w: &str) -> Option<u8> {
        Some(match w {
            "send_flow_rem" => SEND_FLOW_REM,
            "check_overlap" => CHECK_OVERLAP,
            "reset_counts" => RESET_COUNTS,
            "no_packet_counts" => NO_PACKET_COUNTS,
            "no_byte_counts" => NO_BYTE_COUNTS,
            _ => return None,
        })
    }
}

/// A reply header line (`NXST_FLOW reply (xid=0x4): flags=[more]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// `OF1.3` and the like; None for the Nicira (OpenFlow 1.0) reply.
    pub version: Option<&'a str>,
    /// Whether more replies follow.
    pub more: bool,
}

/// One flow, borrowing from its line.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow<'a> {
    pub cookie: u64,
    /// Seconds since the flow was added (absent with `--no-stats`).
    pub duration: Option<f64>,
    pub table: Table<'a>,
    pub n_packets: Option<u64>,
    pub n_bytes: Option<u64>,
    /// 0 when none.
    pub idle_timeout: u32,
    /// 0 when none.
    pub hard_timeout: u32,
    /// Bits of [`flags`].
    pub flags: u8,
    pub importance: u16,
    pub idle_age: Option<u64>,
    pub hard_age: Option<u64>,
    /// 32768 when the line omits it.
    pub priority: u16,
    /// The match without `priority=N`: comma-separated fields and shorthands (may be empty).
    pub match_text: &'a str,
    /// The actions, after `actions=`.
    pub actions_text: &'a str,
    /// The flow without its counters: from the match word (priority included) to the end.
    pub text: &'a str,
}

impl<'a> Flow<'a> {
    /// Match items: `(field, Some(value))` or `(shorthand, None)`.
    pub fn match_fields(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        split_match(self.match_text)
    }

    /// The top-level actions (parenthesis-aware).
    pub fn actions(&self) -> ActionIter<'a> {
        ActionIter::new(self.actions_text)
    }
}

/// Splits a match (without priority) into its items. A value in parentheses keeps its commas
/// (`packet_type=(1,0x800)`).
pub fn split_match(m: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    MatchItems {
        rest: Some(m),
        parens: super::find::find(b'(', m.as_bytes()).is_some(),
    }
    .filter(|s| !s.is_empty())
    .map(|item| match super::find::find(b'=', item.as_bytes()) {
        Some(i) => (&item[..i], Some(&item[i + 1..])),
        None => (item, None),
    })
}

/// Deepest parentheses in a match value (OVS prints one level: `packet_type=(1,0x800)`).
const MAX_MATCH_DEPTH: usize = 8;

/// The index just past the `)` closing the `(` at `b[open]`, or None when it is not closed
/// (or nested deeper than [`MAX_MATCH_DEPTH`]).
fn close_paren(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while let Some(off) = super::find::find2(b'(', b')', &b[i..]) {
        i += off;
        if b[i] == b'(' {
            depth += 1;
            if depth > MAX_MATCH_DEPTH {
                return None;
            }
        } else {
            depth -= 1;
            if depth == 0 {
                return Some(i + 1);
            }
        }
        i += 1;
    }
    None
}

/// The items of a match: split at commas, except inside parentheses (looked for only when the
/// match has any).
struct MatchItems<'a> {
    rest: Option<&'a str>,
    parens: bool,
}

impl<'a> Iterator for MatchItems<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let r = self.rest?;
        let b = r.as_bytes();
        let mut i = 0;
        let comma = loop {
            let found = if self.parens {
                super::find::find2(b',', b'(', &b[i..])
            } else {
                super::find::find(b',', &b[i..])
            };
            match found.map(|off| i + off) {
                Some(p) if b[p] == b'(' => match close_paren(b, p) {
                    Some(end) => i = end,
                    // Unbalanced (refused by `valid_match`): the rest is one item.
                    None => break None,
                },
                other => break other,
            }
        };
        match comma {
            Some(c) => {
                self.rest = Some(&r[c + 1..]);
                Some(&r[..c])
            }
            None => {
                self.rest = None;
                Some(r)
            }
        }
    }
}

/// Splits at an ASCII byte (memchr); cheaper than `str::split(char)` for the items of a flow.
#[derive(Debug, Clone)]
pub struct SplitBytes<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> SplitBytes<'a> {
    pub fn new(s: &'a str, sep: u8) -> Self {
        Self { rest: Some(s), sep }
    }
}

impl<'a> Iterator for SplitBytes<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let r = self.rest?;
        match super::find::find(self.sep, r.as_bytes()) {
            Some(i) => {
                // `sep` is ASCII, so both sides are on char boundaries.
                self.rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                self.rest = None;
                Some(r)
            }
        }
    }
}

/// A parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line<'a> {
    /// Blank line.
    Empty,
    Header(Header<'a>),
    Flow(Flow<'a>),
}

/// Parses one line of `ovs-ofctl dump-flows` output (trailing newline allowed).
pub fn parse_line(line: &str) -> Result<Line<'_>, ParseError> {
    let line = trim_newline(line);
    if is_blank(line) {
        return Ok(Line::Empty);
    }
    if !line.starts_with(' ') {
        if let Some(h) = parse_header(line) {
            return Ok(Line::Header(h));
        }
    }
    parse_flow(line).map(Line::Flow)
}

/// `line` without its trailing `\n`s and `\r`s (as `trim_end_matches(['\n', '\r'])`, without
/// the generic pattern machinery).
fn trim_newline(line: &str) -> &str {
    let b = line.as_bytes();
    let mut end = b.len();
    while end > 0 && matches!(b[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    // Both are ASCII, so `end` is on a char boundary.
    &line[..end]
}

/// `s.trim_end()`, with ASCII whitespace removed byte by byte (std's Unicode-aware `trim_end`
/// only when a non-ASCII char is left at the end).
fn trim_end(s: &str) -> &str {
    let b = s.as_bytes();
    let mut end = b.len();
    while end > 0 && matches!(b[end - 1], b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r') {
        end -= 1;
    }
    // Only ASCII bytes were removed, so `end` is on a char boundary.
    match end.checked_sub(1).map(|i| b[i]) {
        Some(c) if !c.is_ascii() => s[..end].trim_end(),
        _ => &s[..end],
    }
}

/// Whether `line` is only whitespace (as `line.trim().is_empty()`): decided by the first byte
/// that is not ASCII whitespace, unless that byte starts a non-ASCII char (Unicode whitespace
/// is possible then, and `trim` decides).
fn is_blank(line: &str) -> bool {
    // ASCII bytes `char::is_whitespace` accepts (`u8::is_ascii_whitespace` lacks \x0B).
    let first = line
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r'));
    match first {
        None => true,
        Some(b) if b.is_ascii() => false,
        Some(_) => line.trim().is_empty(),
    }
}

fn parse_header(line: &str) -> Option<Header<'_>> {
    let rest = line
        .strip_prefix("NXST_FLOW reply ")
        .or_else(|| line.strip_prefix("OFPST_FLOW reply "))?;
    let (version, rest) = match rest.strip_prefix('(') {
        Some(r) if r.starts_with("OF") => {
            let end = r.find(')')?;
            (Some(&r[..end]), r[end + 1..].trim_start())
        }
        _ => (None, rest),
    };
    let rest = rest.strip_prefix("(xid=")?;
    let end = rest.find("):")?;
    let xid = &rest[..end];
    if !xid.starts_with("0x") || u32::from_str_radix(&xid[2..], 16).is_err() {
        return None;
    }
    let tail = rest[end + 2..].trim();
    let more = match tail {
        "" => false,
        "flags=[more]" => true,
        _ => return None,
    };
    Some(Header { version, more })
}

/// The spaces before ` actions=`, found on the way there and kept for the split of the head
/// into words (a dump line has a handful; more than fit make the split search again).
struct Spaces {
    at: [usize; 24],
    n: usize,
    overflow: bool,
}

impl Spaces {
    fn push(&mut self, i: usize) {
        match self.at.get_mut(self.n) {
            Some(slot) => {
                *slot = i;
                self.n += 1;
            }
            None => self.overflow = true,
        }
    }
}

/// Finds the first ` actions=` (or `actions=` at the start), the boundary between match and
/// actions, by visiting the line's spaces (few: the info items' and the match's) rather than
/// searching for the whole word; records the spaces it passes in `spaces`.
fn find_actions(line: &str, spaces: &mut Spaces) -> Option<usize> {
    if line.starts_with("actions=") {
        return Some(0);
    }
    let b = line.as_bytes();
    for i in memchr::memchr_iter(b' ', b) {
        if b[i + 1..].starts_with(b"actions=") {
            return Some(i + 1);
        }
        spaces.push(i);
    }
    None
}

impl<'a> Flow<'a> {
    /// A flow with these actions and nothing else known yet (the default priority).
    #[inline]
    fn with_actions(actions_text: &'a str) -> Self {
        Flow {
            cookie: 0,
            duration: None,
            table: Table::Id(0),
            n_packets: None,
            n_bytes: None,
            idle_timeout: 0,
            hard_timeout: 0,
            flags: 0,
            importance: 0,
            idle_age: None,
            hard_age: None,
            priority: DEFAULT_PRIORITY,
            match_text: "",
            actions_text,
            text: "",
        }
    }
}

/// Parses a flow line (leading spaces allowed).
pub fn parse_flow(line: &str) -> Result<Flow<'_>, ParseError> {
    let line = line.trim_start_matches(' ');
    let mut spaces = Spaces {
        at: [0; 24],
        n: 0,
        overflow: false,
    };
    let at = find_actions(line, &mut spaces).ok_or(ParseError::NoActions)?;
    let actions_text = &line[at + "actions=".len()..];
    let actions_text = trim_end(actions_text);
    if actions_text.is_empty() {
        return Err(ParseError::EmptyActions);
    }
    validate_actions(actions_text)?;
    let head = trim_end(&line[..at]);

    let mut flow = Flow::with_actions(actions_text);

    let mut match_word: Option<&str> = None;
    // Words are separated by one or more spaces; `head` has none at either end, so the word
    // that ends at its end is the last one. The spaces inside `head` are those `find_actions`
    // recorded below its length (unless there were too many to record: then search again).
    let mut recorded = spaces.at[..spaces.n]
        .iter()
        .copied()
        .take_while(|&i| i < head.len());
    let mut searched = spaces
        .overflow
        .then(|| memchr::memchr_iter(b' ', head.as_bytes()));
    let mut next_space = || match searched.as_mut() {
        Some(it) => it.next(),
        None => recorded.next(),
    };
    let mut start = 0;
    while start < head.len() {
        let end = next_space().unwrap_or(head.len());
        let word = &head[start..end];
        start = end + 1;
        if word.is_empty() {
            continue;
        }
        let last = end == head.len();
        if let Some(item) = word.strip_suffix(',') {
            info_item(&mut flow, item)?;
        } else if let Some(bit) = flags::from_word(word) {
            flow.flags |= bit;
        } else if last {
            match_word = Some(word);
        } else if word.contains('=') {
            return Err(ParseError::MissingComma(word.to_string()));
        } else {
            return Err(ParseError::UnknownField(word.to_string()));
        }
    }

    // The text without counters starts at the match word (or at `actions=` when there is none).
    let text_start = match match_word {
        // The match word is a subslice of `line`.
        Some(w) => w.as_ptr() as usize - line.as_ptr() as usize,
        None => at,
    };
    // The line ends where its (trimmed, non-empty) actions end.
    flow.text = &line[text_start..at + "actions=".len() + actions_text.len()];
    if let Some(m) = match_word {
        set_match(&mut flow, m)?;
    }
    Ok(flow)
}

/// Sets the priority and match of `flow` from its match word (`priority=N,MATCH`, or the
/// match alone: the default priority).
#[inline]
fn set_match<'a>(flow: &mut Flow<'a>, m: &'a str) -> Result<(), ParseError> {
    let rest = match m.strip_prefix("priority=") {
        Some(r) => {
            let (p, rest) = match super::find::find(b',', r.as_bytes()) {
                Some(i) => (&r[..i], &r[i + 1..]),
                None => (r, ""),
            };
            flow.priority = parse_dec(p)
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| bad("priority", p))?;
            rest
        }
        None => m,
    };
    if !valid_match(rest) {
        return Err(ParseError::BadMatch(m.to_string()));
    }
    flow.match_text = rest;
    Ok(())
}

/// Bytes allowed in a match key: `[A-Za-z0-9_.]`.
static KEY_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'.';
        b += 1;
    }
    t
};

/// Checks a match (without priority): items separated by single commas, each a key of
/// `[A-Za-z0-9_.]` optionally followed by `=` and a non-empty value not starting with `=`,
/// whose parentheses (if any) are balanced, at most [`MAX_MATCH_DEPTH`] deep, and may hold
/// commas.
fn valid_match(m: &str) -> bool {
    // Empty (only priority) is fine; a trailing comma or `key=` is not.
    if m.is_empty() {
        return true;
    }
    // One pass: each key byte is looked at once, each value skipped with one search.
    let b = m.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && KEY_BYTE[usize::from(b[i])] {
            i += 1;
        }
        if i == start {
            // An empty item, or one that does not start with a key byte.
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b',' => {}
            b'=' => {
                i += 1;
                // A value: not empty, not starting with `=`, up to the next comma.
                if i == b.len() || b[i] == b',' || b[i] == b'=' {
                    return false;
                }
                // Up to the next comma outside parentheses.
                loop {
                    match super::find::find2(b',', b'(', &b[i..]) {
                        Some(off) if b[i + off] == b'(' => match close_paren(b, i + off) {
                            Some(end) => i = end,
                            None => return false,
                        },
                        Some(off) => {
                            i += off;
                            break;
                        }
                        None => return true,
                    }
                }
            }
            _ => return false,
        }
        // `b[i]` is the comma before the next item.
        i += 1;
    }
}

/// [`valid_match`] as it was first written (item by item), to test the one-pass version.
#[cfg(test)]
fn valid_match_by_items(m: &str) -> bool {
    if m.is_empty() {
        return true;
    }
    m.split(',').all(|item| {
        let key = item.bytes().position(|b| !KEY_BYTE[usize::from(b)]);
        let b = item.as_bytes();
        match key {
            Some(0) => false,
            None => !item.is_empty(),
            Some(k) => b[k] == b'=' && b.len() > k + 1 && b[k + 1] != b'=',
        }
    })
}

/// A decimal number of at most 19 digits (no sign), without the generic `parse` machinery.
fn parse_dec(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &b in s.as_bytes() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    Some(n)
}

/// 1 to 16 hex digits (no sign, no prefix), without the generic `from_str_radix`.
fn parse_hex(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut n = 0u64;
    for &b in s.as_bytes() {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        n = n << 4 | u64::from(d);
    }
    Some(n)
}

/// `[SECONDS][.FRACTION]` as printed by OVS (`0.156`, `90955.123`), as the nearest f64: the
/// digits as an integer divided by a power of ten is one correctly rounded operation, the same
/// result as `str::parse` while both are exact (up to 15 digits); longer ones go to `parse`.
fn parse_duration(secs: &str) -> Option<f64> {
    let (int, frac) = match super::find::find(b'.', secs.as_bytes()) {
        Some(i) => (&secs[..i], &secs[i + 1..]),
        None => (secs, ""),
    };
    if int.len() + frac.len() == 0 || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    if int.len() + frac.len() <= 15 {
        const POW10: [f64; 16] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
        ];
        let mut n = 0u64;
        for b in int.bytes().chain(frac.bytes()) {
            n = n * 10 + u64::from(b - b'0');
        }
        return Some(n as f64 / POW10[frac.len()]);
    }
    secs.parse().ok()
}

fn bad(field: &'static str, value: &str) -> ParseError {
    ParseError::BadValue {
        field,
        value: value.chars().take(64).collect(),
    }
}

fn parse_u64(field: &'static str, v: &str) -> Result<u64, ParseError> {
    match parse_dec(v) {
        Some(n) => Ok(n),
        // 20 digits may still fit (up to u64::MAX).
        None => v.parse().map_err(|_| bad(field, v)),
    }
}

fn info_item<'a>(flow: &mut Flow<'a>, item: &'a str) -> Result<(), ParseError> {
    let eq = item
        .bytes()
        .position(|b| b == b'=')
        .ok_or_else(|| ParseError::UnknownField(item.to_string()))?;
    let (k, v) = (&item[..eq], &item[eq + 1..]);
    // Byte-string patterns compile to inline compares (no memcmp call per key).
    match k.as_bytes() {
        b"cookie" => {
            let hex = v.strip_prefix("0x").ok_or_else(|| bad("cookie", v))?;
            flow.cookie = match parse_hex(hex) {
                Some(n) => n,
                // Anything else (a `+` sign, leading zeros beyond 16 digits) as std has it.
                None => u64::from_str_radix(hex, 16).map_err(|_| bad("cookie", v))?,
            };
        }
        b"duration" => {
            let secs = v.strip_suffix('s').ok_or_else(|| bad("duration", v))?;
            let d = parse_duration(secs).ok_or_else(|| bad("duration", v))?;
            if !d.is_finite() || d < 0.0 {
                return Err(bad("duration", v));
            }
            flow.duration = Some(d);
        }
        b"table" => {
            if v.is_empty() {
                return Err(bad("table", v));
            }
            flow.table = if v.bytes().all(|b| b.is_ascii_digit()) {
                // std's parse when the fast one fails (more than 19 digits: leading zeros).
                // All digits: the value saturates at 256 (not a table), leading zeros and all.
                let n = v
                    .bytes()
                    .fold(0u32, |n, b| (n * 10 + u32::from(b - b'0')).min(256));
                Table::Id(u8::try_from(n).map_err(|_| bad("table", v))?)
            } else {
                Table::Name(v)
            };
        }
        b"n_packets" => flow.n_packets = Some(parse_u64("n_packets", v)?),
        b"n_bytes" => flow.n_bytes = Some(parse_u64("n_bytes", v)?),
        b"idle_timeout" => flow.idle_timeout = v.parse().map_err(|_| bad("idle_timeout", v))?,
        b"hard_timeout" => flow.hard_timeout = v.parse().map_err(|_| bad("hard_timeout", v))?,
        b"importance" => flow.importance = v.parse().map_err(|_| bad("importance", v))?,
        b"idle_age" => flow.idle_age = Some(parse_u64("idle_age", v)?),
        b"hard_age" => flow.hard_age = Some(parse_u64("hard_age", v)?),
        _ => return Err(ParseError::UnknownField(k.chars().take(64).collect())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(line: &str) -> Flow<'_> {
        match parse_line(line) {
            Ok(Line::Flow(f)) => f,
            other => panic!("{line:?} -> {other:?}"),
        }
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_line("NXST_FLOW reply (xid=0x4): flags=[more]\n"),
            Ok(Line::Header(Header {
                version: None,
                more: true
            }))
        );
        assert_eq!(
            parse_line("OFPST_FLOW reply (OF1.3) (xid=0x2):"),
            Ok(Line::Header(Header {
                version: Some("OF1.3"),
                more: false
            }))
        );
        assert!(parse_line("OFPT_ERROR (xid=0x34): OFPBAC_BAD_OUT_GROUP").is_err());
        assert!(parse_line("NXST_FLOW reply (xid=zz):").is_err());
        assert_eq!(parse_line("  \n"), Ok(Line::Empty));
    }

    #[test]
    fn many_spaces_in_the_head() {
        // More spaces than `find_actions` records: the head is searched again.
        for n in [1, 23, 24, 25, 60] {
            let pad = " ".repeat(n);
            let line = format!(
                " cookie=0x5,{pad}table=3,{pad}reset_counts{pad}priority=7,ip{pad}actions=drop"
            );
            let f = flow(&line);
            assert_eq!((f.cookie, f.table, f.priority), (5, Table::Id(3), 7), "{n}");
            assert_eq!((f.flags, f.match_text), (flags::RESET_COUNTS, "ip"), "{n}");
            assert_eq!(f.text, "priority=7,ip".to_string() + &pad + "actions=drop");
        }
    }

    #[test]
    fn one_pass_match_check_agrees_with_items() {
        // Every string of up to 7 bytes over the bytes that matter.
        let alphabet = [b'a', b',', b'=', b'/', b'.'];
        let mut checked = 0;
        for len in 0..=7u32 {
            for code in 0..5usize.pow(len) {
                let mut c = code;
                let s: String = (0..len)
                    .map(|_| {
                        let b = alphabet[c % 5];
                        c /= 5;
                        char::from(b)
                    })
                    .collect();
                assert_eq!(valid_match(&s), valid_match_by_items(&s), "{s:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 97656);
        for m in [
            "in_port=1,dl_dst=fa:16:3e:00:00:01",
            "ip,nw_src=10.0.0.0/8",
            "ct_state=+trk-est",
        ] {
            assert!(valid_match(m), "{m}");
        }
    }

    #[test]
    fn parenthesised_match_values_keep_their_commas() {
        // As ovs-ofctl 3.1 prints an L3 packet_type match (OpenFlow 1.5).
        let f = flow(" cookie=0x0, duration=0.029s, table=4, n_packets=0, n_bytes=0, idle_age=0, packet_type=(1,0x800) actions=drop");
        assert_eq!(f.match_text, "packet_type=(1,0x800)");
        assert_eq!(
            f.match_fields().collect::<Vec<_>>(),
            vec![("packet_type", Some("(1,0x800)"))]
        );
        let f = flow(" priority=5,packet_type=(1,0x894f),nsh_mdtype=1,a=(b,(c,d)),ip actions=drop");
        assert_eq!(
            f.match_fields().collect::<Vec<_>>(),
            vec![
                ("packet_type", Some("(1,0x894f)")),
                ("nsh_mdtype", Some("1")),
                ("a", Some("(b,(c,d))")),
                ("ip", None)
            ]
        );
        for bad in [
            "packet_type=(1,0x800",
            "packet_type=(1,0x800,ip",
            "a=((((((((((1))))))))))",
            "packet_type=(1,0x800),",
            "(1,2)",
        ] {
            assert!(!valid_match(bad), "{bad}");
        }
        for good in [
            "packet_type=(1,0x800)",
            "a=x(1,2)y,b=1",
            "a=1)",
            "a=((((((((1))))))))",
        ] {
            assert!(valid_match(good), "{good}");
        }
        // Without parentheses the items are the comma-separated ones.
        for m in ["in_port=1,ip,nw_dst=10.0.0.1", "a=1", "", "a,b"] {
            let want: Vec<_> = m.split(',').filter(|s| !s.is_empty()).collect();
            let got: Vec<_> = MatchItems {
                rest: Some(m),
                parens: true,
            }
            .filter(|s| !s.is_empty())
            .collect();
            assert_eq!(got, want, "{m}");
        }
    }

    #[test]
    fn table_numbers() {
        for (v, want) in [
            ("0", Some(0)),
            ("255", Some(255)),
            ("007", Some(7)),
            ("0000000000000000000000001", Some(1)),
            ("256", None),
            ("99999999999999999999999", None),
        ] {
            let line = format!(" table={v}, priority=1 actions=drop");
            let got = parse_flow(&line).ok().map(|f| f.table);
            assert_eq!(got, want.map(Table::Id), "{v}");
        }
    }

    #[test]
    fn hex_agrees_with_std() {
        for h in [
            "0",
            "1",
            "a",
            "F",
            "ffffffffffffffff",
            "0000000000000001",
            "00000000000000001",
            "10000000000000000",
            "",
            "+1",
            "-1",
            "g",
            "1 ",
            "DeadBeef",
        ] {
            let fast = parse_hex(h).or_else(|| u64::from_str_radix(h, 16).ok());
            assert_eq!(fast, u64::from_str_radix(h, 16).ok(), "{h}");
        }
    }

    #[test]
    fn trims_agree_with_std() {
        for l in [
            "",
            " ",
            "\n",
            "\r\n",
            "a\n\r\n",
            " \t\x0B\x0C\r",
            "\u{3000}",
            " \u{a0} x",
            " \u{e9}",
            " \u{85}\n",
            "x",
            "\n\nx\r",
            " cookie=0x1, actions=drop\n",
        ] {
            assert_eq!(trim_newline(l), l.trim_end_matches(['\n', '\r']), "{l:?}");
            assert_eq!(is_blank(l), l.trim().is_empty(), "{l:?}");
            assert_eq!(trim_end(l), l.trim_end(), "{l:?}");
        }
    }

    #[test]
    fn full_flow() {
        let f = flow(" cookie=0x1, duration=0.156s, table=40, n_packets=3, n_bytes=180, idle_timeout=300, hard_timeout=600, send_flow_rem reset_counts importance=7, idle_age=0, hard_age=2, priority=100,in_port=2 actions=output:1");
        assert_eq!(f.cookie, 1);
        assert_eq!(f.duration, Some(0.156));
        assert_eq!(f.table, Table::Id(40));
        assert_eq!((f.n_packets, f.n_bytes), (Some(3), Some(180)));
        assert_eq!((f.idle_timeout, f.hard_timeout), (300, 600));
        assert_eq!(f.flags, flags::SEND_FLOW_REM | flags::RESET_COUNTS);
        assert_eq!(f.importance, 7);
        assert_eq!((f.idle_age, f.hard_age), (Some(0), Some(2)));
        assert_eq!(f.priority, 100);
        assert_eq!(f.match_text, "in_port=2");
        assert_eq!(f.actions_text, "output:1");
        assert_eq!(f.text, "priority=100,in_port=2 actions=output:1");
    }

    #[test]
    fn omitted_priority_and_match() {
        let f = flow(" cookie=0x0, duration=0.161s, table=40, n_packets=0, n_bytes=0, idle_age=0, in_port=1 actions=output:2");
        assert_eq!(f.priority, DEFAULT_PRIORITY);
        assert_eq!(f.match_text, "in_port=1");
        let f = flow(" cookie=0x0, duration=1.5s, table=1, n_packets=0, n_bytes=0, reset_counts actions=drop");
        assert_eq!(f.priority, DEFAULT_PRIORITY);
        assert_eq!(f.match_text, "");
        assert_eq!(f.flags, flags::RESET_COUNTS);
        assert_eq!(f.text, "actions=drop");
        let f = flow(" priority=0 actions=NORMAL");
        assert_eq!((f.priority, f.match_text, f.table), (0, "", Table::Id(0)));
        let f = flow(" actions=NORMAL");
        assert_eq!(f.priority, DEFAULT_PRIORITY);
    }

    #[test]
    fn table_names_and_shorthands() {
        let f = flow(" cookie=0x0, duration=0.211s, table=acl, n_packets=0, n_bytes=0, priority=1,ip,in_port=tap1 actions=output:tap2");
        assert_eq!(f.table, Table::Name("acl"));
        let items: Vec<_> = f.match_fields().collect();
        assert_eq!(items, vec![("ip", None), ("in_port", Some("tap1"))]);
    }

    #[test]
    fn numbers_agree_with_std_parse() {
        for d in [
            "0",
            "0.156",
            "90.955",
            "1.",
            ".5",
            "123456.789",
            "4294967296.001",
            "999999999999999",
            "0.000000000000001",
            "12345678901234567.5",
        ] {
            assert_eq!(parse_duration(d), d.parse::<f64>().ok(), "{d}");
        }
        for d in ["", ".", "1.2.3", "-1", "1e5", "nan", "inf", "+1"] {
            assert_eq!(parse_duration(d), None, "{d}");
        }
        for n in [
            "0",
            "65535",
            "18446744073709551615",
            "18446744073709551616",
            "",
            "1a",
        ] {
            assert_eq!(parse_u64("n", n).ok(), n.parse::<u64>().ok(), "{n}");
        }
    }

    #[test]
    fn malformed() {
        for bad in [
            " cookie=0x0, duration=0.1s, table=0 priority=1 actions=drop",
            " cookie=zz, priority=1 actions=drop",
            " cookie=0x0, duration=abc, priority=1 actions=drop",
            " cookie=0x0, duration=1s, table=300, priority=1 actions=drop",
            " cookie=0x0, bogus=1, priority=1 actions=drop",
            " priority=1,in_port=1 actions=",
            " priority=1,in_port=1 actions=output:1,,drop",
            " priority=1,in_port=1 actions=learn(a,b",
            " priority=1,in_port=1 actions=a)b(",
            " priority=99999 actions=drop",
            " priority=1,,ip actions=drop",
            " priority=1,ip, actions=drop",
            " priority=1,in_port= actions=drop",
            " priority=1 in_port=1 actions=drop",
            "garbage",
            "",
        ] {
            let r = parse_line(bad);
            assert!(
                r.is_err() || matches!(r, Ok(Line::Empty)) && bad.is_empty(),
                "{bad:?} -> {r:?}"
            );
        }
    }
}
