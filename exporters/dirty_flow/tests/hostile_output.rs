//! Broken or hostile `ovs-ofctl` output, through the exporter's HTTP path (fake tools given with
//! `--ovs.ofctl-path`/`--ovs.vsctl-path`, no OVS needed): nothing that loses flows looks like a
//! successful scrape, and the bridges dumped at once are bounded.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod sandbox;

use std::os::unix::fs::PermissionsExt;

use dirty_flow_exporter::config::Config;
use dirty_flow_exporter::Flags;
use e2e_tests::{assert_promtool_clean, sample_with};
use sandbox::{scrape, serve};

fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

fn flags(dir: &std::path::Path, ofctl: &str, extra: &[String]) -> Flags {
    let vsctl = script(dir, "vsctl", "echo 'ovsdb down' >&2; exit 1");
    let mut args = vec![
        "dirty_flow_exporter".to_string(),
        "--web.listen-address=127.0.0.1:0".into(),
        format!("--ovs.rundir={}", dir.display()),
        format!("--ovs.ofctl-path={ofctl}"),
        format!("--ovs.vsctl-path={vsctl}"),
        "--ovs.timeout=10s".into(),
    ];
    args.extend_from_slice(extra);
    <Flags as clap::Parser>::parse_from(args)
}

const HEADER: &str = "echo 'NXST_FLOW reply (xid=0x4):'";
const FLOW: &str = "echo ' cookie=0x0, duration=1.0s, table=0, n_packets=0, n_bytes=0, priority=1,in_port=1 actions=output:2'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_lost_the_flows_is_never_success() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("{}output:1{}", "clone(".repeat(5000), ")".repeat(5000));
    let cases = [
        ("empty", "exit 0".to_string()),
        ("stderr only", "echo 'ovs-ofctl: odd' >&2".into()),
        (
            "header and junk",
            format!("{HEADER}; echo junk; echo more junk"),
        ),
        ("flows without header", format!("{FLOW}; {FLOW}")),
        (
            "one line nested 5000 deep",
            format!("{HEADER}; echo ' actions={deep}'"),
        ),
    ];
    for (i, (what, body)) in cases.iter().enumerate() {
        let ofctl = script(dir.path(), &format!("ofctl{i}"), body);
        let bridge = "--ovs.bridge=br-int".to_string();
        let exp = serve(flags(dir.path(), &ofctl, &[bridge]), Config::default()).await;
        let (status, body) = scrape(exp.addr).await;
        assert_eq!(status, 200, "{what}");
        let success = sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]);
        assert_eq!(success, Some(0.0), "{what}:\n{body}");
        let collector = sample_with(
            &body,
            "ovs_scrape_collector_success",
            &[("collector", "flows")],
        );
        assert_eq!(collector, Some(0.0), "{what}");
        assert!(
            sample_with(&body, "ovs_dirty_flows", &[("bridge", "br-int")]).is_none(),
            "{what}: no check series for a failed dump:\n{body}"
        );
    }

    // Fewer bad lines than flows: the flows stay, every check says incomplete.
    let ofctl = script(
        dir.path(),
        "ofctl-some-bad",
        &format!("{HEADER}; {FLOW}; {FLOW}; echo junk"),
    );
    let bridge = "--ovs.bridge=br-int".to_string();
    let exp = serve(flags(dir.path(), &ofctl, &[bridge]), Config::default()).await;
    let (_, body) = scrape(exp.addr).await;
    let br = [("bridge", "br-int")];
    assert_eq!(sample_with(&body, "ovs_dump_success", &br), Some(1.0));
    assert_eq!(sample_with(&body, "ovs_flow_parse_errors", &br), Some(1.0));
    for check in ["stale_cookie", "overlap"] {
        let labels = [("bridge", "br-int"), ("check", check)];
        assert_eq!(
            sample_with(&body, "ovs_check_incomplete", &labels),
            Some(1.0),
            "{check}:\n{body}"
        );
    }
    assert_eq!(
        sample_with(
            &body,
            "ovs_scrape_collector_success",
            &[("collector", "flows")]
        ),
        Some(0.0)
    );
    assert_promtool_clean(&body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_are_dumped_a_bounded_number_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let running = dir.path().join("running");
    std::fs::create_dir(&running).unwrap();
    let peak = dir.path().join("peak");
    // Each dump registers itself, records how many run at once, and lingers a little.
    let ofctl = script(
        dir.path(),
        "ofctl",
        &format!(
            "case \"$*\" in *dump-groups*|*dump-meters*) exit 1;; esac\ntouch {r}/$$\nn=$(ls {r} | wc -l)\necho $n >> {p}\nsleep 0.3\n{HEADER}\n{FLOW}\nrm {r}/$$",
            r = running.display(),
            p = peak.display()
        ),
    );
    let bridges: Vec<String> = (0..24).map(|i| format!("--ovs.bridge=br{i}")).collect();
    let exp = serve(flags(dir.path(), &ofctl, &bridges), Config::default()).await;
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200);
    for i in 0..24 {
        let b = format!("br{i}");
        assert_eq!(
            sample_with(&body, "ovs_dump_success", &[("bridge", &b)]),
            Some(1.0),
            "{b}:\n{body}"
        );
    }
    let seen: Vec<usize> = std::fs::read_to_string(&peak)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(seen.len(), 24);
    let max = seen.iter().copied().max().unwrap();
    let limit = dirty_flow_exporter::ovs::Limits::default().parallel_dumps;
    assert!(max <= limit, "{max} dumps at once, limit {limit}");
    assert!(max > 1, "dumps still run concurrently: {seen:?}");
}
