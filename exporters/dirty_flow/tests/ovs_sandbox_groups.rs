//! End-to-end tests of `missing_group`, `group_bucket_missing_port` and `missing_meter` against a
//! real ovs-vswitchd (dummy datapath), with wrappers around the real `ovs-ofctl` for what OVS
//! itself cannot be made to print: garbage from `dump-groups`, and a flow naming a group that a
//! second look does not confirm.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod sandbox;

use dirty_flow_exporter::config::Config;
use e2e_tests::{assert_promtool_clean, sample_with};
use sandbox::{evidence, scrape, serve, Sandbox};

fn check(body: &str, metric: &str, check: &str) -> Option<f64> {
    sample_with(body, metric, &[("bridge", "br-int"), ("check", check)])
}

fn collector_success(body: &str) -> Option<f64> {
    sample_with(
        body,
        "ovs_scrape_collector_success",
        &[("collector", "flows")],
    )
}

/// Groups 10 (chained to group 9, then deleted) and 11 (a bucket to port 99), a flow through
/// group 10 and one through meter 3.
fn setup(sb: &Sandbox) {
    let t = sb.target();
    let of13 = |args: &[&str]| {
        let mut a = vec!["-O", "OpenFlow13"];
        a.extend_from_slice(args);
        sb.ofctl(&a);
    };
    of13(&["add-group", &t, "group_id=9,type=all,bucket=output:1"]);
    of13(&["add-group", &t, "group_id=10,type=ff,bucket=watch_port:2,actions=output:2,bucket=watch_port:3,actions=group:9"]);
    of13(&[
        "add-group",
        &t,
        "group_id=11,type=select,bucket=output:1,bucket=output:99",
    ]);
    of13(&["add-meter", &t, "meter=3,kbps,band=type=drop,rate=1000"]);
    sb.add_flows_with(
        &["-O", "OpenFlow13"],
        "cookie=0x1,table=0,priority=10,ip,actions=group:10\n\
         cookie=0x1,table=0,priority=11,tcp,actions=meter:3,output:1\n\
         cookie=0x1,table=0,priority=12,udp,actions=group:11\n",
    );
    of13(&["del-groups", &t, "group_id=9"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_meters_pointing_nowhere() {
    let sb = Sandbox::start();
    setup(&sb);
    let exp = serve(sb.flags(&[]), Config::default()).await;
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200);
    for (c, want) in [
        ("missing_group", 1.0),
        ("group_bucket_missing_port", 1.0),
        ("missing_meter", 0.0),
    ] {
        assert_eq!(
            check(&body, "ovs_dirty_flows", c),
            Some(want),
            "{c}:\n{body}"
        );
        assert_eq!(check(&body, "ovs_check_incomplete", c), Some(0.0), "{c}");
    }
    let g = evidence(&body, "missing_group");
    assert!(
        g.len() == 1 && g[0].contains("group_id=10,type=ff,") && g[0].contains("actions=group:9"),
        "{g:?}"
    );
    let b = evidence(&body, "group_bucket_missing_port");
    assert!(b.len() == 1 && b[0].contains("group_id=11,"), "{b:?}");
    assert_eq!(collector_success(&body), Some(1.0), "{body}");
    assert_promtool_clean(&body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_output_is_undecided_not_clean() {
    let sb = Sandbox::start();
    setup(&sb);
    let garbage = sb.script(
        "garbage-groups-ofctl",
        r#"case "$*" in
*dump-groups*) echo 'OFPST_GROUP_DESC reply (OF1.5) (xid=0x2):'; echo ' ???'; exit 0;;
*dump-meters*) echo 'ovs-ofctl: no meters here' >&2; exit 1;;
esac
exec ovs-ofctl "$@""#,
    );
    let flag = format!("--ovs.ofctl-path={garbage}");
    let exp = serve(sb.flags(&[&flag]), Config::default()).await;
    let (_, body) = scrape(exp.addr).await;
    let dumped = sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]);
    assert_eq!(dumped, Some(1.0), "the flows still count:\n{body}");
    for c in [
        "missing_group",
        "group_bucket_missing_port",
        "missing_meter",
    ] {
        assert_eq!(
            check(&body, "ovs_check_incomplete", c),
            Some(1.0),
            "{c}:\n{body}"
        );
        assert_eq!(check(&body, "ovs_dirty_flows", c), None, "{c}: no verdict");
    }
    assert_eq!(collector_success(&body), Some(0.0));
    assert_promtool_clean(&body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_to_a_missing_group_counts_only_when_confirmed() {
    let sb = Sandbox::start();
    setup(&sb);
    // The whole dump shows a flow to group 4242 (as if the group was deleted meanwhile); a
    // second look (`table=0` filter) does not: a race, never a finding.
    let line = " cookie=0x1, duration=1.0s, table=0, n_packets=0, n_bytes=0, priority=77,arp actions=group:4242";
    let racing = sb.script(
        "racing-ofctl",
        &format!(
            r#"case "$*" in
*dump-flows*table=*) exec ovs-ofctl "$@";;
*dump-flows*) ovs-ofctl "$@"; echo '{line}'; exit 0;;
esac
exec ovs-ofctl "$@""#
        ),
    );
    let flag = format!("--ovs.ofctl-path={racing}");
    let exp = serve(sb.flags(&[&flag]), Config::default()).await;
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        check(&body, "ovs_dirty_flows", "missing_group"),
        Some(1.0),
        "only group 10:\n{body}"
    );
    assert_eq!(
        check(&body, "ovs_check_incomplete", "missing_group"),
        Some(1.0),
        "{body}"
    );
    assert!(!evidence(&body, "missing_group")
        .iter()
        .any(|e| e.contains("4242")));
    drop(exp);

    // Still there on the second look, and group 4242 still absent: a finding.
    let stays = sb.script(
        "stays-ofctl",
        &format!(
            r#"case "$*" in
*dump-flows*) ovs-ofctl "$@"; echo '{line}'; exit 0;;
esac
exec ovs-ofctl "$@""#
        ),
    );
    let flag = format!("--ovs.ofctl-path={stays}");
    let exp = serve(sb.flags(&[&flag]), Config::default()).await;
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        check(&body, "ovs_dirty_flows", "missing_group"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        check(&body, "ovs_check_incomplete", "missing_group"),
        Some(0.0),
        "{body}"
    );
    let g = evidence(&body, "missing_group");
    assert!(
        g.iter()
            .any(|e| e.contains(r#"flow="priority=77,arp actions=group:4242""#)),
        "{g:?}"
    );
}
