//! Chaos: the real binary under kubelet-style abuse for a fixed time, with a random seed (printed;
//! `LOG_PATTERN_CHAOS_SEED` replays one). Dozens of containers write CRI lines (some longer than
//! 16 KiB, split into `P`/`F` fragments as containerd splits them), with bursts; each file is
//! rotated at a random size as kubelet rotates (rename, a few late writes to the old descriptor,
//! reopen; every rotated file but the newest gzip-compressed); short-lived pods come and go; the
//! exporter is SIGKILLed and restarted several times (state file kept), writing, rotating and
//! compressing going on while it is down (a file rotated twice and compressed meanwhile
//! included). A short-lived pod writes its first line, the rest once the exporter has counted
//! that one (it holds the file open: what it promises for the files it found), and its directory
//! is removed a moment later, while the exporter is up and not in the two seconds before a
//! SIGKILL (lines read after the last save of a file removed meanwhile cannot be read again after
//! a crash). At the end, the matches per pod and per namespace and the lines read equal what was
//! written, exactly, no file is counted lost, and no scraped counter ever decreased.
//!
//! The run lasts 20 s; `LOG_PATTERN_SOAK_SECS` sets a longer one (a soak).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_tests::{samples, wait_until};
use support::*;

const NAMESPACES: usize = 4;
const CONTAINERS: usize = 24;
/// No directory is removed this long before a SIGKILL: the exporter saves every 200 ms, but a
/// debug build on a loaded machine may spend a second in one read round.
const QUIET_BEFORE_KILL: Duration = Duration::from_secs(2);
/// How often the test looks whether the exporter has found the short-lived pods.
const LOOK: Duration = Duration::from_millis(100);
/// Shortest time between two rotations of one container.
const ROTATION_GAP: Duration = Duration::from_secs(1);
/// containerd's largest CRI fragment.
const FRAGMENT: usize = 16 * 1024;

/// xorshift64*: small, seedable, good enough to pick actions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// What was written, per namespace and per pod.
#[derive(Default)]
struct Want {
    matches: [u64; NAMESPACES],
    by_pod: std::collections::BTreeMap<String, u64>,
    lines: u64,
}

impl Want {
    fn add(&mut self, ns: usize, pod: &str, matched: bool) {
        self.lines += 1;
        if matched {
            self.matches[ns] += 1;
            *self.by_pod.entry(pod.to_string()).or_default() += 1;
        }
    }
}

/// Writes one logical line as containerd does: one `F` line, or `P` fragments of 16 KiB and a
/// last `F` for a longer message. Returns whether it holds `ERROR`.
fn write_line(out: &mut impl Write, rng: &mut Rng, i: u64) -> bool {
    let stream = if rng.chance(3) { "stderr" } else { "stdout" };
    let error = rng.chance(3);
    if !rng.chance(40) {
        let word = if error { "ERROR" } else { "info" };
        writeln!(out, "{TS} {stream} F {word} request {i} done").unwrap();
        return error;
    }
    // A long message; ERROR (if any) anywhere, across a fragment boundary included.
    let len = FRAGMENT + 8 + rng.below(3 * FRAGMENT as u64) as usize;
    let mut msg = vec![b'x'; len];
    if error {
        let at = if rng.chance(2) {
            FRAGMENT - 1 - rng.below(4) as usize
        } else {
            rng.below((len - 5) as u64) as usize
        };
        msg[at..at + 5].copy_from_slice(b"ERROR");
    }
    let mut chunks = msg.chunks(FRAGMENT).peekable();
    while let Some(c) = chunks.next() {
        let tag = if chunks.peek().is_some() { "P" } else { "F" };
        write!(out, "{TS} {stream} {tag} ").unwrap();
        out.write_all(c).unwrap();
        out.write_all(b"\n").unwrap();
    }
    error
}

/// A long-lived container, rotated by size like kubelet.
struct Container {
    ns: usize,
    pod: String,
    dir: PathBuf,
    out: File,
    size: u64,
    rotate_at: u64,
    rotated_at: Instant,
    seq: u32,
}

impl Container {
    fn new(dir: PathBuf, ns: usize, pod: String, rng: &mut Rng) -> Self {
        let out = open_log(&dir);
        Self {
            ns,
            pod,
            dir,
            out,
            size: 0,
            rotate_at: 20_000 + rng.below(400_000),
            rotated_at: Instant::now(),
            seq: 0,
        }
    }

    fn write(&mut self, rng: &mut Rng, want: &mut Want, n: u64) {
        let mut buf = Vec::new();
        for _ in 0..n {
            let m = write_line(&mut buf, rng, want.lines);
            want.add(self.ns, &self.pod, m);
        }
        self.out.write_all(&buf).unwrap();
        self.size += buf.len() as u64;
        // kubelet looks at sizes every 10 s (its container log monitor period): never two
        // rotations of one container within a second here.
        if self.size >= self.rotate_at && self.rotated_at.elapsed() >= ROTATION_GAP {
            self.rotate(rng, want);
        }
    }

    /// kubelet: rename `0.log`, the runtime writes a few more lines to the old descriptor until
    /// it reopens `0.log`; every rotated file but the newest is compressed.
    fn rotate(&mut self, rng: &mut Rng, want: &mut Want) {
        self.seq += 1;
        let rotated = self.dir.join(format!("0.log.20240115-10{:04}", self.seq));
        std::fs::rename(self.dir.join("0.log"), &rotated).unwrap();
        let mut late = Vec::new();
        for _ in 0..rng.below(4) {
            let m = write_line(&mut late, rng, want.lines);
            want.add(self.ns, &self.pod, m);
        }
        self.out.write_all(&late).unwrap();
        self.out = open_log(&self.dir);
        self.size = 0;
        self.rotated_at = Instant::now();
        self.rotate_at = 20_000 + rng.below(400_000);
        for old in plain_rotated(&self.dir) {
            if old != rotated {
                gzip(&old);
            }
        }
    }
}

fn open_log(dir: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("0.log"))
        .unwrap()
}

fn plain_rotated(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("0.log.") && !n.ends_with(".gz") && !n.ends_with(".tmp")
        })
        .collect()
}

/// A short-lived pod: its first line written, the rest written once the exporter has counted
/// that one (it holds the file open), then its directory removed a moment later.
struct ShortPod {
    name: String,
    ns: usize,
    out: File,
    dir: PathBuf,
    linger: Duration,
}

impl ShortPod {
    fn start(pods: &Path, n: u64, rng: &mut Rng, want: &mut Want) -> Self {
        let ns = rng.below(NAMESPACES as u64) as usize;
        let name = format!("job-{n}");
        let dir = container_dir(pods, &format!("ns{ns}"), &name, "run");
        let mut out = open_log(&dir);
        writeln!(out, "{TS} stdout F ERROR {name} starting").unwrap();
        want.add(ns, &name, true);
        Self {
            name,
            ns,
            out,
            dir,
            linger: Duration::from_millis(100 + rng.below(1000)),
        }
    }

    /// Writes its last lines; returns when and what to remove.
    fn finish(mut self, rng: &mut Rng, want: &mut Want) -> (Instant, PathBuf) {
        let mut buf = Vec::new();
        for _ in 0..rng.below(8) {
            let m = write_line(&mut buf, rng, want.lines);
            want.add(self.ns, &self.name, m);
        }
        self.out.write_all(&buf).unwrap();
        (
            Instant::now() + self.linger,
            self.dir.parent().unwrap().to_path_buf(),
        )
    }
}

/// The pods the rule `by_pod` counted something for.
fn pods_counted(text: &str) -> std::collections::HashSet<String> {
    samples(text)
        .into_iter()
        .filter(|(k, v)| k.starts_with("log_pattern_matches_total{rule=\"by_pod\"") && *v > 0.0)
        .filter_map(|(k, _)| {
            let at = k.find("pod=\"")? + 5;
            Some(k[at..].split('"').next()?.to_string())
        })
        .collect()
}

/// Pods whose count (rule `by_pod`) differs from what was written: (pod, written, counted).
fn pods_off(text: &str, want: &Want) -> Vec<(String, u64, f64)> {
    let got = samples(text);
    want.by_pod
        .iter()
        .filter_map(|(pod, &w)| {
            let v = got
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("log_pattern_matches_total{rule=\"by_pod\"")
                        && k.contains(&format!("pod=\"{pod}\""))
                })
                .map(|(_, v)| *v)
                .sum::<f64>();
            (v != w as f64).then(|| (pod.clone(), w, v))
        })
        .collect()
}

fn matches_by_namespace(text: &str) -> [f64; NAMESPACES] {
    let mut out = [0.0; NAMESPACES];
    for (k, v) in samples(text) {
        if !k.starts_with("log_pattern_matches_total{rule=\"error\"") {
            continue;
        }
        for (ns, o) in out.iter_mut().enumerate() {
            if k.contains(&format!("namespace=\"ns{ns}\"")) {
                *o += v;
            }
        }
    }
    out
}

fn metric(text: &str, key: &str) -> f64 {
    samples(text).get(key).copied().unwrap_or(-1.0)
}

/// The exporter and the thread scraping it every 20 ms (the latest exposition kept apart).
struct Running {
    exp: Exporter,
    stop: Arc<AtomicBool>,
    latest: Arc<Mutex<String>>,
    scrapes: std::thread::JoinHandle<Vec<String>>,
}

impl Running {
    fn start(dir: &Path, argv: &[String]) -> Self {
        let exp = Exporter::start_ready(dir, argv);
        let stop = Arc::new(AtomicBool::new(false));
        let latest = Arc::new(Mutex::new(String::new()));
        let (port, until, last) = (exp.port, Arc::clone(&stop), Arc::clone(&latest));
        let scrapes = std::thread::spawn(move || {
            let mut v = Vec::new();
            while !until.load(Ordering::Relaxed) {
                if let Some(t) = e2e_tests::scrape(port) {
                    last.lock().unwrap().clone_from(&t);
                    v.push(t);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            v
        });
        Self {
            exp,
            stop,
            latest,
            scrapes,
        }
    }

    fn kill(mut self, history: &mut Vec<String>) {
        self.exp.kill();
        self.stop.store(true, Ordering::Relaxed);
        history.extend(self.scrapes.join().unwrap());
    }
}

#[test]
fn kubelet_chaos_with_sigkills_loses_and_doubles_nothing() {
    let seed = std::env::var("LOG_PATTERN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let secs = std::env::var("LOG_PATTERN_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("chaos seed {seed} ({secs} s; LOG_PATTERN_CHAOS_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let state = d.path().join("state.json");
    let cfg = write_config(
        d.path(),
        "rules:\n- name: error\n  contains: ERROR\n  keep_labels: [namespace]\n\
         - name: by_pod\n  contains: ERROR\n  keep_labels: [pod]\n  max_series: 100000\n",
    );
    let argv = args(&pods, &state, &cfg, &["--state.save-interval=200ms"]);
    let mut want = Want::default();
    let mut containers: Vec<Container> = (0..CONTAINERS)
        .map(|c| {
            let ns = c % NAMESPACES;
            let dir = container_dir(&pods, &format!("ns{ns}"), &format!("app-{c}"), "main");
            Container::new(dir, ns, format!("app-{c}"), &mut rng)
        })
        .collect();
    let mut history = Vec::new();
    let mut running = Some(Running::start(d.path(), &argv));
    // Short-lived pods not found yet, and directories removed once their time has come while
    // the exporter is up.
    let mut starting: Vec<ShortPod> = Vec::new();
    let mut ended: VecDeque<(Instant, PathBuf)> = VecDeque::new();
    let mut last_look = Instant::now();
    let (mut kills, mut short_pods, mut bursts) = (0, 0u64, 0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut next_kill = start + Duration::from_millis(2000 + rng.below(3000));
    let mut back_at = None;
    while Instant::now() < deadline {
        let c = rng.below(CONTAINERS as u64) as usize;
        let n = if rng.chance(200) {
            bursts += 1;
            500 + rng.below(1500)
        } else {
            1 + rng.below(20)
        };
        containers[c].write(&mut rng, &mut want, n);
        if rng.chance(15) {
            // A pod that lives a moment: a few lines, then its directory goes.
            starting.push(ShortPod::start(&pods, short_pods, &mut rng, &mut want));
            short_pods += 1;
        }
        // A file is held open once the exporter found it (what `/-/ready` promises for the
        // files of its first scan); one created and removed between two of its looks (a
        // stalled exporter) could not be read by anyone.
        if !starting.is_empty() && last_look.elapsed() >= LOOK {
            last_look = Instant::now();
            if let Some(r) = &running {
                let counted = pods_counted(&r.latest.lock().unwrap());
                let (seen, rest): (Vec<ShortPod>, Vec<ShortPod>) =
                    starting.drain(..).partition(|p| counted.contains(&p.name));
                starting = rest;
                ended.extend(seen.into_iter().map(|p| p.finish(&mut rng, &mut want)));
            }
        }
        // No removal in the second before a kill: lines read since the last save of a file
        // removed meanwhile cannot be read again after a crash (the save interval is 200 ms).
        if running.is_some() && Instant::now() + QUIET_BEFORE_KILL < next_kill {
            while ended.front().is_some_and(|(t, _)| *t <= Instant::now()) {
                let (_, dir) = ended.pop_front().unwrap();
                std::fs::remove_dir_all(dir).unwrap();
            }
        }
        let now = Instant::now();
        if running.is_some() && now >= next_kill {
            running.take().unwrap().kill(&mut history);
            kills += 1;
            back_at = Some(now + Duration::from_millis(300 + rng.below(1200)));
        } else if back_at.is_some_and(|t| now >= t) {
            back_at = None;
            running = Some(Running::start(d.path(), &argv));
            next_kill = Instant::now() + Duration::from_millis(2000 + rng.below(4000));
        }
        std::thread::sleep(Duration::from_millis(1 + rng.below(3)));
    }
    let running = running.unwrap_or_else(|| Running::start(d.path(), &argv));
    let found = wait_until(Duration::from_secs(60), LOOK, || {
        let counted = pods_counted(&running.exp.scrape());
        starting.iter().all(|p| counted.contains(&p.name))
    });
    assert!(found, "short-lived pods never found");
    ended.extend(starting.drain(..).map(|p| p.finish(&mut rng, &mut want)));
    for (t, dir) in ended.drain(..) {
        std::thread::sleep(t.saturating_duration_since(Instant::now()));
        std::fs::remove_dir_all(dir).unwrap();
    }
    let mut last = String::new();
    let expected: Vec<f64> = want.matches.iter().map(|&m| m as f64).collect();
    let done = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        last = running.exp.scrape();
        matches_by_namespace(&last).iter().sum::<f64>() >= expected.iter().sum::<f64>()
            && metric(&last, "log_pattern_lines_read_total") >= want.lines as f64
    });
    // Anything read twice would show up a moment later.
    std::thread::sleep(Duration::from_millis(500));
    last = running.exp.scrape();
    running.kill(&mut history);
    let summary = format!(
        "seed {seed}: {kills} kills, {short_pods} short-lived pods, {bursts} bursts, {} lines",
        want.lines
    );
    println!("{summary}");
    let off = pods_off(&last, &want);
    let got = |key: &str| metric(&last, key);
    let problems: Vec<String> = [
        (!done).then(|| "not all counted in time".to_string()),
        (!off.is_empty()).then(|| format!("pods (written, counted): {off:?}")),
        (matches_by_namespace(&last).to_vec() != expected)
            .then(|| format!("per namespace {:?}", matches_by_namespace(&last))),
        (got("log_pattern_lines_read_total") != want.lines as f64)
            .then(|| format!("lines read {}", got("log_pattern_lines_read_total"))),
        (got("log_pattern_files_lost_total") != 0.0)
            .then(|| format!("files lost {}", got("log_pattern_files_lost_total"))),
        (e2e_tests::sum_samples(&last, "log_pattern_read_errors_total{") != 0.0)
            .then(|| "read errors".to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        // The exporter's debug logs of every run, in order, for the failure to be read.
        let mut runs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("exporter-"))
            .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
            .collect();
        runs.sort();
        let all: Vec<String> = runs
            .iter()
            .map(|(_, p)| std::fs::read_to_string(p).unwrap_or_default())
            .collect();
        let saved = std::env::temp_dir().join(format!("log_pattern_chaos_{seed}.log"));
        std::fs::write(&saved, all.join("=== restart\n")).unwrap();
        // The pod tree and state file, kept for the failure to be examined.
        let kept = d.keep();
        panic!(
            "{summary}: {problems:?}; exporter log: {}; files kept in {}",
            saved.display(),
            kept.display()
        );
    }
    assert!(kills >= 2, "{summary}");
    assert_monotonic(&history);
}
