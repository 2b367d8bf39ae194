//! Golden exposition tests: the libvirt test driver (in process) on each fixture node XML.
//!
//! Every fixture under `tests/fixtures/` (and the nodes nova wrote, `tests/fixtures/nova/nova34.xml`
//! and `nova31.xml`, with that host's CPU sets) is opened as `test:///<path>`, both collectors run once,
//! and the output (text format, series sorted within each family, the test driver's clock-based
//! CPU times masked) must equal `tests/golden/<fixture>.prom`. `UPDATE_GOLDEN=1` rewrites the
//! files; review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod support;

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Metrics whose values the test driver derives from the wall clock.
const VOLATILE: &[&str] = &[
    "libvirt_domain_vcpu_time_seconds_total",
    "libvirt_domain_info_cpu_time_seconds_total",
    "libvirt_domain_block_stats_read_bytes_total",
    "libvirt_domain_block_stats_read_requests_total",
    "libvirt_domain_block_stats_write_bytes_total",
    "libvirt_domain_block_stats_write_requests_total",
    "libvirt_domain_interface_stats_receive_bytes_total",
    "libvirt_domain_interface_stats_receive_packets_total",
    "libvirt_domain_interface_stats_receive_errors_total",
    "libvirt_domain_interface_stats_receive_drops_total",
    "libvirt_domain_interface_stats_transmit_bytes_total",
    "libvirt_domain_interface_stats_transmit_packets_total",
    "libvirt_domain_interface_stats_transmit_errors_total",
    "libvirt_domain_interface_stats_transmit_drops_total",
];

fn normalize(text: &str) -> String {
    let mut out = Vec::new();
    let mut block: Vec<String> = Vec::new();
    let flush = |block: &mut Vec<String>, out: &mut Vec<String>| {
        block.sort();
        out.append(block);
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut block, &mut out);
            out.push(line.to_string());
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let line = if VOLATILE.contains(&name) {
            match line.rfind(' ') {
                Some(i) => format!("{} <volatile>", &line[..i]),
                None => line.to_string(),
            }
        } else {
            line.to_string()
        };
        block.push(line);
    }
    flush(&mut block, &mut out);
    out.join("\n") + "\n"
}

async fn scrape_fixture(path: &Path, extra: &[&str]) -> String {
    support::scrape_in_process(&format!("test://{}", path.display()), extra).await
}

#[tokio::test]
async fn golden_fixtures() {
    let mut names: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "fixtures missing: {names:?}");
    // The nodes written by nova itself (tests/fixtures/nova), on the host nova booted them on.
    let nova: Vec<_> = ["nova34.xml", "nova31.xml"]
        .iter()
        .map(|n| fixtures().join("nova").join(n))
        .collect();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for path in names.into_iter().chain(nova) {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let sets: &[&str] = if path.parent().is_some_and(|p| p.ends_with("nova")) {
            &[
                "--nova.cpu-dedicated-set=1-4,6-9",
                "--nova.cpu-shared-set=0,5",
            ]
        } else {
            &["--nova.cpu-dedicated-set=4-15", "--nova.cpu-shared-set=0-3"]
        };
        let got = normalize(&scrape_fixture(&path, sets).await);
        let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("{stem}.prom"));
        if update {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", golden.display()));
        if got != want {
            let diff: Vec<String> = want
                .lines()
                .filter(|l| !got.lines().any(|g| g == *l))
                .map(|l| format!("- {l}"))
                .chain(
                    got.lines()
                        .filter(|l| !want.lines().any(|w| w == *l))
                        .map(|l| format!("+ {l}")),
                )
                .collect();
            failures.push(format!("{stem}:\n{}", diff.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch:\n{}",
        failures.join("\n\n")
    );
}

#[tokio::test]
async fn nova_sets_from_nova_conf() {
    let node = fixtures().join("mixed.xml");
    let conf = fixtures().join("nova.conf");
    let out = scrape_fixture(&node, &[&format!("--nova.config-file={}", conf.display())]).await;
    assert!(out.contains("libvirt_nova_config_loaded 1"), "{out}");
    // instance-00000009 has a dedicated pin on CPU 2, outside cpu_dedicated_set 4-15.
    assert!(out.contains(
        "libvirt_domain_pinning_outside_dedicated_set_cpus{domain=\"instance-00000009\"} 1"
    ));
    assert!(!out.contains("not-a-real-secret"));

    // A flag overrides the file.
    let out = scrape_fixture(
        &node,
        &[
            &format!("--nova.config-file={}", conf.display()),
            "--nova.cpu-dedicated-set=0-15",
        ],
    )
    .await;
    // The finding is exported only while it has CPUs.
    assert!(!out.contains("libvirt_domain_pinning_outside_dedicated_set_cpus{"));

    // An unreadable file: flagged, the set checks are left out, the scrape still succeeds.
    let out = scrape_fixture(&node, &["--nova.config-file=/nonexistent/nova.conf"]).await;
    assert!(out.contains("libvirt_nova_config_loaded 0"), "{out}");
    assert!(!out.contains("libvirt_domain_pinning_outside_dedicated_set_cpus{"));
    assert!(out.contains("libvirt_up 1"));
}

/// The test driver's bulk stats hold only the `state` group: CPU time, memory, block and
/// interface counters of running and paused domains come from per-domain calls instead, with
/// the values those calls return (the test driver derives them from the wall clock); a shut-off
/// domain gets none. Per-vCPU time (virDomainGetVcpus) with `--domain.vcpu-detail`.
#[tokio::test]
async fn per_domain_calls_fill_what_bulk_stats_lack() {
    let node = fixtures().join("paused_shutoff.xml");
    let out = scrape_fixture(&node, &["--domain.vcpu-detail"]).await;
    let value = |series: &str| -> f64 {
        out.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing:\n{out}"))
            .parse()
            .unwrap()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for dom in ["instance-0000000e", "instance-0000000f"] {
        // virDomainGetInfo's cpuTime is the current time in nanoseconds here: seconds out.
        let cpu = value(&format!(
            "libvirt_domain_info_cpu_time_seconds_total{{domain=\"{dom}\"}}"
        ));
        assert!((cpu - now).abs() < 120.0, "{dom}: cpu {cpu} vs now {now}");
        // Block: rd_bytes = t/20 and wr_bytes = t/40 (t in microseconds): read twice the writes.
        let disk = format!("{{domain=\"{dom}\",target_device=\"vda\"}}");
        let rd = value(&format!(
            "libvirt_domain_block_stats_read_bytes_total{disk}"
        ));
        let wr = value(&format!(
            "libvirt_domain_block_stats_write_bytes_total{disk}"
        ));
        assert!((rd / (now * 1e6 / 20.0) - 1.0).abs() < 0.01, "{dom}: {rd}");
        assert!((rd / wr - 2.0).abs() < 0.01, "{dom}: {rd} / {wr}");
        value(&format!(
            "libvirt_domain_block_stats_read_requests_total{disk}"
        ));
        value(&format!(
            "libvirt_domain_memory_stats_rss_bytes{{domain=\"{dom}\"}}"
        ));
        assert_eq!(
            value(&format!(
                "libvirt_domain_memory_stats_current_balloon_bytes{{domain=\"{dom}\"}}"
            )),
            1024.0 * 1024.0 * 1024.0
        );
        value(&format!(
            "libvirt_domain_vcpu_time_seconds_total{{domain=\"{dom}\",vcpu=\"1\"}}"
        ));
    }
    // Interfaces: rx_bytes = t/10, tx_bytes = t/20, with the device and (empty) port labels.
    let nic = "{domain=\"instance-0000000e\",target_device=\"tap0e000000-aa\",port_id=\"\"}";
    let rx = value(&format!(
        "libvirt_domain_interface_stats_receive_bytes_total{nic}"
    ));
    let tx = value(&format!(
        "libvirt_domain_interface_stats_transmit_bytes_total{nic}"
    ));
    assert!((rx / (now * 1e6 / 10.0) - 1.0).abs() < 0.01, "{rx}");
    assert!((rx / tx - 2.0).abs() < 0.01, "{rx} / {tx}");
    // The shut-off domain: listed, but no counters, and no failed calls.
    assert!(out.contains("libvirt_domain_info_state{domain=\"instance-00000010\""));
    let shutoff: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("instance-00000010") && l.contains("_total{"))
        .collect();
    assert!(shutoff.is_empty(), "{shutoff:?}");
    assert!(!out.contains("libvirt_domain_scrape_errors{"), "{out}");
    assert!(out.contains("libvirt_domains_scrape_errors 0"));
    assert_eq!(
        value("libvirt_domain_stats_fallbacks_total{group=\"block\"}"),
        2.0
    );
    assert!(!out.contains("libvirt_call_errors_total{"), "{out}");

    // Without the fallback the test driver's domains have no counters at all.
    let out = scrape_fixture(&node, &["--libvirt.stats-fallback=false"]).await;
    assert!(!out.contains("libvirt_domain_block_stats_read_bytes_total{"));
    assert!(!out.contains("libvirt_domain_info_cpu_time_seconds_total{"));
    assert!(out.contains("libvirt_domain_stats_fallbacks_total{group=\"block\"} 0"));
}
