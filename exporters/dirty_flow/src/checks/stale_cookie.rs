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
//!
//! The check streams: each flow adds to its cookie's aggregate ([`StaleCookies`]: flows, oldest
//! flow, and the first flows as evidence), and which cookies are stale is decided from the
//! aggregates when the dump ends. No flow is kept. Evidence is kept for the first
//! [`EVIDENCE_COOKIES`] cookies seen (the count covers every cookie).

use std::collections::HashMap;

use common::text::FxBuild;

use crate::config::{Config, StaleMode};

use super::Evidence;

/// Cookies whose first flows are kept as evidence: a bridge has a few (one per agent run), but
/// a controller with a cookie per flow must not make the evidence grow with the flows.
pub const EVIDENCE_COOKIES: usize = 64;

/// One cookie's flows that may be stale.
#[derive(Debug, Default)]
struct CookieStats {
    flows: u64,
    /// Milliseconds since its oldest flow was added.
    first: u64,
    /// Its first flows (dump position, flow), at most the evidence limit.
    evidence: Vec<(u64, Evidence)>,
}

/// The per-cookie aggregates of one dump.
#[derive(Debug, Default)]
pub struct StaleCookies {
    stats: HashMap<u64, CookieStats, FxBuild>,
}

/// What [`StaleCookies::add`] needs of a flow.
#[derive(Debug, Clone, Copy)]
pub struct CookieFlow {
    pub cookie: u64,
    /// Milliseconds since the flow was added (None: the dump had no stats).
    pub duration_ms: Option<u64>,
    pub has_timeout: bool,
    /// Position of the flow in the dump (orders the evidence).
    pub seq: u64,
}

impl StaleCookies {
    /// Whether a flow may be stale at all (else it is not counted).
    pub fn candidate(cfg: &Config, f: &CookieFlow) -> bool {
        match cfg.stale_cookie.mode {
            StaleMode::Off => false,
            StaleMode::Static => !cfg.cookie_allowed(f.cookie),
            StaleMode::Auto => {
                !f.has_timeout && f.duration_ms.is_some() && !cfg.cookie_allowed(f.cookie)
            }
        }
    }

    /// Adds a flow; `evidence` makes its evidence entry, called only when it is kept.
    pub fn add(
        &mut self,
        cfg: &Config,
        f: CookieFlow,
        limit: usize,
        evidence: impl FnOnce() -> Evidence,
    ) {
        if !Self::candidate(cfg, &f) {
            return;
        }
        let known = self.stats.len();
        let keep_new = known < EVIDENCE_COOKIES;
        let s = self.stats.entry(f.cookie).or_default();
        s.flows += 1;
        s.first = s.first.max(f.duration_ms.unwrap_or(0));
        // Evidence for a cookie is kept from its first flow or never.
        let first_flow = s.flows == 1;
        if (first_flow && keep_new || !first_flow && !s.evidence.is_empty())
            && s.evidence.len() < limit
        {
            s.evidence.push((f.seq, evidence()));
        }
    }

    /// The stale cookies (ascending).
    fn stale(&self, cfg: &Config) -> Vec<u64> {
        let mut out: Vec<u64> = match cfg.stale_cookie.mode {
            StaleMode::Off => Vec::new(),
            StaleMode::Static => self.stats.keys().copied().collect(),
            StaleMode::Auto => self.auto(cfg),
        };
        out.sort_unstable();
        out
    }

    fn auto(&self, cfg: &Config) -> Vec<u64> {
        let Some((&dominant, dom)) = self.stats.iter().max_by(|a, b| {
            a.1.flows
                .cmp(&b.1.flows)
                .then(b.1.first.cmp(&a.1.first))
                .then(b.0.cmp(a.0))
        }) else {
            return Vec::new();
        };
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if dom.first < ms(cfg.stale_cookie.grace) {
            return Vec::new();
        }
        let limit = dom.first.saturating_add(ms(cfg.stale_cookie.window));
        self.stats
            .iter()
            .filter(|(&c, s)| c != dominant && s.first > limit)
            .map(|(&c, _)| c)
            .collect()
    }

    /// The stale flows: how many, and the first `limit` in dump order.
    pub fn finish(self, cfg: &Config, limit: usize) -> (u64, Vec<Evidence>) {
        let stale = self.stale(cfg);
        let mut stats = self.stats;
        let mut dirty = 0;
        let mut evidence = Vec::new();
        for c in stale {
            if let Some(s) = stats.remove(&c) {
                dirty += s.flows;
                evidence.extend(s.evidence);
            }
        }
        evidence.sort_unstable_by_key(|(seq, _)| *seq);
        evidence.truncate(limit);
        (dirty, evidence.into_iter().map(|(_, e)| e).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StaleCookie;
    use std::time::Duration;

    /// (cookie, seconds since added, has a timeout) per flow.
    type Rec = (u64, u64, bool);

    /// Streams the flows through the aggregates; returns the stale flows' dump positions and
    /// how many the count says.
    fn stale_with(recs: &[Rec], c: &Config, limit: usize) -> (Vec<u64>, u64) {
        let mut acc = StaleCookies::default();
        for (seq, &(cookie, secs, timeout)) in recs.iter().enumerate() {
            let f = CookieFlow {
                cookie,
                duration_ms: Some(secs * 1000),
                has_timeout: timeout,
                seq: seq as u64,
            };
            acc.add(c, f, limit, || Evidence {
                table: "0".into(),
                priority: 1,
                cookie,
                flow: seq.to_string(),
                fetch: None,
            });
        }
        let (n, ev) = acc.finish(c, limit);
        (ev.iter().map(|e| e.flow.parse().unwrap()).collect(), n)
    }

    fn stale_flows(recs: &[Rec], c: &Config) -> Vec<u64> {
        let (shown, n) = stale_with(recs, c, 100);
        assert_eq!(n, shown.len() as u64);
        shown
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
            ..Config::default()
        }
    }

    #[test]
    fn auto_mode() {
        // New run (0x2, 3 flows, 100 s ago), old run (0x1, 1000 s ago), an allowed cookie,
        // a learned flow, an extension cookie first used later (0x3).
        let recs = vec![
            (0x1, 1000, false),
            (0x2, 100, false),
            (0x2, 90, false),
            (0x2, 80, false),
            (0x9, 5000, false),
            (0x7, 4000, true),
            (0x3, 10, false),
            (0x4, 150, false),
        ];
        let c = cfg(StaleMode::Auto, vec![(0x9, u64::MAX)]);
        assert_eq!(stale_flows(&recs, &c), vec![0]);
        // Within grace: nothing yet.
        let young = vec![(0x1, 1000, false), (0x2, 20, false), (0x2, 20, false)];
        assert!(stale_flows(&young, &c).is_empty());
        // A single cookie is never stale.
        assert!(stale_flows(&[(5, 9999, false)], &c).is_empty());
        assert!(stale_flows(&recs, &cfg(StaleMode::Off, vec![])).is_empty());
    }

    #[test]
    fn static_mode() {
        let recs = vec![(0x1, 1, false), (0x2, 1, true), (0xab01, 1, false)];
        let c = cfg(StaleMode::Static, vec![(0x1, u64::MAX), (0xab00, 0xff00)]);
        assert_eq!(stale_flows(&recs, &c), vec![1]);
    }

    #[test]
    fn evidence_is_the_first_stale_flows_in_dump_order() {
        // Two stale cookies interleaved: the evidence is the first three stale flows of the
        // dump, whichever cookie they carry; the count covers all.
        let recs: Vec<Rec> = (0..10)
            .map(|i| ([0x1, 0x2, 0x3][i % 3], 100, false))
            .collect();
        let c = cfg(StaleMode::Static, vec![(0x2, u64::MAX)]);
        assert_eq!(stale_with(&recs, &c, 3), (vec![0, 2, 3], 7));
    }

    #[test]
    fn many_cookies_count_all_and_keep_evidence_for_the_first_only() {
        // A cookie per flow (a controller like OVN in static mode): the count covers every
        // flow, evidence stays bounded, taken from the first cookies seen.
        let n = EVIDENCE_COOKIES as u64 * 3;
        let recs: Vec<Rec> = (0..n).map(|i| (0x100 + i, 100, false)).collect();
        let c = cfg(StaleMode::Static, vec![(0x1, u64::MAX)]);
        let mut acc = StaleCookies::default();
        for (seq, &(cookie, _, _)) in recs.iter().enumerate() {
            let f = CookieFlow {
                cookie,
                duration_ms: Some(1),
                has_timeout: false,
                seq: seq as u64,
            };
            acc.add(&c, f, 5, || Evidence {
                table: "0".into(),
                priority: 1,
                cookie,
                flow: seq.to_string(),
                fetch: None,
            });
        }
        let kept: usize = acc.stats.values().map(|s| s.evidence.len()).sum();
        assert_eq!(kept, EVIDENCE_COOKIES);
        let (dirty, ev) = acc.finish(&c, 5);
        assert_eq!(dirty, n);
        let shown: Vec<&str> = ev.iter().map(|e| e.flow.as_str()).collect();
        assert_eq!(shown, vec!["0", "1", "2", "3", "4"]);
    }
}
