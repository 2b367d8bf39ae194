//! The one place the suite tunes its allocators (the framework's only `unsafe` code).
//!
//! glibc serves a block of 128 KiB or more with its own `mmap` (returned to the system when
//! freed), but raises that threshold to the size of each such block freed, up to 32 MiB: after
//! a scrape freed its large buffers, the next scrapes' blocks come from the arenas' heaps, whose
//! freed memory stays resident and fragments. glibc also makes up to 8 arenas per core, each
//! keeping freed memory of its own. And memory freed inside a heap stays resident until
//! `malloc_trim` gives its pages back. Elsewhere than glibc, [`tune`] does nothing, and so does
//! [`trim`] without the `jemalloc` feature.
//!
//! An operator's own settings (`MALLOC_*_` variables or `GLIBC_TUNABLES`) win: then nothing is
//! set here.
//!
//! With the `jemalloc` feature, [`Jemalloc`] is jemalloc for a binary to declare as its
//! `#[global_allocator]` (log_pattern_exporter does: a pod churn frees the many small blocks of
//! thousands of sources). jemalloc keeps blocks of one size class together in slabs of a few
//! pages, so what a churn frees becomes whole free pages, which [`trim`] then gives back (it
//! purges jemalloc's arenas instead of trimming glibc's heaps); glibc's heaps keep a page
//! resident while one live block of another size sits on it. [`JEMALLOC_CONF`] sets one arena
//! and a per-thread cache of blocks up to 1 KiB only (jemalloc's defaults, 8 arenas on 2 cores
//! and a cache up to 32 KiB, keep more memory idle); an operator's `_RJEM_MALLOC_CONF` overrides
//! it. A workspace build turns the feature on for every binary that links this crate, so with it
//! [`trim`] purges jemalloc whichever allocator the binary declared: only a binary that declares
//! [`Jemalloc`] calls [`trim`].
#![allow(unsafe_code)]

#[cfg(feature = "jemalloc")]
pub use tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its first allocation: one arena, and a per-thread cache of
/// blocks up to 1 KiB.
#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
pub static JEMALLOC_CONF: &[u8; 26] = b"narenas:1,tcache_max:1024\0";

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

/// Gives the free pages of the allocator back to the system: after a burst that freed much (a
/// pod churn's sources and series), the resident size returns near what is in use. On glibc
/// it is `malloc_trim(0)`; with the `jemalloc` feature it flushes the calling thread's cache
/// and purges every arena. It walks the heaps, so it is for the end of such a burst, not for
/// every operation. Returns whether it succeeded (on glibc: whether memory was released).
pub fn trim() -> bool {
    #[cfg(feature = "jemalloc")]
    {
        jemalloc_command(c"thread.tcache.flush") & jemalloc_command(c"arena.4096.purge")
    }
    #[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes glibc's own locks and touches only free memory.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(any(feature = "jemalloc", all(target_os = "linux", target_env = "gnu"))))]
    false
}

/// Runs a jemalloc `mallctl` that reads and writes nothing (a command such as a purge; arena
/// 4096 is `MALLCTL_ARENAS_ALL`). Returns whether jemalloc accepted it.
#[cfg(feature = "jemalloc")]
fn jemalloc_command(name: &std::ffi::CStr) -> bool {
    use std::ptr::null_mut;
    // SAFETY: the name is a NUL-terminated string; with no old or new value jemalloc reads and
    // writes no memory of ours, and it takes its own locks.
    unsafe { tikv_jemalloc_sys::mallctl(name.as_ptr(), null_mut(), null_mut(), null_mut(), 0) == 0 }
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

    /// The tests run on the allocator that `trim` works on.
    #[cfg(feature = "jemalloc")]
    #[global_allocator]
    static ALLOCATOR: Jemalloc = Jemalloc;

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
    #[cfg(feature = "jemalloc")]
    fn jemalloc_reads_the_options_set_here() {
        fn read<T: Default>(name: &std::ffi::CStr) -> T {
            let mut value = T::default();
            let mut len = std::mem::size_of::<T>();
            let out: *mut T = &mut value;
            // SAFETY: `value` is of the option's type (the caller's) and `len` its size.
            let rc = unsafe {
                tikv_jemalloc_sys::mallctl(
                    name.as_ptr(),
                    out.cast(),
                    &mut len,
                    std::ptr::null_mut(),
                    0,
                )
            };
            assert_eq!(rc, 0, "{name:?}");
            value
        }
        if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
            return; // the operator's options win
        }
        assert_eq!(read::<u32>(c"opt.narenas"), 1);
        assert_eq!(read::<usize>(c"arenas.tcache_max"), 1024);
    }

    #[test]
    #[cfg(any(feature = "jemalloc", all(target_os = "linux", target_env = "gnu")))]
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
