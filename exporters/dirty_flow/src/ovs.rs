//! Running `ovs-vsctl` and `ovs-ofctl`: the thin I/O layer.
//!
//! Every command runs under a timeout; on expiry the child is killed (and reaped) and the call
//! fails with [`Error::Timeout`]. `ovs-ofctl dump-flows` is read line by line as it prints
//! (its default output streams; `--names`/`--no-stats` would make it buffer the whole dump), each
//! line going straight into a [`BridgeScan`]. Stderr is drained concurrently, keeping only its
//! tail for the error message, so a chatty child cannot block on a full pipe.
//!
//! Output is bounded ([`Limits`]): a child printing more than its limit is killed and the call
//! fails with [`Error::TooLarge`]; the exporter's memory never holds more than the limit of
//! `ovs-vsctl` output, and a dump streams through the parser (which holds one table) up to its
//! own limit. A dump is a failure, not an empty success, when `ovs-ofctl` printed no reply
//! header ([`Error::NoReply`]), could not decode a reply ([`Error::Undecoded`]), or printed
//! more unparseable lines than flows ([`Error::Unparseable`]).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::checks::BridgeScan;
use crate::error::Error;
use crate::inventory::{parse_inventory, Inventory, VSCTL_ARGS};

/// Parse errors logged per dump; the rest are only counted.
const LOGGED_PARSE_ERRORS: u64 = 5;

/// Longest dump line accepted; a longer run of bytes without newline is one bad line.
const MAX_LINE: usize = 1 << 20;

/// Bytes read from ovs-ofctl at once (at most; a pipe holds 64 KiB by default); a chunk goes
/// to the parser thread once it holds half of that.
const CHUNK: usize = 64 * 1024;

/// Chunks queued between the reader and the parser thread.
const IN_FLIGHT: usize = 4;

/// Feeds one line (without its newline) to the scan, logging the first parse errors.
fn feed(scan: &mut BridgeScan<'_>, bridge: &str, bytes: &[u8], logged: &mut u64) {
    // `from_utf8` is the fast check; only a line that fails it pays for the lossy copy.
    match std::str::from_utf8(bytes) {
        Ok(line) => feed_str(scan, bridge, line, logged),
        Err(_) => feed_str(scan, bridge, &String::from_utf8_lossy(bytes), logged),
    }
}

/// Feeds complete lines (`bytes` ends with a newline): one UTF-8 check for all of them, line
/// by line only when that fails.
fn feed_lines(scan: &mut BridgeScan<'_>, bridge: &str, bytes: &[u8], logged: &mut u64) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut start = 0;
            for nl in memchr::memchr_iter(b'\n', text.as_bytes()) {
                feed_str(scan, bridge, &text[start..nl], logged);
                start = nl + 1;
            }
        }
        Err(_) => {
            let mut start = 0;
            for nl in memchr::memchr_iter(b'\n', bytes) {
                feed(scan, bridge, &bytes[start..nl], logged);
                start = nl + 1;
            }
        }
    }
}

fn feed_str(scan: &mut BridgeScan<'_>, bridge: &str, line: &str, logged: &mut u64) {
    if let Err(e) = scan.feed_line(line) {
        *logged += 1;
        if *logged <= LOGGED_PARSE_ERRORS {
            let shown: String = line.trim_end().chars().take(300).collect();
            tracing::warn!(bridge, error = %e, line = %shown, "unparseable dump-flows line");
        }
    }
}

/// Bytes of stderr kept for error messages.
const STDERR_TAIL: usize = 2048;

/// Bounds on what the OVS tools may print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of `ovs-vsctl` output (held whole to parse its JSON).
    pub vsctl_bytes: u64,
    /// Bytes of one `ovs-ofctl dump-flows` (streamed; 100k flows print about 15 MB).
    pub dump_bytes: u64,
    /// Bytes of one `ovs-ofctl dump-groups` or `dump-meters` (held whole; 10k groups print
    /// about 1.5 MB).
    pub listing_bytes: u64,
    /// Bridges dumped at once (each: `ovs-ofctl dump-flows`, `dump-groups` and `dump-meters`,
    /// and a parser thread).
    pub parallel_dumps: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            vsctl_bytes: 16 << 20,
            dump_bytes: 256 << 20,
            listing_bytes: 64 << 20,
            parallel_dumps: 8,
        }
    }
}

/// The OpenFlow versions one `ovs-ofctl` run was given.
#[derive(Debug)]
enum Versions {
    /// Those of `--ovs.openflow-version` up to 1.3: a refusal asks again with all of them.
    Preferred(String),
    /// `--ovs.openflow-version` as given (None: ovs-ofctl's own default, 1.0).
    AsGiven(Option<String>),
}

impl Versions {
    fn list(&self) -> Option<&str> {
        match self {
            Versions::Preferred(v) => Some(v),
            Versions::AsGiven(v) => v.as_deref(),
        }
    }

    /// Whether ovs-ofctl's stderr says the bridge refused these versions, when they were the
    /// preferred ones (then all of them are worth a try).
    fn refused(&self, stderr: &[u8]) -> bool {
        matches!(self, Versions::Preferred(_)) && memchr::memmem::find(stderr, REFUSED).is_some()
    }
}

/// Where the OVS tools and sockets are.
#[derive(Debug, Clone)]
pub struct Ovs {
    pub ofctl: PathBuf,
    pub vsctl: PathBuf,
    /// Directory holding `<bridge>.mgmt`.
    pub rundir: PathBuf,
    /// OVSDB remote for ovs-vsctl (`unix:/var/run/openvswitch/db.sock`).
    pub db: String,
    pub timeout: Duration,
    /// The versions ovs-ofctl may speak (`-O`); those up to 1.3 are offered first
    /// ([`preferred_versions`]).
    pub openflow_version: Option<String>,
    /// Bridges that refused the preferred versions, or whose dump at them could not be
    /// decoded: offered every version of `openflow_version` from then on.
    pub wide_bridges: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Nice value added to the thread that parses each dump (0 to 19; 0 leaves it at the
    /// exporter's priority), so that `ovs-ofctl` wins the CPU on a busy node.
    pub parser_nice: i32,
    pub limits: Limits,
    /// ovs-appctl, for ovn-controller's connection status.
    pub appctl: PathBuf,
    /// OVN's rundir (ovn-controller's pidfile and unixctl socket).
    pub ovn_rundir: PathBuf,
}

/// The highest OpenFlow version in a `-O` list (`OpenFlow10,OpenFlow13` -> 13), None when no
/// version was asked (ovs-ofctl then speaks 1.0) or none is recognised.
fn highest_version(list: Option<&str>) -> Option<u32> {
    list?.split(',').filter_map(version_number).max()
}

/// The number of one version of a `-O` list (`OpenFlow13` -> 13).
fn version_number(v: &str) -> Option<u32> {
    v.trim().strip_prefix("OpenFlow")?.parse().ok()
}

/// The highest OpenFlow version offered first: `ovs-ofctl` prints a 1.4 or 1.5 dump 5 to 9%
/// slower than a 1.3 dump of the same flows, and 1.4/1.5 show nothing the checks read that
/// 1.3 does not (Open vSwitch's test-suite flows print at 1.3 as at 1.5, with `load:` for
/// some `set_field:`, and without `importance`).
const PREFERRED_UP_TO: u32 = 13;

/// The versions of a `-O` list up to [`PREFERRED_UP_TO`], when it also has higher ones (None:
/// the list is offered as it is).
fn preferred_versions(list: &str) -> Option<String> {
    let low: Vec<&str> = list
        .split(',')
        .filter(|v| version_number(v).is_some_and(|n| n <= PREFERRED_UP_TO))
        .collect();
    let high = highest_version(Some(list)).is_some_and(|n| n > PREFERRED_UP_TO);
    (high && !low.is_empty()).then(|| low.join(","))
}

/// What ovs-ofctl says when the bridge speaks none of the versions offered.
const REFUSED: &[u8] = b"version negotiation failed";

/// Why a bridge is asked with every version after a refusal (logged).
const REFUSED_WHY: &str = "it refused OpenFlow 1.0 to 1.3";

/// Why a dump that `ovs-ofctl` could not decode is lost, and what may help: a higher version
/// only when a lower one than 1.5 was asked for.
fn undecoded_hint(asked: Option<&str>) -> String {
    match highest_version(asked) {
        Some(v) if v >= 15 => format!(
            "OpenFlow 1.{} was asked for, the highest ovs-ofctl speaks: it cannot print this \
             flow at any version",
            v - 10
        ),
        Some(v) => format!(
            "asked for OpenFlow 1.{} at most; a flow that version cannot express may need \
             --ovs.openflow-version=OpenFlow15",
            v.saturating_sub(10)
        ),
        None => "asked for OpenFlow 1.0; a flow that version cannot express may need \
             --ovs.openflow-version=OpenFlow15"
            .to_string(),
    }
}

/// Whether a bridge name is safe to put in a socket path.
pub fn valid_bridge_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn tail(buf: &[u8]) -> String {
    let s = String::from_utf8_lossy(buf);
    let s = s.trim();
    let start = s.len().saturating_sub(STDERR_TAIL);
    let mut start = start;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].replace('\n', " | ")
}

async fn drain_tail<R: AsyncRead + Unpin>(mut r: R) -> Vec<u8> {
    let mut keep = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                keep.extend_from_slice(&chunk[..n]);
                if keep.len() > 2 * STDERR_TAIL {
                    keep.drain(..keep.len() - STDERR_TAIL);
                }
            }
        }
    }
    keep
}

fn program_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Spawns `cmd` with stdin closed, stdout and stderr piped, killed if dropped.
fn spawn_piped(cmd: &mut Command, program: &str) -> Result<Child, Error> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().map_err(|source| Error::Spawn {
        program: program.to_string(),
        source,
    })
}

async fn kill(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

impl Ovs {
    /// Awaits `work` (which may use `child`) under the timeout. On expiry `child` is killed and
    /// reaped, and the error names `program`.
    async fn bounded<T>(
        &self,
        child: &mut Child,
        program: &str,
        work: impl AsyncFnOnce(&mut Child) -> T,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, work(child)).await {
            Ok(t) => Ok(t),
            Err(_) => {
                kill(child).await;
                Err(Error::Timeout {
                    program: program.to_string(),
                    timeout: self.timeout,
                })
            }
        }
    }

    /// `ovs-ofctl --no-names -O <versions>` for `bridge`, and the versions: the preferred ones
    /// ([`preferred_versions`]) unless the bridge is known to need all of them, then
    /// `--ovs.openflow-version` as given.
    fn ofctl(&self, bridge: &str) -> (Command, Versions) {
        let list = self.openflow_version.as_deref();
        let wide = || common::sync::lock(&self.wide_bridges).contains(bridge);
        let versions = match list.and_then(preferred_versions) {
            Some(p) if !wide() => Versions::Preferred(p),
            _ => Versions::AsGiven(list.map(str::to_string)),
        };
        let mut cmd = Command::new(&self.ofctl);
        cmd.arg("--no-names");
        if let Some(v) = versions.list() {
            cmd.arg("-O").arg(v);
        }
        (cmd, versions)
    }

    /// From now on, `bridge` is offered every version of `--ovs.openflow-version` (logged once:
    /// its dump and listings may each find out on the same scrape).
    fn widen(&self, bridge: &str, why: &str) {
        if common::sync::lock(&self.wide_bridges).insert(bridge.to_string()) {
            tracing::info!(
                bridge,
                versions = self.openflow_version.as_deref().unwrap_or_default(),
                why,
                "asking this bridge with all the OpenFlow versions of --ovs.openflow-version"
            );
        }
    }

    /// The OpenFlow target of a bridge: its management socket, so no OVS_RUNDIR is needed.
    pub fn target(&self, bridge: &str) -> String {
        format!(
            "unix:{}",
            self.rundir.join(format!("{bridge}.mgmt")).display()
        )
    }

    /// Runs `cmd` to its end under the timeout and returns its output; a failure exit is an
    /// error with the tail of its stderr.
    /// At most `limit` bytes of stdout are read: a child printing more is killed and the call
    /// fails with [`Error::TooLarge`].
    async fn output(
        &self,
        mut cmd: Command,
        program: String,
        limit: u64,
    ) -> Result<Vec<u8>, Error> {
        let mut child = spawn_piped(&mut cmd, &program)?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let run = async |child: &mut Child| {
            let err = tokio::spawn(async move {
                match stderr {
                    Some(s) => drain_tail(s).await,
                    None => Vec::new(),
                }
            });
            let mut buf = Vec::new();
            let out = match stdout {
                // One byte past the limit tells a full limit from a longer output.
                Some(s) => s
                    .take(limit.saturating_add(1))
                    .read_to_end(&mut buf)
                    .await
                    .map(|_| buf),
                None => Ok(buf),
            };
            if out.as_ref().is_ok_and(|b| b.len() as u64 > limit) {
                kill(child).await;
                err.abort();
                return (out, Vec::new(), None);
            }
            let status = child.wait().await;
            (out, err.await.unwrap_or_default(), Some(status))
        };
        let (out, err, status) = self.bounded(&mut child, &program, run).await?;
        let Some(status) = status else {
            return Err(Error::TooLarge { program, limit });
        };
        let status = status.map_err(|source| Error::Read {
            program: program.clone(),
            source,
        })?;
        let out = out.map_err(|source| Error::Read {
            program: program.clone(),
            source,
        })?;
        if !status.success() {
            return Err(Error::Exit {
                program,
                status: status.to_string(),
                stderr: tail(&err),
            });
        }
        Ok(out)
    }

    /// `ovs-ofctl --no-names -O <versions> <what> <bridge>` to its end (`dump-groups`,
    /// `dump-meters`), under the timeout and [`Limits::listing_bytes`].
    async fn listing(&self, what: &str, bridge: &str) -> Result<String, Error> {
        let program = program_name(&self.ofctl);
        let out = loop {
            let (mut cmd, versions) = self.ofctl(bridge);
            cmd.arg(what).arg(self.target(bridge));
            match self
                .output(cmd, program.clone(), self.limits.listing_bytes)
                .await
            {
                // Only ever once: the bridge now gets every version.
                Err(Error::Exit { stderr, .. }) if versions.refused(stderr.as_bytes()) => {
                    self.widen(bridge, REFUSED_WHY);
                }
                out => break out?,
            }
        };
        // Valid UTF-8 (always, from ovs-ofctl) is not copied.
        Ok(String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// The bridge's groups (`ovs-ofctl dump-groups`).
    pub async fn dump_groups(&self, bridge: &str) -> Result<crate::checks::groups::Groups, String> {
        let out = self
            .listing("dump-groups", bridge)
            .await
            .map_err(|e| e.to_string())?;
        crate::checks::groups::parse_groups(out)
    }

    /// The bridge's meter ids (`ovs-ofctl dump-meters`; OpenFlow 1.3 and later).
    pub async fn dump_meters(
        &self,
        bridge: &str,
    ) -> Result<std::collections::HashSet<u32>, String> {
        let out = self
            .listing("dump-meters", bridge)
            .await
            .map_err(|e| e.to_string())?;
        crate::checks::groups::parse_meters(&out)
    }

    /// Reads bridges, ports and interfaces from the database.
    pub async fn inventory(&self) -> Result<Inventory, Error> {
        let program = program_name(&self.vsctl);
        let mut cmd = Command::new(&self.vsctl);
        cmd.arg(format!("--db={}", self.db))
            .arg(format!("--timeout={}", self.timeout.as_secs().max(1)))
            .args(VSCTL_ARGS);
        let out = self.output(cmd, program, self.limits.vsctl_bytes).await?;
        parse_inventory(&String::from_utf8_lossy(&out))
    }

    /// The controller of every bridge ([`crate::controller`]).
    pub async fn controllers(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::controller::Controller>, Error> {
        let program = program_name(&self.vsctl);
        let mut cmd = Command::new(&self.vsctl);
        cmd.arg(format!("--db={}", self.db))
            .arg(format!("--timeout={}", self.timeout.as_secs().max(1)))
            .args(crate::controller::VSCTL_ARGS);
        let out = self.output(cmd, program, self.limits.vsctl_bytes).await?;
        crate::controller::parse_controllers(&String::from_utf8_lossy(&out))
    }

    /// What ovn-controller (its pidfile in `ovn_rundir`) says of its southbound connection.
    pub async fn ovn_status(&self) -> crate::controller::OvnStatus {
        use crate::controller::{ovn_controller_socket, parse_connection_status, OvnStatus};
        let sock = match ovn_controller_socket(&self.ovn_rundir) {
            Ok(s) => s,
            Err(e) => return OvnStatus::Unreachable(e),
        };
        let program = program_name(&self.appctl);
        let mut cmd = Command::new(&self.appctl);
        cmd.arg(format!("--timeout={}", self.timeout.as_secs().max(1)))
            .arg("-t")
            .arg(&sock)
            .arg("connection-status");
        match self.output(cmd, program, self.limits.listing_bytes).await {
            Ok(out) => parse_connection_status(&String::from_utf8_lossy(&out)),
            Err(e) => OvnStatus::Unreachable(e.to_string()),
        }
    }

    /// The text (without counters) of the flow of `bridge` in `table` at `priority` with
    /// exactly the match `match_text`, or None when it is gone. OpenFlow has no strict flow
    /// statistics request, so this dumps the flows that match at least `match_text` (the flow
    /// itself and any more specific one) and picks, as the lines stream, the one whose text
    /// hashes to `hash`, else the one with that priority and match (its actions changed).
    /// Without `filter` only the table is asked for: for a match that `ovs-ofctl` prints but
    /// does not take back as a filter, the table's own lines are the exact source.
    pub async fn flow_text(
        &self,
        bridge: &str,
        table: &str,
        priority: u16,
        match_text: &str,
        hash: u64,
        filter: bool,
    ) -> Result<Option<String>, Error> {
        let program = program_name(&self.ofctl);
        let mut spec = format!("table={table}");
        if filter && !match_text.is_empty() {
            spec.push(',');
            spec.push_str(match_text);
        }
        let (mut cmd, _) = self.ofctl(bridge);
        cmd.arg("dump-flows").arg(self.target(bridge)).arg(spec);
        let mut child = spawn_piped(&mut cmd, &program)?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let err_task = tokio::spawn(async move {
            match stderr {
                Some(s) => drain_tail(s).await,
                None => Vec::new(),
            }
        });
        let find = async |_: &mut Child| {
            let Some(stdout) = stdout else {
                return Ok(None);
            };
            let mut reader = tokio::io::BufReader::new(stdout);
            let mut buf = Vec::new();
            let mut same_match = None;
            loop {
                buf.clear();
                // At most MAX_LINE bytes a line (the rest of a longer one reads as garbage).
                let max = MAX_LINE as u64;
                if (&mut reader).take(max).read_until(b'\n', &mut buf).await? == 0 {
                    break;
                }
                let line = String::from_utf8_lossy(buf.strip_suffix(b"\n").unwrap_or(&buf));
                let Ok(crate::parse::Line::Flow(f)) = crate::parse::parse_line(&line) else {
                    continue;
                };
                if crate::checks::match_hash(f.text) == hash {
                    return Ok(Some(f.text.to_string()));
                }
                if same_match.is_none() && f.priority == priority && f.match_text == match_text {
                    same_match = Some(f.text.to_string());
                }
            }
            Ok(same_match)
        };
        let found: std::io::Result<Option<String>> =
            self.bounded(&mut child, &program, find).await?;
        // Found early: the rest of the dump is not needed.
        kill(&mut child).await;
        let found = found.map_err(|source| Error::Read {
            program: program.clone(),
            source,
        })?;
        if found.is_none() {
            let err = err_task.await.unwrap_or_default();
            if !err.is_empty() {
                return Err(Error::Exit {
                    program,
                    status: "no flow".to_string(),
                    stderr: tail(&err),
                });
            }
        }
        Ok(found)
    }

    /// The scan back from the dump's parser thread (at most IN_FLIGHT chunks behind), within
    /// the timeout, with its unparseable lines past the first few logged.
    async fn parsed(
        &self,
        bridge: &str,
        done_rx: tokio::sync::oneshot::Receiver<Parsed>,
        program: &str,
    ) -> Result<BridgeScan<'static>, Error> {
        let Parsed { scan, logged, nice } = match tokio::time::timeout(self.timeout, done_rx).await
        {
            Ok(Ok(parsed)) => parsed,
            Ok(Err(_)) => {
                return Err(Error::Read {
                    program: program.to_string(),
                    source: std::io::Error::other("the dump parser thread stopped"),
                })
            }
            Err(_) => {
                return Err(Error::Timeout {
                    program: program.to_string(),
                    timeout: self.timeout,
                })
            }
        };
        tracing::debug!(bridge, parser_nice = ?nice, "dump parsed");
        if logged > LOGGED_PARSE_ERRORS {
            tracing::warn!(
                bridge,
                count = logged,
                "more unparseable dump-flows lines (not shown)"
            );
        }
        Ok(scan)
    }

    /// Streams `ovs-ofctl --no-names dump-flows` of `bridge` into `scan`, which comes back
    /// filled. The dump is read here and parsed on a thread of its own with a raised nice
    /// value (see [`crate::sys`]), a few chunks behind; the whole dump is never held. A bridge
    /// that refuses the preferred OpenFlow versions is asked again with all of them.
    pub async fn dump_flows(
        &self,
        bridge: &str,
        mut scan: BridgeScan<'static>,
    ) -> Result<BridgeScan<'static>, Error> {
        loop {
            match self.dump_flows_once(bridge, scan).await? {
                Dumped::Read(done) => return Ok(done),
                // Only ever once: the bridge now gets every version.
                Dumped::Refused(untouched) => scan = untouched,
            }
        }
    }

    async fn dump_flows_once(
        &self,
        bridge: &str,
        scan: BridgeScan<'static>,
    ) -> Result<Dumped, Error> {
        let program = program_name(&self.ofctl);
        let (mut cmd, versions) = self.ofctl(bridge);
        cmd.arg("dump-flows").arg(self.target(bridge));
        let mut child = spawn_piped(&mut cmd, &program)?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(IN_FLIGHT);
        let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let done_rx = match spawn_parser(scan, bridge, rx, recycle_tx, self.parser_nice) {
            Ok(done) => done,
            Err(source) => {
                kill(&mut child).await;
                return Err(Error::Spawn {
                    program: "the dump parser thread".to_string(),
                    source,
                });
            }
        };

        let err_task = tokio::spawn(async move {
            match stderr {
                Some(s) => drain_tail(s).await,
                None => Vec::new(),
            }
        });
        let limit = self.limits.dump_bytes;
        // Moves the sender in: when reading ends (or times out) the parser sees the end.
        // Ok(false) when the dump grew past its limit.
        let read = async move |_: &mut Child| pump(stdout, tx, recycle_rx, limit).await;
        let status = match self.bounded(&mut child, &program, read).await {
            Ok(Ok(false)) => {
                kill(&mut child).await;
                err_task.abort();
                return Err(Error::TooLarge { program, limit });
            }
            Ok(Ok(true)) => self
                .bounded(&mut child, &program, async |c: &mut Child| c.wait().await)
                .await?
                .map_err(|source| Error::Read {
                    program: program.clone(),
                    source,
                })?,
            Ok(Err(source)) => {
                kill(&mut child).await;
                return Err(Error::Read { program, source });
            }
            Err(e) => {
                err_task.abort();
                return Err(e);
            }
        };
        let scan = self.parsed(bridge, done_rx, &program).await?;
        let err = err_task.await.unwrap_or_default();
        if !status.success() && versions.refused(&err) {
            // Nothing was read: the scan is as it came.
            self.widen(bridge, REFUSED_WHY);
            return Ok(Dumped::Refused(scan));
        }
        if let Versions::Preferred(_) = versions {
            if scan.decode_error().is_some() {
                // This dump fails (its flows are not all there); the next one asks with all.
                self.widen(
                    bridge,
                    "its dump at OpenFlow 1.0 to 1.3 could not be decoded",
                );
            }
        }
        let mut scan = judge_dump(scan, status, &err, program, &versions)?;
        if scan.wants_groups() {
            // Only when an overlap waits on where a group's buckets send packets; without
            // them, the pair counts.
            match self.listing("dump-groups", bridge).await {
                Ok(groups) => scan.set_groups(&groups),
                Err(error) => tracing::debug!(bridge, %error, "groups for the overlap check"),
            }
        }
        Ok(Dumped::Read(scan))
    }
}

/// One `dump-flows` run.
enum Dumped {
    Read(BridgeScan<'static>),
    /// The bridge refused the preferred versions; the scan was not fed.
    Refused(BridgeScan<'static>),
}

/// Reads a dump's stdout in chunks of about [`CHUNK`] bytes into `tx` (for the parser thread,
/// which hands spent chunks back through `recycle`): Ok(false) when it grew past `limit`
/// bytes. Dropping `tx` at the end tells the parser the dump is over.
async fn pump(
    stdout: Option<tokio::process::ChildStdout>,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    recycle: std::sync::mpsc::Receiver<Vec<u8>>,
    limit: u64,
) -> std::io::Result<bool> {
    let Some(mut stdout) = stdout else {
        return Ok(true);
    };
    let mut total = 0u64;
    let fresh = |rx: &std::sync::mpsc::Receiver<Vec<u8>>| {
        rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK))
    };
    let mut buf = fresh(&recycle);
    loop {
        let n = stdout.read_buf(&mut buf).await?;
        total += n as u64;
        if total > limit {
            return Ok(false);
        }
        if n == 0 || buf.len() >= CHUNK / 2 {
            if !buf.is_empty() && tx.send(buf).await.is_err() {
                return Err(std::io::Error::other("the dump parser thread stopped"));
            }
            if n == 0 {
                return Ok(true);
            }
            buf = fresh(&recycle);
        }
    }
}

/// What a finished dump's exit status, stderr and parsed lines say: the scan, or why the dump
/// failed (`asked`: the OpenFlow versions given to `ovs-ofctl`).
fn judge_dump(
    scan: BridgeScan<'static>,
    status: std::process::ExitStatus,
    err: &[u8],
    program: String,
    asked: &Versions,
) -> Result<BridgeScan<'static>, Error> {
    if !status.success() {
        return Err(Error::Exit {
            program,
            status: status.to_string(),
            stderr: tail(err),
        });
    }
    if let Some(line) = scan.decode_error() {
        let stderr = tail(err);
        let said = if stderr.is_empty() {
            line.to_string()
        } else {
            format!("{line}; stderr: {stderr}")
        };
        return Err(Error::Undecoded {
            program,
            said,
            hint: match asked {
                Versions::Preferred(v) => format!(
                    "asked for {v}, the preferred versions; the next dump asks with all of \
                     --ovs.openflow-version"
                ),
                Versions::AsGiven(list) => undecoded_hint(list.as_deref()),
            },
        });
    }
    let (flows, replies, errors) = scan.counts();
    if replies == 0 {
        return Err(Error::NoReply {
            program,
            stderr: tail(err),
        });
    }
    if errors > flows {
        return Err(Error::Unparseable {
            program,
            errors,
            flows,
        });
    }
    Ok(scan)
}

/// What the parser thread of a dump hands back.
struct Parsed {
    scan: BridgeScan<'static>,
    /// Unparseable lines.
    logged: u64,
    /// The nice value the thread parsed at (None when unknown).
    nice: Option<i32>,
}

/// Starts the thread that parses one dump: it adds `nice` to its nice value (see
/// [`crate::sys`]), parses the chunks until their sender is gone ([`parse_chunks`]) and sends
/// the result.
fn spawn_parser(
    scan: BridgeScan<'static>,
    bridge: &str,
    chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    recycle: std::sync::mpsc::Sender<Vec<u8>>,
    nice: i32,
) -> std::io::Result<tokio::sync::oneshot::Receiver<Parsed>> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let bridge = bridge.to_string();
    std::thread::Builder::new()
        .name("ovs-dump-parse".into())
        .spawn(move || {
            let nice = crate::sys::nice_this_thread(nice);
            let (scan, logged) = parse_chunks(scan, &bridge, chunks, &recycle);
            let _ = done_tx.send(Parsed { scan, logged, nice });
        })?;
    Ok(done_rx)
}

/// Cuts the chunks read from ovs-ofctl into lines and feeds them to `scan`, until the sender
/// is gone; emptied chunks go back to the reader through `recycle`. Returns the scan and the
/// number of unparseable lines.
fn parse_chunks(
    mut scan: BridgeScan<'static>,
    bridge: &str,
    mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    recycle: &std::sync::mpsc::Sender<Vec<u8>>,
) -> (BridgeScan<'static>, u64) {
    let mut logged = 0u64;
    // The unfinished last line of the chunks so far (no newline in it).
    let mut pending: Vec<u8> = Vec::new();
    while let Some(mut chunk) = chunks.blocking_recv() {
        let mut rest: &[u8] = &chunk;
        if !pending.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(nl) => {
                    pending.extend_from_slice(&rest[..nl]);
                    feed(&mut scan, bridge, &pending, &mut logged);
                    pending.clear();
                    rest = &rest[nl + 1..];
                }
                None => {
                    pending.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
        if let Some(last) = memchr::memrchr(b'\n', rest) {
            feed_lines(&mut scan, bridge, &rest[..=last], &mut logged);
            rest = &rest[last + 1..];
        }
        pending.extend_from_slice(rest);
        if pending.len() > MAX_LINE {
            // No newline in a megabyte: garbage, counted as one bad line.
            feed(&mut scan, bridge, &pending[..MAX_LINE], &mut logged);
            pending.clear();
        }
        chunk.clear();
        let _ = recycle.send(chunk);
    }
    if !pending.is_empty() {
        feed(&mut scan, bridge, &pending, &mut logged);
    }
    (scan, logged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names() {
        assert!(valid_bridge_name("br-int"));
        assert!(valid_bridge_name("br_ex.100"));
        assert!(!valid_bridge_name("../etc"));
        assert!(!valid_bridge_name("a/b"));
        assert!(!valid_bridge_name(""));
        assert!(!valid_bridge_name(".hidden"));
    }

    /// Runs `parse_chunks` over `chunks` as the reader would send them.
    fn parse_in_chunks(chunks: &[&[u8]]) -> crate::checks::BridgeReport {
        let (tx, rx) = tokio::sync::mpsc::channel(chunks.len().max(1));
        for c in chunks {
            assert!(tx.try_send(c.to_vec()).is_ok());
        }
        drop(tx);
        let (recycle, returned) = std::sync::mpsc::channel();
        let scan = BridgeScan::shared(std::sync::Arc::default(), None, 5);
        let (scan, logged) = parse_chunks(scan, "br-test", rx, &recycle);
        assert_eq!(
            returned.try_iter().count(),
            chunks.len(),
            "every chunk recycled"
        );
        let report = scan.finish();
        assert_eq!(logged, report.parse_errors);
        report
    }

    #[test]
    fn lines_cut_anywhere_by_chunks_parse_alike() {
        let dump = b"NXST_FLOW reply (xid=0x4):\n cookie=0x1, table=0, priority=5,in_port=1 actions=output:2\n cookie=0x1, table=3, n_packets=0, priority=7,ip,nw_dst=10.0.0.1 actions=drop\n";
        let whole = parse_in_chunks(&[dump]);
        assert_eq!((whole.flows, whole.parse_errors, whole.replies), (2, 0, 1));
        for cut in 0..dump.len() {
            for cut2 in cut..dump.len() {
                let r = parse_in_chunks(&[&dump[..cut], &dump[cut..cut2], &dump[cut2..]]);
                assert_eq!(
                    (r.flows, r.parse_errors, r.replies),
                    (2, 0, 1),
                    "cut {cut} {cut2}"
                );
                assert_eq!(r.tables, whole.tables);
            }
        }
        // The last line needs no newline.
        let r = parse_in_chunks(&[&dump[..dump.len() - 1]]);
        assert_eq!((r.flows, r.parse_errors), (2, 0));
    }

    #[test]
    fn the_parser_thread_runs_at_the_nice_value_given() {
        let base = crate::sys::thread_nice().unwrap();
        for nice in [0, 4, crate::sys::MAX_NICE] {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            assert!(tx
                .try_send(b" table=0, priority=1 actions=drop\n".to_vec())
                .is_ok());
            drop(tx);
            let (recycle, returned) = std::sync::mpsc::channel();
            let scan = BridgeScan::shared(std::sync::Arc::default(), None, 5);
            let done = spawn_parser(scan, "br-test", rx, recycle, nice).unwrap();
            let parsed = done.blocking_recv().unwrap();
            assert_eq!(
                parsed.nice,
                Some((base + nice).min(crate::sys::MAX_NICE)),
                "nice {nice}"
            );
            assert_eq!(parsed.scan.finish().flows, 1);
            assert_eq!(returned.try_iter().count(), 1, "the chunk came back");
            assert_eq!(
                crate::sys::thread_nice(),
                Some(base),
                "the caller keeps its priority"
            );
        }
    }

    /// An `Ovs` whose ovs-ofctl and ovs-vsctl are shell scripts in `dir`.
    fn fake(dir: &std::path::Path, ofctl: &str, vsctl: &str, limits: Limits) -> Ovs {
        use std::os::unix::fs::PermissionsExt;
        let script = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        Ovs {
            ofctl: script("ofctl", ofctl),
            vsctl: script("vsctl", vsctl),
            rundir: dir.to_path_buf(),
            db: "unix:/nonexistent".into(),
            timeout: Duration::from_secs(20),
            openflow_version: Some("OpenFlow10,OpenFlow13".into()),
            wide_bridges: Default::default(),
            parser_nice: 0,
            limits,
            appctl: "ovs-appctl".into(),
            ovn_rundir: dir.to_path_buf(),
        }
    }

    async fn dump(ovs: &Ovs) -> Result<crate::checks::BridgeReport, Error> {
        let scan = BridgeScan::shared(std::sync::Arc::default(), None, 5);
        ovs.dump_flows("br-int", scan).await.map(BridgeScan::finish)
    }

    const HEADER: &str = "echo 'NXST_FLOW reply (xid=0x4):'";
    const FLOW: &str = "echo ' cookie=0x0, duration=1.0s, table=0, n_packets=0, n_bytes=0, priority=1,in_port=1 actions=output:2'";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn endless_output_is_cut_at_the_limit_and_fails() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            vsctl_bytes: 100_000,
            dump_bytes: 1_000_000,
            listing_bytes: 50_000,
            parallel_dumps: 1,
        };
        // One flow printed forever, and a database listing that never ends.
        let flow = FLOW.trim_start_matches("echo ");
        let ovs = fake(
            dir.path(),
            &format!("{HEADER}; exec yes {flow}"),
            "exec yes '[\"br-int\",'",
            limits,
        );
        match dump(&ovs).await {
            Err(Error::TooLarge { limit, .. }) => assert_eq!(limit, 1_000_000),
            other => panic!("{other:?}"),
        }
        match ovs.inventory().await {
            Err(e @ Error::TooLarge { .. }) => {
                assert!(e.to_string().contains("more than 100000 bytes"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        let groups = ovs.dump_groups("br-int").await.unwrap_err();
        assert!(groups.contains("more than 50000 bytes"), "{groups}");
        // At the limits exactly, both are read.
        let exact = fake(
            dir.path(),
            &format!("{HEADER}; {FLOW}"),
            "printf '%s' '{\"data\":[],\"headings\":[\"name\"]}'",
            Limits {
                vsctl_bytes: 31,
                dump_bytes: 27 + 99,
                listing_bytes: 1,
                parallel_dumps: 1,
            },
        );
        assert_eq!(dump(&exact).await.unwrap().flows, 1);
        assert!(!matches!(
            exact.inventory().await,
            Err(Error::TooLarge { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dump_without_its_reply_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("empty, exit 0", "exit 0".to_string()),
            (
                "stderr only",
                "echo 'ovs-ofctl: something odd' >&2; exit 0".into(),
            ),
            ("flows without a header", FLOW.to_string()),
        ];
        for (what, body) in cases {
            let ovs = fake(dir.path(), &body, "exit 1", Limits::default());
            match dump(&ovs).await {
                Err(e @ Error::NoReply { .. }) => {
                    assert!(
                        e.to_string().contains("without a reply header"),
                        "{what}: {e}"
                    );
                    if what == "stderr only" {
                        assert!(e.to_string().contains("something odd"), "{e}");
                    }
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        // A header, then junk (or a line nested past the cap): more bad lines than flows.
        let deep = format!("{}output:1{}", "clone(".repeat(5000), ")".repeat(5000));
        for junk in [
            "echo 'garbage'; echo 'more garbage'",
            &format!("echo ' priority=1 actions={deep}'"),
        ] {
            let ovs = fake(
                dir.path(),
                &format!("{HEADER}; {junk}"),
                "exit 1",
                Limits::default(),
            );
            match dump(&ovs).await {
                Err(Error::Unparseable {
                    errors, flows: 0, ..
                }) => assert!(errors >= 1),
                other => panic!("{junk}: {other:?}"),
            }
        }
        // A header and no flows is an empty bridge; fewer bad lines than flows keep the dump.
        let ovs = fake(dir.path(), HEADER, "exit 1", Limits::default());
        assert_eq!(dump(&ovs).await.unwrap().flows, 0);
        let ovs = fake(
            dir.path(),
            &format!("{HEADER}; {FLOW}; {FLOW}; echo 'garbage'"),
            "exit 1",
            Limits::default(),
        );
        let r = dump(&ovs).await.unwrap();
        assert_eq!((r.flows, r.parse_errors), (2, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_line_nested_5000_deep_is_one_counted_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = vec![HEADER.to_string(), FLOW.to_string(), FLOW.to_string()];
        for word in ["clone", "write_actions"] {
            let deep = format!(
                "{}output:1{}",
                format!("{word}(").repeat(5000),
                ")".repeat(5000)
            );
            lines.push(format!("echo ' priority=2,ip actions={deep}'"));
        }
        let ovs = fake(dir.path(), &lines.join("; "), "exit 1", Limits::default());
        // With ports known, the port walk is what would recurse.
        let scan = BridgeScan::shared(std::sync::Arc::default(), Some(Default::default()), 5);
        let r = ovs.dump_flows("br-int", scan).await.unwrap().finish();
        assert_eq!((r.flows, r.parse_errors), (2, 2));
    }

    #[test]
    fn versions_up_to_1_3_are_preferred_when_the_list_has_higher_ones() {
        let all = "OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13,OpenFlow14,OpenFlow15";
        assert_eq!(
            preferred_versions(all).as_deref(),
            Some("OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13")
        );
        assert_eq!(
            preferred_versions("OpenFlow13,OpenFlow15").as_deref(),
            Some("OpenFlow13")
        );
        for as_given in [
            "OpenFlow15",
            "OpenFlow14,OpenFlow15",
            "OpenFlow10",
            "OpenFlow10,OpenFlow13",
            "",
            "junk",
        ] {
            assert_eq!(preferred_versions(as_given), None, "{as_given}");
        }
    }

    /// A dump at the preferred versions that ovs-ofctl cannot decode fails (its flows are not
    /// all there); the next dump of that bridge asks with every version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_undecodable_dump_at_the_preferred_versions_widens_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let body = format!(
            "{HEADER}\ncase \"$*\" in *OpenFlow15*) {FLOW};; *) echo '***decode error: OFPBIC_BAD_TYPE***';; esac"
        );
        let mut ovs = fake(dir.path(), &body, "", Limits::default());
        ovs.openflow_version =
            Some("OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13,OpenFlow14,OpenFlow15".into());
        let err = dump(&ovs).await.unwrap_err().to_string();
        assert!(
            err.contains("could not decode") && err.contains("the next dump asks with all"),
            "{err}"
        );
        let r = dump(&ovs).await.unwrap();
        assert_eq!((r.flows, r.parse_errors), (1, 0));
    }

    #[test]
    fn the_undecodable_dump_hint_names_a_higher_version_only_when_one_exists() {
        let low = undecoded_hint(Some("OpenFlow10,OpenFlow13"));
        assert!(
            low.contains("1.3 at most") && low.contains("=OpenFlow15"),
            "{low}"
        );
        assert!(undecoded_hint(None).contains("=OpenFlow15"));
        for all in [
            "OpenFlow15",
            "OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13,OpenFlow14,OpenFlow15",
        ] {
            let h = undecoded_hint(Some(all));
            assert!(!h.contains("--ovs.openflow-version"), "{h}");
            assert!(h.contains("any version"), "{h}");
        }
    }

    #[test]
    fn a_megabyte_without_newline_is_one_bad_line() {
        let garbage = vec![b'x'; MAX_LINE / 2 + 10];
        let flow: &[u8] = b"\n table=0, priority=1 actions=drop\n";
        let r = parse_in_chunks(&[&garbage, &garbage, &garbage, flow]);
        assert_eq!(r.flows, 1);
        assert_eq!(
            r.parse_errors, 2,
            "the first megabyte, then the rest up to the newline"
        );
    }
}
