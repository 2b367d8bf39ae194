//! One scrape: run the selected collectors concurrently under a deadline, then encode.
//!
//! Every collector runs in its own task, so a panic is contained; each has the scrape's timeout,
//! so a stuck libvirt or OVS call costs that collector only. Concurrent scrapes asking for the
//! same set of collectors share one collection (single flight): ten Prometheus replicas scraping
//! at once hit libvirt once. A scrape joins only a collection whose deadline is no later than its
//! own, so one started with a far deadline (a large timeout header) cannot hold the others past
//! theirs. The collection itself runs in a spawned task, so a client that hangs up does not
//! cancel the work others wait for.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::collector::{Collector, Sink};
use crate::process::{build_info, process_metrics};
use futures::future::{FutureExt, Shared};

/// The encoded OpenMetrics text of one collection, shared by every scrape that joined it.
pub type Exposition = Arc<String>;

type InFlight = Shared<futures::future::BoxFuture<'static, Exposition>>;

/// A collection in progress, which later scrapes may join.
struct Flight {
    /// Tells this flight from a later one for the same key.
    id: u64,
    /// When its collectors' deadline runs out.
    deadline: Instant,
    result: InFlight,
}

/// One collector's run: its name, what it gathered (none after a panic or a timeout), whether
/// it succeeded, and how long it took.
type CollectorRun = (&'static str, Option<Sink>, bool, Duration);

/// A request for collectors that this exporter does not have or has disabled.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("unknown collector {0:?}")]
    Unknown(String),
    #[error("collector {0:?} is disabled")]
    Disabled(String),
}

/// Removes a flight from the table when dropped, unless a later flight has taken its slot.
struct Landing {
    scraper: Arc<Scraper>,
    key: Vec<&'static str>,
    id: u64,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut table = crate::sync::lock(&self.scraper.inflight);
        if table.get(&self.key).is_some_and(|f| f.id == self.id) {
            table.remove(&self.key);
        }
    }
}

/// Runs collections and keeps the single-flight table.
pub struct Scraper {
    prefix: &'static str,
    /// Every collector the exporter has, in a stable order.
    all: Vec<Arc<dyn Collector>>,
    /// Names of the enabled ones.
    enabled: Vec<&'static str>,
    inflight: Mutex<HashMap<Vec<&'static str>, Flight>>,
    flights: AtomicU64,
    /// How many collections actually ran (not joined); tests read it.
    runs: AtomicU64,
    /// Whether a collection of every enabled collector has succeeded in full.
    succeeded: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraper")
            .field("prefix", &self.prefix)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl Scraper {
    /// `enabled` lists the names chosen by the command line; names not in `all` are ignored.
    pub fn new(
        prefix: &'static str,
        all: Vec<Arc<dyn Collector>>,
        enabled: &[&'static str],
    ) -> Arc<Self> {
        let enabled = all
            .iter()
            .map(|c| c.name())
            .filter(|n| enabled.contains(n))
            .collect();
        Arc::new(Self {
            prefix,
            all,
            enabled,
            inflight: Mutex::new(HashMap::new()),
            flights: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            succeeded: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The exporter's metric prefix.
    pub fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// Names of the enabled collectors.
    pub fn enabled(&self) -> &[&'static str] {
        &self.enabled
    }

    /// How many collections have run so far (joined scrapes do not count).
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a collection of every enabled collector has succeeded (each collector's
    /// success 1) since the start: what `/-/ready` waits for when the exporter asks it to.
    pub fn has_succeeded(&self) -> bool {
        self.succeeded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resolves `collect[]` parameters: none means every enabled collector.
    pub fn select(&self, wanted: &[String]) -> Result<Vec<&'static str>, SelectError> {
        if wanted.is_empty() {
            return Ok(self.enabled.clone());
        }
        let mut out = Vec::new();
        for w in wanted {
            let Some(c) = self.all.iter().find(|c| c.name() == w) else {
                return Err(SelectError::Unknown(w.clone()));
            };
            if !self.enabled.contains(&c.name()) {
                return Err(SelectError::Disabled(w.clone()));
            }
            if !out.contains(&c.name()) {
                out.push(c.name());
            }
        }
        // Keep the exporter's order so the key (and output) does not depend on parameter order.
        out.sort_by_key(|n| self.enabled.iter().position(|e| e == n));
        Ok(out)
    }

    /// Collects `names` (from [`Scraper::select`]), joining a collection already running for the
    /// same set unless its deadline is later than this scrape's.
    pub async fn scrape(
        self: &Arc<Self>,
        names: Vec<&'static str>,
        timeout: Duration,
    ) -> Exposition {
        // Capped so that the addition cannot overflow (the flag and the header are capped far
        // below this anyway).
        let deadline = Instant::now() + timeout.min(Duration::from_secs(1 << 32));
        let fut = {
            let mut table = crate::sync::lock(&self.inflight);
            match table.get(&names) {
                Some(f) if f.deadline <= deadline => f.result.clone(),
                _ => {
                    let id = self
                        .flights
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let this = Arc::clone(self);
                    let key = names.clone();
                    let task = tokio::spawn(async move {
                        // Leaves the table when the collection ends, panic included: a finished
                        // flight left there would be joined by every later scrape.
                        let _landed = Landing {
                            scraper: Arc::clone(&this),
                            key: key.clone(),
                            id,
                        };
                        this.collect(&key, timeout).await
                    });
                    let f = async move {
                        match task.await {
                            Ok(body) => body,
                            // The task only encodes; if it died, serve an empty, valid exposition.
                            Err(_) => Arc::new("# EOF\n".to_string()),
                        }
                    }
                    .boxed()
                    .shared();
                    table.insert(
                        names,
                        Flight {
                            id,
                            deadline,
                            result: f.clone(),
                        },
                    );
                    f
                }
            }
        };
        fut.await
    }

    async fn collect(&self, names: &[&'static str], timeout: Duration) -> Exposition {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let selected: Vec<Arc<dyn Collector>> = self
            .all
            .iter()
            .filter(|c| names.contains(&c.name()))
            .cloned()
            .collect();
        let prefix = self.prefix;
        let runs = selected.into_iter().map(|c| async move {
            let name = c.name();
            let start = Instant::now();
            let task = tokio::spawn(async move {
                let mut sink = Sink::new(prefix);
                let result = c.collect(&mut sink).await;
                (sink, result)
            });
            let abort = task.abort_handle();
            let (sink, ok) = match tokio::time::timeout(timeout, task).await {
                Ok(Ok((sink, Ok(())))) => (Some(sink), true),
                Ok(Ok((sink, Err(err)))) => {
                    tracing::warn!(collector = name, error = %err, "collector failed");
                    (Some(sink), false)
                }
                Ok(Err(join)) => {
                    let msg = panic_message(join);
                    tracing::error!(collector = name, panic = %msg, "collector panicked");
                    (None, false)
                }
                Err(_) => {
                    abort.abort();
                    tracing::warn!(
                        collector = name,
                        timeout_seconds = timeout.as_secs_f64(),
                        "collector timed out"
                    );
                    (None, false)
                }
            };
            (name, sink, ok, start.elapsed())
        });
        let results = futures::future::join_all(runs).await;
        let (body, all_ok) = self.encode(&results);
        if all_ok
            && names == self.enabled.as_slice()
            && !self
                .succeeded
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!("first collection in which every collector succeeded: ready");
        }
        Arc::new(body)
    }

    /// Writes what each collector gathered, then `scrape_collector_success` and
    /// `scrape_collector_duration_seconds` of each, `build_info` and the process metrics, and
    /// `# EOF`. Returns the text and whether every collector succeeded.
    fn encode(&self, results: &[CollectorRun]) -> (String, bool) {
        let encode_started = Instant::now();
        let text: usize = results
            .iter()
            .filter_map(|r| r.1.as_ref())
            .map(Sink::text_len)
            .sum();
        let mut body = String::with_capacity(64 * 1024 + text);
        let mut own = Sink::new(self.prefix);
        let mut success = own.gauge(
            "scrape_collector_success",
            "Whether a collector succeeded on this scrape (1) or failed, panicked or timed out (0)",
        );
        let mut duration = own.gauge(
            "scrape_collector_duration_seconds",
            "Time a collector took on this scrape",
        );
        let mut all_ok = true;
        for (name, sink, ok, elapsed) in results {
            if let Some(sink) = sink {
                // A String takes every write.
                let _ = sink.encode(&mut body);
            }
            all_ok &= *ok;
            let label = [("collector", *name)];
            success.push(&label, i64::from(*ok));
            duration.push(&label, elapsed.as_secs_f64());
        }
        own.push(success);
        own.push(duration);
        build_info(&mut own);
        let mut process = Sink::new("");
        process_metrics(&mut process);
        let _ = own.encode(&mut body);
        let _ = process.encode(&mut body);
        body.push_str("# EOF\n");
        tracing::debug!(
            seconds = encode_started.elapsed().as_secs_f64(),
            bytes = body.len(),
            "encoded"
        );
        (body, all_ok)
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    if err.is_cancelled() {
        return "cancelled".into();
    }
    match err.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into()),
        Err(_) => "unknown".into(),
    }
}

/// The collection deadline for a scrape: Prometheus's own timeout header minus `offset`, or
/// `default` when the header is absent or unreadable.
pub fn scrape_timeout(header: Option<&str>, default: Duration, offset: Duration) -> Duration {
    let Some(secs) = header
        .and_then(|h| h.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
    else {
        return default;
    };
    let given = Duration::from_secs_f64(secs.min(86_400.0));
    // Leave room for encoding and the network, but never go to zero.
    if given > offset * 2 {
        given - offset
    } else {
        given / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_from_header() {
        let d = Duration::from_secs(10);
        let o = Duration::from_millis(500);
        assert_eq!(scrape_timeout(None, d, o), d);
        assert_eq!(scrape_timeout(Some("garbage"), d, o), d);
        assert_eq!(scrape_timeout(Some("-1"), d, o), d);
        assert_eq!(scrape_timeout(Some("NaN"), d, o), d);
        assert_eq!(scrape_timeout(Some("5"), d, o), Duration::from_millis(4500));
        assert_eq!(
            scrape_timeout(Some("0.6"), d, o),
            Duration::from_millis(300)
        );
    }
}
