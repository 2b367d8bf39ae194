//! Restart recovery: finding each file of the saved state again (at its path, as a rotated
//! sibling, or compressed after rotation) and resuming it at its saved offset.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::lines::LineReader;
use super::{is_gz, owned, same_content, Engine, Start};
use crate::state::{self, Done, FileState};

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
                };
                self.remember_done(&p, done);
            }
            return is_active.then_some(p);
        }
        // 3. Compressed after rotation: same first bytes inside a .gz sibling.
        if s.fingerprint.len > 0 {
            for p in gz {
                if claimed.contains(&p) || !self.gz_matches(&p, s.fingerprint) {
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
