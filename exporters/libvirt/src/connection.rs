//! The libvirt connection: opened read-only, kept across scrapes, re-opened with backoff.
//!
//! libvirt calls block, so each runs on tokio's blocking pool under `--libvirt.timeout`; a call
//! that does not answer costs its caller that timeout, never the runtime. A call that times out
//! keeps its blocking thread until libvirt answers, so the number of such stuck calls is bounded
//! by refusing new work while `MAX_STUCK` are outstanding. When a connection-level call fails
//! and libvirt says the connection is dead, it is dropped and re-opened on a later scrape after
//! an exponential backoff (from 250 ms up to `--libvirt.reconnect-backoff-max`).
//!
//! With events on (`--libvirt.events`) and a remote URI, domain events come from a helper
//! process ([`crate::events_helper`]), so that libvirt's event loop never watches the
//! connection the scrapes use; for an in-process driver (`test:///`), the connection registers
//! the event callbacks itself. Either way changed domains are marked in a [`ChangeSink`]; the
//! scrape then fetches the XML of those domains only. A driver without events (or a connection that could not register them) falls back to
//! fetching every XML each scrape.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virt::connect::Connect;

use crate::error::Error;
use crate::events_helper::{self, Helper};
use crate::ffi::ChangeSink;

/// Calls left running past their timeout before new calls are refused.
const MAX_STUCK: usize = 64;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Default)]
struct State {
    conn: Option<Arc<Connect>>,
    /// Change events of `conn`, when it delivers them.
    sink: Option<Arc<ChangeSink>>,
    /// The process delivering them, for a remote URI.
    helper: Option<Helper>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

/// A new connection, its events sink and events helper: what [`Libvirt::connection`] opens.
type Opened = (Connect, Option<Arc<ChangeSink>>, Option<Helper>);

/// Opens `uri` read-only and, with `events`, has its domain events delivered: by a helper
/// process running `helper_exe` when given, else by callbacks on the connection. A connection
/// whose events cannot be had is kept without them (blocks).
fn open(uri: &str, events: bool, helper_exe: Option<std::path::PathBuf>) -> Result<Opened, Error> {
    let conn = Connect::open_read_only(Some(uri)).map_err(|e| Error::libvirt("open", &e))?;
    let no_events = |e: &dyn std::fmt::Display| {
        tracing::info!(error = %e, "no domain events on this connection; fetching every domain XML on every scrape");
    };
    let (sink, helper) = match (events, helper_exe) {
        (false, _) => (None, None),
        (true, Some(exe)) => match Helper::spawn(&exe, uri) {
            Ok(h) => (Some(Arc::clone(&h.sink)), Some(h)),
            Err(e) => {
                no_events(&e);
                (None, None)
            }
        },
        (true, None) => {
            let sink = Arc::new(ChangeSink::default());
            match crate::ffi::watch_domain_changes(&conn, &sink) {
                Ok(_) => (Some(sink), None),
                Err(e) => {
                    no_events(&e);
                    (None, None)
                }
            }
        }
    };
    Ok((conn, sink, helper))
}

/// Per-call counts since start.
#[derive(Debug, Default, Clone, Copy)]
pub struct CallCounts {
    pub errors: u64,
    pub timeouts: u64,
}

/// A shared libvirt connection with timeouts and reconnects.
pub struct Libvirt {
    uri: String,
    timeout: Duration,
    max_backoff: Duration,
    state: Mutex<State>,
    counts: Mutex<BTreeMap<&'static str, CallCounts>>,
    stuck: Arc<AtomicUsize>,
    opens: AtomicU64,
    /// Serialises opening, so collectors scraping at once open one connection, not several.
    opening: tokio::sync::Mutex<()>,
    events: bool,
    /// With events on a remote URI: the exporter binary to run as events helper.
    helper_exe: Option<std::path::PathBuf>,
    /// Events received on connections that were since dropped.
    old_events: AtomicU64,
}

impl std::fmt::Debug for Libvirt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libvirt").field("uri", &self.uri).finish()
    }
}

impl Libvirt {
    /// Does not connect yet: the first scrape does. With `events`, libvirt's event loop is
    /// started (once per process) so connections can deliver domain change events.
    pub fn new(uri: String, timeout: Duration, max_backoff: Duration, events: bool) -> Self {
        crate::ffi::quiet_libvirt_errors();
        let helper_exe = if events && !events_helper::in_process(&uri) {
            events_helper::helper_exe()
        } else {
            None
        };
        let events = events
            && (helper_exe.is_some()
                || match crate::ffi::start_event_loop() {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start libvirt's event loop; fetching every domain XML on every scrape");
                        false
                    }
                });
        Self {
            uri,
            timeout,
            max_backoff: max_backoff.max(FIRST_BACKOFF),
            state: Mutex::new(State::default()),
            counts: Mutex::new(BTreeMap::new()),
            stuck: Arc::new(AtomicUsize::new(0)),
            opens: AtomicU64::new(0),
            opening: tokio::sync::Mutex::new(()),
            events,
            helper_exe,
            old_events: AtomicU64::new(0),
        }
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Successful connection opens since start (the first one included).
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    /// Errors and timeouts per call name.
    pub fn call_counts(&self) -> BTreeMap<&'static str, CallCounts> {
        common::sync::lock(&self.counts).clone()
    }

    /// Counts a failed call made inside a larger blocking task (per-domain calls).
    pub fn count_error(&self, call: &'static str) {
        self.count(call, false);
    }

    /// Counts a call that did not answer in time, run outside [`Libvirt::blocking`].
    pub fn count_timeout(&self, call: &'static str) {
        self.count(call, true);
    }

    fn count(&self, call: &'static str, timeout: bool) {
        let mut c = common::sync::lock(&self.counts);
        let e = c.entry(call).or_default();
        if timeout {
            e.timeouts += 1;
        } else {
            e.errors += 1;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        common::sync::lock(&self.state)
    }

    /// The open connection, opening it if due.
    pub async fn connection(&self) -> Result<Arc<Connect>, Error> {
        let _opening = self.opening.lock().await;
        {
            let st = self.lock();
            if let Some(c) = &st.conn {
                return Ok(Arc::clone(c));
            }
            if let Some(at) = st.retry_at {
                if Instant::now() < at {
                    return Err(Error::NotConnected(format!(
                        "{} (next attempt in {:.1}s)",
                        st.last_error,
                        at.saturating_duration_since(Instant::now()).as_secs_f64()
                    )));
                }
            }
        }
        let uri = self.uri.clone();
        let events = self.events;
        let helper_exe = self.helper_exe.clone();
        let opened = self
            .blocking("open", move || open(&uri, events, helper_exe))
            .await;
        let mut st = self.lock();
        match opened {
            Ok((conn, sink, helper)) => {
                let conn = Arc::new(conn);
                st.sink = sink;
                st.helper = helper;
                if st.failures > 0 {
                    tracing::info!(uri = %self.uri, after_failures = st.failures, "libvirt connection re-established");
                }
                st.conn = Some(Arc::clone(&conn));
                st.failures = 0;
                st.retry_at = None;
                st.last_error.clear();
                self.opens.fetch_add(1, Ordering::Relaxed);
                Ok(conn)
            }
            Err(err) => {
                st.failures = st.failures.saturating_add(1);
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1u32 << st.failures.saturating_sub(1).min(16))
                    .min(self.max_backoff);
                st.retry_at = Some(Instant::now() + backoff);
                st.last_error = err.to_string();
                if st.failures == 1 {
                    tracing::warn!(uri = %self.uri, error = %err, "cannot connect to libvirt");
                } else {
                    tracing::debug!(uri = %self.uri, error = %err, failures = st.failures, "cannot connect to libvirt");
                }
                Err(Error::NotConnected(err.to_string()))
            }
        }
    }

    /// Drops `conn` if it is still the current one (after a connection-level failure), so the
    /// next scrape re-opens it. The close runs on the blocking pool: closing a remote connection
    /// talks to the daemon.
    pub fn invalidate(&self, conn: &Arc<Connect>) {
        let mut st = self.lock();
        if st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            if let Some(sink) = st.sink.take() {
                self.old_events.fetch_add(sink.events(), Ordering::Relaxed);
            }
            let old = (st.conn.take(), st.helper.take());
            tokio::task::spawn_blocking(move || drop(old));
            st.retry_at = None;
        }
    }

    /// The domains (UUIDs) whose XML changed since the last call, when `conn` delivers events;
    /// `None` when it does not (every XML must be fetched).
    pub fn take_changes(&self, conn: &Arc<Connect>) -> Option<std::collections::HashSet<String>> {
        let st = self.lock();
        if !st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            return None;
        }
        if st.helper.as_ref().is_some_and(Helper::is_dead) {
            // Its events since it died are lost: fetch everything, re-open both.
            drop(st);
            tracing::warn!("the libvirt events helper exited; re-opening the connection");
            self.invalidate(conn);
            return None;
        }
        st.sink.as_ref().map(|s| s.take())
    }

    /// The domains (UUIDs) with an event since the last call (they may have started or ended a
    /// job); empty when the connection delivers no events. The first call starts keeping them.
    pub fn take_job_hints(&self, conn: &Arc<Connect>) -> std::collections::HashSet<String> {
        let st = self.lock();
        if !st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            return Default::default();
        }
        st.sink.as_ref().map(|s| s.take_jobs()).unwrap_or_default()
    }

    /// Domain events received since start (`None` when events are off).
    pub fn events_received(&self) -> Option<u64> {
        self.events.then(|| {
            self.old_events.load(Ordering::Relaxed)
                + self.lock().sink.as_ref().map(|s| s.events()).unwrap_or(0)
        })
    }

    /// Runs `f` on the blocking pool under the call timeout.
    pub async fn blocking<T, F>(&self, call: &'static str, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        if self.stuck.load(Ordering::Relaxed) >= MAX_STUCK {
            self.count(call, true);
            return Err(Error::Timeout { call, seconds: 0.0 });
        }
        let stuck = Arc::clone(&self.stuck);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done2 = Arc::clone(&done);
        let task = tokio::task::spawn_blocking(move || {
            let out = f();
            // A call that outlived its timeout was counted as stuck: release it.
            if done2.swap(true, Ordering::AcqRel) {
                stuck.fetch_sub(1, Ordering::AcqRel);
            }
            out
        });
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => {
                self.count(call, false);
                Err(e)
            }
            Ok(Err(join)) => {
                self.count(call, false);
                Err(Error::Libvirt {
                    call,
                    message: format!("call panicked: {join}"),
                })
            }
            Err(_) => {
                if !done.swap(true, Ordering::AcqRel) {
                    self.stuck.fetch_add(1, Ordering::AcqRel);
                }
                self.count(call, true);
                Err(Error::Timeout {
                    call,
                    seconds: self.timeout.as_secs_f64(),
                })
            }
        }
    }

    /// Runs `f` on each of `jobs` on at most `workers` blocking threads, each taking the next
    /// job as soon as it is done with one (no round trip through the async runtime between
    /// jobs: on a busy host every thread wake-up costs scheduling latency), and returns the
    /// answers in the order of `jobs`. Each job is under the call timeout: a watchdog gives a
    /// job that overruns it `Error::Timeout`, leaves its thread to finish in the background
    /// (counted as stuck) and starts a replacement, so one stuck domain delays no other.
    pub async fn pool<J, T, F>(
        &self,
        call: &'static str,
        jobs: Vec<J>,
        workers: usize,
        f: F,
    ) -> Vec<Result<T, Error>>
    where
        J: Send + 'static,
        T: Send + 'static,
        F: Fn(J) -> T + Send + Sync + 'static,
    {
        let n = jobs.len();
        if n == 0 {
            return Vec::new();
        }
        let mut run = PoolRun::new(call, jobs, f, Arc::clone(&self.stuck));
        let _drain = DrainOnDrop(Arc::clone(&run.queue));
        if self.stuck.load(Ordering::Relaxed) >= MAX_STUCK {
            run.refuse_rest(self);
        } else {
            for _ in 0..workers.clamp(1, n) {
                run.spawn_worker();
            }
        }
        let tick = (self.timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
        while !run.answers.complete() {
            if tokio::time::timeout(tick, run.answers.done.notified())
                .await
                .is_ok()
            {
                break;
            }
            run.watchdog(self);
        }
        run.answers.collect(self, call)
    }

    /// Runs `f` with the connection on the blocking pool under the call timeout. When it fails
    /// and the connection is no longer alive, the connection is dropped for a later re-open.
    pub async fn with_conn<T, F>(
        &self,
        conn: &Arc<Connect>,
        call: &'static str,
        f: F,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, virt::error::Error> + Send + 'static,
    {
        let c = Arc::clone(conn);
        let out = self
            .blocking(call, move || f(&c).map_err(|e| Error::libvirt(call, &e)))
            .await;
        if out.is_err() {
            let c = Arc::clone(conn);
            let alive = self
                .blocking("is_alive", move || {
                    c.is_alive().map_err(|e| Error::libvirt("is_alive", &e))
                })
                .await;
            if !matches!(alive, Ok(true)) {
                self.invalidate(conn);
            }
        }
        out
    }
}

/// A job's answer once it is in.
type Slot<T> = Option<Result<T, Error>>;

/// Answers by job, and how many are still missing; the caller is woken only when the last one
/// is in (a wake-up per job would cost as much as the job on a busy host).
struct Answers<T> {
    /// Each job's answer once it is in, and the count of those still missing.
    slots: Mutex<(Vec<Slot<T>>, usize)>,
    done: tokio::sync::Notify,
}

impl<T> Answers<T> {
    fn new(n: usize) -> Self {
        Self {
            slots: Mutex::new(((0..n).map(|_| None).collect(), n)),
            done: tokio::sync::Notify::new(),
        }
    }

    /// Stores an answer unless the job has one (a timeout); true if it was stored.
    fn put(&self, i: usize, answer: Result<T, Error>) -> bool {
        let mut g = common::sync::lock(&self.slots);
        let (slots, missing) = &mut *g;
        match slots.get_mut(i) {
            Some(slot @ None) => {
                *slot = Some(answer);
                *missing -= 1;
                if *missing == 0 {
                    self.done.notify_one();
                }
                true
            }
            _ => false,
        }
    }

    fn complete(&self) -> bool {
        common::sync::lock(&self.slots).1 == 0
    }

    /// The answers in job order; failures other than timeouts are counted here.
    fn collect(&self, lv: &Libvirt, call: &'static str) -> Vec<Result<T, Error>> {
        let slots = std::mem::take(&mut common::sync::lock(&self.slots).0);
        let mut out = Vec::with_capacity(slots.len());
        for o in slots {
            let answer = o.unwrap_or(Err(Error::Libvirt {
                call,
                message: "no answer".into(),
            }));
            if answer.is_err() && !matches!(answer, Err(Error::Timeout { .. })) {
                lv.count(call, false);
            }
            out.push(answer);
        }
        out
    }
}

/// The jobs not started yet, with their index.
type Queue<J> = Arc<Mutex<std::collections::VecDeque<(usize, J)>>>;

/// Empties the queue when the pool's future is dropped before the end (the scrape's timeout
/// gave up on the collector): the workers finish the job in hand and stop, instead of making
/// the rest of the calls for nobody beside the next scrape's.
struct DrainOnDrop<J>(Queue<J>);

impl<J> Drop for DrainOnDrop<J> {
    fn drop(&mut self) {
        common::sync::lock(&self.0).clear();
    }
}

/// A worker's current job and when it started, and whether the watchdog gave up on it.
#[derive(Default)]
struct Worker {
    job: Mutex<Option<(usize, Instant)>>,
    abandoned: std::sync::atomic::AtomicBool,
}

/// One run of [`Libvirt::pool`]: its queue, answers and workers.
struct PoolRun<J, T, F> {
    call: &'static str,
    queue: Queue<J>,
    answers: Arc<Answers<T>>,
    f: Arc<F>,
    stuck: Arc<AtomicUsize>,
    workers: Vec<Arc<Worker>>,
}

impl<J, T, F> PoolRun<J, T, F>
where
    J: Send + 'static,
    T: Send + 'static,
    F: Fn(J) -> T + Send + Sync + 'static,
{
    fn new(call: &'static str, jobs: Vec<J>, f: F, stuck: Arc<AtomicUsize>) -> Self {
        Self {
            call,
            answers: Arc::new(Answers::new(jobs.len())),
            queue: Arc::new(Mutex::new(jobs.into_iter().enumerate().collect())),
            f: Arc::new(f),
            stuck,
            workers: Vec::new(),
        }
    }

    /// Starts a blocking thread that takes jobs until the queue is empty or it is given up on.
    fn spawn_worker(&mut self) {
        let me = Arc::new(Worker::default());
        self.workers.push(Arc::clone(&me));
        let call = self.call;
        let (queue, f, answers, stuck) = (
            Arc::clone(&self.queue),
            Arc::clone(&self.f),
            Arc::clone(&self.answers),
            Arc::clone(&self.stuck),
        );
        tokio::task::spawn_blocking(move || loop {
            let next = common::sync::lock(&queue).pop_front();
            let Some((i, job)) = next else { break };
            *common::sync::lock(&me.job) = Some((i, Instant::now()));
            let answer =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(job))).map_err(|_| {
                    Error::Libvirt {
                        call,
                        message: "call panicked".into(),
                    }
                });
            *common::sync::lock(&me.job) = None;
            answers.put(i, answer);
            if me.abandoned.load(Ordering::Acquire) {
                // Given up on by the watchdog: it started a replacement.
                stuck.fetch_sub(1, Ordering::AcqRel);
                break;
            }
        });
    }

    /// Answers every job not started yet with a timeout (too many calls are stuck).
    fn refuse_rest(&self, lv: &Libvirt) {
        let mut q = common::sync::lock(&self.queue);
        for (i, _) in q.drain(..) {
            lv.count(self.call, true);
            self.answers.put(
                i,
                Err(Error::Timeout {
                    call: self.call,
                    seconds: 0.0,
                }),
            );
        }
    }

    /// Gives up on jobs past the call timeout and starts a replacement worker for each while
    /// fewer than `MAX_STUCK` calls are stuck; with every worker given up on, refuses the rest.
    fn watchdog(&mut self, lv: &Libvirt) {
        let mut replace = 0;
        for w in &self.workers {
            if w.abandoned.load(Ordering::Acquire) {
                continue;
            }
            let overdue = common::sync::lock(&w.job)
                .filter(|(_, t)| t.elapsed() >= lv.timeout)
                .map(|(i, _)| i);
            let Some(i) = overdue else { continue };
            w.abandoned.store(true, Ordering::Release);
            self.stuck.fetch_add(1, Ordering::AcqRel);
            lv.count(self.call, true);
            self.answers.put(
                i,
                Err(Error::Timeout {
                    call: self.call,
                    seconds: lv.timeout.as_secs_f64(),
                }),
            );
            replace += 1;
        }
        for _ in 0..replace {
            if self.stuck.load(Ordering::Relaxed) < MAX_STUCK {
                self.spawn_worker();
            }
        }
        if self
            .workers
            .iter()
            .all(|w| w.abandoned.load(Ordering::Acquire))
        {
            self.refuse_rest(lv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_hangs_times_out_and_is_counted() {
        let lv = Libvirt::new(
            "test:///default".into(),
            Duration::from_millis(50),
            Duration::from_secs(1),
            false,
        );
        let slow = lv
            .blocking("slow", || {
                std::thread::sleep(Duration::from_millis(300));
                Ok(1)
            })
            .await;
        assert!(
            matches!(slow, Err(Error::Timeout { call: "slow", .. })),
            "{slow:?}"
        );
        assert_eq!(lv.stuck.load(Ordering::Acquire), 1);
        let fast = lv.blocking("fast", || Ok(2)).await;
        assert_eq!(fast.ok(), Some(2));
        let failing: Result<(), Error> = lv
            .blocking("failing", || Err(Error::invalid("x", "y")))
            .await;
        assert!(failing.is_err());
        let counts = lv.call_counts();
        assert_eq!(counts["slow"].timeouts, 1);
        assert_eq!(counts["failing"].errors, 1);
        assert!(!counts.contains_key("fast"));
        // The stuck call is released once it returns.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(lv.stuck.load(Ordering::Acquire), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pool_job_that_hangs_times_out_alone() {
        let lv = Libvirt::new(
            "test:///default".into(),
            Duration::from_millis(200),
            Duration::from_secs(1),
            false,
        );
        // Job 3 hangs; with 2 workers the others still finish, in order, on time.
        let started = Instant::now();
        let out = lv
            .pool("job", (0..20u64).collect(), 2, |i| {
                if i == 3 {
                    std::thread::sleep(Duration::from_millis(800));
                }
                i * 10
            })
            .await;
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(out.len(), 20);
        for (i, o) in out.iter().enumerate() {
            match i {
                3 => assert!(
                    matches!(o, Err(Error::Timeout { call: "job", .. })),
                    "{o:?}"
                ),
                _ => assert_eq!(o.as_ref().ok(), Some(&(i as u64 * 10)), "job {i}"),
            }
        }
        let counts = lv.call_counts();
        assert_eq!((counts["job"].timeouts, counts["job"].errors), (1, 0));
        assert_eq!(lv.stuck.load(Ordering::Acquire), 1);
        // The stuck worker is released when its job returns.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(lv.stuck.load(Ordering::Acquire), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_pool_stops_taking_jobs() {
        // The scrape's timeout drops the pool's future (the framework gives up on the
        // collector): its workers must not go on through the rest of the domains, or every
        // abandoned scrape on a slow libvirtd adds its leftover calls to the next scrape's.
        let lv = Libvirt::new(
            "test:///default".into(),
            Duration::from_secs(10),
            Duration::from_secs(1),
            false,
        );
        let ran = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&ran);
        let pool = lv.pool("job", (0..100u64).collect(), 2, move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
        });
        assert!(tokio::time::timeout(Duration::from_millis(100), pool)
            .await
            .is_err());
        let at_drop = ran.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let later = ran.load(Ordering::SeqCst);
        // At most the job each worker was in when the pool was dropped.
        assert!(
            later <= at_drop + 2,
            "{at_drop} jobs when dropped, {later} later"
        );
    }

    #[tokio::test]
    async fn unreachable_libvirt_backs_off() {
        let lv = Libvirt::new(
            "test+unix:///nonexistent.xml?socket=/nonexistent/sock".into(),
            Duration::from_secs(2),
            Duration::from_secs(60),
            false,
        );
        let first = lv.connection().await;
        assert!(matches!(first, Err(Error::NotConnected(_))));
        // Within the backoff no new attempt is made: the answer is immediate and says so.
        let second = lv
            .connection()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(second.contains("next attempt in"), "{second}");
        assert_eq!(lv.opens(), 0);
    }
}
