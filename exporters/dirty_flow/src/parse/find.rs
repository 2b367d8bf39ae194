//! Byte search tuned for the short pieces of a flow line: a plain loop below 32 bytes (where
//! memchr's setup costs more than the search), memchr above.

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
