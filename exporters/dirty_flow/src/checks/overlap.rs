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
//! and are skipped. A comparison budget bounds the worst case; when it runs out the result is
//! flagged incomplete rather than taking unbounded time.

use std::collections::HashMap;

use crate::parse::fields::{expand_match, matches_overlap, FieldMatch};

use super::{Arena, Record};

/// Pairwise comparisons allowed per bridge.
pub const DEFAULT_BUDGET: u64 = 50_000_000;

/// Sets at most this large are compared pairwise.
const SMALL: usize = 12;

struct Ctx<'a, 'b> {
    fields: &'b [Vec<FieldMatch<'a>>],
    dirty: &'b mut [bool],
    budget: u64,
    exhausted: bool,
}

impl Ctx<'_, '_> {
    fn compare(&mut self, i: usize, j: usize) {
        if self.dirty[i] && self.dirty[j] {
            return;
        }
        if self.budget == 0 {
            self.exhausted = true;
            return;
        }
        self.budget -= 1;
        if matches_overlap(&self.fields[i], &self.fields[j]) {
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

    fn split(&mut self, set: Vec<usize>) {
        if self.exhausted {
            return;
        }
        if set.len() <= SMALL {
            self.pairwise(&set);
            return;
        }
        // Field -> (flows constraining it, AND of their masks).
        let mut freq: HashMap<(&str, bool), (usize, u128)> = HashMap::new();
        for &i in &set {
            for f in &self.fields[i] {
                let e = freq.entry((f.field, f.opaque)).or_insert((0, u128::MAX));
                e.0 += 1;
                e.1 &= f.mask;
            }
        }
        let mut cands: Vec<_> = freq.into_iter().filter(|(_, (_, m))| *m != 0).collect();
        cands.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
        for ((field, opaque), (_, mask)) in cands.into_iter().take(6) {
            let mut buckets: HashMap<u128, Vec<usize>> = HashMap::new();
            let mut wild = Vec::new();
            let mut constrained = Vec::new();
            for &i in &set {
                match self.fields[i]
                    .iter()
                    .find(|f| f.field == field && f.opaque == opaque)
                {
                    Some(f) => {
                        buckets.entry(f.value & mask).or_default().push(i);
                        constrained.push(i);
                    }
                    None => wild.push(i),
                }
            }
            if buckets.len() < 2 {
                continue;
            }
            self.cross(&wild, &constrained);
            self.split(wild);
            for (_, b) in buckets {
                self.split(b);
            }
            return;
        }
        // No field separates the flows.
        self.pairwise(&set);
    }
}

/// Finds overlapping flows. `text` is the arena the records point into. Returns the dirty flag
/// per record and whether the budget ran out.
pub fn overlapping(records: &[Record], text: &Arena, budget: u64) -> (Vec<bool>, bool) {
    let mut dirty = vec![false; records.len()];
    let mut order: Vec<usize> = (0..records.len())
        .filter(|&i| !records[i].conjunction_only())
        .collect();
    order.sort_by_key(|&i| (records[i].table, records[i].priority));
    let mut exhausted = false;
    let mut left = budget;
    for group in order.chunk_by(|&a, &b| {
        (records[a].table, records[a].priority) == (records[b].table, records[b].priority)
    }) {
        if group.len() < 2 {
            continue;
        }
        let fields: Vec<Vec<FieldMatch<'_>>> = group
            .iter()
            .map(|&i| {
                let mut v = Vec::new();
                expand_match(records[i].match_text(text), &mut v);
                v
            })
            .collect();
        let mut local = vec![false; group.len()];
        let mut ctx = Ctx {
            fields: &fields,
            dirty: &mut local,
            budget: left,
            exhausted: false,
        };
        ctx.split((0..group.len()).collect());
        left = ctx.budget;
        exhausted |= ctx.exhausted;
        for (k, &i) in group.iter().enumerate() {
            dirty[i] |= local[k];
        }
        if exhausted {
            break;
        }
    }
    (dirty, exhausted)
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
