//! The shipped rule library (`rules/*.yml`): every file passes `--config.check`, and each rule
//! counts the sample lines it is meant for and none of the near misses, through `replay`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e_tests::{run_ok, sum_samples};

const BIN: &str = env!("CARGO_BIN_EXE_log_pattern_exporter");

fn library() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

/// (rule, line, counted).
const SAMPLES: &[(&str, &str, bool)] = &[
    ("kernel_oom_killer", "[12345.678901] Out of memory: Killed process 4242 (qemu-kvm) total-vm:8388608kB, anon-rss:4194304kB, file-rss:0kB, shmem-rss:0kB, UID:107 pgtables:8400kB oom_score_adj:0", true),
    ("kernel_oom_killer", "[12346.000000] Memory cgroup out of memory: Killed process 777 (java) total-vm:1024kB", true),
    ("kernel_oom_killer", "[100.1] Out of memory: Kill process 4242 (qemu-kvm) score 901 or sacrifice child", true),
    ("kernel_oom_killer", "[100.2] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=qemu-kvm,pid=4242", false),
    ("kernel_oom_killer_all", "[12345.678901] Out of memory: Killed process 4242 (qemu-kvm) total-vm:8388608kB, anon-rss:4194304kB, file-rss:0kB, shmem-rss:0kB, UID:107 pgtables:8400kB oom_score_adj:0", true),
    ("kernel_oom_killer_all", "[12346.000000] Memory cgroup out of memory: Killed process 777 (java) total-vm:1024kB", true),
    ("kernel_oom_killer_all", "[100.1] Out of memory: Kill process 4242 (qemu-kvm) score 901 or sacrifice child", true),
    ("go_panic", "panic: runtime error: invalid memory address or nil pointer dereference", true),
    ("go_panic", "level=info msg=\"recovered from panic: x\"", false),
    ("go_fatal_out_of_memory", "fatal error: runtime: out of memory", true),
    ("go_fatal_out_of_memory", "fatal error: concurrent map writes", false),
    ("java_out_of_memory", "Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space", true),
    ("java_out_of_memory", "java.lang.OutOfMemoryError: Metaspace", true),
    ("java_out_of_memory", "-XX:+HeapDumpOnOutOfMemoryError set", false),
    ("python_traceback", "Traceback (most recent call last):", true),
    ("python_traceback", "  File \"/usr/lib/python3/dist-packages/nova/compute/manager.py\", line 2635, in _build_resources", false),
    ("controller_runtime_reconciler_error", "E0115 10:00:00.000000       1 controller.go:329] \"Reconciler error\" err=\"timeout\" controller=\"loadbalancer\"", true),
    ("controller_runtime_reconciler_error", "{\"level\":\"error\",\"ts\":\"2024-01-15T10:00:00Z\",\"msg\":\"Reconciler error\",\"controller\":\"lb\"}", true),
    ("controller_runtime_reconciler_error", "{\"level\":\"info\",\"msg\":\"Reconciling\",\"controller\":\"lb\"}", false),
    ("oslo_messaging_timeout", "2024-01-15 10:00:00.123 7 ERROR oslo_messaging.rpc.server oslo_messaging.exceptions.MessagingTimeout: Timed out waiting for a reply to message ID 4a3c", true),
    ("nova_error", "2024-01-15 10:00:00.123 7 ERROR nova.compute.manager [req-1 - - - - -] [instance: 0a1b] Instance failed to spawn", true),
    ("nova_error", "2024-01-15 10:00:00.123 7 INFO nova.compute.manager [req-1] ERROR count reset", false),
    ("neutron_error", "2024-01-15 10:00:00.456 9 ERROR neutron.agent.linux.utils [-] Exit code: 1", true),
    ("neutron_error", "2024-01-15 10:00:00.456 9 WARNING neutron.agent.linux.utils [-] retrying", false),
];

#[test]
fn every_library_file_passes_config_check() {
    let files = library();
    assert!(files.len() >= 6, "{files:?}");
    for f in &files {
        run_ok(
            Command::new(BIN)
                .arg(format!("--config.file={}", f.display()))
                .arg("--config.check"),
        );
    }
}

#[test]
fn library_rules_count_their_sample_lines() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("samples.log");
    // Each distinct line once (rules that count the same lines share samples).
    let mut unique: Vec<&str> = SAMPLES.iter().map(|(_, l, _)| *l).collect();
    unique.sort_unstable();
    unique.dedup();
    let text: String = unique.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, text).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for f in library() {
        let out = run_ok(
            Command::new(BIN)
                .args(["replay", &format!("--config.file={}", f.display())])
                .arg(&log),
        );
        let got = String::from_utf8(out.stdout).unwrap();
        for line in got
            .lines()
            .filter(|l| l.starts_with("log_pattern_rule_info{"))
        {
            let rule = line.split('"').nth(1).unwrap().to_string();
            let want = SAMPLES
                .iter()
                .filter(|(r, _, hit)| *r == rule && *hit)
                .count();
            assert!(want > 0, "{rule} in {} has no sample lines", f.display());
            let n = sum_samples(&got, &format!("log_pattern_matches_total{{rule=\"{rule}\""));
            assert_eq!(n, want as f64, "{rule} in {}:\n{got}", f.display());
            seen.insert(rule);
        }
        if got.contains("rule=\"kernel_oom_killer\"") {
            // Zero-initialised for the source, so the first kill is an increase.
            assert!(
                got.contains("log_pattern_matches_total{rule=\"kernel_oom_killer_all\"} 3"),
                "{got}"
            );
            for (p, n) in [("qemu-kvm", 2), ("java", 1)] {
                assert!(
                    got.contains(&format!("rule=\"kernel_oom_killer\",process=\"{p}\"}} {n}")),
                    "{got}"
                );
            }
        }
    }
    for (rule, _, _) in SAMPLES {
        assert!(seen.contains(*rule), "{rule} is not in the library");
    }
}
