//! The state file: file offsets and every counter value, saved together and atomically.
//!
//! A save creates the file's directory if needed, writes `<file>.tmp`, fsyncs it, renames it over `<file>` and fsyncs the directory, so
//! after a crash (SIGKILL, power loss) the file holds one complete earlier save, never a mix.
//! Because offsets and counters come from the same instant, lines after the last save are read
//! again on restart and counted exactly once. A state file that does not parse or cannot be
//! read is renamed to `<file>.corrupt-<unix time>` and reported; the exporter starts afresh
//! rather than refusing to start (or overwriting it).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::format::Format;
use crate::sink::{Labels, RuleInfo, SeriesValue};
use crate::tail::counters::Counters;

/// Format version of the state file.
pub const VERSION: u32 = 1;

/// Errors of the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid state file ({message}); moved aside to {}", path.display(), aside.display())]
    Corrupt {
        path: PathBuf,
        aside: PathBuf,
        message: String,
    },
    #[error("cannot encode the state: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Identity of a file's content: a hash of its first `len` bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

/// How many leading bytes identify a file.
pub const FINGERPRINT_BYTES: usize = 256;

impl Fingerprint {
    /// FNV-1a over `bytes` (stable across versions, unlike std's hasher).
    pub fn of(bytes: &[u8]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            hash: h,
        }
    }
}

/// One followed file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileState {
    /// The path it was found at (a rotated file has since been renamed).
    pub path: PathBuf,
    pub labels: Labels,
    pub dev: u64,
    pub ino: u64,
    pub fingerprint: Fingerprint,
    /// End of the last complete physical line read.
    pub offset: u64,
    pub format: Option<Format>,
    /// Joined partial-line fragments not yet completed, per stream (stdout, stderr), hex.
    #[serde(default)]
    pub partials: [String; 2],
    #[serde(default)]
    pub rotated: bool,
    /// No path named the file any more and it was read to its end: not finding it at
    /// restart loses nothing.
    #[serde(default)]
    pub removed: bool,
    /// Fingerprint of the up to [`MARK_BYTES`] bytes before `offset` (of a plain file): tells
    /// the file, once compressed under a new inode, from a sibling with the same first bytes.
    #[serde(default)]
    pub mark: Fingerprint,
}

/// How many bytes before the saved offset [`FileState::mark`] covers.
pub const MARK_BYTES: u64 = 64;

/// A rotated file (plain or compressed) already read to its end and let go, remembered while it
/// is still in its directory so that it is not read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub dev: u64,
    pub ino: u64,
    /// Of the (decompressed) content.
    pub fingerprint: Fingerprint,
    /// Where reading stopped (for a file found again at its path).
    #[serde(default)]
    pub offset: u64,
    /// Fingerprint of the up to [`MARK_BYTES`] bytes before `offset`: the file (or its
    /// compressed form) is told by them from another file with the same first bytes.
    #[serde(default)]
    pub mark: Fingerprint,
    /// A compressed file: `offset` is its size and `mark` covers its last bytes as stored.
    #[serde(default)]
    pub gz: bool,
}

/// The whole state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub saved_at: f64,
    pub files: Vec<FileState>,
    /// Rotated files already read, per directory.
    #[serde(default)]
    pub done: std::collections::BTreeMap<PathBuf, Vec<Done>>,
    pub counters: Counters,
    pub matches: Vec<SeriesValue>,
    /// The rules of that instant (not saved: they come from the config file).
    #[serde(skip)]
    pub rules: Vec<RuleInfo>,
}

/// Hex encoding of partial-line bytes (exact, whatever the bytes).
pub fn to_hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(char::from(H[usize::from(x >> 4)]));
        s.push(char::from(H[usize::from(x & 15)]));
    }
    s
}

/// Inverse of [`to_hex`]; `None` on bad input.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| {
            let d = |c: u8| char::from(c).to_digit(16);
            Some(u8::try_from(d(p[0])? * 16 + d(p[1])?).unwrap_or(0))
        })
        .collect()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Saves `state` atomically to `path`.
pub fn save(path: &Path, state: &State) -> Result<(), StateError> {
    let body = serde_json::to_vec(state)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&body).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

/// Largest state file read: far above what offsets and series values take, a bound on
/// memory all the same.
pub const MAX_STATE_BYTES: u64 = 1 << 30;

/// Loads the state file. `Ok(None)` when there is none (first start). A file that does not
/// parse, cannot be read or is larger than [`MAX_STATE_BYTES`] is moved aside and reported as
/// [`StateError::Corrupt`] (an error moving it, or something other than a regular file at
/// the path, is [`StateError::Io`]).
pub fn load(path: &Path) -> Result<Option<State>, StateError> {
    let message = match common::config::read_regular_file(path, MAX_STATE_BYTES) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // A regular file that cannot be read (permissions, I/O error): set aside too, or the
        // next save would replace the offsets and counters it holds.
        Err(e) if std::fs::metadata(path).is_ok_and(|m| m.is_file()) => {
            format!("cannot read it: {e}")
        }
        Err(e) => return Err(io_err(path)(e)),
        Ok(body) => match serde_json::from_slice::<State>(&body) {
            Ok(s) if s.version == VERSION => return Ok(Some(s)),
            Ok(s) => format!("unsupported version {}", s.version),
            Err(e) => e.to_string(),
        },
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{now}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside).map_err(io_err(path))?;
    Err(StateError::Corrupt {
        path: path.to_path_buf(),
        aside,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&b)).unwrap(), b);
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn save_load_and_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        assert!(load(&p).unwrap().is_none());
        let mut s = State {
            version: VERSION,
            ..State::default()
        };
        s.counters.lines_read = 42;
        s.files.push(FileState {
            path: "/x/0.log".into(),
            labels: vec![("pod".into(), "p".into())],
            dev: 1,
            ino: 2,
            fingerprint: Fingerprint::of(b"abc"),
            offset: 10,
            format: Some(Format::Cri),
            partials: [to_hex(b"\xffpart"), String::new()],
            rotated: false,
            removed: false,
            mark: Fingerprint::of(b"def"),
        });
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap().unwrap(), s);
        assert!(!d.path().join("state.json.tmp").exists());

        std::fs::write(&p, b"{ not json").unwrap();
        let err = load(&p).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("moved aside"), "{err}");
        assert!(!p.exists());
        // After setting it aside, the next start is a first start.
        assert!(load(&p).unwrap().is_none());

        // A missing directory is created; an unwritable location is an error, not a panic.
        assert!(save(&d.path().join("new/dir/state.json"), &s).is_ok());
        std::fs::write(d.path().join("file"), b"").unwrap();
        assert!(save(&d.path().join("file/state.json"), &s).is_err());

        // Larger than the cap (sparse: never read): set aside, not read into memory.
        std::fs::File::create(&p)
            .unwrap()
            .set_len(MAX_STATE_BYTES + 1)
            .unwrap();
        let err = load(&p).unwrap_err().to_string();
        assert!(err.contains("above the limit of 1073741824 bytes"), "{err}");
        assert!(!p.exists());
        // A FIFO at the path: an error at once (opening it for reading would block), and it
        // is left where it is.
        let made = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap();
        assert!(made.success());
        let err = load(&p).unwrap_err();
        assert!(matches!(err, StateError::Io { .. }), "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(p.exists());
    }
}
