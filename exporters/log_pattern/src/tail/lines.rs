//! From bytes to logical lines, for one file: physical line splitting with a length cap, format
//! detection, and the joining of partial lines (CRI `P` fragments, Docker split lines).
//!
//! [`LineReader`] is fed chunks in file order and keeps `offset`, the end of the last complete
//! physical line it consumed. That offset, the format and the not-yet-complete joined fragments
//! (per stream) are the file's whole resumable state: saved with the counters, they let a
//! restart continue exactly where the counted lines end. A line with no newline yet is not
//! consumed: it is read again after a restart.

use memchr::memchr;

use crate::format::{self, Format, Stream};
use crate::sink::{Line, LineSink, SourceId};
use crate::tail::counters::Counters;
use crate::timestamp::Stamps;

/// Where lines go, and the counters that describe them.
pub struct Ctx<'a> {
    pub sink: &'a mut dyn LineSink,
    pub source: SourceId,
    pub counters: &'a mut Counters,
    /// Longest line kept, in bytes (joined partials included).
    pub cap: usize,
    /// Read time, Unix seconds, for the lag histogram (`None`: no lag, e.g. replaying old files).
    pub now: Option<f64>,
    /// The glob sources, for the lag by source and the lines' own timestamps.
    pub stamps: &'a Stamps,
}

/// Resumable line-splitting state of one file.
#[derive(Debug, Default, Clone)]
pub struct LineReader {
    /// End of the last complete physical line consumed.
    pub offset: u64,
    pub format: Option<Format>,
    /// Joined fragments of an unfinished partial line, per stream (stdout, stderr).
    pub partials: [Vec<u8>; 2],
    partial_long: [bool; 2],
    /// Bytes of the current, unterminated physical line (at most `cap`).
    pending: Vec<u8>,
    /// How many bytes past `offset` have been consumed into `pending` (more than its length
    /// when the line is over the cap).
    pending_total: u64,
    pending_long: bool,
    /// Lines seen while the format is not decided yet (see [`format::DETECT_LINES`]).
    undecided: u32,
    /// The glob source of the file ([`Stamps::find`]; none: the pod log tree).
    pub stamp: Option<usize>,
}

impl LineReader {
    /// A reader resuming at `offset`.
    pub fn at(offset: u64, format: Option<Format>, partials: [Vec<u8>; 2]) -> Self {
        Self {
            offset,
            format,
            partials,
            ..Self::default()
        }
    }

    /// The next byte to read.
    pub fn position(&self) -> u64 {
        self.offset + self.pending_total
    }

    /// Starts again at byte 0 (after a truncation), keeping the format.
    pub fn reset(&mut self) {
        *self = Self {
            format: self.format,
            stamp: self.stamp,
            ..Self::default()
        };
    }

    /// Takes the unfinished partial lines, to be continued by the file that follows this one.
    pub fn take_partials(&mut self) -> ([Vec<u8>; 2], [bool; 2]) {
        (
            std::mem::take(&mut self.partials),
            std::mem::take(&mut self.partial_long),
        )
    }

    /// Continues the unfinished partial lines of the file this one follows (before reading
    /// anything here).
    pub fn adopt_partials(&mut self, (partials, long): ([Vec<u8>; 2], [bool; 2])) {
        self.partials = partials;
        self.partial_long = long;
    }

    fn push_pending(&mut self, seg: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.pending.len());
        if seg.len() > room {
            self.pending_long = true;
        }
        self.pending.extend_from_slice(&seg[..seg.len().min(room)]);
        self.pending_total += seg.len() as u64;
    }

    /// Consumes the next bytes of the file.
    pub fn feed(&mut self, mut chunk: &[u8], ctx: &mut Ctx<'_>) {
        ctx.counters.bytes_read += chunk.len() as u64;
        while !chunk.is_empty() {
            let Some(i) = memchr(b'\n', chunk) else {
                self.push_pending(chunk, ctx.cap);
                return;
            };
            let seg = &chunk[..i];
            chunk = &chunk[i + 1..];
            if self.pending_total == 0 {
                let long = seg.len() > ctx.cap;
                let line = &seg[..seg.len().min(ctx.cap)];
                self.physical(line, long, ctx);
                self.offset += i as u64 + 1;
            } else {
                self.push_pending(seg, ctx.cap);
                let line = std::mem::take(&mut self.pending);
                let long = std::mem::replace(&mut self.pending_long, false);
                self.physical(&line, long, ctx);
                self.offset += self.pending_total + 1;
                self.pending_total = 0;
                self.pending = line;
                self.pending.clear();
            }
        }
    }

    /// At the end of a file that is let go: an unterminated last line and unfinished partials
    /// are lines too.
    pub fn finish(&mut self, ctx: &mut Ctx<'_>) {
        if self.pending_total > 0 {
            let line = std::mem::take(&mut self.pending);
            let long = std::mem::replace(&mut self.pending_long, false);
            self.physical(&line, long, ctx);
            self.offset += self.pending_total;
            self.pending_total = 0;
        }
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            if !self.partials[i].is_empty() {
                let msg = std::mem::take(&mut self.partials[i]);
                let long = std::mem::replace(&mut self.partial_long[i], false);
                emit(&msg, stream, None, long, self.stamp, ctx);
            }
        }
    }

    fn physical(&mut self, line: &[u8], long: bool, ctx: &mut Ctx<'_>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let fmt = match self.format.or_else(|| format::detect(line)) {
            Some(f) => f,
            None => {
                // Not decided yet: the line counts as plain text (and as malformed if it has
                // the shape of a container format).
                self.undecided += 1;
                if self.undecided >= format::DETECT_LINES {
                    self.format = Some(Format::Plain);
                }
                if let Some(f) = format::resembles(line) {
                    Counters::inc(&mut ctx.counters.parse_errors, f.as_str());
                }
                emit(line, Stream::None, None, long, self.stamp, ctx);
                return;
            }
        };
        self.format = Some(fmt);
        let rec = match format::parse(fmt, line) {
            Ok(r) => r,
            Err(_) => {
                Counters::inc(&mut ctx.counters.parse_errors, fmt.as_str());
                emit(line, Stream::None, None, long, self.stamp, ctx);
                return;
            }
        };
        let i = rec.stream.index();
        if rec.partial || !self.partials[i].is_empty() {
            let room = ctx.cap.saturating_sub(self.partials[i].len());
            if rec.message.len() > room {
                self.partial_long[i] = true;
            }
            self.partials[i].extend_from_slice(&rec.message[..rec.message.len().min(room)]);
            self.partial_long[i] |= long;
            if rec.partial {
                return;
            }
            let msg = std::mem::take(&mut self.partials[i]);
            let long = std::mem::replace(&mut self.partial_long[i], false);
            emit(&msg, rec.stream, rec.timestamp, long, self.stamp, ctx);
            self.partials[i] = msg;
            self.partials[i].clear();
        } else {
            emit(
                &rec.message,
                rec.stream,
                rec.timestamp,
                long,
                self.stamp,
                ctx,
            );
        }
    }
}

fn emit(
    message: &[u8],
    stream: Stream,
    timestamp: Option<f64>,
    long: bool,
    stamp: Option<usize>,
    ctx: &mut Ctx<'_>,
) {
    let c = &mut *ctx.counters;
    c.lines_read += 1;
    if long {
        c.long_lines += 1;
    }
    if std::str::from_utf8(message).is_err() {
        c.invalid_utf8_lines += 1;
    }
    match ctx.stamps.get(stamp) {
        None => {
            if let (Some(ts), Some(now)) = (timestamp, ctx.now) {
                c.lag.observe(now - ts);
            }
        }
        Some(s) => source_lag(message, timestamp, s, ctx.now, c),
    }
    ctx.sink.on_line(
        ctx.source,
        &Line {
            message,
            stream,
            timestamp,
        },
    );
}

/// The lag of a glob source's line: its own timestamp when the source says where it is (a
/// stamp that does not parse is counted), else the container format's.
fn source_lag(
    message: &[u8],
    timestamp: Option<f64>,
    s: &crate::timestamp::SourceStamp,
    now: Option<f64>,
    c: &mut Counters,
) {
    let timestamp = match &s.config {
        None => timestamp,
        Some(cfg) => {
            let ts = cfg.parse_at(message, now.unwrap_or_else(super::unix_now));
            // The source's series exists from its first line on (0 until a stamp fails).
            let failed = u64::from(ts.is_none());
            match c.timestamp_parse_errors.get_mut(&s.name) {
                Some(n) => *n += failed,
                None => {
                    c.timestamp_parse_errors.insert(s.name.clone(), failed);
                }
            }
            ts
        }
    };
    let (Some(ts), Some(now)) = (timestamp, now) else {
        return;
    };
    if let Some(h) = c.source_lag.get_mut(&s.name) {
        h.observe(now - ts);
    } else {
        let mut h = crate::tail::counters::LagHistogram::default();
        h.observe(now - ts);
        c.source_lag.insert(s.name.clone(), h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{Labels, SeriesValue};

    /// Records every line it gets.
    #[derive(Default)]
    struct Record(Vec<(String, &'static str)>);
    impl LineSink for Record {
        fn source(&mut self, _: &Labels) -> SourceId {
            0
        }
        fn on_line(&mut self, _: SourceId, line: &Line<'_>) {
            self.0.push((
                String::from_utf8_lossy(line.message).into_owned(),
                line.stream.as_str(),
            ));
        }
        fn values(&self) -> Vec<SeriesValue> {
            Vec::new()
        }
        fn restore(&mut self, _: &[SeriesValue]) {}
    }

    /// Feeds `input` in chunks of `chunk` bytes; returns lines, counters and the reader.
    fn run(
        input: &[u8],
        chunk: usize,
        cap: usize,
    ) -> (Vec<(String, &'static str)>, Counters, LineReader) {
        let mut sink = Record::default();
        let mut counters = Counters::default();
        let mut r = LineReader::default();
        let mut ctx = Ctx {
            sink: &mut sink,
            source: 0,
            counters: &mut counters,
            cap,
            now: Some(0.0),
            stamps: &Stamps::default(),
        };
        for c in input.chunks(chunk) {
            r.feed(c, &mut ctx);
        }
        (sink.0, counters, r)
    }

    #[test]
    fn cri_partials_joined_whatever_the_chunking() {
        let input = b"2024-01-15T10:00:00Z stdout P hel\n2024-01-15T10:00:00Z stderr F err line\n2024-01-15T10:00:00Z stdout P lo \n2024-01-15T10:00:00Z stdout F world\n2024-01-15T10:00:00Z stdout P tail";
        for chunk in [1, 3, 7, 1000] {
            let (lines, c, r) = run(input, chunk, 1000);
            assert_eq!(
                lines,
                vec![
                    ("err line".into(), "stderr"),
                    ("hello world".into(), "stdout")
                ],
                "chunk {chunk}"
            );
            assert_eq!(c.lines_read, 2);
            assert_eq!(r.format, Some(Format::Cri));
            // The unterminated last physical line is not consumed.
            assert_eq!(
                r.offset as usize,
                input.len() - b"2024-01-15T10:00:00Z stdout P tail".len()
            );
        }
    }

    #[test]
    fn docker_partials_and_errors() {
        let input = b"{\"log\":\"first \",\"stream\":\"stdout\",\"time\":\"2024-01-15T10:00:00Z\"}\n{\"log\":\"half\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-15T10:00:00Z\"}\n{broken\n{\"log\":\"ok\\n\",\"stream\":\"stderr\",\"time\":\"2024-01-15T10:00:00Z\"}\n";
        let (lines, c, _) = run(input, 5, 1000);
        assert_eq!(
            lines,
            vec![
                ("first half".into(), "stdout"),
                ("{broken".into(), ""),
                ("ok".into(), "stderr")
            ]
        );
        assert_eq!(c.parse_errors.get("docker"), Some(&1));
        assert_eq!(c.lag.count, 2);
    }

    #[test]
    fn long_lines_cut_and_counted() {
        let mut input = vec![b'a'; 50];
        input.extend_from_slice(b"\nshort\n");
        let (lines, c, r) = run(&input, 4, 10);
        assert_eq!(lines[0].0, "aaaaaaaaaa");
        assert_eq!(lines[1].0, "short");
        assert_eq!(c.long_lines, 1);
        assert_eq!(r.offset as usize, input.len());
        // Joined partials over the cap.
        let input = b"2024-01-15T10:00:00Z stdout P 0123456789\n2024-01-15T10:00:00Z stdout P abcdefghij\n2024-01-15T10:00:00Z stdout P ABCDEFGHIJ\n2024-01-15T10:00:00Z stdout P KLMNOPQRST\n2024-01-15T10:00:00Z stdout F klmnopqrst\n";
        let (lines, c, _) = run(input, 100, 45);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, "0123456789abcdefghijABCDEFGHIJKLMNOPQRSTklmno");
        assert_eq!(c.long_lines, 1);
    }

    #[test]
    fn invalid_utf8_counted_and_plain_detected() {
        let (lines, c, r) = run(b"ok\n\xff\xfe bad\r\nend\n", 2, 100);
        assert_eq!(lines.len(), 3);
        assert_eq!(c.invalid_utf8_lines, 1);
        // Three lines of plain text: read as such, the format still undecided.
        assert_eq!(r.format, None);
        assert!(c.parse_errors.is_empty());
        assert_eq!(c.bytes_read, 15);
    }

    /// A CRI file whose first lines are malformed (a bad timestamp) is still a CRI file: the
    /// malformed lines are counted and matched as plain text, the valid ones parsed.
    #[test]
    fn format_decided_by_the_first_valid_line() {
        let input = b"2024-13-45T99:99:99Z stdout F bad time\nnotatime stderr P x\n2024-01-15T10:00:00Z stdout P hel\n2024-01-15T10:00:00Z stdout F lo\n";
        let (lines, c, r) = run(input, 7, 1000);
        assert_eq!(
            lines,
            vec![
                ("2024-13-45T99:99:99Z stdout F bad time".into(), ""),
                ("notatime stderr P x".into(), ""),
                ("hello".into(), "stdout"),
            ]
        );
        assert_eq!(r.format, Some(Format::Cri));
        assert_eq!(c.parse_errors.get("cri"), Some(&2));
        // Plain text: decided after DETECT_LINES lines, nothing counted as malformed.
        let plain: String = (0..20).map(|i| format!("line {i}\n")).collect();
        let (lines, c, r) = run(plain.as_bytes(), 5, 1000);
        assert_eq!(lines.len(), 20);
        assert_eq!(r.format, Some(Format::Plain));
        assert!(c.parse_errors.is_empty());
        // Undecided while fewer lines have been seen.
        let (_, _, r) = run(b"one\ntwo\n", 5, 1000);
        assert_eq!(r.format, None);
        // Docker after a line of garbage.
        let input = b"garbage\n{\"log\":\"ok\\n\",\"stream\":\"stderr\",\"time\":\"2024-01-15T10:00:00Z\"}\n";
        let (lines, _, r) = run(input, 3, 1000);
        assert_eq!(lines[1], ("ok".into(), "stderr"));
        assert_eq!(r.format, Some(Format::Docker));
    }

    #[test]
    fn finish_flushes_rest() {
        let mut sink = Record::default();
        let mut counters = Counters::default();
        let mut r = LineReader::default();
        let mut ctx = Ctx {
            sink: &mut sink,
            source: 0,
            counters: &mut counters,
            cap: 100,
            now: Some(0.0),
            stamps: &Stamps::default(),
        };
        r.feed(b"a\nb", &mut ctx);
        r.finish(&mut ctx);
        assert_eq!(r.offset, 3);
        assert_eq!(sink.0.len(), 2);
    }

    /// A glob source with a timestamp: lag from the app's stamp under its source name, a stamp
    /// that does not parse counted and the line still matched; a source without one takes the
    /// CRI timestamp; the pod tree's lag stays in its own histogram.
    #[test]
    fn lag_by_source_and_parse_errors() {
        let cfg = crate::config::parse(
            std::path::Path::new("c.yml"),
            "sources:\n- path: /var/log/app/*.log\n  timestamp: {regex: 'at=(\\S+)', format: rfc3339}\n- path: /var/log/cri/*.log\n",
        )
        .unwrap();
        let stamps = Stamps::new(&cfg.sources).unwrap();
        assert_eq!(
            stamps.find(std::path::Path::new("/var/log/app/a.log")),
            Some(0)
        );
        assert_eq!(
            stamps.find(std::path::Path::new("/var/log/cri/b.log")),
            Some(1)
        );
        assert_eq!(
            stamps.find(std::path::Path::new("/var/log/app/x/a.log")),
            None
        );
        // Rotated names belong to the source of the name they were rotated from.
        for rotated in [
            "a.log.1",
            "a.log-20261206",
            "a.log.1.gz",
            "a.log-20261206.gz",
        ] {
            let p = std::path::Path::new("/var/log/app").join(rotated);
            assert_eq!(stamps.find(&p), Some(0), "{rotated}");
        }
        for other in ["a.txt.1", "a.log.old", "a.log.1.2.3.gz"] {
            let p = std::path::Path::new("/var/log/app").join(other);
            assert_eq!(stamps.find(&p), None, "{other}");
        }
        let mut sink = Record::default();
        let mut counters = Counters::default();
        let now = 1_796_547_600.0; // 2026-12-06T09:00:00Z
        let mut ctx = Ctx {
            sink: &mut sink,
            source: 0,
            counters: &mut counters,
            cap: 1000,
            now: Some(now),
            stamps: &stamps,
        };
        let mut app = LineReader {
            stamp: Some(0),
            ..LineReader::default()
        };
        app.feed(
            b"at=2026-12-06T08:59:57Z msg=one\nat=garbage msg=two\nno stamp\nat=2026-12-06T08:59:59.5Z msg=three\n",
            &mut ctx,
        );
        let mut cri = LineReader {
            stamp: Some(1),
            ..LineReader::default()
        };
        cri.feed(b"2026-12-06T08:59:40Z stdout F x\n", &mut ctx);
        let mut pods = LineReader::default();
        pods.feed(b"2026-12-06T08:58:00Z stdout F y\n", &mut ctx);
        assert_eq!(sink.0.len(), 6, "every line matched");
        let app = &counters.source_lag["/var/log/app/*.log"];
        assert_eq!(app.count, 2);
        assert!((app.sum - 3.5).abs() < 1e-6, "{}", app.sum);
        assert_eq!(
            counters.timestamp_parse_errors.get("/var/log/app/*.log"),
            Some(&2)
        );
        assert_eq!(counters.source_lag["/var/log/cri/*.log"].sum, 20.0);
        assert!(!counters
            .timestamp_parse_errors
            .contains_key("/var/log/cri/*.log"));
        assert_eq!((counters.lag.count, counters.lag.sum), (1, 120.0));
    }
}
