//! Which packets can reach a table, and in which connection tracking state, for `overlap`:
//! a pair that only a tracked packet can match (`ct_state=+inv+trk` against OVN's neighbour
//! discovery flow) counts only if some tracked packet of the pair's match reaches its table,
//! and two flows that differ only by a leading `ct_clear` count only if something after them
//! reads the conntrack state of such a packet.
//!
//! While the dump streams, [`Kept`] copies the flows that can matter (a jump, `ct`,
//! `ct_clear`, a group, `controller`, or a match on `ct_*`: a third of the benchmark's flows,
//! nothing else is parsed) and notes which `ct_label`/`ct_mark` bits any flow or group bucket
//! writes. Only when the overlap check left such pairs ([`Kept::analysis`], at the end of the
//! dump) are they parsed into a graph of jumps, over which two searches run:
//!
//! - [`Analysis::reach`], backwards from the pair's table: a packet satisfying constraints K
//!   reaches table T if some flow F jumping to T takes it: F's match and K (undone through what
//!   F writes before the jump) can hold together, no flow of F's table at a higher priority
//!   whose match holds for every such packet wins over F, and the packet reaches F's table in
//!   turn. A packet enters the bridge at table 0 with registers, metadata and conntrack state
//!   zero (from a port, a patch port or a tunnel); `ct(table=N)` gives the packet at N a
//!   conntrack state (`trk` set, the labels and marks some flow or bucket can write), `ct` and
//!   `ct_clear` clear it for the actions after them (OVS's `compose_conntrack_action`).
//!   Two things keep the number of questions down: a forward pass ([`may_be_one`]) first
//!   finds, per table and per datapath (`metadata`), which register bits may be 1 and whether
//!   the packet may be tracked there, and a question needing more stops at once; and each
//!   search runs roughly first, without the Ethernet addresses (one flow per port in OVN's
//!   port security tables), and again with them only when the rough one finds a way.
//! - [`Analysis::reads_ct_after`], forwards from the pair's jumps: whether a flow the packet
//!   can take next (checked with [`Analysis::reach`]) matches a `ct_*` field, runs `ct`, sends
//!   to the controller or to a group whose buckets are unknown, before a `ct_clear`.
//!
//! What a controller does is not seen: packets it injects (packet-out) and what it changes in
//! a packet it pauses (`controller(pause)`) before it resumes it ([`Resume`]). OVS resumes
//! the actions after the pause on the packet and metadata the controller sends back, with
//! the conntrack state the packet had (`xlate_resume` restores `conntracked` and the `ct_*`
//! fields from the continuation). What the controller changes depends on the controller, so
//! by default nothing is assumed of the packet after a pause. On a bridge of OVN
//! ([`Resume::Ovn`]), the paused actions are ovn-controller's (`pinctrl.c`): `put_dhcp_opts`,
//! `put_dhcpv6_opts`, `dns_lookup`, `put_nd_ra_opts`, the DHCP relay checks, the ICMP error's
//! inner source, and packets held until a MAC binding is learned; each rewrites the payload
//! (and some the Ethernet and IP addresses, the ICMPv6 type: a router solicitation becomes an
//! advertisement), writes a result bit into a register or a flag, and leaves the Ethernet
//! type, the IP protocol, the input port and the conntrack state as they were. So after a
//! pause on OVN a tracked UDP packet (a DHCP request) stays a tracked UDP packet: it cannot
//! match a flow for neighbour discovery (ICMPv6). NAT (`ct(nat)`) rewrites addresses and ports, except of ICMPv6 neighbour discovery and MLD
//! messages (types 130 to 136 and 143), which conntrack never tracks as a connection. Group
//! buckets are read from `dump-groups` ([`Kept::set_groups`]); without them a flow sending to a
//! group may reach any table in any state. Each search has a step budget; past it, or when a
//! search comes back to where it is, the answer is "reachable" (the pair counts).

use std::collections::HashMap;

use crate::parse::find::Needle;

use crate::parse::actions::ActionIter;
use crate::parse::fields::{expand_match, merge_sorted, FieldMatch};

use super::pipeline::{field_bits, number, per_reg, range_mask};

/// Bytes of flow text kept at most per bridge; past it the searches are off (pairs count).
const MAX_KEPT_BYTES: usize = 64 << 20;

/// Steps (flows looked at) one search may take.
const STEP_BUDGET: u64 = 20_000;

/// Steps all the searches of one dump may take; past it, the pairs left count.
const TOTAL_BUDGET: u64 = 1_000_000;

/// Jump targets deeper than this: the search stops (reachable).
const MAX_DEPTH: usize = 48;

/// A table number no flow has: a jump that may go anywhere (a group whose buckets are unknown).
const ANY: u16 = u16::MAX;

/// What the bridge's controller may change in a packet it pauses (`controller(pause)`) and
/// resumes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    /// Anything: nothing is assumed of the packet after a pause (a controller not known).
    #[default]
    Anything,
    /// ovn-controller: everything but the Ethernet type, the IP protocol, the input port and
    /// the conntrack state ([`KEPT_BY_OVN`]).
    Ovn,
}

/// The fields ovn-controller leaves as they were in a packet it resumes (besides `ct_*`).
const KEPT_BY_OVN: [&str; 3] = ["dl_type", "nw_proto", "in_port"];

const REGS: [&str; 16] = [
    "reg0", "reg1", "reg2", "reg3", "reg4", "reg5", "reg6", "reg7", "reg8", "reg9", "reg10",
    "reg11", "reg12", "reg13", "reg14", "reg15",
];

/// Header fields a write is told apart for (by their match names).
const HEADERS: [&str; 26] = [
    "in_port",
    "dl_src",
    "dl_dst",
    "dl_type",
    "vlan_tci",
    "nw_src",
    "nw_dst",
    "ipv6_src",
    "ipv6_dst",
    "nw_proto",
    "nw_ttl",
    "nw_tos",
    "nw_ecn",
    "tp_src",
    "tp_dst",
    "arp_spa",
    "arp_tpa",
    "arp_sha",
    "arp_tha",
    "arp_op",
    "pkt_mark",
    "tun_id",
    "nd_target",
    "nd_sll",
    "nd_tll",
    "ipv6_label",
];

/// The [`HEADERS`] index of a field as actions name it (`eth_src`, `NXM_OF_ETH_SRC[]`,
/// `NXM_NX_IP_TTL[]`...).
fn header_of(name: &str) -> Option<u8> {
    let name = name.trim();
    let name = name.split('[').next().unwrap_or(name).to_ascii_lowercase();
    let bare = ["nxm_of_", "nxm_nx_", "oxm_of_"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(&name);
    let canon = match bare {
        "ip_ttl" => "nw_ttl",
        "ip_tos" => "nw_tos",
        "vlan_vid" | "vlan_pcp" => "vlan_tci",
        "arp_op" => "arp_op",
        other => crate::parse::fields::canonical(other),
    };
    HEADERS.iter().position(|&h| h == canon).map(|i| i as u8)
}

/// The header an action writes by itself (`mod_dl_src:...`, `dec_ttl`, `strip_vlan`...).
fn header_action(name: &str) -> Option<u8> {
    let field = match name {
        "mod_dl_src" => "dl_src",
        "mod_dl_dst" => "dl_dst",
        "mod_nw_src" => "nw_src",
        "mod_nw_dst" => "nw_dst",
        "mod_tp_src" => "tp_src",
        "mod_tp_dst" => "tp_dst",
        "mod_nw_tos" => "nw_tos",
        "mod_nw_ecn" => "nw_ecn",
        "mod_nw_ttl" | "dec_ttl" => "nw_ttl",
        "mod_vlan_vid" | "mod_vlan_pcp" | "strip_vlan" | "pop_vlan" | "push_vlan" => "vlan_tci",
        "set_tunnel" | "set_tunnel64" => "tun_id",
        _ => return None,
    };
    HEADERS.iter().position(|&h| h == field).map(|i| i as u8)
}

/// One kept flow: its table and priority, where its match and actions are in [`Kept::text`],
/// and the hash of its text without counters ([`super::match_hash`]).
#[derive(Debug, Clone, Copy)]
struct KeptFlow {
    table: u16,
    priority: u16,
    hash: u64,
    start: u32,
    match_len: u32,
    actions_len: u32,
}

/// The flows of a bridge that the searches need, and the conntrack bits written.
#[derive(Debug, Default)]
pub struct Kept {
    text: String,
    flows: Vec<KeptFlow>,
    /// More than [`MAX_KEPT_BYTES`]: the searches are off.
    overflow: bool,
    /// Some kept flow sends to a group.
    has_groups: bool,
    /// Per group id, its buckets' action lists (None: not read).
    groups: Option<HashMap<u32, Vec<String>>>,
    /// Bits of `ct_label` and `ct_mark` some flow writes (`ct(commit,exec(...))`); all bits
    /// when a value comes from another field.
    label_bits: u128,
    mark_bits: u128,
}

static CT_FIELD: Needle = Needle::new(b"ct_");
static GROUP_ACTION: Needle = Needle::new(b"group");
static CT_EXEC: Needle = Needle::new(b"exec(");

impl Kept {
    /// Keeps flow `f` of `table` if it can matter: `plain` when all its actions are
    /// [`harmless`]; then only a match on a `ct_*` field makes it matter.
    pub fn add(&mut self, table: u16, f: &crate::parse::Flow<'_>, plain: bool) {
        let (match_text, actions, priority) = (f.match_text, f.actions_text, f.priority);
        if self.overflow || (plain && !CT_FIELD.is_in(match_text.as_bytes())) {
            return;
        }
        let hash = super::match_hash(f.text);
        if self.text.len() + match_text.len() + actions.len() > MAX_KEPT_BYTES {
            self.overflow = true;
            self.text = String::new();
            self.flows = Vec::new();
            return;
        }
        let a = actions.as_bytes();
        if GROUP_ACTION.is_in(a) {
            self.has_groups = true;
        }
        if CT_EXEC.is_in(a) {
            let (l, m) = ct_writes(actions);
            self.label_bits |= l;
            self.mark_bits |= m;
        }
        let start = self.text.len() as u32;
        self.text.push_str(match_text);
        self.text.push_str(actions);
        self.flows.push(KeptFlow {
            table,
            priority,
            hash,
            start,
            match_len: match_text.len() as u32,
            actions_len: actions.len() as u32,
        });
    }

    /// Whether the buckets of the bridge's groups would change an answer: some kept flow
    /// sends to a group and they are not read yet.
    pub fn wants_groups(&self) -> bool {
        self.has_groups && self.groups.is_none() && !self.overflow
    }

    /// Reads the buckets of `ovs-ofctl dump-groups` output (lines
    /// `group_id=N,type=...,bucket=...,actions=A,bucket=...`).
    pub fn set_groups(&mut self, dump: &str) {
        let mut groups = HashMap::new();
        for line in dump.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("group_id=") else {
                continue;
            };
            let id_end = rest.find(',').unwrap_or(rest.len());
            let Ok(id) = rest[..id_end].parse::<u32>() else {
                continue;
            };
            let mut buckets = Vec::new();
            for b in rest.split("bucket=").skip(1) {
                let b = b.trim_end_matches(',');
                if let Some(i) = b.find("actions=") {
                    let actions = &b[i + "actions=".len()..];
                    let (l, m) = ct_writes(actions);
                    self.label_bits |= l;
                    self.mark_bits |= m;
                    buckets.push(actions.to_string());
                }
            }
            groups.insert(id, buckets);
        }
        self.groups = Some(groups);
    }

    /// The graph of the kept flows, parsed, with what the bridge's controller may change in a
    /// packet it pauses; None when the searches are off.
    pub fn analysis(&self, resume: Resume) -> Option<Analysis<'_>> {
        if self.overflow {
            return None;
        }
        let mut flows = Vec::with_capacity(self.flows.len());
        let mut by_hash = HashMap::new();
        for k in &self.flows {
            let s = k.start as usize;
            let m = &self.text[s..s + k.match_len as usize];
            let a =
                &self.text[s + k.match_len as usize..s + (k.match_len + k.actions_len) as usize];
            let mut fields = Vec::new();
            if !expand_match(m, &mut fields) {
                // No packet matches it.
                continue;
            }
            let mut walk = Walk::new(k.table, self.groups.as_ref(), resume);
            let end = walk.actions(a, &State::default(), 0);
            let reads_ct = fields.iter().any(|f| f.field.starts_with("ct_")) || walk.reads_ct;
            by_hash.insert(k.hash, flows.len());
            flows.push(AFlow {
                table: k.table,
                priority: k.priority,
                covers: fields.iter().all(|f| !f.opaque),
                m: fields,
                edges: walk.edges,
                writes: end.writes,
                everything: end.everything,
                reads_ct,
            });
        }
        let mut into: HashMap<u16, Vec<(usize, usize)>> = HashMap::new();
        let mut by_table: HashMap<u16, Vec<usize>> = HashMap::new();
        for (i, f) in flows.iter().enumerate() {
            by_table.entry(f.table).or_default().push(i);
            for (e, edge) in f.edges.iter().enumerate() {
                into.entry(edge.target).or_default().push((i, e));
            }
        }
        for v in by_table.values_mut() {
            v.sort_by(|&a, &b| flows[b].priority.cmp(&flows[a].priority));
        }
        let summaries = summaries(&flows, &by_table);
        let ones = may_be_one(&flows, &summaries);
        Some(Analysis {
            ones,
            summaries,
            flows,
            into,
            by_table,
            by_hash,
            label_bits: self.label_bits,
            mark_bits: self.mark_bits,
            steps: 0,
            total: 0,
            memo: HashMap::new(),
            rough: false,
        })
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.flows.capacity() * std::mem::size_of::<KeptFlow>()
    }
}

/// The `ct_label` and `ct_mark` bits an action list writes inside `ct(...exec(...))`.
fn ct_writes(actions: &str) -> (u128, u128) {
    let (mut label, mut mark) = (0u128, 0u128);
    let mut note = |dst: &str, value_mask: Option<&str>| {
        let d = dst.trim();
        let (name, range) = match d.find('[') {
            Some(i) => (&d[..i], d[i + 1..].strip_suffix(']').unwrap_or("")),
            None => (d, ""),
        };
        let (slot, width) = if name.eq_ignore_ascii_case("ct_label")
            || name.eq_ignore_ascii_case("nxm_nx_ct_label")
        {
            (&mut label, 128)
        } else if name.eq_ignore_ascii_case("ct_mark")
            || name.eq_ignore_ascii_case("nxm_nx_ct_mark")
        {
            (&mut mark, 32)
        } else {
            return;
        };
        // `load:V->F[a..b]`, `F[n]` (as OpenFlow 1.0 to 1.3 print a write to part of the
        // field): those bits; `set_field:V/M->F`: the bits of M; anything else: every bit.
        let bits = match value_mask.and_then(|vm| vm.split_once('/')) {
            _ if !range.is_empty() => range_mask(range, width).unwrap_or(u128::MAX),
            Some((_, m)) => number(m).unwrap_or(u128::MAX),
            None => u128::MAX,
        };
        *slot |= bits;
    };
    let mut stack = vec![actions];
    while let Some(list) = stack.pop() {
        for a in ActionIter::new(list) {
            match (a.name, a.arg) {
                ("set_field", Some(arg)) => {
                    if let Some((v, d)) = arg.split_once("->") {
                        note(d, Some(v));
                    }
                }
                ("load" | "move", Some(arg)) => {
                    if let Some((_, d)) = arg.rsplit_once("->") {
                        note(d, None);
                    }
                }
                (_, Some(arg)) if a.parens && stack.len() < 16 => {
                    // ct(...exec(...)), clone(...), and the like.
                    for part in crate::parse::actions::split_top(arg) {
                        if let Some(inner) =
                            part.strip_prefix("exec(").and_then(|x| x.strip_suffix(')'))
                        {
                            stack.push(inner);
                        }
                    }
                    if a.name != "ct" {
                        stack.push(arg);
                    }
                }
                _ => {}
            }
        }
    }
    (label, mark)
}

/// What a flow wrote before one of its jumps, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Write {
    /// Bits of a field (a register as `regN`, or `metadata`) set to a value (`known`) or to
    /// one not known from the flow.
    Bits {
        field: &'static str,
        value: u128,
        mask: u128,
        known: bool,
    },
    /// Every register (a write to `xreg`/`xxreg` matched as such, or unknown).
    Registers,
    /// One header field, by its index in [`HEADERS`], to a value not known here.
    Field(u8),
    /// Packet header fields (any field not a register, `metadata` or `ct_*`).
    Headers,
    /// NAT: addresses and ports (see the module doc).
    Nat,
    /// ovn-controller resumed the packet after a pause: every field but [`KEPT_BY_OVN`] and
    /// the conntrack state, to values not known here.
    Resumed,
    /// An earlier jump of the flow (to this table) came back: what the tables it runs can
    /// write ([`Summary`]) is unknown, and the conntrack state may have been cleared (never
    /// set: `ct(table=N)` forks, the packet that comes back is untracked).
    Subtree(u16),
}

/// The state of a walk through one flow's actions up to a point.
#[derive(Debug, Clone, Default)]
struct State {
    writes: Vec<Write>,
    /// The conntrack state is clear (after `ct` or `ct_clear`).
    cleared: bool,
    /// Nothing is known of the packet (after `controller(pause)` by a controller not known,
    /// or a jump to any table).
    everything: bool,
}

/// A jump of a flow, with what its actions did before it.
#[derive(Debug, Clone)]
struct Edge {
    target: u16,
    /// `ct(table=N)`: the packet at N has a fresh conntrack state.
    origin: bool,
    state: State,
}

/// Walks a flow's actions, collecting its jumps.
struct Walk<'g> {
    table: u16,
    groups: Option<&'g HashMap<u32, Vec<String>>>,
    resume: Resume,
    edges: Vec<Edge>,
    /// It runs `ct`, sends to the controller or to an unknown group.
    reads_ct: bool,
}

impl<'g> Walk<'g> {
    fn new(table: u16, groups: Option<&'g HashMap<u32, Vec<String>>>, resume: Resume) -> Self {
        Self {
            table,
            groups,
            resume,
            edges: Vec::new(),
            reads_ct: false,
        }
    }

    fn jump(&mut self, target: u16, origin: bool, state: &mut State) {
        self.edges.push(Edge {
            target,
            origin,
            state: state.clone(),
        });
        if !origin {
            // What comes after runs on what the jump's tables left.
            state.writes.push(Write::Subtree(target));
        }
    }

    /// Walks `actions` from `state` (a copy: nested lists do not change their caller's).
    fn actions(&mut self, actions: &str, start: &State, depth: usize) -> State {
        let mut st = start.clone();
        for a in ActionIter::new(actions) {
            match (a.name, a.arg) {
                ("resubmit", arg) => {
                    let mut parts = arg.unwrap_or("").split(',');
                    let port = parts.next().map(str::trim).unwrap_or("");
                    let table = parts
                        .next()
                        .map(str::trim)
                        .and_then(|t| t.parse::<u16>().ok());
                    if !port.is_empty() {
                        st.writes.push(Write::Field(0));
                    }
                    self.jump(table.unwrap_or(self.table), false, &mut st);
                }
                ("goto_table", Some(t)) => match t.trim().parse::<u16>() {
                    Ok(t) => self.jump(t, false, &mut st),
                    Err(_) => self.jump(
                        ANY,
                        false,
                        &mut State {
                            everything: true,
                            ..st.clone()
                        },
                    ),
                },
                ("ct", arg) => {
                    self.reads_ct = true;
                    let arg = arg.unwrap_or("");
                    let mut table = None;
                    let mut nat = false;
                    for p in crate::parse::actions::split_top(arg) {
                        let p = p.trim();
                        if let Some(t) = p.strip_prefix("table=") {
                            table = Some(t.parse::<u16>().unwrap_or(ANY));
                        }
                        nat |= p == "nat" || p.starts_with("nat(");
                    }
                    if nat {
                        st.writes.push(Write::Nat);
                    }
                    if let Some(t) = table {
                        self.jump(t, true, &mut st);
                    }
                    st.cleared = true;
                }
                ("ct_clear", _) => st.cleared = true,
                ("clone", Some(inner)) if depth < 8 => {
                    // Its changes are undone after it.
                    self.actions(inner, &st, depth + 1);
                }
                ("group", Some(id)) => self.group(id, &mut st, depth),
                ("controller", arg) => {
                    self.reads_ct = true;
                    if arg.is_some_and(|x| x.contains("pause")) {
                        match self.resume {
                            Resume::Anything => st.everything = true,
                            Resume::Ovn => st.writes.push(Write::Resumed),
                        }
                    }
                }
                (
                    "set_field" | "load" | "move" | "pop" | "multipath" | "bundle_load"
                    | "check_pkt_larger",
                    _,
                ) => write_of(a.name, a.arg, a.text, &mut st.writes),
                ("write_metadata", Some(vm)) => {
                    let (v, m) = match vm.split_once('/') {
                        Some((v, m)) => (number(v), number(m)),
                        None => (number(vm), Some(u128::from(u64::MAX))),
                    };
                    st.writes.push(match (v, m) {
                        (Some(v), Some(m)) => Write::Bits {
                            field: "metadata",
                            value: v & m,
                            mask: m,
                            known: true,
                        },
                        _ => Write::Bits {
                            field: "metadata",
                            value: 0,
                            mask: u128::from(u64::MAX),
                            known: false,
                        },
                    });
                }
                (name, _) if harmless(name) => {}
                (name, _) => st
                    .writes
                    .push(header_action(name).map_or(Write::Headers, Write::Field)),
            }
        }
        st
    }

    fn group(&mut self, id: &str, st: &mut State, depth: usize) {
        let buckets = id
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(|id| self.groups.map(|g| g.get(&id)));
        match buckets {
            Some(Some(buckets)) if depth < 8 => {
                for b in buckets {
                    self.actions(b, st, depth + 1);
                }
                st.writes.push(Write::Subtree(ANY));
            }
            // A group that does not exist drops the packet.
            Some(None) => {}
            _ => {
                self.reads_ct = true;
                self.jump(
                    ANY,
                    true,
                    &mut State {
                        everything: true,
                        ..st.clone()
                    },
                );
            }
        }
    }
}

/// Actions that change nothing a match sees and do not jump (outputs, meters, notes, `learn`,
/// `push`...).
pub fn harmless(name: &str) -> bool {
    matches!(
        name,
        "output"
            | "drop"
            | "enqueue"
            | "bundle"
            | "conjunction"
            | "note"
            | "learn"
            | "meter"
            | "set_queue"
            | "pop_queue"
            | "push"
            | "exit"
            | "fin_timeout"
            | "sample"
            | "IN_PORT"
            | "LOCAL"
            | "NORMAL"
            | "FLOOD"
            | "ALL"
            | "in_port"
            | "local"
            | "normal"
            | "flood"
            | "all"
    ) || name.bytes().all(|b| b.is_ascii_digit())
}

/// What `set_field`, `load`, `move`, `pop`... write (`text` the whole action), into `out`.
fn write_of(name: &str, arg: Option<&str>, text: &str, out: &mut Vec<Write>) {
    let arg = arg.unwrap_or("");
    let (value, dst) = match name {
        "set_field" | "load" | "move" | "check_pkt_larger" => match text.rsplit_once("->") {
            Some((l, d)) => (
                (name == "set_field" || name == "load")
                    .then(|| l.split_once(':').map_or(l, |x| x.1)),
                d,
            ),
            None => return out.push(Write::Headers),
        },
        "pop" if header_of(arg).is_some() => (None, arg),
        "pop" => (None, arg),
        _ => (None, arg.rsplit(',').next().unwrap_or("")),
    };
    let dst = dst.trim();
    if let Some((span, mask)) = field_bits(dst) {
        let (v, m) = match (name, value) {
            ("set_field", Some(vm)) => match vm.split_once('/') {
                Some((v, m)) => (number(v), number(m).map(|m| m & mask)),
                None => (number(vm), Some(mask)),
            },
            ("load", Some(v)) => (
                number(v).and_then(|v| v.checked_shl(mask.trailing_zeros())),
                Some(mask),
            ),
            _ => (None, Some(mask)),
        };
        let known = v.is_some() && m.is_some();
        let (v, m) = (v.unwrap_or(0), m.unwrap_or(mask));
        per_reg(span, v & m, m, |r, v, m| {
            out.push(Write::Bits {
                field: REGS[r],
                value: u128::from(v),
                mask: u128::from(m),
                known,
            })
        });
        return;
    }
    let lower = dst.to_ascii_lowercase();
    if lower.starts_with("metadata") || lower.starts_with("oxm_of_metadata") {
        let whole = u128::from(u64::MAX);
        let (v, m) = match (name, value) {
            ("set_field", Some(vm)) if lower == "metadata" => match vm.split_once('/') {
                Some((v, m)) => (number(v), number(m)),
                None => (number(vm), Some(whole)),
            },
            _ => (None, None),
        };
        out.push(match (v, m) {
            (Some(v), Some(m)) => Write::Bits {
                field: "metadata",
                value: v & m & whole,
                mask: m & whole,
                known: true,
            },
            _ => Write::Bits {
                field: "metadata",
                value: 0,
                mask: whole,
                known: false,
            },
        });
        return;
    }
    out.push(if lower.contains("reg") {
        Write::Registers
    } else {
        header_of(dst).map_or(Write::Headers, Write::Field)
    });
}

/// A kept flow, parsed.
#[derive(Debug)]
struct AFlow<'a> {
    table: u16,
    priority: u16,
    m: Vec<FieldMatch<'a>>,
    edges: Vec<Edge>,
    /// What its actions write, in order, and whether nothing is known after them.
    writes: Vec<Write>,
    everything: bool,
    /// Its match has no constraint this module cannot read (it can hide lower flows).
    covers: bool,
    /// It matches a `ct_*` field, runs `ct`, or sends to the controller or an unknown group.
    reads_ct: bool,
}

/// The parsed graph of a bridge's kept flows, and the searches over it.
#[derive(Debug)]
pub struct Analysis<'a> {
    flows: Vec<AFlow<'a>>,
    /// Per table: what running it (and the tables it jumps to) can write.
    summaries: HashMap<u16, Summary>,
    /// Per table a packet can reach: the register and metadata bits that may be 1 there.
    ones: OnesMap,
    /// Per target table: (flow, edge) jumping to it.
    into: HashMap<u16, Vec<(usize, usize)>>,
    /// Per table: its kept flows, highest priority first.
    by_table: HashMap<u16, Vec<usize>>,
    by_hash: HashMap<u64, usize>,
    label_bits: u128,
    mark_bits: u128,
    steps: u64,
    /// Steps of the searches before the current one.
    total: u64,
    /// Answers of [`Analysis::reach_from`] (a "reachable" found by a cycle or the budget
    /// included: it only makes pairs count).
    memo: HashMap<MemoKey, bool>,
    /// The search under way forgets the Ethernet addresses ([`Analysis::reach_in`]).
    rough: bool,
}

/// A table, whether the search was rough, and constraints (field key, opaque, value, mask),
/// as [`Analysis::reach_from`] remembers its answers.
type MemoKey = (u16, bool, Vec<(u64, bool, u128, u128)>);

/// The [`MemoKey`] of constraints at a table.
fn key_of(table: u16, rough: bool, k: &[FieldMatch<'_>]) -> MemoKey {
    (
        table,
        rough,
        k.iter()
            .map(|f| (f.key, f.opaque, f.value, f.mask))
            .collect(),
    )
}

/// What running a table, and the tables its flows jump to, can write into the packet (writes
/// inside `clone(...)` are undone and do not count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Summary {
    regs: [u32; 16],
    metadata: bool,
    /// Bits of [`HEADERS`] written, and whether any other header is.
    fields: u32,
    headers: bool,
    nat: bool,
    /// A flow pauses the packet and ovn-controller resumes it ([`Write::Resumed`]).
    resumed: bool,
    everything: bool,
}

impl Summary {
    fn add(&mut self, w: &Write, of: impl Fn(u16) -> Summary) {
        match *w {
            Write::Bits { field, mask, .. } => match REGS.iter().position(|&r| r == field) {
                Some(r) => self.regs[r] |= mask as u32,
                None => self.metadata = true,
            },
            Write::Registers => self.regs = [u32::MAX; 16],
            Write::Field(i) => self.fields |= 1 << i,
            Write::Headers => self.headers = true,
            Write::Nat => self.nat = true,
            Write::Resumed => self.resumed = true,
            Write::Subtree(t) => {
                let s = of(t);
                for r in 0..16 {
                    self.regs[r] |= s.regs[r];
                }
                self.metadata |= s.metadata;
                self.fields |= s.fields;
                self.headers |= s.headers;
                self.nat |= s.nat;
                self.resumed |= s.resumed;
                self.everything |= s.everything;
            }
        }
    }

    /// Forgets in `k` what this summary can write.
    fn forget(&self, k: &mut Vec<FieldMatch<'_>>) {
        if self.everything {
            forget(k, |f| (!f.field.starts_with("ct_")).then_some(u128::MAX));
            return;
        }
        forget(k, |f| match REGS.iter().position(|&r| r == f.field) {
            Some(r) => Some(u128::from(self.regs[r])),
            None if is_reg(f.field) => self.regs.iter().any(|&m| m != 0).then_some(u128::MAX),
            None if f.field == "metadata" => self.metadata.then_some(u128::MAX),
            None if f.field.starts_with("ct_") => None,
            None => {
                let mine = HEADERS
                    .iter()
                    .position(|&h| h == f.field)
                    .is_some_and(|i| self.fields & (1 << i) != 0);
                (self.headers || mine).then_some(u128::MAX)
            }
        });
        if self.nat {
            forget_nat(k);
        }
        if self.resumed {
            forget_resumed(k);
        }
    }
}

/// [`Summary`] of every table, to a fixed point (jumps back make cycles).
fn summaries(flows: &[AFlow<'_>], by_table: &HashMap<u16, Vec<usize>>) -> HashMap<u16, Summary> {
    let mut sum: HashMap<u16, Summary> =
        by_table.keys().map(|&t| (t, Summary::default())).collect();
    let all = Summary {
        regs: [u32::MAX; 16],
        metadata: true,
        fields: u32::MAX,
        headers: true,
        nat: true,
        resumed: true,
        everything: true,
    };
    for _ in 0..64 {
        let mut changed = false;
        for (&t, fs) in by_table {
            let mut s = sum.get(&t).copied().unwrap_or_default();
            let before = s;
            for &i in fs {
                let f = &flows[i];
                if f.everything {
                    s = all;
                    break;
                }
                for w in &f.writes {
                    s.add(w, |t| match t {
                        ANY => all,
                        t => sum.get(&t).copied().unwrap_or_default(),
                    });
                }
            }
            if s != before {
                sum.insert(t, s);
                changed = true;
            }
        }
        if !changed {
            return sum;
        }
    }
    // No fixed point within the rounds: nothing is known.
    sum.values_mut().for_each(|s| *s = all);
    sum
}

/// The register and metadata bits that may be 1 in a packet at some point, and whether it
/// may be tracked (see [`may_be_one`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Ones {
    regs: [u32; 16],
    metadata: u64,
    tracked: bool,
}

impl Ones {
    const ALL: Ones = Ones {
        regs: [u32::MAX; 16],
        metadata: u64::MAX,
        tracked: true,
    };

    fn union(&mut self, o: &Ones) {
        for r in 0..16 {
            self.regs[r] |= o.regs[r];
        }
        self.metadata |= o.metadata;
        self.tracked |= o.tracked;
    }

    /// After `w`: a known value sets its bits, any other write may set every bit it writes.
    fn after(&mut self, w: &Write, summary: impl Fn(u16) -> Summary) {
        match *w {
            Write::Bits { field, mask, .. } => {
                let value = match *w {
                    Write::Bits {
                        value, known: true, ..
                    } => value,
                    _ => mask,
                };
                match REGS.iter().position(|&r| r == field) {
                    Some(r) => {
                        let (v, m) = (value as u32, mask as u32);
                        self.regs[r] = (self.regs[r] & !m) | (v & m);
                    }
                    None => {
                        let (v, m) = (value as u64, mask as u64);
                        self.metadata = (self.metadata & !m) | (v & m);
                    }
                }
            }
            Write::Registers => self.regs = [u32::MAX; 16],
            // The conntrack state as it was (see the module doc, and `Write::Subtree`).
            Write::Resumed => {
                self.regs = [u32::MAX; 16];
                self.metadata = u64::MAX;
            }
            Write::Subtree(t) => {
                let s = summary(t);
                if s.everything || s.resumed {
                    self.regs = [u32::MAX; 16];
                    self.metadata = u64::MAX;
                    return;
                }
                for r in 0..16 {
                    self.regs[r] |= s.regs[r];
                }
                if s.metadata {
                    self.metadata = u64::MAX;
                }
            }
            Write::Field(_) | Write::Headers | Write::Nat => {}
        }
    }

    /// Whether a packet satisfying `k` can have these bits: every bit `k` needs to be 1 may be
    /// (a conntrack field with a bit 1: the packet is tracked).
    fn allow(&self, k: &[FieldMatch<'_>]) -> bool {
        k.iter().filter(|f| !f.opaque).all(|f| {
            let ones = f.value & f.mask;
            if f.field.starts_with("ct_") {
                return self.tracked || ones == 0;
            }
            if f.field == "metadata" {
                return ones & !u128::from(self.metadata) == 0;
            }
            let Some((span, _)) = field_bits(f.field) else {
                return true;
            };
            let mut ok = true;
            per_reg(span, ones, f.mask, |r, v, _| ok &= v & !self.regs[r] == 0);
            ok
        })
    }
}

/// What a packet's `metadata` is known to be: OVN's datapath, set by table 0 and by the
/// patch ports (None: not known).
type Datapath = Option<u64>;

/// Per table a packet can reach, per [`Datapath`], the register and metadata bits that may be
/// 1 there.
type OnesMap = HashMap<u16, HashMap<Datapath, Ones>>;

/// Whether a packet of datapath `dp` can satisfy the `metadata` constraint of `m`.
fn datapath_fits(dp: Datapath, m: &[FieldMatch<'_>]) -> bool {
    let Some(dp) = dp else {
        return true;
    };
    m.iter()
        .filter(|f| !f.opaque && f.field == "metadata")
        .all(|f| (u128::from(dp) ^ f.value) & f.mask == 0)
}

/// The datapath a match names exactly (`metadata=0x1`).
fn exact_datapath(m: &[FieldMatch<'_>]) -> Datapath {
    let whole = u128::from(u64::MAX);
    m.iter()
        .find(|f| !f.opaque && f.field == "metadata" && f.mask & whole == whole)
        .map(|f| f.value as u64)
}

/// The [`Datapath`] after `w`.
fn datapath_after(dp: Datapath, w: &Write, summary: impl Fn(u16) -> Summary) -> Datapath {
    let whole = u128::from(u64::MAX);
    match *w {
        Write::Bits {
            field: "metadata",
            value,
            mask,
            known,
        } => match (known, dp) {
            (true, _) if mask & whole == whole => Some(value as u64),
            (true, Some(d)) => Some((d & !(mask as u64)) | (value & mask) as u64),
            _ => None,
        },
        Write::Resumed => None,
        Write::Subtree(t) => {
            let s = summary(t);
            if s.metadata || s.everything || s.resumed {
                None
            } else {
                dp
            }
        }
        _ => dp,
    }
}

/// Per table a packet can reach, the register and metadata bits that may be 1 when it gets
/// there and whether it may be tracked, apart per datapath (a forward pass to a fixed
/// point): a packet enters table 0 with all of them 0 and untracked, a flow takes only packets of the datapath and with the bits its match can
/// hold, a known write sets its bits (OVN zeroes the registers before it sends a packet back
/// to table 8 through a patch port), any other write may set what it writes. A search that
/// needs a bit a table cannot have stops at once, however many paths lead there.
fn may_be_one(flows: &[AFlow<'_>], summaries: &HashMap<u16, Summary>) -> OnesMap {
    let summary = |t: u16| match t {
        ANY => Summary {
            everything: true,
            ..Summary::default()
        },
        t => summaries.get(&t).copied().unwrap_or_default(),
    };
    // Under ANY: what a jump to any table (a group whose buckets are unknown) brings to all.
    let mut at: OnesMap = HashMap::from([(0, HashMap::from([(Some(0), Ones::default())]))]);
    for _ in 0..64 {
        let mut changed = false;
        for f in flows {
            for (dp, from) in ones_at(&at, f.table) {
                if !datapath_fits(dp, &f.m) || !from.allow(&f.m) {
                    continue;
                }
                // A packet of a datapath not known takes it only if its metadata is the one
                // the flow matches.
                let dp = dp.or_else(|| exact_datapath(&f.m));
                for e in &f.edges {
                    let (mut o, mut d) = (from, dp);
                    if e.state.everything || e.target == ANY {
                        (o, d) = (Ones::ALL, None);
                    } else {
                        for w in &e.state.writes {
                            o.after(w, summary);
                            d = datapath_after(d, w, summary);
                        }
                        // `ct(table=N)` tracks it at N; `ct` and `ct_clear` clear the state
                        // for what follows, and a jump that comes back never sets it.
                        o.tracked = e.origin || (o.tracked && !e.state.cleared);
                    }
                    let slot = at.entry(e.target).or_default().entry(d).or_default();
                    let before = *slot;
                    slot.union(&o);
                    changed |= *slot != before;
                }
            }
        }
        if !changed {
            return at;
        }
    }
    // No fixed point within the rounds: any bit anywhere.
    HashMap::from([(ANY, HashMap::from([(None, Ones::ALL)]))])
}

/// The bits that may be 1 at `table`, per datapath ([`may_be_one`]'s answer); empty when no
/// packet gets there.
fn ones_at(at: &OnesMap, table: u16) -> Vec<(Datapath, Ones)> {
    let mut v: Vec<(Datapath, Ones)> = Vec::new();
    for t in [table, ANY] {
        if let Some(m) = at.get(&t) {
            v.extend(m.iter().map(|(&d, &o)| (d, o)));
        }
    }
    v
}

/// Whether a packet satisfying `k` can be at `table` as far as its registers and metadata
/// tell ([`may_be_one`]).
fn may_hold(at: &OnesMap, table: u16, k: &[FieldMatch<'_>]) -> bool {
    ones_at(at, table)
        .iter()
        .any(|(dp, o)| datapath_fits(*dp, k) && o.allow(k))
}

fn is_reg(field: &str) -> bool {
    let digits = field
        .strip_prefix("xxreg")
        .or_else(|| field.strip_prefix("xreg"))
        .or_else(|| field.strip_prefix("reg"));
    digits.is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a constraint is on a field packets enter with zero: registers, metadata, conntrack.
fn zero_at_entry(field: &str) -> bool {
    is_reg(field) || field == "metadata" || field.starts_with("ct_")
}

/// Whether `k` (sorted constraints) holds for some packet whose conntrack state OVS can give.
fn possible(k: &[FieldMatch<'_>]) -> bool {
    super::overlap::ct_state_possible(k, &[])
}

/// `a` and `b` together, sorted and merged; None when they contradict.
pub(crate) fn merge<'a>(a: &[FieldMatch<'a>], b: &[FieldMatch<'a>]) -> Option<Vec<FieldMatch<'a>>> {
    let mut out: Vec<FieldMatch<'a>> = Vec::with_capacity(a.len() + b.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out.sort_by(|x, y| x.order(y));
    merge_sorted(&mut out).then_some(out)
}

/// Whether every packet satisfying `k` matches `g`.
fn covered(k: &[FieldMatch<'_>], g: &[FieldMatch<'_>]) -> bool {
    g.iter().all(|c| {
        !c.opaque
            && k.iter().any(|x| {
                !x.opaque
                    && x.same_field(c)
                    && c.mask & !x.mask == 0
                    && (x.value ^ c.value) & c.mask == 0
            })
    })
}

/// NAT leaves a packet's addresses and ports alone: ICMPv6 neighbour discovery and MLD.
fn nat_exempt(k: &[FieldMatch<'_>]) -> bool {
    let exact = |name: &str| {
        k.iter()
            .find(|f| !f.opaque && f.field == name)
            .filter(|f| f.mask & 0xff == 0xff)
            .map(|f| f.value & 0xff)
    };
    exact("nw_proto") == Some(58) && matches!(exact("tp_src"), Some(130..=136 | 143))
}

/// Drops the bits `mask` of `field` from `k`.
fn forget(k: &mut Vec<FieldMatch<'_>>, keep: impl Fn(&FieldMatch<'_>) -> Option<u128>) {
    k.retain_mut(|f| match keep(f) {
        None => true,
        Some(clear) => {
            if f.opaque {
                return false;
            }
            f.mask &= !clear;
            f.value &= f.mask;
            f.mask != 0
        }
    });
}

/// Forgets in `k` what a write of registers or headers, or NAT, leaves unknown (the other
/// writes: nothing).
fn forget_unknown(k: &mut Vec<FieldMatch<'_>>, w: &Write) {
    match *w {
        Write::Registers => forget(k, |f| is_reg(f.field).then_some(u128::MAX)),
        Write::Field(i) => forget_field(k, i),
        Write::Headers => forget(k, |f| (!zero_at_entry(f.field)).then_some(u128::MAX)),
        Write::Nat => forget_nat(k),
        Write::Resumed => forget_resumed(k),
        Write::Bits { .. } | Write::Subtree(_) => {}
    }
}

/// `k` with the bits a known [`Write::Bits`] sets (any other write: `k` as it is).
fn set_known<'a>(k: Vec<FieldMatch<'a>>, w: &Write) -> Vec<FieldMatch<'a>> {
    let Write::Bits {
        field,
        value,
        mask,
        known: true,
    } = *w
    else {
        return k;
    };
    let add = [FieldMatch {
        field,
        key: crate::parse::fields::field_key(field),
        opaque: false,
        value,
        mask,
    }];
    merge(&k, &add).unwrap_or(k)
}

/// Forgets in `k` what ovn-controller may change in a packet it resumes: all but
/// [`KEPT_BY_OVN`] and the conntrack state.
fn forget_resumed(k: &mut Vec<FieldMatch<'_>>) {
    forget(k, |f| {
        (!f.field.starts_with("ct_") && !KEPT_BY_OVN.contains(&f.field)).then_some(u128::MAX)
    });
}

/// Forgets the conntrack fields in `k`.
fn forget_ct(k: &mut Vec<FieldMatch<'_>>) {
    forget(k, |f| f.field.starts_with("ct_").then_some(u128::MAX));
}

/// Forgets the header field `i` of [`HEADERS`] in `k`.
fn forget_field(k: &mut Vec<FieldMatch<'_>>, i: u8) {
    let name = HEADERS[usize::from(i)];
    forget(k, |f| (f.field == name).then_some(u128::MAX));
}

/// Applies NAT's effect (see [`nat_exempt`]) to `k`.
fn forget_nat(k: &mut Vec<FieldMatch<'_>>) {
    if nat_exempt(k) {
        return;
    }
    let icmp = k
        .iter()
        .any(|f| !f.opaque && f.field == "nw_proto" && matches!(f.value, 1 | 58));
    forget(k, |f| {
        let addr = matches!(f.field, "nw_src" | "nw_dst" | "ipv6_src" | "ipv6_dst");
        let port = !icmp && matches!(f.field, "tp_src" | "tp_dst");
        (addr || port).then_some(u128::MAX)
    });
}

impl<'a> Analysis<'a> {
    /// Whether the searches of this dump used up [`TOTAL_BUDGET`].
    pub fn exhausted(&self) -> bool {
        self.total + self.steps > TOTAL_BUDGET
    }

    /// Whether a packet satisfying `k` (as expanded by [`expand_match`]) can reach `table`.
    pub fn reach(&mut self, table: u16, k: &[FieldMatch<'a>]) -> bool {
        self.total += self.steps;
        self.steps = 0;
        self.reach_in(table, k.to_vec())
    }

    /// [`Analysis::reach_from`] twice: first roughly, forgetting the Ethernet addresses on
    /// the way (OVN's port security and lookup flows tell packets apart by them, one flow
    /// per port: a search that keeps them asks the same question once per address), which
    /// only lets more packets through, so "unreachable" holds; only a "reachable" is then
    /// checked with every constraint.
    fn reach_in(&mut self, table: u16, k: Vec<FieldMatch<'a>>) -> bool {
        self.rough = true;
        let rough = self.reach_from(table, k.clone(), &mut Vec::new());
        self.rough = false;
        rough && self.reach_from(table, k, &mut Vec::new())
    }

    fn reach_from(&mut self, table: u16, mut k: Vec<FieldMatch<'a>>, path: &mut Vec<u16>) -> bool {
        if self.rough {
            forget(&mut k, |f| {
                matches!(f.field, "dl_src" | "dl_dst").then_some(u128::MAX)
            });
        }
        if !possible(&k) || !may_hold(&self.ones, table, &k) {
            return false;
        }
        if table == 0
            && k.iter()
                .all(|f| !zero_at_entry(f.field) || (!f.opaque && f.value & f.mask == 0))
        {
            return true;
        }
        if path.len() >= MAX_DEPTH || path.contains(&table) || self.steps > STEP_BUDGET {
            return true;
        }
        let key = key_of(table, self.rough, &k);
        if let Some(&known) = self.memo.get(&key) {
            return known;
        }
        let mut preds: Vec<(usize, usize)> = self.into.get(&table).cloned().unwrap_or_default();
        preds.extend(self.into.get(&ANY).cloned().unwrap_or_default());
        path.push(table);
        let mut found = false;
        for (fi, ei) in preds {
            self.steps += 1;
            let Some(before) = self.undo(fi, ei, &k) else {
                continue;
            };
            let f = &self.flows[fi];
            let Some(at) = merge(&before, &f.m) else {
                continue;
            };
            if !possible(&at) || self.hidden(f.table, f.priority, &at) {
                continue;
            }
            let src = f.table;
            if self.reach_from(src, at, path) {
                found = true;
                break;
            }
        }
        path.pop();
        // A "reachable" found by a cycle or the budget is kept too: it only makes pairs count.
        self.memo.insert(key, found);
        found
    }

    /// What running `table` can write (everything for [`ANY`]).
    fn summary(&self, table: u16) -> Summary {
        match table {
            ANY => Summary {
                everything: true,
                ..Summary::default()
            },
            t => self.summaries.get(&t).copied().unwrap_or_default(),
        }
    }

    /// Whether a flow of `table` at a higher priority than `priority` takes every packet of `k`.
    fn hidden(&self, table: u16, priority: u16, k: &[FieldMatch<'a>]) -> bool {
        self.by_table.get(&table).is_some_and(|fs| {
            fs.iter()
                .map(|&g| &self.flows[g])
                .take_while(|g| g.priority > priority)
                .any(|g| g.covers && covered(k, &g.m))
        })
    }

    /// The constraints a packet had before flow `fi`'s actions up to its edge `ei`, given it
    /// satisfies `k` after them; None when the actions cannot leave it so.
    fn undo(&self, fi: usize, ei: usize, k: &[FieldMatch<'a>]) -> Option<Vec<FieldMatch<'a>>> {
        let e = &self.flows[fi].edges[ei];
        if e.state.everything {
            return Some(Vec::new());
        }
        let mut k = k.to_vec();
        if e.origin {
            // A fresh conntrack state: tracked, with labels and marks some flow can write.
            for f in k.iter().filter(|f| !f.opaque) {
                let ones = f.value & f.mask;
                let bad = match f.field {
                    "ct_state" => f.mask & 0x20 != 0 && ones & 0x20 == 0,
                    "ct_label" => ones & !self.label_bits != 0,
                    "ct_mark" => ones & !self.mark_bits != 0,
                    _ => false,
                };
                if bad {
                    return None;
                }
            }
            forget_ct(&mut k);
        } else if e.state.cleared {
            if k.iter()
                .any(|f| f.field.starts_with("ct_") && (f.opaque || f.value & f.mask != 0))
            {
                return None;
            }
            forget_ct(&mut k);
        }
        for w in e.state.writes.iter().rev() {
            match *w {
                Write::Bits {
                    field,
                    value,
                    mask,
                    known,
                } => {
                    if known
                        && k.iter().any(|f| {
                            !f.opaque && f.field == field && (f.value ^ value) & f.mask & mask != 0
                        })
                    {
                        return None;
                    }
                    forget(&mut k, |f| (f.field == field).then_some(mask));
                    if field != "metadata" {
                        forget(&mut k, |f| {
                            (f.field.starts_with('x') && is_reg(f.field)).then_some(u128::MAX)
                        });
                    }
                }
                Write::Registers
                | Write::Field(_)
                | Write::Headers
                | Write::Nat
                | Write::Resumed => forget_unknown(&mut k, w),
                Write::Subtree(t) => {
                    self.summary(t).forget(&mut k);
                    // Cleared on the way, or as it was before.
                    if k.iter()
                        .filter(|f| f.field.starts_with("ct_"))
                        .all(|f| !f.opaque && f.value & f.mask == 0)
                    {
                        forget_ct(&mut k);
                    }
                }
            }
        }
        Some(k)
    }

    /// The constraints after flow `fi`'s actions up to edge `ei`, for a packet satisfying `k`
    /// before them (forwards: a known write sets the bits, any other forgets them).
    fn apply(&self, fi: usize, ei: usize, k: &[FieldMatch<'a>]) -> Vec<FieldMatch<'a>> {
        let e = &self.flows[fi].edges[ei];
        if e.state.everything {
            return Vec::new();
        }
        let mut k = k.to_vec();
        if e.origin || e.state.cleared {
            forget_ct(&mut k);
        }
        for w in &e.state.writes {
            match *w {
                Write::Subtree(t) => {
                    self.summary(t).forget(&mut k);
                    forget_ct(&mut k);
                }
                Write::Bits { field, mask, .. } => {
                    forget(&mut k, |f| (f.field == field).then_some(mask));
                    k = set_known(k, w);
                }
                _ => forget_unknown(&mut k, w),
            }
        }
        k
    }

    /// Whether a packet satisfying `k` in `table`, with its conntrack state as it was (not
    /// cleared), can meet something that reads that state after the kept flow `hash`'s jumps:
    /// a flow matching `ct_*`, running `ct`, or sending to the controller or an unknown group,
    /// before the state is cleared. A flow `hash` that is not kept has no jump (false); one
    /// that reads the state itself: true.
    pub fn reads_ct_after(&mut self, hash: u64, k: &[FieldMatch<'a>]) -> bool {
        self.total += self.steps;
        self.steps = 0;
        let Some(&fi) = self.by_hash.get(&hash) else {
            return false;
        };
        if self.flows[fi].reads_ct {
            return true;
        }
        let Some(k) = merge(k, &self.flows[fi].m) else {
            return false;
        };
        let mut path = Vec::new();
        self.reads_from(fi, &k, &mut path)
    }

    fn reads_from(&mut self, fi: usize, k: &[FieldMatch<'a>], path: &mut Vec<usize>) -> bool {
        if path.len() >= MAX_DEPTH || path.contains(&fi) {
            return true;
        }
        path.push(fi);
        let mut reads = false;
        for ei in 0..self.flows[fi].edges.len() {
            let e = &self.flows[fi].edges[ei];
            if e.state.cleared && !e.origin {
                continue;
            }
            if e.origin || e.target == ANY || e.state.everything {
                reads = true;
                break;
            }
            let target = e.target;
            let after = self.apply(fi, ei, k);
            if self.reads_in(target, &after, path) {
                reads = true;
                break;
            }
        }
        path.pop();
        reads
    }

    /// [`Analysis::reads_ct_after`] from the start of `table`.
    fn reads_in(&mut self, table: u16, k: &[FieldMatch<'a>], path: &mut Vec<usize>) -> bool {
        let flows = self.by_table.get(&table).cloned().unwrap_or_default();
        for g in flows {
            self.steps += 1;
            if self.steps > STEP_BUDGET {
                return true;
            }
            let Some(at) = merge(k, &self.flows[g].m) else {
                continue;
            };
            if !possible(&at) {
                continue;
            }
            // What it does first (cheap), then whether such a packet reaches the table at all
            // (registers set on the way).
            let reads = self.flows[g].reads_ct || self.reads_from(g, &at, path);
            if reads && self.reach_in(table, at) {
                return true;
            }
            if self.flows[g].covers && covered(k, &self.flows[g].m) {
                // Every such packet takes this flow: none gets to the lower ones.
                break;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(flows: &[&str]) -> Kept {
        let mut k = Kept::default();
        for l in flows {
            let Ok(crate::parse::Line::Flow(f)) = crate::parse::parse_line(l) else {
                panic!("{l}")
            };
            let t = match f.table {
                crate::parse::Table::Id(n) => u16::from(n),
                crate::parse::Table::Name(_) => 256,
            };
            let plain = f.actions().all(|a| harmless(a.name));
            k.add(t, &f, plain);
        }
        k
    }

    fn m(text: &str) -> Vec<FieldMatch<'_>> {
        let mut v = Vec::new();
        assert!(expand_match(text, &mut v));
        v
    }

    /// OVN's ingress pipeline cut down (tests/fixtures/ovn): table 12 sends neighbour
    /// discovery on without marking it for conntrack, 13 marks other IPv6, 14 sends marked
    /// packets through `ct(table=15)` and the others on.
    const OVN: &[&str] = &[
        " table=0, priority=100,in_port=1 actions=set_field:0x1->metadata,set_field:0x1->reg14,resubmit(,12)",
        " table=12, priority=110,icmp6,metadata=0x1,nw_ttl=255,icmp_type=135,icmp_code=0 actions=resubmit(,13)",
        " table=12, priority=100,ipv6,metadata=0x1 actions=set_field:0x1000000000000000000000000/0x1000000000000000000000000->xxreg0,resubmit(,13)",
        " table=12, priority=0,metadata=0x1 actions=resubmit(,13)",
        " table=13, priority=110,icmp6,metadata=0x1,nw_ttl=255,icmp_type=135,icmp_code=0 actions=resubmit(,14)",
        " table=13, priority=100,ipv6,metadata=0x1 actions=set_field:0x4000000000000000000000000/0x4000000000000000000000000->xxreg0,resubmit(,14)",
        " table=13, priority=0,metadata=0x1 actions=resubmit(,14)",
        " table=14, priority=110,ipv6,reg0=0x4/0x4,metadata=0x1 actions=ct(table=15,zone=NXM_NX_REG13[0..15],nat)",
        " table=14, priority=100,ipv6,reg0=0x1/0x1,metadata=0x1 actions=ct(table=15,zone=NXM_NX_REG13[0..15])",
        " table=14, priority=0,metadata=0x1 actions=resubmit(,15)",
        " table=15, priority=0,metadata=0x1 actions=resubmit(,16)",
        " table=16, priority=65532,ct_state=+inv+trk,metadata=0x1 actions=drop",
    ];

    const ND: &str = "icmp6,metadata=0x1,nw_ttl=255,icmp_type=135,icmp_code=0";

    #[test]
    fn neighbour_discovery_is_never_tracked_past_ovn_pre_acl() {
        let k = kept(OVN);
        let mut a = k.analysis(Resume::Anything).unwrap();
        // Tracked neighbour discovery at table 16: no.
        let nd_trk = merge(&m(ND), &m("ct_state=+inv+trk,metadata=0x1")).unwrap();
        assert!(!a.reach(16, &nd_trk));
        // Untracked: yes; other tracked IPv6: yes.
        assert!(a.reach(16, &m(ND)));
        assert!(a.reach(16, &m("ipv6,ct_state=+inv+trk,metadata=0x1")));
        // Echo requests (not exempt from NAT, not sent past conntrack): tracked, yes.
        assert!(a.reach(16, &m("icmp6,icmp_type=128,ct_state=+est+trk,metadata=0x1")));
    }

    #[test]
    fn what_lets_a_tracked_packet_of_the_class_through() {
        for (why, extra) in [
            (
                "a table before sets the mark bit for it",
                " table=11, priority=5,metadata=0x1 actions=set_field:0x4/0x4->reg0,resubmit(,12)",
            ),
            (
                "a flow sends it through conntrack on the way",
                " table=15, priority=200,icmp6,metadata=0x1 actions=ct(table=16,zone=NXM_NX_REG13[0..15])",
            ),
            (
                "a group whose buckets are unknown",
                " table=15, priority=300,icmp6 actions=group:7",
            ),
            (
                "the controller resumes a paused packet",
                " table=15, priority=300,icmp6 actions=controller(userdata=00,pause),resubmit(,16)",
            ),
            (
                "a table jumps back without clearing the registers",
                " table=16, priority=1,metadata=0x1 actions=set_field:0x4/0x4->reg0,resubmit(,13)",
            ),
        ] {
            let mut flows = OVN.to_vec();
            flows.push(extra);
            let mut kk = kept(&flows);
            if extra.contains("table=11") {
                flows[0] = " table=0, priority=100,in_port=1 actions=set_field:0x1->metadata,resubmit(,11)";
                kk = kept(&flows);
            }
            let mut a = kk.analysis(Resume::Anything).unwrap();
            let nd_trk = merge(&m(ND), &m("ct_state=+inv+trk,metadata=0x1")).unwrap();
            assert!(a.reach(16, &nd_trk), "{why}");
        }
    }

    /// UDP is tracked in table 1 and the DHCP requests among it paused in table 2; table 3
    /// has OVN's neighbour solicitation flow beside one needing a conntrack state.
    const PAUSED: &[&str] = &[
        " table=0, priority=100,in_port=1 actions=set_field:0x1->metadata,resubmit(,1)",
        " table=1, priority=100,udp,metadata=0x1 actions=ct(table=2,zone=NXM_NX_REG13[0..15])",
        " table=1, priority=0,metadata=0x1 actions=resubmit(,2)",
        " table=2, priority=100,udp,metadata=0x1,tp_src=68,tp_dst=67 actions=controller(userdata=00.00.00.02.00.00.00.00.00.01.de.10.00.00.00.63,pause),resubmit(,3)",
        " table=2, priority=90,icmp6,metadata=0x1,icmp_type=133,icmp_code=0 actions=ct(table=3,zone=NXM_NX_REG13[0..15])",
        " table=2, priority=0,metadata=0x1 actions=resubmit(,3)",
        " table=3, priority=65532,ct_state=+inv+trk,metadata=0x1 actions=drop",
    ];

    #[test]
    fn a_packet_ovn_resumes_keeps_its_protocol_and_conntrack_state() {
        let k = kept(PAUSED);
        let nd_trk = merge(&m(ND), &m("ct_state=+inv+trk,metadata=0x1")).unwrap();
        // ovn-controller answers the DHCP request in the payload: the packet stays tracked
        // UDP, never a tracked neighbour solicitation.
        let mut a = k.analysis(Resume::Ovn).unwrap();
        assert!(!a.reach(3, &nd_trk));
        assert!(a.reach(3, &m("udp,ct_state=+inv+trk,metadata=0x1")));
        // What it may change: addresses, ports and ICMP types (a router solicitation comes
        // back an advertisement), registers and metadata; the conntrack state as it was.
        assert!(a.reach(
            3,
            &m("udp,ct_state=+trk,metadata=0x1,nw_dst=10.0.0.9,tp_src=67,tp_dst=68,reg0=0x8/0x8")
        ));
        let mut more = PAUSED.to_vec();
        more[4] = " table=2, priority=90,icmp6,metadata=0x1,icmp_type=133,icmp_code=0 actions=controller(userdata=00.00.00.0c,pause),resubmit(,3)";
        more[2] = " table=1, priority=0,metadata=0x1 actions=ct(table=2,zone=NXM_NX_REG13[0..15])";
        let k = kept(&more);
        let mut a = k.analysis(Resume::Ovn).unwrap();
        let ra = m("icmp6,icmp_type=134,icmp_code=0,ct_state=+trk,metadata=0x1");
        assert!(a.reach(3, &ra));
        // Untracked before the pause: untracked after it.
        let k = kept(&[PAUSED[0], PAUSED[2], PAUSED[3], PAUSED[5], PAUSED[6]]);
        let mut a = k.analysis(Resume::Ovn).unwrap();
        assert!(!a.reach(3, &m("udp,ct_state=+trk,metadata=0x1")));
    }

    #[test]
    fn a_packet_another_controller_resumes_could_be_anything() {
        // `none` (and neutron): nothing is assumed after the pause, so the tracked DHCP
        // request may come back a tracked neighbour solicitation.
        let k = kept(PAUSED);
        let mut a = k.analysis(Resume::Anything).unwrap();
        let nd_trk = merge(&m(ND), &m("ct_state=+inv+trk,metadata=0x1")).unwrap();
        assert!(a.reach(3, &nd_trk));
        let k = kept(&[PAUSED[0], PAUSED[2], PAUSED[3], PAUSED[5], PAUSED[6]]);
        let mut a = k.analysis(Resume::Anything).unwrap();
        assert!(a.reach(3, &m("udp,ct_state=+trk,metadata=0x1")));
    }

    #[test]
    fn register_bits_are_followed_per_datapath() {
        // Datapath 3 (a router) fills reg0 with an address in table 9; datapath 1 (a switch)
        // sets only bit 0. A packet of datapath 1 reaches table 10 with bit 2 set by no path,
        // so the search stops there however many flows lead to it; a router patch port
        // zeroes the registers before it sends a packet to table 9 as datapath 1.
        let flows = [
            " table=0, priority=100,in_port=1 actions=set_field:0x1->metadata,resubmit(,9)",
            " table=0, priority=100,in_port=2 actions=set_field:0x3->metadata,resubmit(,9)",
            " table=0, priority=100,in_port=3 actions=move:NXM_NX_TUN_ID[0..23]->OXM_OF_METADATA[0..23],resubmit(,9)",
            " table=9, priority=50,metadata=0x3 actions=move:NXM_OF_ETH_SRC[]->NXM_NX_XXREG0[64..111],resubmit(,10)",
            " table=9, priority=50,metadata=0x1 actions=set_field:0x1/0x1->reg0,resubmit(,10)",
            " table=10, priority=50,metadata=0x3 actions=set_field:0x1->metadata,set_field:0->reg0,resubmit(,9)",
            " table=10, priority=0,metadata=0x1 actions=resubmit(,11)",
            " table=11, priority=100,reg0=0x4/0x4,metadata=0x1 actions=ct(table=12,zone=NXM_NX_REG13[0..15])",
            " table=11, priority=0 actions=resubmit(,12)",
            " table=12, priority=100,ct_state=+trk,metadata=0x1 actions=drop",
        ];
        let k = kept(&flows);
        let mut a = k.analysis(Resume::Anything).unwrap();
        assert!(!a.reach(11, &m("reg0=0x4/0x4,metadata=0x1")));
        assert!(!a.reach(12, &m("ct_state=+trk,metadata=0x1")));
        assert!(a.reach(11, &m("reg0=0x1/0x1,metadata=0x1")));
        assert!(a.reach(10, &m("reg0=0x4/0x4,metadata=0x3")));
        // Without the reset on the way back, the router's address bits come along.
        let mut more = flows.to_vec();
        more[5] =
            " table=10, priority=50,metadata=0x3 actions=set_field:0x1->metadata,resubmit(,9)";
        let k = kept(&more);
        let mut a = k.analysis(Resume::Anything).unwrap();
        assert!(a.reach(11, &m("reg0=0x4/0x4,metadata=0x1")));
        assert!(a.reach(12, &m("ct_state=+trk,metadata=0x1")));
    }

    #[test]
    fn a_group_read_from_dump_groups_is_followed() {
        let mut flows = OVN.to_vec();
        flows.push(" table=15, priority=300,tcp,metadata=0x1 actions=group:2");
        let mut k = kept(&flows);
        assert!(k.wants_groups());
        k.set_groups("OFPST_GROUP_DESC reply (OF1.5) (xid=0x2):\n group_id=2,type=select,bucket=bucket_id:0,weight:100,actions=ct(commit,table=16,zone=NXM_NX_REG11[0..15],nat(dst=10.0.1.11:80),exec(set_field:0x2/0x2->ct_label))\n");
        assert!(!k.wants_groups());
        let mut a = k.analysis(Resume::Anything).unwrap();
        let nd_trk = merge(&m(ND), &m("ct_state=+inv+trk,metadata=0x1")).unwrap();
        assert!(!a.reach(16, &nd_trk));
        // TCP gets through the group's ct, with label bit 1 (the bucket writes it), not bit 2.
        assert!(a.reach(
            16,
            &m("tcp,ct_state=+est+trk,ct_label=0x2/0x2,metadata=0x1")
        ));
        assert!(!a.reach(
            16,
            &m("tcp,ct_state=+est+trk,ct_label=0x4/0x4,metadata=0x1")
        ));
    }

    #[test]
    fn label_bits_come_from_ct_exec_writes() {
        assert_eq!(
            ct_writes("ct(commit,zone=NXM_NX_REG13[0..15],exec(set_field:0x1/0x1->ct_label,load:0x3->NXM_NX_CT_MARK[4..5]))"),
            (0x1, 0x30)
        );
        assert_eq!(
            ct_writes("ct(commit,exec(move:NXM_NX_REG0[]->NXM_NX_CT_LABEL[0..31])),resubmit(,5)"),
            (0xffff_ffff, 0)
        );
        assert_eq!(
            ct_writes("clone(ct(commit,exec(set_field:0x5->ct_mark)))").1,
            u128::MAX
        );
        assert_eq!(ct_writes("set_field:0x1->reg0,resubmit(,3)"), (0, 0));
        // OpenFlow 1.0 to 1.3 print a write to one bit as `load:V->F[n]` (1.5:
        // `set_field:V/M->F`), as OVN's load balancer bucket and ACL flows show.
        assert_eq!(
            ct_writes("ct(commit,table=20,zone=NXM_NX_REG13[0..15],nat(dst=10.0.0.5:80),exec(load:0x1->NXM_NX_CT_LABEL[1]))"),
            (0x2, 0)
        );
        assert_eq!(
            ct_writes("ct(commit,exec(load:0->NXM_NX_CT_LABEL[0],move:NXM_NX_XXREG0[0..31]->NXM_NX_CT_LABEL[96..127]))"),
            (0x1 | (0xffff_ffffu128 << 96), 0)
        );
        // A range past the field, or not a range: every bit.
        assert_eq!(
            ct_writes("ct(commit,exec(load:0x1->NXM_NX_CT_MARK[40]))").1,
            u128::MAX
        );
        assert_eq!(
            ct_writes("ct(commit,exec(load:0x1->NXM_NX_CT_MARK[x]))").1,
            u128::MAX
        );
    }

    #[test]
    fn reading_conntrack_after_a_jump() {
        // Table 43: ct_clear or not on a packet tracked in table 41; table 44 runs ct only for
        // reg0 bit 2, which only metadata 1 sets after table 41 writes reg0 to 0.
        let flows = [
            " table=0, priority=1 actions=set_field:0x4->metadata,set_field:0x1->reg15,resubmit(,41)",
            " table=0, priority=2,in_port=1 actions=set_field:0x1->metadata,resubmit(,41)",
            " table=41, priority=0 actions=set_field:0->reg0,ct(table=43,zone=NXM_NX_REG13[0..15])",
            " table=43, priority=110,ip,reg15=0x1,metadata=0x4 actions=ct_clear,resubmit(,44)",
            " table=43, priority=110,metadata=0x4,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=resubmit(,44)",
            " table=43, priority=100,ip,metadata=0x1 actions=set_field:0x4/0x4->reg0,resubmit(,44)",
            " table=44, priority=110,ip,reg0=0x4/0x4 actions=ct(table=45,zone=NXM_NX_REG13[0..15],nat)",
            " table=44, priority=0 actions=resubmit(,45)",
            " table=45, priority=0 actions=output:1",
        ];
        let k = kept(&flows);
        let mut a = k.analysis(Resume::Anything).unwrap();
        let hash = |l: &str| match crate::parse::parse_line(l) {
            Ok(crate::parse::Line::Flow(f)) => super::super::match_hash(f.text),
            _ => 0,
        };
        let pair = merge(
            &m("ip,reg15=0x1,metadata=0x4"),
            &m("metadata=0x4,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00"),
        )
        .unwrap();
        assert!(a.reach(43, &pair));
        assert!(!a.reads_ct_after(hash(flows[4]), &pair));
        // For metadata 1, table 44 runs ct on it.
        let one = m("ip,metadata=0x1");
        assert!(a.reads_ct_after(hash(flows[5]), &one));
        // A table after that matches ct_state.
        let mut more = flows.to_vec();
        more[8] = " table=45, priority=0,ct_state=+trk actions=output:1";
        let k = kept(&more);
        let mut a = k.analysis(Resume::Anything).unwrap();
        assert!(a.reads_ct_after(hash(more[4]), &pair));
    }
}
