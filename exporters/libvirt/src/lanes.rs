//! Connections of their own for the workers of the per-domain stats calls.
//!
//! libvirt's remote client lets threads share a connection by having one of them do the socket
//! I/O for all and hand each reply to its caller's thread with a wake-up. The per-domain stats
//! calls ([`crate::stats_fallback`], 4 per running domain on a driver whose bulk stats lack
//! counters) are many small calls, so that hand-off is a large part of what they cost the
//! exporter: 2,000 of them on 500 domains cost 0.080 s of exporter CPU on one connection shared
//! by 4 threads, 0.060 s on 4 connections with one thread each (`bench/bench.sh`'s libvirtd).
//! A lane is such a connection: a worker takes a free one for a job and gives it back after, so
//! no two threads share it. A domain handle belongs to one connection, so each lane keeps its
//! own handles by UUID, from one `virConnectListAllDomains` when it meets a domain it does not
//! know (at most once per round, see [`Lanes::next_round`]).
//!
//! Lanes are opened on demand, up to the workers of a round, for remote URIs only: an
//! in-process driver has no socket to share, and a second `test:///file` connection would be a
//! second copy of the node. A lane belongs to one main connection (by its open count) and is
//! closed when that is replaced, or when a call on it fails and it is no longer alive. When
//! none can be had (opening failed: retried after [`OPEN_RETRY`]) the job uses the main
//! connection's handle, as the calls did without lanes.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::Domain;

/// How long lanes are not opened again after an open failed.
pub const OPEN_RETRY: Duration = Duration::from_secs(60);

/// One worker's connection and its domain handles.
pub struct Lane {
    conn: Connect,
    /// The main connection's open count when this lane was opened.
    generation: u64,
    domains: HashMap<String, Domain>,
    /// The round of the last listing.
    listed_in: Option<u64>,
}

impl Lane {
    /// This lane's handle of domain `uuid`, listing the lane's domains when it does not know
    /// it (once per `round`); `None` when the domain is not listed (it is gone) or listing
    /// failed.
    pub fn domain(&mut self, uuid: &str, round: u64) -> Option<&Domain> {
        if !self.domains.contains_key(uuid) && self.listed_in != Some(round) {
            self.listed_in = Some(round);
            if let Ok(list) = self.conn.list_all_domains(0) {
                self.domains = list
                    .into_iter()
                    .filter_map(|d| Some((d.uuid_string().ok()?, d)))
                    .collect();
            }
        }
        self.domains.get(uuid)
    }

    /// Whether the lane's connection still works (asked after a call on it failed).
    pub fn alive(&self) -> bool {
        matches!(self.conn.is_alive(), Ok(true))
    }
}

#[derive(Default)]
struct Pool {
    free: Vec<Lane>,
    /// Lanes open, free or taken.
    open: usize,
    /// No opening before this (after a failed open).
    retry_at: Option<Instant>,
}

/// The lanes of one exporter.
pub struct Lanes {
    uri: String,
    enabled: bool,
    pool: Mutex<Pool>,
    round: AtomicU64,
    /// Opens that failed since start.
    open_errors: AtomicU64,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes").field("uri", &self.uri).finish()
    }
}

impl Lanes {
    /// Lanes to `uri`; none for an in-process driver.
    pub fn new(uri: &str) -> Self {
        Self {
            uri: uri.to_string(),
            enabled: !crate::events_helper::in_process(uri),
            pool: Mutex::new(Pool::default()),
            round: AtomicU64::new(0),
            open_errors: AtomicU64::new(0),
        }
    }

    /// Starts a round of jobs (one scrape's per-domain stats calls) and returns its number.
    pub fn next_round(&self) -> u64 {
        self.round.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Opens that failed since start.
    pub fn open_errors(&self) -> u64 {
        self.open_errors.load(Ordering::Relaxed)
    }

    /// A free lane of main connection number `generation`, opening one while fewer than `max`
    /// are open; `None` when lanes are off or none can be had (blocks: call it on a worker).
    pub fn take(&self, generation: u64, max: usize) -> Option<Lane> {
        if !self.enabled {
            return None;
        }
        let mut stale = Vec::new();
        {
            let mut pool = common::sync::lock(&self.pool);
            while let Some(lane) = pool.free.pop() {
                if lane.generation == generation {
                    return Some(lane);
                }
                pool.open -= 1;
                stale.push(lane);
            }
            if pool.open >= max || pool.retry_at.is_some_and(|t| Instant::now() < t) {
                return None;
            }
            pool.open += 1;
        }
        // Closing talks to the daemon: outside the lock.
        drop(stale);
        match Connect::open_read_only(Some(&self.uri)) {
            Ok(conn) => Some(Lane {
                conn,
                generation,
                domains: HashMap::new(),
                listed_in: None,
            }),
            Err(e) => {
                tracing::warn!(error = %e, retry_seconds = OPEN_RETRY.as_secs(), "cannot open a connection for a worker; its calls use the main connection");
                self.open_errors.fetch_add(1, Ordering::Relaxed);
                let mut pool = common::sync::lock(&self.pool);
                pool.open -= 1;
                pool.retry_at = Some(Instant::now() + OPEN_RETRY);
                None
            }
        }
    }

    /// Returns a lane taken with [`Lanes::take`]; `broken` closes it instead.
    pub fn give(&self, lane: Lane, broken: bool) {
        let mut pool = common::sync::lock(&self.pool);
        if broken {
            pool.open -= 1;
            drop(pool);
            drop(lane);
        } else {
            pool.free.push(lane);
        }
    }
}

impl Drop for Lanes {
    /// Closes the free lanes on a thread of their own: closing talks to the daemon, which may
    /// hang (the exporter stopping while libvirtd does not answer must not wait for it).
    fn drop(&mut self) {
        let free = std::mem::take(&mut common::sync::lock(&self.pool).free);
        if !free.is_empty() {
            let _ = std::thread::Builder::new()
                .name("lanes-close".into())
                .spawn(move || drop(free));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn in_process_drivers_get_no_lanes() {
        let lanes = Lanes::new("test:///default");
        assert!(lanes.take(1, 4).is_none());
        assert_eq!(lanes.open_errors(), 0);
    }

    #[test]
    fn a_failed_open_is_counted_and_not_retried_at_once() {
        let lanes = Lanes::new("test+unix:///nonexistent.xml?socket=/nonexistent/sock");
        assert!(lanes.take(1, 4).is_none());
        assert_eq!(lanes.open_errors(), 1);
        // Within OPEN_RETRY no new attempt is made.
        assert!(lanes.take(1, 4).is_none());
        assert_eq!(lanes.open_errors(), 1);
    }
}
