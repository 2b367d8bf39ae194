//! The checks run over one bridge's dump, fed line by line as `ovs-ofctl` prints it.
//!
//! [`BridgeScan`] parses each line as it arrives, counts flows per table, and runs at once the
//! checks that look at one flow: the user-defined checks, and the per-cookie aggregates of
//! `stale_cookie` (decided when the dump ends, see [`stale_cookie`]). The checks that compare
//! flows (`overlap`, within a table) or need the port inventory (`missing_port`, whose ports may
//! arrive while the dump streams) run one table at a time: a [`FlowStore`] holds the current
//! table's flows (a 40-byte [`Record`] plus the flow text without counters) and the ports they
//! name, and is checked and emptied when the dump moves to the next table. `ovs-vswitchd` dumps
//! table by table, so memory follows the largest table, not the bridge. A table whose flows
//! come in two runs is still counted, but flows of different runs are not compared
//! (`ovs_check_incomplete{check="overlap"}` says so).

pub mod custom;
pub mod groups;
pub mod missing_port;
pub mod overlap;
pub mod pipeline;
pub mod reach;
pub mod stale_cookie;

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::config::Config;
use crate::parse::actions::{for_each_port_ref, PortRef};
use crate::parse::fields::expand_match;
use crate::parse::{parse_line, Flow, Line, ParseError, Table};

pub use missing_port::Ports;
pub use overlap::OverlapCache;
use stale_cookie::{CookieFlow, StaleCookies};

/// Flows kept at most for [`BridgeScan::finish_cached`] to decide by the registers.
const MAX_DEFERRED: usize = 10_000;

/// Longest flow text put in an evidence label.
pub const MAX_EVIDENCE_TEXT: usize = 400;

/// What the table checks need to know of a flow: 40 bytes a flow (a test keeps it so), plus
/// its match text in the store's [`Arena`], front-coded: a flow shares the first `shared`
/// bytes of the previous flow's match and keeps only the rest (flows of a table mostly differ
/// in a value at the end); every [`RESTART`]th flow, and the first of each chunk, keeps its
/// whole match. The actions are not kept: the few flows shown as `overlap` evidence get theirs
/// afterwards (see [`Evidence::fetch`]).
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub cookie: u64,
    /// A hash of the flow text without counters ([`match_hash`] of match and actions), for the
    /// overlap cache and the evidence fetched.
    pub match_hash: u64,
    /// Flows with equal keys and equal `ct_clear` treat a packet alike
    /// ([`overlap::actions_key`] of the actions after a leading `ct_clear`): such a pair is no
    /// overlap.
    pub actions_hash: u64,
    /// Where the kept part of the match starts in its chunk.
    pub text_start: u32,
    /// Chunk of the [`Arena`] holding the kept part.
    pub chunk: u16,
    /// Length of the whole match.
    pub match_len: u16,
    /// Table number, or 256 + index into the scan's table names.
    pub table: u16,
    pub priority: u16,
    /// Bytes of the previous flow's match this one starts with (not kept again).
    pub shared: u8,
    /// The actions start with `ct_clear` (not in `actions_hash`).
    pub ct_clear: bool,
}

/// A flow keeps its whole match at least every this many flows, so that reading one match
/// back replays at most this many.
pub const RESTART: usize = 16;

/// The match of `records[i]` into `buf`, replayed from the last flow that kept its whole match.
pub fn match_of(records: &[Record], text: &Arena, i: usize, buf: &mut String) {
    buf.clear();
    if i >= records.len() {
        return;
    }
    let mut start = i;
    while start > 0 && records[start].shared > 0 {
        start -= 1;
    }
    for r in &records[start..=i] {
        buf.truncate(usize::from(r.shared));
        let kept = usize::from(r.match_len).saturating_sub(usize::from(r.shared));
        buf.push_str(text.get(u32::from(r.chunk), r.text_start as usize, kept));
    }
}

/// A fast 64-bit hash of a text, here a flow's without counters (folded multiplication over
/// 8-byte words): computed while the dump streams, it tells the overlap cache whether a group
/// of flows changed, and finds an evidence flow again.
pub fn match_hash(text: &str) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let fold = |a: u64, b: u64| {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    };
    let b = text.as_bytes();
    let mut h = fold(b.len() as u64 ^ 0x5851_f42d_4c95_7f2d, K);
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let mut x = [0u8; 8];
        x.copy_from_slice(w);
        h = fold(h ^ u64::from_le_bytes(x), K);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut x = [0u8; 8];
        x[..rest.len()].copy_from_slice(rest);
        h = fold(h ^ u64::from_le_bytes(x) ^ 0xff, K);
    }
    fold(h, 0x2545_f491_4f6c_dd1d)
}

/// Match texts, appended in fixed-size chunks: growing one big string would briefly need twice
/// its size while it is copied.
#[derive(Debug, Default)]
pub struct Arena {
    chunks: Vec<String>,
}

impl Arena {
    const CHUNK: usize = 256 << 10;

    /// Appends `s`; returns (chunk, offset), or None past 64k chunks.
    pub fn push(&mut self, s: &str) -> Option<(u16, u32)> {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= s.len());
        if !fits {
            self.chunks
                .push(String::with_capacity(Self::CHUNK.max(s.len())));
        }
        let idx = u16::try_from(self.chunks.len() - 1).ok()?;
        let c = self.chunks.last_mut()?;
        let off = u32::try_from(c.len()).ok()?;
        c.push_str(s);
        Some((idx, off))
    }

    /// Bytes allocated for the text.
    pub fn capacity(&self) -> usize {
        self.chunks.iter().map(String::capacity).sum::<usize>()
            + self.chunks.capacity() * std::mem::size_of::<String>()
    }

    /// The text at (chunk, offset, len); empty when out of range.
    pub fn get(&self, chunk: u32, off: usize, len: usize) -> &str {
        self.chunks
            .get(chunk as usize)
            .and_then(|c| c.get(off..off + len))
            .unwrap_or("")
    }

    /// Empties the arena, keeping its first chunk for the next texts.
    fn clear(&mut self) {
        self.chunks.truncate(1);
        if let Some(c) = self.chunks.first_mut() {
            c.clear();
        }
    }
}

/// The flows of one table (or, in tests, any flows), as the overlap check needs them.
#[derive(Debug, Default)]
pub struct FlowStore {
    /// Table of the flows (a [`Record::table`]); None while empty.
    pub table: Option<u16>,
    pub records: Vec<Record>,
    pub text: Arena,
    /// The last match kept, for the front coding.
    last: String,
}

impl FlowStore {
    /// Keeps a flow whose table index is `table`; `conjunction_only`: its only actions are
    /// `conjunction(...)` (such a flow is a clause of a conjunctive match, which overlaps by
    /// design: only its table is noted).
    fn push(&mut self, f: &Flow<'_>, table: u16, conjunction_only: bool) {
        self.table = Some(table);
        if conjunction_only {
            return;
        }
        // A match longer than 64 KiB (none is) is kept cut, not lost.
        let mut len = f.match_text.len().min(usize::from(u16::MAX));
        while !f.match_text.is_char_boundary(len) {
            len -= 1;
        }
        let m = &f.match_text[..len];
        let mut shared = 0;
        if self.records.len() % RESTART != 0 {
            let max = m.len().min(self.last.len()).min(usize::from(u8::MAX));
            shared = m.as_bytes()[..max]
                .iter()
                .zip(self.last.as_bytes())
                .take_while(|(a, b)| a == b)
                .count();
            while !m.is_char_boundary(shared) {
                shared -= 1;
            }
        }
        let chunks = self.text.chunks.len();
        let Some((mut chunk, mut text_start)) = self.text.push(&m[shared..]) else {
            return;
        };
        if self.text.chunks.len() != chunks && shared > 0 {
            // A new chunk starts with a whole match (a replay never crosses chunks back).
            self.text.chunks.pop();
            shared = 0;
            let Some(at) = self.text.push(m) else { return };
            (chunk, text_start) = at;
        }
        self.last.clear();
        self.last.push_str(m);
        let rest = f.actions_text.strip_prefix("ct_clear,");
        self.records.push(Record {
            cookie: f.cookie,
            match_hash: match_hash(f.text),
            actions_hash: overlap::actions_key(rest.unwrap_or(f.actions_text)),
            ct_clear: rest.is_some(),
            text_start,
            chunk,
            match_len: u16::try_from(len).unwrap_or(0),
            table,
            priority: f.priority,
            shared: u8::try_from(shared).unwrap_or(0),
        });
    }

    /// Empties the store, keeping some of its memory for the next table.
    fn clear(&mut self) {
        self.table = None;
        self.records.clear();
        self.text.clear();
        self.last.clear();
    }

    /// Heap bytes held (capacity, not length), by part: for the memory benchmark.
    pub fn heap_bytes(&self) -> Vec<(&'static str, usize)> {
        vec![
            (
                "records",
                self.records.capacity() * std::mem::size_of::<Record>(),
            ),
            ("match text", self.text.capacity()),
        ]
    }
}

/// Every flow of `lines` in one store, whatever their table (for the table checks' tests).
#[cfg(test)]
pub(crate) fn store_of(lines: &[&str]) -> FlowStore {
    let mut s = FlowStore::default();
    for l in lines {
        if let Ok(Line::Flow(f)) = parse_line(l) {
            let t = match f.table {
                Table::Id(n) => u16::from(n),
                Table::Name(_) => 256,
            };
            let conj = f.actions().all(|a| a.name == "conjunction");
            s.push(&f, t, conj);
        }
    }
    s
}

/// One offending flow, for the evidence metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub table: String,
    pub priority: u16,
    pub cookie: u64,
    pub flow: String,
    /// Set when `flow` is only `priority=N,MATCH` (the scan keeps no actions): the hash
    /// ([`Record::match_hash`]) of the whole flow text, which the collector fetches (a dump
    /// of the flows matching at least its match, stopped at it; or its cache) and puts in
    /// `flow`.
    pub fetch: Option<u64>,
}

/// The result of one check on one bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub name: String,
    pub dirty: u64,
    /// The first offending flows in dump order, at most the evidence limit.
    pub evidence: Vec<Evidence>,
    /// The check gave up before looking at every flow (overlap budget).
    pub incomplete: bool,
}

impl CheckOutcome {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            dirty: 0,
            evidence: Vec::new(),
            incomplete: false,
        }
    }
}

/// Everything one bridge's dump yielded.
#[derive(Debug, Clone, Default)]
pub struct BridgeReport {
    /// Flows per table label.
    pub tables: BTreeMap<String, u64>,
    pub flows: u64,
    pub parse_errors: u64,
    /// The groups and meters the flows name (see [`groups`]).
    pub refs: groups::FlowRefs,
    /// Reply headers seen (a long dump has several).
    pub replies: u64,
    /// Built-in checks first (missing_port omitted when the ports are unknown), then the
    /// user-defined ones in config order.
    pub checks: Vec<CheckOutcome>,
}

/// Why a flow was found no overlap, checked when the dump ends.
#[derive(Debug, Clone, Copy)]
enum Excuse {
    /// See [`pipeline::RegWrites::holds`].
    Regs(pipeline::Assumption),
    /// The index of a [`CtPair`].
    Ct(usize),
}

/// A pair found no overlap only if a conntrack search says so (see [`reach`]): the pair's
/// table and matches, and for two flows differing by a leading `ct_clear`, the hash of the
/// one without.
#[derive(Debug)]
struct CtPair {
    table: u16,
    a: String,
    b: String,
    cleared: Option<u64>,
}

/// The constraints of a match text that borrows nothing.
fn expand_one(text: &'static str) -> Vec<crate::parse::fields::FieldMatch<'static>> {
    let mut v = Vec::new();
    expand_match(text, &mut v);
    v
}

/// The sending side of a bridge's port inventory, as a dump's scan receives it:
/// `missing_port` is decided as each flow arrives, so the scan waits (before its first flow)
/// until whoever reads the database sends the ports, possibly while the dump streams. `None`
/// means unknown (database down, bridge not in it): `missing_port` is then skipped. Dropped
/// without a value (the scrape was abandoned), the scan stops waiting at once.
#[derive(Debug)]
pub struct PortsSender(mpsc::SyncSender<Option<Ports>>);

impl PortsSender {
    /// Sends the ports; the first value sent wins.
    pub fn send(&self, ports: Option<Ports>) {
        // Full: a value was sent already. Disconnected: the scan is gone. Either way, nothing to do.
        let _ = self.0.try_send(ports);
    }
}

/// How long a scan waits for its ports at most, unless told ([`BridgeScan::with_ports_wait`]);
/// a dropped [`PortsSender`] ends the wait at once.
pub const PORTS_WAIT: Duration = Duration::from_secs(300);

/// Accumulates one bridge's dump.
pub struct BridgeScan<'c> {
    cfg: CfgRef<'c>,
    /// The ports, once known (outer None: not yet; see [`PortsSender`]).
    ports: Option<Option<Ports>>,
    ports_rx: Option<mpsc::Receiver<Option<Ports>>>,
    ports_wait: Duration,
    evidence_limit: usize,
    table_counts: [u64; 256],
    table_names: Vec<(String, u64)>,
    /// The flows of the table being dumped.
    current: FlowStore,
    /// Tables whose flows were checked (a bit per [`Record::table`]).
    done_tables: Vec<u64>,
    flows: u64,
    parse_errors: u64,
    replies: u64,
    refs: groups::FlowRefs,
    /// The first line with `***decode error: ...***`: ovs-ofctl could not print a reply, whose
    /// flows from there on are missing from the dump (see [`BridgeScan::decode_error`]).
    decode_error: Option<String>,
    missing: CheckOutcome,
    stale: StaleCookies,
    overlap: CheckOutcome,
    custom: Vec<CheckOutcome>,
    needs_fields: bool,
    cache: OverlapCache,
    budget: u64,
    /// Register writes of the tables dumped so far (see [`pipeline`]).
    regs: pipeline::RegWrites,
    /// The flows the conntrack searches need (see [`reach`]).
    kept: reach::Kept,
    /// Pairs found no overlap only by a conntrack search, decided at the end.
    ct_pairs: Vec<CtPair>,
    /// Flows found no overlap only for excuses checked at the end.
    deferred: Vec<(Evidence, Vec<Excuse>)>,
    /// Largest heap held by the table store (capacity), for the memory benchmark.
    peak_store_bytes: usize,
}

impl std::fmt::Debug for BridgeScan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeScan")
            .field("flows", &self.flows)
            .field("parse_errors", &self.parse_errors)
            .finish()
    }
}

/// `s` as an evidence label shows it (at most [`MAX_EVIDENCE_TEXT`] bytes).
pub fn evidence_text(s: &str) -> String {
    truncate(s, MAX_EVIDENCE_TEXT)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn evidence(table: String, priority: u16, cookie: u64, text: &str) -> Evidence {
    Evidence {
        table,
        priority,
        cookie,
        flow: truncate(text, MAX_EVIDENCE_TEXT),
        fetch: None,
    }
}

fn push_evidence(o: &mut CheckOutcome, limit: usize, make: impl FnOnce() -> Evidence) {
    o.dirty += 1;
    if o.evidence.len() < limit {
        o.evidence.push(make());
    }
}

/// The config a scan reads: borrowed, or shared so that the scan is `'static` and can move to
/// the thread that parses a dump (see [`crate::ovs`]).
#[derive(Debug, Clone)]
enum CfgRef<'c> {
    Borrowed(&'c Config),
    Shared(Arc<Config>),
}

impl std::ops::Deref for CfgRef<'_> {
    type Target = Config;
    fn deref(&self) -> &Config {
        match self {
            CfgRef::Borrowed(c) => c,
            CfgRef::Shared(c) => c,
        }
    }
}

impl BridgeScan<'static> {
    /// Like [`BridgeScan::new`], holding the config by `Arc`: the scan can move to another
    /// thread.
    pub fn shared(cfg: Arc<Config>, ports: Option<Ports>, evidence_limit: usize) -> Self {
        Self::with_cfg(CfgRef::Shared(cfg), Some(ports), evidence_limit)
    }

    /// A scan whose ports come later, through the returned sender: its first flow waits for
    /// them.
    pub fn awaiting_ports(cfg: Arc<Config>, evidence_limit: usize) -> (Self, PortsSender) {
        let mut scan = Self::with_cfg(CfgRef::Shared(cfg), None, evidence_limit);
        let (tx, rx) = mpsc::sync_channel(1);
        scan.ports_rx = Some(rx);
        (scan, PortsSender(tx))
    }
}

impl<'c> BridgeScan<'c> {
    /// `ports`: the bridge's ports; None when unknown (database down), and `missing_port` is
    /// skipped.
    pub fn new(cfg: &'c Config, ports: Option<Ports>, evidence_limit: usize) -> Self {
        Self::with_cfg(CfgRef::Borrowed(cfg), Some(ports), evidence_limit)
    }

    fn with_cfg(cfg: CfgRef<'c>, ports: Option<Option<Ports>>, evidence_limit: usize) -> Self {
        let custom = cfg
            .checks
            .iter()
            .map(|c| CheckOutcome::new(&c.name))
            .collect();
        let needs_fields = cfg.checks.iter().any(custom::needs_fields);
        Self {
            cfg,
            ports,
            ports_rx: None,
            ports_wait: PORTS_WAIT,
            evidence_limit,
            table_counts: [0; 256],
            table_names: Vec::new(),
            current: FlowStore::default(),
            done_tables: Vec::new(),
            flows: 0,
            parse_errors: 0,
            replies: 0,
            refs: groups::FlowRefs::default(),
            decode_error: None,
            missing: CheckOutcome::new("missing_port"),
            stale: StaleCookies::default(),
            overlap: CheckOutcome::new("overlap"),
            custom,
            needs_fields,
            cache: OverlapCache::default(),
            budget: overlap::DEFAULT_BUDGET,
            regs: pipeline::RegWrites::default(),
            kept: reach::Kept::default(),
            ct_pairs: Vec::new(),
            deferred: Vec::new(),
            peak_store_bytes: 0,
        }
    }

    /// Checks overlaps with the results of the last dump in `cache` (see [`OverlapCache`]);
    /// [`BridgeScan::finish_cached`] gives it back for the next.
    pub fn with_cache(mut self, mut cache: OverlapCache) -> Self {
        cache.start_dump();
        self.cache = cache;
        self
    }

    /// Waits at most `wait` for the ports (then goes on without: `missing_port` is left out),
    /// so that a database that hangs does not make the dump time out as well.
    pub fn with_ports_wait(mut self, wait: Duration) -> Self {
        self.ports_wait = wait;
        self
    }

    /// Sets the overlap comparison budget for the whole dump.
    pub fn with_budget(mut self, budget: u64) -> Self {
        self.budget = budget;
        self
    }

    /// The largest heap the table store held (capacity, not length).
    pub fn peak_store_bytes(&self) -> usize {
        self.peak_store_bytes
    }

    /// Feeds one line of `ovs-ofctl dump-flows` output. A line that does not parse is counted
    /// and its error returned (for the caller to log); the scan goes on.
    pub fn feed_line(&mut self, line: &str) -> Result<(), ParseError> {
        match parse_line(line) {
            Ok(Line::Empty) => Ok(()),
            Ok(Line::Header(_)) => {
                self.replies += 1;
                Ok(())
            }
            Ok(Line::Flow(f)) => {
                self.flow(&f);
                Ok(())
            }
            Err(e) => {
                self.parse_errors += 1;
                // On a line of its own, or after the reply header when the reply's first
                // flow is the one that cannot be decoded.
                if self.decode_error.is_none() && line.contains("***decode error") {
                    self.decode_error = Some(line.trim_end().chars().take(120).collect());
                }
                Err(e)
            }
        }
    }

    /// Flows, reply headers and unparseable lines fed so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.flows, self.replies, self.parse_errors)
    }

    /// The first line where `ovs-ofctl` printed `***decode error: ...***` instead of a reply
    /// it could not decode (a flow the OpenFlow version in use cannot express, an action it
    /// does not know), followed by a hex dump: the flows of that reply from there on are
    /// missing, and `ovs-ofctl` still exits 0.
    pub fn decode_error(&self) -> Option<&str> {
        self.decode_error.as_deref()
    }

    /// The ports, waiting for them if they are not known yet.
    fn ports(&mut self) -> Option<&Ports> {
        if self.ports.is_none() {
            let wait = self.ports_wait;
            let got = self
                .ports_rx
                .take()
                .and_then(|rx| rx.recv_timeout(wait).ok().flatten());
            self.ports = Some(got);
        }
        self.ports.as_ref().and_then(Option::as_ref)
    }

    fn table_index(&mut self, t: Table<'_>) -> u16 {
        match t {
            Table::Id(n) => {
                self.table_counts[usize::from(n)] += 1;
                u16::from(n)
            }
            Table::Name(s) => {
                let i = match self.table_names.iter().position(|(n, _)| n == s) {
                    Some(i) => i,
                    None => {
                        self.table_names.push((s.to_string(), 0));
                        self.table_names.len() - 1
                    }
                };
                self.table_names[i].1 += 1;
                256 + u16::try_from(i).unwrap_or(u16::MAX - 256)
            }
        }
    }

    fn flow(&mut self, f: &Flow<'_>) {
        let seq = self.flows;
        self.flows += 1;
        let table = self.table_index(f.table);
        if self.current.table.is_some_and(|t| t != table) {
            self.close_table();
        }
        if self.current.table.is_none() && self.table_done(table) {
            // The table came back after another: its two runs are not compared.
            self.overlap.incomplete = true;
        }
        // One pass over the actions for the ports they name and whether they are only
        // conjunction clauses.
        let mut conjunction_only = true;
        // Only actions that change nothing a match sees (see [`reach::harmless`]).
        let mut plain = true;
        let mut missing = false;
        if let Some(ports) = self.ports() {
            let mut check = |r: PortRef| missing |= !ports.has(&r);
            for a in f.actions() {
                conjunction_only &= a.name == "conjunction";
                plain &= reach::harmless(a.name);
                for_each_port_ref(std::iter::once(a), &mut check);
            }
            missing_port::for_each_match_port(f, &mut check);
            if ports.reg5() {
                missing_port::for_each_reg5_port(f, &mut check);
            }
        } else {
            for a in f.actions() {
                conjunction_only &= a.name == "conjunction";
                plain &= reach::harmless(a.name);
            }
        }
        let limit = self.evidence_limit;
        let show = || evidence(f.table.to_string(), f.priority, f.cookie, f.text);
        if missing {
            push_evidence(&mut self.missing, limit, show);
        }
        if !self.cfg.checks.is_empty() {
            let mut fields = Vec::new();
            if self.needs_fields {
                expand_match(f.match_text, &mut fields);
            }
            for (c, o) in self.cfg.checks.iter().zip(self.custom.iter_mut()) {
                if custom::matches(c, f, &fields) {
                    push_evidence(o, limit, show);
                }
            }
        }
        let cookie = CookieFlow {
            cookie: f.cookie,
            duration_ms: f.duration.map(|d| (d * 1000.0) as u64),
            has_timeout: f.idle_timeout > 0 || f.hard_timeout > 0,
            seq,
        };
        self.stale.add(&self.cfg, cookie, limit, show);
        self.refs.note(f);
        self.regs.add(table, f.actions_text);
        self.kept.add(table, f, plain);
        self.current.push(f, table, conjunction_only);
    }

    fn table_done(&self, table: u16) -> bool {
        self.done_tables
            .get(usize::from(table / 64))
            .is_some_and(|w| w & (1 << (table % 64)) != 0)
    }

    fn mark_done(&mut self, table: u16) {
        let word = usize::from(table / 64);
        if self.done_tables.len() <= word {
            self.done_tables.resize(word + 1, 0);
        }
        self.done_tables[word] |= 1 << (table % 64);
    }

    /// The current table is complete: check it and let its flows go.
    fn close_table(&mut self) {
        let Some(table) = self.current.table else {
            return;
        };
        self.mark_done(table);
        let held: usize = self.current.heap_bytes().iter().map(|(_, b)| b).sum();
        self.peak_store_bytes = self.peak_store_bytes.max(held);
        let mut store = std::mem::take(&mut self.current);
        self.check_table(&store);
        store.clear();
        self.current = store;
    }

    fn table_label(&self, t: u16) -> String {
        if t < 256 {
            t.to_string()
        } else {
            self.table_names
                .get(usize::from(t - 256))
                .map(|(n, _)| n.clone())
                .unwrap_or_default()
        }
    }

    /// Runs `overlap` over one table's flows. Its evidence has the match only; the
    /// collector fetches the whole flow ([`Evidence::fetch`]).
    fn check_table(&mut self, store: &FlowStore) {
        let (mut dirty, exhausted, deferred) = overlap::overlapping_with(
            &store.records,
            &store.text,
            &mut self.budget,
            Some(&mut self.cache),
            Some(&self.regs),
        );
        let mut m = String::new();
        self.defer(store, &mut dirty, &deferred);
        for (i, r) in store.records.iter().enumerate().filter(|&(i, _)| dirty[i]) {
            let table = self.table_label(r.table);
            push_evidence(&mut self.overlap, self.evidence_limit, || {
                match_of(&store.records, &store.text, i, &mut m);
                let sep = if m.is_empty() { "" } else { "," };
                let mut e = evidence(
                    table,
                    r.priority,
                    r.cookie,
                    &format!("priority={}{sep}{m}", r.priority),
                );
                e.fetch = Some(r.match_hash);
                e
            });
        }
        self.overlap.incomplete |= exhausted;
    }

    /// Keeps the flows that [`overlap`] found no overlap only for an excuse checked when the
    /// dump ends (and that no other pair makes dirty), with their excuses, for
    /// [`BridgeScan::finish_cached`]. Past [`MAX_DEFERRED`] flows they count as overlapping
    /// at once.
    fn defer(&mut self, store: &FlowStore, dirty: &mut [bool], deferred: &[overlap::Deferred]) {
        let mut by_flow: BTreeMap<usize, Vec<Excuse>> = BTreeMap::new();
        let mut m = String::new();
        for &(i, j, x) in deferred {
            if dirty[i] && dirty[j] {
                continue;
            }
            let excuse = match x {
                overlap::Excuse::Regs(a) => Excuse::Regs(a),
                overlap::Excuse::Tracked | overlap::Excuse::Cleared => {
                    if self.ct_pairs.len() >= MAX_DEFERRED {
                        dirty[i] = true;
                        dirty[j] = true;
                        continue;
                    }
                    let r = &store.records;
                    match_of(r, &store.text, i, &mut m);
                    let a = m.clone();
                    match_of(r, &store.text, j, &mut m);
                    // For Cleared: the flow without ct_clear, whose jumps both take.
                    let plain = if r[i].ct_clear { r[j] } else { r[i] };
                    self.ct_pairs.push(CtPair {
                        table: r[i].table,
                        a,
                        b: m.clone(),
                        cleared: (x == overlap::Excuse::Cleared).then_some(plain.match_hash),
                    });
                    Excuse::Ct(self.ct_pairs.len() - 1)
                }
            };
            for k in [i, j] {
                if !dirty[k] {
                    by_flow.entry(k).or_default().push(excuse);
                }
            }
        }
        for (k, excuses) in by_flow {
            if self.deferred.len() >= MAX_DEFERRED {
                dirty[k] = true;
                continue;
            }
            let r = &store.records[k];
            match_of(&store.records, &store.text, k, &mut m);
            let sep = if m.is_empty() { "" } else { "," };
            let mut e = evidence(
                self.table_label(r.table),
                r.priority,
                r.cookie,
                &format!("priority={}{sep}{m}", r.priority),
            );
            e.fetch = Some(r.match_hash);
            self.deferred.push((e, excuses));
        }
    }

    /// Closes the dump's last table and says whether the bridge's group buckets would change
    /// an overlap finding: a pair waits on a conntrack search and a flow sends to a group
    /// (the caller then reads `dump-groups` into [`BridgeScan::set_groups`]).
    pub fn wants_groups(&mut self) -> bool {
        self.close_table();
        !self.ct_pairs.is_empty() && !self.overlap_off() && self.kept.wants_groups()
    }

    /// The bridge's `ovs-ofctl dump-groups` output, for the conntrack searches (see
    /// [`reach`]); without it a flow sending to a group may reach any table.
    pub fn set_groups(&mut self, dump: &str) {
        self.kept.set_groups(dump);
    }

    /// Whether the bridge's `overlap` check is off (its finding is then dropped, so the
    /// searches that only it needs are not made).
    fn overlap_off(&self) -> bool {
        self.ports
            .as_ref()
            .and_then(Option::as_ref)
            .is_some_and(Ports::overlap_off)
    }

    /// Decides each pair of [`BridgeScan::ct_pairs`]: true when its exclusion holds (never
    /// searched, so false, when the bridge's `overlap` check is off).
    fn ct_verdicts(&self) -> Vec<bool> {
        if self.ct_pairs.is_empty() {
            return Vec::new();
        }
        if self.overlap_off() {
            return vec![false; self.ct_pairs.len()];
        }
        let resume = self
            .ports
            .as_ref()
            .and_then(Option::as_ref)
            .map_or(reach::Resume::Anything, Ports::resume);
        let Some(mut an) = self.kept.analysis(resume) else {
            return vec![false; self.ct_pairs.len()];
        };
        let trk = expand_one("ct_state=+trk");
        self.ct_pairs
            .iter()
            .map(|p| {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                if an.exhausted()
                    || p.table >= 256
                    || !expand_match(&p.a, &mut a)
                    || !expand_match(&p.b, &mut b)
                {
                    return false;
                }
                let Some(k) = reach::merge(&a, &b) else {
                    return true;
                };
                match p.cleared {
                    // Only a tracked packet matches both: none gets there.
                    None => !an.reach(p.table, &k),
                    // ct_clear or not: the packet is not tracked, or nothing reads its state.
                    Some(plain) => {
                        let tracked = reach::merge(&k, &trk).is_some_and(|t| an.reach(p.table, &t));
                        !tracked || !an.reads_ct_after(plain, &k)
                    }
                }
            })
            .collect()
    }

    /// Runs what is left of the checks and returns the report.
    pub fn finish(self) -> BridgeReport {
        self.finish_cached().0
    }

    /// [`BridgeScan::finish`], also giving back the overlap cache for the next dump of the
    /// bridge (see [`BridgeScan::with_cache`]). Ports still unknown are taken as unknown.
    pub fn finish_cached(mut self) -> (BridgeReport, OverlapCache) {
        self.close_table();
        let mut tables = BTreeMap::new();
        for (n, &c) in self.table_counts.iter().enumerate() {
            if c > 0 {
                tables.insert(n.to_string(), c);
            }
        }
        for (n, c) in &self.table_names {
            *tables.entry(n.clone()).or_insert(0) += c;
        }
        // Ports unknown (or a dump without flows that never asked): as they are now.
        let has_ports = self.ports().is_some();
        // Exclusions that a flow after their table broke, or a search did not confirm.
        let verdicts = self.ct_verdicts();
        for (e, excuses) in std::mem::take(&mut self.deferred) {
            let fails = |x: &Excuse| match x {
                Excuse::Regs(a) => !self.regs.holds(a),
                Excuse::Ct(i) => !verdicts.get(*i).copied().unwrap_or(false),
            };
            if excuses.iter().any(fails) {
                push_evidence(&mut self.overlap, self.evidence_limit, || e);
            }
        }
        let mut stale = CheckOutcome::new("stale_cookie");
        (stale.dirty, stale.evidence) = self.stale.finish(&self.cfg, self.evidence_limit);
        let mut checks = Vec::new();
        if has_ports {
            checks.push(self.missing);
        }
        checks.push(stale);
        checks.push(self.overlap);
        checks.extend(self.custom);
        let report = BridgeReport {
            tables,
            flows: self.flows,
            parse_errors: self.parse_errors,
            refs: self.refs,
            replies: self.replies,
            checks,
        };
        (report, self.cache)
    }
}

#[cfg(test)]
mod tests {
    use super::missing_port::iface;
    use super::*;

    fn missing_port(ports: Option<Ports>, late: bool) -> Option<CheckOutcome> {
        let cfg = Arc::new(Config::default());
        let (mut scan, tx) = BridgeScan::awaiting_ports(cfg, 2);
        let sender = if late {
            // The database answers while the first line waits for it.
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                tx.send(ports);
            })
        } else {
            tx.send(ports);
            std::thread::spawn(|| ())
        };
        for l in [
            " table=1, priority=5,in_port=1 actions=output:2",
            " table=1, priority=6,in_port=7 actions=output:8,output:9",
            " table=2, priority=5,in_port=tap1 actions=output:tap9",
            " table=3, priority=5 actions=output:9",
            " table=3, priority=6 actions=clone(output:1),LOCAL",
        ] {
            scan.feed_line(l).unwrap();
        }
        sender.join().unwrap();
        scan.finish()
            .checks
            .into_iter()
            .find(|c| c.name == "missing_port")
    }

    #[test]
    fn a_decode_error_is_told_apart_from_other_bad_lines() {
        // Both forms ovs-ofctl prints: after the header when the reply's first flow cannot be
        // decoded, else on a line of its own after the flows it could print.
        for (lines, want) in [
            (
                &[
                    "NXST_FLOW reply (xid=0x4): ***decode error: OFPBAC_UNSUPPORTED_ORDER***",
                    "00000000  01 11 00 90 00 00 00 04-ff ff 00 00 00 00 23 20 |......|",
                ][..],
                Some("NXST_FLOW reply (xid=0x4): ***decode error: OFPBAC_UNSUPPORTED_ORDER***"),
            ),
            (
                &[
                    " table=1, priority=5 actions=drop",
                    "***decode error: OFPBAC_BAD_VENDOR_TYPE***",
                ][..],
                Some("***decode error: OFPBAC_BAD_VENDOR_TYPE***"),
            ),
            (&["garbage", "*** not ovs"][..], None),
        ] {
            let cfg = Config::default();
            let mut scan = BridgeScan::new(&cfg, None, 5);
            for l in lines {
                let _ = scan.feed_line(l);
            }
            assert_eq!(scan.decode_error(), want, "{lines:?}");
        }
    }

    #[test]
    fn a_record_takes_40_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 40);
    }

    #[test]
    fn matches_read_back_from_the_front_coding() {
        // Runs of matches of one shape sharing prefixes of every length, flows without match,
        // more than 256 KiB
        // of text (a new chunk starts with a whole match), and restarts every RESTART flows.
        let lines: Vec<String> = (0..12000)
            .map(|i| match i / 50 % 5 {
                0 => format!(" priority=1,in_port={},dl_dst=fa:16:3e:00:{:02x}:{:02x},dl_src=fa:16:3e:11:22:33,nw_src=10.{}.{}.0/24 actions=drop", i % 7, i / 256 % 256, i % 256, i % 200, i % 100),
                1 => format!(" priority=1,reg{}=0x{i:x} actions=drop", i % 16),
                2 => " priority=1 actions=drop".to_string(),
                3 => format!(" priority=1,tcp,tp_dst={i},{} actions=drop", "metadata=0x1,".repeat(i % 9) + "nw_ttl=1"),
                _ => format!(" priority=1,in_port={} actions=drop", i % 3),
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let s = store_of(&refs);
        assert!(s.text.chunks.len() > 1, "{}", s.text.chunks.len());
        let mut shared = 0;
        let mut m = String::new();
        for (i, l) in lines.iter().enumerate() {
            let Ok(Line::Flow(f)) = parse_line(l) else {
                panic!("{l}")
            };
            match_of(&s.records, &s.text, i, &mut m);
            assert_eq!(m, f.match_text, "flow {i}");
            shared += usize::from(s.records[i].shared);
            if i % RESTART == 0 {
                assert_eq!(s.records[i].shared, 0);
            }
        }
        // The coding saved something (here values vary early in the match; on the
        // benchmark's dump it saves about half).
        let whole: usize = s.records.iter().map(|r| usize::from(r.match_len)).sum();
        assert!(shared > whole / 8, "{shared} of {whole}");
    }

    fn check<'r>(r: &'r BridgeReport, name: &str) -> &'r CheckOutcome {
        r.checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn stale_cookie_takes_durations_from_the_lines() {
        // Default config (auto, grace 5 min, window 10 min): the agent's cookie 0x2 began
        // 1000 s ago; 0x1's flow is far older (a duration past u64 milliseconds saturates),
        // 0x3's flow has no duration (never stale).
        let cfg = Config::default();
        let mut scan = BridgeScan::new(&cfg, None, 5);
        for l in [
            " cookie=0x1, duration=99999999999999999999.0s, table=0, n_packets=0, n_bytes=0, priority=4 actions=drop",
            " cookie=0x2, duration=1000.5s, table=0, n_packets=0, n_bytes=0, priority=1 actions=drop",
            " cookie=0x2, duration=1.5s, table=1, n_packets=0, n_bytes=0, priority=1 actions=drop",
            " cookie=0x3, table=1, priority=2 actions=drop",
            " cookie=0x2, duration=0.000s, table=2, n_packets=0, n_bytes=0, priority=3 actions=drop",
        ] {
            scan.feed_line(l).unwrap();
        }
        let r = scan.finish();
        let stale = check(&r, "stale_cookie");
        assert_eq!(stale.dirty, 1);
        assert_eq!(stale.evidence[0].cookie, 0x1);
        assert_eq!(stale.evidence[0].flow, "priority=4 actions=drop");
    }

    /// Table `t`'s flows: `n` at priority 5 on distinct in_port values, plus one overlapping
    /// the first with other actions.
    fn table_lines(t: u32, n: u32) -> Vec<String> {
        let mut v: Vec<String> = (0..n)
            .map(|i| format!(" table={t}, priority=5,in_port={} actions=drop", i + 1))
            .collect();
        v.push(format!(
            " table={t}, priority=5,in_port=1,ip actions=output:1"
        ));
        v
    }

    #[test]
    fn each_table_is_checked_when_the_dump_moves_on_and_then_let_go() {
        let cfg = Config::default();
        let ports = Ports::new(&[iface("tap1", 1)]);
        let mut scan = BridgeScan::new(&cfg, Some(ports), 10);
        for l in table_lines(0, 1000) {
            scan.feed_line(&l).unwrap();
        }
        // Table 0 is still being dumped: nothing decided yet.
        assert_eq!((scan.overlap.dirty, scan.current.records.len()), (0, 1001));
        scan.feed_line(" table=1, priority=5,in_port=1 actions=drop")
            .unwrap();
        // Table 0 was checked (its overlapping pair) and let go; its 999 missing ports were
        // counted as they came.
        assert_eq!(scan.overlap.dirty, 2);
        assert_eq!(scan.missing.dirty, 999);
        assert_eq!(scan.current.records.len(), 1);
        let held = scan.peak_store_bytes();
        for l in table_lines(2, 10) {
            scan.feed_line(&l).unwrap();
        }
        let r = scan.finish();
        assert_eq!(check(&r, "overlap").dirty, 4);
        assert!(!check(&r, "overlap").incomplete);
        assert_eq!(r.flows, 1013);
        let per_table: Vec<_> = r.tables.iter().map(|(t, n)| (t.as_str(), *n)).collect();
        assert_eq!(per_table, vec![("0", 1001), ("1", 1), ("2", 11)]);
        // The store held table 0's 1001 records at most.
        assert!(held >= 1001 * std::mem::size_of::<Record>(), "{held}");
    }

    #[test]
    fn a_scan_whose_ports_never_come_skips_missing_port() {
        // The scrape was abandoned: the sender is dropped, and the scan goes on without
        // waiting.
        let (mut scan, tx) = BridgeScan::awaiting_ports(Arc::new(Config::default()), 5);
        drop(tx);
        for l in table_lines(0, 3) {
            scan.feed_line(&l).unwrap();
        }
        let r = scan.finish();
        assert!(r.checks.iter().all(|c| c.name != "missing_port"));
        assert_eq!(check(&r, "overlap").dirty, 2);
    }

    #[test]
    fn a_scan_goes_on_without_ports_that_are_late_past_its_wait() {
        // The database hangs: the sender lives on and sends nothing.
        let (scan, tx) = BridgeScan::awaiting_ports(Arc::new(Config::default()), 5);
        let mut scan = scan.with_ports_wait(Duration::from_millis(50));
        for l in table_lines(0, 3) {
            scan.feed_line(&l).unwrap();
        }
        // Too late for this dump.
        tx.send(Some(Ports::default()));
        let r = scan.finish();
        assert!(r.checks.iter().all(|c| c.name != "missing_port"));
        assert_eq!(r.flows, 4);
    }

    #[test]
    fn overlap_evidence_has_the_match_and_the_hash_of_the_flow_to_fetch() {
        let cfg = Config::default();
        let mut scan = BridgeScan::new(&cfg, None, 5);
        let flows = [
            " cookie=0x7, table=4, priority=5,in_port=1 actions=output:2",
            " cookie=0x8, table=4, priority=5,in_port=1,ip actions=drop",
            " cookie=0x8, table=4, priority=5 actions=drop",
        ];
        for l in flows {
            scan.feed_line(l).unwrap();
        }
        let r = scan.finish();
        let shown: Vec<_> = check(&r, "overlap")
            .evidence
            .iter()
            .map(|e| (e.table.as_str(), e.cookie, e.flow.as_str(), e.fetch))
            .collect();
        let hash = |l: &str| match parse_line(l) {
            Ok(Line::Flow(f)) => Some(match_hash(f.text)),
            _ => None,
        };
        assert_eq!(
            shown,
            vec![
                ("4", 0x7, "priority=5,in_port=1", hash(flows[0])),
                ("4", 0x8, "priority=5,in_port=1,ip", hash(flows[1])),
                ("4", 0x8, "priority=5", hash(flows[2])),
            ]
        );
    }

    #[test]
    fn register_exclusions_are_checked_against_the_tables_after_them() {
        // Table 15 sets reg0 bit 7 or bit 8, never both: the pair of table 16 is no overlap,
        // unless a later table jumps back without clearing reg0.
        let flows = [
            " table=15, priority=2,ip actions=load:0x1->NXM_NX_REG0[7],resubmit(,16)",
            " table=15, priority=1 actions=load:0x1->NXM_NX_REG0[8],resubmit(,16)",
            " table=16, priority=5,reg0=0x80/0x80 actions=output:1",
            " table=16, priority=5,reg0=0x100/0x100 actions=drop",
        ];
        let cfg = Config::default();
        let run = |later: &[&str]| {
            let mut scan = BridgeScan::new(&cfg, None, 5);
            for l in flows.iter().chain(later) {
                scan.feed_line(l).unwrap();
            }
            let r = scan.finish();
            let o = check(&r, "overlap");
            (o.dirty, o.evidence.len())
        };
        assert_eq!(run(&[]), (0, 0));
        assert_eq!(
            run(&[" table=65, priority=1 actions=set_field:0->reg0,resubmit(,8)"]),
            (0, 0)
        );
        assert_eq!(run(&[" table=65, priority=1 actions=resubmit(,8)"]), (2, 2));
        assert_eq!(
            run(&[" table=65, priority=1 actions=set_field:0x80->reg0,resubmit(,8)"]),
            (2, 2)
        );
    }

    #[test]
    fn a_table_that_comes_back_is_counted_and_its_overlap_flagged_incomplete() {
        let cfg = Config::default();
        let mut scan = BridgeScan::new(&cfg, None, 10);
        for l in [
            " table=0, priority=5,in_port=1 actions=drop",
            " table=1, priority=5,in_port=1 actions=drop",
            " table=0, priority=5,in_port=1,ip actions=output:1",
        ] {
            scan.feed_line(l).unwrap();
        }
        let r = scan.finish();
        assert_eq!(r.tables.get("0"), Some(&2));
        let ov = check(&r, "overlap");
        assert!(ov.incomplete);
        assert_eq!(ov.dirty, 0);
        // In order, the same flows overlap and the check is complete.
        let mut scan = BridgeScan::new(&cfg, None, 10);
        for l in [
            " table=0, priority=5,in_port=1 actions=drop",
            " table=0, priority=5,in_port=1,ip actions=output:1",
            " table=1, priority=5,in_port=1 actions=drop",
        ] {
            scan.feed_line(l).unwrap();
        }
        let r = scan.finish();
        assert_eq!(
            (check(&r, "overlap").dirty, check(&r, "overlap").incomplete),
            (2, false)
        );
    }

    #[test]
    fn missing_port_is_decided_at_finish_in_dump_order() {
        let ports = Ports::new(&[iface("tap1", 1), iface("tap2", 2), iface("br", 65534)]);
        for late in [false, true] {
            let o = missing_port(Some(ports.clone()), late).unwrap();
            // Three ports missing in the second flow count once; the named one by name.
            assert_eq!(o.dirty, 3, "{o:?}");
            let shown: Vec<_> = o
                .evidence
                .iter()
                .map(|e| (e.table.as_str(), e.priority))
                .collect();
            assert_eq!(shown, vec![("1", 6), ("2", 5)]);
        }
        // Ports unknown (database down): the check is left out.
        assert!(missing_port(None, true).is_none());
    }
}
