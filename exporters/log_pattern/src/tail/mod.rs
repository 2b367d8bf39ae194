//! The tailing engine: which files are followed, from where, and when they are let go.
//!
//! The engine is synchronous and owned by one thread ([`crate::service`]); it is driven by
//! scans ([`Engine::apply_scan`]) and read rounds ([`Engine::read_all`]). Files are held open
//! and identified by device, inode and a fingerprint of their first bytes:
//! - a path whose inode changed was rotated: the old descriptor is read to its end and released
//!   once it stayed quiet for `rotate_wait`; the new file is read from byte 0;
//! - a file that shrank below the read position (copytruncate) is read again from byte 0;
//! - at the first scan after a restart, saved files are found again by identity at their path,
//!   among their rotated siblings (`0.log.<time>`), or by fingerprint inside a `.gz` sibling;
//!   files that appeared while the exporter was down are read from byte 0.
//!
//! Offsets and counters are exported together by [`Engine::state`], so a save is consistent.

pub mod counters;
pub mod lines;
mod recover;
mod siblings;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::alloc::Sparse;

use crate::config::StartAt;
use crate::discovery::{Found, Scope};
use crate::sink::{Labels, LineSink, SourceId};
use crate::state::{self, Done, FileState, Fingerprint, State, FINGERPRINT_BYTES, MARK_BYTES};
use crate::tail::counters::{Counters, Gauges};
use lines::{Ctx, LineReader};
use siblings::{Content, Same};

/// Size and modification time of a file when it was judged.
type Stamp = (u64, Option<std::time::SystemTime>);

/// How long a short rotated file must stay unmodified before it is judged new.
const SETTLE: Duration = Duration::from_secs(2);

/// Tuning of the engine.
#[derive(Debug, Clone)]
pub struct Options {
    /// Longest line kept (joined partials included).
    pub max_line_bytes: usize,
    /// How long a rotated file must stay quiet at its end before it is released.
    pub rotate_wait: Duration,
    /// Most files held open at once.
    pub max_open_files: usize,
    /// Where files present at the very first start begin.
    pub start_at: StartAt,
    /// Most bytes read from one file in one round, so that one busy file cannot starve others.
    pub read_budget: u64,
    /// Most bytes read from all files in one round (the next round goes on with the next
    /// file), so that scrapes and scans, handled between two rounds, wait a bounded time
    /// while a large backlog is read.
    pub round_budget: u64,
    /// Observe the event lag (off for `replay`, where lines are old by design).
    pub lag: bool,
    /// The glob sources, for the lag by source and the lines' own timestamps.
    pub stamps: crate::timestamp::Stamps,
    /// How long the series of a source whose files are all gone are kept (so that Prometheus
    /// scrapes their last value) before they are dropped.
    pub series_retention: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_line_bytes: 256 * 1024,
            rotate_wait: Duration::from_secs(5),
            max_open_files: 1024,
            start_at: StartAt::End,
            read_budget: 8 << 20,
            round_budget: 64 << 20,
            lag: true,
            stamps: Default::default(),
            series_retention: Duration::from_secs(300),
        }
    }
}

struct TailFile {
    path: PathBuf,
    labels: Labels,
    source: SourceId,
    file: File,
    dev: u64,
    ino: u64,
    fingerprint: Fingerprint,
    reader: LineReader,
    /// When the file left its path (renamed, replaced or removed).
    rotated: Option<Instant>,
    last_growth: Instant,
    last_size: u64,
    /// An error was counted and not yet followed by a good read.
    failing: bool,
    /// The rotated file this one replaced at its path, until this one has data: a line whose
    /// first fragments end that file continues here.
    pred: Option<u64>,
    /// The current read round reached the end of the file.
    drained: bool,
    /// No path names the file any more (removed, or its directory removed): nothing can
    /// open it again, so once read to its end it is released as soon as a durable save holds
    /// its offset (see [`Engine::note_durable`]).
    unlinked: bool,
    /// Generation of the last save handed over, the position it holds, and whether it holds
    /// the file as removed (so that a restart from it does not look for the file).
    saved: (u64, u64, bool),
}

/// A compressed rotated file, read in rounds like a plain one (decompressing many GiB at once
/// would keep scrapes waiting as long). Every gzip member is read (`cat a.gz b.gz`).
struct GzJob {
    path: PathBuf,
    labels: Labels,
    source: SourceId,
    dev: u64,
    ino: u64,
    /// Of its decompressed first bytes.
    fingerprint: Fingerprint,
    decoder: flate2::read::MultiGzDecoder<File>,
    /// Offsets count decompressed bytes.
    reader: LineReader,
    /// Decompressed bytes still to pass over before reading (a file resumed after a restart).
    skip: u64,
}

/// First-bytes fingerprints and identities of a directory's followed files.
type OpenFps = Vec<(Fingerprint, (u64, u64))>;

/// What [`Engine::check_siblings`] gathers over one directory listing.
struct SiblingLook<'a> {
    /// Identities of the followed files.
    open: &'a HashSet<(u64, u64)>,
    open_fps: OpenFps,
    /// Identities of the files the listing saw (or whose tombstones a sibling matched).
    present: HashSet<(u64, u64)>,
    /// Siblings judged known at the last scan, with their size and mtime then.
    before: HashMap<(u64, u64), Stamp>,
    /// Those judged at this one.
    judged: HashMap<(u64, u64), Stamp>,
}

/// Where a newly opened file starts.
enum Start {
    Beginning,
    /// After the last complete line: files present at the very first start.
    End,
    Resume(LineReader),
}

/// The engine.
pub struct Engine {
    opts: Options,
    sink: Box<dyn LineSink>,
    counters: Counters,
    files: BTreeMap<u64, TailFile>,
    /// Compressed files being read, in the order they were found.
    gz: VecDeque<GzJob>,
    active: HashMap<PathBuf, u64>,
    next_key: u64,
    /// Paths whose error was counted, so a persistent error counts once.
    errored: HashSet<PathBuf>,
    /// Paths a scan listed that could not be opened for lack of a descriptor.
    starved: HashSet<PathBuf>,
    /// Saved files to find again at the first scan.
    recovering: Option<Vec<FileState>>,
    /// Rotated files already read, per directory (pruned when they leave it).
    done: BTreeMap<PathBuf, Vec<Done>>,
    /// Per directory, tombstones whose file its last listing did not see.
    unseen: HashMap<PathBuf, HashSet<(u64, u64)>>,
    /// Siblings already judged known, with the size and mtime they had then.
    judged: HashMap<PathBuf, HashMap<(u64, u64), Stamp>>,
    /// A saved state was restored: this is not the very first start.
    had_state: bool,
    /// Generation of the last durable save ([`Engine::note_durable`]).
    durable: u64,
    scanned: bool,
    /// The file the next read round starts with (after a round cut by `round_budget`).
    cursor: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("files", &self.files.len())
            .finish()
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn error_reason(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission_denied",
        std::io::ErrorKind::NotFound => "not_found",
        _ => "io",
    }
}

/// Reads up to `n` leading bytes of `file`.
fn head(file: &File, n: usize) -> std::io::Result<Vec<u8>> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = file.read_at(&mut out[got..], got as u64)?;
        if k == 0 {
            break;
        }
        got += k;
    }
    out.truncate(got);
    Ok(out)
}

fn fingerprint_of(file: &File, size: u64) -> std::io::Result<Fingerprint> {
    let n = usize::try_from(size)
        .unwrap_or(usize::MAX)
        .min(FINGERPRINT_BYTES);
    Ok(Fingerprint::of(&head(file, n)?))
}

/// Fingerprint of the up to [`MARK_BYTES`] bytes of `file` before `offset` (empty when they
/// cannot be read).
fn mark_of(file: &File, offset: u64) -> Fingerprint {
    let from = offset.saturating_sub(MARK_BYTES);
    let mut buf = [0u8; MARK_BYTES as usize];
    let want = &mut buf[..usize::try_from(offset - from).unwrap_or(0)];
    match file.read_exact_at(want, from) {
        Ok(()) => Fingerprint::of(want),
        Err(_) => Fingerprint::default(),
    }
}

/// Whether the first bytes of `file` still have fingerprint `fp`.
fn same_content(file: &File, fp: Fingerprint) -> bool {
    // A longer fingerprint (only in a damaged state file) matches nothing.
    let n = fp.len as usize;
    if n > FINGERPRINT_BYTES {
        return false;
    }
    matches!(head(file, n), Ok(h) if h.len() == n && Fingerprint::of(&h) == fp)
}

/// Where to start in a file present at the very first start: after its last newline.
fn tail_start(file: &File, size: u64) -> u64 {
    const WINDOW: u64 = 64 * 1024;
    let from = size.saturating_sub(WINDOW);
    let mut buf = vec![0u8; usize::try_from(size - from).unwrap_or(0)];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], from + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    match memchr::memrchr(b'\n', &buf[..got]) {
        Some(i) => from + i as u64 + 1,
        None if from == 0 => 0,
        None => size,
    }
}

/// What a line reader of `source` needs (the engine's fields, borrowed apart from its files).
fn line_ctx<'a>(
    sink: &'a mut dyn LineSink,
    counters: &'a mut Counters,
    opts: &'a Options,
    source: SourceId,
    now: Option<f64>,
) -> Ctx<'a> {
    Ctx {
        sink,
        source,
        counters,
        cap: opts.max_line_bytes,
        now,
        stamps: &opts.stamps,
    }
}

/// The file of an `Arc` shared with a scan's result (a duplicate descriptor if still shared).
fn owned(f: Arc<File>) -> Option<File> {
    Arc::try_unwrap(f).or_else(|f| f.try_clone()).ok()
}

fn is_gz(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "gz")
}

impl Engine {
    pub fn new(opts: Options, sink: Box<dyn LineSink>) -> Self {
        Self {
            opts,
            sink,
            counters: Counters::default(),
            files: BTreeMap::new(),
            gz: VecDeque::new(),
            active: HashMap::new(),
            next_key: 0,
            errored: HashSet::new(),
            starved: HashSet::new(),
            recovering: None,
            done: BTreeMap::new(),
            judged: HashMap::new(),
            unseen: HashMap::new(),
            had_state: false,
            durable: u64::MAX,
            scanned: false,
            cursor: 0,
            buf: vec![0; 256 * 1024],
        }
    }

    fn now(&self) -> Option<f64> {
        self.opts.lag.then(unix_now)
    }

    /// Resumes from a saved state: counters now, files at the first scan.
    pub fn restore(&mut self, state: State) {
        self.counters = state.counters;
        self.opts.stamps.retain_configured(&mut self.counters);
        self.sink.restore(&state.matches);
        self.recovering = Some(state.files);
        self.done = state.done;
        self.had_state = true;
    }

    /// Replaces the rules (see [`LineSink::reload`]).
    pub fn reload_rules(
        &mut self,
        rules: &[crate::config::Rule],
    ) -> Result<(), crate::sink::BuildError> {
        self.sink.reload(rules)?;
        // Reloading resolves every source ever seen again, gone ones included.
        self.retain_live();
        Ok(())
    }

    /// The sources of the files followed now.
    fn live_sources(&self) -> Vec<SourceId> {
        self.files
            .values()
            .map(|f| f.source)
            .chain(self.gz.iter().map(|j| j.source))
            .collect()
    }

    /// Lets the rules forget the sources no followed file has any more, and drop their zero
    /// series.
    fn retain_live(&mut self) {
        let live = self.live_sources();
        self.sink.retain_sources(&live);
    }

    /// Drops the series of sources whose files have all been gone for `series_retention`.
    /// Returns how many were dropped.
    pub fn expire_series(&mut self) -> usize {
        let live = self.live_sources();
        let n = self
            .sink
            .expire_series(&live, self.opts.series_retention, Instant::now());
        // Give back the memory of maps that pod churn left mostly empty.
        self.active.shrink_if_sparse();
        self.errored.shrink_if_sparse();
        self.starved.shrink_if_sparse();
        self.judged.shrink_if_sparse();
        self.unseen.shrink_if_sparse();
        self.gz.shrink_if_sparse();
        n
    }

    /// A state of generation `generation` is being saved ([`Engine::state`] is taken next).
    pub fn note_save(&mut self, generation: u64) {
        for tf in self.files.values_mut() {
            tf.saved = (generation, tf.reader.position(), tf.unlinked);
        }
    }

    /// The saves up to `generation` are durable (`u64::MAX` without a state file).
    pub fn note_durable(&mut self, generation: u64) {
        self.durable = generation;
    }

    /// Whether a removed file read to its end waits for a durable save to be closed.
    pub fn awaiting_save(&self) -> bool {
        self.files
            .values()
            .any(|f| f.unlinked && f.drained && !self.offset_durable(f))
    }

    /// Whether a durable save holds the file's position.
    fn offset_durable(&self, f: &TailFile) -> bool {
        let (generation, position, removed) = f.saved;
        self.durable == u64::MAX
            || removed && generation <= self.durable && position >= f.reader.position()
    }

    /// Counters, mutable (the service counts rescans and overflows here so they are saved).
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Counts an error on `path` once until it clears.
    pub fn count_error(&mut self, path: &Path, reason: &str) {
        if self.errored.insert(path.to_path_buf()) {
            tracing::warn!(path = %path.display(), reason, "cannot read");
            Counters::inc(&mut self.counters.read_errors, reason);
        }
    }

    /// Present-tense gauges.
    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges {
            files_open: (self.files.len() + self.gz.len()) as u64,
            files_rotated_open: self.gz.len() as u64,
            ..Gauges::default()
        };
        for f in self.files.values() {
            if f.rotated.is_some() {
                g.files_rotated_open += 1;
            }
            g.backlog_bytes += f.last_size.saturating_sub(f.reader.position());
        }
        g
    }

    /// Everything to save, consistent: offsets and counters of the same instant.
    pub fn state(&self) -> State {
        State {
            version: state::VERSION,
            saved_at: unix_now(),
            files: self
                .files
                .values()
                .map(|f| FileState {
                    path: f.path.clone(),
                    labels: f.labels.clone(),
                    dev: f.dev,
                    ino: f.ino,
                    fingerprint: f.fingerprint,
                    offset: f.reader.offset,
                    format: f.reader.format,
                    partials: [
                        state::to_hex(&f.reader.partials[0]),
                        state::to_hex(&f.reader.partials[1]),
                    ],
                    rotated: f.rotated.is_some(),
                    removed: f.unlinked && f.reader.position() >= f.last_size,
                    mark: mark_of(&f.file, f.reader.offset),
                })
                .chain(self.gz.iter().map(|j| FileState {
                    path: j.path.clone(),
                    labels: j.labels.clone(),
                    dev: j.dev,
                    ino: j.ino,
                    fingerprint: j.fingerprint,
                    offset: j.reader.offset,
                    format: j.reader.format,
                    partials: [
                        state::to_hex(&j.reader.partials[0]),
                        state::to_hex(&j.reader.partials[1]),
                    ],
                    rotated: true,
                    removed: false,
                    mark: Fingerprint::default(),
                }))
                .collect(),
            done: self.done.clone(),
            counters: self.counters.clone(),
            matches: self.sink.values(),
            rules: self.sink.rule_info(),
        }
    }

    /// The offset a released file at `path` with identity `id` was read to, if it is the same
    /// file (same first bytes and bytes before that offset) and has not shrunk.
    fn released_offset(&self, path: &Path, id: (u64, u64), file: &File) -> Option<u64> {
        let t = self
            .done
            .get(path.parent()?)?
            .iter()
            .find(|t| (t.dev, t.ino) == id && t.offset > 0)?;
        let size = file.metadata().ok().filter(|m| m.is_file())?.len();
        let marked = t.mark.len == 0 || mark_of(file, t.offset) == t.mark;
        (same_content(file, t.fingerprint) && size >= t.offset && marked).then_some(t.offset)
    }

    fn remember_done(&mut self, path: &Path, d: Done) {
        // A tombstone dropped while its file is still there makes that file look new at the
        // next restart (read twice), so this only guards memory: the list is pruned to the
        // files present at each scan (`check_siblings`), and directories may keep many rotated
        // files (logrotate `rotate 100`).
        const PER_DIR: usize = 4096;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let v = self.done.entry(dir).or_default();
        if !v.contains(&d) {
            v.push(d);
        }
        if v.len() > PER_DIR {
            v.remove(0);
        }
    }

    /// Decompressed first bytes of a `.gz` file.
    fn gz_head(p: &Path) -> Option<Vec<u8>> {
        let f = File::open(p).ok()?;
        let mut d = flate2::read::MultiGzDecoder::new(f).take(FINGERPRINT_BYTES as u64);
        let mut h = Vec::new();
        d.read_to_end(&mut h).ok()?;
        Some(h)
    }

    /// Rotated siblings of the followed files in `dir` (`<base>.<suffix>`, `.gz` included)
    /// that the engine does not know: renamed (or renamed and compressed) before it ever
    /// opened them. They are read from byte 0, except at the very first start, where they are
    /// history.
    ///
    /// `open` holds the identities of the followed files, `open_fps` the fingerprints of those
    /// of `dir` (a rotated one keeps the path it was found at): the compressed form or copy of
    /// a file is its sibling, and files elsewhere may begin alike (the same long first line)
    /// without being the same.
    fn check_siblings(
        &mut self,
        dir: &Path,
        bases: &[(String, Labels)],
        first: bool,
        open: &HashSet<(u64, u64)>,
        open_fps: OpenFps,
    ) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut look = SiblingLook {
            open,
            open_fps,
            present: HashSet::new(),
            // Siblings judged at an earlier scan; only those still here are carried over.
            before: self.judged.remove(dir).unwrap_or_default(),
            judged: HashMap::new(),
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // A followed path itself: a tombstone of its file (released, or saved and not yet
            // resumed) holds the offset to go on from, as long as that file is there.
            if bases.iter().any(|(b, _)| *b == name) {
                if let Ok(m) = std::fs::metadata(&p) {
                    look.present.insert((m.dev(), m.ino()));
                }
                continue;
            }
            let sibling = bases.iter().find(|(b, _)| {
                name.len() > b.len() + 1
                    && name.starts_with(b.as_str())
                    && name.as_bytes()[b.len()] == b'.'
            });
            if let Some((_, labels)) = sibling.filter(|_| !name.ends_with(".tmp")) {
                self.check_sibling(dir, &p, labels, first, &mut look);
            }
        }
        if !look.judged.is_empty() {
            self.judged.insert(dir.to_path_buf(), look.judged);
        }
        self.prune_tombstones(dir, &look.present);
    }

    /// One rotated sibling `p` of a followed file: known (open, judged before, or a tombstone
    /// or followed file of its directory with its first bytes), or read from byte 0.
    fn check_sibling(
        &mut self,
        dir: &Path,
        p: &Path,
        labels: &Labels,
        first: bool,
        look: &mut SiblingLook<'_>,
    ) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        let id = (meta.dev(), meta.ino());
        look.present.insert(id);
        if look.open.contains(&id) {
            return;
        }
        // Judged before and unchanged since: no need to read (or decompress) its head again.
        let stamp = (meta.len(), meta.modified().ok());
        if look.before.get(&id) == Some(&stamp) {
            look.judged.insert(id, stamp);
            return;
        }
        let gz = is_gz(p);
        let mut plain = None;
        let head = if gz {
            Self::gz_head(p)
        } else {
            plain = File::open(p).ok();
            plain.as_ref().and_then(|f| head(f, FINGERPRINT_BYTES).ok())
        };
        let Some(head) = head else { return };
        let content = match &plain {
            Some(f) if !gz => Content::Plain(f, meta.len()),
            _ => Content::Gz(p),
        };
        let recent = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_none_or(|age| age < SETTLE);
        let known = match self.known_sibling(dir, id, &head, &content, look) {
            Same::Short if recent => return,
            same => same == Same::Yes,
        };
        if known || first && self.first_start_policy() {
            tracing::debug!(path = %p.display(), known, "rotated file not read: known by its content, or history at the first start");
            // Known again by its end (a plain one's compressed form too).
            let done = match &content {
                Content::Plain(f, len) => Done {
                    dev: id.0,
                    ino: id.1,
                    fingerprint: Fingerprint::of(&head),
                    offset: *len,
                    mark: mark_of(f, *len),
                    gz: false,
                },
                Content::Gz(_) => match File::open(p) {
                    Ok(f) => siblings::gz_done(&f, &meta, &head),
                    Err(_) => return,
                },
            };
            self.remember_done(p, done);
            look.judged.insert(id, stamp);
            return;
        }
        // A copy still being written (copytruncate) may not show its first bytes yet:
        // decide once it has them or has been left alone for a while.
        if head.len() < FINGERPRINT_BYTES && recent {
            return;
        }
        tracing::info!(path = %p.display(), "reading a rotated file never seen before");
        if gz {
            // Read in the next rounds; remembered as done from now on, so that it is
            // not queued twice and a restart resumes it from the saved offset.
            if self.queue_gz(p, labels, LineReader::default()) {
                self.counters.rotations += 1;
                self.counters.files_opened += 1;
                look.judged.insert(id, stamp);
            }
        } else if self.open(p, labels.clone(), Start::Beginning, true, plain) {
            // `open` counted it in files_opened.
            self.counters.rotations += 1;
            // Its compressed form may be next in this very listing.
            look.open_fps.push((Fingerprint::of(&head), id));
        }
    }

    /// Whether a sibling with identity `id`, first bytes `head` and `content` is known: a
    /// tombstone of the same content, or a finished or followed file of `dir` it is the
    /// compressed form or a copy of (see [`siblings`]). The tombstones it matches stay.
    fn known_sibling(
        &self,
        dir: &Path,
        id: (u64, u64),
        head: &[u8],
        content: &Content<'_>,
        look: &mut SiblingLook<'_>,
    ) -> Same {
        let begins = |fp: &Fingerprint| {
            let n = fp.len as usize;
            head.len() >= n && Fingerprint::of(&head[..n]) == *fp
        };
        let tombs = self.done.get(dir).map(Vec::as_slice).unwrap_or_default();
        let mut best = Same::No;
        // Decompressing to a plain file's mark is the dear comparison: only when no other
        // tombstone (the compressed file's own, checked on its stored bytes) knows it.
        let dear = |t: &Done| matches!(content, Content::Gz(_)) && !t.gz && t.mark.len > 0;
        let (first, later): (Vec<&Done>, Vec<&Done>) = tombs
            .iter()
            .filter(|t| begins(&t.fingerprint))
            .partition(|t| !dear(t));
        for t in first.into_iter().chain(later) {
            if best == Same::Yes && dear(t) {
                break;
            }
            let same = if t.mark.len == 0 && (t.dev, t.ino) == id {
                Same::Yes
            } else if t.mark.len > 0 || t.fingerprint.len > 0 {
                siblings::same_as_done(t, content)
            } else {
                continue;
            };
            if same == Same::Yes {
                look.present.insert((t.dev, t.ino));
            }
            best = best.max(same);
        }
        if best == Same::Yes {
            return best;
        }
        let open = look
            .open_fps
            .iter()
            .filter(|(fp, _)| fp.len > 0 && begins(fp));
        for (fp, open_id) in open {
            let file = self.files.values().find(|f| (f.dev, f.ino) == *open_id);
            if file.is_some_and(|f| siblings::same_as_open(&f.file, *fp, content)) {
                return Same::Yes;
            }
        }
        best
    }

    /// A listing races with renames in the directory: `gzip` renames `<f>.gz.tmp` to
    /// `<f>.gz`, then removes `<f>`, and one listing may hold neither. A tombstone goes once
    /// two listings in a row did not see its file.
    fn prune_tombstones(&mut self, dir: &Path, present: &HashSet<(u64, u64)>) {
        let unseen_before = self.unseen.remove(dir).unwrap_or_default();
        if let Some(v) = self.done.get_mut(dir) {
            let mut unseen = HashSet::new();
            v.retain(|t| {
                let id = (t.dev, t.ino);
                if present.contains(&id) {
                    return true;
                }
                unseen.insert(id);
                !unseen_before.contains(&id)
            });
            if v.is_empty() {
                self.done.remove(dir);
            } else if !unseen.is_empty() {
                self.unseen.insert(dir.to_path_buf(), unseen);
            }
        }
    }

    /// Follows `path`, with `opened` (the file opened when it was found, which its path may
    /// no longer name) or else by opening the path.
    fn open(
        &mut self,
        path: &Path,
        labels: Labels,
        start: Start,
        rotated: bool,
        opened: Option<File>,
    ) -> bool {
        if self.files.len() + self.gz.len() >= self.opts.max_open_files {
            self.count_error(path, "too_many_files");
            if !rotated {
                self.starved.insert(path.to_path_buf());
            }
            return false;
        }
        let file = match opened {
            Some(f) => f,
            None => match Self::open_path(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    self.count_error(path, "not_a_file");
                    return false;
                }
                Err(e) => {
                    self.count_error(path, error_reason(&e));
                    return false;
                }
            },
        };
        let meta = match file.metadata() {
            Ok(m) if m.is_file() => m,
            Ok(_) => {
                self.count_error(path, "not_a_file");
                return false;
            }
            Err(e) => {
                self.count_error(path, error_reason(&e));
                return false;
            }
        };
        let size = meta.len();
        let fingerprint = match fingerprint_of(&file, size) {
            Ok(fp) => fp,
            Err(e) => {
                self.count_error(path, error_reason(&e));
                return false;
            }
        };
        self.errored.remove(path);
        let mut reader = match start {
            Start::Beginning => LineReader::default(),
            Start::End => LineReader::at(tail_start(&file, size), None, Default::default()),
            Start::Resume(r) => r,
        };
        reader.stamp = reader.stamp.or_else(|| self.opts.stamps.find(path));
        let source = self.sink.source(&labels);
        let key = self.next_key;
        self.next_key += 1;
        tracing::debug!(path = %path.display(), offset = reader.offset, "following");
        self.files.insert(
            key,
            TailFile {
                path: path.to_path_buf(),
                labels,
                source,
                file,
                dev: meta.dev(),
                ino: meta.ino(),
                fingerprint,
                reader,
                rotated: rotated.then(Instant::now),
                last_growth: Instant::now(),
                last_size: size,
                failing: false,
                pred: None,
                drained: false,
                unlinked: false,
                saved: (u64::MAX, 0, false),
            },
        );
        if !rotated {
            self.active.insert(path.to_path_buf(), key);
        }
        self.counters.files_opened += 1;
        true
    }

    /// Opens a regular file by path (`InvalidInput` for anything else): opening a FIFO for
    /// reading blocks until a writer comes, which would stop the tailer (and every scrape).
    fn open_path(path: &Path) -> std::io::Result<File> {
        if !std::fs::metadata(path)?.is_file() {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        File::open(path)
    }

    /// Paths followed now (a scan need not open them again).
    pub fn followed_paths(&self) -> HashSet<PathBuf> {
        self.active.keys().cloned().collect()
    }

    /// The directories of the files a scan listed but could not open for lack of a
    /// descriptor, once a descriptor is free: a partial scan of them opens those files (no
    /// event may come before their directory is removed).
    pub fn take_starved_dirs(&mut self) -> Vec<PathBuf> {
        if self.free_descriptors() == 0 {
            return Vec::new();
        }
        let dirs: HashSet<PathBuf> = self
            .starved
            .drain()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        dirs.into_iter().collect()
    }

    /// Descriptors of `--tail.max-open-files` not in use.
    pub fn free_descriptors(&self) -> usize {
        self.opts
            .max_open_files
            .saturating_sub(self.files.len() + self.gz.len())
    }

    /// Takes the result of a scan: new files are opened, replaced or vanished ones become
    /// rotated. `verify` re-checks the fingerprint of followed files (copytruncate that grew
    /// back past the offset between two looks).
    pub fn apply_scan(&mut self, found: Vec<Found>, unreadable: &[PathBuf], verify: bool) {
        self.apply_scan_in(found, unreadable, verify, None);
    }

    /// Takes the result of a partial scan ([`crate::discovery::Source::scan_dir`]): like
    /// [`Engine::apply_scan`], but a followed path outside `scope` is not judged gone.
    pub fn apply_partial_scan(&mut self, found: Vec<Found>, unreadable: &[PathBuf], scope: &Scope) {
        self.apply_scan_in(found, unreadable, false, Some(scope));
    }

    fn apply_scan_in(
        &mut self,
        found: Vec<Found>,
        unreadable: &[PathBuf],
        verify: bool,
        scope: Option<&Scope>,
    ) {
        let mut seen = HashSet::new();
        let found: Vec<Found> = found
            .into_iter()
            .filter(|f| seen.insert(f.path.clone()))
            .collect();
        let first = !self.scanned;
        self.scanned = true;
        let mut dirs: BTreeMap<PathBuf, Vec<(String, Labels)>> = BTreeMap::new();
        for f in &found {
            if let (Some(d), Some(n)) = (f.path.parent(), f.path.file_name()) {
                dirs.entry(d.to_path_buf())
                    .or_default()
                    .push((n.to_string_lossy().into_owned(), f.labels.clone()));
            }
        }
        let claimed = self.recover_saved(&found);
        for f in found {
            if !claimed.contains(&f.path) {
                self.take_found(f, first, verify);
            }
        }
        self.mark_gone(&seen, unreadable, scope);
        // A file opened while empty has no fingerprint yet; its compressed form must still be
        // recognised.
        self.refresh_fingerprints();
        if !dirs.is_empty() {
            // Once for all directories (a churn lists hundreds at once): the identities of the
            // followed files, and the first-bytes fingerprints of each directory's.
            let open: HashSet<(u64, u64)> = self.files.values().map(|f| (f.dev, f.ino)).collect();
            let mut fps: HashMap<PathBuf, OpenFps> = HashMap::new();
            for f in self.files.values() {
                if let Some(d) = f.path.parent().filter(|d| dirs.contains_key(*d)) {
                    let id = (f.dev, f.ino);
                    fps.entry(d.to_path_buf())
                        .or_default()
                        .push((f.fingerprint, id));
                }
            }
            for (dir, bases) in dirs {
                let open_fps = fps.remove(&dir).unwrap_or_default();
                self.check_siblings(&dir, &bases, first, &open, open_fps);
            }
        }
        // Zero series restored from the state file for pods gone while the exporter was down.
        if first {
            self.retain_live();
        }
        // Forget directories that are gone.
        self.done.retain(|d, _| d.is_dir());
        // Errors are counted once per path; forget paths that are gone (bounded memory).
        self.errored.retain(|p| p.exists());
        self.judged.retain(|d, _| d.is_dir());
        self.unseen.retain(|d, _| d.is_dir());
    }

    /// At the first scan after a restart, finds the saved files again ([`Engine::recover`]).
    /// Returns the paths still naming their saved file, followed from the saved offset.
    fn recover_saved(&mut self, found: &[Found]) -> HashSet<PathBuf> {
        let mut active_claims = HashSet::new();
        let Some(saved) = self.recovering.take() else {
            return active_claims;
        };
        let mut found_files: HashMap<PathBuf, Option<Arc<File>>> = found
            .iter()
            .map(|f| (f.path.clone(), f.file.clone()))
            .collect();
        let mut claimed = HashSet::new();
        for s in saved {
            if let Some(p) = self.recover(s, &mut found_files, &mut claimed) {
                active_claims.insert(p);
            }
        }
        active_claims
    }

    /// One file a scan listed: followed already (rotated if its path names another file now),
    /// still open under its identity, or opened.
    fn take_found(&mut self, f: Found, first: bool, verify: bool) {
        // The file opened by the scan, which its path may no longer name (removed since).
        let opened = f.file.and_then(owned);
        let meta = match opened
            .as_ref()
            .map_or_else(|| std::fs::metadata(&f.path), File::metadata)
        {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.count_error(&f.path, error_reason(&e));
                return;
            }
        };
        if let Some(&key) = self.active.get(&f.path) {
            let Some(tf) = self.files.get_mut(&key) else {
                return;
            };
            if (meta.dev(), meta.ino()) == (tf.dev, tf.ino) {
                if verify && tf.fingerprint.len > 0 && !same_content(&tf.file, tf.fingerprint) {
                    let old = Self::truncated(&mut self.counters, tf);
                    self.remember_done(&f.path, old);
                }
                return;
            }
            tracing::debug!(path = %f.path.display(), "rotated");
            tf.rotated = Some(Instant::now());
            self.counters.rotations += 1;
            self.active.remove(&f.path);
        }
        let id = (meta.dev(), meta.ino());
        // Still open under this identity (the path was missed by a scan, or renamed back):
        // follow it again rather than reading it twice.
        if let Some((&key, tf)) = self.files.iter_mut().find(|(_, t)| (t.dev, t.ino) == id) {
            tf.rotated = None;
            self.active.insert(f.path.clone(), key);
            return;
        }
        let Some(file) = opened.or_else(|| Self::open_path(&f.path).ok()) else {
            // Gone since (or not a regular file: counted by `open`).
            self.open(&f.path, f.labels, Start::Beginning, false, None);
            return;
        };
        let start = if first && self.first_start_policy() {
            Start::End
        } else if let Some(off) = self.released_offset(&f.path, id, &file) {
            // Released earlier (it had looked rotated) and still the same file.
            Start::Resume(LineReader::at(off, None, Default::default()))
        } else {
            Start::Beginning
        };
        // The newest rotated file that had this path, if this one starts at byte 0.
        let pred = matches!(start, Start::Beginning)
            .then(|| {
                self.files
                    .iter()
                    .rev()
                    .find(|(_, t)| t.rotated.is_some() && t.path == f.path)
                    .map(|(&k, _)| k)
            })
            .flatten();
        if self.open(&f.path, f.labels, start, false, Some(file)) {
            if let Some(tf) = self.files.values_mut().next_back() {
                tf.pred = pred;
            }
        }
    }

    /// Followed paths that are gone: renamed or removed without a successor (yet). Paths not
    /// `seen` are judged only within `scope` (all of them after a full scan), and not under a
    /// directory that could not be read.
    fn mark_gone(
        &mut self,
        seen: &HashSet<PathBuf>,
        unreadable: &[PathBuf],
        scope: Option<&Scope>,
    ) {
        let gone: Vec<PathBuf> = self
            .active
            .keys()
            .filter(|p| {
                !seen.contains(*p)
                    && scope.is_none_or(|s| s.covers(p))
                    && !unreadable.iter().any(|d| p.starts_with(d))
            })
            .cloned()
            .collect();
        for p in gone {
            if let Some(key) = self.active.remove(&p) {
                if let Some(tf) = self.files.get_mut(&key) {
                    tf.rotated = Some(Instant::now());
                    self.counters.rotations += 1;
                }
            }
        }
    }

    /// Files present at the very first start (no saved state) start at their end unless
    /// configured otherwise.
    fn first_start_policy(&self) -> bool {
        self.opts.start_at == StartAt::End && !self.had_state
    }

    fn gz_matches(&self, p: &Path, fp: Fingerprint) -> bool {
        if !std::fs::metadata(p).is_ok_and(|m| m.is_file()) {
            return false;
        }
        let Ok(f) = File::open(p) else { return false };
        let mut d = flate2::read::MultiGzDecoder::new(f).take(u64::from(fp.len));
        let mut h = Vec::new();
        d.read_to_end(&mut h).is_ok() && Fingerprint::of(&h) == fp
    }

    /// Queues a compressed file to be read in the next rounds from the reader's offset (in
    /// decompressed bytes), and remembers it as done so that no scan queues it again; a
    /// restart before its end resumes it from the saved offset ([`Engine::state`]). Returns
    /// false when it cannot be opened now (counted; a file past the descriptor budget is
    /// tried again at the next scan).
    fn queue_gz(&mut self, p: &Path, labels: &Labels, mut reader: LineReader) -> bool {
        if self.files.len() + self.gz.len() >= self.opts.max_open_files {
            self.count_error(p, "too_many_files");
            return false;
        }
        // Opening a FIFO for reading would block until a writer comes.
        if std::fs::metadata(p).is_ok_and(|m| !m.is_file()) {
            self.count_error(p, "not_a_file");
            return false;
        }
        let file = match File::open(p) {
            Ok(f) => f,
            Err(e) => {
                self.count_error(p, error_reason(&e));
                return false;
            }
        };
        let meta = match file.metadata() {
            Ok(m) if m.is_file() => m,
            Ok(_) => {
                self.count_error(p, "not_a_file");
                return false;
            }
            Err(e) => {
                self.count_error(p, error_reason(&e));
                return false;
            }
        };
        let Some(head) = Self::gz_head(p) else {
            tracing::warn!(path = %p.display(), "corrupt compressed file");
            Counters::inc(&mut self.counters.read_errors, "io");
            return false;
        };
        self.errored.remove(p);
        let fingerprint = Fingerprint::of(&head);
        self.remember_done(p, siblings::gz_done(&file, &meta, &head));
        let source = self.sink.source(labels);
        reader.stamp = reader.stamp.or_else(|| self.opts.stamps.find(p));
        self.gz.push_back(GzJob {
            path: p.to_path_buf(),
            labels: labels.clone(),
            source,
            dev: meta.dev(),
            ino: meta.ino(),
            fingerprint,
            decoder: flate2::read::MultiGzDecoder::new(file),
            skip: reader.offset,
            reader,
        });
        true
    }

    /// A compressed file to resume that cannot be opened now (no descriptor free): its rest is
    /// lost (counted), and it is remembered as done so that no scan reads it from byte 0.
    fn gz_not_resumed(&mut self, p: &Path) {
        tracing::warn!(path = %p.display(), "compressed file not resumed; its unread rest is lost");
        self.counters.files_lost += 1;
        let file = File::open(p);
        let meta = file.as_ref().ok().map(File::metadata);
        if let (Ok(f), Some(Ok(meta)), Some(h)) = (&file, meta, Self::gz_head(p)) {
            self.remember_done(p, siblings::gz_done(f, &meta, &h));
        }
    }

    /// Reads up to `budget` decompressed bytes of a compressed file (passed-over bytes of a
    /// resumed one included). Returns them and whether the file is finished.
    fn gz_step(job: &mut GzJob, buf: &mut [u8], ctx: &mut Ctx<'_>, budget: u64) -> (u64, bool) {
        let mut read = 0u64;
        while read < budget {
            let want = match job.skip {
                0 => buf.len(),
                k => usize::try_from(k).unwrap_or(usize::MAX).min(buf.len()),
            };
            match job.decoder.read(&mut buf[..want]) {
                Ok(0) if job.skip > 0 => {
                    // Shorter than where reading stopped: not the file that was read.
                    ctx.counters.truncations += 1;
                    return (read, true);
                }
                Ok(0) => {
                    job.reader.finish(ctx);
                    return (read, true);
                }
                Ok(n) => {
                    read += n as u64;
                    if job.skip > 0 {
                        job.skip -= n as u64;
                    } else {
                        job.reader.feed(&buf[..n], ctx);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(path = %job.path.display(), error = %e, "corrupt compressed file");
                    Counters::inc(&mut ctx.counters.read_errors, "io");
                    job.reader.finish(ctx);
                    return (read, true);
                }
            }
        }
        (read, false)
    }

    /// Restarts a truncated file at byte 0. Returns a content-only tombstone of what it held,
    /// so that a copytruncate copy beside it is not read as a new file.
    fn truncated(counters: &mut Counters, tf: &mut TailFile) -> Done {
        tracing::info!(path = %tf.path.display(), offset = tf.reader.position(), "truncated; reading again from byte 0");
        counters.truncations += 1;
        counters.truncated_unread_bytes += tf.last_size.saturating_sub(tf.reader.position());
        tf.reader.reset();
        let old = Done {
            dev: 0,
            ino: 0,
            fingerprint: tf.fingerprint,
            offset: 0,
            mark: Fingerprint::default(),
            gz: false,
        };
        tf.fingerprint = fingerprint_of(&tf.file, FINGERPRINT_BYTES as u64).unwrap_or_default();
        old
    }

    /// Completes the fingerprint of a file that had fewer than [`FINGERPRINT_BYTES`] bytes,
    /// if it only grew: a file whose first bytes changed was replaced in place (copytruncate),
    /// which [`Engine::read_all`] detects by the fingerprint it keeps.
    fn refresh_fingerprint(tf: &mut TailFile, size: u64) {
        let len = tf.fingerprint.len as usize;
        if len < FINGERPRINT_BYTES && (len as u64) < size {
            let n = usize::try_from(size)
                .unwrap_or(usize::MAX)
                .min(FINGERPRINT_BYTES);
            if let Ok(h) = head(&tf.file, n) {
                if len == 0 || h.len() >= len && Fingerprint::of(&h[..len]) == tf.fingerprint {
                    tf.fingerprint = Fingerprint::of(&h);
                }
            }
        }
    }

    fn refresh_fingerprints(&mut self) {
        for tf in self.files.values_mut() {
            if (tf.fingerprint.len as usize) < FINGERPRINT_BYTES {
                let size = tf.file.metadata().map_or(tf.last_size, |m| m.len());
                Self::refresh_fingerprint(tf, size);
            }
        }
    }

    /// A file that took the path of a rotated one may begin with the rest of a line whose
    /// first fragments (CRI `P`, Docker split lines) end the rotated file. Once file `k` has
    /// data and the rotated one is read to its end, the unfinished fragments move over, so the
    /// line is one line. Returns false while the rotated file still has bytes to read first.
    fn hand_over_partials(&mut self, k: u64) -> bool {
        let Some(tf) = self.files.get(&k) else {
            return true;
        };
        let Some(p) = tf.pred else { return true };
        let fresh = tf.reader.position() == 0;
        if fresh && !tf.file.metadata().is_ok_and(|m| m.len() > 0) {
            return true;
        }
        let format = tf.reader.format;
        let carried = match self.files.get_mut(&p) {
            // The rotated one first, to its end in this round (a round cut by its budget
            // may go on with the new file before the rotated one).
            Some(pt) if !pt.failing && !pt.drained => return false,
            Some(pt) if fresh && (format.is_none() || format == pt.reader.format) => {
                Some(pt.reader.take_partials())
            }
            _ => None,
        };
        if let Some(tf) = self.files.get_mut(&k) {
            tf.pred = None;
            if let Some(c) = carried {
                tf.reader.adopt_partials(c);
            }
        }
        true
    }

    /// Reads every followed file (up to the per-file budget). Returns whether some file has
    /// more to read right away.
    pub fn read_all(&mut self) -> bool {
        let mut more = false;
        let mut truncs = Vec::new();
        let now = self.now();
        let mut buf = std::mem::take(&mut self.buf);
        let keys: Vec<u64> = self
            .files
            .range(self.cursor..)
            .chain(self.files.range(..self.cursor))
            .map(|(k, _)| *k)
            .collect();
        self.cursor = 0;
        for tf in self.files.values_mut() {
            tf.drained = false;
        }
        let mut total = 0u64;
        for k in keys {
            if total >= self.opts.round_budget {
                self.cursor = k;
                more = true;
                break;
            }
            if !self.hand_over_partials(k) {
                more = true;
                continue;
            }
            let (read, has_more) = self.read_file(k, &mut buf, now, &mut truncs);
            total += read;
            more |= has_more;
        }
        self.read_gz(&mut buf, now, total);
        more |= !self.gz.is_empty();
        self.buf = buf;
        for (path, old) in truncs {
            self.remember_done(&path, old);
        }
        more
    }

    /// Reads followed file `k` up to the per-file budget; a truncation found goes to `truncs`.
    /// Returns the bytes read and whether it has more to read right away.
    fn read_file(
        &mut self,
        k: u64,
        buf: &mut [u8],
        now: Option<f64>,
        truncs: &mut Vec<(PathBuf, Done)>,
    ) -> (u64, bool) {
        let Some(tf) = self.files.get_mut(&k) else {
            return (0, false);
        };
        // Replaced in place (copytruncate) and already grown past the read position
        // since the last look: not smaller, but its first bytes changed.
        let size = tf.file.metadata().map_or(tf.last_size, |m| m.len());
        if size != tf.last_size
            && tf.reader.position() > 0
            && tf.fingerprint.len > 0
            && !same_content(&tf.file, tf.fingerprint)
        {
            truncs.push((tf.path.clone(), Self::truncated(&mut self.counters, tf)));
        }
        let mut ctx = line_ctx(
            &mut *self.sink,
            &mut self.counters,
            &self.opts,
            tf.source,
            now,
        );
        let mut read = 0u64;
        let mut eof = false;
        while read < self.opts.read_budget {
            match tf.file.read_at(buf, tf.reader.position()) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    tf.reader.feed(&buf[..n], &mut ctx);
                    read += n as u64;
                    tf.failing = false;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if !tf.failing {
                        tf.failing = true;
                        tracing::warn!(path = %tf.path.display(), error = %e, "read failed");
                        Counters::inc(&mut ctx.counters.read_errors, error_reason(&e));
                    }
                    break;
                }
            }
        }
        if read > 0 {
            tf.last_growth = Instant::now();
        }
        let mut more = !eof && !tf.failing;
        tf.drained = eof;
        let meta = tf.file.metadata();
        tf.unlinked = meta.as_ref().is_ok_and(|m| m.nlink() == 0);
        let size = meta.map_or(tf.last_size, |m| m.len());
        if eof && size < tf.reader.position() {
            truncs.push((tf.path.clone(), Self::truncated(&mut self.counters, tf)));
            more = true;
        }
        tf.last_size = size;
        Self::refresh_fingerprint(tf, size);
        (read, more)
    }

    /// Reads the compressed files, each in turn, within what `total` left of the round.
    fn read_gz(&mut self, buf: &mut [u8], now: Option<f64>, mut total: u64) {
        let mut i = 0;
        while total < self.opts.round_budget {
            let Some(job) = self.gz.get_mut(i) else {
                break;
            };
            let mut ctx = line_ctx(
                &mut *self.sink,
                &mut self.counters,
                &self.opts,
                job.source,
                now,
            );
            let (read, finished) = Self::gz_step(job, buf, &mut ctx, self.opts.read_budget);
            total += read;
            if finished {
                self.gz.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Releases rotated files read to their end and quiet for `rotate_wait`, and removed files
    /// read to their end at once (a removed file can only be drained; holding it would let pod
    /// churn exhaust `max_open_files`).
    pub fn reap(&mut self) {
        let wait = self.opts.rotate_wait;
        // Descriptors run short (saves slower than the churn): removed files read to their
        // end are closed without waiting for a save.
        let short = self.free_descriptors() < self.opts.max_open_files / 4;
        let done: Vec<u64> = self
            .files
            .iter()
            .filter(|(_, f)| {
                let read = f.reader.position() >= f.last_size;
                let quiet = f.rotated.is_some_and(|t| t.elapsed() >= wait)
                    && f.last_growth.elapsed() >= wait;
                // A removed file waits for the save of its last lines, or for rotate_wait
                // when saves fail.
                let gone = f.unlinked && f.drained && (short || self.offset_durable(f));
                read && (quiet || gone || f.unlinked && f.last_growth.elapsed() >= wait)
            })
            .map(|(k, _)| *k)
            .collect();
        let released = !done.is_empty();
        for k in done {
            if let Some(tf) = self.files.remove(&k) {
                tracing::debug!(path = %tf.path.display(), unlinked = tf.unlinked, "released");
                if self.active.get(&tf.path) == Some(&k) {
                    self.active.remove(&tf.path);
                }
                // Also for a removed file: its compressed form (gzip removes the original)
                // is known by these first bytes.
                self.remember_done(
                    &tf.path,
                    Done {
                        dev: tf.dev,
                        ino: tf.ino,
                        fingerprint: tf.fingerprint,
                        offset: tf.reader.position(),
                        mark: mark_of(&tf.file, tf.reader.position()),
                        gz: false,
                    },
                );
                self.finish(tf);
            }
        }
        if released {
            self.retain_live();
        }
    }

    /// Lets go of a file: its unfinished line fragments are counted as a line.
    fn finish(&mut self, mut tf: TailFile) {
        let now = self.now();
        let mut ctx = line_ctx(
            &mut *self.sink,
            &mut self.counters,
            &self.opts,
            tf.source,
            now,
        );
        tf.reader.finish(&mut ctx);
    }

    /// Reads one file from its first byte to its end (plain or `.gz`), for `replay`.
    pub fn replay_file(&mut self, path: &Path, labels: &Labels) {
        if is_gz(path) {
            if self.queue_gz(path, labels, LineReader::default()) {
                while self.read_all() {}
            }
            return;
        }
        if self.open(path, labels.clone(), Start::Beginning, true, None) {
            while self.read_all() {}
            let keys: Vec<u64> = self.files.keys().copied().collect();
            for k in keys {
                if let Some(tf) = self.files.remove(&k) {
                    self.finish(tf);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rule;
    use crate::logql::Expr;
    use crate::rules::Rules;
    use std::io::Write as _;

    pub(super) fn engine() -> Engine {
        let rules = [Rule {
            max_series: 10,
            ..Rule::new("e", Expr::contains("ERROR"))
        }];
        Engine::new(
            Options {
                rotate_wait: Duration::ZERO,
                start_at: StartAt::Beginning,
                ..Options::default()
            },
            Box::new(Rules::new(&rules).unwrap()),
        )
    }

    pub(super) fn count(e: &Engine) -> u64 {
        e.sink.values().iter().map(|v| v.value).sum()
    }

    pub(super) fn found(p: &Path) -> Vec<Found> {
        vec![Found::new(
            p.to_path_buf(),
            vec![("pod".into(), "p".into())],
        )]
    }

    #[test]
    fn a_path_missed_by_one_scan_is_not_read_twice() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        std::fs::write(&p, "ERROR 1\nERROR 2\n").unwrap();
        let mut e = engine();
        e.apply_scan(found(&p), &[], false);
        e.read_all();
        assert_eq!(count(&e), 2);
        // A scan that did not see it (e.g. a transient readdir failure)...
        e.apply_scan(Vec::new(), &[], false);
        e.read_all();
        // ...and one that sees it again while it is still open.
        e.apply_scan(found(&p), &[], false);
        e.read_all();
        assert_eq!(count(&e), 2);
        // Missed, released (rotate_wait 0), then seen again: resumes at the released offset.
        e.apply_scan(Vec::new(), &[], false);
        e.read_all();
        e.reap();
        assert_eq!(e.gauges().files_open, 0);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"ERROR 3\n")
            .unwrap();
        e.apply_scan(found(&p), &[], false);
        e.read_all();
        assert_eq!(count(&e), 3);
        // A directory that could not be read does not make its files look rotated.
        e.apply_scan(Vec::new(), &[d.path().to_path_buf()], false);
        assert_eq!(e.gauges().files_rotated_open, 0);
    }

    /// A rotated file never seen before is read even when a followed file of another
    /// directory begins with the same bytes (one long line): only a sibling can be its copy.
    #[test]
    fn a_file_beginning_like_one_elsewhere_is_not_taken_for_it() {
        let d = tempfile::tempdir().unwrap();
        let long = format!("ERROR {}\n", "x".repeat(400));
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        for dir in [&a, &b] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(a.join("0.log"), &long).unwrap();
        std::fs::write(b.join("0.log"), "ERROR b\n").unwrap();
        let mut e = engine();
        e.opts.rotate_wait = Duration::from_secs(3600);
        let both = |e: &mut Engine| {
            let mut v = found(&a.join("0.log"));
            v.extend(found(&b.join("0.log")));
            e.apply_scan(v, &[], false);
            e.read_all();
        };
        both(&mut e);
        assert_eq!(count(&e), 2);
        // In `b`, a file that begins like `a/0.log` is renamed before any scan saw it.
        std::fs::rename(b.join("0.log"), b.join("0.log.1")).unwrap();
        std::fs::write(b.join("0.log.2"), format!("{long}ERROR more\n")).unwrap();
        std::fs::write(b.join("0.log"), "ERROR new\n").unwrap();
        both(&mut e);
        assert_eq!(count(&e), 2 + 2 + 1);
    }

    /// A partial scan judges only the files it listed completely: a followed file outside its
    /// scope is not taken for gone, one inside it that it did not list is.
    #[test]
    fn a_partial_scan_judges_only_its_scope() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let mut all = Vec::new();
        for dir in [&a, &b] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("0.log"), "ERROR\n").unwrap();
            all.extend(found(&dir.join("0.log")));
        }
        let mut e = engine();
        e.opts.rotate_wait = Duration::from_secs(3600);
        e.apply_scan(all, &[], false);
        e.read_all();
        assert_eq!(count(&e), 2);
        // Directory `a` changed and was listed; `b` was not looked at.
        let mut scope = Scope::default();
        scope.dirs.insert(a.clone());
        e.apply_partial_scan(found(&a.join("0.log")), &[], &scope);
        assert_eq!(e.gauges().files_rotated_open, 0);
        // `a` listed again without its file (removed): rotated; `b` still followed.
        std::fs::remove_file(a.join("0.log")).unwrap();
        e.apply_partial_scan(Vec::new(), &[], &scope);
        assert_eq!(e.gauges().files_rotated_open, 1);
        assert!(e.followed_paths().contains(&b.join("0.log")));
        assert!(!e.followed_paths().contains(&a.join("0.log")));
    }

    #[test]
    fn partial_fragments_survive_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        std::fs::write(&p, "2024-01-15T10:00:00Z stdout P first half ERR\n").unwrap();
        let mut a = engine();
        a.apply_scan(found(&p), &[], false);
        a.read_all();
        assert_eq!(count(&a), 0);
        let saved = a.state();
        assert_eq!(saved.files[0].offset, 45);
        assert!(!saved.files[0].partials[0].is_empty());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"2024-01-15T10:00:00Z stdout F OR second half\n")
            .unwrap();
        let mut b = engine();
        b.restore(saved);
        b.apply_scan(found(&p), &[], false);
        b.read_all();
        assert_eq!(count(&b), 1);
        assert_eq!(b.state().counters.lines_read, 1);
    }

    /// kubelet compresses to `.gz.tmp`, renames it to `.gz`, then removes the plain file: a
    /// scan in between sees both forms of a rotated file it never opened. It is read once.
    #[test]
    fn a_rotated_file_seen_with_its_gz_is_read_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        std::fs::write(&p, "ERROR 0\n").unwrap();
        let mut e = engine();
        e.apply_scan(found(&p), &[], false);
        e.read_all();
        assert_eq!(count(&e), 1);
        // Rotated twice between two scans: 0.log.1 was never opened, and is compressed already.
        std::fs::rename(&p, d.path().join("0.log.1")).unwrap();
        let text: String = (0..20)
            .map(|i| format!("ERROR line {i} of the second file\n"))
            .collect();
        std::fs::write(d.path().join("0.log.2"), &text).unwrap();
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(d.path().join("0.log.2.gz")).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap();
        std::fs::write(&p, "ERROR newest\n").unwrap();
        e.apply_scan(found(&p), &[], false);
        while e.read_all() {}
        assert_eq!(count(&e), 22);
        e.apply_scan(found(&p), &[], false);
        while e.read_all() {}
        assert_eq!(count(&e), 22);
    }

    /// At a restart with fewer descriptors than saved files (a lower `--tail.max-open-files`
    /// or `RLIMIT_NOFILE`), a saved file that cannot be opened yet is read on from its saved
    /// offset once a descriptor is free, not again from byte 0.
    #[test]
    fn a_saved_file_resumed_later_for_lack_of_descriptors_is_not_read_twice() {
        let d = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = ["a", "b"]
            .iter()
            .map(|n| {
                std::fs::create_dir_all(d.path().join(n)).unwrap();
                let p = d.path().join(n).join("0.log");
                std::fs::write(&p, format!("ERROR {n}\n")).unwrap();
                p
            })
            .collect();
        let all: Vec<Found> = paths.iter().flat_map(|p| found(p)).collect();
        let mut a = engine();
        a.apply_scan(all.clone(), &[], false);
        a.read_all();
        assert_eq!(count(&a), 2);
        let saved = a.state();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&paths[1])
            .unwrap()
            .write_all(b"ERROR b again\n")
            .unwrap();
        let mut b = engine();
        b.opts.max_open_files = 1;
        b.restore(saved);
        b.apply_scan(all.clone(), &[], false);
        b.read_all();
        assert_eq!(b.gauges().files_open, 1);
        // The first file goes away and is released: the second one gets its descriptor.
        b.apply_scan(found(&paths[1]), &[], false);
        b.read_all();
        b.reap();
        b.apply_scan(found(&paths[1]), &[], false);
        b.read_all();
        assert_eq!(b.gauges().files_open, 1);
        assert_eq!(count(&b), 3);
    }

    /// A large backlog (a restart after a long downtime) is read in rounds of bounded size,
    /// each file in turn, so that the scrapes and scans handled between two rounds never wait
    /// for the whole backlog.
    #[test]
    fn a_large_backlog_is_read_in_bounded_rounds_fairly() {
        let d = tempfile::tempdir().unwrap();
        let line = "ERROR a line of the backlog, long enough to fill a file quickly\n";
        let text = line.repeat((1 << 20) / line.len());
        let mut e = engine();
        e.opts.round_budget = 3 << 19;
        let mut all = Vec::new();
        for n in ["a", "b", "c"] {
            std::fs::create_dir_all(d.path().join(n)).unwrap();
            let p = d.path().join(n).join("0.log");
            std::fs::write(&p, &text).unwrap();
            all.extend(found(&p));
        }
        e.apply_scan(all, &[], false);
        let lines = (text.len() / line.len()) as u64;
        // Round 1: two files (the budget is met after the second), round 2: the third.
        assert!(e.read_all());
        assert_eq!(count(&e), 2 * lines);
        assert!(!e.read_all());
        assert_eq!(count(&e), 3 * lines);
        assert_eq!(e.state().counters.bytes_read, 3 * text.len() as u64);
    }

    fn gz(text: &str) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap()
    }

    /// A rotated `.gz` larger than a round is read in rounds like a plain file (scrapes and
    /// scans are handled between two), and a restart in the middle resumes it at the saved
    /// offset: every line counted once.
    #[test]
    fn a_compressed_file_is_read_in_bounded_rounds_and_resumed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        std::fs::write(&p, "").unwrap();
        let line = "ERROR a line of a compressed rotated file, long enough to add up\n";
        let lines = (3 << 20) / line.len() as u64 + 1;
        let text = line.repeat(lines as usize);
        std::fs::write(d.path().join("0.log.20240115-100000.gz"), gz(&text)).unwrap();
        let mut e = engine();
        e.opts.read_budget = 1 << 20;
        e.opts.round_budget = 1 << 20;
        e.apply_scan(found(&p), &[], false);
        assert!(e.read_all(), "more to read after one round");
        let first = count(&e);
        assert!(first > 0 && first < lines / 2, "{first} of {lines}");
        assert!(e.read_all());
        let saved = e.state();
        let at = saved
            .files
            .iter()
            .find(|f| f.path.extension().is_some_and(|x| x == "gz"))
            .expect("the compressed file in the state");
        assert!(at.offset > 0 && at.offset < text.len() as u64);
        // Scans meanwhile do not queue it again.
        e.apply_scan(found(&p), &[], false);
        while e.read_all() {}
        assert_eq!(count(&e), lines);
        e.apply_scan(found(&p), &[], false);
        assert!(!e.read_all());
        assert_eq!(count(&e), lines);
        // A restart from the state saved in the middle.
        let mut b = engine();
        b.opts.read_budget = 1 << 20;
        b.opts.round_budget = 1 << 20;
        b.restore(saved);
        b.apply_scan(found(&p), &[], false);
        assert!(b.read_all(), "the rest is read in rounds too");
        while b.read_all() {}
        assert_eq!(count(&b), lines);
        b.apply_scan(found(&p), &[], false);
        b.read_all();
        assert_eq!(count(&b), lines);
    }

    /// A file whose directory is removed (a pod gone) is read to its end and closed at once,
    /// not held for `rotate_wait`: churn never runs out of descriptors and loses no line.
    #[test]
    fn a_removed_file_is_drained_and_closed_at_once() {
        let d = tempfile::tempdir().unwrap();
        let mut e = engine();
        e.opts.rotate_wait = Duration::from_secs(3600);
        e.opts.max_open_files = 4;
        for pod in 0..40 {
            let dir = d.path().join(format!("pod{pod}"));
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join("0.log");
            std::fs::write(&p, "ERROR 1\n").unwrap();
            e.apply_scan(found(&p), &[], false);
            e.read_all();
            // Written after the last read, then the directory goes.
            std::fs::OpenOptions::new()
                .append(true)
                .open(&p)
                .unwrap()
                .write_all(b"ERROR 2\nERROR 3 no newline")
                .unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            e.apply_scan(Vec::new(), &[], false);
            e.read_all();
            e.reap();
            assert_eq!(e.gauges().files_open, 0, "pod {pod}");
        }
        assert_eq!(count(&e), 120);
        assert!(e.state().counters.read_errors.is_empty());
        // With a state file, a removed file is closed once a durable save holds its offset:
        // after a crash it could not be read again.
        e.note_durable(0);
        let dir = d.path().join("saved");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("0.log");
        std::fs::write(&p, "ERROR\n").unwrap();
        e.apply_scan(found(&p), &[], false);
        e.read_all();
        std::fs::remove_dir_all(&dir).unwrap();
        e.read_all();
        e.reap();
        assert!(e.awaiting_save());
        assert_eq!(e.gauges().files_open, 1);
        e.note_save(1);
        e.reap();
        assert_eq!(e.gauges().files_open, 1, "saved, not durable yet");
        e.note_durable(1);
        e.reap();
        assert_eq!(e.gauges().files_open, 0);
        assert!(!e.awaiting_save());
        e.note_durable(u64::MAX);
        // A renamed (rotated) file is still held for `rotate_wait`: its writer may go on.
        let p = d.path().join("0.log");
        std::fs::write(&p, "ERROR\n").unwrap();
        e.apply_scan(found(&p), &[], false);
        e.read_all();
        std::fs::rename(&p, d.path().join("0.log.1")).unwrap();
        e.apply_scan(Vec::new(), &[], false);
        e.read_all();
        e.reap();
        assert_eq!(e.gauges().files_rotated_open, 1);
    }

    /// A file is opened when the scan lists it: a directory removed between the listing and
    /// the engine taking the result (a pod gone right after a restart) loses nothing.
    #[test]
    fn a_file_removed_right_after_its_scan_is_read() {
        use crate::discovery::{ScanResult, Source};
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("pods");
        let cdir = root.join("ns_a_uid").join("app");
        std::fs::create_dir_all(&cdir).unwrap();
        std::fs::write(cdir.join("0.log"), "ERROR 1\nERROR 2\n").unwrap();
        let mut e = engine();
        e.opts.rotate_wait = Duration::from_secs(3600);
        let mut out = ScanResult::opening(e.followed_paths(), e.free_descriptors());
        Source::Pods { root: root.clone() }.scan(&mut out);
        assert!(out.files[0].file.is_some());
        std::fs::remove_dir_all(root.join("ns_a_uid")).unwrap();
        e.apply_scan(out.files, &[], false);
        e.read_all();
        e.reap();
        assert_eq!(count(&e), 2);
        assert_eq!(e.gauges().files_open, 0);
        // Followed paths are not opened again by a scan, and the budget is kept.
        std::fs::create_dir_all(&cdir).unwrap();
        std::fs::write(cdir.join("0.log"), "x\n").unwrap();
        std::fs::write(cdir.join("1.log"), "x\n").unwrap();
        let mut out = ScanResult::opening(e.followed_paths(), 1);
        Source::Pods { root: root.clone() }.scan(&mut out);
        assert_eq!(out.files.iter().filter(|f| f.file.is_some()).count(), 1);
        e.apply_scan(out.files, &[], false);
        let mut out = ScanResult::opening(e.followed_paths(), e.free_descriptors());
        Source::Pods { root }.scan(&mut out);
        assert_eq!(out.files.len(), 2);
        assert!(out.files.iter().all(|f| f.file.is_none()));
    }

    /// `cat a.gz b.gz`: a valid gzip file of two members; the lines of both are read.
    #[test]
    fn every_member_of_a_multi_member_gzip_is_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        std::fs::write(&p, "").unwrap();
        let a: String = (0..300).map(|i| format!("ERROR first {i}\n")).collect();
        let b: String = (0..200).map(|i| format!("ERROR second {i}\n")).collect();
        let mut both = gz(&a);
        both.extend(gz(&b));
        let rotated = d.path().join("0.log.20240115-100000.gz");
        std::fs::write(&rotated, &both).unwrap();
        let mut e = engine();
        e.apply_scan(found(&p), &[], false);
        while e.read_all() {}
        assert_eq!(count(&e), 500);
        assert_eq!(e.state().counters.lines_read, 500);
        let mut r = engine();
        r.replay_file(&rotated, &vec![("pod".into(), "p".into())]);
        assert_eq!(count(&r), 500);
        // A FIFO named like a compressed file is counted, never opened (it would block).
        let fifo = d.path().join("fifo.gz");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        r.replay_file(&fifo, &vec![("pod".into(), "p".into())]);
        assert_eq!(r.state().counters.read_errors.get("not_a_file"), Some(&1));
    }
}
