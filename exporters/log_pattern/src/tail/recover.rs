//! Restart recovery: finding each file of the saved state again (at its path, as a rotated
//! sibling, or compressed after rotation) and resuming it at its saved offset.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::lines::LineReader;
use super::{is_gz, mark_of, owned, same_content, Engine, Start};
use crate::state::{self, Done, FileState, Fingerprint};

impl Engine {
    /// Finds a saved file again. Returns its path if it is still the active file there.
    pub(super) fn recover(
        &mut self,
        s: FileState,
        found: &mut HashMap<PathBuf, Option<Arc<File>>>,
        claimed: &mut HashSet<PathBuf>,
    ) -> Option<PathBuf> {
        let partials = [
            state::from_hex(&s.partials[0]).unwrap_or_default(),
            state::from_hex(&s.partials[1]).unwrap_or_default(),
        ];
        let reader = LineReader::at(s.offset, s.format, partials);
        // 0. A compressed file that was being read: the same decompressed first bytes.
        if is_gz(&s.path) {
            if !claimed.contains(&s.path) && self.gz_matches(&s.path, s.fingerprint) {
                claimed.insert(s.path.clone());
                tracing::info!(path = %s.path.display(), offset = s.offset, "resuming a compressed file");
                if !self.queue_gz(&s.path, &s.labels, reader) {
                    self.gz_not_resumed(&s.path);
                }
                return None;
            }
            tracing::warn!(path = %s.path.display(), offset = s.offset, "compressed file not found again; its unread rest is lost");
            self.counters.files_lost += 1;
            return None;
        }
        // 1. At its path, same inode and same first bytes.
        // 2. A rotated sibling with the same inode.
        let (candidates, gz) = candidates(&s.path);
        for p in candidates {
            if claimed.contains(&p) {
                continue;
            }
            // The file the scan opened at this path, or the path opened now.
            let file = match found.get(&p) {
                Some(Some(f)) => owned(Arc::clone(f)),
                _ => Self::open_path(&p).ok(),
            };
            let Some(file) = file else { continue };
            let Ok(meta) = file.metadata() else { continue };
            if (meta.dev(), meta.ino()) != (s.dev, s.ino) || !same_content(&file, s.fingerprint) {
                continue;
            }
            claimed.insert(p.clone());
            let is_active = p == s.path && !s.rotated && found.contains_key(&p);
            let mut reader = reader;
            if meta.len() < s.offset {
                self.counters.truncations += 1;
                reader.reset();
            }
            tracing::info!(path = %p.display(), offset = reader.offset, rotated = !is_active, "resuming");
            // `open` counts files_opened; a resumed file is not a new one.
            let offset = reader.offset;
            let mark = mark_of(&file, offset);
            let start = Start::Resume(reader);
            if self.open(&p, s.labels.clone(), start, !is_active, Some(file)) {
                self.counters.files_opened -= 1;
                if let Some(tf) = self.files.values_mut().last() {
                    tf.path = s.path.clone();
                }
            } else {
                // Not opened now (no descriptor free): a tombstone with the offset makes a
                // later scan read it on from there (`released_offset`) rather than from 0,
                // and keeps a rotated one from being read again.
                if !is_active {
                    tracing::warn!(path = %p.display(), offset, "rotated file not resumed; its unread rest is lost");
                    self.counters.files_lost += 1;
                }
                let done = Done {
                    dev: s.dev,
                    ino: s.ino,
                    fingerprint: s.fingerprint,
                    offset,
                    mark,
                    gz: false,
                };
                self.remember_done(&p, done);
            }
            return is_active.then_some(p);
        }
        // 3. Compressed after rotation: a .gz sibling with the same first bytes and the same
        //    bytes before the saved offset. Files of one container may begin alike (a long
        //    line), and a tombstone's inode may have been reused by the .gz since, so the
        //    tombstones only decide for a state saved without the bytes before the offset.
        if s.fingerprint.len > 0 {
            for p in gz {
                if claimed.contains(&p)
                    || s.mark.len == 0 && self.read_already(&p)
                    || !self.gz_matches(&p, s.fingerprint)
                {
                    continue;
                }
                if s.mark.len > 0 && !gz_mark_matches(&p, s.offset, s.mark) {
                    tracing::debug!(path = %p.display(), saved = %s.path.display(), "same first bytes, other content: not the saved file");
                    continue;
                }
                claimed.insert(p.clone());
                tracing::info!(path = %p.display(), offset = s.offset, "resuming from compressed rotated file");
                if !self.queue_gz(&p, &s.labels, reader) {
                    self.gz_not_resumed(&p);
                }
                return None;
            }
        }
        if s.removed {
            tracing::debug!(path = %s.path.display(), "removed file read to its end: gone");
            return None;
        }
        tracing::warn!(path = %s.path.display(), offset = s.offset, "saved file not found again; its unread rest is lost");
        self.counters.files_lost += 1;
        None
    }
}

impl Engine {
    /// Whether a tombstone of its directory names this very file (by device and inode): a
    /// compressed file read to its end (or being read) before the restart.
    fn read_already(&self, p: &Path) -> bool {
        let Ok(meta) = std::fs::metadata(p) else {
            return false;
        };
        let id = (meta.dev(), meta.ino());
        p.parent()
            .and_then(|d| self.done.get(d))
            .is_some_and(|v| v.iter().any(|t| (t.dev, t.ino) == id))
    }
}

/// Whether the decompressed bytes of `p` before `offset` have fingerprint `mark` (see
/// [`FileState::mark`]): the saved file's content up to where it was read.
fn gz_mark_matches(p: &Path, offset: u64, mark: Fingerprint) -> bool {
    let n = u64::from(mark.len);
    let Some(from) = offset.checked_sub(n) else {
        return false;
    };
    let Ok(f) = File::open(p) else { return false };
    let mut d = flate2::read::MultiGzDecoder::new(f);
    if std::io::copy(&mut (&mut d).take(from), &mut std::io::sink()).ok() != Some(from) {
        return false;
    }
    let mut w = Vec::with_capacity(mark.len as usize);
    (&mut d).take(n).read_to_end(&mut w).is_ok() && Fingerprint::of(&w) == mark
}

/// Where a saved file may be now: its own path, then its rotated siblings (`<name>.*`, sorted);
/// and, apart, its compressed siblings.
fn candidates(path: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut plain = vec![path.to_path_buf()];
    let mut gz = Vec::new();
    if let (Some(dir), Some(base)) = (path.parent(), path.file_name()) {
        let prefix = format!("{}.", base.to_string_lossy());
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut sibs: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect();
            sibs.sort();
            for p in sibs {
                if is_gz(&p) {
                    gz.push(p);
                } else {
                    plain.push(p);
                }
            }
        }
    }
    (plain, gz)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::path::{Path, PathBuf};

    use super::super::tests::{count, engine, found};

    fn append(p: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    /// `<p>` compressed to `<p>.gz` as logrotate and kubelet do (`.gz.tmp`, rename, remove).
    fn gzip(p: &Path) -> PathBuf {
        let gz = PathBuf::from(format!("{}.gz", p.display()));
        let tmp = PathBuf::from(format!("{}.gz.tmp", p.display()));
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&tmp).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(&std::fs::read(p).unwrap()).unwrap();
        enc.finish().unwrap();
        std::fs::rename(&tmp, &gz).unwrap();
        std::fs::remove_file(p).unwrap();
        gz
    }

    /// `n` matching lines, long enough that a file of a few holds a whole fingerprint.
    fn lines(tag: &str, n: usize) -> String {
        (0..n)
            .map(|i| format!("ERROR {tag} {i} of a container writing its log\n"))
            .collect()
    }

    /// A restart from `saved` following `p`: the matches once two scans read all there is
    /// (no saved file counted lost).
    fn restart(saved: crate::state::State, p: &Path) -> u64 {
        let mut b = engine();
        b.restore(saved);
        for _ in 0..2 {
            b.apply_scan(found(p), &[], false);
            while b.read_all() {}
        }
        assert_eq!(b.state().counters.files_lost, 0);
        count(&b)
    }

    /// While the exporter is down, the saved file is rotated twice (renamed, then compressed
    /// at the next rotation): its unread rest is read from the `.gz`, every line once.
    #[test]
    fn a_file_rotated_twice_and_compressed_while_down_is_resumed_from_its_gz() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        append(&p, &lines("a", 50));
        let mut a = engine();
        a.apply_scan(found(&p), &[], false);
        a.read_all();
        assert_eq!(count(&a), 50);
        let saved = a.state();
        drop(a);
        // Down: 0.log grows, is rotated, the next one too, and the first rotated one compressed.
        append(&p, &lines("a unread", 30));
        std::fs::rename(&p, d.path().join("0.log.1")).unwrap();
        append(&p, &lines("b", 20));
        std::fs::rename(&p, d.path().join("0.log.2")).unwrap();
        gzip(&d.path().join("0.log.1"));
        append(&p, &lines("c", 10));
        assert_eq!(restart(saved, &p), 110);
    }

    /// One long line, longer than a fingerprint.
    fn long_line() -> String {
        format!("ERROR {}\n", "x".repeat(400))
    }

    /// The state after `p` (one long line and 40 more) was read, rotated to `<p>.1` (and
    /// compressed if `compress`), released, and a new `p` (the same long line and 10 more) read.
    fn two_files_beginning_alike(p: &Path, compress: bool) -> crate::state::State {
        let long = long_line();
        let rotated = PathBuf::from(format!("{}.1", p.display()));
        append(p, &format!("{long}{}", lines("a", 40)));
        let mut a = engine();
        a.apply_scan(found(p), &[], false);
        a.read_all();
        std::fs::rename(p, &rotated).unwrap();
        append(p, &format!("{long}{}", lines("b", 10)));
        a.apply_scan(found(p), &[], false);
        a.read_all();
        a.reap();
        if compress {
            gzip(&rotated);
        }
        a.apply_scan(found(p), &[], false);
        a.read_all();
        assert_eq!(count(&a), 41 + 11);
        a.state()
    }

    /// Two files of one container begin with the same bytes (one long line each): the one
    /// already read, compressed while the exporter runs or while it is down, is not taken for
    /// the saved one, compressed while the exporter was down; the saved one's unread rest is
    /// read once, the other not again.
    #[test]
    fn a_compressed_file_with_the_same_first_bytes_is_not_taken_for_the_saved_one() {
        for compressed_while_up in [true, false] {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("0.log");
            let saved = two_files_beginning_alike(&p, compressed_while_up);
            // Down: the saved file grows, is rotated and compressed, a new one begins.
            append(&p, &lines("b unread", 25));
            std::fs::rename(&p, d.path().join("0.log.2")).unwrap();
            append(&p, &lines("c", 5));
            if !compressed_while_up {
                gzip(&d.path().join("0.log.1"));
            }
            gzip(&d.path().join("0.log.2"));
            assert_eq!(
                restart(saved, &p),
                41 + 11 + 25 + 5,
                "{compressed_while_up}"
            );
        }
    }

    /// A file written and rotated while the exporter was down begins like an older one read
    /// before (plain or compressed): it is read, not taken for that one by its first bytes.
    #[test]
    fn a_file_rotated_while_down_that_begins_like_one_read_before_is_read() {
        for compressed in [true, false] {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("0.log");
            let saved = two_files_beginning_alike(&p, compressed);
            let long = long_line();
            // Down: the saved file is rotated; a new one is written and rotated in turn.
            append(&p, &lines("b unread", 25));
            std::fs::rename(&p, d.path().join("0.log.2")).unwrap();
            append(&p, &format!("{long}{}", lines("c", 30)));
            std::fs::rename(&p, d.path().join("0.log.3")).unwrap();
            append(&p, &format!("{long}{}", lines("d", 5)));
            assert_eq!(
                restart(saved, &p),
                41 + 11 + 25 + 31 + 6,
                "compressed: {compressed}"
            );
        }
    }
}
