//! Loading YAML configuration files with errors that name file, line and column.
//!
//! Every exporter's config (and the web config) goes through [`load_yaml`], so `--config.check`
//! and a startup failure print the same `FILE:LINE:COLUMN: message`. Semantic checks belong in
//! `Deserialize` impls (or `deserialize_with`) where they can, so that they get a position too.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl ConfigError {
    /// An error about the file as a whole (no position known).
    pub fn invalid(path: &Path, message: impl std::fmt::Display) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

/// The largest configuration file [`load_yaml`] reads: configs are hand-written and small; a
/// path pointing at a device or a runaway file must not fill memory.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Reads and deserializes a YAML file of at most [`MAX_CONFIG_BYTES`] (see [`read_text_file`]).
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = read_text_file(path, MAX_CONFIG_BYTES)?;
    parse_yaml(path, &text)
}

/// Reads a UTF-8 text file with [`read_regular_file`], errors naming the file.
pub fn read_text_file(path: &Path, max_bytes: u64) -> Result<String, ConfigError> {
    let bytes = read_regular_file(path, max_bytes).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        ConfigError::invalid(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Reads a whole file that must be a regular file of at most `max_bytes`.
///
/// The file is opened with `O_NONBLOCK`, so that a FIFO without a writer does not block the
/// open, then checked with `fstat` on the open descriptor (no race with a rename): a FIFO, a
/// device (`/dev/zero`), a socket or a directory is an error that says which it is. The read
/// stops one byte past `max_bytes`, so a file that grows while it is read cannot fill memory.
pub fn read_regular_file(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{what}, not a regular file"),
        ));
    }
    let too_big = |len: u64| {
        Error::new(
            ErrorKind::InvalidData,
            format!("{len} bytes or more, above the limit of {max_bytes} bytes"),
        )
    };
    if meta.len() > max_bytes {
        return Err(too_big(meta.len()));
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > max_bytes {
        return Err(too_big(buf.len() as u64));
    }
    Ok(buf)
}

/// The deepest flow nesting [`parse_yaml`] lets through to the YAML parser: serde_yaml refuses
/// documents nested deeper than 128 levels anyway, but only after parsing them.
pub const MAX_YAML_FLOW_DEPTH: usize = 128;

/// Checks that YAML `text` does not nest flow collections (`[`, `{`) deeper than `max_depth`,
/// before a YAML parser sees it: the parser's work grows with the square of the flow nesting
/// (40,000 `[` took 18 s in a debug build), so a small file of brackets could stall whoever
/// parses it. Compact block sequences on one line (`- - - x`) nest too and are counted per
/// line; other block nesting (indentation) costs linear time and is left to serde_yaml's own
/// limit. Brackets in comments, in quoted scalars on one line and inside plain scalars outside
/// brackets are not counted.
pub fn check_yaml_nesting(path: &Path, text: &str, max_depth: usize) -> Result<(), ConfigError> {
    let too_deep = |line: usize, column: usize, what: &str| ConfigError::Parse {
        path: path.to_path_buf(),
        line,
        column,
        message: format!("{what} nested more than {max_depth} levels deep"),
    };
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        if let Some(column) = compact_sequences_past(line, max_depth) {
            return Err(too_deep(n + 1, column, "block sequences (`- - ...`)"));
        }
        let mut quote: Option<char> = None;
        let mut escaped = false;
        let mut prev = ' ';
        let mut chars = line.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            if let Some(q) = quote {
                if escaped {
                    escaped = false;
                } else if q == '"' && c == '\\' {
                    escaped = true;
                } else if q == '\'' && c == '\'' && chars.peek().is_some_and(|&(_, n)| n == '\'') {
                    // `''` is a quote inside a single-quoted scalar.
                    chars.next();
                } else if c == q {
                    quote = None;
                }
                prev = c;
                continue;
            }
            let token_start = matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':');
            match c {
                '#' if prev == ' ' || prev == '\t' => break,
                '\'' | '"' if token_start => quote = Some(c),
                // In block context a bracket opens a collection only where a token starts; a
                // regex in a plain scalar (`^\[ERROR`) is text.
                '[' | '{' if depth > 0 || token_start => {
                    depth += 1;
                    if depth > max_depth {
                        return Err(too_deep(n + 1, i + 1, "brackets"));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            prev = c;
        }
    }
    Ok(())
}

/// The column of the first `-` past `max` compact block sequence entries at the start of
/// `line` (`- - - x` nests three sequences on one line), if there are more than `max`.
fn compact_sequences_past(line: &str, max: usize) -> Option<usize> {
    let mut rest = line.trim_start();
    let mut n = 0;
    while let Some(r) = rest.strip_prefix('-') {
        if !(r.is_empty() || r.starts_with([' ', '\t'])) {
            return None;
        }
        n += 1;
        if n > max {
            return Some(line[..line.len() - rest.len()].chars().count() + 1);
        }
        rest = r.trim_start();
    }
    None
}

/// Deserializes YAML text; `path` is used for messages only. Flow nesting deeper than
/// [`MAX_YAML_FLOW_DEPTH`] is refused before parsing (see [`check_yaml_nesting`]).
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    check_yaml_nesting(path, text, MAX_YAML_FLOW_DEPTH)?;
    serde_yaml_ng::from_str(text).map_err(|err| {
        // The message ends with " at line L column C"; the position is already in front.
        let mut message = err.to_string();
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        // serde_yaml's limits, said with what they mean.
        if message == "repetition limit exceeded" {
            message.push_str(
                ": aliases (*name) expand to far more nodes than the file holds (an alias bomb?)",
            );
        } else if message == "recursion limit exceeded" {
            message.push_str(": collections nested more than 128 levels deep");
        }
        match err.location() {
            Some(l) => ConfigError::Parse {
                path: path.to_path_buf(),
                line: l.line(),
                column: l.column(),
                message,
            },
            // No position known (the alias limit): no made-up "0:0".
            None => ConfigError::invalid(path, message),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct C {
        a: u32,
    }

    #[test]
    fn errors_have_positions() {
        let p = Path::new("x.yml");
        assert!(parse_yaml::<C>(p, "a: 1\n").is_ok());
        let err = parse_yaml::<C>(p, "a: 1\nb: 2\n").unwrap_err().to_string();
        assert!(err.starts_with("x.yml:2:1: "), "{err}");
        assert!(err.contains("unknown field `b`"), "{err}");
        let err = parse_yaml::<C>(p, "a: [\n").unwrap_err().to_string();
        assert!(err.starts_with("x.yml:"), "{err}");
        let err = parse_yaml::<C>(p, "a: notanumber\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.yml:1:"), "{err}");
    }

    #[test]
    fn only_regular_files_are_read_and_only_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // A FIFO without a writer: an error at once, not an open that blocks for good.
        let err = read_regular_file(&fifo, 100).unwrap_err().to_string();
        assert_eq!(err, "a FIFO, not a regular file");
        let err = read_regular_file(Path::new("/dev/zero"), 100)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "a character device, not a regular file");
        let err = read_regular_file(dir.path(), 100).unwrap_err().to_string();
        assert_eq!(err, "a directory, not a regular file");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 101]).unwrap();
        let err = read_regular_file(&big, 100).unwrap_err().to_string();
        assert!(err.contains("above the limit of 100 bytes"), "{err}");
        assert_eq!(read_regular_file(&big, 101).unwrap().len(), 101);
        // Through load_yaml: the message names the file.
        let err = load_yaml::<C>(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/dev/zero: cannot read: a character device, not a regular file"
        );
        let bad = dir.path().join("bad.yml");
        std::fs::write(&bad, b"a: \xff\n").unwrap();
        let err = load_yaml::<C>(&bad).unwrap_err().to_string();
        assert!(
            err.ends_with("not UTF-8 text (invalid byte at offset 3)"),
            "{err}"
        );
    }

    #[test]
    fn serde_yaml_limits_are_explained_without_a_made_up_position() {
        let p = Path::new("x.yml");
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse_yaml::<serde_yaml_ng::Value>(p, &bomb)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "x.yml: repetition limit exceeded: aliases (*name) expand to far more nodes than the file holds (an alias bomb?)"
        );
        let deep = format!("a:\n  {}x\n", "- ".repeat(200));
        let err = parse_yaml::<serde_yaml_ng::Value>(p, &deep)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("x.yml:2:") && err.ends_with("nested more than 128 levels deep"),
            "{err}"
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let p = Path::new("w.yml");
        let ok = "a:\n  b: [1, {c: [2]}]\n  d: ['[[[[', \"[[[[\\\"[[[\"]\n  e: it's [x]\n# [[[[[[\n  f: ^\\[E\n  g: ^\\[E\n  h: ^\\[E\n  i: ^\\[E\n";
        assert_eq!(
            check_yaml_nesting(p, ok, 3).map_err(|e| e.to_string()),
            Ok(())
        );
        let flow = format!("a: 1\nb: {}", "[".repeat(100_000));
        let err = check_yaml_nesting(p, &flow, 16).unwrap_err().to_string();
        assert_eq!(err, "w.yml:2:20: brackets nested more than 16 levels deep");
        let flow_lines = format!("a:\n{}", "  {\n".repeat(20));
        let err = check_yaml_nesting(p, &flow_lines, 16)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("w.yml:18:3: "), "{err}");
        let compact = format!("a:\n{}x\n", "- ".repeat(100_000));
        let err = check_yaml_nesting(p, &compact, 16).unwrap_err().to_string();
        assert_eq!(
            err,
            "w.yml:2:33: block sequences (`- - ...`) nested more than 16 levels deep"
        );
        // A dash that starts a scalar (`-1`, `--x`) is no sequence.
        assert!(check_yaml_nesting(p, "- -1\n- --x\n", 1).is_ok());
        // Closing brackets end levels.
        let balanced = "- [1]\n".repeat(1000);
        assert!(check_yaml_nesting(p, &balanced, 1).is_ok());
        // Inside brackets every bracket counts: `[a[a[a` nests too.
        let glued = format!("a: [{}", "a[".repeat(40));
        assert!(check_yaml_nesting(p, &glued, 16).is_err());
        // Through parse_yaml, at serde_yaml's own depth: refused before the parser sees it.
        let deep = format!("a: {}", "[".repeat(200_000));
        let err = parse_yaml::<serde_yaml_ng::Value>(p, &deep)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "w.yml:1:132: brackets nested more than 128 levels deep"
        );
    }
}
