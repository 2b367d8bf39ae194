//! Pod churn as a busy batch node sees it, scaled to fit CI: 2,000 short-lived pods created at
//! about 150 a second (5 lines each, 2 matching), each pod's directory removed a second after
//! its last line, with a descriptor budget below the number of pods and the default
//! `--tail.rotate-wait`. Nothing is lost, no descriptor error is counted, the descriptors are
//! given back, and the series of the gone pods are dropped after `--series.retention`. The full
//! 500 pods/s for a minute is a benchmark (`bench/churn.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::{samples, sum_samples, wait_for, wait_until, POLL};
use support::*;

const PODS: usize = 2000;
/// The two tests run one at a time: the SIGSTOP test's exporter would take CPU from the churn,
/// whose pods are removed a second after their last line.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
const NAMESPACES: usize = 4;

fn by_namespace(text: &str) -> Vec<f64> {
    (0..NAMESPACES)
        .map(|ns| {
            samples(text)
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("log_pattern_matches_total{rule=\"by_namespace\"")
                        && k.contains(&format!("namespace=\"ns{ns}\""))
                })
                .map(|(_, v)| *v)
                .sum()
        })
        .collect()
}

/// Series of the per-pod rule for churned pods.
fn churn_series(text: &str) -> usize {
    samples(text)
        .keys()
        .filter(|k| {
            k.starts_with("log_pattern_matches_total{rule=\"by_pod\"") && k.contains("pod=\"churn-")
        })
        .count()
}

fn metric(text: &str, key: &str) -> f64 {
    samples(text).get(key).copied().unwrap_or(-1.0)
}

/// Waits for the other test of this file to end, then makes a temporary directory with an
/// empty `pods` tree in it.
fn start_alone() -> (
    std::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    PathBuf,
) {
    let one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    (one, d, pods)
}

#[test]
fn two_thousand_short_lived_pods_lose_nothing_and_leave_nothing_behind() {
    let (_one, d, pods) = start_alone();
    let cfg = write_config(
        d.path(),
        "rules:\n\
         - name: by_namespace\n  contains: ERROR\n  keep_labels: [namespace]\n\
         - name: by_pod\n  contains: ERROR\n  max_series: 100000\n",
    );
    let mut argv = args(&pods, &d.path().join("state.json"), &cfg, &[]);
    argv.retain(|a| !a.starts_with("--tail.rotate-wait"));
    argv.extend([
        "--tail.rotate-wait=5s".to_string(),
        "--tail.max-open-files=700".to_string(),
        "--series.retention=3s".to_string(),
    ]);
    let exp = Exporter::start_ready(d.path(), &argv);
    // One pod per namespace that stays, so each namespace keeps a live source.
    for ns in 0..NAMESPACES {
        let dir = container_dir(&pods, &format!("ns{ns}"), "keeper", "main");
        append(&dir.join("0.log"), &cri("ERROR keeper"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = scraper(exp.port, Arc::clone(&stop));
    let mut want = vec![1.0; NAMESPACES];
    let mut ended: VecDeque<(Instant, PathBuf)> = VecDeque::new();
    let linger = Duration::from_secs(1);
    let start = Instant::now();
    for p in 0..PODS {
        let ns = p % NAMESPACES;
        let dir = container_dir(&pods, &format!("ns{ns}"), &format!("churn-{p}"), "job");
        append(
            &dir.join("0.log"),
            &format!(
                "{}{}{}{}{}",
                cri("starting"),
                cri("ERROR cannot reach the database"),
                cri("retrying"),
                cri("ERROR giving up"),
                cri("exit 1")
            ),
        );
        want[ns] += 2.0;
        ended.push_back((Instant::now() + linger, dir.parent().unwrap().to_path_buf()));
        while ended.front().is_some_and(|(t, _)| *t <= Instant::now()) {
            std::fs::remove_dir_all(ended.pop_front().unwrap().1).unwrap();
        }
        // About 150 pods a second (the exporter under test is a debug build).
        std::thread::sleep(Duration::from_micros(6500));
    }
    for (t, dir) in ended.drain(..) {
        std::thread::sleep(t.saturating_duration_since(Instant::now()));
        std::fs::remove_dir_all(dir).unwrap();
    }
    let churn = start.elapsed();
    let mut last = String::new();
    let counted = wait_until(Duration::from_secs(60), POLL, || {
        last = exp.scrape();
        by_namespace(&last) == want
    });
    let warnings: Vec<String> = exp
        .logs()
        .lines()
        .filter(|l| l.contains("level=warn") && !l.contains("cannot watch"))
        .take(20)
        .map(str::to_string)
        .collect();
    assert!(
        counted,
        "{:?} of {want:?}; vanished {}; read errors too_many_files {}, not_found {}, io {}; warnings {warnings:#?}",
        by_namespace(&last),
        sum_samples(&last, "log_pattern_discovery_vanished_total{"),
        metric(&last, "log_pattern_read_errors_total{reason=\"too_many_files\"}"),
        metric(&last, "log_pattern_read_errors_total{reason=\"not_found\"}"),
        metric(&last, "log_pattern_read_errors_total{reason=\"io\"}")
    );
    assert_eq!(
        sum_samples(&last, "log_pattern_read_errors_total{"),
        0.0,
        "{last}"
    );
    assert_eq!(
        metric(&last, "log_pattern_lines_read_total"),
        (PODS * 5 + NAMESPACES) as f64
    );
    assert_eq!(
        sum_samples(&last, "log_pattern_discovery_vanished_total{"),
        0.0,
        "no pod vanished unread: {last}"
    );
    // The descriptors are given back: only the keepers stay open.
    wait_for("descriptors given back", Duration::from_secs(30), || {
        last = exp.scrape();
        metric(&last, "log_pattern_files_watched") == NAMESPACES as f64
    });
    // The churned pods' series go after the retention; the keepers' stay.
    wait_for(
        "series of gone pods dropped",
        Duration::from_secs(30),
        || {
            last = exp.scrape();
            churn_series(&last) == 0
        },
    );
    assert_eq!(by_namespace(&last), want, "per-namespace series stay");
    assert_eq!(
        sum_samples(&last, "log_pattern_matches_total{rule=\"by_pod\""),
        NAMESPACES as f64
    );
    stop.store(true, Ordering::Relaxed);
    let history = scrapes.join().unwrap();
    assert!(
        history.iter().any(|t| churn_series(t) > 100),
        "the churned pods had series"
    );
    assert_monotonic(&history);
    println!("{PODS} pods in {churn:?}");
}

/// SIGSTOP, then waits until every thread of the exporter is stopped (delivery is asynchronous).
fn freeze(exp: &Exporter) {
    exp.signal("-STOP");
    let tasks = format!("/proc/{}/task", exp.child.pid());
    wait_for("the exporter stopped", Duration::from_secs(30), || {
        std::fs::read_dir(&tasks).unwrap().all(|t| {
            std::fs::read_to_string(t.unwrap().path().join("stat")).is_ok_and(|st| {
                st.rsplit_once(") ")
                    .is_some_and(|(_, r)| r.starts_with('T'))
            })
        })
    });
}

fn vanished(text: &str, kind: &str) -> f64 {
    metric(
        text,
        &format!("log_pattern_discovery_vanished_total{{kind=\"{kind}\"}}"),
    )
}

/// A pod whose directory is created and removed while the exporter cannot run (stopped with
/// SIGSTOP, as a CPU-starved exporter under churn) is counted as vanished, and so is a log file
/// created and removed so in a watched directory; the other pods go on being counted. A pod
/// read and then removed is not counted.
#[test]
fn a_pod_removed_before_any_scan_is_counted_as_vanished() {
    let (_one, d, pods) = start_alone();
    let cfg = write_config(d.path(), "rules:\n- name: errors\n  contains: ERROR\n");
    let argv = args(&pods, &d.path().join("state.json"), &cfg, &[]);
    let exp = Exporter::start_ready(d.path(), &argv);
    let errors = || sum_samples(&exp.scrape(), "log_pattern_matches_total{rule=\"errors\"");
    let long = Duration::from_secs(30);
    let keeper = container_dir(&pods, "ns", "keeper", "main").join("0.log");
    append(&keeper, &cri("ERROR keeper 1"));
    wait_for("the keeper's line", long, || errors() == 1.0);

    // Created, read, removed: drained (its file closed), not vanished.
    let short = container_dir(&pods, "ns", "short", "main");
    append(&short.join("0.log"), &cri("ERROR short"));
    wait_for("the short pod's line", long, || errors() == 2.0);
    std::fs::remove_dir_all(short.parent().unwrap()).unwrap();
    wait_for("the short pod's file closed", long, || {
        metric(&exp.scrape(), "log_pattern_files_watched") == 1.0
    });
    let text = exp.scrape();
    assert_eq!(vanished(&text, "directory"), 0.0);
    assert_eq!(vanished(&text, "file"), 0.0);

    // Created and removed while the exporter is stopped: no scan can list it.
    freeze(&exp);
    let gone = container_dir(&pods, "ns", "gone", "main");
    append(&gone.join("0.log"), &cri("ERROR gone"));
    std::fs::remove_dir_all(gone.parent().unwrap()).unwrap();
    exp.signal("-CONT");
    append(&keeper, &cri("ERROR keeper 2"));
    wait_for("the vanished pod counted", long, || {
        vanished(&exp.scrape(), "directory") == 1.0
    });
    wait_for("the keeper's second line", long, || errors() == 3.0);
    let text = exp.scrape();
    assert_eq!(vanished(&text, "file"), 0.0);
    assert_eq!(vanished(&text, "directory"), 1.0);

    // A log file created and removed in a watched container directory meanwhile.
    freeze(&exp);
    let second = keeper.with_file_name("1.log");
    append(&second, &cri("ERROR gone"));
    std::fs::remove_file(&second).unwrap();
    exp.signal("-CONT");
    wait_for("the vanished file counted", long, || {
        vanished(&exp.scrape(), "file") == 1.0
    });
    append(&keeper, &cri("ERROR keeper 3"));
    wait_for("the keeper's third line", long, || errors() == 4.0);
    assert_eq!(vanished(&exp.scrape(), "directory"), 1.0);
}
