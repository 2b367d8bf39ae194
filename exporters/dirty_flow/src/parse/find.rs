//! Byte search tuned for the short pieces of a flow line: a plain loop below 32 bytes (where
//! memchr's setup costs more than the search), memchr above; [`Needle`] for the substrings
//! looked for in every line.

use std::sync::OnceLock;

/// A substring looked for in every flow line: its searcher is built once, on first use
/// (`memchr::memmem::find` builds one per call, which costs more than the search itself on a
/// line's short pieces).
pub struct Needle {
    text: &'static [u8],
    finder: OnceLock<memchr::memmem::Finder<'static>>,
}

impl Needle {
    pub const fn new(text: &'static [u8]) -> Self {
        Self {
            text,
            finder: OnceLock::new(),
        }
    }

    /// Whether `hay` holds the needle.
    #[inline]
    pub fn is_in(&self, hay: &[u8]) -> bool {
        self.finder
            .get_or_init(|| memchr::memmem::Finder::new(self.text))
            .find(hay)
            .is_some()
    }
}

/// Hays shorter than this are searched byte by byte.
const SHORT: usize = 32;

/// The first `a` in `hay`.
#[inline]
pub fn find(a: u8, hay: &[u8]) -> Option<usize> {
    if hay.len() < SHORT {
        hay.iter().position(|&c| c == a)
    } else {
        memchr::memchr(a, hay)
    }
}

/// The first `a` or `b` in `hay`.
#[inline]
pub fn find2(a: u8, b: u8, hay: &[u8]) -> Option<usize> {
    if hay.len() < SHORT {
        hay.iter().position(|&c| c == a || c == b)
    } else {
        memchr::memchr2(a, b, hay)
    }
}

/// The first `a`, `b` or `c` in `hay`.
#[inline]
pub fn find3(a: u8, b: u8, c: u8, hay: &[u8]) -> Option<usize> {
    if hay.len() < SHORT {
        hay.iter().position(|&x| x == a || x == b || x == c)
    } else {
        memchr::memchr3(a, b, c, hay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needle_finds_what_memmem_finds() {
        static N: Needle = Needle::new(b"->");
        for hay in [
            "",
            "-",
            ">",
            "->",
            "load:1->reg0",
            "output:1",
            "a-b>c",
            "x->",
        ] {
            assert_eq!(
                N.is_in(hay.as_bytes()),
                memchr::memmem::find(hay.as_bytes(), b"->").is_some(),
                "{hay}"
            );
        }
    }

    #[test]
    fn short_and_long_agree_with_memchr() {
        for len in [0usize, 1, 5, 31, 32, 33, 100] {
            let mut hay: Vec<u8> = (0..len).map(|i| b'a' + (i % 20) as u8).collect();
            for at in [None, Some(0), Some(len / 2), Some(len.saturating_sub(1))] {
                if let Some(p) = at.filter(|&p| p < len) {
                    hay[p] = b',';
                }
                assert_eq!(find(b',', &hay), memchr::memchr(b',', &hay));
                assert_eq!(find2(b',', b'(', &hay), memchr::memchr2(b',', b'(', &hay));
                assert_eq!(
                    find3(b')', b',', b'(', &hay),
                    memchr::memchr3(b')', b',', b'(', &hay)
                );
            }
        }
    }
}
