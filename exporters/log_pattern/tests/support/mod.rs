//! Helpers shared by the integration tests: the real binary under a Drop guard, scraping over
//! loopback, kubelet-style log writing.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TS: &str = "2024-01-15T10:00:00.000000000Z";

/// The exporter binary, killed (SIGKILL) and reaped on drop.
pub struct Exporter {
    pub child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Exporter {
    /// Starts the binary with `args` (plus a free loopback port) and waits until it serves.
    pub fn start(dir: &Path, args: &[String]) -> Self {
        Self::start_with(dir, args, None)
    }

    /// Like `start`, optionally running the binary under another command (e.g. setpriv).
    pub fn start_with(dir: &Path, args: &[String], wrapper: Option<&[&str]>) -> Self {
        let port = free_port();
        let log = dir.join(format!("exporter-{port}.log"));
        let bin = env!("CARGO_BIN_EXE_log_pattern_exporter");
        let mut cmd = match wrapper {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=debug")
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let e = Self {
            child: Some(child),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while e.try_scrape().is_none() {
            assert!(
                Instant::now() < deadline,
                "exporter did not start: {}",
                e.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        e
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn try_scrape(&self) -> Option<String> {
        scrape(self.port)
    }

    pub fn scrape(&self) -> String {
        self.try_scrape()
            .unwrap_or_else(|| panic!("scrape failed: {}", self.logs()))
    }

    /// Sends a signal (`"-HUP"`, `"-STOP"`, ...) to the running exporter, by its pid.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// SIGKILL, as the OOM killer or a node crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.kill();
    }
}

/// GET /metrics over loopback; `None` if the server is not there.
pub fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let (head, body) = body.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}

/// Every sample of the exposition: `name{labels}` -> value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Sum of the samples whose key starts with `prefix`.
pub fn sum(text: &str, prefix: &str) -> f64 {
    samples(text)
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// Polls until `f` is true.
pub fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(wait_for(timeout, f), "timed out waiting for {what}");
}

/// Polls until `f` is true; false on timeout (the caller then asserts with details).
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Asserts that no counter sample decreased between two scrapes.
pub fn assert_monotonic(history: &[String]) {
    let mut last: BTreeMap<String, f64> = BTreeMap::new();
    for (i, text) in history.iter().enumerate() {
        for (k, v) in samples(text) {
            let is_counter = k.contains("_total")
                || k.contains("_bucket")
                || k.contains("_count{")
                || k.ends_with("_count");
            // Counters of this process only (process_*, state file statistics, reloads) may
            // restart.
            let durable = k.starts_with("log_pattern_")
                && !k.starts_with("log_pattern_state_")
                && !k.starts_with("log_pattern_scrape_")
                && !k.starts_with("log_pattern_config_reloads_")
                && !k.starts_with("log_pattern_ruleset_reloads_");
            if !is_counter || !durable {
                continue;
            }
            if let Some(prev) = last.get(&k) {
                assert!(v >= *prev, "{k} went down from {prev} to {v} at scrape {i}");
            }
            last.insert(k, v);
        }
    }
}

/// A pod's container log directory under `root`.
pub fn container_dir(root: &Path, ns: &str, pod: &str, container: &str) -> PathBuf {
    let d = root.join(format!("{ns}_{pod}_{pod}-uid")).join(container);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One CRI line.
pub fn cri(msg: &str) -> String {
    format!("{TS} stdout F {msg}\n")
}

/// Compresses `path` to `path.gz` the way logrotate/kubelet do (then removes the original).
pub fn gzip(path: &Path) {
    let data = std::fs::read(path).unwrap();
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let tmp = PathBuf::from(format!("{}.gz.tmp", path.display()));
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&tmp).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&data).unwrap();
    enc.finish().unwrap().sync_all().unwrap();
    std::fs::rename(&tmp, &gz).unwrap();
    std::fs::remove_file(path).unwrap();
}

pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("rules.yml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Standard arguments for a sandbox.
pub fn args(pods: &Path, state: &Path, config: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        format!("--path.pods={}", pods.display()),
        format!("--state.file={}", state.display()),
        format!("--config.file={}", config.display()),
        "--tail.poll-interval=50ms".to_string(),
        "--tail.rotate-wait=500ms".to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// `promtool check metrics` must find nothing in `text`.
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (package prometheus) must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && msg.trim().is_empty(),
        "promtool: {msg}"
    );
}

/// Appends `text` to `path` (created if missing), as a container writing its log.
pub fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The value of one sample, by its exact `name{labels}` key.
pub fn value(text: &str, key: &str) -> Option<f64> {
    samples(text).get(key).copied()
}

/// Scrapes every 20 ms until `stop`; returns every exposition seen.
pub fn scraper(
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(t) = scrape(port) {
                v.push(t);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        v
    })
}
