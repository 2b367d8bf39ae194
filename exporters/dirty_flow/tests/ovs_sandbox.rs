//! End-to-end tests against a real ovs-vswitchd (dummy datapath): flows are added with
//! ovs-ofctl and the exporter is scraped over HTTP.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod sandbox;

use std::time::{Duration, Instant};

use dirty_flow_exporter::config::{compile, Config, RawConfig};
use e2e_tests::{assert_promtool_clean, sample_with};
use sandbox::{evidence, scrape, serve, Sandbox};

fn config(yaml: &str) -> Config {
    let raw: RawConfig =
        common::config::parse_yaml(std::path::Path::new("test.yml"), yaml).expect("yaml");
    compile(raw).expect("config")
}

fn dirty(body: &str, check: &str) -> Option<f64> {
    sample_with(
        body,
        "ovs_dirty_flows",
        &[("bridge", "br-int"), ("check", check)],
    )
}

/// `ovs_dump_success` of br-int.
fn dump_success(body: &str) -> Option<f64> {
    sample_with(body, "ovs_dump_success", &[("bridge", "br-int")])
}

/// `ovs_scrape_collector_success` of the flows collector.
fn collector_success(body: &str) -> Option<f64> {
    sample_with(
        body,
        "ovs_scrape_collector_success",
        &[("collector", "flows")],
    )
}

/// Serves the exporter on the sandbox with extra flags, and scrapes it once.
async fn serve_and_scrape(
    sb: &Sandbox,
    flags: &[&str],
    config: Config,
) -> (sandbox::Running, String) {
    let exp = serve(sb.flags(flags), config).await;
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200, "{body}");
    (exp, body)
}

const CLEAN: &str = "\
cookie=0x1,table=0,priority=100,in_port=1,actions=resubmit(,10)
cookie=0x1,table=0,priority=100,in_port=2,actions=resubmit(,10)
cookie=0x1,table=0,priority=0,actions=drop
cookie=0x1,table=10,priority=50,dl_dst=fa:16:3e:00:00:01,actions=output:1
cookie=0x1,table=10,priority=50,dl_dst=fa:16:3e:00:00:02,actions=output:2
cookie=0x1,table=10,priority=40,tcp,nw_src=10.0.0.0/24,tp_dst=80,actions=output:3
cookie=0x1,table=10,priority=40,udp,nw_src=10.0.0.0/24,tp_dst=80,actions=output:3
";

const CHECKS: &str = r#"
allowed_cookies: ["0x1"]
stale_cookie: {mode: static}
checks:
  - name: flood_in_table_0
    table: 0
    actions_regex: "FLOOD"
  - name: ssh_from_tenant_net
    match: {nw_src: "10.0.0.0/8", tp_dst: 22}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_check_positive_and_negative() {
    let sb = Sandbox::start();
    sb.add_flows(CLEAN);
    let exp = serve(sb.flags(&[]), config(CHECKS)).await;

    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200);
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(sample_with(&body, "ovs_database_up", &[]), Some(1.0));
    for check in [
        "missing_port",
        "stale_cookie",
        "overlap",
        "flood_in_table_0",
        "ssh_from_tenant_net",
    ] {
        assert_eq!(
            dirty(&body, check),
            Some(0.0),
            "{check} must be exported as 0:\n{body}"
        );
        assert!(evidence(&body, check).is_empty());
    }
    assert_eq!(
        sample_with(&body, "ovs_flows", &[("bridge", "br-int"), ("table", "10")]),
        Some(4.0)
    );
    assert!(
        body.contains(r#"ovs_interface_info{bridge="br-int",interface="tap2",ofport="2",type="dummy",iface_id="",attached_mac=""} 1"#),
        "{body}"
    );
    assert_promtool_clean(&body);

    // One dirty flow (or pair) per check.
    sb.add_flows(
        "\
cookie=0x1,table=10,priority=30,ip,nw_dst=10.9.9.9,actions=output:99
cookie=0x5,table=10,priority=30,ip,nw_dst=10.9.9.8,actions=output:1
cookie=0x1,table=10,priority=40,tcp,tp_dst=80,actions=output:2
cookie=0x1,table=0,priority=10,in_port=1,dl_type=0x0806,actions=FLOOD
cookie=0x1,table=10,priority=20,tcp,nw_src=10.1.2.0/24,tp_dst=22,actions=output:1
",
    );
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(dirty(&body, "missing_port"), Some(1.0), "{body}");
    assert_eq!(dirty(&body, "stale_cookie"), Some(1.0), "{body}");
    // The new tcp,tp_dst=80 flow overlaps the priority-40 tcp flow from 10.0.0.0/24.
    assert_eq!(dirty(&body, "overlap"), Some(2.0), "{body}");
    assert_eq!(dirty(&body, "flood_in_table_0"), Some(1.0), "{body}");
    assert_eq!(dirty(&body, "ssh_from_tenant_net"), Some(1.0), "{body}");
    let mp = evidence(&body, "missing_port");
    assert_eq!(mp.len(), 1);
    assert!(
        mp[0].contains("flow=\"priority=30,ip,nw_dst=10.9.9.9 actions=output:99\""),
        "{}",
        mp[0]
    );
    assert!(mp[0].contains("table=\"10\"") && mp[0].contains("cookie=\"0x1\""));
    assert!(evidence(&body, "stale_cookie")[0].contains("cookie=\"0x5\""));
    // The overlapping pair is shown whole: the scan keeps matches only, and the actions come
    // from a --strict dump of each flow.
    let ov = evidence(&body, "overlap");
    assert_eq!(ov.len(), 2);
    for flow in [
        "flow=\"priority=40,tcp,nw_src=10.0.0.0/24,tp_dst=80 actions=output:3\"",
        "flow=\"priority=40,tcp,tp_dst=80 actions=output:2\"",
    ] {
        assert!(ov.iter().any(|e| e.contains(flow)), "{flow} in {ov:?}");
    }
    assert_promtool_clean(&body);
    // The same flows again: the same evidence (the texts fetched are reused).
    let (_, again) = scrape(exp.addr).await;
    let (mut a, mut b) = (evidence(&again, "overlap"), ov.clone());
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
    // One flow's actions change: its new text is fetched.
    sb.add_flows("cookie=0x1,table=10,priority=40,tcp,tp_dst=80,actions=output:1\n");
    let (_, changed) = scrape(exp.addr).await;
    let ov = evidence(&changed, "overlap");
    assert!(
        ov.iter()
            .any(|e| e.contains("flow=\"priority=40,tcp,tp_dst=80 actions=output:1\"")),
        "{ov:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_cookie_auto_mode() {
    let sb = Sandbox::start();
    let exp = serve(
        sb.flags(&[]),
        config("stale_cookie: {mode: auto, window: 0s, grace: 0s}"),
    )
    .await;
    // The previous agent run: cookie 0xa.
    sb.add_flows("cookie=0xa,table=0,priority=10,in_port=1,actions=output:2\ncookie=0xa,table=0,priority=10,in_port=2,actions=output:1\n");
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        dirty(&body, "stale_cookie"),
        Some(0.0),
        "one cookie is never stale:\n{body}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    // The new run re-adds its flows with cookie 0xb (replacing same-match flows) and one more;
    // the flow for in_port=3 stays behind with the old cookie.
    sb.add_flows("cookie=0xa,table=0,priority=10,in_port=3,actions=output:1\n");
    std::thread::sleep(Duration::from_millis(1100));
    sb.add_flows(
        "cookie=0xb,table=0,priority=10,in_port=1,actions=output:2\ncookie=0xb,table=0,priority=10,in_port=2,actions=output:1\ncookie=0xb,table=1,priority=10,actions=drop\n",
    );
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(dirty(&body, "stale_cookie"), Some(1.0), "{body}");
    assert!(evidence(&body, "stale_cookie")[0].contains("in_port=3"));
    // An allowed cookie is never stale.
    drop(exp);
    let exp = serve(
        sb.flags(&[]),
        config("allowed_cookies: ['0xa']\nstale_cookie: {mode: auto, window: 0s, grace: 0s}"),
    )
    .await;
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(dirty(&body, "stale_cookie"), Some(0.0), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_deleted_under_its_flows() {
    let sb = Sandbox::start();
    sb.add_flows(CLEAN);
    sb.vsctl(&[
        "add-port",
        "br-int",
        "broken",
        "--",
        "set",
        "Interface",
        "broken",
        "type=nosuchtype",
    ]);
    let exp = serve(sb.flags(&[]), Config::default()).await;
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(dirty(&body, "missing_port"), Some(0.0), "{body}");
    assert_eq!(
        sample_with(&body, "ovs_failed_interfaces", &[("bridge", "br-int")]),
        Some(1.0),
        "{body}"
    );
    assert!(body.contains(
        "ovs_failed_interface_info{bridge=\"br-int\",interface=\"broken\",type=\"nosuchtype\""
    ));
    // Neutron's leftover: the port goes, its flows stay.
    sb.vsctl(&["del-port", "br-int", "tap2"]);
    let (_, body) = scrape(exp.addr).await;
    // in_port=2 (table 0) and output:2 (table 10).
    assert_eq!(dirty(&body, "missing_port"), Some(2.0), "{body}");
    let ev = evidence(&body, "missing_port");
    assert!(
        ev.iter().any(|l| l.contains("in_port=2"))
            && ev.iter().any(|l| l.contains("actions=output:2"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_added_between_scrapes_and_evidence_limit() {
    let sb = Sandbox::start();
    sb.add_flows(CLEAN);
    let exp = serve(sb.flags(&["--checks.evidence-limit=2"]), Config::default()).await;
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        sample_with(&body, "ovs_flows", &[("bridge", "br-int"), ("table", "0")]),
        Some(3.0)
    );
    assert_eq!(
        sample_with(&body, "ovs_flows", &[("bridge", "br-int"), ("table", "7")]),
        None
    );
    sb.add_flows("table=7,priority=1,actions=output:41\ntable=7,priority=2,actions=output:42\ntable=7,priority=3,actions=output:43\n");
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        sample_with(&body, "ovs_flows", &[("bridge", "br-int"), ("table", "7")]),
        Some(3.0),
        "{body}"
    );
    assert_eq!(dirty(&body, "missing_port"), Some(3.0));
    assert_eq!(
        evidence(&body, "missing_port").len(),
        2,
        "evidence limited by the flag"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vswitchd_stopped_and_restarted() {
    let sb = Sandbox::start();
    sb.add_flows(CLEAN);
    let exp = serve(sb.flags(&["--ovs.timeout=3s"]), Config::default()).await;
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]),
        Some(1.0)
    );

    sb.stop("ovs-vswitchd");
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200, "the exporter keeps serving");
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample_with(
            &body,
            "ovs_scrape_collector_success",
            &[("collector", "flows")]
        ),
        Some(0.0)
    );
    assert_eq!(sample_with(&body, "ovs_database_up", &[]), Some(1.0));
    assert_eq!(
        dirty(&body, "missing_port"),
        None,
        "no check series for a failed dump"
    );
    assert_promtool_clean(&body);

    sb.start_vswitchd();
    // Flows do not survive a restart; the bridge comes back empty, then gets flows again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = scrape(exp.addr).await;
        if sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]) == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bridge did not come back:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sb.add_flows(CLEAN);
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        sample_with(&body, "ovs_flows", &[("bridge", "br-int"), ("table", "10")]),
        Some(4.0),
        "{body}"
    );
    assert_eq!(
        sample_with(
            &body,
            "ovs_scrape_collector_success",
            &[("collector", "flows")]
        ),
        Some(1.0)
    );

    // Database down too: bridges are unknown, the exporter still answers.
    sb.stop("ovs-vswitchd");
    sb.stop("ovsdb-server");
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200);
    assert_eq!(
        sample_with(&body, "ovs_database_up", &[]),
        Some(0.0),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_database_costs_missing_port_not_the_dump() {
    // The parser waits for the ports before its first flow (half of --ovs.timeout at most;
    // the database read gives up at --ovs.timeout): with ovs-vsctl hanging, the dump still
    // completes, without missing_port.
    let sb = Sandbox::start();
    sb.add_flows(CLEAN);
    sb.add_flows("cookie=0x1,table=10,priority=30,ip,nw_dst=10.9.9.9,actions=output:99\n");
    // More than the pipe and the chunks in flight hold (~1 MB of dump): the dump can only
    // end once the parser reads.
    let many: String = (0..8000)
        .map(|i| format!("cookie=0x1,table=20,priority=5,ip,reg5={i},nw_dst=10.0.{}.{},actions=load:0x{i:x}->NXM_NX_REG6[],resubmit(,30)\n", i / 256, i % 256))
        .collect();
    sb.add_flows(&many);
    let hanging = sb.script("hanging-vsctl", "exec sleep 30");
    let flag = format!("--ovs.vsctl-path={hanging}");
    let exp = serve(
        sb.flags(&[&flag, "--ovs.bridge=br-int", "--ovs.timeout=2s"]),
        Config::default(),
    )
    .await;
    let start = Instant::now();
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        sample_with(&body, "ovs_database_up", &[]),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample_with(&body, "ovs_flows", &[("bridge", "br-int"), ("table", "10")]),
        Some(5.0),
        "{body}"
    );
    assert_eq!(dirty(&body, "missing_port"), None, "{body}");
    assert_eq!(dirty(&body, "overlap"), Some(0.0), "{body}");
    assert_promtool_clean(&body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_answering_after_the_ports_wait_is_not_silent() {
    // The database answers (database_up 1), but after the dump's parser stopped waiting for
    // the ports (half of --ovs.timeout): missing_port could not be decided for this dump. It
    // was left out while the scrape looked successful, so the dirty flow went unseen.
    let sb = Sandbox::start();
    sb.add_flows(CLEAN);
    sb.add_flows("cookie=0x1,table=10,priority=30,ip,nw_dst=10.9.9.9,actions=output:99\n");
    let slow = sb.script("slow-vsctl", "sleep 2.2\nexec ovs-vsctl \"$@\"");
    let flag = format!("--ovs.vsctl-path={slow}");
    let (_exp, body) = serve_and_scrape(
        &sb,
        &[&flag, "--ovs.bridge=br-int", "--ovs.timeout=3s"],
        Config::default(),
    )
    .await;
    assert_eq!(
        sample_with(&body, "ovs_database_up", &[]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(dump_success(&body), Some(1.0), "{body}");
    assert_eq!(dirty(&body, "missing_port"), None, "{body}");
    assert_eq!(
        sample_with(
            &body,
            "ovs_check_incomplete",
            &[("bridge", "br-int"), ("check", "missing_port")]
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(collector_success(&body), Some(0.0), "{body}");
    assert_promtool_clean(&body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_evidence_fetch_keeps_the_match() {
    // The dump works; the fetch of an overlapping flow's text (a dump-flows with table=...)
    // prints a 3 MB line of garbage and fails: the scrape goes on, the evidence shows the match.
    let sb = Sandbox::start();
    sb.add_flows(CLEAN);
    sb.add_flows("cookie=0x1,table=10,priority=40,tcp,tp_dst=80,actions=output:2\n");
    let ofctl = sb.script(
        "fetch-fails-ofctl",
        r#"case "$*" in
*table=*) head -c 3000000 /dev/zero | tr '\000' x; echo; echo 'ovs-ofctl: boom' >&2; exit 1;;
esac
exec ovs-ofctl "$@""#,
    );
    let flag = format!("--ovs.ofctl-path={ofctl}");
    let exp = serve(sb.flags(&[&flag]), Config::default()).await;
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200);
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(dirty(&body, "overlap"), Some(2.0), "{body}");
    let ov = evidence(&body, "overlap");
    assert!(
        ov.iter()
            .any(|e| e.contains("flow=\"priority=40,tcp,tp_dst=80\"")),
        "{ov:?}"
    );
    assert_promtool_clean(&body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofctl_printing_garbage_hanging_or_missing() {
    let sb = Sandbox::start();
    let garbage = sb.script("garbage-ofctl",
        r#"echo 'NXST_FLOW reply (xid=0x4):'
echo ' cookie=0x0, duration=1.0s, table=0, n_packets=0, n_bytes=0, priority=1,in_port=1 actions=output:2'
echo ' cookie=0x0, duration=1.0s, table=0, n_packets=0, n_bytes=0, priority=1,in_port=1 actions=learn(((('
echo 'Segmentation fault? ��� random garbage'
head -c 3000 /dev/urandom | tr -d '\000'
echo
echo ' cookie=0x0, duration=1.0s, table=0, n_packets=0, n_bytes=0, priority=2,in_port=2 actions=output:1'"#,
    );
    let flag = format!("--ovs.ofctl-path={garbage}");
    let exp = serve(sb.flags(&[&flag]), Config::default()).await;
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200);
    // More garbage lines than flows: not a dump-flows reply.
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]),
        Some(0.0),
        "{body}"
    );
    assert_eq!(collector_success(&body), Some(0.0), "{body}");
    assert_promtool_clean(&body);
    drop(exp);

    let failing = sb.script(
        "failing-ofctl",
        "echo 'ovs-ofctl: br-int is not a bridge or a socket' >&2; exit 1",
    );
    let flag = format!("--ovs.ofctl-path={failing}");
    let exp = serve(sb.flags(&[&flag]), Config::default()).await;
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]),
        Some(0.0),
        "{body}"
    );
    drop(exp);

    let hanging = sb.script(
        "hanging-ofctl",
        "echo 'NXST_FLOW reply (xid=0x4):'; exec sleep 30",
    );
    let flag = format!("--ovs.ofctl-path={hanging}");
    let exp = serve(sb.flags(&[&flag, "--ovs.timeout=1s"]), Config::default()).await;
    let start = Instant::now();
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "killed at the timeout"
    );
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]),
        Some(0.0),
        "{body}"
    );
    drop(exp);

    let exp = serve(
        sb.flags(&["--ovs.ofctl-path=/nonexistent/ovs-ofctl"]),
        Config::default(),
    )
    .await;
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200);
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]),
        Some(0.0),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openflow13_only_bridge() {
    let sb = Sandbox::start();
    sb.vsctl(&["set", "bridge", "br-int", "protocols=OpenFlow13"]);
    sb.add_flows_with(
        &["-O", "OpenFlow13"],
        "cookie=0x1,table=0,priority=10,in_port=1,actions=push_vlan:0x8100,set_field:4196->vlan_vid,output:99\ncookie=0x1,table=0,priority=5,actions=goto_table:1\n",
    );
    let exp = serve(
        sb.flags(&["--ovs.openflow-version=OpenFlow10"]),
        Config::default(),
    )
    .await;
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]),
        Some(0.0),
        "1.0 is refused:\n{body}"
    );
    drop(exp);
    // The default negotiates the highest version both ends speak.
    let (exp, body) = serve_and_scrape(&sb, &[], Config::default()).await;
    assert_eq!(dump_success(&body), Some(1.0), "{body}");
    assert_eq!(dirty(&body, "missing_port"), Some(1.0), "{body}");
    drop(exp);
    let exp = serve(
        sb.flags(&["--ovs.openflow-version=OpenFlow13"]),
        Config::default(),
    )
    .await;
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample_with(&body, "ovs_flow_parse_errors", &[("bridge", "br-int")]),
        Some(0.0)
    );
    assert_eq!(
        sample_with(&body, "ovs_flows", &[("bridge", "br-int"), ("table", "0")]),
        Some(2.0)
    );
    assert_eq!(dirty(&body, "missing_port"), Some(1.0), "{body}");
}

/// A flow whose only action is an OpenFlow 1.1+ instruction sending to a port that does not
/// exist, and a clean one.
const WRITE_ACTIONS: &str = "cookie=0x1,table=0,priority=5,ip,actions=write_actions(output:99)\n\
     cookie=0x1,table=0,priority=6,ip,nw_dst=10.0.0.1,actions=output:1\n";

/// The exporter offers ovs-ofctl OpenFlow 1.0 to 1.3 of its default versions first (a 1.5
/// dump prints slower and shows nothing more the checks read); a bridge that speaks only 1.4
/// and 1.5 refuses them, is asked again at once with every version of
/// `--ovs.openflow-version`, and from then on only with those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_up_to_1_3_first_and_all_for_a_bridge_that_refuses_them() {
    let sb = Sandbox::start();
    sb.add_flows_with(&["-O", "OpenFlow13"], WRITE_ACTIONS);
    let log = sb.path().join("ofctl.log");
    let ofctl = sb.script(
        "recording-ofctl",
        &format!("echo \"$*\" >> '{}'\nexec ovs-ofctl \"$@\"", log.display()),
    );
    let flag = format!("--ovs.ofctl-path={ofctl}");
    let exp = serve(sb.flags(&[&flag]), Config::default()).await;
    // The `-O` of each ovs-ofctl run since the last call, per command.
    let runs = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::write(&log, "").unwrap();
        text.lines()
            .map(|l| {
                let w: Vec<&str> = l.split(' ').collect();
                let at = |k: &str| w.iter().position(|x| *x == k);
                let versions = at("-O").map_or("", |i| w[i + 1]).to_string();
                let what = w
                    .iter()
                    .find(|x| x.starts_with("dump-"))
                    .copied()
                    .unwrap_or("");
                (what.to_string(), versions)
            })
            .collect::<Vec<_>>()
    };
    let low = "OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13";
    let all = "OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13,OpenFlow14,OpenFlow15";
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(dump_success(&body), Some(1.0), "{body}");
    // 1.3 shows the 1.1+ instruction: the flow to port 99.
    assert_eq!(dirty(&body, "missing_port"), Some(1.0), "{body}");
    let first = runs();
    assert!(
        first.iter().any(|(w, _)| w == "dump-flows") && first.iter().all(|(_, v)| v == low),
        "{first:?}"
    );

    sb.vsctl(&["set", "bridge", "br-int", "protocols=OpenFlow14,OpenFlow15"]);
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(dump_success(&body), Some(1.0), "{body}");
    assert_eq!(dirty(&body, "missing_port"), Some(1.0), "{body}");
    let refused = runs();
    let dumps: Vec<&str> = refused
        .iter()
        .filter(|(w, _)| w == "dump-flows")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(dumps, vec![low, all], "{refused:?}");

    let (_, body) = scrape(exp.addr).await;
    assert_eq!(dump_success(&body), Some(1.0), "{body}");
    let later = runs();
    assert!(
        !later.is_empty() && later.iter().all(|(_, v)| v == all),
        "{later:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_flows() {
    let sb = Sandbox::start();
    let mut flows = String::with_capacity(100_000 * 80);
    for i in 0..100_000u32 {
        // Neutron-like: per-port MAC flows spread over tables and priorities.
        let table = i % 4;
        let port = i % 3 + 1;
        flows.push_str(&format!(
            "cookie=0x1,table={table},priority={},in_port={port},dl_dst=fa:16:{:02x}:{:02x}:{:02x}:{:02x},actions=output:{}\n",
            10 + i % 7,
            (i >> 24) & 0xff,
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff,
            (port % 3) + 1
        ));
    }
    // Exactly one dirty flow of each kind among them.
    flows.push_str(
        "cookie=0x1,table=0,priority=10,in_port=1,dl_dst=fa:16:00:00:00:00,ip,actions=output:3\n",
    );
    flows.push_str("cookie=0x1,table=5,priority=1,actions=output:77\n");
    sb.add_flows(&flows);
    let exp = serve(
        sb.flags(&["--ovs.timeout=60s", "--scrape.timeout=60s"]),
        Config::default(),
    )
    .await;
    let (_, body) = scrape(exp.addr).await;
    let total: f64 = (0..6)
        .filter_map(|t| {
            sample_with(
                &body,
                "ovs_flows",
                &[("bridge", "br-int"), ("table", &t.to_string())],
            )
        })
        .sum();
    assert_eq!(total, 100_002.0, "{body}");
    assert_eq!(
        sample_with(&body, "ovs_flow_parse_errors", &[("bridge", "br-int")]),
        Some(0.0)
    );
    assert_eq!(dirty(&body, "missing_port"), Some(1.0), "{body}");
    assert_eq!(dirty(&body, "overlap"), Some(2.0), "{body}");
    assert_eq!(
        sample_with(
            &body,
            "ovs_check_incomplete",
            &[("bridge", "br-int"), ("check", "overlap")]
        ),
        Some(0.0)
    );
}

fn assert_dumped(body: &str, bridges: &[&str]) {
    for b in bridges {
        assert_eq!(
            sample_with(body, "ovs_dump_success", &[("bridge", b)]),
            Some(1.0),
            "{b}:\n{body}"
        );
    }
}

fn add_bridge(sb: &Sandbox, name: &str) {
    sb.vsctl(&[
        "add-br",
        name,
        "--",
        "set",
        "bridge",
        name,
        "datapath_type=dummy",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_from_database_or_flag() {
    let sb = Sandbox::start();
    add_bridge(&sb, "br-ex");
    let exp = serve(sb.flags(&[]), Config::default()).await;
    let (_, body) = scrape(exp.addr).await;
    assert_dumped(&body, &["br-int", "br-ex"]);
    // br-ex has OVS's default NORMAL flow.
    assert_eq!(
        sample_with(&body, "ovs_flows", &[("bridge", "br-ex"), ("table", "0")]),
        Some(1.0)
    );

    // From the second scrape on, the dumps of the bridges the last one found run while the
    // database is read: a bridge deleted since must vanish, one added must show, and ports
    // still come from this scrape's database.
    sb.vsctl(&["del-br", "br-ex"]);
    add_bridge(&sb, "br-new");
    let new_target = format!("unix:{}", sb.path().join("br-new.mgmt").display());
    sb.ofctl(&["add-flow", &new_target, "priority=5,actions=output:7"]);
    sb.add_flows("cookie=0x1,table=3,priority=5,actions=output:99\n");
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-ex")]),
        None,
        "deleted:\n{body}"
    );
    assert_dumped(&body, &["br-int", "br-new"]);
    for b in ["br-int", "br-new"] {
        assert_eq!(
            sample_with(
                &body,
                "ovs_dirty_flows",
                &[("bridge", b), ("check", "missing_port")]
            ),
            Some(1.0),
            "{b}:\n{body}"
        );
    }
    assert_eq!(sample_with(&body, "ovs_database_up", &[]), Some(1.0));
    assert_promtool_clean(&body);
    // A port added to br-int between scrapes counts on the next one.
    sb.add_port("tap99", 99);
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        dirty(&body, "missing_port"),
        Some(0.0),
        "port 99 exists now:\n{body}"
    );
    drop(exp);

    let exp = serve(
        sb.flags(&[
            "--ovs.bridge=br-new",
            "--ovs.bridge=br-gone",
            "--ovs.bridge=br-new",
        ]),
        Config::default(),
    )
    .await;
    // Twice, the second time with the flag's bridges dumped while the database is read; the
    // bridge given twice is reported once.
    let _ = scrape(exp.addr).await;
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-new")]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        body.matches("ovs_dump_success{bridge=\"br-new\"}").count(),
        1,
        "{body}"
    );
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-gone")]),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample_with(&body, "ovs_dump_success", &[("bridge", "br-int")]),
        None,
        "not asked for"
    );
    assert_eq!(
        sample_with(
            &body,
            "ovs_scrape_collector_success",
            &[("collector", "flows")]
        ),
        Some(0.0)
    );
}

/// A flow OpenFlow 1.0 cannot express (an OpenFlow 1.1+ instruction order, added by an
/// OpenFlow 1.3 controller): an OpenFlow 1.0 `dump-flows` (ovs-ofctl's own default) prints
/// `***decode error: ...***` and a hex dump instead of the rest of that reply, and still exits
/// 0. The flows after it (here the
/// dirty one in table 2) are missing, so the dump did not succeed: `missing_port 0` from the
/// part that could be read would hide the dirty flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_ovs_ofctl_cannot_decode_fails_the_dump() {
    let sb = Sandbox::start();
    sb.add_flows_with(
        &["-O", "OpenFlow13"],
        "cookie=0x1,table=0,priority=26,reg0=0x5,actions=write_metadata:0x1/0xff,goto_table:2\n\
         cookie=0x1,table=2,priority=12,actions=output:99\n",
    );
    let of10 = ["--ovs.openflow-version=OpenFlow10"];
    let (exp, body) = serve_and_scrape(&sb, &of10, Config::default()).await;
    assert_eq!(
        dump_success(&body),
        Some(0.0),
        "flows were lost to a decode error:\n{body}"
    );
    assert_eq!(dirty(&body, "missing_port"), None, "{body}");
    assert_eq!(collector_success(&body), Some(0.0), "{body}");
    drop(exp);
    // With a version that can express the flow, nothing is lost.
    let of13 = ["--ovs.openflow-version=OpenFlow13"];
    let (_exp, body) = serve_and_scrape(&sb, &of13, Config::default()).await;
    assert_eq!(dump_success(&body), Some(1.0), "{body}");
    assert_eq!(dirty(&body, "missing_port"), Some(1.0), "{body}");
}

/// OpenFlow 1.1+ instructions that OpenFlow 1.0 cannot express are dropped from a 1.0 dump
/// without a trace: `write_actions(output:99)` prints as `actions=drop`, `meter:1` vanishes.
/// With the default settings (1.3 here), the dump must show them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instructions_openflow10_cannot_express_are_checked_by_default() {
    let sb = Sandbox::start();
    sb.add_flows_with(&["-O", "OpenFlow13"], WRITE_ACTIONS);
    let checks = "checks: [{name: write_actions, actions_regex: 'write_actions'}]";
    let (_exp, body) = serve_and_scrape(&sb, &[], config(checks)).await;
    assert_eq!(dump_success(&body), Some(1.0), "{body}");
    assert_eq!(dirty(&body, "missing_port"), Some(1.0), "{body}");
    assert_eq!(dirty(&body, "write_actions"), Some(1.0), "{body}");
    let shown = evidence(&body, "missing_port");
    assert!(
        shown.len() == 1
            && shown[0].contains(r#"flow="priority=5,ip actions=write_actions(output:99)""#),
        "{body}"
    );
}
