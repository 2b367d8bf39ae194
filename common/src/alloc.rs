//! The one place the suite tunes glibc's allocator (the framework's only `unsafe` code).
//!
//! glibc serves a block of 128 KiB or more with its own `mmap` (returned to the system when
//! freed), but raises that threshold to the size of each such block freed, up to 32 MiB: after
//! a scrape freed its large buffers, the next scrapes' blocks come from the arenas' heaps, whose
//! freed memory stays resident and fragments. glibc also makes up to 8 arenas per core, each
//! keeping freed memory of its own. And memory freed inside a heap stays resident until
//! `malloc_trim` gives its pages back. Elsewhere than glibc, each function does nothing.
//!
//! An operator's own settings (`MALLOC_*_` variables or `GLIBC_TUNABLES`) win: then nothing is
//! set here.
#![allow(unsafe_code)]

/// The mmap threshold kept (glibc's default): blocks this large or larger are mapped on their
/// own.
pub const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Whether the operator tunes the allocator through the environment.
fn operator_tuned() -> bool {
    std::env::vars_os()
        .any(|(k, _)| k == "GLIBC_TUNABLES" || k.to_str().is_some_and(|k| k.starts_with("MALLOC_")))
}

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`] (no dynamic raise) and, when
/// `max_arenas` is given, the number of arenas. Call once at start, before other threads exist.
/// Returns whether anything was set.
pub fn tune(max_arenas: Option<i32>) -> bool {
    if operator_tuned() {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter (it takes glibc's own locks) and
        // touches no memory of ours; it returns 1 on success.
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 };
        if let Some(n) = max_arenas {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, n) };
        }
        set
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = max_arenas;
        false
    }
}

/// Gives the free pages of the heaps back to the system (`malloc_trim(0)`): after a burst that
/// freed much (a pod churn's sources and series), the resident size returns near what is in
/// use. It walks the heaps, so it is for the end of such a burst, not for every operation.
/// Returns whether memory was released.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes glibc's own locks and touches only free memory.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// A collection that keeps its capacity when emptied (a map that held a pod churn's entries):
/// [`Sparse::shrink_if_sparse`] gives that memory back once it holds under a quarter of it.
pub trait Sparse {
    fn shrink_if_sparse(&mut self);
}

macro_rules! sparse {
    ($([$($g:tt)*] $t:ty;)*) => {$(
        impl<$($g)*> Sparse for $t {
            fn shrink_if_sparse(&mut self) {
                if self.capacity() > 64 && self.capacity() > 4 * self.len() {
                    self.shrink_to_fit();
                }
            }
        }
    )*};
}

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash};
sparse! {
    [K: Eq + Hash, V, S: BuildHasher] HashMap<K, V, S>;
    [K: Eq + Hash, S: BuildHasher] HashSet<K, S>;
    [T] Vec<T>;
    [T] VecDeque<T>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_left_mostly_empty_gives_its_capacity_back() {
        let mut m: std::collections::HashMap<u32, u32> = (0..10_000).map(|i| (i, i)).collect();
        m.retain(|k, _| *k < 10);
        let full = m.capacity();
        m.shrink_if_sparse();
        assert!(m.capacity() < full / 100, "{} of {full}", m.capacity());
        // A small one, or one still a quarter full, keeps its capacity.
        let mut v: Vec<u32> = Vec::with_capacity(64);
        v.shrink_if_sparse();
        assert_eq!(v.capacity(), 64);
        let mut v: Vec<u32> = Vec::with_capacity(1000);
        v.extend(0..300);
        v.shrink_if_sparse();
        assert_eq!(v.capacity(), 1000);
    }

    #[test]
    fn the_mmap_threshold_is_fixed_on_glibc() {
        let expected = cfg!(all(target_os = "linux", target_env = "gnu")) && !operator_tuned();
        assert_eq!(tune(None), expected);
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn trim_gives_freed_heap_pages_back() {
        fn rss_kib() -> u64 {
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap()
        }
        // 64 MiB in small blocks (served from the heap, not mmap), all touched, then freed but
        // the last (so the heap's top cannot shrink by itself).
        let mut blocks: Vec<Vec<u8>> = (0..16 * 1024).map(|_| vec![1u8; 4000]).collect();
        let keep = blocks.pop();
        let full = rss_kib();
        drop(blocks);
        trim();
        let after = rss_kib();
        drop(keep);
        assert!(
            after + 32 * 1024 < full,
            "resident {full} KiB before, {after} KiB after trim"
        );
    }
}
