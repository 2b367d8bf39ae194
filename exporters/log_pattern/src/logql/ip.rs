//! `ip("...")` filters, as Loki evaluates them: the pattern is one address, a CIDR prefix
//! (`192.168.0.0/16`) or a range (`192.168.0.1-192.168.0.23`), IPv4 or IPv6; a line (or a
//! label's value) matches when an address found in it is inside. Addresses are found the way
//! Loki finds them: at a position that looks like the start of one (a digit with a `.` in the
//! next three bytes, or the hex-and-colon start of an IPv6 address), the longest run of address
//! characters must parse as a whole.

use std::net::IpAddr;

/// A compiled `ip("...")` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpMatch {
    Addr(IpAddr),
    /// Network address (masked) and prefix length.
    Prefix(IpAddr, u8),
    /// Inclusive range, both ends of one family.
    Range(IpAddr, IpAddr),
}

impl IpMatch {
    /// Parses a pattern; the error is Loki's.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let bad = || format!("ip: invalid pattern: {pattern:?}");
        if let Ok(a) = pattern.parse::<IpAddr>() {
            return Ok(Self::Addr(a));
        }
        if let Some((addr, bits)) = pattern.split_once('/') {
            let a: IpAddr = addr.parse().map_err(|_| bad())?;
            let max = if a.is_ipv4() { 32 } else { 128 };
            let valid_digits = !bits.is_empty()
                && bits.len() <= 3
                && bits.bytes().all(|b| b.is_ascii_digit())
                && !(bits.len() > 1 && bits.starts_with('0'));
            let n: u8 = bits.parse().map_err(|_| bad())?;
            if !valid_digits || n > max {
                return Err(bad());
            }
            return Ok(Self::Prefix(mask(a, n), n));
        }
        if let Some((from, to)) = pattern.split_once('-') {
            let (a, b): (IpAddr, IpAddr) = (
                from.parse().map_err(|_| bad())?,
                to.parse().map_err(|_| bad())?,
            );
            if a.is_ipv4() != b.is_ipv4() || b < a {
                return Err(bad());
            }
            return Ok(Self::Range(a, b));
        }
        Err(bad())
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match *self {
            Self::Addr(a) => a == ip,
            Self::Prefix(net, n) => net.is_ipv4() == ip.is_ipv4() && mask(ip, n) == net,
            Self::Range(a, b) => a.is_ipv4() == ip.is_ipv4() && a <= ip && ip <= b,
        }
    }

    /// Whether an address in `text` is inside the pattern.
    pub fn test(&self, text: &[u8]) -> bool {
        const V4: &[u8] = b"0123456789.";
        const V6: &[u8] = b"0123456789abcdefABCDEF:.";
        let n = text.len();
        let mut i = 0;
        while i < n {
            let charset = if i + 3 < n && v4_hint(&text[i..i + 4]) {
                Some(V4)
            } else if i + 4 < n && v6_hint(&text[i..i + 5]) {
                Some(V6)
            } else {
                None
            };
            if let Some(cs) = charset {
                let len = text[i..].iter().take_while(|b| cs.contains(b)).count();
                let found = std::str::from_utf8(&text[i..i + len])
                    .ok()
                    .and_then(|s| s.parse::<IpAddr>().ok());
                if found.is_some_and(|ip| self.contains(ip)) {
                    return true;
                }
                i += len;
            }
            i += 1;
        }
        false
    }
}

fn mask(a: IpAddr, n: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let m = u32::MAX.checked_shl(32 - u32::from(n)).unwrap_or(0);
            IpAddr::V4((u32::from(v) & m).into())
        }
        IpAddr::V6(v) => {
            let m = u128::MAX.checked_shl(128 - u32::from(n)).unwrap_or(0);
            IpAddr::V6((u128::from(v) & m).into())
        }
    }
}

fn v4_hint(p: &[u8]) -> bool {
    p[0].is_ascii_digit() && (p[1] == b'.' || p[2] == b'.' || p[3] == b'.')
}

fn v6_hint(p: &[u8]) -> bool {
    let hex = |b: u8| b.is_ascii_hexdigit();
    (p[0] == b':' && p[1] == b':' && hex(p[2]))
        || (hex(p[0]) && p[1] == b':')
        || (hex(p[0]) && hex(p[1]) && p[2] == b':')
        || (hex(p[0]) && hex(p[1]) && hex(p[2]) && p[3] == b':')
        || (hex(p[0]) && hex(p[1]) && hex(p[2]) && hex(p[3]) && p[4] == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_lines() {
        let m = |p: &str| IpMatch::parse(p).unwrap();
        assert!(m("192.168.0.0/16").test(b"from 192.168.4.5:8080 ok"));
        assert!(!m("192.168.0.0/16").test(b"from 192.169.4.5"));
        assert!(m("10.0.0.1-10.0.0.9").test(b"a 10.0.0.9"));
        assert!(!m("10.0.0.1-10.0.0.9").test(b"a 10.0.0.10"));
        assert!(m("2001:db8::/32").test(b"peer=2001:db8::1 x"));
        assert!(m("::1").test(b"[::1]:80"));
        assert!(
            !m("1.2.3.4").test(b"11.2.3.4"),
            "the address is the whole run"
        );
        assert!(!m("1.2.3.4").test(b"1.2.3.4.5"));
        assert!(!m("10.0.0.0/8").test(b""));
        for bad in [
            "",
            "1.2.3",
            "10.0.0.0/33",
            "10.0.0.9-10.0.0.1",
            "1.2.3.4-::1",
            "x/8",
        ] {
            assert!(IpMatch::parse(bad).is_err(), "{bad}");
        }
    }
}
