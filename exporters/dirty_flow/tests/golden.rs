//! Golden exposition: the exporter replays a dump and a database listing captured from a real
//! sandbox (`tests/fixtures/`, through `--ovs.ofctl-path`/`--ovs.vsctl-path` scripts that print
//! them) and its samples must equal `tests/golden/fixture_replay.prom`. Timings, process and
//! build metrics are left out; samples are sorted. `UPDATE_GOLDEN=1` rewrites the file: review
//! the diff.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod sandbox;

use std::os::unix::fs::PermissionsExt;

use dirty_flow_exporter::config::{compile, RawConfig};
use dirty_flow_exporter::Flags;

fn script(dir: &std::path::Path, name: &str, fixture: &str) -> String {
    let p = dir.join(name);
    let f = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let g = format!(
        "{}/tests/fixtures/groups_of13.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let m = format!(
        "{}/tests/fixtures/meters_of13.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\ncase \"$*\" in\n*dump-groups*) exec cat '{g}';;\n*dump-meters*) exec cat '{m}';;\nesac\nexec cat '{f}'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_replay_matches_golden() {
    let dir = tempfile::tempdir().unwrap();
    let ofctl = script(dir.path(), "ofctl", "dump_of13.txt");
    let vsctl = dir.path().join("vsctl");
    let f = |n: &str| format!("{}/tests/fixtures/{n}", env!("CARGO_MANIFEST_DIR"));
    // The controllers listing names the Open_vSwitch table; the inventory does not.
    std::fs::write(
        &vsctl,
        format!(
            "#!/bin/sh\ncase \"$*\" in *Open_vSwitch*) exec cat '{}';; esac\nexec cat '{}'\n",
            f("vsctl_controllers.json"),
            f("vsctl_inventory.json")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&vsctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let vsctl = vsctl.display().to_string();
    let flags = <Flags as clap::Parser>::parse_from([
        "dirty_flow_exporter".to_string(),
        "--web.listen-address=127.0.0.1:0".into(),
        format!("--ovs.rundir={}", dir.path().display()),
        format!("--ovs.ofctl-path={ofctl}"),
        format!("--ovs.vsctl-path={vsctl}"),
        "--checks.evidence-limit=3".into(),
    ]);
    let raw: RawConfig = common::config::parse_yaml(
        std::path::Path::new("golden.yml"),
        "allowed_cookies: ['0x0']\nchecks:\n  - name: conntrack_commit\n    actions_regex: 'ct\\(commit'\n  - name: tcp_to_port_80\n    match: {tp_dst: 80}\n",
    )
    .unwrap();
    let exp = sandbox::serve(flags, compile(raw).unwrap()).await;
    let (status, body) = sandbox::scrape(exp.addr).await;
    assert_eq!(status, 200);
    let mut samples: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            !l.contains("_duration_seconds")
                && !l.starts_with("process_")
                && !l.contains("build_info")
        })
        .collect();
    samples.sort_unstable();
    let got = samples.join("\n") + "\n";
    let path = format!(
        "{}/tests/golden/fixture_replay.prom",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).expect("golden file (run with UPDATE_GOLDEN=1)");
    assert_eq!(got, want, "exposition differs from {path}");
}
