//! End-to-end tests of the tailer: the real binary, real files, real inotify, real signals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e_tests::{samples, sum_samples, wait_for, wait_until, POLL};
use support::*;

const RULES: &str = "rules:\n- name: error\n  contains: ERROR\n";
const LONG: Duration = Duration::from_secs(90);

/// Writes CRI lines like a container runtime and rotates like kubelet (rename, late writes to
/// the old descriptor, reopen), counting what it wrote.
struct KubeletWriter {
    dir: PathBuf,
    out: BufWriter<File>,
    seq: u32,
    lines: u64,
    matches: u64,
}

impl KubeletWriter {
    fn new(dir: &Path) -> Self {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("0.log"))
            .unwrap();
        Self {
            dir: dir.to_path_buf(),
            out: BufWriter::with_capacity(8192, f),
            seq: 0,
            lines: 0,
            matches: 0,
        }
    }

    /// One logical line; every 7th is split into P/F fragments with "ERROR" across the split.
    fn line(&mut self, i: u64) {
        if i % 7 == 0 {
            write!(
                self.out,
                "{TS} stdout P request {i} failed: ERR\n{TS} stdout F OR code=500\n"
            )
            .unwrap();
            self.matches += 1;
        } else if i % 3 == 0 {
            writeln!(self.out, "{TS} stderr F ERROR line {i}").unwrap();
            self.matches += 1;
        } else {
            writeln!(self.out, "{TS} stdout F info line {i} ok").unwrap();
        }
        self.lines += 1;
    }

    fn flush(&mut self) {
        self.out.flush().unwrap();
    }

    /// kubelet: rename 0.log to 0.log.<time>; the runtime writes a few more lines to the old
    /// descriptor before it reopens 0.log.
    fn rotate(&mut self, late: u64) {
        self.flush();
        self.seq += 1;
        std::fs::rename(
            self.dir.join("0.log"),
            self.dir.join(format!("0.log.20240115-1000{:04}", self.seq)),
        )
        .unwrap();
        for i in 0..late {
            self.line(1_000_000 + i);
        }
        self.flush();
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("0.log"))
            .unwrap();
        self.out = BufWriter::with_capacity(8192, f);
    }

    /// Rotated files not yet compressed, oldest first.
    fn rotated_plain(&self) -> Vec<PathBuf> {
        rotated(&self.dir, false)
    }
}

fn rotated(dir: &Path, gz: bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("0.log.") && n.ends_with(".gz") == gz && !n.ends_with(".tmp")
        })
        .collect();
    v.sort();
    v
}

/// Scrapes `port` every 20 ms until stopped; returns every exposition.
/// kubelet's compressor: gzips every rotated file but the newest, deletes old .gz beyond `keep`.
/// kubelet rotates at most every 10 s (its monitor interval), so a rotated file lives for tens
/// of seconds before it is deleted; here a .gz is deleted once 2 s old, still far faster.
fn compressor(dir: PathBuf, stop: Arc<AtomicBool>, keep: usize) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let plain = rotated(&dir, false);
            for p in plain.iter().take(plain.len().saturating_sub(1)) {
                gzip(p);
                n += 1;
            }
            let gz = rotated(&dir, true);
            for p in gz.iter().take(gz.len().saturating_sub(keep)) {
                let age = std::fs::metadata(p)
                    .unwrap()
                    .modified()
                    .unwrap()
                    .elapsed()
                    .unwrap_or_default();
                if age > Duration::from_secs(2) {
                    std::fs::remove_file(p).unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        n
    })
}

fn matches(text: &str) -> f64 {
    sum_samples(text, "log_pattern_matches_total{")
}

fn metric(text: &str, key: &str) -> f64 {
    samples(text).get(key).copied().unwrap_or(-1.0)
}

#[test]
fn rotation_under_load_counts_every_line_once() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    let cdir = container_dir(&pods, "ns", "writer", "app");
    let mut w = KubeletWriter::new(&cdir);
    let cfg = write_config(d.path(), RULES);
    let exp = Exporter::start(
        d.path(),
        &args(&pods, &d.path().join("state.json"), &cfg, &[]),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = scraper(exp.port, Arc::clone(&stop));
    let gz = compressor(cdir.clone(), Arc::clone(&stop), 3);
    let mut rotations = 0;
    for i in 0..120_000u64 {
        w.line(i);
        if i % 4000 == 3999 {
            w.rotate(3);
            rotations += 1;
            // Sometimes give the exporter time to open the new file before the next rotation,
            // sometimes not: both paths (held descriptor, rotated file never opened) are taken.
            if rotations % 2 == 0 {
                std::thread::sleep(Duration::from_millis(40));
            }
        }
    }
    w.flush();
    let (want_matches, want_lines) = (w.matches as f64, w.lines as f64);
    // Let the compressor catch up and delete old files while the exporter finishes.
    std::thread::sleep(Duration::from_secs(3));
    let mut last = String::new();
    let done = wait_until(LONG, POLL, || {
        last = exp.scrape();
        matches(&last) >= want_matches
            && metric(&last, "log_pattern_lines_read_total") >= want_lines
    });
    assert!(
        done,
        "want {want_matches} matches, {want_lines} lines; got:\n{last}\n{}",
        exp.logs()
    );
    // Bounded descriptors: rotated files are released once read and quiet.
    wait_for("rotated files released", LONG, || {
        last = exp.scrape();
        metric(&last, "log_pattern_files_watched") == 1.0
    });
    stop.store(true, Ordering::Relaxed);
    let history = scrapes.join().unwrap();
    let compressed = gz.join().unwrap();
    assert!(compressed > 0, "the compressor never ran");
    assert!(history.len() > 5);
    assert_monotonic(&history);
    assert_eq!(matches(&last), want_matches, "{}", exp.logs());
    assert_eq!(metric(&last, "log_pattern_lines_read_total"), want_lines);
    assert_eq!(
        metric(&last, "log_pattern_matches_total{rule=\"error\",namespace=\"ns\",pod=\"writer\",container=\"app\"}"),
        want_matches
    );
    assert_eq!(
        metric(&last, "log_pattern_rotations_total"),
        f64::from(rotations)
    );
    assert_eq!(
        metric(&last, "log_pattern_parse_errors_total{format=\"cri\"}"),
        0.0
    );
    assert_eq!(metric(&last, "log_pattern_files_lost_total"), 0.0);
}

#[test]
fn sigkill_during_burst_with_rotation_and_gzip_while_down() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    let state = d.path().join("state.json");
    let cdir = container_dir(&pods, "ns", "burst", "app");
    let mut w = KubeletWriter::new(&cdir);
    let cfg = write_config(d.path(), RULES);
    let argv = args(&pods, &state, &cfg, &["--state.save-interval=200ms"]);

    let mut a = Exporter::start(d.path(), &argv);
    let mut served_before = 0.0;
    // The rotator's compressor runs throughout: before, during and after the downtime (it
    // keeps every .gz so that the exact count is knowable).
    let stop_gz = Arc::new(AtomicBool::new(false));
    let gz = compressor(cdir.clone(), Arc::clone(&stop_gz), usize::MAX);
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes_a = scraper(a.port, Arc::clone(&stop));
    for i in 0..60_000u64 {
        w.line(i);
        if i % 9000 == 8999 {
            w.rotate(2);
        }
        if i == 40_000 {
            w.flush();
            // Let it get going, then kill it mid-burst.
            wait_for("some lines read", LONG, || {
                served_before = matches(&a.scrape());
                served_before > 100.0
            });
            a.kill();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut history = scrapes_a.join().unwrap();
    // Still down: more lines, then the file it was reading is rotated and compressed.
    for i in 60_000..65_000u64 {
        w.line(i);
    }
    w.rotate(2);
    // Wait until the compressor has compressed every rotated file but the newest.
    wait_for("compression while down", LONG, || {
        w.rotated_plain().len() <= 1
    });
    for i in 65_000..66_000u64 {
        w.line(i);
    }
    w.flush();
    // A pod that lived and died while the exporter was down.
    let short = container_dir(&pods, "ns", "short", "job");
    std::fs::write(
        short.join("0.log"),
        format!("{}{}{}", cri("ERROR a"), cri("fine"), cri("ERROR b")),
    )
    .unwrap();

    let b = Exporter::start(d.path(), &argv);
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes_b = scraper(b.port, Arc::clone(&stop));
    for i in 66_000..70_000u64 {
        w.line(i);
    }
    w.flush();
    let want = w.matches as f64 + 2.0;
    let mut last = String::new();
    let done = wait_until(LONG, POLL, || {
        last = b.scrape();
        matches(&last) >= want
    });
    assert!(done, "want {want} matches; got:\n{last}\n{}", b.logs());
    std::thread::sleep(Duration::from_millis(300));
    last = b.scrape();
    stop.store(true, Ordering::Relaxed);
    stop_gz.store(true, Ordering::Relaxed);
    assert!(gz.join().unwrap() >= 3);
    history.extend(scrapes_b.join().unwrap());
    assert_monotonic(&history);
    assert!(served_before > 100.0 && served_before <= want);
    assert_eq!(matches(&last), want, "{}", b.logs());
    assert_eq!(
        metric(&last, "log_pattern_lines_read_total"),
        w.lines as f64 + 3.0
    );
    assert_eq!(
        metric(&last, "log_pattern_matches_total{rule=\"error\",namespace=\"ns\",pod=\"short\",container=\"job\"}"),
        2.0
    );
    assert_eq!(
        metric(&last, "log_pattern_files_lost_total"),
        0.0,
        "{}",
        b.logs()
    );
    assert!(
        b.logs().contains("resuming from saved state"),
        "{}",
        b.logs()
    );
    // What the restart had to do (printed with --nocapture): resume files, read compressed ones.
    for l in b
        .logs()
        .lines()
        .filter(|l| l.contains("resuming") || l.contains("never seen"))
    {
        println!("{l}");
    }
}

fn short_lived_pods(inotify: bool) {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let cfg = write_config(d.path(), RULES);
    let flag = format!("--discovery.inotify={inotify}");
    // With inotify on, the periodic rescan is effectively off: events alone must find the pods.
    let rescan = if inotify {
        "--discovery.rescan-interval=1h"
    } else {
        "--discovery.rescan-interval=1s"
    };
    let exp = Exporter::start(
        d.path(),
        &args(&pods, &d.path().join("state.json"), &cfg, &[&flag, rescan]),
    );
    for p in 0..25 {
        let dir = container_dir(&pods, "batch", &format!("job-{p}"), "main");
        let mut f = File::create(dir.join("0.log")).unwrap();
        f.write_all(
            format!(
                "{}{}{}",
                cri("start"),
                cri("ERROR boom"),
                cri("ERROR exit 1")
            )
            .as_bytes(),
        )
        .unwrap();
    }
    let mut last = String::new();
    wait_for("short-lived pods counted", Duration::from_secs(30), || {
        last = exp.scrape();
        matches(&last) >= 50.0
    });
    assert_eq!(matches(&last), 50.0);
    let trigger = if inotify { "inotify" } else { "periodic" };
    assert!(
        metric(
            &last,
            &format!("log_pattern_rescans_total{{trigger=\"{trigger}\"}}")
        ) >= 1.0,
        "{last}"
    );
    if !inotify {
        assert_eq!(
            metric(&last, "log_pattern_rescans_total{trigger=\"inotify\"}"),
            0.0
        );
        assert_eq!(metric(&last, "log_pattern_directories_watched"), 0.0);
    } else {
        assert_eq!(
            metric(&last, "log_pattern_rescans_total{trigger=\"periodic\"}"),
            0.0
        );
        assert!(
            metric(&last, "log_pattern_directories_watched") >= 51.0,
            "{last}"
        );
    }
}

/// Lines written while the exporter is down, in pods whose directories are removed the moment
/// it is ready again: `/-/ready` answers 200 only once the restart's discovery holds every file
/// it found open, so the removal takes no line with it.
#[test]
fn pods_removed_the_moment_a_restart_is_ready_lose_nothing() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let state = d.path().join("state.json");
    let cfg = write_config(d.path(), RULES);
    // A long rotate-wait: a removed file must be drained and closed without waiting for it.
    let mut argv = args(&pods, &state, &cfg, &[]);
    argv.retain(|a| !a.starts_with("--tail.rotate-wait"));
    argv.push("--tail.rotate-wait=1h".into());
    let mut a = Exporter::start(d.path(), &argv);
    a.kill();
    const PODS: usize = 300;
    let mut dirs = Vec::new();
    for p in 0..PODS {
        let dir = container_dir(&pods, "batch", &format!("job-{p}"), "main");
        append(
            &dir.join("0.log"),
            &format!(
                "{}{}{}",
                cri("start"),
                cri("ERROR boom"),
                cri("ERROR exit 1")
            ),
        );
        dirs.push(dir.parent().unwrap().to_path_buf());
    }
    let b = Exporter::start_ready(d.path(), &argv);
    for dir in &dirs {
        std::fs::remove_dir_all(dir).unwrap();
    }
    let mut last = String::new();
    let counted = wait_until(Duration::from_secs(30), POLL, || {
        last = b.scrape();
        matches(&last) >= 2.0 * PODS as f64 && metric(&last, "log_pattern_files_watched") == 0.0
    });
    assert!(counted, "{last}\n{}", b.logs());
    assert_eq!(matches(&last), 2.0 * PODS as f64);
    assert_eq!(
        metric(&last, "log_pattern_lines_read_total"),
        3.0 * PODS as f64
    );
    assert_eq!(sum_samples(&last, "log_pattern_read_errors_total{"), 0.0);
}

/// Series of a pod whose files are all gone are served for `--series.retention` (Prometheus
/// scrapes their last value), then dropped; a pod still there keeps its series, and no served
/// value ever goes down.
#[test]
fn series_of_gone_pods_are_dropped_after_the_retention() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let cfg = write_config(d.path(), RULES);
    let state = d.path().join("state.json");
    let exp = Exporter::start(
        d.path(),
        &args(&pods, &state, &cfg, &["--series.retention=2s"]),
    );
    let stay = container_dir(&pods, "ns", "stay", "app");
    append(&stay.join("0.log"), &cri("ERROR kept"));
    let go = container_dir(&pods, "ns", "go", "app");
    append(
        &go.join("0.log"),
        &format!("{}{}", cri("ERROR a"), cri("ERROR b")),
    );
    let series = |text: &str, pod: &str| {
        metric(
            text,
            &format!(
                "log_pattern_matches_total{{rule=\"error\",namespace=\"ns\",pod=\"{pod}\",container=\"app\"}}"
            ),
        )
    };
    let mut history = Vec::new();
    wait_for("both pods counted", LONG, || {
        history.push(exp.scrape());
        series(history.last().unwrap(), "go") == 2.0
            && series(history.last().unwrap(), "stay") == 1.0
    });
    std::fs::remove_dir_all(go.parent().unwrap()).unwrap();
    let removed = std::time::Instant::now();
    wait_for("the gone pod's series dropped", LONG, || {
        history.push(exp.scrape());
        series(history.last().unwrap(), "go") == -1.0
    });
    assert!(removed.elapsed() >= Duration::from_secs(2));
    let last = history.last().unwrap().clone();
    assert_eq!(series(&last, "stay"), 1.0);
    // Served until the retention passed.
    let served = history.iter().filter(|t| series(t, "go") == 2.0).count();
    assert!(served >= 3, "{served}");
    assert_monotonic(&history);
    // Not back after a restart either: the state no longer holds it.
    drop(exp);
    let exp = Exporter::start(d.path(), &args(&pods, &state, &cfg, &[]));
    let text = exp.scrape();
    assert_eq!(series(&text, "go"), -1.0);
    assert_eq!(series(&text, "stay"), 1.0);
}

#[test]
fn short_lived_pods_found_by_rescan_without_inotify() {
    short_lived_pods(false);
}

#[test]
fn short_lived_pods_found_by_inotify() {
    short_lived_pods(true);
}

#[test]
fn copytruncate_reads_again_from_zero_and_counts() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let cfg = write_config(d.path(), RULES);
    let exp = Exporter::start(
        d.path(),
        &args(&pods, &d.path().join("state.json"), &cfg, &[]),
    );
    let dir = container_dir(&pods, "ns", "legacy", "app");
    let path = dir.join("0.log");
    let mut text = String::new();
    for i in 0..100 {
        text.push_str(&format!(
            "plain line {i} {}\n",
            if i % 2 == 0 { "ERROR" } else { "ok" }
        ));
    }
    std::fs::write(&path, &text).unwrap();
    wait_for("first lines", Duration::from_secs(20), || {
        matches(&exp.scrape()) >= 50.0
    });
    // copytruncate: copy aside, truncate in place, keep writing to the same inode.
    std::fs::copy(&path, dir.join("0.log.1")).unwrap();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    drop(f);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    for i in 0..20 {
        writeln!(f, "after {i} {}", if i % 2 == 0 { "ERROR" } else { "ok" }).unwrap();
    }
    let mut last = String::new();
    wait_for("lines after truncation", Duration::from_secs(20), || {
        last = exp.scrape();
        matches(&last) >= 60.0
    });
    assert_eq!(matches(&last), 60.0);
    assert_eq!(metric(&last, "log_pattern_truncations_total"), 1.0);
    assert_eq!(
        metric(&last, "log_pattern_parse_errors_total{format=\"cri\"}"),
        0.0
    );
}

#[test]
fn same_inode_new_content_across_restart_is_a_new_file() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let state = d.path().join("state.json");
    let cfg = write_config(d.path(), RULES);
    let argv = args(&pods, &state, &cfg, &[]);
    let mut a = Exporter::start(d.path(), &argv);
    let dir = container_dir(&pods, "ns", "reuse", "app");
    let path = dir.join("0.log");
    let old: String = (0..10)
        .map(|i| {
            cri(&format!(
                "old {i} {}",
                if i % 2 == 0 { "ERROR" } else { "ok" }
            ))
        })
        .collect();
    std::fs::write(&path, &old).unwrap();
    wait_for("old lines", Duration::from_secs(20), || {
        matches(&a.scrape()) >= 5.0
    });
    a.stop();
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
    // The same inode now holds a different, longer file (what inode reuse looks like).
    let new: String = (0..30)
        .map(|i| {
            format!(
                "{TS} stderr F new {i} {}\n",
                if i % 5 < 2 { "ERROR" } else { "fine" }
            )
        })
        .collect();
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(new.as_bytes()).unwrap();
    drop(f);
    assert_eq!(
        ino,
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap())
    );
    let b = Exporter::start(d.path(), &argv);
    let mut last = String::new();
    wait_for("new content counted", Duration::from_secs(20), || {
        last = b.scrape();
        matches(&last) >= 17.0
    });
    std::thread::sleep(Duration::from_millis(300));
    last = b.scrape();
    assert_eq!(matches(&last), 17.0, "{}", b.logs());
    assert_eq!(metric(&last, "log_pattern_lines_read_total"), 40.0);
}

#[test]
fn permission_denied_is_counted_and_others_still_read() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let pods = root.join("pods");
    let ok = container_dir(&pods, "ns", "open", "app");
    let secret = container_dir(&pods, "ns", "secret", "app");
    std::fs::write(ok.join("0.log"), cri("ERROR visible")).unwrap();
    std::fs::write(secret.join("0.log"), cri("ERROR hidden")).unwrap();
    let cfg = write_config(root, &format!("{RULES}start_at: beginning\n"));
    let unprivileged = unprivileged_wrapper();
    std::fs::set_permissions(
        secret.join("0.log"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let exp = Exporter::start_with(
        root,
        &args(&pods, &root.join("state.json"), &cfg, &[]),
        unprivileged.as_deref(),
    );
    let mut last = String::new();
    wait_for(
        "readable file counted, unreadable one reported",
        Duration::from_secs(20),
        || {
            last = exp.scrape();
            matches(&last) >= 1.0
                && metric(
                    &last,
                    "log_pattern_read_errors_total{reason=\"permission_denied\"}",
                ) >= 1.0
        },
    );
    assert_eq!(matches(&last), 1.0);
    assert_eq!(
        metric(
            &last,
            "log_pattern_read_errors_total{reason=\"permission_denied\"}"
        ),
        1.0
    );
}

#[test]
fn bad_state_files_never_stop_the_exporter() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    let dir = container_dir(&pods, "ns", "p", "c");
    let cfg = write_config(d.path(), RULES);
    // Corrupt: set aside, reported, the exporter starts afresh.
    let state = d.path().join("state.json");
    std::fs::write(&state, "{\"version\":1,\"files\":[tru").unwrap();
    let exp = Exporter::start(d.path(), &args(&pods, &state, &cfg, &[]));
    std::fs::write(dir.join("1.log"), cri("ERROR x")).unwrap();
    let mut last = String::new();
    wait_for("counted", Duration::from_secs(20), || {
        last = exp.scrape();
        matches(&last) >= 1.0
    });
    assert_eq!(metric(&last, "log_pattern_state_load_failures_total"), 1.0);
    assert!(std::fs::read_dir(d.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("state.json.corrupt-")));
    assert!(exp.logs().contains("state file unusable"), "{}", exp.logs());
    drop(exp);

    // Unwritable: counted; the exporter serves the values of the last good save (none yet).
    std::fs::write(d.path().join("a-file"), b"").unwrap();
    let bad = d.path().join("a-file").join("state.json");
    let exp = Exporter::start(d.path(), &args(&pods, &bad, &cfg, &[]));
    std::fs::write(dir.join("2.log"), cri("ERROR y")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let text = exp.scrape();
    assert!(
        metric(&text, "log_pattern_state_save_failures_total") >= 1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "log_pattern_state_saves_total"), 0.0);
    assert_eq!(matches(&text), 0.0);
}

#[test]
fn glob_sources_with_captured_and_static_labels_and_deleted_pods() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let app = d.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let cfg = write_config(
        d.path(),
        &format!(
            "{RULES}sources:\n- path: {}/{{service}}/error.log\n  labels: {{job: app}}\n",
            app.display()
        ),
    );
    let exp = Exporter::start(
        d.path(),
        &args(&pods, &d.path().join("state.json"), &cfg, &[]),
    );
    // A service directory and a pod that appear after start, log, and are deleted.
    std::fs::create_dir_all(app.join("api")).unwrap();
    std::fs::write(app.join("api/error.log"), "ERROR one\nok\nERROR two\n").unwrap();
    std::fs::write(app.join("api/access.log"), "ERROR not a source\n").unwrap();
    let c = container_dir(&pods, "ns", "gone", "app");
    std::fs::write(c.join("0.log"), cri("ERROR before deletion")).unwrap();
    let mut last = String::new();
    wait_for("glob and pod lines", Duration::from_secs(20), || {
        last = exp.scrape();
        matches(&last) >= 3.0
    });
    std::fs::remove_dir_all(pods.join("ns_gone_gone-uid")).unwrap();
    wait_for("deleted pod released", Duration::from_secs(20), || {
        last = exp.scrape();
        metric(&last, "log_pattern_files_watched") == 1.0
    });
    assert_eq!(matches(&last), 3.0, "{last}");
    assert_eq!(
        metric(
            &last,
            "log_pattern_matches_total{rule=\"error\",service=\"api\",job=\"app\"}"
        ),
        2.0,
        "{last}"
    );
    assert_eq!(
        metric(&last, "log_pattern_matches_total{rule=\"error\",namespace=\"ns\",pod=\"gone\",container=\"app\"}"),
        1.0
    );
}

#[test]
fn first_start_skips_history_and_counts_what_follows() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    let c = container_dir(&pods, "ns", "old", "app");
    // History, then a line still being written when the exporter starts.
    std::fs::write(c.join("0.log"), "ERROR old 1\nERROR old 2\nERR").unwrap();
    std::fs::write(c.join("0.log.20240101-000000"), "ERROR rotated history\n").unwrap();
    let cfg = write_config(d.path(), RULES);
    let exp = Exporter::start(
        d.path(),
        &args(&pods, &d.path().join("state.json"), &cfg, &[]),
    );
    let mut f = OpenOptions::new()
        .append(true)
        .open(c.join("0.log"))
        .unwrap();
    f.write_all(b"OR completed\nERROR new\n").unwrap();
    let mut last = String::new();
    wait_for("new lines", Duration::from_secs(20), || {
        last = exp.scrape();
        matches(&last) >= 2.0
    });
    std::thread::sleep(Duration::from_millis(300));
    last = exp.scrape();
    assert_eq!(matches(&last), 2.0, "{last}");
    assert_eq!(metric(&last, "log_pattern_lines_read_total"), 2.0);
}

#[test]
fn inotify_overflow_triggers_an_immediate_rescan() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let cfg = write_config(d.path(), RULES);
    // No periodic rescan: only inotify (and its overflow) can find the new pod.
    let mut exp = Exporter::start(
        d.path(),
        &args(
            &pods,
            &d.path().join("state.json"),
            &cfg,
            &["--discovery.rescan-interval=1h"],
        ),
    );
    let signal = |sig: &str| exp.signal(sig);
    // Freeze the exporter so its inotify queue (16384 events by default) overflows.
    signal("-STOP");
    let noise = pods.join("not-a-pod");
    std::fs::create_dir_all(&noise).unwrap();
    let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .map(|s| s.trim().parse().unwrap_or(16384))
        .unwrap_or(16384);
    // A read in progress when the process stops may still drain one buffer (64 KiB, ~2000 events).
    for i in 0..limit + 4000 {
        File::create(pods.join(format!("noise-{i}"))).unwrap();
    }
    let c = container_dir(&pods, "ns", "late", "app");
    std::fs::write(c.join("0.log"), cri("ERROR while frozen")).unwrap();
    signal("-CONT");
    let mut last = String::new();
    // The overflow event comes after the events that fitted in the queue.
    let done = wait_until(Duration::from_secs(30), POLL, || {
        last = exp.scrape();
        matches(&last) >= 1.0 && metric(&last, "log_pattern_inotify_overflows_total") >= 1.0
    });
    assert!(done, "{last}");
    assert_eq!(matches(&last), 1.0);
    assert!(metric(&last, "log_pattern_rescans_total{trigger=\"overflow\"}") >= 1.0);
    exp.stop();
}
