//! log_pattern's own test helpers: the real binary under a Drop guard with its log file, the
//! standard sandbox arguments, kubelet-style log writing (pod dirs, CRI lines, gzip rotation)
//! and the counter-monotonicity check. The generic ones (child guard, loopback scraping,
//! polling, promtool, parsing samples) come from the shared `e2e_tests` crate.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_tests::{samples, scrape, wait_until, ChildGuard};

pub const TS: &str = "2024-01-15T10:00:00.000000000Z";

/// The exporter binary, killed (SIGKILL, by PID) and reaped on drop.
pub struct Exporter {
    pub child: ChildGuard,
    pub port: u16,
    pub log: PathBuf,
}

impl Exporter {
    /// Starts the binary with `args` (plus a free loopback port) and waits until it serves.
    pub fn start(dir: &Path, args: &[String]) -> Self {
        Self::start_with(dir, args, None)
    }

    /// Like `start`, optionally running the binary under another command (e.g. setpriv).
    pub fn start_with(dir: &Path, args: &[String], wrapper: Option<&[&str]>) -> Self {
        let port = e2e_tests::free_port();
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
        let e = Self {
            child: ChildGuard::spawn(&mut cmd),
            port,
            log,
        };
        let started = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
            e.try_scrape().is_some()
        });
        assert!(started, "exporter did not start: {}", e.logs());
        e
    }

    /// Starts the binary with `args` and waits until `/-/ready` answers 200, without scraping.
    pub fn start_ready(dir: &Path, args: &[String]) -> Self {
        let port = e2e_tests::free_port();
        let log = dir.join(format!("exporter-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_log_pattern_exporter"));
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=debug")
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let e = Self {
            child: ChildGuard::spawn(&mut cmd),
            port,
            log,
        };
        let ready = wait_until(Duration::from_secs(30), Duration::from_millis(5), || {
            e.is_ready()
        });
        assert!(ready, "exporter never ready: {}", e.logs());
        e
    }

    /// Whether `/-/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        e2e_tests::local_get(self.port, "/-/ready").is_ok_and(|(code, _)| code == 200)
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
        if let Err(e) = self.child.signal(sig) {
            panic!("signal {sig}: {e}");
        }
    }

    /// SIGKILL, as the OOM killer or a node crash would.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// SIGTERM and wait (SIGKILL after 10 s): a clean stop.
    pub fn stop(&mut self) {
        self.child.stop(Duration::from_secs(10));
    }
}

/// Asserts that no counter sample decreased between two scrapes.
pub fn assert_monotonic(history: &[String]) {
    let mut last: std::collections::BTreeMap<String, f64> = Default::default();
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

/// Appends `text` to `path` (created if missing), as a container writing its log.
pub fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
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

/// Runs the exporter as `nobody` when the tests run as root (root ignores file modes).
pub fn unprivileged_wrapper() -> Option<Vec<&'static str>> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .unwrap();
    (uid == "0").then(|| {
        vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    })
}
