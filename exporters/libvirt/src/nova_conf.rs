//! nova's CPU sets from `nova.conf`: `[compute] cpu_dedicated_set` and `cpu_shared_set`.
//!
//! Only these two keys are read, from the `[compute]` section, with oslo.config's INI rules that
//! matter here (comments with `#` or `;`, `key = value` or `key: value`, last one wins). The file
//! may hold secrets (database passwords): nothing else is kept and nothing of it is logged.
#![forbid(unsafe_code)]

use std::path::Path;

use crate::cpuset::{parse_cpuset, CpuSet};
use crate::error::{Error, ParseError};

/// The CPU sets nova is configured with; `None` when not set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NovaCpuSets {
    pub dedicated: Option<CpuSet>,
    pub shared: Option<CpuSet>,
}

/// Parses a CPU list as nova does (`parse_cpu_spec` in nova/virt/hardware.py), which is not
/// libvirt's syntax: an exclusion (`^N` or `^N-M`) removes CPUs from the whole list wherever it
/// stands (`^8,4-11` is `4-7,9-11`), and empty elements are skipped (`4-7,`).
pub fn parse_nova_cpu_spec(s: &str) -> Result<CpuSet, ParseError> {
    let bad = || ParseError::CpuList(excerpt(s));
    // Every CPU libvirt accepts (0-16383) listed one by one is about 90 KB.
    if s.len() > MAX_SPEC_BYTES {
        return Err(bad());
    }
    let mut set = CpuSet::new();
    let mut reject = CpuSet::new();
    for rule in s.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let (target, rule) = match rule.strip_prefix('^') {
            Some(r) => (&mut reject, r),
            None => (&mut set, rule),
        };
        // A single CPU or a range, read by the libvirt parser (no `^`, no `,` left in it).
        if rule.contains('^') {
            return Err(bad());
        }
        let cpus = parse_cpuset(rule).map_err(|_| bad())?;
        if cpus.is_empty() {
            return Err(bad());
        }
        *target = target.union(&cpus);
    }
    Ok(set.difference(&reject))
}

/// Longest CPU list read; a longer one is rejected unread.
const MAX_SPEC_BYTES: usize = 256 << 10;

/// Longest part of a rejected value quoted in an error (the value can be megabytes long, and
/// the error is logged).
const EXCERPT_BYTES: usize = 64;

/// The first [`EXCERPT_BYTES`] of `value` (at a character boundary).
fn excerpt_prefix(value: &str) -> &str {
    let mut end = EXCERPT_BYTES.min(value.len());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// `value`, or its first [`EXCERPT_BYTES`] and its length when longer.
fn excerpt(value: &str) -> String {
    if value.len() <= EXCERPT_BYTES {
        return value.to_string();
    }
    format!("{}... ({} bytes)", excerpt_prefix(value), value.len())
}

/// Parses nova.conf text with oslo.config's INI rules: `key = value` or `key: value` (whichever
/// separator comes first), matching quotes around a value stripped, an indented line continues
/// the value before it (a blank line ends it), `#`/`;` comment lines; the last value wins.
pub fn parse_nova_conf(text: &str) -> Result<NovaCpuSets, ParseError> {
    let mut section = String::new();
    let mut out = NovaCpuSets::default();
    // The assignment being read. Only the two keys of [compute] keep their value, and at most
    // MAX_SPEC_BYTES + 1 bytes of it (`len` is the whole length): a value of megabytes is not
    // copied, whatever the file's size.
    struct Pending {
        key: String,
        value: String,
        len: usize,
    }
    impl Pending {
        fn push(&mut self, s: &str) {
            self.len += s.len();
            let room = (MAX_SPEC_BYTES + 1).saturating_sub(self.value.len());
            let mut end = room.min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.value.push_str(&s[..end]);
        }
    }
    let mut pending: Option<Pending> = None;
    let mut flush = |pending: &mut Option<Pending>| -> Result<(), ParseError> {
        let Some(p) = pending.take() else {
            return Ok(());
        };
        let set = || {
            let bad = || {
                let mut quoted = excerpt(&p.value);
                if p.len > p.value.len() {
                    quoted = format!("{}... ({} bytes)", excerpt_prefix(&p.value), p.len);
                }
                ParseError::invalid("[compute] value", format!("{} = {quoted}", p.key))
            };
            if p.len > MAX_SPEC_BYTES {
                return Err(bad());
            }
            parse_nova_cpu_spec(&p.value).map_err(|_| bad())
        };
        match p.key.as_str() {
            "cpu_dedicated_set" => out.dedicated = Some(set()?),
            "cpu_shared_set" => out.shared = Some(set()?),
            _ => {}
        }
        Ok(())
    };
    // Whether the assignment being read is one we skip (continuation lines belong to it).
    let mut skipping = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            flush(&mut pending)?;
            skipping = false;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(p) = pending.as_mut() {
                p.push("\n");
                p.push(line.trim_start());
                continue;
            }
            if skipping {
                continue;
            }
        }
        flush(&mut pending)?;
        skipping = false;
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            section = rest.trim_end_matches(']').trim().to_ascii_lowercase();
            continue;
        }
        let Some((key, value)) = line.split_once(['=', ':']) else {
            continue;
        };
        let key = key.trim();
        if section != "compute" || !matches!(key, "cpu_dedicated_set" | "cpu_shared_set") {
            skipping = true;
            continue;
        }
        let mut value = value.trim();
        if value.len() >= 2
            && ['"', '\'']
                .iter()
                .any(|q| value.starts_with(*q) && value.ends_with(*q))
        {
            value = &value[1..value.len() - 1];
        }
        let mut p = Pending {
            key: key.to_string(),
            value: String::new(),
            len: 0,
        };
        p.push(value);
        pending = Some(p);
    }
    flush(&mut pending)?;
    // An empty value is oslo's "unset".
    out.dedicated = out.dedicated.filter(|s| !s.is_empty());
    out.shared = out.shared.filter(|s| !s.is_empty());
    Ok(out)
}

/// Largest nova.conf read (oslo-config-generator's full sample, every option commented, is
/// well under 1 MiB).
const MAX_CONF_BYTES: u64 = 16 << 20;

/// Reads nova.conf from disk. Only a regular file (or a symlink to one) is opened, and at most
/// [`MAX_CONF_BYTES`] of it: a FIFO would block the open forever and a device such as
/// `/dev/zero` would never end.
pub fn load_nova_conf(path: &Path) -> Result<NovaCpuSets, Error> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let other = |msg: &str| io(std::io::Error::other(msg));
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(other("not a regular file"));
    }
    // Sized from the file (a growing Vec would reserve up to twice it).
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_CONF_BYTES + 1) as usize + 1);
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_CONF_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_CONF_BYTES {
        return Err(other("larger than 16 MiB"));
    }
    let text = String::from_utf8(bytes).map_err(|_| other("not UTF-8 text"))?;
    parse_nova_conf(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nova's `parse_cpu_spec` (nova/virt/hardware.py): exclusions (`^N`, `^N-M`) apply to the
    /// whole list whatever their position, empty elements are skipped.
    #[test]
    fn cpu_spec_as_nova_reads_it() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some("")),
            ("4-11", Some("4-11")),
            ("4-11,^8", Some("4-7,9-11")),
            ("^8,4-11", Some("4-7,9-11")),
            ("4-11,^8-9", Some("4-7,10-11")),
            ("4-7,,9,", Some("4-7,9")),
            (" 4 - 7 , 9 ", Some("4-7,9")),
            ("4-x", None),
            ("^", None),
            ("7-4", None),
            ("^9-8", None),
            ("-1", None),
            ("99999", None),
        ];
        for (input, want) in cases {
            let got = parse_nova_cpu_spec(input).ok().map(|s| s.to_string());
            assert_eq!(got.as_deref(), *want, "input {input:?}");
        }
    }

    /// Issue 23: a 7.4 MB invalid `cpu_dedicated_set` was quoted whole in the error (and so in
    /// the log line of every scrape). The error names the key and a bounded excerpt.
    #[test]
    fn a_huge_invalid_value_is_quoted_bounded() {
        let value = "4-7,".repeat(2_000_000) + "x";
        let text = format!("[compute]\ncpu_dedicated_set = {value}\n");
        let err = parse_nova_conf(&text).unwrap_err().to_string();
        assert!(err.len() < 200, "{} bytes", err.len());
        assert!(err.contains("cpu_dedicated_set = 4-7,4-7,"), "{err}");
        assert!(err.contains(&format!("({} bytes)", value.len())), "{err}");
        // A short one is quoted whole.
        let err = parse_nova_conf("[compute]\ncpu_shared_set = 0-x\n").unwrap_err();
        assert!(err.to_string().contains("cpu_shared_set = 0-x\""), "{err}");
    }

    #[test]
    fn table() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("", Some(("", ""))),
            ("[compute]\ncpu_dedicated_set = 2-7\ncpu_shared_set=0-1\n", Some(("2-7", "0-1"))),
            // other sections and comments are ignored; the last value wins
            (
                "[DEFAULT]\ncpu_dedicated_set = 9\n[database]\nconnection = mysql://nova:secret@db/nova\n[compute]\n# cpu_dedicated_set = 1\ncpu_dedicated_set: 4-5,^5\ncpu_dedicated_set = 4-6\n",
                Some(("4-6", "")),
            ),
            ("[compute]\ncpu_shared_set =\n", Some(("", ""))),
            ("[compute]\ncpu_shared_set = 0-x\n", None),
            // oslo.config strips matching quotes (nova's own help shows "4-12,^8,15").
            (
                "[compute]\ncpu_dedicated_set = \"4-12,^8,15\"\ncpu_shared_set='0-3'\n",
                Some(("4-7,9-12,15", "0-3")),
            ),
            // An indented line continues the value; a blank line ends it.
            (
                "[compute]\ncpu_dedicated_set = 4-7,\n  12-15\n\ncpu_shared_set = 0-3\n",
                Some(("4-7,12-15", "0-3")),
            ),
            // The continuation of another section's key is not a key of its own.
            (
                "[database]\nconnection = x\n  cpu_dedicated_set = 1\n[compute]\ncpu_shared_set = 0-3\n",
                Some(("", "0-3")),
            ),
        ];
        for (text, want) in cases {
            let got = parse_nova_conf(text).ok().map(|s| {
                (
                    s.dedicated.map(|c| c.to_string()).unwrap_or_default(),
                    s.shared.map(|c| c.to_string()).unwrap_or_default(),
                )
            });
            let want = want.map(|(a, b)| (a.to_string(), b.to_string()));
            assert_eq!(got, want, "{text:?}");
        }
    }
}
