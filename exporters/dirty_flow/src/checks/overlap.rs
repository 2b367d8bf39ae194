//! `overlap`: two flows in one table at the same priority whose matches can both match one
//! packet and whose actions differ. OpenFlow leaves the winner undefined, so the behaviour
//! depends on insertion order; when both flows do the same, the winner does not matter.
//!
//! A pair counts only when some packet can reach both flows and they would treat it
//! differently: equal actions ([`actions_key`]) are no overlap, and a pair whose merged
//! `ct_state` constraint only a state OVS never gives a packet can satisfy ([`ct_state_possible`]:
//! `-trk` with any other flag, `+inv` with anything but `+trk`, `+new` with `+est` or `+rpl`)
//! is none either; nor is a pair that needs register bits no single path through the bridge's
//! tables sets together ([`super::pipeline`]), one that only a tracked packet matches when
//! none reaches its table tracked, or two flows differing by a leading `ct_clear` before
//! tables that never read the conntrack state ([`super::reach`]). Those last three are
//! [`Excuse`]s, decided when the dump ends.
//!
//! Comparing every pair is quadratic (10^10 pairs at 100k flows), so flows are grouped by
//! (table, priority) and each group is split recursively: pick the field most flows constrain,
//! AND together the masks those flows use for it, and bucket the flows by their value under that
//! common mask. Two flows in different buckets differ on bits both constrain, so they cannot
//! overlap; flows that leave the field wild are compared with every flow of the group. Buckets
//! are split again on the next field; only small buckets are compared pairwise. Flows whose only
//! actions are `conjunction(...)` are clauses of a conjunctive match, which overlap by design,
//! and are skipped. Past 20k flows the groups are split between two threads (the dump is over,
//! its cores are free). A comparison budget bounds the worst case; when it runs out the result is
//! flagged incomplete rather than taking unbounded time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::parse::fields::{expand_match, matches_overlap, FieldMatch};

use super::pipeline::{Assumption, RegWrites};
use super::{match_hash, match_of, Arena, Record};

/// Why a pair that can match one packet may still be no overlap, decided when the dump ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excuse {
    /// No path sets the register bits both need, provided the flows after the pair's table do
    /// not break the [`Assumption`].
    Regs(Assumption),
    /// Only a tracked packet (a `ct_*` field with a bit set) matches both: none may reach
    /// the table ([`super::reach::Analysis::reach`]).
    Tracked,
    /// The actions differ only by a leading `ct_clear`: nothing after them may read the
    /// conntrack state ([`super::reach::Analysis::reads_ct_after`]).
    Cleared,
}

/// A pair found no overlap only for an [`Excuse`] checked when the dump ends (record
/// indices).
pub type Deferred = (usize, usize, Excuse);

/// Whether only a tracked packet can match both: a conntrack field (`ct_state`, `ct_label`,
/// `ct_mark`, `ct_zone`...) with a bit required set (untracked packets have them all zero).
fn needs_tracked(a: &[FieldMatch<'_>], b: &[FieldMatch<'_>]) -> bool {
    a.iter()
        .chain(b)
        .any(|f| !f.opaque && f.field.starts_with("ct_") && f.value & f.mask != 0)
}

/// The register constraints (`reg0`..`reg15`) of an expanded match: per register, the bits
/// it requires to be 1.
fn reg_ones(m: &[FieldMatch<'_>], out: &mut [u32; 16]) {
    for f in m.iter().filter(|f| !f.opaque) {
        if let Some(n) = f
            .field
            .strip_prefix("reg")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < 16)
        {
            out[n] |= (f.value & f.mask) as u32;
        }
    }
}

/// Whether the pair needs two register bits that no path sets together: the assumption that
/// says so.
fn registers_exclude(
    regs: &RegWrites,
    table: u16,
    a: &[FieldMatch<'_>],
    b: &[FieldMatch<'_>],
) -> Option<Assumption> {
    let mut ones = [0u32; 16];
    reg_ones(a, &mut ones);
    reg_ones(b, &mut ones);
    for (r, &m) in ones.iter().enumerate() {
        if m.count_ones() < 2 {
            continue;
        }
        let mut xs = m;
        while xs != 0 {
            let x = xs.trailing_zeros();
            xs &= xs - 1;
            let mut ys = xs;
            while ys != 0 {
                let y = ys.trailing_zeros();
                ys &= ys - 1;
                if let Err(assumption) = regs.cosettable(r, x, y, table) {
                    return Some(assumption);
                }
            }
        }
    }
    None
}

/// The key under which two flows' actions count as equal. `ovs-ofctl` prints actions in one
/// canonical form (the same action list always prints the same), so the text is the key; an
/// empty list and `drop` are the same.
pub fn actions_key(actions: &str) -> u64 {
    let t = actions.trim();
    match_hash(if t.is_empty() { "drop" } else { t })
}

/// `ct_state` bits as ovs-fields(7) numbers them.
const CT_NEW: u16 = 0x01;
const CT_EST: u16 = 0x02;
const CT_RPL: u16 = 0x08;
const CT_INV: u16 = 0x10;
const CT_TRK: u16 = 0x20;

/// Whether OVS can give a packet this connection tracking state: the rules of ovs-fields(7)
/// that OVS's own `validate_ct_state` enforces (lib/flow.c). Without `trk` no other flag is
/// set; `inv` goes with `trk` only; `new` excludes `est` and `rpl`.
const fn ct_state_valid(s: u16) -> bool {
    !((s != 0 && s & CT_TRK == 0)
        || (s & CT_INV != 0 && s & !(CT_TRK | CT_INV) != 0)
        || (s & CT_NEW != 0 && s & CT_EST != 0)
        || (s & CT_NEW != 0 && s & CT_RPL != 0))
}

/// The 256 states of the 8 `ct_state` flags, a bit each: set when valid.
const CT_VALID: [u128; 2] = {
    let mut t = [0u128; 2];
    let mut s = 0u16;
    while s < 256 {
        if ct_state_valid(s) {
            t[(s / 128) as usize] |= 1 << (s % 128);
        }
        s += 1;
    }
    t
};

/// The `ct_state` constraint of an expanded match (value, mask), if it has a readable one.
fn ct_state_of<'a>(m: &[FieldMatch<'a>]) -> Option<(u128, u128)> {
    m.iter()
        .find(|f| !f.opaque && f.field == "ct_state")
        .map(|f| (f.value, f.mask))
}

/// Whether a packet in a state OVS can give it satisfies both flows' `ct_state` constraints
/// (which [`matches_overlap`] already found compatible bit by bit).
pub(crate) fn ct_state_possible(a: &[FieldMatch<'_>], b: &[FieldMatch<'_>]) -> bool {
    let (ca, cb) = (ct_state_of(a), ct_state_of(b));
    if ca.is_none() && cb.is_none() {
        return true;
    }
    let (va, ma) = ca.unwrap_or((0, 0));
    let (vb, mb) = cb.unwrap_or((0, 0));
    let (v, m) = ((va & ma) | (vb & mb), ma | mb);
    if m > 0xff {
        // Bits beyond the eight flags: not ours to judge.
        return true;
    }
    (0..256u16).any(|s| {
        CT_VALID[usize::from(s / 128)] & (1 << (s % 128)) != 0 && u128::from(s) & m == v & m
    })
}

/// Pairwise comparisons allowed per bridge.
pub const DEFAULT_BUDGET: u64 = 50_000_000;

/// Sets at most this large are compared pairwise.
const SMALL: usize = 12;

/// A fast hasher for the few (field name, notation) keys of a group: FNV-1a over the written
/// bytes. The keys are match field names, not attacker-sized data.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// A field in one notation, hashed by its precomputed key.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FieldId<'a> {
    key: u64,
    field: &'a str,
    opaque: bool,
}

impl std::hash::Hash for FieldId<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal ids have equal keys; the name needs no second hash.
        state.write_u64(self.key ^ u64::from(self.opaque));
    }
}

struct Ctx<'a, 'b> {
    /// The constraints of every flow of the group, flow `i` at `fields[offs[i]..offs[i + 1]]`.
    fields: &'b [FieldMatch<'a>],
    offs: &'b [usize],
    /// Each flow's [`actions_key`] (after a leading `ct_clear`), and whether it has one.
    actions: &'b [u64],
    cleared: &'b [bool],
    /// The register writes of the bridge so far, when the pipeline is known.
    regs: Option<&'b RegWrites>,
    /// The group's table.
    table: u16,
    /// Pairs (positions in the group) excluded only for an [`Excuse`] checked later.
    deferred: Vec<(usize, usize, Excuse)>,
    dirty: &'b mut [bool],
    /// Comparisons this thread may still make before taking more from `pool`.
    budget: u64,
    pool: &'b AtomicU64,
    exhausted: bool,
}

impl<'a> Ctx<'a, '_> {
    fn of(&self, i: usize) -> &[FieldMatch<'a>] {
        &self.fields[self.offs[i]..self.offs[i + 1]]
    }

    fn compare(&mut self, i: usize, j: usize) {
        if self.dirty[i] && self.dirty[j] {
            return;
        }
        if self.budget == 0 {
            self.budget = take(self.pool, BUDGET_CHUNK);
            if self.budget == 0 {
                self.exhausted = true;
                return;
            }
        }
        self.budget -= 1;
        let same_rest = self.actions[i] == self.actions[j];
        if same_rest && self.cleared[i] == self.cleared[j] {
            // Both treat a packet alike: whichever wins, the outcome is the same.
            return;
        }
        let (a, b) = (self.of(i), self.of(j));
        if matches_overlap(a, b) && ct_state_possible(a, b) {
            if let Some(regs) = self.regs {
                let excuse = match registers_exclude(regs, self.table, a, b) {
                    Some(x) => Some(Excuse::Regs(x)),
                    None if same_rest => Some(Excuse::Cleared),
                    None if needs_tracked(a, b) => Some(Excuse::Tracked),
                    None => None,
                };
                if let Some(x) = excuse {
                    self.deferred.push((i, j, x));
                    return;
                }
            }
            self.dirty[i] = true;
            self.dirty[j] = true;
        }
    }

    fn pairwise(&mut self, set: &[usize]) {
        for (k, &i) in set.iter().enumerate() {
            for &j in &set[k + 1..] {
                self.compare(i, j);
                if self.exhausted {
                    return;
                }
            }
        }
    }

    fn cross(&mut self, a: &[usize], b: &[usize]) {
        for &i in a {
            for &j in b {
                self.compare(i, j);
                if self.exhausted {
                    return;
                }
            }
        }
    }

    fn split(&mut self, set: &[usize]) {
        if self.exhausted || set.len() < 2 {
            return;
        }
        if set.len() <= SMALL {
            self.pairwise(set);
            return;
        }
        // Field -> (flows constraining it, AND of their masks).
        let mut freq: FnvMap<FieldId<'a>, (usize, u128)> = FnvMap::default();
        for &i in set {
            for f in self.of(i) {
                let id = FieldId {
                    key: f.key,
                    field: f.field,
                    opaque: f.opaque,
                };
                let e = freq.entry(id).or_insert((0, u128::MAX));
                e.0 += 1;
                e.1 &= f.mask;
            }
        }
        let mut cands: Vec<_> = freq.into_iter().filter(|(_, (_, m))| *m != 0).collect();
        cands.sort_by(|a, b| {
            b.1 .0
                .cmp(&a.1 .0)
                .then(a.0.field.cmp(b.0.field))
                .then(a.0.opaque.cmp(&b.0.opaque))
        });
        for (id, (_, mask)) in cands.into_iter().take(6) {
            // (value under the common mask, flow) for the flows constraining the field.
            let mut keyed: Vec<(u128, usize)> = Vec::with_capacity(set.len());
            let mut wild = Vec::new();
            for &i in set {
                match self
                    .of(i)
                    .iter()
                    .find(|f| f.key == id.key && f.opaque == id.opaque && f.field == id.field)
                {
                    Some(f) => keyed.push((f.value & mask, i)),
                    None => wild.push(i),
                }
            }
            // Buckets are runs of equal values; sorting by (value, flow) keeps it deterministic.
            keyed.sort_unstable();
            if keyed.first().map(|k| k.0) == keyed.last().map(|k| k.0) {
                // Fewer than two buckets: the field separates nothing.
                continue;
            }
            let constrained: Vec<usize> = keyed.iter().map(|&(_, i)| i).collect();
            self.cross(&wild, &constrained);
            self.split(&wild);
            for bucket in keyed.chunk_by(|a, b| a.0 == b.0) {
                if bucket.len() > 1 {
                    let b: Vec<usize> = bucket.iter().map(|&(_, i)| i).collect();
                    self.split(&b);
                }
            }
            return;
        }
        // No field separates the flows.
        self.pairwise(set);
    }
}

/// Comparisons a thread takes from the shared budget at a time.
const BUDGET_CHUNK: u64 = 4096;

/// Flows above which the groups are split between two threads: the dump is over by then, so
/// the cores ovs-vswitchd and ovs-ofctl used are free.
const PARALLEL_FLOWS: usize = 20_000;

/// Takes up to `n` comparisons from `pool`.
fn take(pool: &AtomicU64, n: u64) -> u64 {
    let mut got = 0;
    let _ = pool.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
        got = left.min(n);
        Some(left - got)
    });
    got
}

/// The overlap results of the last scrape per (table, priority) group, reused while the group's
/// match texts are unchanged: flow tables mostly stay the same between scrapes, and hashing a
/// group's matches costs a tenth of checking it. A dump's tables are checked one at a time
/// (see [`super::BridgeScan`]): each check reads the groups of the last dump
/// ([`OverlapCache::start_dump`]) and stores its own for the next.
#[derive(Debug, Default)]
pub struct OverlapCache {
    /// The groups of the last complete dump.
    last: HashMap<u32, CachedGroup>,
    /// The groups of the dump under way.
    fresh: HashMap<u32, CachedGroup>,
    /// Groups reused in this dump.
    pub reused: usize,
    /// Groups checked in this dump.
    pub checked: usize,
}

impl OverlapCache {
    /// Starts a dump: the groups stored since the last call become the ones reused.
    pub fn start_dump(&mut self) {
        self.last = std::mem::take(&mut self.fresh);
        self.reused = 0;
        self.checked = 0;
    }
}

#[derive(Debug, Clone)]
struct CachedGroup {
    /// Two combinations of the group's match hashes ([`super::match_hash`]), in dump order.
    hash: (u64, u64),
    len: usize,
    /// Positions (in the group) of the overlapping flows.
    dirty: Vec<u32>,
}

fn group_hash(group: &[u64], records: &[Record]) -> (u64, u64) {
    // Two different combinations of the flows' match hashes, in order.
    let (mut a, mut b) = (group.len() as u64, 0x6a09_e667_f3bc_c908_u64);
    for &k in group {
        let h = records[index_of(k)].match_hash;
        a = (a ^ h).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        b = b.rotate_left(23).wrapping_add(h ^ 0xbf58_476d_1ce4_e5b9);
    }
    (a, b)
}

fn index_of(k: u64) -> usize {
    (k & 0xffff_ffff) as usize
}

/// Finds overlapping flows among `records` (one table's, or any set). `text` is the arena the
/// records point into; `budget` is the comparisons left, lowered by those made. Returns the
/// dirty flag per record and whether the budget ran out. With a cache, groups whose matches did
/// not change since the last dump are not checked again.
pub fn overlapping(
    records: &[Record],
    text: &Arena,
    budget: &mut u64,
    cache: Option<&mut OverlapCache>,
) -> (Vec<bool>, bool) {
    let (dirty, exhausted, _) = overlapping_with(records, text, budget, cache, None);
    (dirty, exhausted)
}

/// [`overlapping`], with the register writes of the tables dumped so far: pairs that need
/// register bits no path sets together are not dirty, and are returned with the assumption
/// that makes it so (checked when the dump ends). Groups with such pairs are not cached.
pub fn overlapping_with(
    records: &[Record],
    text: &Arena,
    budget: &mut u64,
    mut cache: Option<&mut OverlapCache>,
    regs: Option<&RegWrites>,
) -> (Vec<bool>, bool, Vec<Deferred>) {
    // (table, priority, index) packed in one integer: an unstable sort of unique keys is
    // deterministic and cheap.
    let mut order: Vec<u64> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (u64::from(r.table) << 48) | (u64::from(r.priority) << 32) | i as u64)
        .collect();
    order.sort_unstable();
    let mut dirty = vec![false; records.len()];
    // Groups to check, with their cache key and hash when there is a cache.
    let mut groups: Vec<&[u64]> = Vec::new();
    let mut keys: Vec<(u32, (u64, u64))> = Vec::new();
    for g in order.chunk_by(|a, b| a >> 32 == b >> 32) {
        if g.len() < 2 {
            continue;
        }
        if let Some(c) = cache.as_deref_mut() {
            let key = (g[0] >> 32) as u32;
            let hash = group_hash(g, records);
            if let Some(hit) = c
                .last
                .get(&key)
                .filter(|h| h.hash == hash && h.len == g.len())
            {
                for &p in &hit.dirty {
                    dirty[index_of(g[p as usize])] = true;
                }
                c.fresh.insert(key, hit.clone());
                c.reused += 1;
                continue;
            }
            keys.push((key, hash));
        }
        groups.push(g);
    }
    let pool = AtomicU64::new(*budget);
    let mut deferred = Vec::new();
    let exhausted = check_all(
        &groups,
        records,
        text,
        &pool,
        &mut dirty,
        regs,
        &mut deferred,
    );
    *budget = pool.load(Ordering::Relaxed);
    if let Some(c) = cache {
        c.checked += groups.len();
        if !exhausted {
            let excluded: std::collections::HashSet<usize> =
                deferred.iter().flat_map(|&(i, j, _)| [i, j]).collect();
            for (g, (key, hash)) in groups.iter().zip(keys) {
                if g.iter().any(|&k| excluded.contains(&index_of(k))) {
                    // Decided with the register writes of this dump: checked again next time.
                    continue;
                }
                let positions = (0..g.len())
                    .filter(|&p| dirty[index_of(g[p])])
                    .map(|p| p as u32)
                    .collect();
                c.fresh.insert(
                    key,
                    CachedGroup {
                        hash,
                        len: g.len(),
                        dirty: positions,
                    },
                );
            }
        }
    }
    (dirty, exhausted, deferred)
}

/// Checks the groups, in two threads when they are big. Returns whether the budget ran out.
fn check_all(
    groups: &[&[u64]],
    records: &[Record],
    text: &Arena,
    pool: &AtomicU64,
    dirty: &mut [bool],
    regs: Option<&RegWrites>,
    deferred: &mut Vec<Deferred>,
) -> bool {
    let total: usize = groups.iter().map(|g| g.len()).sum();
    if total < PARALLEL_FLOWS {
        return check_groups(groups, records, text, pool, dirty, regs, deferred);
    }
    // Two halves of about equal flow counts.
    let mut acc = 0;
    let cut = groups
        .iter()
        .position(|g| {
            acc += g.len();
            acc * 2 >= total
        })
        .map_or(groups.len(), |p| p + 1);
    let (first, second) = groups.split_at(cut);
    let mut dirty2 = vec![false; dirty.len()];
    let mut deferred2 = Vec::new();
    let (ex1, ex2) = std::thread::scope(|s| {
        let other = s.spawn(|| {
            check_groups(
                second,
                records,
                text,
                pool,
                &mut dirty2,
                regs,
                &mut deferred2,
            )
        });
        let ex1 = check_groups(first, records, text, pool, dirty, regs, deferred);
        // A panic in the other half is re-raised here (the framework contains it).
        let ex2 = other
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (ex1, ex2)
    });
    for (d, d2) in dirty.iter_mut().zip(dirty2) {
        *d |= d2;
    }
    deferred.extend(deferred2);
    ex1 || ex2
}

/// Checks each (table, priority) group of flows (record indices in the low 32 bits); sets
/// `dirty` for the overlapping ones. Returns whether the budget ran out.
fn check_groups(
    groups: &[&[u64]],
    records: &[Record],
    text: &Arena,
    pool: &AtomicU64,
    dirty: &mut [bool],
    regs: Option<&RegWrites>,
    deferred: &mut Vec<Deferred>,
) -> bool {
    let (mut offs, mut local, mut actions) = (Vec::new(), Vec::new(), Vec::new());
    let mut cleared = Vec::new();
    // The group's matches, replayed from the front coding into one buffer (the constraints
    // borrow their field names from it), and each match's end in it.
    let (mut m, mut texts, mut ends) = (String::new(), String::new(), Vec::new());
    let mut ctx_budget = 0;
    for group in groups {
        texts.clear();
        ends.clear();
        for k in group.iter() {
            match_of(records, text, index_of(*k), &mut m);
            texts.push_str(&m);
            ends.push(texts.len());
        }
        let mut fields = Vec::new();
        let mut one = Vec::new();
        offs.clear();
        offs.push(0);
        let mut start = 0;
        for &end in &ends {
            expand_match(&texts[start..end], &mut one);
            fields.extend_from_slice(&one);
            offs.push(fields.len());
            start = end;
        }
        local.clear();
        local.resize(group.len(), false);
        actions.clear();
        actions.extend(group.iter().map(|&k| records[index_of(k)].actions_hash));
        cleared.clear();
        cleared.extend(group.iter().map(|&k| records[index_of(k)].ct_clear));
        let mut ctx = Ctx {
            fields: &fields,
            offs: &offs,
            actions: &actions,
            cleared: &cleared,
            regs,
            table: group.first().map_or(0, |&k| records[index_of(k)].table),
            deferred: Vec::new(),
            dirty: &mut local,
            budget: ctx_budget,
            pool,
            exhausted: false,
        };
        let all: Vec<usize> = (0..group.len()).collect();
        ctx.split(&all);
        ctx_budget = ctx.budget;
        let exhausted = ctx.exhausted;
        deferred.extend(
            ctx.deferred
                .iter()
                .map(|&(i, j, a)| (index_of(group[i]), index_of(group[j]), a)),
        );
        for (k, &d) in group.iter().zip(&local) {
            dirty[index_of(*k)] |= d;
        }
        if exhausted {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{store_of, FlowStore};

    fn run(lines: &[&str]) -> Vec<bool> {
        let s = store_of(lines);
        let (d, ex) = overlapping(&s.records, &s.text, &mut DEFAULT_BUDGET.clone(), None);
        assert!(!ex);
        d
    }

    #[test]
    fn pairs() {
        let d = run(&[
            " table=10, priority=50,tcp,nw_src=10.0.0.0/24,tp_dst=80 actions=output:2",
            " table=10, priority=50,tcp,nw_dst=10.1.0.5 actions=output:99",
            " table=10, priority=50,udp,nw_dst=10.1.0.5 actions=output:99",
            " table=11, priority=50,tcp,nw_dst=10.1.0.5 actions=output:99",
            " table=10, priority=51,tcp,nw_dst=10.1.0.5 actions=output:99",
            " table=21, priority=5,ip,nw_src=10.0.0.1 actions=conjunction(7,1/2)",
            " table=21, priority=5,tcp,tp_dst=22 actions=conjunction(7,2/2)",
            " table=21, priority=5,conj_id=7,ip actions=output:1",
        ]);
        // The two conjunction clauses are not kept (they overlap by design).
        assert_eq!(d, vec![true, true, false, false, false, false]);
    }

    #[test]
    fn equal_actions_are_no_overlap() {
        let d = run(&[
            // neutron's firewall: same actions, whichever wins.
            " table=72, priority=50,ct_state=+inv+trk actions=resubmit(,93)",
            " table=72, priority=50,ct_mark=0x1,reg5=0x3 actions=resubmit(,93)",
            // Same match, different actions: an overlap.
            " table=73, priority=50,reg5=0x3 actions=resubmit(,93)",
            " table=73, priority=50,reg5=0x3 actions=drop",
        ]);
        assert_eq!(d, vec![false, false, true, true]);
        // An empty action list is a drop.
        assert_eq!(actions_key("drop"), actions_key(""));
        assert_ne!(actions_key("drop"), actions_key("output:1"));
    }

    #[test]
    fn ct_states_ovs_never_gives_a_packet_are_no_overlap() {
        let pair = |a: &str, b: &str| {
            let d = run(&[
                &format!(" table=1, priority=50,ip,{a} actions=output:1"),
                &format!(" table=1, priority=50,ip,{b} actions=output:2"),
            ]);
            assert_eq!(d[0], d[1]);
            d[0]
        };
        // neutron's firewall, tables 72 and 82: inv goes with trk only.
        assert!(!pair("ct_state=+inv+trk", "ct_state=+est-rel+rpl"));
        assert!(!pair("ct_state=+inv+trk", "ct_state=+new-est"));
        // new excludes est and rpl (OVN's ACL tables).
        assert!(!pair("ct_state=+new+trk", "ct_state=+est+trk"));
        assert!(!pair("ct_state=+new-rel+trk", "ct_state=+rpl+trk"));
        // -trk excludes every other flag, also one given without trk.
        assert!(!pair("ct_state=-trk", "ct_state=+est"));
        assert!(!pair("ct_state=-trk", "ct_state=+snat"));
        // A flow whose own state cannot occur overlaps nothing.
        assert!(!pair("ct_state=+inv+est+trk", "reg0=0x1"));
        // States OVS does give: est with rel, rpl with rel, new with rel, and no constraint.
        assert!(pair("ct_state=+est+trk", "ct_state=+rel+trk"));
        assert!(pair("ct_state=+rpl+trk", "ct_state=+rel-est+trk"));
        assert!(pair("ct_state=+new+trk", "ct_state=+rel+trk"));
        assert!(pair("ct_state=+inv+trk", "nw_src=10.0.0.1"));
        assert!(pair("ct_state=-trk", "ct_state=-est"));
        // Written as numbers: 0x30/0x30 is +inv+trk, 0x22/0x22 is +est+trk.
        assert!(!pair("ct_state=0x30/0x30", "ct_state=0x22/0x22"));
    }

    #[test]
    fn every_ct_state_ovs_accepts_is_valid() {
        // Spot checks of the table against ovs-fields(7).
        for (s, ok) in [
            (0, true),
            (CT_TRK, true),
            (CT_TRK | CT_INV, true),
            (CT_TRK | CT_NEW | 0x04, true),
            (CT_TRK | CT_EST | 0x04 | CT_RPL, true),
            (CT_TRK | CT_EST | 0x40 | 0x80, true),
            (CT_EST, false),
            (CT_TRK | CT_INV | CT_EST, false),
            (CT_TRK | CT_NEW | CT_EST, false),
            (CT_TRK | CT_NEW | CT_RPL, false),
        ] {
            assert_eq!(ct_state_valid(s), ok, "{s:#x}");
        }
        // 2 (untracked, tracked) + ... : count the valid states among 256 once.
        let n: u32 = CT_VALID.iter().map(|w| w.count_ones()).sum();
        // Tracked, not inv: new/est/rel/rpl/snat/dnat with new excluding est and rpl:
        // rel, snat, dnat free (8) x {none, new, est, rpl, est+rpl} (5) = 40; plus untracked
        // (1) and trk+inv (1).
        assert_eq!(n, 42);
    }

    #[test]
    fn bucketing_finds_the_one_overlap_among_many() {
        let mut lines: Vec<String> = (0..2000)
            .map(|i| format!(" table=0, priority=10,in_port={},dl_dst=fa:16:3e:00:{:02x}:{:02x} actions=output:1", i % 50 + 1, i / 256, i % 256))
            .collect();
        // A wildcard flow at another priority, and one overlapping on in_port only.
        lines.push(" table=0, priority=9,in_port=3 actions=drop".into());
        lines.push(" table=0, priority=10,in_port=3,ip actions=drop".into());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let d = run(&refs);
        let dirty: Vec<usize> = d
            .iter()
            .enumerate()
            .filter(|(_, &x)| x)
            .map(|(i, _)| i)
            .collect();
        // Flows with in_port=3 at priority 10: i % 50 == 2, plus the last one.
        let mut expected: Vec<usize> = (0..2000).filter(|i| i % 50 == 2).collect();
        expected.push(2001);
        assert_eq!(dirty, expected);
    }

    #[test]
    fn two_threads_find_the_same_overlaps() {
        // Enough flows for the parallel path: 60 groups (table, priority) of 400 flows, each
        // group with one flow overlapping the group's flow number 7.
        let mut lines = Vec::new();
        let mut expected = Vec::new();
        for g in 0..60 {
            for i in 0..400 {
                lines.push(format!(
                    " table={}, priority={},in_port={},dl_dst=fa:16:3e:00:{:02x}:{:02x} actions=output:1",
                    g % 6, 10 + g / 6, i % 40 + 1, i / 256, i % 256
                ));
                if i == 7 {
                    expected.push(lines.len() - 1);
                }
            }
            lines.push(format!(
                " table={}, priority={},in_port=8,ip,dl_dst=fa:16:3e:00:00:07 actions=drop",
                g % 6,
                10 + g / 6
            ));
            expected.push(lines.len() - 1);
        }
        assert!(lines.len() > PARALLEL_FLOWS);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let d = run(&refs);
        let dirty: Vec<usize> = (0..d.len()).filter(|&i| d[i]).collect();
        assert_eq!(dirty, expected);
    }

    #[test]
    fn cache_reuses_unchanged_groups_only() {
        let scan_of = |lines: &[&str]| store_of(lines);
        let base = [
            " table=1, priority=5,in_port=1 actions=drop",
            " table=1, priority=5,in_port=1,ip actions=output:1",
            " table=2, priority=5,in_port=1 actions=drop",
            " table=2, priority=5,in_port=2 actions=drop",
        ];
        let mut cache = OverlapCache::default();
        // Each call is one dump.
        let mut check = |s: &FlowStore| {
            cache.start_dump();
            let r = overlapping(
                &s.records,
                &s.text,
                &mut DEFAULT_BUDGET.clone(),
                Some(&mut cache),
            );
            (r, (cache.checked, cache.reused))
        };
        let s = scan_of(&base);
        let (first, counts) = check(&s);
        assert_eq!(first, (vec![true, true, false, false], false));
        assert_eq!(counts, (2, 0));
        // Same flows (new counters): both groups reused, same result.
        let (again, counts) = check(&s);
        assert_eq!(again, first);
        assert_eq!(counts, (0, 2));
        // Table 2 changes to overlap, table 1 stops overlapping: both checked again.
        let changed = [
            " table=1, priority=5,in_port=1 actions=drop",
            " table=1, priority=5,in_port=3,ip actions=output:1",
            " table=2, priority=5,in_port=1 actions=drop",
            " table=2, priority=5,in_port=1,tcp actions=output:1",
        ];
        let s = scan_of(&changed);
        let (r, counts) = check(&s);
        assert_eq!(r, (vec![false, false, true, true], false));
        assert_eq!(counts, (2, 0));
        // One flow more in table 1: only that group is checked.
        let mut more = changed.to_vec();
        more.push(" table=1, priority=5,in_port=3 actions=drop");
        let s = scan_of(&more);
        let (r, counts) = check(&s);
        assert_eq!(r, (vec![false, true, true, true, true], false));
        assert_eq!(counts, (1, 1));
    }

    #[test]
    fn budget_is_reported() {
        let lines: Vec<String> = (0..40)
            .map(|i| format!(" priority=1,reg{}=1 actions=drop", i % 16))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let s = store_of(&refs);
        let mut budget = 10;
        let (_, ex) = overlapping(&s.records, &s.text, &mut budget, None);
        assert!(ex);
        assert_eq!(budget, 0);
    }
}
