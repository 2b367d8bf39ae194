//! The checks run over one bridge's dump, fed line by line as `ovs-ofctl` prints it.
//!
//! [`BridgeScan`] parses each line as it arrives, counts flows per table, runs the user-defined
//! checks at once, notes the ports each flow names (8 bytes a port), and keeps a compact
//! [`Record`] plus the flow text (without counters) in one string arena. `missing_port` (whose
//! port inventory may arrive while the dump streams) and the checks that need every flow
//! (`stale_cookie`, `overlap`) run in [`BridgeScan::finish`]. The dump is never held as a
//! whole: at 100k flows the arena holds the match and actions of each flow (about half the
//! dump's size) and the records 48 bytes a flow.

pub mod custom;
pub mod missing_port;
pub mod overlap;
pub mod stale_cookie;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Config;
use crate::parse::actions::{for_each_port_ref, PortRef};
use crate::parse::fields::expand_match;
use crate::parse::{parse_line, Flow, Line, ParseError, Table};

pub use missing_port::Ports;
pub use overlap::OverlapCache;

/// Longest flow text put in an evidence label.
pub const MAX_EVIDENCE_TEXT: usize = 400;

/// What the whole-dump checks need to know of a flow: 48 bytes a flow (a test keeps it so).
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub cookie: u64,
    /// Milliseconds since the flow was added, or [`Record::NO_DURATION`] when the dump had none
    /// (`--no-stats`); read it with [`Record::duration_ms`]. (An `Option<u64>` would take 16
    /// bytes.)
    pub duration: u64,
    /// Table number, or 256 + index into the scan's table names.
    pub table: u16,
    pub priority: u16,
    pub flags: u8,
    /// Offset of the match (after `priority=N,`) from `text_start`.
    pub match_off: u16,
    /// Chunk of the [`Arena`] holding the text.
    pub chunk: u32,
    pub text_start: u32,
    pub match_len: u32,
    pub text_len: u32,
    /// A hash of the match text ([`match_hash`]), for the overlap cache.
    pub match_hash: u64,
}

/// A fast 64-bit hash of a match text (folded multiplication over 8-byte words): computed while
/// the dump streams, it tells the overlap cache whether a group of flows changed.
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

impl Record {
    pub const TIMEOUT: u8 = 1;
    pub const CONJUNCTION_ONLY: u8 = 2;
    /// [`Record::duration`] of a flow without duration.
    pub const NO_DURATION: u64 = u64::MAX;

    /// [`Record::duration`] for `ms` milliseconds (None: no duration); the longest duration
    /// kept is one millisecond short of [`Record::NO_DURATION`].
    pub fn encode_duration(ms: Option<u64>) -> u64 {
        ms.map_or(Self::NO_DURATION, |d| d.min(Self::NO_DURATION - 1))
    }

    /// Milliseconds since the flow was added, if the dump said.
    pub fn duration_ms(&self) -> Option<u64> {
        (self.duration != Self::NO_DURATION).then_some(self.duration)
    }

    pub fn has_timeout(&self) -> bool {
        self.flags & Self::TIMEOUT != 0
    }

    pub fn conjunction_only(&self) -> bool {
        self.flags & Self::CONJUNCTION_ONLY != 0
    }

    /// The flow text (match and actions, no counters).
    pub fn text<'t>(&self, arena: &'t Arena) -> &'t str {
        arena.get(self.chunk, self.text_start as usize, self.text_len as usize)
    }

    /// The match without priority.
    pub fn match_text<'t>(&self, arena: &'t Arena) -> &'t str {
        let s = self.text_start as usize + usize::from(self.match_off);
        arena.get(self.chunk, s, self.match_len as usize)
    }
}

/// Flow texts, appended in fixed-size chunks: growing one big string would briefly need twice
/// its size while it is copied, which at 100k flows is the exporter's peak memory.
#[derive(Debug, Default)]
pub struct Arena {
    chunks: Vec<String>,
}

impl Arena {
    const CHUNK: usize = 1 << 20;

    /// Appends `s`; returns (chunk, offset), or None past 4G chunks.
    pub fn push(&mut self, s: &str) -> Option<(u32, u32)> {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= s.len());
        if !fits {
            self.chunks
                .push(String::with_capacity(Self::CHUNK.max(s.len())));
        }
        let idx = u32::try_from(self.chunks.len() - 1).ok()?;
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
}

/// One offending flow, for the evidence metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub table: String,
    pub priority: u16,
    pub cookie: u64,
    pub flow: String,
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
    /// Reply headers seen (a long dump has several).
    pub replies: u64,
    /// Built-in checks first (missing_port omitted when the ports are unknown), then the
    /// user-defined ones in config order.
    pub checks: Vec<CheckOutcome>,
}

/// Accumulates one bridge's dump.
pub struct BridgeScan<'c> {
    cfg: CfgRef<'c>,
    ports: Option<Ports>,
    evidence_limit: usize,
    table_counts: [u64; 256],
    table_names: Vec<(String, u64)>,
    pub(crate) records: Vec<Record>,
    pub(crate) text: Arena,
    flows: u64,
    parse_errors: u64,
    replies: u64,
    /// Ports the flows name, as (record index, port), in dump order: missing_port is decided in
    /// [`BridgeScan::finish`], so the port inventory may arrive while the dump streams.
    port_refs: Vec<(u32, u32)>,
    /// Ports named by name (only in `--names` dumps), as (record index, name).
    port_names: Vec<(u32, String)>,
    custom: Vec<CheckOutcome>,
    needs_fields: bool,
}

impl std::fmt::Debug for BridgeScan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeScan")
            .field("flows", &self.flows)
            .field("parse_errors", &self.parse_errors)
            .finish()
    }
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

fn push_evidence(
    o: &mut CheckOutcome,
    limit: usize,
    table: String,
    priority: u16,
    cookie: u64,
    text: &str,
) {
    o.dirty += 1;
    if o.evidence.len() < limit {
        o.evidence.push(Evidence {
            table,
            priority,
            cookie,
            flow: truncate(text, MAX_EVIDENCE_TEXT),
        });
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
        Self::with_cfg(CfgRef::Shared(cfg), ports, evidence_limit)
    }
}

impl<'c> BridgeScan<'c> {
    /// `ports` is None when the database could not be read (missing_port is then skipped), or
    /// when they are given later with [`BridgeScan::set_ports`].
    pub fn new(cfg: &'c Config, ports: Option<Ports>, evidence_limit: usize) -> Self {
        Self::with_cfg(CfgRef::Borrowed(cfg), ports, evidence_limit)
    }

    fn with_cfg(cfg: CfgRef<'c>, ports: Option<Ports>, evidence_limit: usize) -> Self {
        let custom = cfg
            .checks
            .iter()
            .map(|c| CheckOutcome::new(&c.name))
            .collect();
        let needs_fields = cfg.checks.iter().any(custom::needs_fields);
        Self {
            cfg,
            ports,
            evidence_limit,
            table_counts: [0; 256],
            table_names: Vec::new(),
            records: Vec::new(),
            text: Arena::default(),
            flows: 0,
            parse_errors: 0,
            replies: 0,
            port_refs: Vec::new(),
            port_names: Vec::new(),
            custom,
            needs_fields,
        }
    }

    /// Heap bytes the scan holds for the whole-dump checks, by part (capacity, not length):
    /// for the memory benchmark (`examples/mem_bench.rs`).
    pub fn heap_bytes(&self) -> Vec<(&'static str, usize)> {
        vec![
            (
                "records",
                self.records.capacity() * std::mem::size_of::<Record>(),
            ),
            ("flow text", self.text.capacity()),
            (
                "port refs",
                self.port_refs.capacity() * std::mem::size_of::<(u32, u32)>(),
            ),
            (
                "port names",
                self.port_names.capacity() * std::mem::size_of::<(u32, String)>()
                    + self
                        .port_names
                        .iter()
                        .map(|(_, n)| n.capacity())
                        .sum::<usize>(),
            ),
        ]
    }

    /// Sets the bridge's ports (None: unknown, missing_port is skipped). Only [`BridgeScan::finish`]
    /// uses them, so they may come after the lines.
    pub fn set_ports(&mut self, ports: Option<Ports>) {
        self.ports = ports;
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
                Err(e)
            }
        }
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
        self.flows += 1;
        let table = self.table_index(f.table);
        // One pass over the actions for both what the record keeps and the ports they name.
        let index = u32::try_from(self.records.len()).unwrap_or(u32::MAX);
        let refs_before = (self.port_refs.len(), self.port_names.len());
        let (refs, names) = (&mut self.port_refs, &mut self.port_names);
        let mut add = |r: PortRef| match r {
            PortRef::Number(n) => refs.push((index, n)),
            PortRef::Name(s) => names.push((index, s)),
        };
        let mut conjunction_only = true;
        for a in f.actions() {
            conjunction_only &= a.name == "conjunction";
            for_each_port_ref(std::iter::once(a), &mut add);
        }
        missing_port::for_each_match_port(f, &mut add);
        if !self.cfg.checks.is_empty() {
            let mut fields = Vec::new();
            if self.needs_fields {
                expand_match(f.match_text, &mut fields);
            }
            for (c, o) in self.cfg.checks.iter().zip(self.custom.iter_mut()) {
                if custom::matches(c, f, &fields) {
                    push_evidence(
                        o,
                        self.evidence_limit,
                        f.table.to_string(),
                        f.priority,
                        f.cookie,
                        f.text,
                    );
                }
            }
        }
        let mut flags = 0;
        if f.idle_timeout > 0 || f.hard_timeout > 0 {
            flags |= Record::TIMEOUT;
        }
        if conjunction_only {
            flags |= Record::CONJUNCTION_ONLY;
        }
        let match_off = if f.match_text.is_empty() {
            0
        } else {
            f.match_text.as_ptr() as usize - f.text.as_ptr() as usize
        };
        let Some((chunk, text_start)) = self.text.push(f.text) else {
            self.port_refs.truncate(refs_before.0);
            self.port_names.truncate(refs_before.1);
            return;
        };
        self.records.push(Record {
            cookie: f.cookie,
            duration: Record::encode_duration(f.duration.map(|d| (d * 1000.0) as u64)),
            table,
            priority: f.priority,
            flags,
            match_off: u16::try_from(match_off).unwrap_or(0),
            chunk,
            text_start,
            match_len: u32::try_from(f.match_text.len()).unwrap_or(0),
            text_len: u32::try_from(f.text.len()).unwrap_or(0),
            match_hash: match_hash(f.match_text),
        });
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

    fn evidence_from(&self, name: &str, dirty: &[usize]) -> CheckOutcome {
        let mut o = CheckOutcome::new(name);
        for &i in dirty {
            let r = &self.records[i];
            push_evidence(
                &mut o,
                self.evidence_limit,
                self.table_label(r.table),
                r.priority,
                r.cookie,
                r.text(&self.text),
            );
        }
        o
    }

    /// Runs the whole-dump checks and returns the report.
    pub fn finish(self) -> BridgeReport {
        self.finish_with_budget(overlap::DEFAULT_BUDGET)
    }

    /// [`BridgeScan::finish`] reusing the overlap results of unchanged (table, priority) groups
    /// from `cache` (filled by the previous finish of the same bridge).
    pub fn finish_cached(self, cache: &mut overlap::OverlapCache) -> BridgeReport {
        self.finish_inner(overlap::DEFAULT_BUDGET, Some(cache))
    }

    /// [`BridgeScan::finish`] with an explicit overlap comparison budget.
    pub fn finish_with_budget(self, budget: u64) -> BridgeReport {
        self.finish_inner(budget, None)
    }

    fn finish_inner(self, budget: u64, cache: Option<&mut overlap::OverlapCache>) -> BridgeReport {
        let missing = self.ports.as_ref().map(|ports| {
            let mut dirty: Vec<usize> = self
                .port_refs
                .iter()
                .filter(|&&(_, n)| !ports.has(&PortRef::Number(n)))
                .map(|&(i, _)| i as usize)
                .chain(
                    self.port_names
                        .iter()
                        .filter(|(_, n)| !ports.has_name(n))
                        .map(|&(i, _)| i as usize),
                )
                .collect();
            // Back to dump order; a flow naming several missing ports counts once.
            dirty.sort_unstable();
            dirty.dedup();
            self.evidence_from("missing_port", &dirty)
        });
        let stale = stale_cookie::stale_flows(&self.records, &self.cfg);
        let stale = self.evidence_from("stale_cookie", &stale);
        let (dirty, exhausted) = overlap::overlapping(&self.records, &self.text, budget, cache);
        let idx: Vec<usize> = dirty
            .iter()
            .enumerate()
            .filter(|(_, &d)| d)
            .map(|(i, _)| i)
            .collect();
        let mut ov = self.evidence_from("overlap", &idx);
        ov.incomplete = exhausted;

        let mut tables = BTreeMap::new();
        for (n, &c) in self.table_counts.iter().enumerate() {
            if c > 0 {
                tables.insert(n.to_string(), c);
            }
        }
        for (n, c) in &self.table_names {
            *tables.entry(n.clone()).or_insert(0) += c;
        }
        let mut checks = Vec::new();
        checks.extend(missing);
        checks.push(stale);
        checks.push(ov);
        checks.extend(self.custom);
        BridgeReport {
            tables,
            flows: self.flows,
            parse_errors: self.parse_errors,
            replies: self.replies,
            checks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::missing_port::iface;
    use super::*;

    fn missing_port(ports: Option<Ports>, late: bool) -> Option<CheckOutcome> {
        let cfg = Config::default();
        let mut scan = BridgeScan::new(&cfg, if late { None } else { ports.clone() }, 2);
        for l in [
            " table=1, priority=5,in_port=1 actions=output:2",
            " table=1, priority=6,in_port=7 actions=output:8,output:9",
            " table=2, priority=5,in_port=tap1 actions=output:tap9",
            " table=3, priority=5 actions=output:9",
            " table=3, priority=6 actions=clone(output:1),LOCAL",
        ] {
            scan.feed_line(l).unwrap();
        }
        if late {
            scan.set_ports(ports);
        }
        scan.finish()
            .checks
            .into_iter()
            .find(|c| c.name == "missing_port")
    }

    #[test]
    fn a_record_takes_48_bytes_and_keeps_its_duration() {
        assert_eq!(std::mem::size_of::<Record>(), 48);
        let cfg = Config::default();
        let mut scan = BridgeScan::new(&cfg, None, 5);
        for l in [
            " cookie=0x1, duration=1.5s, table=0, n_packets=0, n_bytes=0, priority=1 actions=drop",
            " cookie=0x1, table=0, priority=2 actions=drop",
            " cookie=0x1, duration=0.000s, table=0, n_packets=0, n_bytes=0, priority=3 actions=drop",
            " cookie=0x1, duration=99999999999999999999.0s, table=0, n_packets=0, n_bytes=0, priority=4 actions=drop",
        ] {
            scan.feed_line(l).unwrap();
        }
        let d: Vec<_> = scan.records.iter().map(Record::duration_ms).collect();
        assert_eq!(d, vec![Some(1500), None, Some(0), Some(u64::MAX - 1)]);
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
