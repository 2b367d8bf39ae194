//! `missing_group`, `group_bucket_missing_port` and `missing_meter`: flows and groups that send
//! packets to a group, a port or a meter the bridge does not have, so the traffic is dropped
//! without a trace.
//!
//! The flow side is noted while the dump streams ([`FlowRefs`]: per group or meter id, how many
//! flows name it and the first of them); the group and meter side comes from `ovs-ofctl
//! dump-groups` / `dump-meters`, run concurrently with the flow dump ([`parse_groups`],
//! [`parse_meters`]). [`judge`] puts them together once both are in.
//!
//! OVS refuses a flow to a group or meter that does not exist and deletes a group's or meter's
//! flows with it, so a flow naming a missing one is either real (an older OVS, a datapath that
//! lost them) or a race (deleted between the two dumps). Such findings are candidates
//! ([`Judged::candidates`]) that the collector confirms after the dumps (the flow still there,
//! the group or meter still absent) before counting them; what it cannot confirm makes the check
//! incomplete, never a finding. A group's bucket naming a missing group or port is read from
//! one dump and needs no confirmation.

use std::collections::{BTreeMap, HashSet};

use super::{evidence_text, match_hash, CheckOutcome, Evidence, Ports};
use crate::parse::actions::{for_each_port_ref, split_top, ActionIter, PortRef};
use crate::parse::find::Needle;
use crate::parse::Flow;

/// Distinct group (or meter) ids whose flows are kept track of; more make the check incomplete.
pub const MAX_IDS: usize = 100_000;

/// The first flow naming an id, and how many do. Its text is not kept (ids are many, missing
/// ones rare): a confirming dump of its table finds it again by `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstFlow {
    pub flows: u64,
    pub table: String,
    pub priority: u16,
    pub cookie: u64,
    /// [`match_hash`] of the flow without counters.
    pub hash: u64,
}

/// What the flows of a dump name: groups and meters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowRefs {
    pub groups: BTreeMap<u32, FirstFlow>,
    pub meters: BTreeMap<u32, FirstFlow>,
    /// More than [`MAX_IDS`] distinct ids: some were not kept.
    pub overflow: bool,
}

static GROUP: Needle = Needle::new(b"group:");
static METER: Needle = Needle::new(b"meter:");

/// A reference to a group or a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ref {
    Group(u32),
    Meter(u32),
}

/// A group or meter id as printed (decimal, or hex with `0x`).
fn id(s: &str) -> Option<u32> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Calls `f` with every `group:N` and `meter:N` of the actions, also inside `clone(...)`,
/// `write_actions(...)` and `apply_actions(...)` (nesting is capped by the parser).
pub fn for_each_ref<'a>(
    actions: impl Iterator<Item = crate::parse::actions::Action<'a>>,
    f: &mut dyn FnMut(Ref),
) {
    for a in actions {
        match (a.name, a.arg) {
            ("group", Some(arg)) if !a.parens => id(arg).map(|n| f(Ref::Group(n))).unwrap_or(()),
            ("meter", Some(arg)) if !a.parens => id(arg).map(|n| f(Ref::Meter(n))).unwrap_or(()),
            ("clone" | "write_actions" | "apply_actions", Some(arg)) if a.parens => {
                for_each_ref(ActionIter::new(arg), f);
            }
            _ => {}
        }
    }
}

impl FlowRefs {
    /// Notes the groups and meters `flow` names (one substring search for flows that name
    /// none).
    pub fn note(&mut self, flow: &Flow<'_>) {
        let b = flow.actions_text.as_bytes();
        if !GROUP.is_in(b) && !METER.is_in(b) {
            return;
        }
        let mut refs = Vec::new();
        for_each_ref(flow.actions(), &mut |r| refs.push(r));
        for r in refs {
            let (map, n) = match r {
                Ref::Group(n) => (&mut self.groups, n),
                Ref::Meter(n) => (&mut self.meters, n),
            };
            if let Some(seen) = map.get_mut(&n) {
                seen.flows += 1;
            } else if map.len() < MAX_IDS {
                map.insert(
                    n,
                    FirstFlow {
                        flows: 1,
                        table: flow.table.to_string(),
                        priority: flow.priority,
                        cookie: flow.cookie,
                        hash: match_hash(flow.text),
                    },
                );
            } else {
                self.overflow = true;
            }
        }
    }
}

/// One group as `ovs-ofctl dump-groups` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: u32,
    /// Where the whole line is in [`Groups::raw`] (for evidence).
    pub span: (usize, usize),
    /// Ports the buckets send to or watch (`output:N`, `watch_port:N`, ...).
    pub ports: Vec<PortRef>,
    /// Groups the buckets chain to (`group:N`, `watch_group:N`).
    pub groups: Vec<u32>,
}

/// The groups of a bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    pub ids: HashSet<u32>,
    pub list: Vec<Group>,
    /// The output the groups were parsed from (their text, held once).
    pub raw: String,
}

impl Groups {
    /// The line of a group, as `dump-groups` printed it.
    pub fn text(&self, g: &Group) -> &str {
        self.raw.get(g.span.0..g.span.1).unwrap_or("")
    }
}

/// Whether `line` is the reply header of `kind` (`GROUP_DESC`, `METER_CONFIG`).
fn is_header(line: &str, kind: &str) -> bool {
    let rest = line
        .strip_prefix("OFPST_")
        .or_else(|| line.strip_prefix("NXST_"));
    rest.and_then(|r| r.strip_prefix(kind))
        .is_some_and(|r| r.starts_with(" reply ") && r.contains("(xid="))
}

fn shown(line: &str) -> String {
    line.chars().take(120).collect()
}

/// Parses `ovs-ofctl dump-groups` output (kept as the groups' text). Anything but reply
/// headers and group lines is an error, and so is output without a reply header.
pub fn parse_groups(out: String) -> Result<Groups, String> {
    let mut list = Vec::new();
    let mut ids = HashSet::new();
    let mut replies = 0;
    for line in out.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if is_header(line, "GROUP_DESC") {
            replies += 1;
            continue;
        }
        let Some(rest) = line
            .strip_prefix(' ')
            .filter(|r| r.starts_with("group_id="))
        else {
            return Err(format!("unexpected dump-groups line {:?}", shown(line)));
        };
        if replies == 0 {
            return Err("dump-groups printed a group before any reply header".into());
        }
        let mut g =
            parse_group(rest).ok_or_else(|| format!("malformed group {:?}", shown(line)))?;
        // `rest` is a subslice of `out`.
        let start = rest.as_ptr() as usize - out.as_ptr() as usize;
        g.span = (start, start + rest.trim_end().len());
        ids.insert(g.id);
        list.push(g);
    }
    if replies == 0 {
        return Err("dump-groups printed no reply header".into());
    }
    Ok(Groups {
        ids,
        list,
        raw: out,
    })
}

/// One group line: `group_id=N,type=T,bucket=bucket_id:0,watch_port:2,actions=output:2,...`.
fn parse_group(line: &str) -> Option<Group> {
    let line = line.trim_end();
    crate::parse::actions::validate_actions(line).ok()?;
    let mut tokens = split_top(line);
    let gid = id(tokens.next()?.strip_prefix("group_id=")?)?;
    let mut g = Group {
        id: gid,
        span: (0, 0),
        ports: Vec::new(),
        groups: Vec::new(),
    };
    let mut in_actions = false;
    for t in tokens {
        let t = match t.strip_prefix("bucket=") {
            Some(rest) => {
                in_actions = false;
                rest
            }
            None => t,
        };
        let t = match t.strip_prefix("actions=") {
            Some(rest) => {
                in_actions = true;
                rest
            }
            None => t,
        };
        if in_actions {
            let mut ports = |p| g.ports.push(p);
            for_each_port_ref(ActionIter::new(t), &mut ports);
            for_each_ref(ActionIter::new(t), &mut |r| {
                if let Ref::Group(n) = r {
                    g.groups.push(n);
                }
            });
        } else if let Some(p) = t.strip_prefix("watch_port:") {
            if let Some(p) = crate::parse::actions::port_number(p) {
                g.ports.push(p);
            }
        } else if let Some(n) = t.strip_prefix("watch_group:") {
            g.groups.extend(id(n));
        }
    }
    g.ports.sort_unstable_by_key(|p| match p {
        PortRef::Number(n) => (0, *n),
        PortRef::Name(_) => (1, 0),
    });
    g.ports.dedup();
    g.ports.shrink_to_fit();
    Some(g)
}

/// Parses `ovs-ofctl dump-meters` output into the meter ids: reply headers, `meter=N ...` lines
/// and their band lines (`type=drop rate=...`); anything else, or no header, is an error.
pub fn parse_meters(out: &str) -> Result<HashSet<u32>, String> {
    let mut ids = HashSet::new();
    let mut replies = 0;
    for line in out.lines() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        if is_header(line, "METER_CONFIG") {
            replies += 1;
            continue;
        }
        if replies == 0 {
            return Err(format!("unexpected dump-meters line {:?}", shown(line)));
        }
        if let Some(rest) = l.strip_prefix("meter=") {
            let n = rest.split([' ', ',']).next().and_then(id);
            ids.insert(n.ok_or_else(|| format!("malformed meter {:?}", shown(line)))?);
        } else if !(l.starts_with("type=") || l.starts_with("bands=")) {
            return Err(format!("unexpected dump-meters line {:?}", shown(line)));
        }
    }
    if replies == 0 {
        return Err("dump-meters printed no reply header".into());
    }
    Ok(ids)
}

/// A flow that names a group or meter missing from the dump, to be confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub check: &'static str,
    pub id: u32,
    pub flow: FirstFlow,
}

impl Candidate {
    /// The evidence for it once confirmed, with the flow's text as found again.
    pub fn evidence(&self, text: &str) -> Evidence {
        Evidence {
            table: self.flow.table.clone(),
            priority: self.flow.priority,
            cookie: self.flow.cookie,
            flow: evidence_text(text),
            fetch: None,
        }
    }
}

/// What [`judge`] could decide from the dumps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judged {
    /// Decided checks (0 included).
    pub checks: Vec<CheckOutcome>,
    /// Checks that could not be decided (their input failed), with why.
    pub unknown: Vec<(&'static str, String)>,
    /// Flows naming a missing group or meter: findings only once confirmed.
    pub candidates: Vec<Candidate>,
}

pub const MISSING_GROUP: &str = "missing_group";
pub const BUCKET_MISSING_PORT: &str = "group_bucket_missing_port";
pub const MISSING_METER: &str = "missing_meter";

fn outcome(name: &str) -> CheckOutcome {
    CheckOutcome::new(name)
}

fn group_evidence(groups: &Groups, g: &Group) -> Evidence {
    Evidence {
        table: String::new(),
        priority: 0,
        cookie: 0,
        flow: evidence_text(groups.text(g)),
        fetch: None,
    }
}

/// Puts the flows' references and the group and meter dumps together. `ports`: the bridge's
/// working ports (None when the database could not be read).
pub fn judge(
    refs: &FlowRefs,
    groups: Result<&Groups, &str>,
    meters: Result<&HashSet<u32>, &str>,
    ports: Option<&Ports>,
    limit: usize,
) -> Judged {
    let mut j = Judged::default();
    match groups {
        Ok(groups) => {
            let mut missing = outcome(MISSING_GROUP);
            missing.incomplete = refs.overflow;
            for g in &groups.list {
                if g.groups.iter().any(|n| !groups.ids.contains(n)) {
                    missing.dirty += 1;
                    if missing.evidence.len() < limit {
                        missing.evidence.push(group_evidence(groups, g));
                    }
                }
            }
            for (id, f) in &refs.groups {
                if !groups.ids.contains(id) {
                    j.candidates.push(Candidate {
                        check: MISSING_GROUP,
                        id: *id,
                        flow: f.clone(),
                    });
                }
            }
            j.checks.push(missing);
            match ports {
                Some(ports) => {
                    let mut bucket = outcome(BUCKET_MISSING_PORT);
                    for g in &groups.list {
                        if g.ports.iter().any(|p| !ports.has(p)) {
                            bucket.dirty += 1;
                            if bucket.evidence.len() < limit {
                                bucket.evidence.push(group_evidence(groups, g));
                            }
                        }
                    }
                    j.checks.push(bucket);
                }
                None => j
                    .unknown
                    .push((BUCKET_MISSING_PORT, "the ports are unknown".into())),
            }
        }
        Err(e) => {
            j.unknown.push((MISSING_GROUP, e.to_string()));
            j.unknown.push((BUCKET_MISSING_PORT, e.to_string()));
        }
    }
    match meters {
        Ok(meters) => {
            let mut missing = outcome(MISSING_METER);
            missing.incomplete = refs.overflow;
            for (id, f) in &refs.meters {
                if !meters.contains(id) {
                    j.candidates.push(Candidate {
                        check: MISSING_METER,
                        id: *id,
                        flow: f.clone(),
                    });
                }
            }
            j.checks.push(missing);
        }
        // No flow names a meter: nothing to judge, whatever the meter dump says (a bridge
        // whose OpenFlow version has no meters cannot have flows that name one).
        Err(_) if refs.meters.is_empty() && !refs.overflow => {
            j.checks.push(outcome(MISSING_METER));
        }
        Err(e) => j.unknown.push((MISSING_METER, e.to_string())),
    }
    j
}

/// Counts a confirmed candidate (its flow found again as `text`) in its check.
pub fn confirm(j: &mut Judged, c: &Candidate, text: &str, limit: usize) {
    if let Some(o) = j.checks.iter_mut().find(|o| o.name == c.check) {
        o.dirty += c.flow.flows;
        if o.evidence.len() < limit {
            o.evidence.push(c.evidence(text));
        }
    }
}

/// Marks the check of a candidate that could not be confirmed (a race between the dumps, or a
/// failed confirmation) incomplete.
pub fn unconfirmed(j: &mut Judged, c: &Candidate) {
    if let Some(o) = j.checks.iter_mut().find(|o| o.name == c.check) {
        o.incomplete = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::missing_port::iface;
    use crate::parse::{parse_line, Line};

    /// As ovs-ofctl 3.1 printed them on a sandbox bridge (`-O OpenFlow10,...,OpenFlow15`).
    const GROUPS: &str = "OFPST_GROUP_DESC reply (OF1.5) (xid=0x2):
 group_id=9,type=select,bucket=bucket_id:0,watch_port:5,actions=output:5,bucket=bucket_id:1,actions=output:99
 group_id=10,type=ff,bucket=bucket_id:0,watch_port:2,actions=output:2,bucket=bucket_id:1,watch_port:3,actions=group:7
 group_id=11,type=all,bucket=bucket_id:0,actions=set_field:1->reg0,clone(output:1),output:2
";
    const METERS: &str = "OFPST_METER_CONFIG reply (OF1.5) (xid=0x2):
meter=3 kbps bands=
type=drop rate=100
";

    fn refs(lines: &[&str]) -> FlowRefs {
        let mut r = FlowRefs::default();
        for l in lines {
            match parse_line(l) {
                Ok(Line::Flow(f)) => r.note(&f),
                other => panic!("{l}: {other:?}"),
            }
        }
        r
    }

    #[test]
    fn groups_and_meters_parse_as_ovs_prints_them() {
        let g = parse_groups(GROUPS.to_string()).unwrap();
        assert_eq!(g.ids, HashSet::from([9, 10, 11]));
        use PortRef::Number as N;
        assert!(g.text(&g.list[2]).starts_with("group_id=11,type=all,"));
        assert!(g.text(&g.list[2]).ends_with("output:2"));
        assert_eq!(g.list[0].ports, vec![N(5), N(99)]);
        assert_eq!(g.list[1].ports, vec![N(2), N(3)]);
        assert_eq!(g.list[1].groups, vec![7]);
        assert_eq!(g.list[2].ports, vec![N(1), N(2)]);
        // OpenFlow 1.0's Nicira reply.
        let nx = GROUPS.replace("OFPST_GROUP_DESC reply (OF1.5)", "NXST_GROUP_DESC reply");
        assert_eq!(parse_groups(nx).unwrap().ids.len(), 3);
        assert_eq!(parse_meters(METERS).unwrap(), HashSet::from([3]));
        let empty = "OFPST_METER_CONFIG reply (OF1.3) (xid=0x2):\n";
        assert!(parse_meters(empty).unwrap().is_empty());
    }

    #[test]
    fn garbage_and_missing_headers_are_errors() {
        for bad in [
            "",
            "ovs-ofctl: br0 is not a bridge",
            " group_id=1,type=all,bucket=actions=output:1\n",
            "OFPST_GROUP_DESC reply (OF1.5) (xid=0x2):\n garbage\n",
            "OFPST_GROUP_DESC reply (OF1.5) (xid=0x2):\n group_id=x,type=all\n",
            "OFPST_GROUP_DESC reply (OF1.5) (xid=0x2):\n group_id=1,bucket=actions=clone(output:1\n",
            "OFPST_FLOW reply (OF1.5) (xid=0x2):\n",
        ] {
            assert!(parse_groups(bad.to_string()).is_err(), "{bad:?}");
        }
        for bad in [
            "",
            "meter=1 kbps bands=\n",
            "OFPST_METER_CONFIG reply (OF1.3) (xid=0x2):\nmeter=zz\n",
            "OFPST_METER_CONFIG reply (OF1.3) (xid=0x2):\njunk\n",
        ] {
            assert!(parse_meters(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flows_name_groups_and_meters_also_nested() {
        let r = refs(&[
            " table=0, priority=1 actions=group:7",
            " table=0, priority=2,ip actions=meter:3,clone(group:9),write_actions(group:0x7)",
            " table=1, priority=3 actions=output:1,note:67726f75703a37",
            " table=1, priority=4 actions=learn(table=2,output:NXM_OF_IN_PORT[])",
        ]);
        assert_eq!(r.groups.keys().copied().collect::<Vec<_>>(), vec![7, 9]);
        assert_eq!(r.groups[&7].flows, 2);
        assert_eq!(r.groups[&7].hash, match_hash("priority=1 actions=group:7"));
        assert_eq!(r.meters.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(
            (r.meters[&3].table.as_str(), r.meters[&3].priority),
            ("0", 2)
        );
    }

    #[test]
    fn mutated_group_and_meter_output_never_panics() {
        // Seeded (xorshift), bounded: a failure reproduces.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n.max(1) as u64) as usize
        };
        let alphabet = b" ,=():_-0x9gbucket_idwatch_port:actions=group:meter=\n\t";
        let (mut ok, mut bad) = (0, 0);
        for i in 0..10_000 {
            let seed = if i % 2 == 0 { GROUPS } else { METERS };
            let mut b = seed.as_bytes().to_vec();
            for _ in 0..1 + next(5) {
                let at = next(b.len() + 1);
                match next(4) {
                    0 if at < b.len() => b[at] = alphabet[next(alphabet.len())],
                    1 if at < b.len() => {
                        b.remove(at);
                    }
                    2 => b.splice(at..at, b"clone(".repeat(next(400))).for_each(drop),
                    _ => b.insert(at, alphabet[next(alphabet.len())]),
                }
            }
            let text = String::from_utf8_lossy(&b);
            let parsed = if i % 2 == 0 {
                parse_groups(text.into_owned()).is_ok()
            } else {
                parse_meters(&text).is_ok()
            };
            if parsed {
                ok += 1;
            } else {
                bad += 1;
            }
        }
        assert!(ok > 500 && bad > 500, "ok {ok}, bad {bad}");
    }

    #[test]
    fn judged_from_the_dumps() {
        let r = refs(&[
            " table=0, priority=1 actions=group:9",
            " table=0, priority=2 actions=group:8",
            " table=0, priority=3 actions=meter:3,output:1",
            " table=0, priority=4 actions=meter:4,output:1",
        ]);
        let groups = parse_groups(GROUPS.to_string()).unwrap();
        let meters = parse_meters(METERS).unwrap();
        let ports = Ports::new(&[
            iface("p1", 1),
            iface("p2", 2),
            iface("p3", 3),
            iface("p5", 5),
        ]);
        let j = judge(&r, Ok(&groups), Ok(&meters), Some(&ports), 5);
        let get = |n: &str| j.checks.iter().find(|c| c.name == n).unwrap();
        // Group 10 chains to group 7, which does not exist; group 9 outputs to port 99.
        assert_eq!(get(MISSING_GROUP).dirty, 1);
        assert!(get(MISSING_GROUP).evidence[0]
            .flow
            .starts_with("group_id=10,"));
        assert_eq!(get(BUCKET_MISSING_PORT).dirty, 1);
        assert!(get(BUCKET_MISSING_PORT).evidence[0]
            .flow
            .starts_with("group_id=9,"));
        assert_eq!(get(MISSING_METER).dirty, 0);
        // The flows to group 8 and meter 4 wait for confirmation.
        let c: Vec<_> = j.candidates.iter().map(|c| (c.check, c.id)).collect();
        assert_eq!(c, vec![(MISSING_GROUP, 8), (MISSING_METER, 4)]);
        let mut confirmed = j.clone();
        confirm(
            &mut confirmed,
            &j.candidates[0],
            "priority=2 actions=group:8",
            5,
        );
        unconfirmed(&mut confirmed, &j.candidates[1]);
        let get = |n: &str| {
            confirmed
                .checks
                .iter()
                .find(|c| c.name == n)
                .unwrap()
                .clone()
        };
        assert_eq!(get(MISSING_GROUP).dirty, 2);
        assert_eq!(
            get(MISSING_GROUP).evidence[1].flow,
            "priority=2 actions=group:8"
        );
        assert_eq!(
            (get(MISSING_METER).dirty, get(MISSING_METER).incomplete),
            (0, true)
        );

        // A failed group dump or unknown ports: those checks are unknown, never 0.
        let j = judge(&r, Err("boom"), Ok(&meters), None, 5);
        let unknown: Vec<_> = j.unknown.iter().map(|u| u.0).collect();
        assert_eq!(unknown, vec![MISSING_GROUP, BUCKET_MISSING_PORT]);
        assert_eq!(j.checks.len(), 1);
        let j = judge(&r, Ok(&groups), Err("no meters"), None, 5);
        let unknown: Vec<_> = j.unknown.iter().map(|u| u.0).collect();
        assert_eq!(unknown, vec![BUCKET_MISSING_PORT, MISSING_METER]);
        // Meters unsupported and no flow naming one: missing_meter is 0.
        let none = refs(&[" table=0, priority=1 actions=group:9"]);
        let j = judge(&none, Ok(&groups), Err("no meters"), Some(&ports), 5);
        assert!(j
            .checks
            .iter()
            .any(|c| c.name == MISSING_METER && c.dirty == 0));
    }
}
