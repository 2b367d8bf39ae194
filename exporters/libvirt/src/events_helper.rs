//! Domain events from a helper process, so the exporter's own libvirt calls stay cheap.
//!
//! To deliver domain events, libvirt needs its event loop registered, and once it is, libvirt
//! watches the socket of every remote connection of the process from that loop: each call then
//! wakes the loop thread twice (measured by `bench/bench.sh`: the bare calls of a scrape take
//! about twice as long in such a process). So for a remote URI (a daemon's socket, as in
//! production) the exporter starts itself again as a helper (`HELPER_ARG URI`) that registers the
//! event loop, opens its own read-only connection, and writes the UUID of each changed domain as
//! a line on stdout (`job UUID` for an event that only says the domain has a job: a migration
//! iteration); the exporter process never registers the loop. The helper exits when its
//! stdin closes (the exporter is gone) or its connection dies; the exporter then fetches every
//! XML and re-opens both on the next scrape. In-process drivers (`test:///...`) keep events in
//! process: a helper would have its own copy of the driver.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::ffi::{self, ChangeSink};

/// The first argument that makes the binary run as the events helper.
pub const HELPER_ARG: &str = "--internal.libvirt-events-helper";

/// The prefix of a line naming a domain with a job whose XML did not change.
const JOB_PREFIX: &str = "job ";

/// Whether `uri` is served in process (no daemon), where a helper cannot see the same domains.
pub fn in_process(uri: &str) -> bool {
    uri.starts_with("test:")
}

/// The exporter binary to start as helper: this process's, when it is the exporter (not, for
/// example, a test binary using the library).
pub fn helper_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    (exe.file_stem()? == "libvirt_exporter").then_some(exe)
}

/// The helper's `main`: events of `uri` to stdout, one changed domain's UUID per line.
pub fn helper_main(uri: &str) -> ExitCode {
    ffi::quiet_libvirt_errors();
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("libvirt events helper: {what}: {e}");
        ExitCode::FAILURE
    };
    if let Err(e) = ffi::start_event_loop() {
        return fail("event loop", &e);
    }
    let conn = match virt::connect::Connect::open_read_only(Some(uri)) {
        Ok(c) => c,
        Err(e) => return fail("open", &e),
    };
    let sink = Arc::new(ChangeSink::default());
    // Keep job hints from the start.
    sink.take_jobs();
    if let Err(e) = ffi::watch_domain_changes(&conn, &sink) {
        return fail("register events", &e);
    }
    // The exporter holds our stdin: end with it.
    let _ = std::thread::Builder::new().name("stdin".into()).spawn(|| {
        let mut sink = std::io::sink();
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut sink);
        std::process::exit(0);
    });
    let mut out = std::io::stdout().lock();
    if writeln!(out, "ready").and_then(|_| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let changed = sink.take();
        // A changed domain is a job hint on the exporter's side too.
        let mut jobs: Vec<String> = sink
            .take_jobs()
            .into_iter()
            .filter(|u| !changed.contains(u))
            .map(|u| format!("{JOB_PREFIX}{u}"))
            .collect();
        let mut lines: Vec<String> = changed.into_iter().collect();
        lines.sort();
        jobs.sort();
        for line in lines.into_iter().chain(jobs) {
            if writeln!(out, "{line}").is_err() {
                return ExitCode::FAILURE;
            }
        }
        if out.flush().is_err() {
            return ExitCode::FAILURE;
        }
        if !matches!(conn.is_alive(), Ok(true)) {
            return fail("connection", &"closed");
        }
    }
}

/// A running helper, killed (by its PID) and reaped on drop.
#[derive(Debug)]
pub struct Helper {
    child: Child,
    /// Changed domains, as the helper reports them.
    pub sink: Arc<ChangeSink>,
    dead: Arc<AtomicBool>,
}

impl Helper {
    /// Starts `exe` as helper for `uri` and waits until it is watching (blocking).
    pub fn spawn(exe: &Path, uri: &str) -> Result<Self, String> {
        let mut child = Command::new(exe)
            .arg(HELPER_ARG)
            .arg(uri)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no pipe to the helper".into());
        };
        let mut lines = BufReader::new(stdout).lines();
        let helper = Self {
            child,
            sink: Arc::new(ChangeSink::default()),
            dead: Arc::new(AtomicBool::new(false)),
        };
        match lines.next() {
            Some(Ok(l)) if l == "ready" => {}
            // Dropping `helper` kills it.
            _ => return Err("the events helper exited before watching".into()),
        }
        let (sink, dead) = (Arc::clone(&helper.sink), Arc::clone(&helper.dead));
        std::thread::Builder::new()
            .name("libvirt-events-helper".into())
            .spawn(move || {
                for line in lines.map_while(Result::ok) {
                    match line.strip_prefix(JOB_PREFIX) {
                        Some(uuid) => sink.mark_job(uuid.to_string()),
                        None => sink.mark(line),
                    }
                }
                dead.store(true, Ordering::Release);
            })
            .map_err(|e| format!("cannot start the reader thread: {e}"))?;
        Ok(helper)
    }

    /// Whether the helper has exited (its events may have been missed).
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
