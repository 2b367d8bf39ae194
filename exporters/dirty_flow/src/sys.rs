//! The crate's only `unsafe` code: lowering the CPU priority of the calling thread.
//!
//! The thread that parses a dump runs beside `ovs-ofctl`, which prints it; on a busy node the
//! two compete for the CPU, and every moment `ovs-ofctl` waits makes the whole scrape slower.
//! A higher nice value on the parsing thread lets `ovs-ofctl` (and `ovs-vswitchd`) win. On
//! Linux the nice value belongs to the thread (`setpriority(PRIO_PROCESS, tid)`), not the
//! process; an unprivileged thread can raise it but never lower it again, so it is only set on
//! a thread that exits when its dump is over.
#![allow(unsafe_code)]

/// Highest nice value (lowest priority) Linux has.
pub const MAX_NICE: i32 = 19;

/// Adds `delta` to the nice value of the calling thread (at most [`MAX_NICE`]) and returns the
/// nice value the thread then has, read back from `/proc/thread-self/stat` (None when it cannot
/// be read). `delta` 0 changes nothing. Best effort: a failure (another OS, a seccomp filter)
/// leaves the priority as it was and is only logged.
pub(crate) fn nice_this_thread(delta: i32) -> Option<i32> {
    #[cfg(target_os = "linux")]
    if delta != 0 {
        // SAFETY: gettid has no preconditions and cannot fail.
        let tid = unsafe { libc::gettid() };
        if let Ok(who) = libc::id_t::try_from(tid) {
            let target = thread_nice().map_or(delta, |n| n.saturating_add(delta).min(MAX_NICE));
            // SAFETY: a plain syscall on the calling thread's own id; no memory is passed.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, who, target) };
            if rc != 0 {
                tracing::debug!(
                    error = %std::io::Error::last_os_error(),
                    "cannot lower the priority of the dump parser thread"
                );
            }
        }
    }
    thread_nice()
}

/// The nice value of the calling thread: field 19 of `/proc/thread-self/stat` (None elsewhere
/// than on Linux, or when it cannot be read).
pub(crate) fn thread_nice() -> Option<i32> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields 3 (state) onwards; the nice value is field 19.
    after.split_whitespace().nth(19 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_raises_only_the_calling_thread() {
        let base = thread_nice().expect("/proc/thread-self/stat readable");
        let (inside, after_zero) = std::thread::spawn(move || {
            let after_zero = nice_this_thread(0);
            (nice_this_thread(3), after_zero)
        })
        .join()
        .unwrap();
        assert_eq!(
            after_zero,
            Some(base),
            "delta 0 leaves the thread as it was"
        );
        assert_eq!(inside, Some((base + 3).min(MAX_NICE)));
        assert_eq!(
            thread_nice(),
            Some(base),
            "the spawning thread keeps its priority"
        );
    }

    #[test]
    fn nice_is_capped_at_19() {
        let got = std::thread::spawn(|| nice_this_thread(40)).join().unwrap();
        assert_eq!(got, Some(MAX_NICE));
    }
}
