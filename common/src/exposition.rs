//! Content negotiation and the two text formats.
//!
//! A scrape is written as OpenMetrics ([`crate::text`]). Prometheus asks for OpenMetrics first,
//! but `promtool check metrics`, curl and older scrapers read the classic text format (0.0.4), so
//! a request that does not ask for OpenMetrics gets the OpenMetrics output rewritten: counters and
//! info metrics take their sample names in `# HELP`/`# TYPE`, `# UNIT`, `# EOF`, `_created`
//! samples and exemplars go away. The rewrite is line based and allocation light.

use std::io::Write;

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition format a request negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    /// The `Content-Type` header value.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS,
            Self::Text => TEXT,
        }
    }
}

/// Parses an `Accept` header into `(media type, q)` pairs.
fn accept_entries(accept: &str) -> impl Iterator<Item = (&str, f32)> {
    accept.split(',').filter_map(|part| {
        let mut pieces = part.split(';');
        let media = pieces.next()?.trim();
        let mut q = 1.0f32;
        for p in pieces {
            if let Some(v) = p.trim().strip_prefix("q=") {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        Some((media, q))
    })
}

/// Picks the format for an `Accept` header: OpenMetrics when it is asked for with a quality at
/// least as high as the text format's, the text format otherwise.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let mut om = 0.0f32;
    let mut text = 0.0f32;
    for (media, q) in accept_entries(accept) {
        let media = media.to_ascii_lowercase();
        if media == "application/openmetrics-text" {
            om = om.max(q);
        } else if media == "text/plain" || media == "*/*" || media == "text/*" {
            text = text.max(q);
        }
    }
    if om > 0.0 && om >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Whether the `Accept-Encoding` header allows gzip: by its own entry if it has one (`gzip;q=0`
/// forbids it), else by `*`.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(h) = accept_encoding else {
        return false;
    };
    let (mut gzip, mut any) = (None::<f32>, None::<f32>);
    for (enc, q) in accept_entries(h) {
        let slot = if enc.eq_ignore_ascii_case("gzip") {
            &mut gzip
        } else if enc == "*" {
            &mut any
        } else {
            continue;
        };
        *slot = Some(slot.map_or(q, |s| s.max(q)));
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

/// Gzips `body` at a fast level (scrapes are frequent; the win is in size, not ratio).
pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    enc.finish()
}

/// Rewrites OpenMetrics text (as [`crate::text`] and prometheus-client write it) into the
/// classic text format.
///
/// Comment lines are rewritten one by one; the sample lines between two of them, which pass
/// unchanged unless one holds an exemplar, a `_created` sample or an empty line, are copied as
/// one block (a scrape of 1,000 libvirt domains is 30k sample lines and 3 MB).
pub fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // HELP comes before TYPE: hold HELP until TYPE says how to rename.
    let mut pending_help: Option<(&str, &str)> = None;
    let mut counter_family: Option<&str> = None;
    let mut rest = om;
    while !rest.is_empty() {
        if rest.starts_with('#') {
            let (line, tail) = rest.split_once('\n').unwrap_or((rest, ""));
            rest = tail;
            if let Some(rest) = line.strip_prefix("# HELP ") {
                flush_help(&mut out, pending_help.take(), None);
                let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
                pending_help = Some((name, text));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
                let (suffix, text_kind) = match kind {
                    "counter" => ("_total", "counter"),
                    "info" => ("_info", "gauge"),
                    "stateset" => ("", "gauge"),
                    "gaugehistogram" => ("", "histogram"),
                    "unknown" => ("", "untyped"),
                    other => ("", other),
                };
                counter_family = (kind == "counter").then_some(name);
                let help = pending_help.take().filter(|(n, _)| *n == name);
                flush_help(&mut out, help, Some(suffix));
                out.push_str("# TYPE ");
                out.push_str(name);
                out.push_str(suffix);
                out.push(' ');
                out.push_str(text_kind);
                out.push('\n');
            }
            // `# UNIT`, `# EOF` and other comments go away.
            continue;
        }
        // The run of sample lines up to the next comment line.
        let end = memchr::memmem::find(rest.as_bytes(), b"\n#").map_or(rest.len(), |i| i + 1);
        let (block, tail) = rest.split_at(end);
        rest = tail;
        let plain = !block.starts_with('\n')
            && !block.contains("\n\n")
            && memchr::memmem::find(block.as_bytes(), b" # ").is_none()
            && (counter_family.is_none()
                || memchr::memmem::find(block.as_bytes(), b"_created").is_none());
        if plain {
            out.push_str(block);
            if !block.ends_with('\n') {
                out.push('\n');
            }
            continue;
        }
        for line in block.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(family) = counter_family {
                if line
                    .strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with("_created"))
                {
                    continue;
                }
            }
            // Drop an exemplar: ` # {` after the value (label values cannot contain an
            // unescaped `}` followed by ` # {` in a way that matters here, as the sample ends
            // with the value).
            let sample = match find_exemplar(line) {
                Some(i) => &line[..i],
                None => line,
            };
            out.push_str(sample);
            out.push('\n');
        }
    }
    flush_help(&mut out, pending_help.take(), None);
    out
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>, suffix: Option<&str>) {
    if let Some((name, text)) = help {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push_str(suffix.unwrap_or(""));
        out.push(' ');
        // OpenMetrics escapes `"` in HELP; the text format does not.
        out.push_str(&text.replace("\\\"", "\""));
        out.push('\n');
    }
}

/// Byte offset of an exemplar (` # {`) outside the label set, if any.
fn find_exemplar(line: &str) -> Option<usize> {
    let after_labels = match line.find('{') {
        Some(open) => {
            // Walk the label set honouring quotes and escapes to find its closing brace.
            let bytes = line.as_bytes();
            let mut i = open + 1;
            let mut in_str = false;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' if in_str => i += 1,
                    b'"' => in_str = !in_str,
                    b'}' if !in_str => break,
                    _ => {}
                }
                i += 1;
            }
            i
        }
        None => 0,
    };
    line[after_labels..].find(" # {").map(|i| i + after_labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(negotiate(Some("text/plain")), Format::Text);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        // What Prometheus 2.x sends.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(
            negotiate(Some("text/plain;q=1, application/openmetrics-text;q=0.5")),
            Format::Text
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
    }

    #[test]
    fn gzip_acceptance() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, gzip;q=0.5")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn an_explicit_gzip_q0_wins_over_a_wildcard() {
        // RFC 9110 12.5.3: `*` stands for the codings not listed; `gzip;q=0` forbids gzip.
        assert!(!accepts_gzip(Some("gzip;q=0, *")));
        assert!(!accepts_gzip(Some("*, gzip;q=0")));
        assert!(!accepts_gzip(Some("GZIP; q=0 , *;q=1")));
        assert!(!accepts_gzip(Some("*;q=0")));
        assert!(accepts_gzip(Some("*")));
        assert!(accepts_gzip(Some("identity;q=0.5, *")));
        assert!(accepts_gzip(Some("gzip;q=0.1, *;q=0")));
    }

    #[test]
    fn rewrites_openmetrics() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{a=\"1\"} 3\nx_requests_created{a=\"1\"} 1.7e9\n# HELP x_build A \\\"build\\\".\n# TYPE x_build info\nx_build_info{version=\"1\"} 1\n# HELP x_temp Temp.\n# TYPE x_temp gauge\n# UNIT x_temp celsius\nx_temp 1.5\nx_lat_bucket{le=\"+Inf\"} 2 # {trace_id=\"a\"} 1.0\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{a=\"1\"} 3\n# HELP x_build_info A \"build\".\n# TYPE x_build_info gauge\nx_build_info{version=\"1\"} 1\n# HELP x_temp Temp.\n# TYPE x_temp gauge\nx_temp 1.5\nx_lat_bucket{le=\"+Inf\"} 2\n"
        );
    }

    #[test]
    fn sample_blocks_pass_whole_and_line_by_line_alike() {
        // Plain blocks, a block with an empty line, a counter sample whose label mentions
        // `_created` (kept), a real `_created` sample (dropped), no final newline.
        let om = "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\na{x=\"2\"} 2\n\na{x=\"3\"} 3\n# HELP c C.\n# TYPE c counter\nc_total{why=\"c_created\"} 1\nc_created 5\nc_total{why=\"x\"} 2";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\na{x=\"2\"} 2\na{x=\"3\"} 3\n# HELP c_total C.\n# TYPE c_total counter\nc_total{why=\"c_created\"} 1\nc_total{why=\"x\"} 2\n"
        );
        // A large plain block is copied unchanged.
        let mut big = String::from("# HELP g G.\n# TYPE g gauge\n");
        for i in 0..10_000 {
            big.push_str(&format!("g{{i=\"{i}\"}} {i}\n"));
        }
        let text = openmetrics_to_text(&(big.clone() + "# EOF\n"));
        assert_eq!(text, big);
    }

    #[test]
    fn exemplar_marker_inside_label_value_is_kept() {
        let line = "x{a=\"v # {\"} 1";
        assert_eq!(find_exemplar(line), None);
    }
}
