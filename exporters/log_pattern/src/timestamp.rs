//! Application timestamps in log lines: where a glob source's lines carry their time and in
//! which format (`timestamp:` of a source in the configuration file), for the event lag.
//!
//! A [`TimestampFormat`] is compiled once from the configuration into a list of tokens; parsing
//! a line walks them over the bytes without allocating. Calendar math is the `time` crate's.
//! Formats without a UTC offset read the stamp in the configured `timezone` ([`Zone`]: a fixed
//! offset, UTC by default, or a zone of the tz database with its daylight saving time);
//! formats without a year (syslog RFC 3164, layouts without one) take the year that puts the
//! stamp closest to the read time, at most a day in the future.

use regex::Regex;
use serde::Deserialize;

/// Days from the Julian day epoch to 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// A timestamp in a source's configuration: where it is and how it is written.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawTimestamp")]
pub struct TimestampConfig {
    locate: Locate,
    format: TimestampFormat,
    /// The zone of stamps that carry no offset.
    zone: Zone,
}

/// The configuration's spelling of [`TimestampConfig`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimestamp {
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    field: Option<String>,
    format: String,
    #[serde(default)]
    timezone: Option<String>,
}

impl TryFrom<RawTimestamp> for TimestampConfig {
    type Error = String;
    fn try_from(raw: RawTimestamp) -> Result<Self, String> {
        let format = TimestampFormat::parse(&raw.format)?;
        let locate = match (raw.regex, raw.field) {
            (Some(_), Some(_)) => {
                return Err("timestamp: give either `regex` or `field`, not both".into())
            }
            (Some(re), None) => {
                let re = Regex::new(&re).map_err(|e| format!("timestamp: regex: {e}"))?;
                if re.captures_len() != 2 {
                    return Err(format!(
                        "timestamp: regex {:?} must have exactly one capture group (it has {})",
                        re.as_str(),
                        re.captures_len() - 1
                    ));
                }
                Locate::Regex(re)
            }
            (None, Some(f)) => {
                if f.is_empty() || f.contains(['"', '=', ' ', '\t']) {
                    return Err(format!("timestamp: field {f:?} is not a field name"));
                }
                Locate::Field {
                    json: format!("\"{f}\""),
                    logfmt: format!("{f}="),
                }
            }
            (None, None) => Locate::Start,
        };
        if matches!(format, TimestampFormat::Ltsv) && !matches!(locate, Locate::Start) {
            return Err(
                "timestamp: format ltsv reads the `time` key itself; drop regex/field".into(),
            );
        }
        let zone = match raw.timezone.as_deref() {
            None => Zone::Fixed(0),
            Some(tz) => Zone::parse(tz)?,
        };
        Ok(Self {
            locate,
            format,
            zone,
        })
    }
}

/// Where the stamp is in a line.
#[derive(Debug, Clone)]
enum Locate {
    /// At the start of the line.
    Start,
    /// The first capture group of a regex.
    Regex(Regex),
    /// A JSON key (`"name"`) or a logfmt key (`name=`).
    Field { json: String, logfmt: String },
}

impl TimestampConfig {
    /// The line's time, Unix seconds; `now` (Unix seconds) resolves stamps without a year.
    pub fn parse_at(&self, line: &[u8], now: f64) -> Option<f64> {
        let text = match &self.locate {
            Locate::Start => line,
            Locate::Regex(re) => {
                let s = std::str::from_utf8(line).ok()?;
                re.captures(s)?.get(1)?.as_str().as_bytes()
            }
            Locate::Field { json, logfmt } => field_value(line, json, logfmt)?,
        };
        self.format.parse_at(text, &self.zone, now)
    }
}

/// The value of a JSON key or logfmt key in `line` (quotes removed, no unescaping: stamps hold
/// no escapes).
fn field_value<'a>(line: &'a [u8], json: &str, logfmt: &str) -> Option<&'a [u8]> {
    let is_json = line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let rest = if is_json {
        // A key follows `{` or `,` (the same text inside a string value does not count).
        let mut from = 0;
        loop {
            let at = from + memchr::memmem::find(&line[from..], json.as_bytes())?;
            let before = line[..at].iter().rev().find(|b| !b.is_ascii_whitespace());
            let r = trim_start(&line[at + json.len()..]);
            if matches!(before, Some(b'{' | b',')) {
                if let Some(v) = r.strip_prefix(b":") {
                    break trim_start(v);
                }
            }
            from = at + 1;
        }
    } else {
        let mut from = 0;
        loop {
            let at = from + memchr::memmem::find(&line[from..], logfmt.as_bytes())?;
            if at == 0 || line[at - 1] == b' ' || line[at - 1] == b'\t' {
                break &line[at + logfmt.len()..];
            }
            from = at + 1;
        }
    };
    if let Some(q) = rest.strip_prefix(b"\"") {
        let end = memchr::memchr(b'"', q)?;
        Some(&q[..end])
    } else {
        let end = rest
            .iter()
            .position(|b| matches!(b, b' ' | b'\t' | b',' | b'}'))
            .unwrap_or(rest.len());
        Some(&rest[..end])
    }
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// The glob sources of the configuration, for the `source` label of the event lag and of
/// timestamp parse errors: a file belongs to the first source whose pattern matches its path.
#[derive(Debug, Clone, Default)]
pub struct Stamps(Vec<SourceStamp>);

/// One glob source.
#[derive(Debug, Clone)]
pub struct SourceStamp {
    /// The `source` label value: the source's path pattern as configured.
    pub name: String,
    pattern: crate::discovery::GlobPattern,
    /// The lines' own timestamp (none: only a container format's timestamp, CRI or Docker).
    pub config: Option<TimestampConfig>,
}

/// The `source` label value of the Kubernetes pod log tree.
pub const PODS: &str = "pods";

impl Stamps {
    pub fn new(sources: &[crate::config::SourceConfig]) -> Result<Self, String> {
        sources
            .iter()
            .map(|s| {
                Ok(SourceStamp {
                    name: s.path.clone(),
                    pattern: crate::discovery::GlobPattern::parse(&s.path)?,
                    config: s.timestamp.clone(),
                })
            })
            .collect::<Result<_, String>>()
            .map(Self)
    }

    /// The index of the source `path` belongs to (none: the pod tree, or no source). A rotated
    /// file (`app.log.1`, `app.log-20261206`, `app.log.1.gz`) belongs to the source of the
    /// name it was rotated from.
    pub fn find(&self, path: &std::path::Path) -> Option<usize> {
        if self.0.is_empty() {
            return None;
        }
        let mut path = std::borrow::Cow::Borrowed(path);
        for _ in 0..3 {
            if let Some(i) = self.0.iter().position(|s| s.pattern.matches(&path)) {
                return Some(i);
            }
            let name = path.file_name()?.to_str()?;
            let cut = name.rfind(['.', '-'])?;
            let suffix = &name[cut + 1..];
            let rotation = suffix == "gz"
                || (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit() || b == b'_'));
            if !rotation || cut == 0 {
                return None;
            }
            path = std::borrow::Cow::Owned(path.with_file_name(&name[..cut]));
        }
        None
    }

    pub fn get(&self, i: Option<usize>) -> Option<&SourceStamp> {
        self.0.get(i?)
    }

    /// Drops the saved lag and parse error series of sources no longer configured (restored
    /// from a state file written under another configuration), so that the `source` label
    /// keeps one value per configured source.
    pub fn retain_configured(&self, c: &mut crate::tail::counters::Counters) {
        c.source_lag
            .retain(|name, _| self.0.iter().any(|s| s.name == *name));
        c.timestamp_parse_errors
            .retain(|name, _| self.0.iter().any(|s| s.name == *name && s.config.is_some()));
    }
}

/// The zone a stamp without a UTC offset is written in.
#[derive(Debug, Clone)]
pub enum Zone {
    /// Seconds east of UTC.
    Fixed(i32),
    /// A zone of the tz database bundled in the binary (the same rules whether or not the
    /// host or container has `/usr/share/zoneinfo`), and the offset of the last local hour
    /// read in it.
    Named {
        tz: jiff::tz::TimeZone,
        last: HourOffset,
    },
}

impl Zone {
    /// `UTC`, a fixed offset (`Z`, `+02:00`, `-0530`, `+02`) or a zone name of the tz database
    /// (`Europe/Berlin`, any case).
    pub fn parse(tz: &str) -> Result<Self, String> {
        if matches!(tz, "UTC" | "Z" | "GMT" | "Etc/UTC") {
            return Ok(Self::Fixed(0));
        }
        if tz.starts_with(['+', '-']) {
            let mut p = Parser::new(tz.as_bytes());
            return match p.offset() {
                Some(off) if p.s.is_empty() => Ok(Self::Fixed(off)),
                _ => Err(format!(
                    "timestamp: timezone {tz:?} is not a UTC offset like \"+02:00\", \"-0530\" or \"+02\""
                )),
            };
        }
        match jiff::tz::TimeZoneDatabase::bundled().get(tz) {
            Ok(tz) if !tz.is_unknown() => Ok(Self::Named {
                tz,
                last: HourOffset::default(),
            }),
            _ => Err(format!(
                "timestamp: timezone {tz:?} is neither a UTC offset (\"+02:00\", \"UTC\") nor a zone of the tz database (\"Europe/Berlin\", \"America/New_York\")"
            )),
        }
    }

    /// Seconds east of UTC of the local time `local` (seconds from 1970-01-01 00:00 on the
    /// zone's clocks). A local time that the clocks skip (a gap: spring forward) or show twice
    /// (a fold: fall back) takes the offset in force before the transition, as RFC 5545 and
    /// jiff's "compatible" rule do: a time in a fold is the earlier of its two instants, a time
    /// in a gap is moved forward by the gap's length (02:30 in a one-hour gap is 03:30).
    fn offset(&self, local: i64) -> Option<i32> {
        match self {
            Self::Fixed(off) => Some(*off),
            Self::Named { tz, last } => {
                let hour = i32::try_from(local.div_euclid(3600)).ok()?;
                if let Some(off) = last.get(hour) {
                    return Some(off);
                }
                let (off, whole_hour) = offset_of_local(tz, local)?;
                if whole_hour {
                    last.set(hour, off);
                }
                Some(off)
            }
        }
    }
}

/// The offset of `local` in `tz` (see [`Zone::offset`]), and whether every second of its local
/// hour has that offset without ambiguity (no transition's gap or fold touches the hour).
fn offset_of_local(tz: &jiff::tz::TimeZone, local: i64) -> Option<(i32, bool)> {
    use jiff::tz::{AmbiguousOffset, Offset};
    use jiff::Timestamp;
    let dt = Offset::UTC.to_datetime(Timestamp::from_second(local).ok()?);
    let off = match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset,
        AmbiguousOffset::Gap { before, .. } | AmbiguousOffset::Fold { before, .. } => {
            return Some((before.seconds(), false))
        }
    };
    // The local times around `local` read unambiguously with `off`: from the previous
    // transition, past its gap or fold, to the next transition's gap or fold.
    let o = i64::from(off.seconds());
    let at = local - o;
    let from = match tz.preceding(Timestamp::from_second(at + 1).ok()?).next() {
        None => i64::MIN,
        Some(t) => {
            let p = t.timestamp().as_second();
            let before =
                Timestamp::from_second(p - 1).map_or(o, |b| i64::from(tz.to_offset(b).seconds()));
            p + o.max(before)
        }
    };
    let to = match tz.following(Timestamp::from_second(at).ok()?).next() {
        None => i64::MAX,
        Some(t) => t.timestamp().as_second() + o.min(i64::from(t.offset().seconds())),
    };
    let start = local.div_euclid(3600) * 3600;
    Some((off.seconds(), from <= start && start + 3600 <= to))
}

/// One local hour and its UTC offset, read and written by every thread tailing the source
/// as one atomic word (hour in the high half, offset in the low half), so the per-line
/// lookup is a load and a compare.
#[derive(Debug)]
pub struct HourOffset(std::sync::atomic::AtomicU64);

impl HourOffset {
    /// No hour: local hours of years 0-9999 are far from `i32::MIN`.
    const EMPTY: u64 = (i32::MIN as u32 as u64) << 32;

    fn get(&self, hour: i32) -> Option<i32> {
        let v = self.0.load(std::sync::atomic::Ordering::Relaxed);
        ((v >> 32) as u32 as i32 == hour).then_some(v as u32 as i32)
    }

    fn set(&self, hour: i32, offset: i32) {
        let v = (u64::from(hour as u32) << 32) | u64::from(offset as u32);
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Default for HourOffset {
    fn default() -> Self {
        Self(std::sync::atomic::AtomicU64::new(Self::EMPTY))
    }
}

impl Clone for HourOffset {
    fn clone(&self) -> Self {
        Self(std::sync::atomic::AtomicU64::new(
            self.0.load(std::sync::atomic::Ordering::Relaxed),
        ))
    }
}

/// How a stamp is written.
#[derive(Debug, Clone, PartialEq)]
pub enum TimestampFormat {
    /// Seconds (fraction allowed), milliseconds, microseconds or nanoseconds since 1970.
    Epoch(EpochUnit),
    /// An LTSV line (tab-separated `key:value`): the `time` key, in common log format (with or
    /// without brackets), RFC 3339 or epoch seconds.
    Ltsv,
    /// A token list: RFC 3339, common log, syslog, Go layouts and strftime patterns.
    Layout(Vec<Tok>),
}

/// The unit of an epoch stamp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EpochUnit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

/// One element of a layout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tok {
    Year4,
    /// Two digits: 69-99 are 19xx, the rest 20xx.
    Year2,
    Month,
    /// `Jan` or `January` (any case).
    MonthName,
    /// `Mon` or `Monday`: skipped.
    Weekday,
    /// One or two digits, a leading space allowed.
    Day,
    Hour24,
    Hour12,
    Minute,
    Second,
    /// Digits of a fraction of a second (the separator is a literal before it).
    Frac,
    /// A separator (`.` or `,`) and fraction digits, or nothing.
    OptFrac,
    AmPm,
    /// `Z`, `+hh`, `+hhmm`, `+hh:mm`.
    Offset,
    /// Like [`Tok::Offset`], or nothing.
    OptOffset,
    /// A zone abbreviation (`UTC`, `GMT` and `Z` are offset 0; others are skipped).
    ZoneName,
    /// `T`, `t` or a space between date and time.
    DateTimeSep,
    /// Epoch seconds (`%s`).
    EpochSeconds,
    /// A syslog priority `<n>`, or nothing.
    OptPri,
    /// One or more spaces or tabs.
    Space,
    Lit(u8),
    OptLit(u8),
}

const RFC3339: &[Tok] = &[
    Tok::Year4,
    Tok::Lit(b'-'),
    Tok::Month,
    Tok::Lit(b'-'),
    Tok::Day,
    Tok::DateTimeSep,
    Tok::Hour24,
    Tok::Lit(b':'),
    Tok::Minute,
    Tok::Lit(b':'),
    Tok::Second,
    Tok::OptFrac,
    Tok::OptOffset,
];

const COMMON_LOG: &[Tok] = &[
    Tok::OptLit(b'['),
    Tok::Day,
    Tok::Lit(b'/'),
    Tok::MonthName,
    Tok::Lit(b'/'),
    Tok::Year4,
    Tok::Lit(b':'),
    Tok::Hour24,
    Tok::Lit(b':'),
    Tok::Minute,
    Tok::Lit(b':'),
    Tok::Second,
    Tok::Space,
    Tok::Offset,
];

const RFC3164: &[Tok] = &[
    Tok::OptPri,
    Tok::MonthName,
    Tok::Space,
    Tok::Day,
    Tok::Space,
    Tok::Hour24,
    Tok::Lit(b':'),
    Tok::Minute,
    Tok::Lit(b':'),
    Tok::Second,
];

impl TimestampFormat {
    /// Compiles a format name, a strftime pattern (with `%`) or a Go reference layout.
    pub fn parse(s: &str) -> Result<Self, String> {
        let toks = match s {
            "rfc3339" | "iso8601" => RFC3339.to_vec(),
            "rfc5424" => {
                let mut t = vec![Tok::OptPri, Tok::Lit(b'1'), Tok::Space];
                t.extend_from_slice(&RFC3339[..RFC3339.len() - 1]);
                t.push(Tok::Offset);
                t
            }
            "rfc3164" => RFC3164.to_vec(),
            "common_log" => COMMON_LOG.to_vec(),
            "unix" => return Ok(Self::Epoch(EpochUnit::Seconds)),
            "unix_ms" => return Ok(Self::Epoch(EpochUnit::Millis)),
            "unix_us" => return Ok(Self::Epoch(EpochUnit::Micros)),
            "unix_ns" => return Ok(Self::Epoch(EpochUnit::Nanos)),
            "ltsv" => return Ok(Self::Ltsv),
            _ if s.contains('%') => strftime(s)?,
            _ if s.contains("2006") || s.contains("15:04") || s.contains("Jan") => go_layout(s)?,
            _ => {
                return Err(format!(
                    "timestamp: format {s:?} is not one of rfc3339, iso8601, rfc5424, rfc3164, common_log, unix, unix_ms, unix_us, unix_ns, ltsv, a strftime pattern (%Y-%m-%d ...) or a Go layout (2006-01-02 15:04:05 ...)"
                ))
            }
        };
        check_layout(s, &toks)?;
        Ok(Self::Layout(toks))
    }

    /// The stamp at the start of `text`, Unix seconds; stamps without an offset are read in
    /// `zone`, stamps without a year resolved against `now`.
    pub fn parse_at(&self, text: &[u8], zone: &Zone, now: f64) -> Option<f64> {
        match self {
            Self::Epoch(unit) => epoch(&mut Parser::new(text), *unit),
            Self::Ltsv => ltsv(text, zone, now),
            Self::Layout(toks) => {
                let f = Parser::new(text).run(toks)?;
                f.unix(zone, now)
            }
        }
    }
}

/// A layout must say at least month, day and hour, or be an epoch.
fn check_layout(s: &str, toks: &[Tok]) -> Result<(), String> {
    if toks.contains(&Tok::EpochSeconds) {
        return Ok(());
    }
    let has = |t: &[Tok]| toks.iter().any(|x| t.contains(x));
    if !has(&[Tok::Month, Tok::MonthName]) || !has(&[Tok::Day]) || !has(&[Tok::Hour24, Tok::Hour12])
    {
        return Err(format!(
            "timestamp: format {s:?} needs at least a month, a day and an hour"
        ));
    }
    if has(&[Tok::Hour12]) != has(&[Tok::AmPm]) {
        return Err(format!(
            "timestamp: format {s:?}: a 12-hour clock needs AM/PM and AM/PM a 12-hour clock"
        ));
    }
    Ok(())
}

fn lits(out: &mut Vec<Tok>, s: &str) {
    for b in s.bytes() {
        out.push(if b == b' ' { Tok::Space } else { Tok::Lit(b) });
    }
}

/// Compiles a strftime pattern (C, Perl `POSIX::strftime`, Python `datetime.strptime`).
fn strftime(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            let mut buf = [0; 4];
            lits(&mut out, c.encode_utf8(&mut buf));
            continue;
        }
        let d = chars.next();
        match d {
            Some('Y') => out.push(Tok::Year4),
            Some('y') => out.push(Tok::Year2),
            Some('m') => out.push(Tok::Month),
            Some('b' | 'h' | 'B') => out.push(Tok::MonthName),
            Some('a' | 'A') => out.push(Tok::Weekday),
            Some('d' | 'e') => out.push(Tok::Day),
            Some('H' | 'k') => out.push(Tok::Hour24),
            Some('I' | 'l') => out.push(Tok::Hour12),
            Some('M') => out.push(Tok::Minute),
            Some('S') => out.push(Tok::Second),
            Some('f' | 'L' | 'N') => out.push(Tok::Frac),
            Some('p' | 'P') => out.push(Tok::AmPm),
            Some('z') => out.push(Tok::Offset),
            Some('Z') => out.push(Tok::ZoneName),
            Some('s') => out.push(Tok::EpochSeconds),
            Some('T') => out.extend(strftime("%H:%M:%S")?),
            Some('F') => out.extend(strftime("%Y-%m-%d")?),
            Some('D') => out.extend(strftime("%m/%d/%y")?),
            Some('%') => out.push(Tok::Lit(b'%')),
            Some('t' | 'n') => out.push(Tok::Space),
            Some(other) => {
                return Err(format!(
                    "timestamp: format {s:?}: %{other} is not supported (supported: %Y %y %m %b %B %h %a %A %d %e %H %k %I %l %M %S %f %L %N %p %z %Z %s %T %F %D %%)"
                ))
            }
            None => return Err(format!("timestamp: format {s:?} ends with a lone %")),
        }
    }
    Ok(out)
}

/// Compiles a Go reference layout (`Mon Jan 2 15:04:05 MST 2006`).
fn go_layout(s: &str) -> Result<Vec<Tok>, String> {
    // Longest chunks first, as Go's own layout scanner tries them.
    const CHUNKS: &[(&str, &[Tok])] = &[
        ("January", &[Tok::MonthName]),
        ("Jan", &[Tok::MonthName]),
        ("Monday", &[Tok::Weekday]),
        ("Mon", &[Tok::Weekday]),
        ("MST", &[Tok::ZoneName]),
        ("2006", &[Tok::Year4]),
        ("-07:00:00", &[Tok::Offset]),
        ("Z07:00:00", &[Tok::Offset]),
        ("-07:00", &[Tok::Offset]),
        ("Z07:00", &[Tok::Offset]),
        ("-0700", &[Tok::Offset]),
        ("Z0700", &[Tok::Offset]),
        ("-07", &[Tok::Offset]),
        ("Z07", &[Tok::Offset]),
        ("002", &[]),
        ("01", &[Tok::Month]),
        ("02", &[Tok::Day]),
        ("_2", &[Tok::Day]),
        ("03", &[Tok::Hour12]),
        ("04", &[Tok::Minute]),
        ("05", &[Tok::Second]),
        ("06", &[Tok::Year2]),
        ("15", &[Tok::Hour24]),
        ("PM", &[Tok::AmPm]),
        ("pm", &[Tok::AmPm]),
        ("1", &[Tok::Month]),
        ("2", &[Tok::Day]),
        ("3", &[Tok::Hour12]),
        ("4", &[Tok::Minute]),
        ("5", &[Tok::Second]),
    ];
    let mut out = Vec::new();
    let mut rest = s;
    'outer: while !rest.is_empty() {
        // Fractional seconds: `.000`, `,000` (exact digits) or `.999`, `,999` (optional).
        let b = rest.as_bytes();
        if (b[0] == b'.' || b[0] == b',')
            && b.len() > 1
            && (b[1] == b'0' || b[1] == b'9')
            && out.last() == Some(&Tok::Second)
        {
            let n = b[1..].iter().take_while(|&&c| c == b[1]).count();
            if b[1] == b'0' {
                out.push(Tok::Lit(b[0]));
                out.push(Tok::Frac);
            } else {
                out.push(Tok::OptFrac);
            }
            rest = &rest[1 + n..];
            continue;
        }
        for (chunk, toks) in CHUNKS {
            if let Some(r) = rest.strip_prefix(chunk) {
                if *chunk == "002" {
                    return Err(format!(
                        "timestamp: format {s:?}: day of year (002) is not supported"
                    ));
                }
                out.extend_from_slice(toks);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        let mut buf = [0; 4];
        lits(&mut out, c.encode_utf8(&mut buf));
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

/// What a layout read.
#[derive(Debug, Default)]
struct Fields {
    year: Option<i32>,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    nanos: u32,
    pm: Option<bool>,
    hour12: bool,
    offset: Option<i32>,
    epoch: Option<f64>,
}

impl Fields {
    fn unix(&self, zone: &Zone, now: f64) -> Option<f64> {
        if let Some(e) = self.epoch {
            return Some(e);
        }
        let mut hour = self.hour;
        if self.hour12 {
            if !(1..=12).contains(&hour) {
                return None;
            }
            hour %= 12;
            if self.pm == Some(true) {
                hour += 12;
            }
        }
        if hour > 23 || self.minute > 59 || self.second > 60 {
            return None;
        }
        let secs = |year: i32| -> Option<f64> {
            let month = time::Month::try_from(self.month).ok()?;
            let date = time::Date::from_calendar_date(year, month, self.day).ok()?;
            let days = i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY;
            let local = days * 86_400
                + i64::from(hour) * 3600
                + i64::from(self.minute) * 60
                + i64::from(self.second);
            let offset = match self.offset {
                Some(off) => off,
                None => zone.offset(local)?,
            };
            Some((local - i64::from(offset)) as f64 + f64::from(self.nanos) / 1e9)
        };
        match self.year {
            Some(y) => secs(y),
            None => {
                // The year that puts the stamp closest to `now`, at most a day ahead of it.
                // The candidates are a year apart, so this year's, when it is allowed and less
                // than half a year from `now`, is the closest: the others are read (and the
                // zone asked for their offsets) only when it is not.
                let this = time::OffsetDateTime::from_unix_timestamp(now as i64)
                    .map_or(1970, |t| t.year());
                let allowed = |t: &f64| *t <= now + 86_400.0;
                match secs(this).filter(allowed) {
                    Some(t) if (t - now).abs() < 180.0 * 86_400.0 => Some(t),
                    _ => (this - 1..=this + 1)
                        .filter_map(secs)
                        .filter(allowed)
                        .min_by(|a, b| (a - now).abs().total_cmp(&(b - now).abs())),
                }
            }
        }
    }
}

/// A cursor over the bytes of a stamp.
struct Parser<'a> {
    s: &'a [u8],
}

impl<'a> Parser<'a> {
    fn new(s: &'a [u8]) -> Self {
        Self { s }
    }

    fn peek(&self) -> Option<u8> {
        self.s.first().copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.s = &self.s[1..];
            true
        } else {
            false
        }
    }

    /// At least `min`, at most `max` digits.
    fn num(&mut self, min: usize, max: usize) -> Option<u32> {
        let n = self
            .s
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if n < min {
            return None;
        }
        let v = self.s[..n]
            .iter()
            .fold(0u32, |v, b| v * 10 + u32::from(b - b'0'));
        self.s = &self.s[n..];
        Some(v)
    }

    fn num_u8(&mut self, max: usize) -> Option<u8> {
        u8::try_from(self.num(1, max)?).ok()
    }

    /// Fraction digits as nanoseconds (digits past the ninth are skipped).
    fn frac(&mut self) -> Option<u32> {
        let n = self.s.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let mut v = 0u32;
        for i in 0..9 {
            v = v * 10
                + self
                    .s
                    .get(i)
                    .filter(|_| i < n)
                    .map_or(0, |b| u32::from(b - b'0'));
        }
        self.s = &self.s[n..];
        Some(v)
    }

    /// Letters (a name), at least one.
    fn word(&mut self) -> Option<&'a [u8]> {
        let n = self
            .s
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if n == 0 {
            return None;
        }
        let (w, r) = self.s.split_at(n);
        self.s = r;
        Some(w)
    }

    fn month_name(&mut self) -> Option<u8> {
        const NAMES: [&[u8]; 12] = [
            b"january",
            b"february",
            b"march",
            b"april",
            b"may",
            b"june",
            b"july",
            b"august",
            b"september",
            b"october",
            b"november",
            b"december",
        ];
        let w = self.word()?;
        let i = NAMES.iter().position(|n| {
            (w.len() == 3 || w.len() == n.len()) && w.eq_ignore_ascii_case(&n[..w.len()])
        })?;
        u8::try_from(i + 1).ok()
    }

    /// `Z`, `+hh`, `+hhmm`, `+hh:mm` (and `+hh:mm:ss`), seconds east of UTC.
    fn offset(&mut self) -> Option<i32> {
        if self.eat(b'Z') || self.eat(b'z') {
            return Some(0);
        }
        let sign = match self.peek()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        self.s = &self.s[1..];
        let h = self.num(2, 2)?;
        let colon = self.eat(b':');
        let m = if colon {
            self.num(2, 2)?
        } else {
            self.num(2, 2).unwrap_or(0)
        };
        let sec = if colon && self.eat(b':') {
            self.num(2, 2)?
        } else {
            0
        };
        if h > 23 || m > 59 || sec > 59 {
            return None;
        }
        Some(sign * i32::try_from(h * 3600 + m * 60 + sec).ok()?)
    }

    fn run(mut self, toks: &[Tok]) -> Option<Fields> {
        let mut f = Fields::default();
        for t in toks {
            match *t {
                Tok::Year4 => f.year = Some(i32::try_from(self.num(4, 4)?).ok()?),
                Tok::Year2 => {
                    let y = i32::try_from(self.num(2, 2)?).ok()?;
                    f.year = Some(if y >= 69 { 1900 + y } else { 2000 + y });
                }
                Tok::Month => f.month = self.num_u8(2)?,
                Tok::MonthName => f.month = self.month_name()?,
                Tok::Weekday => {
                    self.word()?;
                }
                Tok::Day => {
                    self.eat(b' ');
                    f.day = self.num_u8(2)?;
                }
                Tok::Hour24 => f.hour = self.num_u8(2)?,
                Tok::Hour12 => {
                    f.hour = self.num_u8(2)?;
                    f.hour12 = true;
                }
                Tok::Minute => f.minute = self.num_u8(2)?,
                Tok::Second => f.second = self.num_u8(2)?,
                Tok::Frac => f.nanos = self.frac()?,
                Tok::OptFrac => {
                    if matches!(self.peek(), Some(b'.' | b',')) {
                        let save = self.s;
                        self.s = &self.s[1..];
                        match self.frac() {
                            Some(n) => f.nanos = n,
                            None => self.s = save,
                        }
                    }
                }
                Tok::AmPm => {
                    let w = self.word()?;
                    f.pm = Some(if w.eq_ignore_ascii_case(b"pm") {
                        true
                    } else if w.eq_ignore_ascii_case(b"am") {
                        false
                    } else {
                        return None;
                    });
                }
                Tok::Offset => f.offset = Some(self.offset()?),
                Tok::OptOffset => {
                    if matches!(self.peek(), Some(b'Z' | b'z' | b'+' | b'-')) {
                        f.offset = Some(self.offset()?);
                    }
                }
                Tok::ZoneName => {
                    let w = self.word()?;
                    if [&b"UTC"[..], b"GMT", b"Z"]
                        .iter()
                        .any(|z| w.eq_ignore_ascii_case(z))
                    {
                        f.offset = Some(0);
                    }
                }
                Tok::DateTimeSep => {
                    if !(self.eat(b'T') || self.eat(b't') || self.eat(b' ')) {
                        return None;
                    }
                }
                Tok::EpochSeconds => f.epoch = Some(epoch(&mut self, EpochUnit::Seconds)?),
                Tok::OptPri => {
                    if self.peek() == Some(b'<') {
                        self.s = &self.s[1..];
                        self.num(1, 3)?;
                        if !self.eat(b'>') {
                            return None;
                        }
                    }
                }
                Tok::Space => {
                    let n = self
                        .s
                        .iter()
                        .take_while(|b| matches!(b, b' ' | b'\t'))
                        .count();
                    if n == 0 {
                        return None;
                    }
                    self.s = &self.s[n..];
                }
                Tok::Lit(b) => {
                    if !self.eat(b) {
                        return None;
                    }
                }
                Tok::OptLit(b) => {
                    self.eat(b);
                }
            }
        }
        Some(f)
    }
}

/// An epoch number at the cursor (a fraction allowed), in seconds.
fn epoch(p: &mut Parser<'_>, unit: EpochUnit) -> Option<f64> {
    let n =
        p.s.iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'.')
            .count();
    let text = std::str::from_utf8(&p.s[..n]).ok()?;
    if text.is_empty() || !text.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let v: f64 = text.parse().ok()?;
    p.s = &p.s[n..];
    let scale = match unit {
        EpochUnit::Seconds => 1.0,
        EpochUnit::Millis => 1e3,
        EpochUnit::Micros => 1e6,
        EpochUnit::Nanos => 1e9,
    };
    Some(v / scale).filter(|s| s.is_finite())
}

/// The `time` value of an LTSV line, as Fluent Bit's ltsv parser reads it (`Time_Key time`).
fn ltsv(line: &[u8], zone: &Zone, now: f64) -> Option<f64> {
    let value = line
        .split(|b| *b == b'\t')
        .find_map(|kv| kv.strip_prefix(b"time:"))?;
    [COMMON_LOG, RFC3339]
        .iter()
        .find_map(|toks| Parser::new(value).run(toks)?.unix(zone, now))
        .or_else(|| {
            let mut p = Parser::new(value);
            epoch(&mut p, EpochUnit::Seconds).filter(|_| p.s.is_empty())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-06T09:00:00Z, the read time of the tests.
    const NOW: f64 = 1_796_547_600.0;

    fn cfg(yaml: &str) -> Result<TimestampConfig, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    fn at(yaml: &str, line: &str) -> Option<f64> {
        cfg(yaml).unwrap().parse_at(line.as_bytes(), NOW)
    }

    #[test]
    fn now_is_what_the_tests_say() {
        let t = time::OffsetDateTime::from_unix_timestamp(NOW as i64).unwrap();
        assert_eq!(t.to_string(), "2026-12-06 9:00:00.0 +00:00:00");
    }

    /// Lines as their producers write them, each with its epoch (from `date -u -d`).
    #[test]
    fn producers_lines() {
        // nginx's `combined` log format ($time_local).
        let nginx = r#"127.0.0.1 - - [06/Dec/2026:10:58:41 +0100] "GET /healthz HTTP/1.1" 200 2 "-" "curl/8.5.0""#;
        assert_eq!(
            at(r#"{regex: '\[([^\]]+)\]', format: common_log}"#, nginx),
            Some(1_796_551_121.0)
        );
        // Python `logging` with its default `%(asctime)s` (`%Y-%m-%d %H:%M:%S,mmm`), local time.
        let py = "2026-12-06 10:58:41,327 WARNING app.db: pool exhausted";
        assert_eq!(
            at(
                r#"{format: "%Y-%m-%d %H:%M:%S,%f", timezone: "+01:00"}"#,
                py
            ),
            Some(1_796_551_121.327)
        );
        // The same through the `iso8601` name (comma fraction, space separator).
        assert_eq!(
            at(r#"{format: iso8601, timezone: "+01:00"}"#, py),
            Some(1_796_551_121.327)
        );
        // zap's production JSON encoder: `ts` in epoch seconds with a fraction.
        let zap =
            r#"{"level":"info","ts":1796551121.3271234,"caller":"main.go:42","msg":"served"}"#;
        let got = at("{field: ts, format: unix}", zap).unwrap();
        assert!((got - 1_796_551_121.327_123_4).abs() < 1e-6, "{got}");
        // The key's name as a value before it is not the key.
        let quoted = r#"{"sort_by":"ts","ts":1796551121}"#;
        assert_eq!(
            at("{field: ts, format: unix}", quoted),
            Some(1_796_551_121.0)
        );
        // logrus' text formatter (logfmt) and JSON formatter, RFC 3339 with offset.
        let logrus = r#"time="2026-12-06T10:58:41+01:00" level=warning msg="disk slow""#;
        assert_eq!(
            at("{field: time, format: rfc3339}", logrus),
            Some(1_796_551_121.0)
        );
        let logrus_json =
            r#"{"level":"warning","msg":"disk slow","time":"2026-12-06T10:58:41+01:00"}"#;
        assert_eq!(
            at("{field: time, format: rfc3339}", logrus_json),
            Some(1_796_551_121.0)
        );
        // A Go layout with milliseconds (zap's development encoder writes ISO 8601 like this).
        let godev = "2026-12-06T09:58:41.327Z\tINFO\tmain.go:42\tserved";
        assert_eq!(
            at(r#"{format: "2006-01-02T15:04:05.000Z07:00"}"#, godev),
            Some(1_796_551_121.327)
        );
        assert_eq!(
            at(
                r#"{format: "2006-01-02 15:04:05.000", timezone: "-0500"}"#,
                "2026-12-06 04:58:41.327 x"
            ),
            Some(1_796_551_121.327)
        );
        // rsyslog's traditional file format (RFC 3164 stamp, no year).
        let rs3164 = "Dec  6 09:58:41 node1 sshd[812]: Accepted publickey for root";
        assert_eq!(at("{format: rfc3164}", rs3164), Some(1_796_551_121.0));
        // rsyslog's RSYSLOG_SyslogProtocol23Format (RFC 5424).
        let rs5424 = "<38>1 2026-12-06T09:58:41.327000+00:00 node1 sshd 812 - - Accepted publickey";
        assert_eq!(at("{format: rfc5424}", rs5424), Some(1_796_551_121.327));
        // Fluent Bit's ltsv parser example: `time` in brackets, common log layout.
        let ltsv = "host:127.0.0.1\tident:-\tuser:-\ttime:[06/Dec/2026:18:58:41 +0900]\treq:GET / HTTP/1.1\tstatus:200";
        assert_eq!(at("{format: ltsv}", ltsv), Some(1_796_551_121.0));
        // Epochs.
        assert_eq!(
            at("{format: unix_ms}", "1796551121327 x"),
            Some(1_796_551_121.327)
        );
        assert_eq!(
            at("{format: unix_ns, field: t}", "t=1796551121000000000 x=1"),
            Some(1_796_551_121.0)
        );
        assert_eq!(at("{format: '%s'}", "1796551121 x"), Some(1_796_551_121.0));
        // 12-hour clock and weekday names.
        assert_eq!(
            at(
                r#"{format: "Mon Jan _2 03:04:05 PM 2006"}"#,
                "Sun Dec  6 09:58:41 AM 2026"
            ),
            Some(1_796_551_121.0)
        );
        assert_eq!(
            at(
                r#"{format: "%a %b %d %I:%M:%S %p %Y %Z"}"#,
                "Sun Dec 06 09:58:41 PM 2026 UTC"
            ),
            Some(1_796_551_121.0 + 43_200.0)
        );
    }

    #[test]
    fn rfc3164_year_is_the_closest_not_in_the_future() {
        let c = cfg("{format: rfc3164}").unwrap();
        // Written on the last day of last year.
        assert_eq!(
            c.parse_at(b"Dec 31 23:59:59 h p: m", NOW),
            Some(1_767_225_599.0)
        );
        // Read on 1 January: a stamp of 31 December is last year's.
        let jan1 = 1_767_225_600.0 + 60.0; // 2026-01-01T00:01:00Z
        assert_eq!(
            c.parse_at(b"Dec 31 23:59:59 h p: m", jan1),
            Some(1_767_225_599.0)
        );
        // Read on 31 December, a stamp of 1 January (a clock a little ahead) is next year's.
        let dec31 = 1_767_225_599.0 - 60.0;
        assert_eq!(
            c.parse_at(b"Jan  1 00:00:30 h p: m", dec31),
            Some(1_767_225_630.0)
        );
        // Read in the middle of the year, a stamp two days ahead is last year's.
        assert_eq!(
            c.parse_at(b"Dec  8 09:00:00 h p: m", NOW),
            Some(1_765_184_400.0)
        );
        // 29 February exists in 2024 only among the candidate years.
        assert_eq!(
            c.parse_at(b"Feb 29 00:00:00 h p: m", 1_709_251_200.0),
            Some(1_709_164_800.0)
        );
    }

    #[test]
    fn garbage_and_out_of_range_stamps_do_not_parse() {
        let cases = [
            ("{format: rfc3339}", "2026-13-06T09:58:41Z"),
            ("{format: rfc3339}", "2026-02-30T09:58:41Z"),
            ("{format: rfc3339}", "2026-12-06T24:00:00Z"),
            ("{format: rfc3339}", "2026-12-06T09:60:00Z"),
            ("{format: rfc3339}", "2026-12-06T09:58:41+25:00"),
            ("{format: rfc3339}", "not a time"),
            ("{format: rfc3339}", ""),
            ("{format: common_log}", "[06/Foo/2026:09:58:41 +0100]"),
            ("{format: rfc3164}", "Dec 32 09:58:41 x"),
            ("{format: rfc5424}", "<38>1 - node1 sshd 812 - - nil stamp"),
            ("{format: unix}", "abc"),
            ("{format: unix}", ".5"),
            ("{format: ltsv}", "host:x\tstatus:200"),
            ("{format: ltsv}", "time:yesterday"),
            ("{field: ts, format: unix}", r#"{"level":"info"}"#),
            ("{field: ts, format: unix}", r#"{"ts":"#),
            ("{regex: 'at=(\\S+)', format: rfc3339}", "no stamp"),
            (r#"{format: "%I:%M %p %d/%m"}"#, "13:00 PM 06/12"),
        ];
        for (c, line) in cases {
            assert_eq!(at(c, line), None, "{c} {line:?}");
        }
    }

    #[test]
    fn config_errors_say_what_is_wrong() {
        let cases = [
            ("{format: rfc9999}", "is not one of"),
            ("{format: '%Y-%m-%d %H:%Q'}", "%Q is not supported"),
            ("{format: '%Y-%m-%d %'}", "lone %"),
            ("{format: '%Y-%m-%d'}", "needs at least"),
            ("{format: '2006-002 15:04'}", "day of year"),
            ("{format: '%d/%m %I:%M'}", "12-hour clock"),
            (
                "{format: rfc3339, timezone: Europe/Atlantis}",
                "neither a UTC offset",
            ),
            ("{format: rfc3339, timezone: Etc/Unknown}", "neither"),
            ("{format: rfc3339, timezone: CEST}", "neither"),
            ("{format: rfc3339, timezone: ''}", "neither"),
            ("{format: rfc3339, timezone: '+2'}", "not a UTC offset"),
            ("{format: rfc3339, timezone: '+02:00x'}", "not a UTC offset"),
            ("{format: rfc3339, regex: 'x'}", "exactly one capture group"),
            ("{format: rfc3339, regex: '('}", "regex"),
            ("{format: rfc3339, regex: '(x)', field: y}", "not both"),
            ("{format: rfc3339, field: 'a b'}", "not a field name"),
            ("{format: ltsv, field: time}", "ltsv"),
            ("{format: rfc3339, zone: UTC}", "unknown field"),
            ("{regex: '(x)'}", "missing field `format`"),
        ];
        for (c, want) in cases {
            let err = cfg(c).unwrap_err();
            assert!(err.contains(want), "{c}: {err}");
        }
        let fixed = |c: &str| match cfg(c).unwrap().zone {
            Zone::Fixed(off) => Some(off),
            Zone::Named { .. } => None,
        };
        assert_eq!(
            fixed("{format: rfc3339, timezone: '-05:30'}"),
            Some(-19_800)
        );
        assert_eq!(fixed("{format: rfc3339, timezone: UTC}"), Some(0));
        assert_eq!(fixed("{format: rfc3339}"), Some(0));
        assert_eq!(fixed("{format: rfc3339, timezone: europe/berlin}"), None);
    }

    /// Local times of zones with daylight saving time on either side of both of 2026's
    /// transitions, a time the clocks show twice (a fold: the earlier instant) and a time they
    /// skip (a gap: moved forward by the gap), each with its instant (from `date -u -d`).
    #[test]
    fn iana_zones_read_local_time_with_daylight_saving_time() {
        let cases = [
            // Europe/Berlin: CET (+01) to CEST (+02) at 2026-03-29T01:00Z, back at
            // 2026-10-25T01:00Z.
            ("Europe/Berlin", "2026-03-29 01:59:59", 1_774_745_999), // 00:59:59Z
            ("Europe/Berlin", "2026-03-29 03:00:00", 1_774_746_000), // 01:00:00Z
            ("Europe/Berlin", "2026-03-29 02:30:00", 1_774_747_800), // gap: 01:30Z, 03:30 CEST
            ("Europe/Berlin", "2026-07-01 12:00:00", 1_782_900_000), // 10:00Z
            ("Europe/Berlin", "2026-10-25 01:59:59", 1_792_886_399), // 10-24 23:59:59Z
            ("Europe/Berlin", "2026-10-25 02:30:00", 1_792_888_200), // fold: 00:30Z (CEST)
            ("Europe/Berlin", "2026-10-25 03:00:00", 1_792_893_600), // 02:00Z
            ("Europe/Berlin", "2026-12-06 10:58:41", 1_796_551_121), // 09:58:41Z
            // America/New_York: EST (-05) to EDT (-04) at 2026-03-08T07:00Z, back at
            // 2026-11-01T06:00Z.
            ("America/New_York", "2026-03-08 01:59:59", 1_772_953_199), // 06:59:59Z
            ("America/New_York", "2026-03-08 02:30:00", 1_772_955_000), // gap: 07:30Z
            ("America/New_York", "2026-03-08 03:00:00", 1_772_953_200), // 07:00Z
            ("America/New_York", "2026-11-01 01:30:00", 1_793_511_000), // fold: 05:30Z (EDT)
            ("America/New_York", "2026-11-01 02:00:00", 1_793_516_400), // 07:00Z
            ("America/New_York", "2026-12-06 04:58:41", 1_796_551_121), // 09:58:41Z
            // Asia/Kolkata: +05:30 all year.
            ("Asia/Kolkata", "2026-12-06 15:28:41", 1_796_551_121),
            ("Asia/Kolkata", "2026-07-01 15:30:00", 1_782_900_000),
        ];
        for (zone, local, want) in cases {
            for format in ["'%Y-%m-%d %H:%M:%S'", "'2006-01-02 15:04:05'", "rfc3339"] {
                let c = format!("{{format: {format}, timezone: {zone}}}");
                assert_eq!(at(&c, local), Some(want as f64), "{c} {local}");
            }
        }
        // A stamp's own offset wins over the zone.
        assert_eq!(
            at(
                "{format: rfc3339, timezone: Europe/Berlin}",
                "2026-07-01T12:00:00+00:00"
            ),
            Some(1_782_907_200.0)
        );
    }

    /// RFC 3164 stamps carry neither year nor offset: the zone's offset is that of the year
    /// chosen, around New Year and in both seasons.
    #[test]
    fn rfc3164_in_a_zone_with_daylight_saving_time() {
        // (zone, line, read time, instant)
        let cases: [(&str, &[u8], f64, f64); 6] = [
            // Read at 2026-07-01T16:05Z: 12:00 EDT (-04) is 16:00Z.
            (
                "America/New_York",
                b"<13>Jul  1 12:00:00 h p: m",
                1_782_921_900.0,
                1_782_921_600.0,
            ),
            // Read at NOW (2026-12-06T09:00Z): 04:58:41 EST (-05) is 09:58:41Z, under a day
            // ahead.
            (
                "America/New_York",
                b"Dec  6 04:58:41 h p: m",
                NOW,
                1_796_551_121.0,
            ),
            // Read at 2027-01-01T05:00:30Z, a stamp of 31 December 23:59:59 EST is of 2026
            // (2027-01-01T04:59:59Z), though the read time's year is 2027.
            (
                "America/New_York",
                b"Dec 31 23:59:59 h p: m",
                1_798_779_630.0,
                1_798_779_599.0,
            ),
            // The fold and the gap of 2026, read a little later.
            (
                "America/New_York",
                b"Nov  1 01:30:00 h p: m",
                1_793_520_000.0,
                1_793_511_000.0,
            ),
            (
                "America/New_York",
                b"Mar  8 02:30:00 h p: m",
                1_772_960_000.0,
                1_772_955_000.0,
            ),
            (
                "Europe/Berlin",
                b"Dec  6 10:58:41 h p: m",
                NOW,
                1_796_551_121.0,
            ),
        ];
        for (zone, line, now, want) in cases {
            let c = cfg(&format!("{{format: rfc3164, timezone: {zone}}}")).unwrap();
            assert_eq!(c.parse_at(line, now), Some(want), "{zone} {line:?}");
        }
    }

    /// An hour is kept when every second of it has one offset: the hours next to a
    /// transition are, the hour of its gap or fold is not (each of its lines asks the zone).
    #[test]
    fn the_hour_is_kept_except_where_the_clocks_change() {
        let zone = Zone::parse("Europe/Berlin").unwrap();
        let Zone::Named { last, .. } = &zone else {
            panic!("Europe/Berlin is not a named zone")
        };
        // (local time as seconds from 1970 on the zone's clocks, its offset, kept)
        let cases = [
            (1_782_907_200, 7200, true),  // 2026-07-01 12:00
            (1_774_747_800, 3600, true),  // 2026-03-29 01:30, the hour before the gap
            (1_774_751_400, 3600, false), // 02:30, in the gap
            (1_774_755_000, 7200, true),  // 03:30, the hour after it
            (1_792_891_800, 7200, true),  // 2026-10-25 01:30, the hour before the fold
            (1_792_895_400, 7200, false), // 02:30, in the fold
            (1_792_899_000, 3600, true),  // 03:30, the hour after it
        ];
        for (local, offset, kept) in cases {
            last.set(0, 0); // Forget the hour read before (hour 0: 1970-01-01 00:00).
            assert_eq!(zone.offset(local), Some(offset), "{local}");
            let hour = i32::try_from(local / 3600).unwrap();
            assert_eq!(last.get(hour), kept.then_some(offset), "{local}");
        }
    }

    /// The offset of the last hour read is kept; whatever the order local times come in (in
    /// time, backwards, at random), each one's offset is the one jiff's own "compatible" rule
    /// gives, in zones with one-hour, half-hour (Lord Howe), two-hour (Troll) and negative
    /// (Dublin) daylight saving time and a skipped day (Apia, 30 December 2011).
    #[test]
    fn the_kept_hour_gives_the_offset_jiff_gives() {
        let zones = [
            "Europe/Berlin",
            "America/New_York",
            "Asia/Kolkata",
            "Australia/Lord_Howe",
            "Antarctica/Troll",
            "Europe/Dublin",
            "Pacific/Apia",
            "America/Sao_Paulo",
        ];
        let spans = [
            (1_293_840_000_i64, 1_325_376_000 + 86_400 * 7), // 2011, into 2012
            (1_767_225_600, 1_798_761_600),                  // 2026
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for name in zones {
            let zone = Zone::parse(name).unwrap();
            let Zone::Named { tz, .. } = &zone else {
                panic!("{name} is not a named zone")
            };
            let want = |local: i64| {
                let dt =
                    jiff::tz::Offset::UTC.to_datetime(jiff::Timestamp::from_second(local).unwrap());
                let t = tz.to_ambiguous_timestamp(dt).compatible().unwrap();
                i32::try_from(local - t.as_second()).unwrap()
            };
            for (from, to) in spans {
                // Every 11 minutes forward, then backward, then at random.
                let forward: Vec<i64> = (from..to).step_by(660).collect();
                let random: Vec<i64> = (0..20_000)
                    .map(|_| from + (next() % (to - from) as u64) as i64)
                    .collect();
                let orders = [
                    forward.clone(),
                    forward.iter().rev().copied().collect(),
                    random,
                ];
                for local in orders.iter().flatten() {
                    assert_eq!(zone.offset(*local), Some(want(*local)), "{name} {local}");
                }
            }
        }
    }

    #[test]
    fn series_of_sources_no_longer_configured_are_dropped() {
        let cfg: crate::config::Config = serde_yaml_ng::from_str(
            "sources:\n- path: /a/*.log\n  timestamp: {format: unix}\n- path: /b/*.log\n",
        )
        .unwrap();
        let stamps = Stamps::new(&cfg.sources).unwrap();
        let mut c = crate::tail::counters::Counters::default();
        for name in ["/a/*.log", "/b/*.log", "/gone/*.log"] {
            c.source_lag.insert(name.into(), Default::default());
            c.timestamp_parse_errors.insert(name.into(), 1);
        }
        stamps.retain_configured(&mut c);
        let names = |m: Vec<&String>| m.into_iter().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(c.source_lag.keys().collect()),
            ["/a/*.log", "/b/*.log"]
        );
        assert_eq!(
            names(c.timestamp_parse_errors.keys().collect()),
            ["/a/*.log"]
        );
    }

    /// Random bytes and mangled real stamps never panic, whatever the format.
    #[test]
    fn random_bytes_never_panic() {
        let formats = [
            "{format: rfc3339}",
            "{format: rfc5424}",
            "{format: rfc3164}",
            "{format: common_log}",
            "{format: unix}",
            "{format: unix_ns}",
            "{format: ltsv}",
            "{format: '%Y-%m-%d %H:%M:%S,%f %z'}",
            "{format: 'Mon Jan _2 03:04:05.999 PM MST 2006'}",
            "{field: ts, format: unix}",
            "{regex: '\\[(.*)\\]', format: common_log}",
            "{format: rfc3164, timezone: Pacific/Apia}",
            "{format: '%Y-%m-%d %H:%M:%S', timezone: America/New_York}",
        ];
        let seeds: &[&[u8]] = &[
            b"2026-12-06T09:58:41.327+01:00",
            b"<38>1 2026-12-06T09:58:41Z h",
            b"Dec  6 09:58:41 h",
            b"[06/Dec/2026:09:58:41 +0100]",
            b"time:[06/Dec/2026:09:58:41 +0100]\tx:y",
            b"{\"ts\":1796551121.5}",
            b"2026-03-08 02:30:00",
        ];
        let cfgs: Vec<TimestampConfig> = formats.iter().map(|f| cfg(f).unwrap()).collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let mut line: Vec<u8> = if i % 2 == 0 {
                let len = (next() % 48) as usize;
                (0..len).map(|_| (next() & 0xff) as u8).collect()
            } else {
                seeds[(next() % seeds.len() as u64) as usize].to_vec()
            };
            for _ in 0..(next() % 4) {
                if line.is_empty() {
                    break;
                }
                let at = (next() % line.len() as u64) as usize;
                line[at] = (next() & 0xff) as u8;
            }
            let now = (next() % 4_000_000_000) as f64;
            for c in &cfgs {
                if let Some(t) = c.parse_at(&line, now) {
                    assert!(t.is_finite(), "{line:?}");
                }
            }
        }
    }
}
