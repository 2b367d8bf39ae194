//! The libvirt connection: opened read-only, kept across scrapes, re-opened with backoff.
//!
//! libvirt calls block, so each runs on tokio's blocking pool under `--libvirt.timeout`; a call
//! that does not answer costs its caller that timeout, never the runtime. A call that times out
//! keeps its blocking thread until libvirt answers, so the number of such stuck calls is bounded
//! by refusing new work while `MAX_STUCK` are outstanding. When a connection-level call fails
//! and libvirt says the connection is dead, it is dropped and re-opened on a later scrape after
//! an exponential backoff (from 250 ms up to `--libvirt.reconnect-backoff-max`).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virt::connect::Connect;

use crate::error::Error;

/// Calls left running past their timeout before new calls are refused.
const MAX_STUCK: usize = 64;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Default)]
struct State {
    conn: Option<Arc<Connect>>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
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
}

impl std::fmt::Debug for Libvirt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libvirt").field("uri", &self.uri).finish()
    }
}

impl Libvirt {
    /// Does not connect yet: the first scrape does.
    pub fn new(uri: String, timeout: Duration, max_backoff: Duration) -> Self {
        crate::ffi::quiet_libvirt_errors();
        Self {
            uri,
            timeout,
            max_backoff: max_backoff.max(FIRST_BACKOFF),
            state: Mutex::new(State::default()),
            counts: Mutex::new(BTreeMap::new()),
            stuck: Arc::new(AtomicUsize::new(0)),
            opens: AtomicU64::new(0),
            opening: tokio::sync::Mutex::new(()),
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
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn count(&self, call: &'static str, timeout: bool) {
        if let Ok(mut c) = self.counts.lock() {
            let e = c.entry(call).or_default();
            if timeout {
                e.timeouts += 1;
            } else {
                e.errors += 1;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
        let opened = self
            .blocking("open", move || {
                Connect::open_read_only(Some(&uri)).map_err(|e| Error::libvirt("open", &e))
            })
            .await;
        let mut st = self.lock();
        match opened {
            Ok(conn) => {
                let conn = Arc::new(conn);
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
            if let Some(old) = st.conn.take() {
                tokio::task::spawn_blocking(move || drop(old));
            }
            st.retry_at = None;
        }
    }

    /// Runs `f` on the blocking pool under the call timeout.
    pub async fn blocking<T, F>(&self, call: &'static str, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        if self.stuck.load(Ordering::Relaxed) >= MAX_STUCK {
            self.count(call, true);
            return Err(Error::Timeout {
                call,
                seconds: 0.0,
            });
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

    /// Runs `f` with the connection on the blocking pool under the call timeout. When it fails
    /// and the connection is no longer alive, the connection is dropped for a later re-open.
    pub async fn with_conn<T, F>(&self, conn: &Arc<Connect>, call: &'static str, f: F) -> Result<T, Error>
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
                .blocking("is_alive", move || c.is_alive().map_err(|e| Error::libvirt("is_alive", &e)))
                .await;
            if !matches!(alive, Ok(true)) {
                self.invalidate(conn);
            }
        }
        out
    }
}
