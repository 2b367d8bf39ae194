//! `stale_cookie`: flows whose cookie is not one the bridge's owner uses now.
//!
//! Static mode: a cookie is current when it is in `allowed_cookies` (value/mask).
//!
//! Auto mode, built for the neutron OVS agent, which tags every flow with a cookie chosen at its
//! start and deletes flows with other cookies after its first full sync:
//! - Flows with an idle or hard timeout (learned, temporary) and allowed cookies are ignored.
//! - The *dominant* cookie is the one with the most flows (ties: the newer one). Its *first
//!   seen* age is the duration of its oldest flow: when the current agent run began.
//! - A cookie is stale when its own oldest flow is older than the dominant cookie's by more
//!   than `window` (it belongs to an earlier run), once the dominant cookie is older than
//!   `grace` (the agent had time to clean up). Cookies newer than the dominant one (an
//!   extension's cookie first used later) are never stale.
//! - Flows without a duration (`--no-stats` dumps) are never stale.
//!
//! Controllers that use many cookies per run (OVN uses one per logical flow) need `static`
//! or `off`.

use std::collections::HashMap;

use crate::config::{Config, StaleMode};

use super::Record;

/// Marks the flows with a stale cookie; returns their indices in `records`.
pub fn stale_flows(records: &[Record], cfg: &Config) -> Vec<usize> {
    match cfg.stale_cookie.mode {
        StaleMode::Off => Vec::new(),
        StaleMode::Static => records
            .iter()
            .enumerate()
            .filter(|(_, r)| !cfg.cookie_allowed(r.cookie))
            .map(|(i, _)| i)
            .collect(),
        StaleMode::Auto => auto(records, cfg),
    }
}

fn candidate(r: &Record, cfg: &Config) -> bool {
    !r.has_timeout() && r.duration_ms().is_some() && !cfg.cookie_allowed(r.cookie)
}

fn auto(records: &[Record], cfg: &Config) -> Vec<usize> {
    // cookie -> (flows, first seen in ms ago)
    let mut stats: HashMap<u64, (u64, u64)> = HashMap::new();
    // Flows come in runs of one cookie: count a run, then add it to the map once.
    let mut run: Option<(u64, u64, u64)> = None;
    let mut flush = |run: Option<(u64, u64, u64)>| {
        if let Some((cookie, n, first)) = run {
            let e = stats.entry(cookie).or_insert((0, 0));
            e.0 += n;
            e.1 = e.1.max(first);
        }
    };
    for r in records.iter().filter(|r| candidate(r, cfg)) {
        let d = r.duration_ms().unwrap_or(0);
        match &mut run {
            Some((cookie, n, first)) if *cookie == r.cookie => {
                *n += 1;
                *first = (*first).max(d);
            }
            _ => {
                flush(run.take());
                run = Some((r.cookie, 1, d));
            }
        }
    }
    flush(run);
    let Some((&dominant, &(_, dom_first))) = stats.iter().max_by(|a, b| {
        a.1 .0
            .cmp(&b.1 .0)
            .then(b.1 .1.cmp(&a.1 .1))
            .then(b.0.cmp(a.0))
    }) else {
        return Vec::new();
    };
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if dom_first < ms(cfg.stale_cookie.grace) {
        return Vec::new();
    }
    let limit = dom_first.saturating_add(ms(cfg.stale_cookie.window));
    records
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            candidate(r, cfg)
                && r.cookie != dominant
                && stats.get(&r.cookie).is_some_and(|s| s.1 > limit)
        })
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StaleCookie;
    use std::time::Duration;

    fn rec(cookie: u64, secs: u64, timeout: bool) -> Record {
        Record {
            cookie,
            duration: Record::encode_duration(Some(secs * 1000)),
            table: 0,
            priority: 1,
            flags: if timeout { Record::TIMEOUT } else { 0 },
            match_off: 0,
            chunk: 0,
            text_start: 0,
            match_len: 0,
            text_len: 0,
            match_hash: 0,
        }
    }

    fn cfg(mode: StaleMode, allowed: Vec<(u64, u64)>) -> Config {
        Config {
            allowed_cookies: allowed,
            stale_cookie: StaleCookie {
                mode,
                window: Duration::from_secs(60),
                grace: Duration::from_secs(30),
            },
            checks: vec![],
        }
    }

    #[test]
    fn auto_mode() {
        // New run (0x2, 3 flows, 100 s ago), old run (0x1, 1000 s ago), an allowed cookie,
        // a learned flow, an extension cookie first used later (0x3).
        let recs = vec![
            rec(0x1, 1000, false),
            rec(0x2, 100, false),
            rec(0x2, 90, false),
            rec(0x2, 80, false),
            rec(0x9, 5000, false),
            rec(0x7, 4000, true),
            rec(0x3, 10, false),
            rec(0x4, 150, false),
        ];
        let c = cfg(StaleMode::Auto, vec![(0x9, u64::MAX)]);
        assert_eq!(stale_flows(&recs, &c), vec![0]);
        // Within grace: nothing yet.
        let young = vec![
            rec(0x1, 1000, false),
            rec(0x2, 20, false),
            rec(0x2, 20, false),
        ];
        assert!(stale_flows(&young, &c).is_empty());
        // A single cookie is never stale.
        assert!(stale_flows(&[rec(5, 9999, false)], &c).is_empty());
        assert!(stale_flows(&recs, &cfg(StaleMode::Off, vec![])).is_empty());
    }

    #[test]
    fn static_mode() {
        let recs = vec![rec(0x1, 1, false), rec(0x2, 1, true), rec(0xab01, 1, false)];
        let c = cfg(StaleMode::Static, vec![(0x1, u64::MAX), (0xab00, 0xff00)]);
        assert_eq!(stale_flows(&recs, &c), vec![1]);
    }
}
