//! The actions of a flow: a parenthesis-aware tokenizer and the ports actions send to.
//!
//! Actions are separated by commas, but commas also occur inside parentheses
//! (`learn(table=40,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[])`, `ct(commit,exec(load:...))`,
//! `conjunction(7,1/2)`, `resubmit(,10)`), so the tokenizer splits only at depth 0. The syntax
//! is validated once by [`validate_actions`]; the iterator after that cannot fail.
//!
//! Nesting is capped at [`MAX_DEPTH`] parentheses: OVS itself refuses actions nested more than
//! 100 deep (`MAX_OFPACT_PARSE_DEPTH`), and [`for_each_port_ref`] recurses into `clone(...)`
//! and the instructions, so a deeper line from a broken or hostile `ovs-ofctl` is a parse
//! error ([`ParseError::TooDeep`]) rather than a stack overflow.

use super::line::ParseError;

/// One top-level action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action<'a> {
    /// `output`, `resubmit`, `NORMAL`, `learn`...
    pub name: &'a str,
    /// After `name:` or inside `name(...)`; None for bare actions (`drop`, `NORMAL`).
    pub arg: Option<&'a str>,
    /// Whether the argument was given in parentheses.
    pub parens: bool,
    /// The whole token.
    pub text: &'a str,
}

impl<'a> Action<'a> {
    fn from_token(t: &'a str) -> Self {
        // One pass for whichever of ':' and '(' comes first.
        let first = super::find::find2(b':', b'(', t.as_bytes());
        match first {
            Some(c) if t.as_bytes()[c] == b':' => Self::colon(t, c),
            Some(p) if t.ends_with(')') => Action {
                name: &t[..p],
                arg: Some(&t[p + 1..t.len() - 1]),
                parens: true,
                text: t,
            },
            _ => Action {
                name: t,
                arg: None,
                parens: false,
                text: t,
            },
        }
    }

    fn colon(t: &'a str, c: usize) -> Self {
        Action {
            name: &t[..c],
            arg: Some(&t[c + 1..]),
            parens: false,
            text: t,
        }
    }
}

/// Iterates the top-level actions of a validated action list.
#[derive(Debug, Clone)]
pub struct ActionIter<'a> {
    rest: &'a str,
}

impl<'a> ActionIter<'a> {
    pub fn new(actions: &'a str) -> Self {
        Self { rest: actions }
    }
}

impl<'a> Iterator for ActionIter<'a> {
    type Item = Action<'a>;

    fn next(&mut self) -> Option<Action<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let end = split_point(self.rest);
        let token = &self.rest[..end];
        self.rest = self.rest.get(end + 1..).unwrap_or("");
        Some(Action::from_token(token))
    }
}

/// The next byte at or after `i` that matters at `depth`: a comma or parenthesis at depth 0,
/// only parentheses inside (commas there do not split anything).
#[inline(always)]
fn next_special(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    let off = if depth == 0 {
        super::find::find3(b',', b'(', b')', &b[i..])
    } else {
        super::find::find2(b'(', b')', &b[i..])
    };
    off.map(|o| i + o)
}

/// Index of the first comma at depth 0, or the length.
#[inline(always)]
fn split_point(s: &str) -> usize {
    let b = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    loop {
        let Some(p) = next_special(b, i, depth) else {
            return b.len();
        };
        match b[p] {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            _ => return p,
        }
        i = p + 1;
    }
}

/// Splits any comma list at depth 0 (also used for arguments of `clone(...)`, `bundle(...)`).
pub fn split_top(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        let end = split_point(r);
        let token = &r[..end];
        rest = r.get(end + 1..);
        Some(token)
    })
}

/// Deepest parenthesis nesting accepted in actions: OVS prints at most 100 nested actions
/// (its parser's `MAX_OFPACT_PARSE_DEPTH`), each adding one or two levels (`ct(exec(...))`).
pub const MAX_DEPTH: usize = 256;

/// Checks parentheses balance and depth (at most [`MAX_DEPTH`]), that no action is empty and
/// that there is no blank outside parentheses.
pub fn validate_actions(s: &str) -> Result<(), ParseError> {
    let b = s.as_bytes();
    if super::find::find2(b' ', b'\t', b).is_some() {
        return validate_actions_bytewise(s);
    }
    // No blanks: only parentheses and commas matter, found with memchr.
    let mut depth = 0usize;
    let mut token_start = 0;
    let mut i = 0;
    while let Some(p) = next_special(b, i, depth) {
        match b[p] {
            b'(' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ParseError::TooDeep(MAX_DEPTH));
                }
            }
            b')' => {
                if depth == 0 {
                    return Err(ParseError::Unbalanced);
                }
                depth -= 1;
            }
            _ if depth == 0 => {
                if p == token_start {
                    return Err(ParseError::EmptyAction);
                }
                token_start = p + 1;
            }
            _ => {}
        }
        i = p + 1;
    }
    if depth != 0 {
        return Err(ParseError::Unbalanced);
    }
    if token_start == b.len() {
        return Err(ParseError::EmptyAction);
    }
    Ok(())
}

/// [`validate_actions`] byte by byte, for actions with blanks (which are errors outside
/// parentheses, reported at the first offending byte like the other errors).
fn validate_actions_bytewise(s: &str) -> Result<(), ParseError> {
    let mut depth = 0i64;
    let mut token_len = 0usize;
    for b in s.bytes() {
        match b {
            b'(' => {
                depth += 1;
                if depth > MAX_DEPTH as i64 {
                    return Err(ParseError::TooDeep(MAX_DEPTH));
                }
            }
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(ParseError::Unbalanced);
                }
            }
            b',' if depth == 0 => {
                if token_len == 0 {
                    return Err(ParseError::EmptyAction);
                }
                token_len = 0;
                continue;
            }
            b' ' | b'\t' if depth == 0 => {
                return Err(ParseError::Unexpected(s.chars().take(80).collect()))
            }
            _ => {}
        }
        token_len += 1;
    }
    if depth != 0 {
        return Err(ParseError::Unbalanced);
    }
    if token_len == 0 {
        return Err(ParseError::EmptyAction);
    }
    Ok(())
}

/// The OpenFlow port number of a port as printed (`5`, `0x5`, `LOCAL`), if it names a real
/// port. Reserved ports (`IN_PORT`, `CONTROLLER`, `NORMAL`, `0xfff8`...) are not real ports,
/// except `LOCAL` (65534), the bridge's own interface. Port 0 is returned: no interface ever
/// has it, so `in_port=0` or `output:0` can never work; where 0 is an idiom (setting in_port to
/// 0 so that a later `output:IN_PORT`-style action may send back, as neutron's ARP responder
/// does with `load:0->NXM_OF_IN_PORT[]`), [`for_each_port_ref`] leaves it out.
pub fn port_number(s: &str) -> Option<PortRef> {
    let n = match s {
        "LOCAL" | "local" => return Some(PortRef::Number(LOCAL_PORT)),
        // Up to 9 digits cannot overflow a u32: summed here, longer ones parsed by std.
        _ if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => match s.len() {
            ..=9 => s.bytes().fold(0u32, |n, b| n * 10 + u32::from(b - b'0')),
            _ => s.parse::<u32>().ok()?,
        },
        _ => match s.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok()?,
            None => {
                // A name (only with --names) or a reserved word, or a field reference.
                let reserved = matches!(
                    s,
                    "IN_PORT"
                        | "TABLE"
                        | "NORMAL"
                        | "FLOOD"
                        | "ALL"
                        | "CONTROLLER"
                        | "NONE"
                        | "ANY"
                        | "in_port"
                        | "UNSET"
                );
                if reserved || s.contains('[') || s.is_empty() {
                    return None;
                }
                return Some(PortRef::Name(s.to_string()));
            }
        },
    };
    // OpenFlow 1.0 reserves 0xff00..=0xffff, 1.1+ 0xffffff00..; LOCAL is kept above.
    if (0xff00..=0xffff).contains(&n) && n != LOCAL_PORT || n >= 0xffff_ff00 {
        if n == 0xffff_fffe {
            return Some(PortRef::Number(LOCAL_PORT));
        }
        return None;
    }
    Some(PortRef::Number(n))
}

/// The bridge's own (internal) port.
pub const LOCAL_PORT: u32 = 65534;

/// A port a flow refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    Number(u32),
    /// Only when the dump was made with `--names` (the exporter uses `--no-names`).
    Name(String),
}

/// Calls `f` with every port the actions send to or set as in_port: `output:N`,
/// `output(port=N,...)`, `enqueue:N:Q`, `enqueue(N,Q)`, `resubmit:N`, `resubmit(N,T)`,
/// `set_field:N->in_port`, `load:N->NXM_OF_IN_PORT[]`, `mod_in_port:N`, the members of
/// `bundle(...)`/`bundle_load(...)`, and recursively inside `clone(...)`, `write_actions(...)`
/// and `apply_actions(...)`. Port 0 is reported where it is a destination (`output:0`), not
/// where in_port is set to it (`load:0->NXM_OF_IN_PORT[]`, `set_field:0->in_port`,
/// `mod_in_port:0`: a reset, the ARP-responder idiom).
pub fn for_each_port_ref<'a>(
    actions: impl Iterator<Item = Action<'a>>,
    f: &mut dyn FnMut(PortRef),
) {
    for a in actions {
        let Some(arg) = a.arg else { continue };
        match a.name {
            "output" if a.parens => {
                for kv in split_top(arg) {
                    if let Some(p) = kv.strip_prefix("port=") {
                        port_number(p).map(&mut *f);
                    }
                }
            }
            "output" => {
                port_number(arg).map(&mut *f);
            }
            "mod_in_port" => {
                port_number(arg)
                    .filter(|p| *p != PortRef::Number(0))
                    .map(&mut *f);
            }
            "enqueue" => {
                let port = if a.parens {
                    arg.split(',').next()
                } else {
                    arg.split(':').next()
                };
                if let Some(p) = port {
                    port_number(p).map(&mut *f);
                }
            }
            "resubmit" => {
                let port = if a.parens {
                    arg.split(',').next()
                } else {
                    Some(arg)
                };
                if let Some(p) = port.filter(|p| !p.is_empty()) {
                    port_number(p).map(&mut *f);
                }
            }
            "set_field" | "load" => {
                if let Some((value, dst)) = arg.split_once("->") {
                    let dst_is_in_port = matches!(
                        dst,
                        "in_port" | "in_port_oxm" | "NXM_OF_IN_PORT[]" | "OXM_OF_IN_PORT[]"
                    );
                    if dst_is_in_port {
                        port_number(value)
                            .filter(|p| *p != PortRef::Number(0))
                            .map(&mut *f);
                    }
                }
            }
            "bundle" | "bundle_load" => {
                let members = arg
                    .split_once("members:")
                    .or_else(|| arg.split_once("slaves:"))
                    .map(|(_, m)| m);
                for m in members.into_iter().flat_map(|m| m.split(',')) {
                    port_number(m).map(&mut *f);
                }
            }
            "clone" | "write_actions" | "apply_actions" if a.parens => {
                for_each_port_ref(ActionIter::new(arg), f);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<(&str, Option<&str>)> {
        ActionIter::new(s).map(|a| (a.name, a.arg)).collect()
    }

    fn ports(s: &str) -> Vec<PortRef> {
        validate_actions(s).unwrap();
        let mut v = Vec::new();
        for_each_port_ref(ActionIter::new(s), &mut |p| v.push(p));
        v
    }

    #[test]
    fn tokenizer_respects_parentheses() {
        assert_eq!(
            names("learn(table=40,idle_timeout=60,NXM_OF_VLAN_TCI[0..11],output:NXM_OF_IN_PORT[]),output:1"),
            vec![
                ("learn", Some("table=40,idle_timeout=60,NXM_OF_VLAN_TCI[0..11],output:NXM_OF_IN_PORT[]")),
                ("output", Some("1"))
            ]
        );
        assert_eq!(
            names("ct(commit,zone=5,exec(load:0x1->NXM_NX_CT_MARK[])),output:1"),
            vec![
                ("ct", Some("commit,zone=5,exec(load:0x1->NXM_NX_CT_MARK[])")),
                ("output", Some("1"))
            ]
        );
        assert_eq!(
            names("conjunction(7,1/2)"),
            vec![("conjunction", Some("7,1/2"))]
        );
        assert_eq!(
            names("resubmit(,10),NORMAL,drop"),
            vec![("resubmit", Some(",10")), ("NORMAL", None), ("drop", None)]
        );
        assert_eq!(
            names("enqueue:1:3,load:0x5->NXM_NX_REG5[]"),
            vec![
                ("enqueue", Some("1:3")),
                ("load", Some("0x5->NXM_NX_REG5[]"))
            ]
        );
    }

    #[test]
    fn validation() {
        assert!(validate_actions("output:1").is_ok());
        assert_eq!(validate_actions("a(b"), Err(ParseError::Unbalanced));
        assert_eq!(validate_actions("a)b("), Err(ParseError::Unbalanced));
        assert_eq!(validate_actions("a,,b"), Err(ParseError::EmptyAction));
        assert_eq!(validate_actions("a,"), Err(ParseError::EmptyAction));
        assert!(validate_actions("a b").is_err());
    }

    #[test]
    fn nesting_deeper_than_the_cap_is_an_error_not_a_recursion() {
        let nested = |word: &str, n: usize, blank: bool| {
            let inner = if blank { "note(a b)" } else { "output:1" };
            format!("{}{inner}{}", format!("{word}(").repeat(n), ")".repeat(n))
        };
        for word in ["clone", "write_actions"] {
            for blank in [false, true] {
                let ok = nested(word, MAX_DEPTH - 1, blank);
                assert_eq!(validate_actions(&ok), Ok(()), "{word} {blank}");
                for n in [MAX_DEPTH + 1, 5_000, 100_000] {
                    let deep = nested(word, n, blank);
                    assert_eq!(
                        validate_actions(&deep),
                        Err(ParseError::TooDeep(MAX_DEPTH)),
                        "{word} {n} {blank}"
                    );
                }
            }
        }
        // At the cap, the port walk recurses all the way down.
        let mut v = Vec::new();
        let at_cap = nested("clone", MAX_DEPTH, false);
        assert_eq!(validate_actions(&at_cap), Ok(()));
        for_each_port_ref(ActionIter::new(&at_cap), &mut |p| v.push(p));
        assert_eq!(v, vec![PortRef::Number(1)]);
    }

    #[test]
    fn fast_validation_agrees_with_bytewise() {
        // Every string of up to 6 bytes over the bytes that matter (no blanks: the fast path).
        let alphabet = [b'a', b',', b'(', b')'];
        let mut checked = 0;
        for len in 0..=6u32 {
            for code in 0..4usize.pow(len) {
                let mut c = code;
                let s: String = (0..len)
                    .map(|_| {
                        let b = alphabet[c % 4];
                        c /= 4;
                        char::from(b)
                    })
                    .collect();
                assert_eq!(validate_actions(&s), validate_actions_bytewise(&s), "{s:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 5461);
        // With blanks both are the same function; inside parentheses a blank is fine.
        assert!(validate_actions("note(a b)").is_ok());
        assert!(validate_actions("a,b c").is_err());
    }

    #[test]
    fn port_numbers_agree_with_std() {
        for s in [
            "1",
            "65279",
            "999999999",
            "0000000007",
            "0",
            "000",
            "4294967040",
            "4294967295",
            "4294967296",
            "12345678901",
        ] {
            let want = s.parse::<u32>().ok().and_then(|n| {
                let ok = !((0xff00..=0xffff).contains(&n) && n != LOCAL_PORT) && n < 0xffff_ff00;
                if n == 0xffff_fffe {
                    Some(PortRef::Number(LOCAL_PORT))
                } else {
                    ok.then_some(PortRef::Number(n))
                }
            });
            assert_eq!(port_number(s), want, "{s}");
        }
    }

    #[test]
    fn port_references() {
        use PortRef::Number as N;
        assert_eq!(ports("output:2,output:99"), vec![N(2), N(99)]);
        assert_eq!(ports("enqueue:1:3"), vec![N(1)]);
        assert_eq!(ports("enqueue(4,3)"), vec![N(4)]);
        assert_eq!(ports("resubmit(,10)"), vec![]);
        assert_eq!(ports("resubmit(7,10)"), vec![N(7)]);
        assert_eq!(ports("resubmit:8"), vec![N(8)]);
        assert_eq!(ports("load:0x2->NXM_OF_IN_PORT[],IN_PORT"), vec![N(2)]);
        assert_eq!(ports("set_field:3->in_port"), vec![N(3)]);
        assert_eq!(ports("mod_in_port:4"), vec![N(4)]);
        assert_eq!(
            ports("bundle(eth_src,0,hrw,ofport,members:1,2)"),
            vec![N(1), N(2)]
        );
        assert_eq!(
            ports("clone(output:5),output(port=6,max_len=128)"),
            vec![N(5), N(6)]
        );
        assert_eq!(
            ports("LOCAL,output:LOCAL,CONTROLLER:65535,output:0xfffd"),
            vec![N(LOCAL_PORT)]
        );
        assert_eq!(
            ports("output:NXM_NX_REG0[0..15],NORMAL,FLOOD,output:in_port"),
            vec![]
        );
        assert_eq!(ports("learn(table=40,output:NXM_OF_IN_PORT[])"), vec![]);
    }

    #[test]
    fn port_0_counts_as_a_destination_not_as_an_in_port_reset() {
        use PortRef::Number as N;
        assert_eq!(ports("output:0"), vec![N(0)]);
        assert_eq!(ports("clone(output:0x0)"), vec![N(0)]);
        assert_eq!(ports("output(port=0,max_len=64)"), vec![N(0)]);
        assert_eq!(ports("enqueue:0:1"), vec![N(0)]);
        // neutron's ARP responder: in_port reset so that IN_PORT sends back.
        for reset in [
            "load:0->NXM_OF_IN_PORT[],IN_PORT",
            "load:0x0->OXM_OF_IN_PORT[],IN_PORT",
            "set_field:0->in_port,IN_PORT",
            "mod_in_port:0,IN_PORT",
        ] {
            assert_eq!(ports(reset), vec![], "{reset}");
        }
    }
}
