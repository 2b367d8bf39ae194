//! Running `ovs-vsctl` and `ovs-ofctl`: the thin I/O layer.
//!
//! Every command runs under a timeout; on expiry the child is killed (and reaped) and the call
//! fails with [`Error::Timeout`]. `ovs-ofctl dump-flows` is read line by line as it prints
//! (its default output streams; `--names`/`--no-stats` would make it buffer the whole dump), each
//! line going straight into a [`BridgeScan`]. Stderr is drained concurrently, keeping only its
//! tail for the error message, so a chatty child cannot block on a full pipe.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::checks::BridgeScan;
use crate::error::Error;
use crate::inventory::{parse_inventory, Inventory, VSCTL_ARGS};

/// Parse errors logged per dump; the rest are only counted.
const LOGGED_PARSE_ERRORS: u64 = 5;

/// Longest dump line accepted; a longer run of bytes without newline is one bad line.
const MAX_LINE: usize = 1 << 20;

/// Bytes read from ovs-ofctl at once (at most; a pipe holds 64 KiB by default).
const CHUNK: usize = 128 * 1024;

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
    /// Passed as `-O` to ovs-ofctl (`OpenFlow13`), for bridges that refuse OpenFlow 1.0.
    pub openflow_version: Option<String>,
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
    /// The OpenFlow target of a bridge: its management socket, so no OVS_RUNDIR is needed.
    pub fn target(&self, bridge: &str) -> String {
        format!(
            "unix:{}",
            self.rundir.join(format!("{bridge}.mgmt")).display()
        )
    }

    /// Reads bridges, ports and interfaces from the database.
    pub async fn inventory(&self) -> Result<Inventory, Error> {
        let program = program_name(&self.vsctl);
        let mut cmd = Command::new(&self.vsctl);
        cmd.arg(format!("--db={}", self.db))
            .arg(format!("--timeout={}", self.timeout.as_secs().max(1)))
            .args(VSCTL_ARGS);
        let mut child = spawn_piped(&mut cmd, &program)?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let run = async {
            let out = async {
                let mut buf = Vec::new();
                if let Some(mut s) = stdout {
                    s.read_to_end(&mut buf).await.map(|_| buf)
                } else {
                    Ok(buf)
                }
            };
            let err = async {
                match stderr {
                    Some(s) => drain_tail(s).await,
                    None => Vec::new(),
                }
            };
            let (out, err) = tokio::join!(out, err);
            let status = child.wait().await;
            (out, err, status)
        };
        let (out, err, status) = match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                kill(&mut child).await;
                return Err(Error::Timeout {
                    program,
                    timeout: self.timeout,
                });
            }
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
        parse_inventory(&String::from_utf8_lossy(&out))
    }

    /// Streams `ovs-ofctl --no-names dump-flows` of `bridge` into `scan`.
    pub async fn dump_flows(&self, bridge: &str, scan: &mut BridgeScan<'_>) -> Result<(), Error> {
        let program = program_name(&self.ofctl);
        let mut cmd = Command::new(&self.ofctl);
        cmd.arg("--no-names");
        if let Some(v) = &self.openflow_version {
            cmd.arg("-O").arg(v);
        }
        cmd.arg("dump-flows").arg(self.target(bridge));
        let mut child = spawn_piped(&mut cmd, &program)?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let err_task = tokio::spawn(async move {
            match stderr {
                Some(s) => drain_tail(s).await,
                None => Vec::new(),
            }
        });
        let mut logged = 0u64;
        let read = async {
            let Some(stdout) = stdout else {
                return Ok(());
            };
            let mut stdout = stdout;
            // Read big chunks straight into the line buffer and cut lines out of them.
            let mut pending: Vec<u8> = Vec::with_capacity(2 * CHUNK);
            loop {
                if pending.capacity() - pending.len() < CHUNK / 2 {
                    pending.reserve(CHUNK);
                }
                let n = stdout.read_buf(&mut pending).await?;
                if n == 0 {
                    if !pending.is_empty() {
                        feed(scan, bridge, &pending, &mut logged);
                    }
                    return Ok(());
                }
                // What was pending before this read holds no newline.
                let new_from = pending.len() - n;
                if let Some(last) = memchr::memrchr(b'\n', &pending[new_from..]) {
                    let end = new_from + last + 1;
                    feed_lines(scan, bridge, &pending[..end], &mut logged);
                    pending.drain(..end);
                }
                if pending.len() > MAX_LINE {
                    // No newline in a megabyte: garbage, counted as one bad line.
                    feed(scan, bridge, &pending[..MAX_LINE], &mut logged);
                    pending.clear();
                }
            }
        };
        let read_result: Result<std::io::Result<()>, _> =
            tokio::time::timeout(self.timeout, read).await;
        let status = match read_result {
            Ok(Ok(())) => match tokio::time::timeout(self.timeout, child.wait()).await {
                Ok(s) => s.map_err(|source| Error::Read {
                    program: program.clone(),
                    source,
                })?,
                Err(_) => {
                    kill(&mut child).await;
                    return Err(Error::Timeout {
                        program,
                        timeout: self.timeout,
                    });
                }
            },
            Ok(Err(source)) => {
                kill(&mut child).await;
                return Err(Error::Read { program, source });
            }
            Err(_) => {
                kill(&mut child).await;
                err_task.abort();
                return Err(Error::Timeout {
                    program,
                    timeout: self.timeout,
                });
            }
        };
        if logged > LOGGED_PARSE_ERRORS {
            tracing::warn!(
                bridge,
                count = logged,
                "more unparseable dump-flows lines (not shown)"
            );
        }
        let err = err_task.await.unwrap_or_default();
        if !status.success() {
            return Err(Error::Exit {
                program,
                status: status.to_string(),
                stderr: tail(&err),
            });
        }
        Ok(())
    }
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
}
