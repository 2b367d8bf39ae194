//! End-to-end tests of what the flow parser must read and how evidence is shown, against a real
//! ovs-vswitchd (dummy datapath): parenthesised match values, port 0 judged by where it appears,
//! and evidence for a match `ovs-ofctl` does not take back as a filter.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod sandbox;

use dirty_flow_exporter::config::Config;
use e2e_tests::{assert_promtool_clean, sample_with};
use sandbox::{evidence, scrape, serve, Sandbox};

fn br(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut l = vec![("bridge", "br-int")];
    l.extend_from_slice(labels);
    sample_with(body, name, &l)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_type_parses_and_port_0_is_judged_by_where_it_appears() {
    let sb = Sandbox::start();
    sb.add_flows_with(
        &["-O", "OpenFlow15"],
        "table=4,priority=10,packet_type=(1,0x800),actions=output:1\n\
         table=4,priority=10,packet_type=(1,0x86dd),actions=output:2\n\
         table=4,priority=20,packet_type=(1,0x800),nw_dst=10.0.0.1,actions=output:99\n",
    );
    sb.add_flows(
        "table=6,priority=5,in_port=0,actions=drop\n\
         table=6,priority=6,ip,actions=output:0\n\
         table=6,priority=7,arp,actions=load:0->NXM_OF_IN_PORT[],IN_PORT\n\
         table=6,priority=8,arp,arp_tpa=10.0.0.1,actions=set_field:0->in_port,output:1\n",
    );
    let exp = serve(sb.flags(&["--checks.evidence-limit=10"]), Config::default()).await;
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200);
    assert_eq!(br(&body, "ovs_dump_success", &[]), Some(1.0), "{body}");
    assert_eq!(br(&body, "ovs_flow_parse_errors", &[]), Some(0.0), "{body}");
    assert_eq!(
        br(&body, "ovs_flows", &[("table", "4")]),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        br(&body, "ovs_flows", &[("table", "6")]),
        Some(4.0),
        "{body}"
    );
    let missing: Vec<&str> = evidence(&body, "missing_port");
    let has = |s: &str| missing.iter().any(|e| e.contains(s));
    assert!(
        has("packet_type=(1,0x800),nw_dst=10.0.0.1 actions=output:99"),
        "{missing:?}"
    );
    assert!(has("priority=5,in_port=0 actions=drop"), "{missing:?}");
    assert!(has("priority=6,ip actions=output:0"), "{missing:?}");
    assert!(!has("NXM_OF_IN_PORT"), "{missing:?}");
    assert!(!has("set_field:0"), "{missing:?}");
    assert_eq!(
        br(&body, "ovs_dirty_flows", &[("check", "missing_port")]),
        Some(3.0),
        "{body}"
    );
    assert_promtool_clean(&body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_of_a_match_refused_as_filter_comes_from_the_table() {
    let sb = Sandbox::start();
    // Priority 32768 (omitted when printed), overlapping.
    sb.add_flows(
        "cookie=0x1,table=10,tcp,tp_dst=80,actions=output:1\n\
         cookie=0x1,table=10,tcp,nw_src=10.0.0.0/8,actions=output:2\n",
    );
    // An ovs-ofctl that refuses every filter with more than the table in it, as it refuses
    // some matches it prints itself.
    let picky = sb.script(
        "picky-ofctl",
        r#"case "$*" in
*table=*,*) echo 'ovs-ofctl: unknown keyword' >&2; exit 1;;
esac
exec ovs-ofctl "$@""#,
    );
    let flag = format!("--ovs.ofctl-path={picky}");
    let exp = serve(sb.flags(&[&flag]), Config::default()).await;
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        br(&body, "ovs_dirty_flows", &[("check", "overlap")]),
        Some(2.0),
        "{body}"
    );
    let ov = evidence(&body, "overlap");
    for want in [
        r#"flow="tcp,tp_dst=80 actions=output:1""#,
        r#"flow="tcp,nw_src=10.0.0.0/8 actions=output:2""#,
    ] {
        assert!(ov.iter().any(|e| e.contains(want)), "{want}: {ov:?}");
    }
    drop(exp);

    // No source at all: the match, without the `priority=32768,` OVS never prints.
    let broken = sb.script(
        "broken-ofctl",
        r#"case "$*" in
*table=*) echo 'ovs-ofctl: boom' >&2; exit 1;;
esac
exec ovs-ofctl "$@""#,
    );
    let flag = format!("--ovs.ofctl-path={broken}");
    let exp = serve(sb.flags(&[&flag]), Config::default()).await;
    let (_, body) = scrape(exp.addr).await;
    let ov = evidence(&body, "overlap");
    assert!(
        ov.iter().any(|e| e.contains(r#"flow="tcp,tp_dst=80""#)),
        "{ov:?}"
    );
    assert!(!ov.iter().any(|e| e.contains("priority=32768")), "{ov:?}");
}
