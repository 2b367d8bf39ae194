//! Sets of host CPUs: libvirt's cpuset syntax, libvirt's CPU bitmaps, and the kernel's lists.
//!
//! Pinning is compared as sets, never as strings: `0-1` and `0,1` are the same pinning. Sets are
//! bitmaps of `u64` words, so a 512-CPU host costs 64 bytes per set and comparisons are cheap.
#![forbid(unsafe_code)]

use std::fmt;

use crate::error::ParseError;

/// CPU numbers accepted from any input are below this: libvirt's own limit
/// (`VIR_DOMAIN_CPUMASK_LEN`), so every cpuset libvirt accepted is read (the kernel's is 8192;
/// a pin beyond the host's CPUs is for the analysis to show, not a reason to drop the XML).
pub const MAX_CPUS: u32 = 16384;

/// A set of host CPU numbers.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuSet {
    words: Vec<u64>,
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({self})")
    }
}

impl CpuSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// CPUs `0..n`.
    pub fn all(n: u32) -> Self {
        let mut s = Self::new();
        for c in 0..n.min(MAX_CPUS) {
            s.insert(c);
        }
        s
    }

    /// Adds one CPU (ignored above [`MAX_CPUS`]).
    pub fn insert(&mut self, cpu: u32) {
        if cpu >= MAX_CPUS {
            return;
        }
        let (w, b) = ((cpu / 64) as usize, cpu % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << b;
    }

    /// Removes one CPU.
    pub fn remove(&mut self, cpu: u32) {
        let (w, b) = ((cpu / 64) as usize, cpu % 64);
        if let Some(word) = self.words.get_mut(w) {
            *word &= !(1 << b);
        }
        self.trim();
    }

    fn trim(&mut self) {
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: u32) -> bool {
        let (w, b) = ((cpu / 64) as usize, cpu % 64);
        self.words.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// The CPUs in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, w)| {
            let w = *w;
            (0..64u32)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i as u32 * 64 + b)
        })
    }

    /// The only CPU of a one-CPU set.
    pub fn single(&self) -> Option<u32> {
        let mut it = self.iter();
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }

    /// Union.
    pub fn union(&self, other: &Self) -> Self {
        let n = self.words.len().max(other.words.len());
        let words = (0..n)
            .map(|i| {
                self.words.get(i).copied().unwrap_or(0) | other.words.get(i).copied().unwrap_or(0)
            })
            .collect();
        Self { words }
    }

    /// Intersection.
    pub fn intersection(&self, other: &Self) -> Self {
        let mut s = Self {
            words: self
                .words
                .iter()
                .zip(&other.words)
                .map(|(a, b)| a & b)
                .collect(),
        };
        s.trim();
        s
    }

    /// The CPUs of `self` that are not in `other`.
    pub fn difference(&self, other: &Self) -> Self {
        let mut s = Self {
            words: self
                .words
                .iter()
                .enumerate()
                .map(|(i, a)| a & !other.words.get(i).copied().unwrap_or(0))
                .collect(),
        };
        s.trim();
        s
    }

    /// Whether every CPU of `self` is in `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        self.difference(other).is_empty()
    }

    /// Reads a libvirt CPU bitmap (`cpumap`): bit `n` of byte `n / 8` is CPU `n`, only the first
    /// `ncpus` bits count.
    pub fn from_cpumap(map: &[u8], ncpus: u32) -> Self {
        let mut s = Self::new();
        for cpu in 0..ncpus.min(map.len() as u32 * 8) {
            if map[(cpu / 8) as usize] & (1 << (cpu % 8)) != 0 {
                s.insert(cpu);
            }
        }
        s
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut s = Self::new();
        for c in iter {
            s.insert(c);
        }
        s
    }
}

/// Compact form: `0-3,8,10-11`; the empty set is the empty string.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut run: Option<(u32, u32)> = None;
        let mut emit = |f: &mut fmt::Formatter<'_>, (a, b): (u32, u32)| -> fmt::Result {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if a == b {
                write!(f, "{a}")
            } else {
                write!(f, "{a}-{b}")
            }
        };
        for c in self.iter() {
            run = match run {
                Some((a, b)) if c == b + 1 => Some((a, c)),
                Some(r) => {
                    emit(f, r)?;
                    Some((c, c))
                }
                None => Some((c, c)),
            };
        }
        if let Some(r) = run {
            emit(f, r)?;
        }
        Ok(())
    }
}

fn parse_cpu(s: &str, whole: &str) -> Result<u32, ParseError> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| ParseError::CpuList(whole.to_string()))?;
    if n >= MAX_CPUS {
        return Err(ParseError::CpuList(whole.to_string()));
    }
    Ok(n)
}

/// Parses libvirt's cpuset syntax (`0-3,^2,8`, also nova's `cpu_dedicated_set` and the kernel's
/// `Cpus_allowed_list`, which use the same form without `^`). Exclusions apply to the CPUs listed
/// before them, as in libvirt.
pub fn parse_cpuset(s: &str) -> Result<CpuSet, ParseError> {
    let mut set = CpuSet::new();
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Ok(set);
    }
    for part in trimmed.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(ParseError::CpuList(s.to_string()));
        }
        if let Some(ex) = part.strip_prefix('^') {
            set.remove(parse_cpu(ex, s)?);
            continue;
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse_cpu(a, s)?, parse_cpu(b, s)?);
                if a > b {
                    return Err(ParseError::CpuList(s.to_string()));
                }
                for c in a..=b {
                    set.insert(c);
                }
            }
            None => set.insert(parse_cpu(part, s)?),
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some("")),
            ("3", Some("3")),
            ("0-3", Some("0-3")),
            ("0,1,2,3", Some("0-3")),
            ("0-3,^2", Some("0-1,3")),
            (" 8, 10-11 ,9", Some("8-11")),
            ("0-63,64,127-128", Some("0-64,127-128")),
            ("3-1", None),
            ("a", None),
            ("1,,2", None),
            ("99999", None),
            ("1-", None),
        ];
        for (input, want) in cases {
            let got = parse_cpuset(input).ok().map(|s| s.to_string());
            assert_eq!(got.as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn set_operations() {
        let a = parse_cpuset("0-7").unwrap();
        let b = parse_cpuset("4-11").unwrap();
        assert_eq!(a.intersection(&b).to_string(), "4-7");
        assert_eq!(a.union(&b).to_string(), "0-11");
        assert_eq!(a.difference(&b).to_string(), "0-3");
        assert!(parse_cpuset("5").unwrap().is_subset(&a));
        assert!(!b.is_subset(&a));
        assert_eq!(parse_cpuset("5").unwrap().single(), Some(5));
        assert_eq!(a.single(), None);
        assert_eq!(a.len(), 8);
        // Equality ignores how the set was built.
        assert_eq!(parse_cpuset("0-1").unwrap(), parse_cpuset("1,0").unwrap());
        let mut c = parse_cpuset("70").unwrap();
        c.remove(70);
        assert_eq!(c, CpuSet::new());
    }

    #[test]
    fn cpumaps() {
        assert_eq!(
            CpuSet::from_cpumap(&[0b0000_0100, 0b1], 16).to_string(),
            "2,8"
        );
        // Bits beyond the host's CPU count are ignored.
        assert_eq!(CpuSet::from_cpumap(&[0xff], 4).to_string(), "0-3");
    }
}
