//! The crate's only `unsafe` code: lowering the CPU priority of the calling thread.
//!
//! The thread that parses a dump runs beside `ovs-ofctl`, which prints it; on a busy node the
//! two compete for the CPU, and every moment `ovs-ofctl` waits makes the whole scrape slower.
//! A higher nice value on the parsing thread lets `ovs-ofctl` (and `ovs-vswitchd`) win. On
//! Linux the nice value belongs to the thread (`setpriority(PRIO_PROCESS, tid)`), not the
//! process; an unprivileged thread can raise it but never lower it again, so it is only set on
//! a thread that exits when its dump is over.
#![allow(unsafe_code)]

/// Adds `delta` to the nice value of the calling thread (at most 19). Best effort: a failure
/// (another OS, a seccomp filter) leaves the priority as it was and is only logged.
pub(crate) fn nice_this_thread(delta: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions and cannot fail.
        let tid = unsafe { libc::gettid() };
        let Ok(who) = libc::id_t::try_from(tid) else {
            return;
        };
        // getpriority gives the thread's nice value (a failure reads as -1: harmless here).
        // SAFETY: plain syscalls on the calling thread's own id; no memory is passed.
        let rc = unsafe {
            let current = libc::getpriority(libc::PRIO_PROCESS, who);
            libc::setpriority(libc::PRIO_PROCESS, who, (current + delta).min(19))
        };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot lower the priority of the dump parser thread"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = delta;
}
