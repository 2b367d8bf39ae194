//! `overlap`: two flows in one table at the same priority whose matches can both match one
//! packet. OpenFlow leaves the winner undefined, so the behaviour depends on insertion order.
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

use super::{Arena, Record};

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
        if matches_overlap(self.of(i), self.of(j)) {
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

/// Finds overlapping flows. `text` is the arena the records point into. Returns the dirty flag
/// per record and whether the budget ran out.
pub fn overlapping(records: &[Record], text: &Arena, budget: u64) -> (Vec<bool>, bool) {
    // (table, priority, index) packed in one integer: an unstable sort of unique keys is
    // deterministic and cheap.
    let mut order: Vec<u64> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.conjunction_only())
        .map(|(i, r)| (u64::from(r.table) << 48) | (u64::from(r.priority) << 32) | i as u64)
        .collect();
    order.sort_unstable();
    let groups: Vec<&[u64]> = order
        .chunk_by(|a, b| a >> 32 == b >> 32)
        .filter(|g| g.len() > 1)
        .collect();
    let pool = AtomicU64::new(budget);
    let mut dirty = vec![false; records.len()];
    let total: usize = groups.iter().map(|g| g.len()).sum();
    let exhausted = if total < PARALLEL_FLOWS {
        check_groups(&groups, records, text, &pool, &mut dirty)
    } else {
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
        let mut dirty2 = vec![false; records.len()];
        let (ex1, ex2) = std::thread::scope(|s| {
            let other = s.spawn(|| check_groups(second, records, text, &pool, &mut dirty2));
            let ex1 = check_groups(first, records, text, &pool, &mut dirty);
            // A panic in the other half is re-raised here (the framework contains it).
            let ex2 = other
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (ex1, ex2)
        });
        for (d, d2) in dirty.iter_mut().zip(dirty2) {
            *d |= d2;
        }
        ex1 || ex2
    };
    (dirty, exhausted)
}

/// Checks each (table, priority) group of flows (record indices in the low 32 bits); sets
/// `dirty` for the overlapping ones. Returns whether the budget ran out.
fn check_groups(
    groups: &[&[u64]],
    records: &[Record],
    text: &Arena,
    pool: &AtomicU64,
    dirty: &mut [bool],
) -> bool {
    let index_of = |k: &u64| (k & 0xffff_ffff) as usize;
    let (mut fields, mut offs, mut one, mut local) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ctx_budget = 0;
    for group in groups {
        fields.clear();
        offs.clear();
        offs.push(0);
        for k in group.iter() {
            expand_match(records[index_of(k)].match_text(text), &mut one);
            fields.extend_from_slice(&one);
            offs.push(fields.len());
        }
        local.clear();
        local.resize(group.len(), false);
        let mut ctx = Ctx {
            fields: &fields,
            offs: &offs,
            dirty: &mut local,
            budget: ctx_budget,
            pool,
            exhausted: false,
        };
        let all: Vec<usize> = (0..group.len()).collect();
        ctx.split(&all);
        ctx_budget = ctx.budget;
        let exhausted = ctx.exhausted;
        for (k, &d) in group.iter().zip(&local) {
            dirty[index_of(k)] |= d;
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
    use crate::checks::BridgeScan;
    use crate::config::Config;

    fn run(lines: &[&str]) -> Vec<bool> {
        let cfg = Config::default();
        let mut scan = BridgeScan::new(&cfg, None, 5);
        for l in lines {
            scan.feed_line(l).unwrap();
        }
        let (d, ex) = overlapping(&scan.records, &scan.text, DEFAULT_BUDGET);
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
        assert_eq!(
            d,
            vec![true, true, false, false, false, false, false, false]
        );
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
    fn budget_is_reported() {
        let cfg = Config::default();
        let mut scan = BridgeScan::new(&cfg, None, 5);
        for i in 0..40 {
            scan.feed_line(&format!(" priority=1,reg{}=1 actions=drop", i % 16))
                .unwrap();
        }
        let (_, ex) = overlapping(&scan.records, &scan.text, 10);
        assert!(ex);
    }
}
