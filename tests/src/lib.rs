//! Helpers shared by every integration test of the workspace: the end-to-end tests in `tests/`
//! and the exporters' own `tests/` dirs (as the dev-dependency `e2e-tests`). One copy of the
//! generic plumbing, so each exporter's test support keeps only what is about its component.
//!
//! - Processes: [`ChildGuard`] owns a child and stops it by PID when dropped, also when the test
//!   panics (SIGKILL, or SIGTERM then SIGKILL with [`ChildGuard::terminate_on_drop`]), with
//!   [`ChildGuard::signal`], [`ChildGuard::terminate`], [`ChildGuard::stop`] and
//!   [`ChildGuard::kill`]. Daemons that detach (OVS, with pidfiles) and processes other programs
//!   started: [`signal_pid`], [`pid_alive`], [`stop_pid`], [`stop_pidfile`]. [`run_ok`] runs a
//!   command that must succeed.
//! - Loopback HTTP without a client library: [`free_port`], [`http_get`] (status, head, body),
//!   [`local_get`] (status, body text), [`scrape`] (`/metrics` if it answers 200),
//!   [`wait_http_ok`].
//! - Polling: [`wait_for`] (panics naming what it waited for) and [`wait_until`] (returns false,
//!   the caller asserts with details), every [`POLL`].
//! - Expositions (Prometheus text format): [`promtool_check_metrics`] and
//!   [`assert_promtool_clean`]; [`parse_samples`] / [`Sample`], [`samples`] (series -> value),
//!   [`sample`] (by exact series), [`sample_value`] (first line with a prefix), [`sample_with`]
//!   (by name and labels), [`sum_samples`].
//! - The workspace: [`bin`] (a built binary next to the test executable), [`repo_root`], and
//!   [`url_encode`] for query strings.
//!
//! Only the standard library: this is a dev-dependency of every exporter. Signals are sent with
//! the `kill` program (no libc), and only to a PID that cannot have been reused: a child not yet
//! reaped, or a process checked alive just before.
// Test support: a failed precondition should stop the test with a message, so panics are fine.
#![allow(clippy::expect_used, clippy::unwrap_used)]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

// --- the workspace ---------------------------------------------------------------------------

/// Path of a workspace binary next to the test executable (`target/<profile>/<name>`).
///
/// From an exporter's own tests prefer `env!("CARGO_BIN_EXE_<name>")`, which cargo builds.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Percent-encodes `s` for a URL query value (RFC 3986 unreserved characters stay).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// --- polling ---------------------------------------------------------------------------------

/// How often [`wait_for`] polls (and the usual `every` of [`wait_until`]).
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `cond` every `every` until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Polls `cond` every [`POLL`] until it holds; panics with "timed out waiting for {what}"
/// after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(timeout, POLL, cond),
        "timed out waiting for {what}"
    );
}

// --- processes -------------------------------------------------------------------------------

/// A child process stopped by PID and reaped when dropped, also when the test fails.
///
/// On drop it is killed (SIGKILL), or, after [`terminate_on_drop`](Self::terminate_on_drop),
/// sent SIGTERM and killed only if it has not exited within the grace period (for daemons that
/// should remove their sockets and pidfiles). The child is reaped only by these methods, so
/// while it is running its PID is its own and [`signal`](Self::signal) cannot hit another
/// process.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    pid: u32,
    status: Option<ExitStatus>,
    drop_grace: Option<Duration>,
}

impl ChildGuard {
    /// Guards an already spawned child.
    pub fn new(child: Child) -> Self {
        Self {
            pid: child.id(),
            child: Some(child),
            status: None,
            drop_grace: None,
        }
    }

    /// Spawns `cmd` (stdin from /dev/null; stdout/stderr as `cmd` sets them, else the test's
    /// output). Panics naming the command if it cannot start.
    pub fn spawn(cmd: &mut Command) -> Self {
        Self::new(
            cmd.stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
        )
    }

    /// On drop, SIGTERM first and SIGKILL only after `grace` (instead of SIGKILL at once).
    pub fn terminate_on_drop(mut self, grace: Duration) -> Self {
        self.drop_grace = Some(grace);
        self
    }

    /// The PID the child was started with.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, reaping the child, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(s)) = c.try_wait() {
                self.status = Some(s);
                self.child = None;
            }
        }
        self.status
    }

    /// Whether the child is still running (not exited, or exited but not reaped yet).
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Sends signal `sig` ("HUP", "-HUP", "STOP", "9", ...) with `kill`. An error if the child
    /// has already been reaped or `kill` fails.
    pub fn signal(&self, sig: &str) -> std::io::Result<()> {
        if self.child.is_none() {
            return Err(std::io::Error::other(format!(
                "pid {} has already exited ({:?})",
                self.pid, self.status
            )));
        }
        signal_pid(self.pid, sig)
    }

    /// Polls up to `timeout` for the child to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, Duration::from_millis(20), || {
            self.try_wait().is_some()
        });
        self.status
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status; `None` if the child is
    /// still running then (it is killed on drop).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.stop_with_signal("TERM", timeout, false)
    }

    /// A clean stop: SIGTERM, then SIGKILL if the child has not exited within `grace`. Always
    /// reaps; returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.stop_with_signal("TERM", grace, true)
    }

    /// Like [`stop`](Self::stop) with signal `sig` in place of SIGTERM.
    pub fn stop_with(&mut self, sig: &str, grace: Duration) -> Option<ExitStatus> {
        self.stop_with_signal(sig, grace, true)
    }

    /// SIGKILL (as the OOM killer or a node crash would) and reap; returns the exit status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            self.status = c.wait().ok();
        }
        self.status
    }

    fn stop_with_signal(&mut self, sig: &str, grace: Duration, kill: bool) -> Option<ExitStatus> {
        if self.try_wait().is_some() {
            return self.status;
        }
        let _ = self.signal(sig);
        if self.wait_exit(grace).is_none() && kill {
            self.kill();
        }
        self.status
    }
}

impl From<Child> for ChildGuard {
    fn from(child: Child) -> Self {
        Self::new(child)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        match self.drop_grace {
            Some(grace) => {
                self.stop(grace);
            }
            None => {
                self.kill();
            }
        }
    }
}

/// Sends signal `sig` ("TERM", "-KILL", "9", ...) to `pid` with the `kill` program.
///
/// For a process that is not the caller's child (a daemon that detached), check [`pid_alive`]
/// just before, or use [`stop_pid`].
pub fn signal_pid(pid: u32, sig: &str) -> std::io::Result<()> {
    let sig = sig.trim_start_matches('-');
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "kill -{sig} {pid}: {status}"
        )))
    }
}

/// Is `pid` a live process (it exists and is not a zombie)?
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Stops a process that is not the caller's child (a detached daemon, a guest's QEMU): SIGTERM,
/// up to `grace` for it to go, then SIGKILL. True when it is gone (or was not running).
pub fn stop_pid(pid: u32, grace: Duration) -> bool {
    if !pid_alive(pid) {
        return true;
    }
    let _ = signal_pid(pid, "TERM");
    if wait_until(grace, Duration::from_millis(20), || !pid_alive(pid)) {
        return true;
    }
    if pid_alive(pid) {
        let _ = signal_pid(pid, "KILL");
    }
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        !pid_alive(pid)
    })
}

/// [`stop_pid`] for the PID in `pidfile`, then removes the pidfile so that a second call does
/// nothing. True when the daemon is gone (or the pidfile was missing or unreadable).
pub fn stop_pidfile(pidfile: &Path, grace: Duration) -> bool {
    let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return true;
    };
    let gone = stop_pid(pid, grace);
    let _ = std::fs::remove_file(pidfile);
    gone
}

/// Runs `cmd` to completion; panics with the command, its exit status, stdout and stderr unless
/// it started and exited 0. Returns its output.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// --- loopback HTTP ---------------------------------------------------------------------------

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A minimal HTTP/1.1 GET (`http://host:port/path` only): returns (status, headers, body).
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String, Vec<u8>)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// URLs"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(hostport)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, head, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        let Some(chunk) = b.get(eol + 2..eol + 2 + size) else {
            break;
        };
        if size == 0 {
            break;
        }
        out.extend_from_slice(chunk);
        b = b.get(eol + 2 + size + 2..).unwrap_or_default();
    }
    out
}

/// GET `path` on `127.0.0.1:port`: (status, body as text).
pub fn local_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let (status, _, body) = http_get(&format!("http://127.0.0.1:{port}{path}"), &[])?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// GET `/metrics` on `127.0.0.1:port`: the exposition, or `None` if nothing answers 200.
pub fn scrape(port: u16) -> Option<String> {
    match local_get(port, "/metrics") {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// Polls `url` until it answers 200 or `timeout` passes.
pub fn wait_http_ok(url: &str, timeout: Duration) -> bool {
    wait_until(timeout, POLL, || {
        matches!(http_get(url, &[]), Ok((200, _, _)))
    })
}

// --- expositions -----------------------------------------------------------------------------

/// Runs `promtool check metrics` on an exposition; returns its combined lint output (or why it
/// could not run), or `Ok(())` when it exited 0 and printed nothing.
pub fn promtool_check_metrics(exposition: &[u8]) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool (run scripts/install-deps.sh): {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(exposition)
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool exit {:?}: {text}", out.status.code()))
    }
}

/// Panics with promtool's findings unless `promtool check metrics` finds nothing in `text`.
pub fn assert_promtool_clean(text: &str) {
    if let Err(lint) = promtool_check_metrics(text.as_bytes()) {
        panic!("promtool check metrics: {lint}");
    }
}

/// One sample line of a text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The whole line.
    pub line: &'a str,
    /// The series as written: `name{labels}` (or `name`).
    pub series: &'a str,
    /// The metric name.
    pub name: &'a str,
    /// The value (`+Inf`, `NaN` included).
    pub value: f64,
}

impl Sample<'_> {
    /// The labels, unescaped, in their order.
    pub fn labels(&self) -> Vec<(String, String)> {
        let Some(inner) = self
            .series
            .strip_prefix(self.name)
            .and_then(|s| s.strip_prefix('{'))
            .and_then(|s| s.strip_suffix('}'))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut rest = inner;
        while let Some((key, after)) = rest.split_once("=\"") {
            let key = key.trim_start_matches([',', ' ']).to_string();
            let mut value = String::new();
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, other)) => value.push(other),
                        None => {}
                    },
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            out.push((key, value));
            rest = &after[end..];
        }
        out
    }

    /// The unescaped value of label `key`.
    pub fn label(&self, key: &str) -> Option<String> {
        self.labels()
            .into_iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }
}

/// The end of the series (`name` or `name{...}`) at the start of `line`: quoted label values
/// may hold spaces, braces and escaped quotes.
fn series_end(line: &str) -> Option<usize> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    if !line[name_end..].starts_with('{') {
        return Some(name_end);
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line[name_end..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(name_end + i + 1),
            _ => {}
        }
    }
    None
}

/// Every sample line of an exposition, in order (comments, blank and unparsable lines skipped).
pub fn parse_samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(|line| {
        if line.starts_with('#') || line.trim().is_empty() {
            return None;
        }
        let end = series_end(line)?;
        let series = &line[..end];
        let name = &series[..series.find('{').unwrap_or(series.len())];
        let value = line[end..].split_whitespace().next()?.parse().ok()?;
        Some(Sample {
            line,
            series,
            name,
            value,
        })
    })
}

/// Every sample of the exposition: `name{labels}` as written -> value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    parse_samples(text)
        .map(|s| (s.series.to_string(), s.value))
        .collect()
}

/// The value of one sample, by its exact series `name{labels}` as the exporter writes it.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    parse_samples(text)
        .filter(|s| s.series == series)
        .last()
        .map(|s| s.value)
}

/// The value of the first sample whose line starts with `prefix`; end the prefix with a space
/// (`"libvirt_up "`) or a `}` to match one series exactly.
pub fn sample_value(text: &str, prefix: &str) -> Option<f64> {
    parse_samples(text)
        .find(|s| s.line.starts_with(prefix))
        .map(|s| s.value)
}

/// The value of the one sample named `name` that has every label of `labels` (others may be
/// there too); `None` if none or more than one does.
pub fn sample_with(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut hits = parse_samples(text).filter(|s| {
        s.name == name && {
            let have = s.labels();
            labels
                .iter()
                .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        }
    });
    match (hits.next(), hits.next()) {
        (Some(s), None) => Some(s.value),
        _ => None,
    }
}

/// The sum of the samples whose series starts with `prefix` (0 when there are none).
pub fn sum_samples(text: &str, prefix: &str) -> f64 {
    parse_samples(text)
        .filter(|s| s.series.starts_with(prefix))
        .map(|s| s.value)
        .sum()
}

/// A small seeded generator (xorshift64*) for the mutation tests of every crate: the same seed
/// gives the same cases, so a failure reproduces from the seed the test prints.
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed` (xorshift never leaves 0, so 0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n\
        x_info{name=\"a b\",note=\"q\\\"}{ x\"} 1\n\
        x_info{name=\"c\",note=\"\"} 1\n\
        x_bytes_total{dev=\"vda\"} 12 1700000000000\n\
        x_bytes_total{dev=\"vdb\"} 30\n\
        x_bucket{le=\"+Inf\"} 4\n\
        x_nan NaN\n\
        garbage\n";

    #[test]
    fn samples_parse_series_with_spaces_and_escapes_in_labels() {
        let s = samples(EXPOSITION);
        assert_eq!(s.get("x_up"), Some(&1.0));
        assert_eq!(s.get("x_info{name=\"a b\",note=\"q\\\"}{ x\"}"), Some(&1.0));
        // A timestamp is not the value.
        assert_eq!(s.get("x_bytes_total{dev=\"vda\"}"), Some(&12.0));
        assert_eq!(s.get("x_bucket{le=\"+Inf\"}"), Some(&4.0));
        assert!(s.get("x_nan").is_some_and(|v| v.is_nan()));
        assert_eq!(s.len(), 7, "{s:?}");
    }

    #[test]
    fn labels_are_unescaped() {
        let first = parse_samples(EXPOSITION)
            .find(|s| s.name == "x_info")
            .unwrap();
        assert_eq!(
            first.labels(),
            vec![
                ("name".to_string(), "a b".to_string()),
                ("note".to_string(), "q\"}{ x".to_string())
            ]
        );
        assert_eq!(first.label("note").as_deref(), Some("q\"}{ x"));
        assert_eq!(first.label("nope"), None);
    }

    #[test]
    fn lookups_by_series_prefix_and_labels() {
        assert_eq!(sample(EXPOSITION, "x_bytes_total{dev=\"vdb\"}"), Some(30.0));
        assert_eq!(sample(EXPOSITION, "x_bytes_total"), None);
        assert_eq!(sample_value(EXPOSITION, "x_bytes_total{"), Some(12.0));
        assert_eq!(sample_value(EXPOSITION, "x_up "), Some(1.0));
        assert_eq!(sample_value(EXPOSITION, "x_down "), None);
        assert_eq!(sum_samples(EXPOSITION, "x_bytes_total{"), 42.0);
        assert_eq!(sum_samples(EXPOSITION, "y_"), 0.0);
        assert_eq!(
            sample_with(EXPOSITION, "x_info", &[("name", "c")]),
            Some(1.0)
        );
        assert_eq!(
            sample_with(EXPOSITION, "x_info", &[("name", "a b")]),
            Some(1.0)
        );
        // Two match: ambiguous.
        assert_eq!(sample_with(EXPOSITION, "x_info", &[]), None);
        assert_eq!(sample_with(EXPOSITION, "x_up", &[]), Some(1.0));
        assert_eq!(sample_with(EXPOSITION, "x_info", &[("name", "d")]), None);
    }

    #[test]
    fn dechunk_stops_at_a_truncated_chunk() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
        assert_eq!(dechunk(b"3\r\nabc\r\n5\r\nde"), b"abc");
        assert_eq!(dechunk(b"3\r\nabc"), b"abc");
    }

    #[test]
    fn child_guard_signals_stops_and_reports_the_exit() {
        let mut c = ChildGuard::spawn(Command::new("sleep").arg("30"));
        assert!(c.is_running());
        assert!(pid_alive(c.pid()));
        let status = c.terminate(Duration::from_secs(10)).expect("exited");
        assert!(!status.success());
        assert!(!c.is_running());
        // Reaped: no signal goes to a PID that may be reused.
        assert!(c.signal("TERM").is_err());
        // Ignores SIGTERM (bit 15 of SigIgn): `stop` falls back to SIGKILL.
        let mut c =
            ChildGuard::spawn(Command::new("sh").args(["-c", "trap '' TERM; exec sleep 30"]));
        let pid = c.pid();
        wait_for("SIGTERM to be ignored", Duration::from_secs(5), || {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("SigIgn:"))
                    .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                    .is_some_and(|m| m & (1 << 14) != 0)
            })
        });
        assert!(c.terminate(Duration::from_millis(200)).is_none());
        assert!(c.stop(Duration::from_millis(200)).is_some());
        let pid = {
            let c = ChildGuard::spawn(Command::new("sleep").arg("30"));
            c.pid()
        };
        // Dropped: killed and reaped.
        assert!(!pid_alive(pid));
    }

    #[test]
    fn run_ok_returns_the_output_and_panics_on_failure() {
        assert_eq!(run_ok(Command::new("echo").arg("hi")).stdout, b"hi\n");
        let failed = std::panic::catch_unwind(|| run_ok(&mut Command::new("false")));
        assert!(failed.is_err());
    }
}
