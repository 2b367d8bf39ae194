//! Match fields as values under masks, so that two matches can be compared bit by bit.
//!
//! The overlap check and the `match:` conditions of user-defined checks need to know whether two
//! printed matches constrain the same packet bits. Each match item becomes one or more
//! [`FieldMatch`] `(field, value, mask)`: protocol shorthands expand into their prerequisites
//! (`tcp` is `dl_type=0x0800,nw_proto=6`), aliases map to one canonical name (`eth_type` is
//! `dl_type`, `icmp_type` lives in `tp_src` as in OVS), `dl_vlan`/`dl_vlan_pcp` become bits of
//! `vlan_tci`, flag fields (`ct_state=+trk-est`, `tcp_flags=+syn-ack`) become value/mask pairs,
//! and IPv4/IPv6/MAC/integers with a mask or prefix length become 128-bit numbers. A value the
//! parser does not understand becomes an opaque exact value (a hash), which can only be equal or
//! different: the comparison stays correct for equal texts and errs towards "may overlap".

use std::net::Ipv6Addr;

/// One constraint of a match: packets whose `field` bits under `mask` equal `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldMatch<'a> {
    pub field: &'a str,
    /// A hash of `field` ([`field_key`]): constraints are ordered and told apart by it first,
    /// the name compared only when two keys are equal.
    pub key: u64,
    /// True when the value could not be understood; `value` is then a hash of the text.
    pub opaque: bool,
    pub value: u128,
    pub mask: u128,
}

/// The ordering key of a field name (FNV-1a).
pub fn field_key(field: &str) -> u64 {
    fnv1a(field.as_bytes())
}

impl FieldMatch<'_> {
    /// Whether both constrain the same field (in the same notation or not).
    #[inline]
    pub fn same_field(&self, other: &FieldMatch<'_>) -> bool {
        self.key == other.key && self.field == other.field
    }

    /// The order of constraints in an expanded match: by field (key, then name), then notation.
    #[inline]
    pub fn order(&self, other: &FieldMatch<'_>) -> std::cmp::Ordering {
        self.key
            .cmp(&other.key)
            .then_with(|| self.field.cmp(other.field))
            .then(self.opaque.cmp(&other.opaque))
    }

    /// Whether both constraints can hold for one packet.
    pub fn compatible(&self, other: &FieldMatch<'_>) -> bool {
        if self.opaque != other.opaque {
            // Same field printed in two notations we cannot relate: assume they can.
            return true;
        }
        (self.value ^ other.value) & self.mask & other.mask == 0
    }
}

/// The canonical name of a match field (aliases of OVS and OpenFlow 1.2+ OXM names).
pub fn canonical(field: &str) -> &str {
    // Byte-string patterns compile to inline compares (no memcmp call per arm).
    match field.as_bytes() {
        b"eth_type" => "dl_type",
        b"eth_src" => "dl_src",
        b"eth_dst" => "dl_dst",
        b"ip_src" => "nw_src",
        b"ip_dst" => "nw_dst",
        b"ip_proto" => "nw_proto",
        b"ip_frag" => "nw_frag",
        b"ip_ecn" => "nw_ecn",
        b"tcp_src" | b"udp_src" | b"sctp_src" | b"icmp_type" | b"icmpv6_type" => "tp_src",
        b"tcp_dst" | b"udp_dst" | b"sctp_dst" | b"icmp_code" | b"icmpv6_code" => "tp_dst",
        b"tunnel_id" => "tun_id",
        b"in_port_oxm" => "in_port",
        _ => field,
    }
}

/// A canonical field name with its [`field_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Name<'a>(&'a str, u64);

/// A [`Name`] whose key is computed at compile time.
macro_rules! known {
    ($name:literal) => {
        Name($name, const { fnv1a($name.as_bytes()) })
    };
}

/// [`canonical`] with the key of the canonical name: the fields OVS prints most often get
/// theirs from a constant (no hash per constraint), the others hash their name.
fn canonical_name(field: &str) -> Name<'_> {
    match field.as_bytes() {
        b"dl_type" | b"eth_type" => known!("dl_type"),
        b"dl_src" | b"eth_src" => known!("dl_src"),
        b"dl_dst" | b"eth_dst" => known!("dl_dst"),
        b"nw_src" | b"ip_src" => known!("nw_src"),
        b"nw_dst" | b"ip_dst" => known!("nw_dst"),
        b"nw_proto" | b"ip_proto" => known!("nw_proto"),
        b"nw_frag" | b"ip_frag" => known!("nw_frag"),
        b"nw_ecn" | b"ip_ecn" => known!("nw_ecn"),
        b"tp_src" | b"tcp_src" | b"udp_src" | b"sctp_src" | b"icmp_type" | b"icmpv6_type" => {
            known!("tp_src")
        }
        b"tp_dst" | b"tcp_dst" | b"udp_dst" | b"sctp_dst" | b"icmp_code" | b"icmpv6_code" => {
            known!("tp_dst")
        }
        b"tun_id" | b"tunnel_id" => known!("tun_id"),
        b"in_port" | b"in_port_oxm" => known!("in_port"),
        b"dl_vlan" => known!("dl_vlan"),
        b"dl_vlan_pcp" => known!("dl_vlan_pcp"),
        b"vlan_tci" => known!("vlan_tci"),
        b"ct_state" => known!("ct_state"),
        b"ct_mark" => known!("ct_mark"),
        b"ct_zone" => known!("ct_zone"),
        b"tcp_flags" => known!("tcp_flags"),
        b"metadata" => known!("metadata"),
        b"arp_op" => known!("arp_op"),
        b"arp_spa" => known!("arp_spa"),
        b"arp_tpa" => known!("arp_tpa"),
        b"arp_sha" => known!("arp_sha"),
        b"arp_tha" => known!("arp_tha"),
        b"ipv6_src" => known!("ipv6_src"),
        b"ipv6_dst" => known!("ipv6_dst"),
        b"reg0" => known!("reg0"),
        b"reg1" => known!("reg1"),
        b"reg2" => known!("reg2"),
        b"reg3" => known!("reg3"),
        b"reg4" => known!("reg4"),
        b"reg5" => known!("reg5"),
        b"reg6" => known!("reg6"),
        b"reg7" => known!("reg7"),
        b"reg8" => known!("reg8"),
        b"reg9" => known!("reg9"),
        b"reg10" => known!("reg10"),
        b"reg11" => known!("reg11"),
        b"reg12" => known!("reg12"),
        b"reg13" => known!("reg13"),
        b"reg14" => known!("reg14"),
        b"reg15" => known!("reg15"),
        _ => {
            let field = canonical(field);
            Name(field, field_key(field))
        }
    }
}

/// Prerequisites a protocol shorthand stands for: `(dl_type, nw_proto)`.
pub fn shorthand(word: &str) -> Option<(u16, Option<u8>)> {
    Some(match word.as_bytes() {
        b"ip" => (0x0800, None),
        b"ipv6" | b"ip6" => (0x86dd, None),
        b"icmp" => (0x0800, Some(1)),
        b"icmp6" => (0x86dd, Some(58)),
        b"tcp" => (0x0800, Some(6)),
        b"tcp6" => (0x86dd, Some(6)),
        b"udp" => (0x0800, Some(17)),
        b"udp6" => (0x86dd, Some(17)),
        b"sctp" => (0x0800, Some(132)),
        b"sctp6" => (0x86dd, Some(132)),
        b"igmp" => (0x0800, Some(2)),
        b"arp" => (0x0806, None),
        b"rarp" => (0x8035, None),
        b"mpls" => (0x8847, None),
        b"mplsm" => (0x8848, None),
        b"nsh" => (0x894f, None),
        _ => return None,
    })
}

/// The bit of a `ct_state` flag name (byte-string patterns: inline compares, no memcmp).
fn ct_state_bit(name: &str) -> Option<u128> {
    Some(match name.as_bytes() {
        b"new" => 0x01,
        b"est" => 0x02,
        b"rel" => 0x04,
        b"rpl" => 0x08,
        b"inv" => 0x10,
        b"trk" => 0x20,
        b"snat" => 0x40,
        b"dnat" => 0x80,
        _ => return None,
    })
}

/// The bit of a `tcp_flags` flag name.
fn tcp_flag_bit(name: &str) -> Option<u128> {
    Some(match name.as_bytes() {
        b"fin" => 0x001,
        b"syn" => 0x002,
        b"rst" => 0x004,
        b"psh" => 0x008,
        b"ack" => 0x010,
        b"urg" => 0x020,
        b"ece" => 0x040,
        b"cwr" => 0x080,
        b"ns" => 0x100,
        _ => return None,
    })
}

/// Appends the constraints of one match item to `out`.
pub fn expand<'a>(key: &'a str, value: Option<&'a str>, out: &mut Vec<FieldMatch<'a>>) {
    let Some(value) = value else {
        match shorthand(key) {
            Some((dl_type, proto)) => {
                out.push(exact(known!("dl_type"), u128::from(dl_type)));
                if let Some(p) = proto {
                    out.push(exact(known!("nw_proto"), u128::from(p)));
                }
            }
            // An unknown bare word: keep it as a constraint of its own.
            None => out.push(opaque(Name(key, field_key(key)), "")),
        }
        return;
    };
    let field = canonical_name(key);
    match field.0.as_bytes() {
        b"dl_vlan" => match parse_int(value) {
            Some(vid) if vid < 4096 => out.push(bits(known!("vlan_tci"), 0x1000 | vid, 0x1fff)),
            _ => out.push(opaque(field, value)),
        },
        b"dl_vlan_pcp" => match parse_int(value) {
            Some(pcp) if pcp < 8 => {
                out.push(bits(known!("vlan_tci"), 0x1000 | (pcp << 13), 0xf000))
            }
            _ => out.push(opaque(field, value)),
        },
        b"ct_state" => out.push(flag_field(field, value, ct_state_bit)),
        b"tcp_flags" => out.push(flag_field(field, value, tcp_flag_bit)),
        b"nw_frag" => out.push(match value {
            "no" => bits(field, 0, 1),
            "yes" => bits(field, 1, 1),
            "first" => bits(field, 1, 3),
            "later" => bits(field, 3, 3),
            "not_later" => bits(field, 0, 2),
            _ => opaque(field, value),
        }),
        b"in_port" => out.push(match super::actions::port_number(value) {
            Some(super::actions::PortRef::Number(n)) => exact(field, u128::from(n)),
            _ => opaque(field, value),
        }),
        _ => out.push(match parse_masked(value) {
            Some((v, m)) => bits(field, v, m),
            None => opaque(field, value),
        }),
    }
}

/// Expands a whole match (without priority) into constraints sorted by field (in
/// [`FieldMatch::order`], the same for every match, not alphabetical), merging
/// constraints on the same field. Returns false when two constraints contradict (no packet can
/// match; OVS would not print such a flow).
pub fn expand_match<'a>(match_text: &'a str, out: &mut Vec<FieldMatch<'a>>) -> bool {
    out.clear();
    for (k, v) in super::line::split_match(match_text) {
        expand(k, v, out);
    }
    insertion_sort(out);
    merge_sorted(out)
}

/// Merges the constraints on one field in one notation of a list sorted in
/// [`FieldMatch::order`] (the first of two opaque ones stays). Returns false when two of them
/// contradict.
pub fn merge_sorted(out: &mut Vec<FieldMatch<'_>>) -> bool {
    let mut consistent = true;
    let mut w = 0;
    for r in 0..out.len() {
        if w > 0 && out[w - 1].same_field(&out[r]) && out[w - 1].opaque == out[r].opaque {
            let (a, b) = (out[w - 1], out[r]);
            if !a.compatible(&b) {
                consistent = false;
            }
            if !a.opaque {
                out[w - 1].value = (a.value & a.mask) | (b.value & b.mask);
                out[w - 1].mask = a.mask | b.mask;
            }
        } else {
            out[w] = out[r];
            w += 1;
        }
    }
    out.truncate(w);
    consistent
}

/// Sorts constraints in [`FieldMatch::order`], stably (equal ones keep their order, as the merge
/// in [`expand_match`] keeps the first of two opaque ones). A match has a handful of them: a
/// plain insertion sort, comparing keys first, does less than the general sort.
fn insertion_sort(v: &mut [FieldMatch<'_>]) {
    for i in 1..v.len() {
        let x = v[i];
        let mut j = i;
        while j > 0 && x.order(&v[j - 1]).is_lt() {
            v[j] = v[j - 1];
            j -= 1;
        }
        v[j] = x;
    }
}

/// Whether two sorted, merged constraint lists can both match one packet.
pub fn matches_overlap(a: &[FieldMatch<'_>], b: &[FieldMatch<'_>]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i]
            .key
            .cmp(&b[j].key)
            .then_with(|| a[i].field.cmp(b[j].field))
        {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                // Same field; both notations (opaque or not) may appear once each.
                let (ea, eb) = (run_end(a, i), run_end(b, j));
                for x in &a[i..ea] {
                    for y in &b[j..eb] {
                        if !x.compatible(y) {
                            return false;
                        }
                    }
                }
                i = ea;
                j = eb;
            }
        }
    }
    true
}

fn run_end(s: &[FieldMatch<'_>], i: usize) -> usize {
    let f = &s[i];
    i + s[i..].iter().take_while(|x| x.same_field(f)).count()
}

fn bits(Name(field, key): Name<'_>, value: u128, mask: u128) -> FieldMatch<'_> {
    FieldMatch {
        field,
        key,
        opaque: false,
        value: value & mask,
        mask,
    }
}

fn exact(field: Name<'_>, value: u128) -> FieldMatch<'_> {
    bits(field, value, u128::MAX)
}

fn opaque<'a>(Name(field, key): Name<'a>, value: &str) -> FieldMatch<'a> {
    FieldMatch {
        field,
        key,
        opaque: true,
        value: u128::from(fnv1a(value.as_bytes())),
        mask: u128::MAX,
    }
}

/// FNV-1a, 64 bits: a fast, fixed hash for opaque values (only compared for equality).
pub(crate) const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    // A `while` loop, to be usable in constants ([`known!`]).
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

fn flag_field<'a>(
    field: Name<'a>,
    value: &str,
    bit_of: fn(&str) -> Option<u128>,
) -> FieldMatch<'a> {
    if value.starts_with('+') || value.starts_with('-') {
        let (mut v, mut m) = (0u128, 0u128);
        let mut rest = value;
        while !rest.is_empty() {
            let sign = rest.as_bytes()[0];
            let body = &rest[1..];
            let end = super::find::find2(b'+', b'-', body.as_bytes()).unwrap_or(body.len());
            let Some(bit) = bit_of(&body[..end]) else {
                return opaque(field, value);
            };
            m |= bit;
            if sign == b'+' {
                v |= bit;
            }
            rest = &body[end..];
        }
        return bits(field, v, m);
    }
    if value.contains('|') || bit_of(value).is_some() {
        let mut v = 0;
        for name in value.split('|') {
            let Some(bit) = bit_of(name) else {
                return opaque(field, value);
            };
            v |= bit;
        }
        return exact(field, v);
    }
    match parse_masked(value) {
        Some((v, m)) => bits(field, v, m),
        None => opaque(field, value),
    }
}

/// Parses `VALUE[/MASK]` where VALUE is an integer, MAC, IPv4 or IPv6 address and MASK is of
/// the same kind or a prefix length.
pub fn parse_masked(s: &str) -> Option<(u128, u128)> {
    let (v, m) = match super::find::find(b'/', s.as_bytes()) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (value, kind) = parse_value(v)?;
    let mask = match m {
        None => u128::MAX,
        Some(m) => match (kind, m.bytes().all(|b| b.is_ascii_digit())) {
            (Kind::Ipv4, true) => prefix(m.parse().ok()?, 32)?,
            (Kind::Ipv6, true) => prefix(m.parse().ok()?, 128)?,
            _ => parse_value(m)?.0,
        },
    };
    Some((value & mask, mask))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Mac,
    Ipv4,
    Ipv6,
}

fn prefix(len: u32, width: u32) -> Option<u128> {
    if len > width {
        return None;
    }
    let ones = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    Some(ones >> (128 - width))
}

fn parse_int(s: &str) -> Option<u128> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() || h.len() > 32 {
            return None;
        }
        if h.len() <= 16 {
            // Fast path in 64 bits; anything else (a `+` sign...) goes to from_str_radix.
            let fast = h
                .bytes()
                .try_fold(0u64, |n, b| hex_digit(b).map(|d| n << 4 | u64::from(d)));
            if let Some(n) = fast {
                return Some(u128::from(n));
            }
        }
        return u128::from_str_radix(h, 16).ok();
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() <= 19 {
        let n = s.bytes().fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
        return Some(u128::from(n));
    }
    s.parse().ok()
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `xx:xx:xx:xx:xx:xx`.
fn parse_mac(b: &[u8]) -> Option<u128> {
    if b.len() != 17 {
        return None;
    }
    let mut v = 0u128;
    for (k, pair) in b.chunks(3).enumerate() {
        if k < 5 && pair[2] != b':' {
            return None;
        }
        let byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        v = (v << 8) | u128::from(byte);
    }
    Some(v)
}

fn parse_value(s: &str) -> Option<(u128, Kind)> {
    if let Some(n) = parse_int(s) {
        return Some((n, Kind::Int));
    }
    if let Some(v) = parse_mac(s.as_bytes()) {
        return Some((v, Kind::Mac));
    }
    if super::find::find(b':', s.as_bytes()).is_some() {
        return parse_ipv6(s).map(|ip| (ip, Kind::Ipv6));
    }
    parse_ipv4(s.as_bytes()).map(|ip| (u128::from(ip), Kind::Ipv4))
}

/// IPv6 as `Ipv6Addr::from_str` accepts it: the usual forms (groups of 1 to 4 hex digits, at
/// most one `::`) here, anything else (an embedded IPv4 address, errors) by std's parser.
fn parse_ipv6(s: &str) -> Option<u128> {
    match parse_ipv6_groups(s.as_bytes()) {
        Some(ip) => Some(ip),
        None => s.parse::<Ipv6Addr>().ok().map(u128::from),
    }
}

/// The hex-groups forms of IPv6; None for anything else (not necessarily invalid).
fn parse_ipv6_groups(b: &[u8]) -> Option<u128> {
    // Groups before and after `::` (all of them without one).
    let (mut head, mut tail) = ([0u16; 8], [0u16; 8]);
    let (mut nh, mut nt) = (0usize, 0usize);
    let mut compressed = false;
    let mut i = 0;
    if b.starts_with(b"::") {
        compressed = true;
        i = 2;
    }
    while i < b.len() {
        let start = i;
        let mut g = 0u16;
        while i < b.len() && i - start < 4 {
            match hex_digit(b[i]) {
                Some(d) => g = g << 4 | u16::from(d),
                None => break,
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        let slot = if compressed {
            tail.get_mut(nt).map(|s| (s, &mut nt))
        } else {
            head.get_mut(nh).map(|s| (s, &mut nh))
        };
        let (s, n) = slot?;
        *s = g;
        *n += 1;
        if i == b.len() {
            break;
        }
        // After a group: `:` then a group, or `::` (once) then a group or the end.
        if b[i] != b':' || i + 1 == b.len() {
            return None;
        }
        i += 1;
        if b[i] == b':' {
            if compressed {
                return None;
            }
            compressed = true;
            i += 1;
        }
    }
    // `::` stands for one group at least.
    if compressed && nh + nt > 7 || !compressed && nh != 8 {
        return None;
    }
    let mut ip = 0u128;
    for (k, g) in head[..nh].iter().enumerate() {
        ip |= u128::from(*g) << (112 - 16 * k);
    }
    for (k, g) in tail[..nt].iter().rev().enumerate() {
        ip |= u128::from(*g) << (16 * k);
    }
    Some(ip)
}

/// Dotted-quad IPv4 as `Ipv4Addr::from_str` accepts it (four decimal octets up to 255, no
/// leading zeros), without its generic parser.
fn parse_ipv4(b: &[u8]) -> Option<u32> {
    let mut ip = 0u32;
    let mut octets = 0;
    let mut i = 0;
    loop {
        // An octet: up to 3 digits (a 4th makes it invalid), no leading zero, at most 255.
        let start = i;
        let mut n = 0u32;
        while i < b.len() && i - start < 4 {
            let d = b[i].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            n = n * 10 + u32::from(d);
            i += 1;
        }
        let len = i - start;
        if len == 0 || len > 3 || len > 1 && b[start] == b'0' || n > 255 {
            return None;
        }
        ip = ip << 8 | n;
        octets += 1;
        if i == b.len() {
            return (octets == 4).then_some(ip);
        }
        if b[i] != b'.' || octets == 4 {
            return None;
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Vec<FieldMatch<'_>> {
        let mut v = Vec::new();
        assert!(expand_match(s, &mut v), "{s}");
        v
    }

    #[test]
    fn keyed_names_agree_with_canonical() {
        let names = [
            "dl_type",
            "eth_type",
            "dl_src",
            "eth_src",
            "dl_dst",
            "eth_dst",
            "nw_src",
            "ip_src",
            "nw_dst",
            "ip_dst",
            "nw_proto",
            "ip_proto",
            "nw_frag",
            "ip_frag",
            "nw_ecn",
            "ip_ecn",
            "tp_src",
            "tcp_src",
            "udp_src",
            "sctp_src",
            "icmp_type",
            "icmpv6_type",
            "tp_dst",
            "tcp_dst",
            "udp_dst",
            "sctp_dst",
            "icmp_code",
            "icmpv6_code",
            "tun_id",
            "tunnel_id",
            "in_port",
            "in_port_oxm",
            "dl_vlan",
            "dl_vlan_pcp",
            "vlan_tci",
            "ct_state",
            "ct_mark",
            "ct_zone",
            "tcp_flags",
            "metadata",
            "arp_op",
            "arp_spa",
            "arp_tpa",
            "arp_sha",
            "arp_tha",
            "ipv6_src",
            "ipv6_dst",
            "reg0",
            "reg1",
            "reg2",
            "reg3",
            "reg4",
            "reg5",
            "reg6",
            "reg7",
            "reg8",
            "reg9",
            "reg10",
            "reg11",
            "reg12",
            "reg13",
            "reg14",
            "reg15",
            "reg16",
            "ct_label",
            "nw_tos",
            "conj_id",
            "x",
            "",
        ];
        for n in names {
            let c = canonical(n);
            assert_eq!(canonical_name(n), Name(c, field_key(c)), "{n}");
        }
    }

    #[test]
    fn insertion_sort_is_stable_like_std() {
        let fields = ["in_port", "dl_dst", "reg5", "tp_dst", "nw_src", "x"];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..12 {
            for _ in 0..50 {
                let v: Vec<FieldMatch<'_>> = (0..len)
                    .map(|i| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let f = fields[(state % 6) as usize];
                        // Equal fields in both notations, and equal ones told apart by value.
                        let mut m = if state & 64 == 0 {
                            exact(Name(f, field_key(f)), i)
                        } else {
                            opaque(Name(f, field_key(f)), "v")
                        };
                        m.value = i;
                        m
                    })
                    .collect();
                let (mut a, mut b) = (v.clone(), v);
                insertion_sort(&mut a);
                b.sort_by(FieldMatch::order);
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn ipv6_groups_agree_with_std() {
        let std = |s: &str| s.parse::<Ipv6Addr>().ok().map(u128::from);
        for s in [
            "::",
            "::1",
            "1::",
            "2001:db8::4:5",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:8:9",
            ":::",
            "1:::2",
            "1::2::3",
            ":1::",
            "1:",
            ":1",
            "12345::",
            "ffff:FFFF::abcd",
            "0000:0000::0001",
            "::ffff:1.2.3.4",
            "1::2:",
            "",
            "g::",
        ] {
            assert_eq!(parse_ipv6(s), std(s), "{s:?}");
            if let Some(v) = parse_ipv6_groups(s.as_bytes()) {
                assert_eq!(Some(v), std(s), "{s:?}");
            }
        }
        // Random strings over the bytes that matter: whatever the fast path accepts, std
        // accepts with the same value.
        let alphabet = b"0:f:A:1::.g";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut accepted = 0;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 24) as usize;
            let s: String = (0..len)
                .map(|k| {
                    char::from(alphabet[((state >> (k * 2 % 60)) % alphabet.len() as u64) as usize])
                })
                .collect();
            if let Some(v) = parse_ipv6_groups(s.as_bytes()) {
                assert_eq!(Some(v), std(&s), "{s:?}");
                accepted += 1;
            }
            assert_eq!(parse_ipv6(&s), std(&s), "{s:?}");
        }
        assert!(accepted > 100, "{accepted}");
    }

    #[test]
    fn ipv4_random_agrees_with_std() {
        let std = |s: &str| s.parse::<std::net::Ipv4Addr>().ok().map(u32::from);
        for s in [
            "10.0.0.1",
            "255.255.255.255",
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4.5",
            ".1.2.3",
            "01.2.3.4",
            "0.0.0.0",
            "1..2.3",
            "1.2.3.4a",
            "1234.1.1.1",
            "",
            "1.2.3.04",
        ] {
            assert_eq!(parse_ipv4(s.as_bytes()), std(s), "{s:?}");
        }
        let alphabet = b"0125.9.a";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 17) as usize;
            let s: String = (0..len)
                .map(|k| char::from(alphabet[((state >> (k * 3 % 60)) % 8) as usize]))
                .collect();
            assert_eq!(parse_ipv4(s.as_bytes()), std(&s), "{s:?}");
        }
    }

    #[test]
    fn flag_names() {
        for (n, b) in [("new", 1), ("dnat", 0x80), ("trk", 0x20)] {
            assert_eq!(ct_state_bit(n), Some(b));
        }
        for (n, b) in [("fin", 1), ("ns", 0x100), ("ack", 0x10)] {
            assert_eq!(tcp_flag_bit(n), Some(b));
        }
        assert_eq!(ct_state_bit("syn"), None);
        assert_eq!(tcp_flag_bit("trk"), None);
        assert_eq!(ct_state_bit(""), None);
    }

    #[test]
    fn values_and_masks() {
        assert_eq!(parse_masked("80"), Some((80, u128::MAX)));
        assert_eq!(parse_masked("0x50/0xfff0"), Some((0x50, 0xfff0)));
        assert_eq!(
            parse_masked("10.0.0.0/24"),
            Some((0x0a00_0000, 0xffff_ff00))
        );
        assert_eq!(
            parse_masked("10.0.0.7/255.255.0.0"),
            Some((0x0a00_0000, 0xffff_0000))
        );
        assert_eq!(
            parse_masked("01:00:00:00:00:00/01:00:00:00:00:00"),
            Some((0x0100_0000_0000, 0x0100_0000_0000))
        );
        let (v, mask) = parse_masked("2001:db8::/32").unwrap();
        assert_eq!(mask, u128::MAX << 96);
        assert_eq!(v >> 96, 0x2001_0db8);
        assert_eq!(parse_masked("10.0.0.0/33"), None);
        assert_eq!(parse_masked("tap1"), None);
    }

    #[test]
    fn ipv4_agrees_with_std() {
        for s in [
            "10.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "256.0.0.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "",
            ".1.2.3",
            "1.2.3.4.",
            "+1.2.3.4",
            "1.2.3.0004",
            "a.b.c.d",
        ] {
            let std = s.parse::<std::net::Ipv4Addr>().ok().map(u32::from);
            assert_eq!(parse_ipv4(s.as_bytes()), std, "{s}");
        }
    }

    #[test]
    fn shorthands_flags_and_vlans() {
        let t = m("tcp,tp_dst=80");
        let mut names: Vec<_> = t.iter().map(|f| f.field).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["dl_type", "nw_proto", "tp_dst"]);
        assert!(t.windows(2).all(|w| w[0].order(&w[1]).is_lt()));
        let ct = m("ct_state=+est-rel+trk");
        assert_eq!((ct[0].value, ct[0].mask), (0x22, 0x26));
        let tf = m("tcp,tcp_flags=+syn-ack");
        assert_eq!(
            tf.iter()
                .find(|f| f.field == "tcp_flags")
                .map(|f| (f.value, f.mask)),
            Some((0x2, 0x12))
        );
        let v = m("dl_vlan=100,dl_vlan_pcp=3");
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].value, v[0].mask), (0x1000 | 100 | (3 << 13), 0xffff));
        assert_eq!(m("in_port=LOCAL"), m("in_port=65534"));
        assert_eq!(m("eth_type=0x800"), m("ip"));
    }

    #[test]
    fn overlap_logic() {
        let o = |a: &str, b: &str| matches_overlap(&m(a), &m(b));
        assert!(o("tcp,nw_src=10.0.0.0/24,tp_dst=80", "tcp,nw_src=10.0.0.5"));
        assert!(o("tcp,tp_dst=80", "ip,nw_src=1.2.3.4"));
        assert!(!o("tcp,tp_dst=80", "udp"));
        assert!(!o("arp", "ip"));
        assert!(!o("in_port=1", "in_port=2"));
        assert!(o("in_port=1", "dl_dst=fa:16:3e:00:00:01"));
        assert!(!o("ct_state=+trk", "ct_state=-trk"));
        assert!(o("ct_state=+trk", "ct_state=+est+trk"));
        assert!(!o("nw_frag=no", "nw_frag=later"));
        assert!(o("", "in_port=1"));
        assert!(!o("tcp,tp_dst=0x50/0xfff0", "tcp,tp_dst=100"));
        assert!(o("tcp,tp_dst=0x50/0xfff0", "tcp,tp_dst=81"));
        assert!(!o("dl_vlan=5", "dl_vlan=6"));
        assert!(o("dl_vlan=5", "vlan_tci=0x1000/0x1000"));
        let mut v = Vec::new();
        assert!(!expand_match("in_port=1,in_port=2", &mut v));
    }
}
