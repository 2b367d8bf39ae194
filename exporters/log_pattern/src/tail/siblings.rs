//! Whether a rotated sibling found under a new identity (device and inode) is a file already
//! read: its compressed form, or a copy. Equal first bytes are not enough: the files of one
//! container may all begin alike (a long first line), and a file written and rotated while the
//! exporter was down must be read, not taken for an older one. So the content must also agree
//! further on: at a finished file's saved offset ([`Done::mark`]), or, for a followed file,
//! at the end of what both hold.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::{mark_of, same_content};
use crate::state::{Done, Fingerprint, MARK_BYTES};

/// The tombstone of the compressed file `f` (`meta` its metadata, `head` its decompressed
/// first bytes): known again by its size and last bytes as stored, which no other file has.
pub(super) fn gz_done(f: &File, meta: &Metadata, head: &[u8]) -> Done {
    Done {
        dev: meta.dev(),
        ino: meta.ino(),
        fingerprint: Fingerprint::of(head),
        offset: meta.len(),
        mark: mark_of(f, meta.len()),
        gz: true,
    }
}

/// The content of a sibling: a plain file (and its size) or a compressed one.
pub(super) enum Content<'a> {
    Plain(&'a File, u64),
    Gz(&'a Path),
}

/// How a sibling compares with a known file whose first bytes it has (ordered: the best
/// answer over several known files is the greatest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Same {
    No,
    /// Its content stops before the place to compare: a compression still being written?
    Short,
    Yes,
}

impl Content<'_> {
    /// How far the content reaches, up to `end`, and its last (up to [`MARK_BYTES`]) bytes
    /// before that. A compressed stream that ends early or is damaged reaches as far as it
    /// decompresses.
    fn tail_before(&self, end: u64) -> (u64, Vec<u8>) {
        match *self {
            Content::Plain(f, len) => {
                let reach = end.min(len);
                let from = reach.saturating_sub(MARK_BYTES);
                let mut buf = vec![0u8; usize::try_from(reach - from).unwrap_or(0)];
                match f.read_exact_at(&mut buf, from) {
                    Ok(()) => (reach, buf),
                    Err(_) => (0, Vec::new()),
                }
            }
            Content::Gz(p) => gz_tail_before(p, end),
        }
    }
}

fn gz_tail_before(p: &Path, end: u64) -> (u64, Vec<u8>) {
    let Ok(f) = File::open(p) else {
        return (0, Vec::new());
    };
    let mut d = flate2::read::MultiGzDecoder::new(f).take(end);
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = LastBytes::default();
    loop {
        match d.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => last.push(&buf[..k]),
        }
    }
    (last.reach, last.bytes)
}

/// The last (up to [`MARK_BYTES`]) bytes of a stream read so far, and its length.
#[derive(Debug, Default)]
struct LastBytes {
    reach: u64,
    bytes: Vec<u8>,
}

impl LastBytes {
    fn push(&mut self, chunk: &[u8]) {
        self.reach += chunk.len() as u64;
        let keep = &chunk[chunk.len().saturating_sub(MARK_BYTES as usize)..];
        self.bytes.extend_from_slice(keep);
        let extra = self.bytes.len().saturating_sub(MARK_BYTES as usize);
        self.bytes.drain(..extra);
    }
}

/// Whether `content`, whose first bytes are those of the finished file `t`, is `t`'s content:
/// it reaches `t`'s saved offset with the same bytes before it (whatever its identity: an
/// inode freed while the exporter was down may be another file's by now); a compressed `t`:
/// the same size and last bytes as stored. Without a mark: a tombstone of a truncated file
/// (no identity: its copy may be anywhere) and one saved with an offset are taken on their
/// first bytes alone.
pub(super) fn same_as_done(t: &Done, content: &Content<'_>) -> Same {
    if t.gz {
        let stored = match *content {
            Content::Gz(p) => File::open(p).ok(),
            Content::Plain(..) => None,
        };
        let same = stored.is_some_and(|f| {
            f.metadata().is_ok_and(|m| m.len() == t.offset) && mark_of(&f, t.offset) == t.mark
        });
        return if same { Same::Yes } else { Same::No };
    }
    if t.mark.len == 0 {
        return if t.dev == 0 && t.ino == 0 || t.offset > 0 {
            Same::Yes
        } else {
            Same::No
        };
    }
    match content.tail_before(t.offset) {
        // A plain file renamed at rotation does not grow; a compression may still be written.
        (reach, _) if reach < t.offset => match content {
            Content::Gz(_) => Same::Short,
            Content::Plain(..) => Same::No,
        },
        (_, tail) if Fingerprint::of(&tail) == t.mark => Same::Yes,
        _ => Same::No,
    }
}

/// Whether `content`, whose first bytes are `fp`, those of the followed file `f`, holds `f`'s
/// content as far as both reach: its compressed form (complete or being written) or a copy.
/// A followed file that no longer begins with `fp` was truncated (copytruncate) since: its
/// copy is known by the first bytes alone, as by a truncated file's tombstone.
pub(super) fn same_as_open(f: &File, fp: Fingerprint, content: &Content<'_>) -> bool {
    if !same_content(f, fp) {
        return true;
    }
    let Ok(meta) = f.metadata() else {
        return false;
    };
    let (reach, tail) = content.tail_before(meta.len());
    let mut mine = vec![0u8; tail.len()];
    f.read_exact_at(&mut mine, reach - tail.len() as u64)
        .is_ok()
        && mine == tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(path: &Path, body: &[u8]) {
        let f = File::create(path).unwrap();
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        e.write_all(body).unwrap();
        e.finish().unwrap();
    }

    fn mark(body: &[u8], offset: usize) -> Fingerprint {
        Fingerprint::of(&body[offset.saturating_sub(MARK_BYTES as usize)..offset])
    }

    fn done(body: &[u8]) -> Done {
        Done {
            dev: 1,
            ino: 2,
            fingerprint: Fingerprint::of(&body[..body.len().min(256)]),
            offset: body.len() as u64,
            mark: mark(body, body.len()),
            gz: false,
        }
    }

    fn body(tag: &str) -> Vec<u8> {
        let mut b = "a long first line that every file of this container begins with, "
            .repeat(8)
            .into_bytes();
        b.extend_from_slice(
            format!("\nthen the lines of {tag}\n")
                .repeat(200)
                .as_bytes(),
        );
        b
    }

    #[test]
    fn the_compressed_form_of_a_finished_file_is_that_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log.1.gz");
        let b = body("one");
        gz(&p, &b);
        assert_eq!(same_as_done(&done(&b), &Content::Gz(&p)), Same::Yes);
    }

    #[test]
    fn another_file_with_the_same_first_bytes_is_not_a_finished_file() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (body("one"), body("two"));
        let p = dir.path().join("0.log.2");
        std::fs::write(&p, &two).unwrap();
        let f = File::open(&p).unwrap();
        let plain = Content::Plain(&f, two.len() as u64);
        assert_eq!(same_as_done(&done(&one), &plain), Same::No);
        let z = dir.path().join("0.log.2.gz");
        gz(&z, &two);
        assert_eq!(same_as_done(&done(&one), &Content::Gz(&z)), Same::No);
    }

    #[test]
    fn a_compression_cut_short_is_short_not_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let b = body("one");
        let z = dir.path().join("0.log.1.gz");
        gz(&z, &b[..b.len() / 2]);
        assert_eq!(same_as_done(&done(&b), &Content::Gz(&z)), Same::Short);
    }

    #[test]
    fn a_compressed_file_is_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let b = body("one");
        let z = dir.path().join("0.log.1.gz");
        gz(&z, &b);
        let f = File::open(&z).unwrap();
        let t = gz_done(&f, &f.metadata().unwrap(), &b[..256]);
        assert_eq!(same_as_done(&t, &Content::Gz(&z)), Same::Yes);
        // A file beginning alike, plain or compressed (at an inode the first one had).
        let p = dir.path().join("0.log.3");
        std::fs::write(&p, &b).unwrap();
        let pf = File::open(&p).unwrap();
        let plain = Content::Plain(&pf, b.len() as u64);
        assert_eq!(same_as_done(&t, &plain), Same::No);
        let z2 = dir.path().join("0.log.3.gz");
        gz(&z2, &body("two"));
        assert_eq!(same_as_done(&t, &Content::Gz(&z2)), Same::No);
    }

    #[test]
    fn a_truncated_files_tombstone_knows_its_copy_by_its_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let b = body("one");
        let p = dir.path().join("0.log.1");
        std::fs::write(&p, &b).unwrap();
        let f = File::open(&p).unwrap();
        let t = Done {
            dev: 0,
            ino: 0,
            offset: 0,
            mark: Fingerprint::default(),
            ..done(&b)
        };
        let copy = Content::Plain(&f, b.len() as u64);
        assert_eq!(same_as_done(&t, &copy), Same::Yes);
    }

    #[test]
    fn a_followed_file_is_compared_as_far_as_both_reach() {
        let dir = tempfile::tempdir().unwrap();
        let b = body("one");
        let open_path = dir.path().join("0.log.1");
        std::fs::write(&open_path, &b).unwrap();
        let open = File::open(&open_path).unwrap();
        let fp = Fingerprint::of(&b[..256]);
        // Its compression, half written.
        let z = dir.path().join("0.log.1.gz");
        gz(&z, &b[..b.len() / 2]);
        assert!(same_as_open(&open, fp, &Content::Gz(&z)));
        // A copy taken before the file grew further.
        let c = dir.path().join("0.log.copy");
        std::fs::write(&c, &b[..b.len() - 100]).unwrap();
        let cf = File::open(&c).unwrap();
        let copy = Content::Plain(&cf, (b.len() - 100) as u64);
        assert!(same_as_open(&open, fp, &copy));
        // Another file beginning alike.
        let o = dir.path().join("0.log.2");
        let two = body("two");
        std::fs::write(&o, &two).unwrap();
        let of = File::open(&o).unwrap();
        let other = Content::Plain(&of, two.len() as u64);
        assert!(!same_as_open(&open, fp, &other));
        // Once the followed file is truncated and written anew, a copy of what it held.
        std::fs::write(&open_path, "new content\n").unwrap();
        assert!(same_as_open(&open, fp, &copy));
    }
}
