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

/// Parses nova.conf text.
pub fn parse_nova_conf(text: &str) -> Result<NovaCpuSets, ParseError> {
    let mut section = String::new();
    let mut out = NovaCpuSets::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            section = rest.trim_end_matches(']').trim().to_ascii_lowercase();
            continue;
        }
        if section != "compute" {
            continue;
        }
        let Some((key, value)) = line.split_once(['=', ':']) else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "cpu_dedicated_set" => out.dedicated = Some(parse_cpuset(value)?),
            "cpu_shared_set" => out.shared = Some(parse_cpuset(value)?),
            _ => {}
        }
    }
    // An empty value is oslo's "unset".
    out.dedicated = out.dedicated.filter(|s| !s.is_empty());
    out.shared = out.shared.filter(|s| !s.is_empty());
    Ok(out)
}

/// Reads nova.conf from disk.
pub fn load_nova_conf(path: &Path) -> Result<NovaCpuSets, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_nova_conf(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

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
