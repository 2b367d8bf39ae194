//! Parsing of one physical log line in the three container log formats, without I/O.
//!
//! CRI (`<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <msg>`, written by containerd and CRI-O),
//! Docker's json-file (`{"log":"…\n","stream":"stdout","time":"…"}`) and plain text. The format
//! is decided once per file, by the first of its first [`DETECT_LINES`] lines that is a valid
//! CRI or Docker line ([`detect`]); a malformed line before it (a CRI line with a bad
//! timestamp) does not make the file plain text for good. Partial lines (CRI `P`, Docker
//! `log` without a final newline) are reported as such; joining them is the job of
//! [`crate::tail::lines`], which keeps that state per file and stream.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A file's log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Cri,
    Docker,
    Plain,
}

impl Format {
    /// The `format` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Cri => "cri",
            Format::Docker => "docker",
            Format::Plain => "plain",
        }
    }
}

/// The stream a container line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
    /// Plain files have no stream.
    None,
}

impl Stream {
    /// The `stream` label value (empty for plain files).
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::None => "",
        }
    }

    /// Index of the partial-line buffer of this stream.
    pub fn index(self) -> usize {
        match self {
            Stream::Stdout | Stream::None => 0,
            Stream::Stderr => 1,
        }
    }
}

/// One parsed physical line.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// Unix time in seconds from the line's own timestamp, when it has one that parses.
    pub timestamp: Option<f64>,
    pub stream: Stream,
    /// A fragment to be joined with the following ones of the same stream.
    pub partial: bool,
    pub message: Cow<'a, [u8]>,
}

/// Why a line does not parse in its file's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed CRI line: {0}")]
    Cri(&'static str),
    #[error("malformed Docker json-file line: {0}")]
    Docker(String),
}

/// Lines examined to decide a file's format: if none of them is a valid CRI or Docker line,
/// the file is plain text.
pub const DETECT_LINES: u32 = 16;

/// The format `line` is a valid line of, if it is a CRI or Docker one.
pub fn detect(line: &[u8]) -> Option<Format> {
    if parse_cri(line).is_ok() {
        Some(Format::Cri)
    } else if line.first() == Some(&b'{') && parse_docker(line).is_ok() {
        Some(Format::Docker)
    } else {
        None
    }
}

/// The container format a line that is valid in none has the shape of: CRI when its second
/// and third fields are a stream and a `P`/`F` tag, Docker when it is a JSON object with a
/// `"log"` key. Such a line is counted as malformed even before the file's format is known.
pub fn resembles(line: &[u8]) -> Option<Format> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let (_, stream, tag) = (fields.next(), fields.next(), fields.next());
    let tag = tag.and_then(|t| t.split(|&b| b == b':').next());
    if matches!(stream, Some(b"stdout" | b"stderr")) && matches!(tag, Some(b"P" | b"F")) {
        return Some(Format::Cri);
    }
    if line.first() == Some(&b'{') && memchr::memmem::find(line, b"\"log\"").is_some() {
        return Some(Format::Docker);
    }
    None
}

/// Parses a line in `format`.
pub fn parse(format: Format, line: &[u8]) -> Result<Record<'_>, ParseError> {
    match format {
        Format::Cri => parse_cri(line),
        Format::Docker => parse_docker(line),
        Format::Plain => Ok(Record {
            timestamp: None,
            stream: Stream::None,
            partial: false,
            message: Cow::Borrowed(line),
        }),
    }
}

fn split_space(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr::memchr(b' ', s)?;
    Some((&s[..i], &s[i + 1..]))
}

/// Parses a CRI line: `2024-01-15T10:00:00.123456789Z stdout F message`.
pub fn parse_cri(line: &[u8]) -> Result<Record<'_>, ParseError> {
    let (ts, rest) = split_space(line).ok_or(ParseError::Cri("no stream field"))?;
    let timestamp = parse_rfc3339(ts).ok_or(ParseError::Cri("bad timestamp"))?;
    let (stream, rest) = split_space(rest).ok_or(ParseError::Cri("no tag field"))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err(ParseError::Cri("stream is neither stdout nor stderr")),
    };
    // The tag field may be the last one when the message is empty.
    let (tags, message) = split_space(rest).unwrap_or((rest, &[][..]));
    let first_tag = tags.split(|&b| b == b':').next().unwrap_or_default();
    let partial = match first_tag {
        b"P" => true,
        b"F" => false,
        _ => return Err(ParseError::Cri("tag is neither P nor F")),
    };
    Ok(Record {
        timestamp: Some(timestamp),
        stream,
        partial,
        message: Cow::Borrowed(message),
    })
}

#[derive(Deserialize)]
struct DockerLine {
    log: String,
    #[serde(default)]
    stream: String,
    #[serde(default)]
    time: String,
}

/// Parses a Docker json-file line. A `log` without a final newline is a partial line (Docker
/// splits lines longer than 16 KiB).
pub fn parse_docker(line: &[u8]) -> Result<Record<'static>, ParseError> {
    let d: DockerLine =
        serde_json::from_slice(line).map_err(|e| ParseError::Docker(e.to_string()))?;
    let stream = match d.stream.as_str() {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => {
            return Err(ParseError::Docker(
                "stream is neither stdout nor stderr".into(),
            ))
        }
    };
    let mut message = d.log.into_bytes();
    let partial = message.last() != Some(&b'\n');
    if !partial {
        message.pop();
        if message.last() == Some(&b'\r') {
            message.pop();
        }
    }
    Ok(Record {
        timestamp: parse_rfc3339(d.time.as_bytes()),
        stream,
        partial,
        message: Cow::Owned(message),
    })
}

fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0i64, |a, &d| a * 10 + i64::from(d - b'0')))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 timestamp (`2024-01-15T10:00:00.123456789Z`, `…+01:00`) into Unix seconds.
pub fn parse_rfc3339(s: &[u8]) -> Option<f64> {
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't' | b' ') {
        return None;
    }
    if s[13] != b':' || s[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(&s[0..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    let (h, mi, sec) = (
        digits(&s[11..13])?,
        digits(&s[14..16])?,
        digits(&s[17..19])?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0f64;
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let mut scale = 0.1;
        for &b in &rest[1..=n] {
            frac += f64::from(b - b'0') * scale;
            scale /= 10.0;
        }
        rest = &rest[n + 1..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let v = digits(&[*oh1, *oh2])? * 3600 + digits(&[*om1, *om2])? * 60;
            if *sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs as f64 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339(b"1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            parse_rfc3339(b"2024-01-15T10:00:00Z"),
            Some(1_705_312_800.0)
        );
        let t = parse_rfc3339(b"2024-01-15T10:00:00.5+01:00").unwrap();
        assert!((t - (1_705_312_800.0 - 3600.0 + 0.5)).abs() < 1e-6);
        let t = parse_rfc3339(b"2024-02-29T23:59:59.123456789Z").unwrap();
        assert!((t - 1_709_251_199.123_456).abs() < 1e-6);
        for bad in [
            &b""[..],
            b"2024-01-15",
            b"2024-13-15T10:00:00Z",
            b"2024-01-15T10:00:00",
            b"2024-01-15T10:00:00.Z",
            b"x024-01-15T10:00:00Z",
        ] {
            assert_eq!(
                parse_rfc3339(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn cri_lines() {
        let r = parse_cri(b"2024-01-15T10:00:00.000000001Z stderr F hello world").unwrap();
        assert_eq!(r.stream, Stream::Stderr);
        assert!(!r.partial);
        assert_eq!(&*r.message, b"hello world");
        let r = parse_cri(b"2024-01-15T10:00:00Z stdout P part").unwrap();
        assert!(r.partial);
        let r = parse_cri(b"2024-01-15T10:00:00Z stdout F").unwrap();
        assert_eq!(&*r.message, b"");
        let r = parse_cri(b"2024-01-15T10:00:00Z stdout F:x  two spaces").unwrap();
        assert_eq!(&*r.message, b" two spaces");
        for bad in [
            &b"hello"[..],
            b"2024-01-15T10:00:00Z stdin F x",
            b"2024-01-15T10:00:00Z stdout X x",
            b"notatime stdout F x",
            b"2024-01-15T10:00:00Z stdout",
        ] {
            assert!(
                parse_cri(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn docker_lines() {
        let r =
            parse_docker(br#"{"log":"hello\n","stream":"stdout","time":"2024-01-15T10:00:00Z"}"#)
                .unwrap();
        assert_eq!(&*r.message, b"hello");
        assert!(!r.partial);
        assert_eq!(r.timestamp, Some(1_705_312_800.0));
        let r = parse_docker(br#"{"log":"part","stream":"stderr","time":"2024-01-15T10:00:00Z"}"#)
            .unwrap();
        assert!(r.partial);
        assert_eq!(r.stream, Stream::Stderr);
        assert!(parse_docker(br#"{"log":"x\n","stream":"stdout""#).is_err());
        assert!(parse_docker(br#"{"stream":"stdout"}"#).is_err());
        assert!(parse_docker(b"{\"log\":\"\xff\\n\",\"stream\":\"stdout\"}").is_err());
    }

    #[test]
    fn detection() {
        assert_eq!(
            detect(b"2024-01-15T10:00:00Z stdout F x"),
            Some(Format::Cri)
        );
        assert_eq!(
            detect(br#"{"log":"x\n","stream":"stdout","time":"2024-01-15T10:00:00Z"}"#),
            Some(Format::Docker)
        );
        assert_eq!(detect(br#"{"level":"info"}"#), None);
        assert_eq!(detect(b"Jan 15 10:00:00 host kernel: x"), None);
        assert_eq!(detect(b"2024-13-45T99:00:00Z stdout F x"), None);
        assert_eq!(
            resembles(b"2024-13-45T99:00:00Z stdout F x"),
            Some(Format::Cri)
        );
        assert_eq!(resembles(b"garbage stderr P:x y"), Some(Format::Cri));
        assert_eq!(
            resembles(br#"{"log":"x\n","stream":"none"}"#),
            Some(Format::Docker)
        );
        assert_eq!(resembles(br#"{"level":"info"}"#), None);
        assert_eq!(resembles(b"Jan 15 10:00:00 host kernel: x"), None);
    }
}
