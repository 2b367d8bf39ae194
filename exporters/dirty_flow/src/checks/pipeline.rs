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
//! an exclusion is an [`Assumption`] checked then ([`RegWrites::holds`]). Not seen here: the
//! buckets of groups and what a controller sets in a paused packet (`controller(pause)`).

use std::collections::HashSet;

use crate::parse::actions::ActionIter;

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
        }
    }
}

/// An exclusion of a pair that holds if no flow after its table breaks it ([`RegWrites::holds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assumption {
    pub reg: u8,
    /// The two bits.
    pub bits: u32,
    /// The one table writing them.
    pub table: u16,
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
fn field_bits(s: &str) -> Option<((usize, usize), u128)> {
    let s = s.trim();
    let (name, range) = match s.find('[') {
        Some(i) => (&s[..i], s[i + 1..].strip_suffix(']')?),
        None => (s, ""),
    };
    let span = reg_span(name)?;
    let width = 32 * span.1 as u32;
    let full = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    let mask = if range.is_empty() {
        full
    } else {
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
        let hi = if b == 127 {
            u128::MAX
        } else {
            (1u128 << (b + 1)) - 1
        };
        hi & !((1u128 << a) - 1)
    };
    Some((span, mask))
}

fn number(s: &str) -> Option<u128> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u128::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Splits a field-wide (value, mask) into per-register 32-bit parts; register `first` holds
/// the most significant 32 bits.
fn per_reg(span: (usize, usize), value: u128, mask: u128, mut f: impl FnMut(usize, u32, u32)) {
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
        });
    }

    fn unknown(&mut self, span: (usize, usize), mask: u128) {
        per_reg(span, 0, mask, |r, _, m| self.unknown[r] |= m);
    }

    fn jump(&mut self, target: u16) {
        self.jumps.push(target);
        self.unknown_at_jump.push(self.unknown);
    }

    /// Reads a list of actions (recursing into `clone(...)` and `write_actions(...)`).
    fn read(&mut self, actions: &str, depth: usize) {
        for a in ActionIter::new(actions) {
            match (a.name, a.arg) {
                ("set_field", Some(arg)) => {
                    let Some((val, field)) = arg.split_once("->") else {
                        continue;
                    };
                    let Some((span, full)) = field_bits(field) else {
                        continue;
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
                ("load", Some(arg)) => {
                    let Some((val, field)) = arg.split_once("->") else {
                        continue;
                    };
                    let Some((span, mask)) = field_bits(field) else {
                        continue;
                    };
                    match number(val) {
                        Some(v) => {
                            let shift = mask.trailing_zeros();
                            self.constant(span, v.checked_shl(shift).unwrap_or(0), mask);
                        }
                        None => self.unknown(span, mask),
                    }
                }
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
                ("clone" | "write_actions", Some(arg)) if depth < 4 => self.read(arg, depth + 1),
                // What learn writes goes into the flow it adds, not into this packet.
                ("learn", _) => {}
                ("push", Some(arg)) => self.stack.push(arg.trim().to_string()),
                ("pop", Some(arg)) => {
                    let from = self.stack.pop();
                    let Some((span, mask)) = field_bits(arg) else {
                        continue;
                    };
                    if from.as_deref() == Some(arg.trim()) {
                        // Its own saved value back: what it held before (an entry pushed
                        // before any write of this flow, as OVN does).
                        per_reg(span, 0, mask, |r, _, m| {
                            self.unknown[r] &= !m;
                            self.constant[r].0 &= !m;
                        });
                    } else {
                        self.unknown(span, mask);
                    }
                }
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

impl RegWrites {
    /// Notes the writes and jumps of a flow of `table` with these actions.
    pub fn add(&mut self, table: u16, actions: &str) {
        // Most flows neither write a register nor jump: one look at the text settles those.
        let b = actions.as_bytes();
        let maybe = memchr::memmem::find(b, b"->").is_some()
            || memchr::memmem::find(b, b"resubmit").is_some()
            || memchr::memmem::find(b, b"table").is_some()
            || memchr::memmem::find(b, b"pop:").is_some()
            || memchr::memmem::find(b, b"multipath").is_some()
            || memchr::memmem::find(b, b"bundle_load").is_some();
        if !maybe {
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
            }
        }
    }

    fn mark_unknown(&mut self, r: usize, mut m: u32, from: u16) {
        while m != 0 {
            let b = m.trailing_zeros() as usize;
            m &= m - 1;
            let cur = &mut self.unknown_from[r][b];
            *cur = (*cur).min(from);
        }
    }

    /// Whether bits `x` and `y` of register `r` can both be 1 in a packet matched in `table`,
    /// as far as the flows seen so far tell: `Err(assumption)` when they cannot, provided no
    /// flow seen later breaks the [`Assumption`].
    pub fn cosettable(&self, r: usize, x: u32, y: u32, table: u16) -> Result<(), Assumption> {
        let bits = (1u32 << x) | (1u32 << y);
        let (tx, ty) = (self.one[r][x as usize], self.one[r][y as usize]);
        let unknown = |b: u32| self.unknown_from[r][b as usize] <= table;
        if unknown(x) || unknown(y) || tx != ty || tx == NONE || tx == MANY {
            // Written otherwise, by two tables, or never by a flow (then not ours to judge).
            return Ok(());
        }
        if self
            .together
            .iter()
            .any(|&(rr, m)| rr as usize == r && m & bits == bits)
        {
            return Ok(());
        }
        let a = Assumption {
            reg: r as u8,
            bits,
            table: tx,
        };
        if self.holds(&a) {
            Err(a)
        } else {
            Ok(())
        }
    }

    /// Whether the flows seen so far leave `a` standing: every jump back writes the whole
    /// register first and sets neither bit, and no flow with two or more jumps reaches back to
    /// the writing table or before.
    pub fn holds(&self, a: &Assumption) -> bool {
        let r = usize::from(a.reg);
        self.back_unreset & (1 << r) == 0
            && self.back_ones[r] & a.bits == 0
            && (self.multi_from == NONE || self.multi_from > a.table)
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
        };
        assert_eq!(w.cosettable(0, 7, 8, 16), Err(a));
        assert_eq!(w.cosettable(0, 9, 10, 16).map_err(|a| a.bits), Err(0x600));
        assert_eq!(w.cosettable(0, 7, 9, 16), Ok(()));
        assert_eq!(w.cosettable(0, 8, 9, 16), Ok(()));
        // Bits no flow writes: not judged.
        assert_eq!(w.cosettable(0, 3, 7, 16), Ok(()));
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
