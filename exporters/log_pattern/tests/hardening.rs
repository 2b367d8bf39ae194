//! Adversarial cases against the real binary on real files: what the operator's rule ("no line
//! lost on rotation, restart or between two scans; bad input counted, never a panic or a hang")
//! must survive beyond the main tailer tests (`tailer.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e_tests::{samples, sum_samples, wait_until, POLL};
use support::*;

const RULES: &str = "rules:\n- name: error\n  contains: ERROR\n";
const WAIT: Duration = Duration::from_secs(20);

fn matches(text: &str) -> f64 {
    sum_samples(text, "log_pattern_matches_total{")
}

fn metric(text: &str, key: &str) -> f64 {
    samples(text).get(key).copied().unwrap_or(-1.0)
}

/// Waits until `cond` holds on a scrape, then a little longer (so that a double count would
/// show), and returns the last scrape; panics with the exporter's log if it never holds.
fn settle(exp: &Exporter, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let ok = wait_until(WAIT, POLL, || {
        last = exp.try_scrape().unwrap_or_default();
        cond(&last)
    });
    assert!(
        ok,
        "{what}: never reached; last scrape:\n{last}\n{}",
        exp.logs()
    );
    std::thread::sleep(Duration::from_millis(600));
    exp.scrape()
}

/// A temp dir with a pod tree, a rules file and the standard arguments.
struct Sandbox {
    dir: tempfile::TempDir,
    pods: PathBuf,
    argv: Vec<String>,
}

impl Sandbox {
    fn new(rules: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pods = dir.path().join("pods");
        std::fs::create_dir_all(&pods).unwrap();
        let cfg = write_config(dir.path(), rules);
        let argv = args(&pods, &dir.path().join("state.json"), &cfg, extra);
        Self { dir, pods, argv }
    }

    fn start(&self) -> Exporter {
        Exporter::start(self.dir.path(), &self.argv)
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }
}

fn write_at(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A named pipe where a log file is expected: opening it for reading would block until a
/// writer comes. It must be counted as not a file, and every other file must still be read.
#[test]
fn a_fifo_named_like_a_log_file_does_not_hang_the_tailer() {
    let sb = Sandbox::new(&format!("{RULES}start_at: beginning\n"), &[]);
    let ok = container_dir(&sb.pods, "ns", "ok", "app");
    let pipe = container_dir(&sb.pods, "ns", "pipe", "app");
    let status = std::process::Command::new("mkfifo")
        .arg(pipe.join("0.log"))
        .status()
        .unwrap();
    assert!(status.success());
    let exp = sb.start();
    append(&ok.join("0.log"), &cri("ERROR counted"));
    let last = settle(&exp, "the regular file counted", |t| {
        matches(t) >= 1.0
            && metric(t, "log_pattern_read_errors_total{reason=\"not_a_file\"}") >= 1.0
    });
    assert_eq!(matches(&last), 1.0, "{last}");
    assert_eq!(
        metric(
            &last,
            "log_pattern_read_errors_total{reason=\"not_a_file\"}"
        ),
        1.0
    );
}

/// kubelet rotates between two fragments of a long line: the `P` fragment ends the old file,
/// its `F` starts the new one. That is one line (and it matches), not two; also when the
/// exporter was killed after reading the `P` fragment and the rotation happened while it was
/// down (the fragment saved with the rotated file's offset continues in the new file).
fn partial_line_split_by_rotation(while_down: bool) {
    let sb = Sandbox::new(RULES, &[]);
    let mut a = sb.start();
    let c = container_dir(&sb.pods, "ns", "split", "app");
    let log = c.join("0.log");
    append(&log, &cri("before"));
    append(&log, &format!("{TS} stderr P request failed: ERR\n"));
    settle(&a, "first file read", |t| {
        metric(t, "log_pattern_lines_read_total") >= 1.0
    });
    if while_down {
        a.kill();
    }
    std::fs::rename(&log, c.join("0.log.20240115-100000")).unwrap();
    append(&log, &format!("{TS} stderr F OR code=500\n"));
    append(&log, &cri("after"));
    let b = if while_down { sb.start() } else { a };
    let last = settle(&b, "rotated line counted", |t| {
        metric(t, "log_pattern_lines_read_total") >= 3.0
            && metric(t, "log_pattern_rotated_files_open") == 0.0
    });
    assert_eq!(matches(&last), 1.0, "{last}\n{}", b.logs());
    assert_eq!(metric(&last, "log_pattern_lines_read_total"), 3.0, "{last}");
}

#[test]
fn cri_partial_line_split_by_rotation_is_one_line() {
    partial_line_split_by_rotation(false);
}

#[test]
fn cri_partial_line_split_by_rotation_while_down_is_one_line() {
    partial_line_split_by_rotation(true);
}

/// copytruncate, then the writer logs more than the old read position before the tailer looks
/// again (the exporter is frozen with SIGSTOP meanwhile, as a slow poll would be): the file
/// never looks smaller than the read position, yet it is a new content and must be read from
/// byte 0, each line once.
#[test]
fn truncated_and_regrown_past_the_offset_between_two_looks() {
    let sb = Sandbox::new(RULES, &["--discovery.rescan-interval=1h"]);
    let exp = sb.start();
    let c = container_dir(&sb.pods, "ns", "regrow", "app");
    let log = c.join("0.log");
    let old: String = (0..10).map(|i| format!("old line {i} ERROR\n")).collect();
    append(&log, &old);
    settle(&exp, "old lines", |t| matches(t) >= 10.0);
    exp.signal("-STOP");
    // copytruncate: copy aside, truncate in place, the writer goes on with a longer content.
    std::fs::copy(&log, c.join("0.log.1")).unwrap();
    let new: String = (0..40)
        .map(|i| {
            format!(
                "new line number {i} {}\n",
                if i % 2 == 0 { "ERROR" } else { "ok" }
            )
        })
        .collect();
    assert!(new.len() > old.len());
    write_at(&log, &new);
    exp.signal("-CONT");
    let last = settle(&exp, "new lines", |t| {
        metric(t, "log_pattern_lines_read_total") >= 50.0
    });
    assert_eq!(matches(&last), 30.0, "{last}\n{}", exp.logs());
    assert_eq!(metric(&last, "log_pattern_lines_read_total"), 50.0);
    assert_eq!(metric(&last, "log_pattern_truncations_total"), 1.0);
}

/// Several rotations while the exporter does not look (frozen): every intermediate file,
/// renamed before it was ever opened, is read once; the one it held is read to its end.
#[test]
fn many_rotations_between_two_looks() {
    let sb = Sandbox::new(RULES, &[]);
    let exp = sb.start();
    let c = container_dir(&sb.pods, "ns", "fast", "app");
    let log = c.join("0.log");
    append(&log, &cri("ERROR first"));
    settle(&exp, "first line", |t| matches(t) >= 1.0);
    exp.signal("-STOP");
    let mut want = 1.0;
    for r in 0..6 {
        // Late write to the held file, then rotate, then a short new file.
        append(&log, &cri(&format!("ERROR in file {r}")));
        want += 1.0;
        std::fs::rename(&log, c.join(format!("0.log.2024011510000{r}"))).unwrap();
    }
    append(&log, &cri("ERROR newest"));
    want += 1.0;
    exp.signal("-CONT");
    let last = settle(&exp, "every rotated file", |t| matches(t) >= want);
    assert_eq!(matches(&last), want, "{last}\n{}", exp.logs());
}

/// More log files than the process may open descriptors (`RLIMIT_NOFILE` below
/// `--tail.max-open-files`): the files past the budget are counted, and the exporter keeps
/// serving scrapes (each needs a descriptor for its connection).
#[test]
fn more_files_than_descriptors_keeps_serving() {
    let sb = Sandbox::new(RULES, &[]);
    let exp = Exporter::start_with(
        sb.dir.path(),
        &sb.argv,
        Some(&["prlimit", "--nofile=128:128", "--"]),
    );
    for i in 0..200 {
        let c = container_dir(&sb.pods, "ns", "wide", &format!("c{i}"));
        append(&c.join("0.log"), &cri("ERROR one"));
    }
    let mut last = String::new();
    let ok = wait_until(WAIT, POLL, || {
        last = exp.try_scrape().unwrap_or_default();
        metric(
            &last,
            "log_pattern_read_errors_total{reason=\"too_many_files\"}",
        ) >= 1.0
    });
    assert!(ok, "{last}\n{}", exp.logs());
    // Scrapes keep answering, and the files it follows are read.
    for _ in 0..5 {
        last = exp.scrape();
        std::thread::sleep(Duration::from_millis(100));
    }
    let followed = metric(&last, "log_pattern_files_watched");
    assert!(followed > 0.0 && followed < 128.0, "{last}");
    assert_eq!(matches(&last), followed, "{last}");
}

/// A state file that parses but holds nonsense (a fingerprint longer than any file, offsets
/// past the end, broken hex fragments, tombstones of files that never were): the exporter
/// starts, reads the file again from where it can, and goes on counting.
#[test]
fn nonsense_values_in_a_valid_state_file() {
    let sb = Sandbox::new(RULES, &[]);
    let c = container_dir(&sb.pods, "ns", "p", "app");
    let state = sb.state();
    let mut a = sb.start();
    append(&c.join("0.log"), &cri("ERROR one"));
    settle(&a, "first line", |t| matches(t) >= 1.0);
    a.stop();
    let mut s: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let f = &mut s["files"][0];
    f["fingerprint"]["len"] = u32::MAX.into();
    f["offset"] = (u64::MAX / 2).into();
    f["partials"] = serde_json::json!(["zz", "abc"]);
    let dir = c.to_string_lossy().into_owned();
    s["done"][dir] = serde_json::json!([{"dev": 1, "ino": 2, "fingerprint": {"len": u32::MAX, "hash": 3}, "offset": u64::MAX}]);
    std::fs::write(&state, serde_json::to_vec(&s).unwrap()).unwrap();
    append(&c.join("0.log"), &cri("ERROR two"));
    let b = sb.start();
    append(&c.join("0.log"), &cri("ERROR three"));
    let last = settle(&b, "lines after the restart", |t| matches(t) >= 3.0);
    // The saved file is not recognised (its fingerprint cannot match): reported as lost, and
    // the file at its path is read from byte 0 as one that appeared while down.
    assert_eq!(metric(&last, "log_pattern_files_lost_total"), 1.0, "{last}");
    assert_eq!(matches(&last), 4.0, "{last}");
}

/// A directory removed and created again at the same path between two scans (a static pod
/// deleted and recreated, a service directory replaced): its new inode must be watched, so a
/// file created in it later is found at once, not at the next periodic rescan.
#[test]
fn a_directory_recreated_between_two_scans_is_watched_again() {
    let sb = Sandbox::new(RULES, &["--discovery.rescan-interval=1h"]);
    let pods = &sb.pods;
    let exp = sb.start();
    let c = container_dir(pods, "kube-system", "static", "etcd");
    append(&c.join("0.log"), &cri("ERROR before"));
    settle(&exp, "first line", |t| matches(t) >= 1.0);
    exp.signal("-STOP");
    std::fs::remove_dir_all(pods.join("kube-system_static_static-uid")).unwrap();
    let c = container_dir(pods, "kube-system", "static", "etcd");
    exp.signal("-CONT");
    // Let it rescan after the events of the removal, then log into the new directory.
    settle(&exp, "the removed file released", |t| {
        metric(t, "log_pattern_files_watched") == 0.0
    });
    append(&c.join("0.log"), &cri("ERROR after"));
    let last = settle(&exp, "the new file", |t| matches(t) >= 2.0);
    assert_eq!(matches(&last), 2.0, "{last}");
}

/// A glob source whose directory keeps many rotated files (logrotate `rotate 100`, dated
/// names): after a restart, none of the rotated files already read is read again.
#[test]
fn many_rotated_files_kept_are_not_read_again_after_restart() {
    let sb = Sandbox::new(RULES, &[]);
    let app = sb.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    // The same rules file, now with the glob source.
    write_config(
        sb.dir.path(),
        &format!("{RULES}sources:\n- path: {}/app.log\n", app.display()),
    );
    let mut a = sb.start();
    let log = app.join("app.log");
    let pad = "x".repeat(300);
    append(&log, &format!("ERROR file 0 {pad}\n"));
    settle(&a, "first file", |t| matches(t) >= 1.0);
    let rotations = 80;
    for r in 1..=rotations {
        std::fs::rename(&log, app.join(format!("app.log.2024011510{r:04}"))).unwrap();
        append(&log, &format!("ERROR file {r} {pad}\n"));
        let want = f64::from(r + 1);
        let ok = wait_until(WAIT, Duration::from_millis(10), || {
            matches(&a.try_scrape().unwrap_or_default()) >= want
        });
        assert!(ok, "rotation {r}: {}", a.logs());
    }
    let want = f64::from(rotations + 1);
    let last = settle(&a, "every file", |t| {
        matches(t) >= want && metric(t, "log_pattern_rotated_files_open") == 0.0
    });
    assert_eq!(matches(&last), want);
    a.stop();
    let b = sb.start();
    append(&log, "ERROR after restart\n");
    let last = settle(&b, "the line after restart", |t| matches(t) > want);
    std::thread::sleep(Duration::from_secs(3));
    let last = b.try_scrape().unwrap_or(last);
    assert_eq!(matches(&last), want + 1.0, "{}", b.logs());
}

/// Pods come and go (jobs, rollouts): the zero series of a pod whose logs are gone must not
/// keep the rule's series budget, or after `max_series` pods in the exporter's lifetime (the
/// state file keeps them across restarts) every new pod's matches lose their labels.
#[test]
fn zero_series_of_deleted_pods_do_not_exhaust_the_budget() {
    let sb = Sandbox::new(
        "rules:\n- name: error\n  expr: '{} |= \"ERROR\"'\n  max_series: 3\n",
        &[],
    );
    let pods = &sb.pods;
    let mut exp = sb.start();
    // A pod that matched keeps its series after it is gone; pods that never matched do not.
    let kept = container_dir(pods, "batch", "matched", "main");
    append(&kept.join("0.log"), &cri("ERROR once"));
    for j in 0..4 {
        let c = container_dir(pods, "batch", &format!("quiet-{j}"), "main");
        append(&c.join("0.log"), &cri("all good"));
    }
    settle(&exp, "every pod seen", |t| {
        metric(t, "log_pattern_lines_read_total") >= 5.0
    });
    for j in 0..4 {
        std::fs::remove_dir_all(pods.join(format!("batch_quiet-{j}_quiet-{j}-uid"))).unwrap();
    }
    std::fs::remove_dir_all(pods.join("batch_matched_matched-uid")).unwrap();
    settle(&exp, "deleted pods released", |t| {
        metric(t, "log_pattern_files_watched") == 0.0
    });
    exp.stop();
    let exp = sb.start();
    for j in 0..2 {
        let c = container_dir(pods, "batch", &format!("new-{j}"), "main");
        append(&c.join("0.log"), &cri("ERROR in a new pod"));
    }
    let last = settle(&exp, "new pods counted", |t| matches(t) >= 3.0);
    let series = |pod: &str| {
        metric(
            &last,
            &format!(
                "log_pattern_matches_total{{rule=\"error\",namespace=\"batch\",pod=\"{pod}\",container=\"main\"}}"
            ),
        )
    };
    assert_eq!(series("matched"), 1.0, "{last}");
    assert_eq!(series("new-0"), 1.0, "{last}");
    assert_eq!(series("new-1"), 1.0, "{last}");
    assert_eq!(series("quiet-0"), -1.0, "{last}");
    assert_eq!(
        metric(
            &last,
            "log_pattern_matches_total{rule=\"error\",overflow=\"true\"}"
        ),
        -1.0,
        "{last}"
    );
}

/// A state file the exporter cannot read (owned by another user after a manual run, an I/O
/// error): reported and set aside like a corrupt one, not overwritten by the next save, so the
/// operator can still restore the offsets and counters it holds.
#[test]
fn an_unreadable_state_file_is_set_aside_not_overwritten() {
    let sb = Sandbox::new(RULES, &[]);
    std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let state = sb.state();
    let saved = b"{\"version\":1,\"saved_at\":0,\"files\":[],\"counters\":{\"lines_read\":7},\"matches\":[]}";
    std::fs::write(&state, saved).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o000)).unwrap();
    let exp = Exporter::start_with(sb.dir.path(), &sb.argv, unprivileged_wrapper().as_deref());
    let last = settle(&exp, "a save", |t| {
        metric(t, "log_pattern_state_saves_total") >= 1.0
    });
    assert_eq!(metric(&last, "log_pattern_state_load_failures_total"), 1.0);
    let aside: Vec<PathBuf> = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{}", exp.logs());
    std::fs::set_permissions(&aside[0], std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(std::fs::read(&aside[0]).unwrap(), saved);
}

/// `--config.file` naming `/dev/zero` or a FIFO: a startup error naming the file at once (no
/// read until out of memory, no block waiting for a writer), for a run and for
/// `--config.check`.
#[test]
fn a_device_or_fifo_as_config_file_is_a_startup_error() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("rules.yml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for path in [PathBuf::from("/dev/zero"), fifo] {
        for check in [true, false] {
            let err = d.path().join("stderr");
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_log_pattern_exporter"));
            cmd.arg(format!("--config.file={}", path.display()))
                .arg("--web.listen-address=127.0.0.1:0")
                .arg(format!("--path.pods={}", d.path().display()))
                .arg("--state.file=")
                .args(check.then_some("--config.check"))
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&err).unwrap());
            let mut child = e2e_tests::ChildGuard::spawn(&mut cmd);
            let status = child.wait_exit(WAIT).expect("the exporter exits");
            let text = std::fs::read_to_string(&err).unwrap();
            assert!(!status.success(), "{text}");
            assert!(
                text.contains(&format!("{}: ", path.display()))
                    && text.contains("not a regular file; a configuration file must be one"),
                "{text}"
            );
        }
        // The importer's input too: exit 1, the file named, nothing written.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_log_pattern_exporter"))
            .arg("import-loki-rules")
            .arg(&path)
            .arg(format!(
                "--output.rules={}",
                d.path().join("r.yml").display()
            ))
            .arg(format!(
                "--output.prometheus={}",
                d.path().join("p.yml").display()
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains(&format!("{}: ", path.display()))
                && text.contains("not a regular file; a Loki rule file must be one"),
            "{text}"
        );
        assert!(!d.path().join("r.yml").exists());
    }
}

/// `--state.file=` (empty): the exporter runs and counts without persistence; nothing is
/// written beside it.
#[test]
fn an_empty_state_file_flag_runs_without_persistence() {
    let mut sb = Sandbox::new(&format!("{RULES}start_at: beginning\n"), &[]);
    for a in &mut sb.argv {
        if a.starts_with("--state.file=") {
            *a = "--state.file=".into();
        }
    }
    let c = container_dir(&sb.pods, "ns", "p", "app");
    append(&c.join("0.log"), &cri("ERROR one"));
    let exp = sb.start();
    let last = settle(&exp, "the line counted", |t| matches(t) >= 1.0);
    assert_eq!(matches(&last), 1.0);
    assert_eq!(
        metric(&last, "log_pattern_state_saves_total"),
        0.0,
        "{last}"
    );
    assert!(!sb.state().exists());
}

/// A rotated `.gz` of two gzip members (as `cat a.gz b.gz` writes), larger than a file's read
/// budget per round, appearing while the exporter runs: read in rounds with every scrape
/// answered meanwhile (saves coalesce, so whether one shows a part of it is not fixed; the
/// rounds themselves are asserted by the engine's unit test), both members counted to the
/// last line.
#[test]
fn a_large_multi_member_gz_is_read_in_rounds_while_scrapes_answer() {
    let sb = Sandbox::new(RULES, &[]);
    let c = container_dir(&sb.pods, "ns", "p", "app");
    append(&c.join("0.log"), &cri("INFO the active file"));
    let exp = sb.start();
    settle(&exp, "the active file read", |t| {
        metric(t, "log_pattern_files_watched") >= 1.0
    });
    // 2 x 5 MiB of lines, the 8 MiB read budget per file and round: at least two rounds.
    let line = cri("ERROR a line of a big compressed rotated file, long enough to add up");
    let per_member = (5 << 20) / line.len();
    let member = line.repeat(per_member);
    let mut both = Vec::new();
    for _ in 0..2 {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(member.as_bytes()).unwrap();
        both.extend(enc.finish().unwrap());
    }
    let tmp = c.join("0.log.20240115-100000.gz.tmp");
    std::fs::write(&tmp, &both).unwrap();
    std::fs::rename(&tmp, c.join("0.log.20240115-100000.gz")).unwrap();
    let want = 2.0 * per_member as f64;
    let mut history = Vec::new();
    let done = wait_until(Duration::from_secs(120), Duration::from_millis(20), || {
        let t = exp.try_scrape().expect("a scrape during the read answers");
        assert_eq!(
            metric(
                &t,
                "log_pattern_scrape_collector_success{collector=\"logs\"}"
            ),
            1.0,
            "{t}"
        );
        let n = matches(&t);
        history.push(t);
        n >= want
    });
    assert!(done, "never read to the end: {}", exp.logs());
    assert_monotonic(&history);
    std::thread::sleep(Duration::from_millis(600));
    let last = exp.scrape();
    assert_eq!(matches(&last), want, "every line of both members, once");
    assert_eq!(
        metric(&last, "log_pattern_read_errors_total{reason=\"io\"}"),
        0.0
    );
}
