//! What the tables of a bridge can write into the registers `reg0`..`reg15`, for `overlap`:
//! two flows that match different register bits (`reg0=0x80/0x80` vs `reg0=0x100/0x100`, OVN's
//! ACL hint bits) can only both match a packet if some path through the pipeline sets both
//! bits. Registers are 0 when a packet enters the bridge.
//!
//! Collected while the dump streams (tables come in order): per register bit, the table whose
//! flows write it to 1 with a constant (`set_field`, `load`, also inside `clone(...)` and
//! `write_actions(...)`; `xreg`/`xxreg` and the `NXM_NX_` names map onto the 32-bit registers),
//! or "many" when flows of two tables do; bits written with a value not known from the flow
//! (`move`, `pop`, `multipath`, `bundle_load`, `check_pkt_larger`, ...: any other action
//! naming the register after `->`); which sets of two or more bits one flow writes together;
//! and the jumps (`resubmit`, `goto_table`, `ct(table=N)`).
//!
//! Two bits can be 1 together ([`RegWrites::cosettable`]) unless both are written only by
//! flows of one table S, no flow of S writes both, neither is written otherwise, and S is
//! visited once per path. A path visits a table once when every jump goes forward; a jump
//! back (to its own table or an earlier one) must first write the whole register with a
//! constant, and a flow with two or more jumps must not reach back to S or before. Jumps back
//! and multi-jump flows in tables after the pair's are only known when the dump ends, so such
//! an exclusion is an [`Assumption`] checked then ([`RegWrites::holds`]).
//!
//! A table that writes a whole register with a constant before each jump of each of its flows,
//! and that every path to the pair's table passes, resets the register: only writers from it
//! on count (`RegWrites::reset_before`; OVN's table 41 between ingress and egress). Not seen
//! here: the buckets of groups and what a controller sets in a paused packet
//! (`controller(pause)`).

use std::collections::{BTreeMap, HashSet};

use crate::parse::actions::ActionIter;
use crate::parse::find::Needle;

/// No constant writer yet.
const NONE: u16 = u16::MAX;
/// Constant writers in more than one table.
const MANY: u16 = u16::MAX - 1;

/// Register writes seen so far in one bridge's dump.
#[derive(Debug, Clone)]
pub struct RegWrites {
    /// Per register and bit: the table of the flows writing it to 1, [`NONE`] or [`MANY`].
    one: [[u16; 32]; 16],
    /// Per register and bit: the first table that can see it hold a value not known from the
    /// flows ([`NONE`]: none).
    unknown_from: [[u16; 32]; 16],
    /// (register, bits) a single flow writes to 1 together (two bits or more).
    together: HashSet<(u8, u32)>,
    /// Per register (bit r): a jump back that does not first write all 32 bits with a constant.
    back_unreset: u16,
    /// Per register: bits a flow jumping back writes to 1.
    back_ones: [u32; 16],
    /// The lowest table two jumps of one flow can both reach (the second lowest target).
    multi_from: u16,
    /// Per register and bit: the highest table writing it to 1, and the highest other one
    /// ([`NONE`]: none), for writers after a [`Reset`] table.
    last_one: [[u16; 32]; 16],
    prev_one: [[u16; 32]; 16],
    /// Per first table that can see them: the bits (per register) holding a value not known
    /// from the flows.
    unknown_by_from: BTreeMap<u16, [u32; 16]>,
    /// Per table: what makes it a register reset ([`RegWrites::reset_before`]).
    tables: BTreeMap<u16, TableFacts>,
    /// Per jump target: the lowest table jumping to it.
    jumped_from: BTreeMap<u16, u16>,
    /// The (table, target) of the last jump noted in `jumped_from`.
    last_jump: (u16, u16),
    /// Per table: the lowest target of its jumps back (to it or before) outside `clone(...)`.
    back_to: BTreeMap<u16, u16>,
    /// Per table: the lowest second-lowest target of its flows with two jumps or more.
    multi_by_src: BTreeMap<u16, u16>,
    /// The last table seen, and whether a table came before one seen already.
    last_table: u16,
    disordered: bool,
    /// [`RegWrites::reset_before`] of each register for `last_table`, found when it starts.
    resets: [Option<u16>; 16],
}

/// What one table's flows do to the registers, for finding reset tables.
#[derive(Debug, Clone, Copy, Default)]
struct TableFacts {
    /// Registers (bit r) that some flow of the table jumps on without first writing all 32
    /// bits with a constant.
    unclean: u16,
}

impl Default for RegWrites {
    fn default() -> Self {
        Self {
            one: [[NONE; 32]; 16],
            unknown_from: [[NONE; 32]; 16],
            together: HashSet::new(),
            back_unreset: 0,
            back_ones: [0; 16],
            multi_from: NONE,
            last_one: [[NONE; 32]; 16],
            prev_one: [[NONE; 32]; 16],
            unknown_by_from: BTreeMap::new(),
            tables: BTreeMap::new(),
            jumped_from: BTreeMap::new(),
            last_jump: (NONE, NONE),
            back_to: BTreeMap::new(),
            multi_by_src: BTreeMap::new(),
            last_table: 0,
            disordered: false,
            resets: [None; 16],
        }
    }
}

/// An exclusion of a pair that holds if no flow after its table breaks it ([`RegWrites::holds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assumption {
    pub reg: u8,
    /// The two bits.
    pub bits: u32,
    /// The one table writing them (after `reset`, when there is one).
    pub table: u16,
    /// The pair's table.
    pub at: u16,
    /// The table every path to the pair's table passes and which writes the whole register
    /// with a constant before each of its jumps ([`NONE`]: none; writers before it do not
    /// count).
    pub reset: u16,
}

/// One flow's effect on the registers.
#[derive(Debug, Default)]
struct FlowWrites {
    /// Per register: (bits written with a constant, of which to 1).
    constant: [(u32, u32); 16],
    /// Per register: bits holding a value not known from the flow, now.
    unknown: [u32; 16],
    jumps: Vec<u16>,
    /// Per jump (same order as `jumps`): the unknown bits per register when it is taken.
    unknown_at_jump: Vec<[u32; 16]>,
    /// The stack (`push:F`): the field each entry was pushed from. `pop:F` of an entry pushed
    /// from F gives F back the value it had (OVN saves registers around a lookup this way).
    stack: Vec<String>,
    /// Per register: bits written with a constant since the last jump (and not since
    /// overwritten with an unknown value).
    fresh: [u32; 16],
    /// Per jump: the registers (bit r) whose 32 bits were all `fresh` when it was taken, and
    /// whether it is inside `clone(...)` (whose changes are undone after it).
    clean_at_jump: Vec<(u16, bool)>,
    /// Nesting depth of `clone(...)`.
    in_clone: usize,
}

/// The 32-bit registers a field name covers: (first register, number of registers).
fn reg_span(name: &str) -> Option<(usize, usize)> {
    // Case-insensitive prefixes, without allocating.
    let strip = |p: &str| {
        name.get(..p.len())
            .filter(|h| h.eq_ignore_ascii_case(p))
            .map(|_| &name[p.len()..])
    };
    let (n, width) = if let Some(n) = strip("nxm_nx_xxreg").or_else(|| strip("xxreg")) {
        (n, 4)
    } else if let Some(n) = strip("oxm_of_pkt_reg").or_else(|| strip("xreg")) {
        (n, 2)
    } else if let Some(n) = strip("nxm_nx_reg").or_else(|| strip("reg")) {
        (n, 1)
    } else {
        return None;
    };
    let n: usize = n.parse().ok()?;
    let first = n * width;
    (first + width <= 16).then_some((first, width))
}

/// A field reference `NAME`, `NAME[]`, `NAME[a..b]` or `NAME[n]`: its registers and the bit
/// mask within the field (as a 128-bit value, low bits first).
pub(crate) fn field_bits(s: &str) -> Option<((usize, usize), u128)> {
    let s = s.trim();
    let (name, range) = match s.find('[') {
        Some(i) => (&s[..i], s[i + 1..].strip_suffix(']')?),
        None => (s, ""),
    };
    let span = reg_span(name)?;
    Some((span, range_mask(range, 32 * span.1 as u32)?))
}

/// The bits a subfield's range names (`a..b` or `n`, as in `NAME[a..b]`, `NAME[n]`) as a mask,
/// low bits first; an empty range names all `width` bits. None when the range is malformed
/// or reaches past `width`.
pub(crate) fn range_mask(range: &str, width: u32) -> Option<u128> {
    let bits_below = |n: u32| {
        if n >= 128 {
            u128::MAX
        } else {
            (1u128 << n) - 1
        }
    };
    if range.is_empty() {
        return Some(bits_below(width));
    }
    let (a, b) = match range.split_once("..") {
        Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
        None => {
            let n = range.parse::<u32>().ok()?;
            (n, n)
        }
    };
    if a > b || b >= width {
        return None;
    }
    Some(bits_below(b + 1) & !bits_below(a))
}

pub(crate) fn number(s: &str) -> Option<u128> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u128::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Splits a field-wide (value, mask) into per-register 32-bit parts; register `first` holds
/// the most significant 32 bits.
pub(crate) fn per_reg(
    span: (usize, usize),
    value: u128,
    mask: u128,
    mut f: impl FnMut(usize, u32, u32),
) {
    let (first, n) = span;
    for k in 0..n {
        let shift = 32 * (n - 1 - k) as u32;
        let m = (mask >> shift) as u32;
        if m != 0 {
            f(first + k, (value >> shift) as u32, m);
        }
    }
}

impl FlowWrites {
    fn constant(&mut self, span: (usize, usize), value: u128, mask: u128) {
        per_reg(span, value, mask, |r, v, m| {
            let (w, o) = &mut self.constant[r];
            *w |= m;
            *o = (*o & !m) | (v & m);
            self.fresh[r] |= m;
        });
    }

    fn unknown(&mut self, span: (usize, usize), mask: u128) {
        per_reg(span, 0, mask, |r, _, m| {
            self.unknown[r] |= m;
            self.fresh[r] &= !m;
        });
    }

    fn jump(&mut self, target: u16) {
        self.jumps.push(target);
        self.unknown_at_jump.push(self.unknown);
        let clean = (0..16).filter(|&r| self.fresh[r] == u32::MAX);
        self.clean_at_jump
            .push((clean.fold(0, |acc, r| acc | 1 << r), self.in_clone > 0));
        self.fresh = [0; 16];
    }

    /// `set_field:V[/M]->F` into a register: a constant, or a value not known.
    fn set_field(&mut self, arg: &str) {
        let Some((val, field)) = arg.split_once("->") else {
            return;
        };
        let Some((span, full)) = field_bits(field) else {
            return;
        };
        let (v, m) = match val.split_once('/') {
            Some((v, m)) => (number(v), number(m)),
            None => (number(val), Some(full)),
        };
        match (v, m) {
            (Some(v), Some(m)) => self.constant(span, v, m & full),
            _ => self.unknown(span, full),
        }
    }

    /// `load:V->F[a..b]` into a register.
    fn load(&mut self, arg: &str) {
        let Some((val, field)) = arg.split_once("->") else {
            return;
        };
        let Some((span, mask)) = field_bits(field) else {
            return;
        };
        match number(val) {
            Some(v) => {
                let shift = mask.trailing_zeros();
                self.constant(span, v.checked_shl(shift).unwrap_or(0), mask);
            }
            None => self.unknown(span, mask),
        }
    }

    /// `pop:F`: F gets back its own saved value (an entry pushed from F before any write of
    /// this flow, as OVN does), or a value not known.
    fn pop(&mut self, arg: &str) {
        let from = self.stack.pop();
        let Some((span, mask)) = field_bits(arg) else {
            return;
        };
        if from.as_deref() == Some(arg.trim()) {
            per_reg(span, 0, mask, |r, _, m| {
                self.unknown[r] &= !m;
                self.constant[r].0 &= !m;
                self.fresh[r] &= !m;
            });
        } else {
            self.unknown(span, mask);
        }
    }

    /// Reads a list of actions (recursing into `clone(...)` and `write_actions(...)`).
    fn read(&mut self, actions: &str, depth: usize) {
        for a in ActionIter::new(actions) {
            match (a.name, a.arg) {
                ("set_field", Some(arg)) => self.set_field(arg),
                ("load", Some(arg)) => self.load(arg),
                ("resubmit", Some(arg)) => {
                    let table = arg.split(',').nth(1).map(str::trim);
                    match table.and_then(|t| t.parse::<u16>().ok()) {
                        Some(t) => self.jump(t),
                        // resubmit(port) and resubmit(port,): the same table.
                        None => self.jump(NONE),
                    }
                }
                ("goto_table", Some(arg)) => {
                    if let Ok(t) = arg.trim().parse::<u16>() {
                        self.jump(t);
                    }
                }
                ("ct", Some(arg)) => {
                    if let Some(t) = arg
                        .split(',')
                        .find_map(|p| p.trim().strip_prefix("table="))
                        .and_then(|t| t.parse::<u16>().ok())
                    {
                        self.jump(t);
                    }
                }
                ("clone", Some(arg)) if depth < 4 => {
                    // The clone's changes are undone after it.
                    let fresh = self.fresh;
                    self.in_clone += 1;
                    self.read(arg, depth + 1);
                    self.in_clone -= 1;
                    self.fresh = fresh;
                }
                ("write_actions", Some(arg)) if depth < 4 => self.read(arg, depth + 1),
                // What learn writes goes into the flow it adds, not into this packet.
                ("learn", _) => {}
                ("push", Some(arg)) => self.stack.push(arg.trim().to_string()),
                ("pop", Some(arg)) => self.pop(arg),
                _ => {
                    // Any other action writing a register (`move:A->B`, `pop:B`,
                    // `multipath(...,B)`, `bundle_load(...,B)`, `check_pkt_larger(N)->B`).
                    let t = a.text;
                    let dst = t.rsplit_once("->").map(|(_, d)| d).or_else(|| {
                        matches!(a.name, "multipath" | "bundle_load")
                            .then(|| a.arg.and_then(|x| x.rsplit(',').next()))
                            .flatten()
                    });
                    if let Some((span, mask)) = dst.and_then(field_bits) {
                        self.unknown(span, mask);
                    }
                }
            }
        }
    }
}

/// What the actions of a flow that writes a register or jumps hold (at least one of).
static WRITES_OR_JUMPS: [Needle; 6] = [
    Needle::new(b"->"),
    Needle::new(b"resubmit"),
    Needle::new(b"table"),
    Needle::new(b"pop:"),
    Needle::new(b"multipath"),
    Needle::new(b"bundle_load"),
];

impl RegWrites {
    /// Notes the writes and jumps of a flow of `table` with these actions.
    pub fn add(&mut self, table: u16, actions: &str) {
        self.see_table(table);
        // Most flows neither write a register nor jump: one look at the text settles those.
        let b = actions.as_bytes();
        if !WRITES_OR_JUMPS.iter().any(|n| n.is_in(b)) {
            return;
        }
        let mut w = FlowWrites::default();
        w.read(actions, 0);
        // A resubmit without a table goes to the flow's own table.
        for j in &mut w.jumps {
            if *j == NONE {
                *j = table;
            }
        }
        let back = w.jumps.iter().any(|&j| j <= table);
        self.note_jumps(table, &w);
        // Values not known from the flows: seen by the tables a jump reaches while they are
        // held, and by the tables after this one when the flow ends with them.
        for (k, &j) in w.jumps.iter().enumerate() {
            let held = w.unknown_at_jump.get(k).copied().unwrap_or([u32::MAX; 16]);
            for (r, &m) in held.iter().enumerate() {
                self.mark_unknown(r, m, j);
            }
        }
        for r in 0..16 {
            let m = w.unknown[r];
            self.mark_unknown(r, m, table.saturating_add(1));
        }
        if w.jumps.len() >= 2 {
            // A table is visited twice only if two of the jumps can reach it: paths only go
            // forward (jumps back are checked above), so both targets must be at or before it.
            let mut targets = w.jumps.clone();
            targets.sort_unstable();
            self.multi_from = self.multi_from.min(targets[1]);
        }
        for r in 0..16 {
            let (written, ones) = w.constant[r];
            let ones = ones & written & !w.unknown[r];
            if back {
                if written != u32::MAX || w.unknown[r] != 0 {
                    self.back_unreset |= 1 << r;
                }
                self.back_ones[r] |= ones;
            }
            if ones.count_ones() >= 2 {
                self.together.insert((r as u8, ones));
            }
            let mut bits = ones;
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let cur = &mut self.one[r][b];
                *cur = match *cur {
                    NONE => table,
                    t if t == table => t,
                    _ => MANY,
                };
                let (last, prev) = (&mut self.last_one[r][b], &mut self.prev_one[r][b]);
                if *last == NONE || table > *last {
                    if *last != NONE {
                        *prev = *last;
                    }
                    *last = table;
                } else if table != *last && (*prev == NONE || table > *prev) {
                    *prev = table;
                }
            }
        }
    }

    /// A flow of `table` starts: the table is known, with the reach of the tables before it.
    fn see_table(&mut self, table: u16) {
        if table == self.last_table && !self.tables.is_empty() {
            return;
        }
        if table < self.last_table {
            self.disordered = true;
        }
        self.last_table = self.last_table.max(table);
        self.tables.entry(table).or_default();
        // The tables before this one are complete: their resets are known.
        self.resets = self.resets_before(table);
    }

    /// The jumps of one flow of `table`: how far they reach, which leave a register not
    /// wholly written, which go back, and which flow jumps twice.
    fn note_jumps(&mut self, table: u16, w: &FlowWrites) {
        let mut unclean = 0u16;
        for (k, &j) in w.jumps.iter().enumerate() {
            if self.last_jump != (table, j) {
                // Flows of a table mostly jump to the same few tables: one look-up each.
                self.last_jump = (table, j);
                let from = self.jumped_from.entry(j).or_insert(table);
                *from = (*from).min(table);
            }
            let (clean, cloned) = w.clean_at_jump.get(k).copied().unwrap_or((0, false));
            unclean |= !clean;
            if j < table && !cloned {
                let b = self.back_to.entry(table).or_insert(j);
                *b = (*b).min(j);
            }
        }
        if let Some(f) = self.tables.get_mut(&table) {
            f.unclean |= unclean;
        }
        if w.jumps.len() >= 2 {
            let mut targets = w.jumps.clone();
            targets.sort_unstable();
            let m = self.multi_by_src.entry(table).or_insert(targets[1]);
            *m = (*m).min(targets[1]);
        }
    }

    /// The reset table of register `r` closest before `table`: a table R whose flows all
    /// write the whole register with a constant before each jump, and which every path to
    /// `table` passes: no flow of a table before R jumps past it to `table` or before (a jump
    /// further, like OVN's calls of its lookup tables 66 to 80 from the ingress pipeline, comes
    /// back to `table` only by a jump back). From R on, the register holds what R wrote and
    /// what the tables after it wrote, provided no flow after R jumps back to `table` or before
    /// outside `clone(...)` (checked by [`RegWrites::holds`]). OVN's table 41
    /// (`set_field:0->reg0,...,set_field:0->reg9` between the ingress and egress pipelines) is
    /// one.
    fn reset_before(&self, r: usize, table: u16) -> Option<u16> {
        if self.disordered {
            return None;
        }
        if table == self.last_table {
            return self.resets[r];
        }
        self.resets_before(table)[r]
    }

    /// [`RegWrites::reset_before`] of every register, in one walk down the tables and jump
    /// targets before `table`.
    fn resets_before(&self, table: u16) -> [Option<u16>; 16] {
        let mut found = [None; 16];
        // The lowest table jumping to a target in (t, table].
        let mut lowest = u16::MAX;
        let mut targets = self.jumped_from.range(..=table).rev().peekable();
        for (&t, f) in self.tables.range(..table).rev() {
            while let Some((_, &from)) = targets.next_if(|(&to, _)| to > t) {
                lowest = lowest.min(from);
            }
            if lowest < t {
                continue;
            }
            for (r, slot) in found.iter_mut().enumerate() {
                if slot.is_none() && f.unclean & (1 << r) == 0 {
                    *slot = Some(t);
                }
            }
            if found.iter().all(Option::is_some) {
                break;
            }
        }
        found
    }

    /// The one table after `reset` that writes bit `b` of `r` to 1, if one does.
    fn only_writer_from(&self, r: usize, b: u32, reset: u16) -> Option<u16> {
        let (last, prev) = (self.last_one[r][b as usize], self.prev_one[r][b as usize]);
        (last != NONE && last >= reset && (prev == NONE || prev < reset)).then_some(last)
    }

    /// Whether, counting only the writes from `reset` on, bits `x` and `y` of `r` can be 1
    /// together at `table`; else the assumption that says they cannot.
    fn cosettable_after(&self, r: usize, x: u32, y: u32, table: u16) -> Result<(), Assumption> {
        let Some(reset) = self.reset_before(r, table) else {
            return Ok(());
        };
        let bits = (1u32 << x) | (1u32 << y);
        let unknown = self
            .unknown_by_from
            .range(reset + 1..=table)
            .any(|(_, m)| m[r] & bits != 0);
        let (tx, ty) = (
            self.only_writer_from(r, x, reset),
            self.only_writer_from(r, y, reset),
        );
        let (Some(s), false) = (tx.filter(|&s| Some(s) == ty), unknown) else {
            return Ok(());
        };
        self.exclusive(Assumption {
            reg: r as u8,
            bits,
            table: s,
            at: table,
            reset,
        })
    }

    /// `Err(a)` when the bits of `a`, written by one table only, are never written together
    /// by one flow and [`Assumption`] `a` holds so far.
    fn exclusive(&self, a: Assumption) -> Result<(), Assumption> {
        let together = self
            .together
            .iter()
            .any(|&(r, m)| r == a.reg && m & a.bits == a.bits);
        if !together && self.holds(&a) {
            Err(a)
        } else {
            Ok(())
        }
    }

    fn mark_unknown(&mut self, r: usize, mut m: u32, from: u16) {
        while m != 0 {
            let b = m.trailing_zeros() as usize;
            m &= m - 1;
            let cur = &mut self.unknown_from[r][b];
            *cur = (*cur).min(from);
            self.unknown_by_from.entry(from).or_insert([0; 16])[r] |= 1 << b;
        }
    }

    /// Whether bits `x` and `y` of register `r` can both be 1 in a packet matched in `table`,
    /// as far as the flows seen so far tell: `Err(assumption)` when they cannot, provided no
    /// flow seen later breaks the [`Assumption`].
    pub fn cosettable(&self, r: usize, x: u32, y: u32, table: u16) -> Result<(), Assumption> {
        self.cosettable_whole(r, x, y, table)
            .and_then(|()| self.cosettable_after(r, x, y, table))
    }

    /// [`RegWrites::cosettable`] counting every write of the bridge.
    fn cosettable_whole(&self, r: usize, x: u32, y: u32, table: u16) -> Result<(), Assumption> {
        let bits = (1u32 << x) | (1u32 << y);
        let (tx, ty) = (self.one[r][x as usize], self.one[r][y as usize]);
        let unknown = |b: u32| self.unknown_from[r][b as usize] <= table;
        if unknown(x) || unknown(y) || tx != ty || tx == NONE || tx == MANY {
            // Written otherwise, by two tables, or never by a flow (then not ours to judge).
            return Ok(());
        }
        self.exclusive(Assumption {
            reg: r as u8,
            bits,
            table: tx,
            at: table,
            reset: NONE,
        })
    }

    /// Whether the flows seen so far leave `a` standing: every jump back writes the whole
    /// register first and sets neither bit, and no flow with two or more jumps reaches back to
    /// the writing table or before. With a reset table: the tables came in order, no flow
    /// after the reset jumps back to the pair's table or before outside `clone(...)`, and only the flows
    /// after the reset count for jumping twice (each jump of the reset starts from its
    /// constant, and the flows before it reach no further than it).
    pub fn holds(&self, a: &Assumption) -> bool {
        let r = usize::from(a.reg);
        if self.back_unreset & (1 << r) != 0 || self.back_ones[r] & a.bits != 0 {
            return false;
        }
        if a.reset == NONE {
            return self.multi_from == NONE || self.multi_from > a.table;
        }
        let after = a.reset.saturating_add(1)..;
        !self.disordered
            && self.back_to.range(after.clone()).all(|(_, &to)| to > a.at)
            && self.multi_by_src.range(after).all(|(_, &t)| t > a.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(flows: &[(u16, &str)]) -> RegWrites {
        let mut w = RegWrites::default();
        for &(t, a) in flows {
            w.add(t, a);
        }
        w
    }

    #[test]
    fn ovn_acl_hint_bits_set_one_at_a_time_are_exclusive() {
        // OVN's ls_in_acl_hint (as in tests/fixtures/ovn): reg0 bits 7 and 9, 8 and 10, 8 and 9
        // together, never 7 with 8 or 9 with 10.
        let w = writes(&[
            (15, "set_field:0x80000000000000000000000000/0x80000000000000000000000000->xxreg0,set_field:0x200000000000000000000000000/0x200000000000000000000000000->xxreg0,resubmit(,16)"),
            (15, "set_field:0x100000000000000000000000000/0x100000000000000000000000000->xxreg0,set_field:0x400000000000000000000000000/0x400000000000000000000000000->xxreg0,resubmit(,16)"),
            (15, "set_field:0x100000000000000000000000000/0x100000000000000000000000000->xxreg0,set_field:0x200000000000000000000000000/0x200000000000000000000000000->xxreg0,resubmit(,16)"),
            // A jump back that clears reg0 first (OVN's table 65 clone).
            (65, "clone(ct_clear,set_field:0->reg0,set_field:0x3->reg11,resubmit(,8))"),
        ]);
        let a = Assumption {
            reg: 0,
            bits: 0x180,
            table: 15,
            at: 16,
            reset: NONE,
        };
        assert_eq!(w.cosettable(0, 7, 8, 16), Err(a));
        assert_eq!(w.cosettable(0, 9, 10, 16).map_err(|a| a.bits), Err(0x600));
        assert_eq!(w.cosettable(0, 7, 9, 16), Ok(()));
        assert_eq!(w.cosettable(0, 8, 9, 16), Ok(()));
        // Bits no flow writes: not judged.
        assert_eq!(w.cosettable(0, 3, 7, 16), Ok(()));
    }

    /// br-int of the OVN capture (tests/fixtures/ovn/healthy_br-int.txt), cut to the flows
    /// that decide whether the egress ACL hint bits (reg0 bits 7 and 8) of table 46 can be 1
    /// together: ingress (15) and egress (45) both write them, and table 41 writes all of
    /// reg0..reg9 to 0 between the two. `extra` flows are put in table order.
    fn ovn_egress(extra: &[(u16, &str)]) -> RegWrites {
        let hint7 = "set_field:0x80000000000000000000000000/0x80000000000000000000000000->xxreg0,set_field:0x200000000000000000000000000/0x200000000000000000000000000->xxreg0";
        let hint8 = "set_field:0x100000000000000000000000000/0x100000000000000000000000000->xxreg0,set_field:0x400000000000000000000000000/0x400000000000000000000000000->xxreg0";
        let (i7, i8) = (
            format!("{hint7},resubmit(,16)"),
            format!("{hint8},resubmit(,16)"),
        );
        let (e7, e8) = (
            format!("{hint7},resubmit(,46)"),
            format!("{hint8},resubmit(,46)"),
        );
        let mut flows: Vec<(u16, &str)> = vec![
            // A call of a lookup table past the pipeline, and the flow after it.
            (8, "set_field:0/0x1000->reg10,resubmit(,73),move:NXM_NX_REG10[12]->NXM_NX_XXREG0[111],resubmit(,9)"),
            (15, &i7),
            (15, &i8),
            (39, "set_field:0x1->reg15,resubmit(,41),set_field:0x8000->reg15,resubmit(,40)"),
            (40, "set_field:0x8->reg11,set_field:0x9->reg12,resubmit(,41)"),
            (41, "drop"),
            (41, "set_field:0->reg0,set_field:0->reg1,set_field:0->reg2,set_field:0->reg3,set_field:0->reg4,set_field:0->reg5,set_field:0->reg6,set_field:0->reg7,set_field:0->reg8,set_field:0->reg9,resubmit(,42)"),
            (44, "ct(table=45,zone=NXM_NX_REG13[0..15],nat)"),
            (45, &e7),
            (45, &e8),
            // The next logical datapath: a clone back to the ingress pipeline.
            (65, "clone(ct_clear,set_field:0x3->metadata,set_field:0->reg0,set_field:0->reg1,resubmit(,8))"),
            (73, "resubmit(,74)"),
        ];
        flows.extend_from_slice(extra);
        flows.sort_by_key(|f| f.0);
        writes(&flows)
    }

    #[test]
    fn a_table_writing_the_whole_register_separates_ingress_from_egress() {
        let w = ovn_egress(&[]);
        let a = w.cosettable(0, 7, 8, 46).unwrap_err();
        assert_eq!((a.table, a.reset, a.at, a.bits), (45, 41, 46, 0x180));
        assert!(w.holds(&a));
        assert!(w.cosettable(0, 9, 10, 46).is_err());
        // 45 writes 7 and 9 together.
        assert_eq!(w.cosettable(0, 7, 9, 46), Ok(()));
        // Before the reset both tables count (15 and 45 write the bits).
        assert_eq!(w.cosettable_after(0, 7, 8, 41), Ok(()));
    }

    #[test]
    fn what_keeps_a_table_from_separating() {
        for (why, extra) in [
            (
                "a flow of the reset table jumps without writing reg0",
                vec![(41, "set_field:0->reg1,resubmit(,42)")],
            ),
            (
                "a second jump of the reset follows a call that can set the bits",
                vec![(41, "set_field:0->reg0,resubmit(,15),resubmit(,42)")],
            ),
            (
                "the value written is not a constant",
                vec![(
                    41,
                    "set_field:0->reg0,move:NXM_NX_REG1[]->NXM_NX_REG0[],resubmit(,42)",
                )],
            ),
            (
                "a table before it jumps past it",
                vec![(40, "resubmit(,44)")],
            ),
            (
                "a clone before it jumps past it",
                vec![(40, "clone(resubmit(,43))")],
            ),
            (
                "a table after it also writes one bit",
                vec![(43, "set_field:0x100/0x100->reg0,resubmit(,44)")],
            ),
            (
                "a table after it writes a bit with an unknown value",
                vec![(42, "move:NXM_NX_REG1[8]->NXM_NX_REG0[8],resubmit(,43)")],
            ),
            (
                "a flow after it jumps twice to before the writer",
                vec![(42, "resubmit(,45),resubmit(,43)")],
            ),
        ] {
            let w = ovn_egress(&extra);
            let r = w.cosettable(0, 7, 8, 46);
            let after = r.is_err() && r.is_err_and(|a| w.holds(&a));
            assert!(!after, "{why}: {r:?}");
        }
        // Known only when the dump ends: a jump back from after the pair, outside a clone.
        let a = ovn_egress(&[]).cosettable(0, 7, 8, 46).unwrap_err();
        assert!(!ovn_egress(&[(70, "resubmit(,43)")]).holds(&a));
        assert!(ovn_egress(&[(70, "clone(set_field:0->reg0,resubmit(,43))")]).holds(&a));
        // Or the tables out of order.
        let mut w = ovn_egress(&[]);
        w.add(30, "resubmit(,31)");
        assert!(!w.holds(&a));
    }

    #[test]
    fn what_makes_bits_cosettable() {
        let hint = "load:0x1->NXM_NX_REG0[7],resubmit(,16)";
        let other = "load:0x1->NXM_NX_REG0[8],resubmit(,16)";
        // Two tables on one path.
        assert_eq!(
            writes(&[(15, hint), (14, other)]).cosettable(0, 7, 8, 16),
            Ok(())
        );
        // One table, exclusive.
        assert!(writes(&[(15, hint), (15, other)])
            .cosettable(0, 7, 8, 16)
            .is_err());
        // A value not known from the flow.
        let w = writes(&[
            (15, hint),
            (15, other),
            (3, "move:NXM_NX_REG1[]->NXM_NX_REG0[]"),
        ]);
        assert_eq!(w.cosettable(0, 7, 8, 16), Ok(()));
        let w = writes(&[
            (15, hint),
            (15, other),
            (3, "check_pkt_larger(1514)->NXM_NX_REG0[8]"),
        ]);
        assert_eq!(w.cosettable(0, 7, 8, 16), Ok(()));
        // A jump back without clearing reg0: table 15 can be visited twice.
        let w = writes(&[(15, hint), (15, other), (40, "resubmit(,8)")]);
        assert_eq!(w.cosettable(0, 7, 8, 16), Ok(()));
        // ... or one that clears it: fine; one that sets bit 7 on the way back: not.
        let w = writes(&[
            (15, hint),
            (15, other),
            (40, "set_field:0->reg0,resubmit(,8)"),
        ]);
        assert!(w.cosettable(0, 7, 8, 16).is_err());
        let w = writes(&[
            (15, hint),
            (15, other),
            (40, "set_field:0x80->reg0,resubmit(,8)"),
        ]);
        assert_eq!(w.cosettable(0, 7, 8, 16), Ok(()));
        // Two jumps from one flow reaching table 15 or before.
        let w = writes(&[(15, hint), (15, other), (10, "resubmit(,15),resubmit(,15)")]);
        assert_eq!(w.cosettable(0, 7, 8, 16), Ok(()));
        let w = writes(&[(15, hint), (15, other), (10, "resubmit(,11),ct(table=14)")]);
        assert_eq!(w.cosettable(0, 7, 8, 16), Ok(()));
        // One of them past it (OVN's lookups in table 67 before going on): fine.
        let w = writes(&[(15, hint), (15, other), (9, "resubmit(,67),resubmit(,10)")]);
        assert!(w.cosettable(0, 7, 8, 16).is_err());
        // A register saved and restored around a lookup is not written; a pop alone is.
        let w = writes(&[
            (15, hint),
            (15, other),
            (
                9,
                "push:NXM_NX_REG0[],resubmit(,67),pop:NXM_NX_REG0[],resubmit(,10)",
            ),
        ]);
        assert!(w.cosettable(0, 7, 8, 16).is_err());
        let w = writes(&[
            (15, hint),
            (15, other),
            (9, "pop:NXM_NX_REG0[],resubmit(,10)"),
        ]);
        assert_eq!(w.cosettable(0, 7, 8, 16), Ok(()));
        // OVN's lookup_arp: reg0 holds arp.spa while table 67 runs, then gets its value back;
        // tables from 67 on see an unknown reg0, table 16 does not.
        let w = writes(&[
            (15, hint),
            (15, other),
            (9, "push:NXM_NX_REG0[],push:NXM_OF_ARP_SPA[],pop:NXM_NX_REG0[],resubmit(,67),pop:NXM_NX_REG0[],resubmit(,10)"),
        ]);
        assert!(w.cosettable(0, 7, 8, 16).is_err());
        assert_eq!(w.cosettable(0, 7, 8, 70), Ok(()));
        // An unknown value written in table 20 is seen from table 21 on.
        let w = writes(&[
            (15, hint),
            (15, other),
            (20, "move:NXM_NX_REG1[]->NXM_NX_REG0[]"),
        ]);
        assert!(w.cosettable(0, 7, 8, 16).is_err());
        assert_eq!(w.cosettable(0, 7, 8, 21), Ok(()));
        let w = writes(&[(15, hint), (15, other), (10, "resubmit(,20),resubmit(,21)")]);
        assert!(w.cosettable(0, 7, 8, 16).is_err());
        // A resubmit to its own table is a jump back.
        let w = writes(&[(15, hint), (15, other), (20, "resubmit(,20)")]);
        assert_eq!(w.cosettable(0, 7, 8, 16), Ok(()));
    }

    #[test]
    fn a_later_jump_back_breaks_an_assumption() {
        let mut w = writes(&[
            (15, "load:0x1->NXM_NX_REG0[7],resubmit(,16)"),
            (15, "load:0x1->NXM_NX_REG0[8],resubmit(,16)"),
        ]);
        let a = w.cosettable(0, 7, 8, 16).unwrap_err();
        assert!(w.holds(&a));
        w.add(65, "resubmit(,8)");
        assert!(!w.holds(&a));
    }

    #[test]
    fn field_names_and_ranges() {
        assert_eq!(field_bits("reg0"), Some(((0, 1), 0xffff_ffff)));
        assert_eq!(field_bits("NXM_NX_REG3[0..15]"), Some(((3, 1), 0xffff)));
        assert_eq!(field_bits("NXM_NX_REG9[1]"), Some(((9, 1), 0x2)));
        assert_eq!(
            field_bits("NXM_NX_XXREG0[96..127]").map(|x| x.0),
            Some((0, 4))
        );
        assert_eq!(field_bits("xreg1").map(|x| x.0), Some((2, 2)));
        assert_eq!(field_bits("OXM_OF_PKT_REG7[]").map(|x| x.0), Some((14, 2)));
        assert_eq!(field_bits("xxreg4"), None);
        assert_eq!(field_bits("reg16"), None);
        assert_eq!(field_bits("NXM_NX_REG0[5..3]"), None);
        assert_eq!(field_bits("metadata"), None);
        // xxreg0 bits 96..127 are reg0.
        let mut w = FlowWrites::default();
        w.read("load:0x1->NXM_NX_XXREG0[103]", 0);
        assert_eq!(w.constant[0], (0x80, 0x80));
        let mut w = FlowWrites::default();
        w.read("set_field:0x5->xreg0", 0);
        assert_eq!(
            (w.constant[0], w.constant[1]),
            ((u32::MAX, 0), (u32::MAX, 5))
        );
    }
}
