//! The tailing thread: discovery, reading and state saves, driven by inotify, timers and scrapes.
//!
//! One OS thread owns the [`Engine`] (blocking file I/O, no locks on the hot path). It wakes on
//! inotify activity (a second thread blocks in `read(2)` on the inotify descriptor and raises
//! flags), on a poll tick, and on requests from the scrape path. Each wake-up: scan the
//! directories inotify reported changed (only those, and the new subdirectories found there),
//! or the whole tree if inotify overflowed or the rescan interval elapsed (an entry the events
//! named as created that is gone before the scan is counted as vanished); read every file;
//! release finished rotated files; hand a consistent state to the saver thread if a scrape asked
//! or the save interval elapsed. The saver writes and fsyncs while the tailer keeps reading, then
//! answers the waiting scrapes with the values of that durable save (or, if it failed, of the
//! last good one), so a served counter never goes down, even across SIGKILL.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::alloc::Sparse;
use inotify::{Inotify, WatchDescriptor, WatchMask, Watches};

use crate::discovery::{ScanResult, Source};
use crate::metrics::{SaveStats, Snapshot};
use crate::sink::LineSink;
use crate::state::{self, State};
use crate::tail::counters::Gauges;
use crate::tail::{Engine, Options};
use crate::Error;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub sources: Vec<Source>,
    /// `None`: no persistence (values are served live).
    pub state_file: Option<PathBuf>,
    pub poll_interval: Duration,
    pub rescan_interval: Duration,
    pub save_interval: Duration,
    pub inotify: bool,
    pub engine: Options,
}

enum Msg {
    Wake,
    Reload(
        Vec<crate::config::Rule>,
        tokio::sync::oneshot::Sender<Result<(), crate::sink::BuildError>>,
    ),
    Collect(tokio::sync::oneshot::Sender<Arc<Snapshot>>),
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

/// Flags raised by the inotify thread, so a flood of events is one wake-up.
#[derive(Default)]
struct FsFlags {
    pending: AtomicBool,
    structural: AtomicBool,
    overflow: AtomicBool,
    /// The watches of the directories whose entries changed since the tailer last looked, with
    /// the entries the events named as created or moved in (name, is a directory).
    changed: Mutex<HashMap<WatchDescriptor, Created>>,
}

/// Entries an inotify event named as created in one directory: (name, is a directory).
type Created = HashSet<(OsString, bool)>;

impl FsFlags {
    fn changed(&self) -> std::sync::MutexGuard<'_, HashMap<WatchDescriptor, Created>> {
        // A panic while holding it cannot leave the set half-updated: take it as it is.
        self.changed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The scrape path's handle on the tailing thread.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Msg>,
}

impl Handle {
    /// Saves the state and returns the values of the last durable save.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Msg::Collect(tx)).map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Replaces the rules between two lines; on error the old rules stay.
    pub async fn reload(&self, rules: Vec<crate::config::Rule>) -> Result<(), Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Msg::Reload(rules, tx))
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?.map_err(Error::from)
    }

    /// Saves a last time and stops the thread.
    pub async fn shutdown(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the tailing thread (it loads the state file first).
pub fn start(opts: ServiceOptions, sink: Box<dyn LineSink>) -> Result<Handle, Error> {
    let (tx, rx) = mpsc::channel();
    let flags = Arc::new(FsFlags::default());
    let watches = if opts.inotify {
        let inotify = Inotify::init().map_err(Error::Inotify)?;
        let watches = inotify.watches();
        let tx = tx.clone();
        let flags = Arc::clone(&flags);
        std::thread::Builder::new()
            .name("inotify".into())
            .spawn(move || inotify_loop(inotify, &tx, &flags))
            .map_err(Error::Thread)?;
        Some(watches)
    } else {
        None
    };
    let mut svc = Service::new(opts, sink, watches, flags)?;
    std::thread::Builder::new()
        .name("tailer".into())
        .spawn(move || svc.run(&rx))
        .map_err(Error::Thread)?;
    Ok(Handle { tx })
}

fn inotify_loop(mut inotify: Inotify, tx: &mpsc::Sender<Msg>, flags: &FsFlags) {
    use inotify::EventMask;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let events = match inotify.read_events_blocking(&mut buf) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(error = %e, "inotify read failed; relying on rescans");
                return;
            }
        };
        {
            let mut changed = flags.changed();
            for ev in events {
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    flags.overflow.store(true, Ordering::Relaxed);
                } else if !ev.mask.contains(EventMask::MODIFY) {
                    // The directory of the event's watch: an entry created, renamed or
                    // removed in it, or the directory itself removed (its watch then goes).
                    // The names created or moved in are kept to tell, at the scan, those
                    // removed before it (vanished); one renamed away (a rotation) is not.
                    let created = changed.entry(ev.wd).or_default();
                    if let Some(name) = ev.name {
                        let entry = (name.to_owned(), ev.mask.contains(EventMask::ISDIR));
                        if ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                            created.insert(entry);
                        } else if ev.mask.contains(EventMask::MOVED_FROM) {
                            created.remove(&entry);
                        }
                    }
                    flags.structural.store(true, Ordering::Relaxed);
                }
            }
        }
        if !flags.pending.swap(true, Ordering::AcqRel) && tx.send(Msg::Wake).is_err() {
            return;
        }
    }
}

/// Shortest time between two saves made for removed files waiting to be closed.
const DRAIN_SAVE: Duration = Duration::from_millis(100);

/// What a watched directory reports: entries created, renamed and removed (a rescan of it),
/// writes (a read round), and its own removal.
const WATCH_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

/// A read round taking longer than this is logged (at debug level): discovery waits for it.
const SLOW_ROUND: Duration = Duration::from_millis(100);

/// How often series of gone sources are looked for (`--series.retention` is their age).
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

type Waiter = tokio::sync::oneshot::Sender<Arc<Snapshot>>;

/// A consistent state to make durable, and who waits for it.
struct SaveJob {
    /// Generation of the state ([`Service::save`] counts them).
    generation: u64,
    state: State,
    gauges: Gauges,
    waiters: Vec<Waiter>,
    /// Set by the last job, at shutdown.
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The saving thread: writes and fsyncs while the tailer keeps reading. Jobs that pile up
/// during a slow fsync are merged (the newest state wins, every waiter is answered).
struct Saver {
    path: Option<PathBuf>,
    stats: SaveStats,
    /// Values of the last durable save.
    durable: Snapshot,
    /// Generation of the last durable save, read by the tailer.
    durable_generation: Arc<AtomicU64>,
}

impl Saver {
    fn run(mut self, rx: &mpsc::Receiver<SaveJob>) {
        while let Ok(mut job) = rx.recv() {
            while let Ok(next) = rx.try_recv() {
                let mut waiters = std::mem::take(&mut job.waiters);
                waiters.extend(next.waiters);
                let done = job.done.take().or(next.done);
                job = SaveJob {
                    waiters,
                    done,
                    ..next
                };
            }
            if self.save(job.state) {
                self.durable_generation
                    .fetch_max(job.generation, Ordering::AcqRel);
            }
            let mut snap = self.durable.clone();
            snap.gauges = job.gauges;
            snap.saves = self.stats.clone();
            let snap = Arc::new(snap);
            for w in job.waiters {
                let _ = w.send(Arc::clone(&snap));
            }
            if let Some(done) = job.done {
                let _ = done.send(());
                return;
            }
        }
    }

    /// Returns whether the state is durable (always, without a state file).
    fn save(&mut self, st: State) -> bool {
        if let Some(path) = &self.path {
            match state::save(path, &st) {
                Ok(()) => {
                    self.stats.saves += 1;
                    self.stats.last_success_timestamp = unix_now();
                }
                Err(e) => {
                    self.stats.failures += 1;
                    tracing::error!(error = %e, "cannot save state; serving the values of the last good save");
                    return false;
                }
            }
        }
        self.durable.counters = st.counters;
        self.durable.matches = st.matches;
        self.durable.rules = st.rules;
        true
    }
}

struct Service {
    opts: ServiceOptions,
    engine: Engine,
    watches: Option<Watches>,
    watched: HashMap<PathBuf, WatchDescriptor>,
    /// The directory of each watch (the inverse of `watched`).
    watched_dirs: HashMap<WatchDescriptor, PathBuf>,
    /// Directories that could not be watched (warned about once).
    unwatched: HashSet<PathBuf>,
    flags: Arc<FsFlags>,
    saver: mpsc::Sender<SaveJob>,
    /// Generation of the last state handed to the saver, and of the last durable one.
    generation: u64,
    durable_generation: Arc<AtomicU64>,
    last_save: Instant,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Service {
    /// Drops the series of sources gone for the retention; once a churn's series went, the
    /// maps it filled give their capacity back and the freed heap goes to the system.
    fn expire_series(&mut self) {
        let n = self.engine.expire_series();
        self.watched.shrink_if_sparse();
        self.watched_dirs.shrink_if_sparse();
        self.unwatched.shrink_if_sparse();
        self.flags.changed().shrink_if_sparse();
        if n > 0 {
            let trimmed = common::alloc::trim();
            tracing::debug!(series = n, trimmed, "series of gone sources dropped");
        }
    }

    fn new(
        opts: ServiceOptions,
        sink: Box<dyn LineSink>,
        watches: Option<Watches>,
        flags: Arc<FsFlags>,
    ) -> Result<Self, Error> {
        let mut engine = Engine::new(opts.engine.clone(), sink);
        let mut saves = SaveStats::default();
        if let Some(path) = &opts.state_file {
            match state::load(path) {
                Ok(Some(s)) => {
                    tracing::info!(path = %path.display(), files = s.files.len(), "resuming from saved state");
                    engine.restore(s);
                }
                Ok(None) => tracing::info!(path = %path.display(), "no saved state: first start"),
                Err(e) => {
                    tracing::error!(error = %e, "state file unusable; starting afresh");
                    saves.load_failures += 1;
                }
            }
        }
        let st = engine.state();
        let durable_generation = Arc::new(AtomicU64::new(0));
        let saver = Saver {
            durable_generation: Arc::clone(&durable_generation),
            path: opts.state_file.clone(),
            stats: saves,
            durable: Snapshot {
                counters: st.counters,
                matches: st.matches,
                rules: st.rules,
                ..Snapshot::default()
            },
        };
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("state-saver".into())
            .spawn(move || saver.run(&rx))
            .map_err(Error::Thread)?;
        Ok(Self {
            opts,
            engine,
            watches,
            watched: HashMap::new(),
            watched_dirs: HashMap::new(),
            unwatched: HashSet::new(),
            flags,
            saver: tx,
            generation: 0,
            durable_generation,
            last_save: Instant::now(),
        })
    }

    fn rescan(&mut self, trigger: &str) {
        crate::tail::counters::Counters::inc(&mut self.engine.counters_mut().rescans, trigger);
        let started = Instant::now();
        // A full scan covers the directories inotify reported.
        let (_, created) = self.take_changed();
        let mut out = ScanResult::default();
        // A directory created between its parent's readdir and the parent's watch would be
        // missed until the next periodic rescan: scan again while new watches were added, at
        // most as deep as the pod tree (root, pod, container) and once more; under churn every
        // scan adds watches, and further events bring a further rescan anyway. Each scan opens
        // the files not followed yet as it lists them.
        for _ in 0..4 {
            out = ScanResult::opening(self.engine.followed_paths(), self.engine.free_descriptors());
            for s in &self.opts.sources {
                s.scan(&mut out);
            }
            if !self.watch(&out.dirs) {
                break;
            }
        }
        self.count_vanished(&created, &out);
        let unreadable = self.count_scan_errors(&out.errors);
        let (files, dirs) = (out.files.len(), out.dirs.len());
        let listed = started.elapsed();
        self.engine
            .apply_scan(out.files, &unreadable, trigger == "periodic");
        tracing::debug!(
            trigger,
            files,
            dirs,
            list_ms = listed.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "rescan"
        );
    }

    /// Scans only the directories whose entries changed (inotify): their files, and the
    /// subtrees of their new subdirectories, watched and scanned at once. Followed files
    /// elsewhere are not judged; the periodic full rescan remains the safety net.
    fn rescan_changed(&mut self) {
        let (todo, created) = self.take_changed();
        if !todo.is_empty() {
            crate::tail::counters::Counters::inc(
                &mut self.engine.counters_mut().rescans,
                "inotify",
            );
        }
        self.rescan_dirs(todo, &created, "inotify");
    }

    /// The directories inotify reported changed, and the paths its events named as created
    /// there (path, is a directory); the report is emptied.
    fn take_changed(&self) -> (Vec<PathBuf>, Vec<(PathBuf, bool)>) {
        let events: Vec<(WatchDescriptor, Created)> = self.flags.changed().drain().collect();
        let mut dirs = Vec::with_capacity(events.len());
        let mut created = Vec::new();
        for (wd, names) in events {
            if let Some(dir) = self.watched_dirs.get(&wd) {
                created.extend(names.into_iter().map(|(n, is_dir)| (dir.join(n), is_dir)));
                dirs.push(dir.clone());
            }
        }
        (dirs, created)
    }

    /// Scans `dirs` as [`Service::rescan_changed`] does (`trigger` is for the debug log);
    /// `created` are the paths events named as created there (path, is a directory).
    fn rescan_dirs(&mut self, mut todo: Vec<PathBuf>, created: &[(PathBuf, bool)], trigger: &str) {
        if todo.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut out =
            ScanResult::opening(self.engine.followed_paths(), self.engine.free_descriptors());
        let changed = todo.len();
        // A directory created in a new one between its listing and its watch: list the new
        // ones again once watched (at most as deep as the pod tree, and once more).
        for _ in 0..4 {
            let first_new = out.dirs.len();
            for d in &todo {
                let watched = |p: &Path| self.watched.contains_key(p);
                for s in &self.opts.sources {
                    s.scan_dir(d, &watched, &mut out);
                }
            }
            todo = self.watch_more(&out.dirs[first_new..]);
            if todo.is_empty() {
                break;
            }
        }
        self.count_vanished(created, &out);
        // Removed directories: their watches went with them.
        let gone = &out.scope.trees;
        if !gone.is_empty() {
            self.watched
                .retain(|d, _| !d.ancestors().any(|a| gone.contains(a)) || d.exists());
            let watched = &self.watched;
            self.watched_dirs.retain(|_, d| watched.contains_key(d));
        }
        let unreadable = self.count_scan_errors(&out.errors);
        let files = out.files.len();
        self.engine
            .apply_partial_scan(out.files, &unreadable, &out.scope);
        tracing::debug!(
            trigger,
            changed,
            files,
            total_ms = started.elapsed().as_millis() as u64,
            "partial rescan"
        );
    }

    /// Counts the entries of `created` that a source would follow and that are gone, never
    /// listed: not by this scan `out`, nor (a directory) watched, nor (a file) followed. An
    /// entry listed once and removed since is drained, not vanished.
    fn count_vanished(&mut self, created: &[(PathBuf, bool)], out: &ScanResult) {
        if created.is_empty() {
            return;
        }
        let listed_dirs: HashSet<&PathBuf> = out.dirs.iter().collect();
        for (path, is_dir) in created {
            let seen = if *is_dir {
                listed_dirs.contains(path) || self.watched.contains_key(path)
            } else {
                out.listed(path) || out.followed.contains(path)
            };
            if seen
                || !self.opts.sources.iter().any(|s| s.wants(path, *is_dir))
                || std::fs::symlink_metadata(path)
                    .map_or_else(|e| e.kind() != std::io::ErrorKind::NotFound, |_| true)
            {
                continue;
            }
            let kind = if *is_dir { "directory" } else { "file" };
            tracing::debug!(path = %path.display(), kind, "created entry removed before it could be listed; its lines are lost");
            crate::tail::counters::Counters::inc(
                &mut self.engine.counters_mut().discovery_vanished,
                kind,
            );
        }
    }

    /// Watches `dirs` (besides those watched); returns the newly watched ones.
    fn watch_more(&mut self, dirs: &[PathBuf]) -> Vec<PathBuf> {
        let mut added = Vec::new();
        let Some(w) = &mut self.watches else {
            return added;
        };
        for d in dirs {
            match w.add(d, WATCH_MASK) {
                Ok(wd) => {
                    if self.watched.get(d) != Some(&wd) {
                        added.push(d.clone());
                        self.watched_dirs.insert(wd.clone(), d.clone());
                        self.watched.insert(d.clone(), wd);
                    }
                }
                // Removed since it was listed: its removal is an event of its parent.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    if self.unwatched.insert(d.clone()) {
                        tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory; relying on rescans");
                    }
                }
            }
        }
        added
    }

    /// Counts the directories a scan could not read; returns them.
    fn count_scan_errors(&mut self, errors: &[(PathBuf, std::io::ErrorKind)]) -> Vec<PathBuf> {
        for (dir, kind) in errors {
            let reason = if *kind == std::io::ErrorKind::PermissionDenied {
                "permission_denied"
            } else {
                "io"
            };
            self.engine.count_error(dir, reason);
        }
        errors.iter().map(|(d, _)| d.clone()).collect()
    }

    /// Watches `dirs`; returns whether a directory was newly watched.
    ///
    /// Every directory is added again at each scan: the same directory gives back its
    /// descriptor, while a directory removed and created again at the same path (a new inode,
    /// whose old watch vanished) gets a new one, which its path alone would not tell.
    fn watch(&mut self, dirs: &[PathBuf]) -> bool {
        let mut now = HashMap::with_capacity(dirs.len());
        let mut failed = HashSet::new();
        let mut added = false;
        if let Some(w) = &mut self.watches {
            for d in dirs {
                match w.add(d, WATCH_MASK) {
                    Ok(wd) => {
                        added |= self.watched.get(d) != Some(&wd);
                        now.insert(d.clone(), wd);
                    }
                    // Removed since it was listed: its removal is an event of its parent.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        if !self.unwatched.contains(d) {
                            tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory; relying on rescans");
                        }
                        failed.insert(d.clone());
                    }
                }
            }
        }
        // Watches of removed directories vanish with them: only the present ones are kept.
        self.watched_dirs = now.iter().map(|(d, wd)| (wd.clone(), d.clone())).collect();
        self.watched = now;
        self.unwatched = failed;
        added
    }

    /// Hands a consistent state to the saver; `waiters` get the values once it is durable.
    fn save(&mut self, waiters: Vec<Waiter>, done: Option<tokio::sync::oneshot::Sender<()>>) {
        let mut gauges = self.engine.gauges();
        if self.watches.is_some() {
            gauges.dirs_watched = self.watched.len() as u64;
        }
        self.generation += 1;
        self.last_save = Instant::now();
        self.engine.note_save(self.generation);
        let job = SaveJob {
            generation: self.generation,
            state: self.engine.state(),
            gauges,
            waiters,
            done,
        };
        if self.saver.send(job).is_err() {
            tracing::error!("the state saver has stopped");
        }
    }

    fn run(&mut self, rx: &mpsc::Receiver<Msg>) {
        self.rescan("start");
        // A backlog is read on in the loop, in rounds, so that scrapes are answered meanwhile.
        let mut more = self.engine.read_all();
        self.save(Vec::new(), None);
        let mut next_rescan = Instant::now() + self.opts.rescan_interval;
        let mut next_save = Instant::now() + self.opts.save_interval;
        let mut next_expiry = Instant::now();
        loop {
            let mut waiters = Vec::new();
            let mut stop = None;
            let timeout = if more {
                Duration::ZERO
            } else {
                self.opts.poll_interval
            };
            let first = match rx.recv_timeout(timeout) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            for m in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                match m {
                    Msg::Wake => {}
                    Msg::Reload(rules, tx) => {
                        let _ = tx.send(self.engine.reload_rules(&rules));
                    }
                    Msg::Collect(tx) => waiters.push(tx),
                    Msg::Shutdown(tx) => stop = Some(tx),
                }
            }
            self.flags.pending.store(false, Ordering::Release);
            let overflow = self.flags.overflow.swap(false, Ordering::AcqRel);
            let structural = self.flags.structural.swap(false, Ordering::AcqRel);
            if overflow {
                tracing::warn!("inotify queue overflow; rescanning");
                self.engine.counters_mut().inotify_overflows += 1;
                self.rescan("overflow");
            } else if Instant::now() >= next_rescan {
                self.rescan("periodic");
                next_rescan = Instant::now() + self.opts.rescan_interval;
            } else if structural {
                self.rescan_changed();
            }
            let (round, bytes) = (Instant::now(), self.engine.counters_mut().bytes_read);
            more = self.engine.read_all();
            if round.elapsed() >= SLOW_ROUND {
                tracing::debug!(
                    ms = round.elapsed().as_millis() as u64,
                    bytes = self.engine.counters_mut().bytes_read - bytes,
                    "slow read round"
                );
            }
            let durable = match self.opts.state_file {
                Some(_) => self.durable_generation.load(Ordering::Acquire),
                None => u64::MAX,
            };
            self.engine.note_durable(durable);
            self.engine.reap();
            // Files listed while no descriptor was free: opened as soon as one is (a scan of
            // their directories, not counted in rescans_total).
            let starved = self.engine.take_starved_dirs();
            self.rescan_dirs(starved, &[], "descriptors");
            if Instant::now() >= next_expiry {
                self.expire_series();
                next_expiry = Instant::now() + EXPIRY_INTERVAL;
            }
            if let Some(tx) = stop {
                tracing::info!("tailer stopping");
                self.save(waiters, Some(tx));
                return;
            }
            // A removed file read to its end is closed once a durable save holds its offset and
            // counts (after a crash it could not be read again): save soon.
            let drained = self.engine.awaiting_save() && self.last_save.elapsed() >= DRAIN_SAVE;
            if !waiters.is_empty() || Instant::now() >= next_save || drained {
                self.save(waiters, None);
                next_save = Instant::now() + self.opts.save_interval;
            }
        }
    }
}
