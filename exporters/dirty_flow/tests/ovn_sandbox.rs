//! End to end against a live OVN: Debian's OVN 23.03 (`ovn-northd`, `ovn-controller`, NB/SB
//! `ovsdb-server`) started on the OVS sandbox as OVN's own test suite does
//! (`tests/ovn-macros.at`), all in the sandbox's temp dir and stopped by PID from their
//! pidfiles. The exporter must tell br-int is OVN's, show 0 for every check while
//! ovn-controller is connected (overlap included, with DHCP requests paused for
//! ovn-controller), count a same-priority overlap added by hand until it is deleted, count
//! every flow once ovn-controller loses its southbound database, and report the check
//! incomplete once ovn-controller is gone.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod sandbox;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dirty_flow_exporter::config::Config;
use e2e_tests::{assert_promtool_clean, run_ok as run, sample_with, stop_pidfile};
use sandbox::{scrape, serve, Sandbox};

/// OVN's daemons in the sandbox's directory; stopped (by pidfile) before the sandbox.
struct Ovn {
    dir: PathBuf,
}

impl Ovn {
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for v in [
            "OVS_RUNDIR",
            "OVS_LOGDIR",
            "OVS_DBDIR",
            "OVS_SYSCONFDIR",
            "OVN_RUNDIR",
            "OVN_LOGDIR",
            "OVN_DBDIR",
            "OVN_SYSCONFDIR",
        ] {
            c.env(v, &self.dir);
        }
        c
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn start_db(&self, db: &str) {
        run(self
            .cmd("ovsdb-server")
            .arg(self.path(&format!("ovn{db}.db")))
            .args(["--detach", "--no-chdir", "-vconsole:off"])
            .arg(format!(
                "--pidfile={}",
                self.path(&format!("ovsdb-server-{db}.pid"))
            ))
            .arg(format!(
                "--remote=punix:{}",
                self.path(&format!("ovn{db}.sock"))
            ))
            .arg(format!(
                "--unixctl={}",
                self.path(&format!("ovsdb-server-{db}.ctl"))
            ))
            .arg(format!(
                "--log-file={}",
                self.path(&format!("ovsdb-server-{db}.log"))
            )));
    }

    fn start(sb: &Sandbox) -> Self {
        let ovn = Ovn {
            dir: sb.path().to_path_buf(),
        };
        for db in ["nb", "sb"] {
            run(Command::new("ovsdb-tool")
                .arg("create")
                .arg(ovn.path(&format!("ovn{db}.db")))
                .arg(format!("/usr/share/ovn/ovn-{db}.ovsschema")));
            ovn.start_db(db);
        }
        ovn.nbctl(&["init"]);
        run(ovn
            .cmd("ovn-sbctl")
            .arg(format!("--db=unix:{}", ovn.path("ovnsb.sock")))
            .arg("init"));
        run(ovn
            .cmd("ovn-northd")
            .arg(format!("--ovnnb-db=unix:{}", ovn.path("ovnnb.sock")))
            .arg(format!("--ovnsb-db=unix:{}", ovn.path("ovnsb.sock")))
            .args(["--detach", "--no-chdir", "-vconsole:off"])
            .arg(format!("--pidfile={}", ovn.path("ovn-northd.pid")))
            .arg(format!("--log-file={}", ovn.path("ovn-northd.log"))));
        sb.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            "external-ids:system-id=hv1",
            &format!("external-ids:ovn-remote=unix:{}", ovn.path("ovnsb.sock")),
            "external-ids:ovn-encap-type=geneve",
            "external-ids:ovn-encap-ip=127.0.0.1",
        ]);
        run(ovn
            .cmd("ovn-controller")
            .arg(format!("unix:{}", ovn.path("db.sock")))
            .args(["--detach", "--no-chdir", "-vconsole:off"])
            .arg(format!("--pidfile={}", ovn.path("ovn-controller.pid")))
            .arg(format!("--log-file={}", ovn.path("ovn-controller.log"))));
        ovn
    }

    fn nbctl(&self, args: &[&str]) {
        run(self
            .cmd("ovn-nbctl")
            .arg(format!("--db=unix:{}", self.path("ovnnb.sock")))
            .arg("--timeout=30")
            .args(args));
    }

    /// ovn-controller's answer to `connection-status`.
    fn connection_status(&self) -> String {
        let pid = std::fs::read_to_string(self.dir.join("ovn-controller.pid")).unwrap();
        let out = run(self
            .cmd("ovs-appctl")
            .arg("-t")
            .arg(self.path(&format!("ovn-controller.{}.ctl", pid.trim())))
            .arg("connection-status"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn stop(&self, daemon: &str) {
        stop_pidfile(
            &self.dir.join(format!("{daemon}.pid")),
            Duration::from_secs(5),
        );
    }
}

impl Drop for Ovn {
    fn drop(&mut self) {
        for d in [
            "ovn-controller",
            "ovn-northd",
            "ovsdb-server-nb",
            "ovsdb-server-sb",
        ] {
            self.stop(d);
        }
    }
}

fn check(body: &str, metric: &str, check: &str) -> Option<f64> {
    sample_with(body, metric, &[("bridge", "br-int"), ("check", check)])
}

fn br_int_flows(body: &str) -> f64 {
    e2e_tests::parse_samples(body)
        .filter(|s| {
            s.name == "ovs_flows"
                && s.labels()
                    .iter()
                    .any(|(k, v)| k == "bridge" && v == "br-int")
        })
        .map(|s| s.value)
        .sum()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    // A deadline against a hang, not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "waited 30 s for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_ovn_node_healthy_then_disconnected_then_controller_gone() {
    let sb = Sandbox::start();
    let ovn = Ovn::start(&sb);
    // One logical switch; tap1 and tap2 are its ports, an ACL and a load balancer on it.
    ovn.nbctl(&["ls-add", "sw0"]);
    for (p, mac, ip) in [
        ("sw0-p1", "fa:16:3e:00:00:01", "10.0.0.11"),
        ("sw0-p2", "fa:16:3e:00:00:02", "10.0.0.12"),
    ] {
        ovn.nbctl(&[
            "lsp-add",
            "sw0",
            p,
            "--",
            "lsp-set-addresses",
            p,
            &format!("{mac} {ip}"),
        ]);
    }
    ovn.nbctl(&[
        "acl-add",
        "sw0",
        "to-lport",
        "1002",
        "ip4 && tcp.dst == 80",
        "allow-related",
    ]);
    ovn.nbctl(&["acl-add", "sw0", "to-lport", "1001", "ip4", "drop"]);
    ovn.nbctl(&[
        "lb-add",
        "lb0",
        "10.0.0.100:80",
        "10.0.0.11:80,10.0.0.12:80",
        "tcp",
    ]);
    ovn.nbctl(&["ls-lb-add", "sw0", "lb0"]);
    // DHCP on both ports: ovn-controller answers the requests it pauses (`controller(pause)`),
    // tracked by the ingress pipeline, and resumes them into the egress pipeline, whose ACL
    // table also holds neighbour discovery flows beside flows needing a conntrack state.
    ovn.nbctl(&[
        "--",
        "--id=@o",
        "create",
        "DHCP_Options",
        "cidr=10.0.0.0/24",
        "options:server_id=10.0.0.1",
        "options:server_mac=fa:16:3e:00:00:ff",
        "options:lease_time=3600",
        "options:router=10.0.0.1",
    ]);
    let dhcp = {
        let out = run(ovn
            .cmd("ovn-nbctl")
            .arg(format!("--db=unix:{}", ovn.path("ovnnb.sock")))
            .args([
                "--bare",
                "--columns=_uuid",
                "find",
                "DHCP_Options",
                "cidr=10.0.0.0/24",
            ]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for p in ["sw0-p1", "sw0-p2"] {
        ovn.nbctl(&["lsp-set-dhcpv4-options", p, &dhcp]);
    }
    sb.vsctl(&["set", "Interface", "tap1", "external_ids:iface-id=sw0-p1"]);
    sb.vsctl(&["set", "Interface", "tap2", "external_ids:iface-id=sw0-p2"]);
    ovn.nbctl(&["--wait=hv", "sync"]);
    wait_for("ovn-controller connected", || {
        ovn.connection_status() == "connected"
    });

    let rundir = format!("--ovn.rundir={}", sb.path().display());
    let exp = serve(
        sb.flags(&[&rundir, "--ovs.bridge=br-int"]),
        Config::default(),
    )
    .await;
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200);
    assert_eq!(
        sample_with(
            &body,
            "ovs_bridge_info",
            &[("bridge", "br-int"), ("controller", "ovn")]
        ),
        Some(1.0),
        "{body}"
    );
    assert!(br_int_flows(&body) > 100.0, "{body}");
    for c in ["missing_port", "stale_cookie", "overlap"] {
        assert_eq!(check(&body, "ovs_dirty_flows", c), Some(0.0), "{c}: {body}");
        assert_eq!(
            check(&body, "ovs_check_incomplete", c),
            Some(0.0),
            "{c}: {body}"
        );
    }
    assert_eq!(
        sample_with(&body, "ovs_ovn_controller_unreachable_total", &[]),
        Some(0.0)
    );
    assert_promtool_clean(&body);
    let dump = sb.ofctl(&["--no-names", "dump-flows", &sb.target()]);
    assert!(dump.contains(",pause)"), "no paused DHCP flow: {dump}");

    // A real overlap added by hand beside OVN's own neighbour solicitation flow of the egress
    // ACL table (same priority, a wider match, other actions): `overlap` is on for OVN, and
    // it clears once the flow is deleted.
    let nd = dump
        .lines()
        .rfind(|l| l.contains("priority=65532,icmp6,") && l.contains("icmp_type=135"))
        .expect("OVN's neighbour solicitation flow");
    let table = nd
        .split("table=")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .unwrap();
    let metadata = nd
        .split("metadata=")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .unwrap();
    let hand = format!("table={table},priority=65532,icmp6,metadata={metadata},icmp_type=135");
    sb.add_flows(&format!("{hand},actions=drop\n"));
    // Counted: the hand flow, OVN's flow (a solicitation with a hop limit of 255 takes
    // either), and two flows of established and related connections: a solicitation with
    // another hop limit skips none of the ingress conntrack tables, so it can arrive tracked.
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        check(&body, "ovs_dirty_flows", "overlap"),
        Some(4.0),
        "{hand}: {body}"
    );
    let shown = sandbox::evidence(&body, "overlap");
    assert!(
        shown
            .iter()
            .any(|e| e.contains("icmp_type=135 actions=drop")),
        "{shown:#?}"
    );
    sb.ofctl(&["--strict", "del-flows", &sb.target(), &hand]);
    let (_, body) = scrape(exp.addr).await;
    assert_eq!(
        check(&body, "ovs_dirty_flows", "overlap"),
        Some(0.0),
        "{body}"
    );

    // The southbound database goes away: ovn-controller says so, and its flows are unmanaged.
    ovn.stop("ovsdb-server-sb");
    wait_for("ovn-controller disconnected", || {
        ovn.connection_status() == "not connected"
    });
    let (_, body) = scrape(exp.addr).await;
    let flows = br_int_flows(&body);
    assert_eq!(
        check(&body, "ovs_dirty_flows", "stale_cookie"),
        Some(flows),
        "{body}"
    );
    assert_eq!(
        check(&body, "ovs_check_incomplete", "stale_cookie"),
        Some(0.0)
    );

    // ovn-controller stopped: its socket is gone, the check cannot decide.
    ovn.stop("ovn-controller");
    wait_for("ovn-controller's pidfile removed", || {
        !Path::new(&ovn.path("ovn-controller.pid")).exists()
    });
    let (status, body) = scrape(exp.addr).await;
    assert_eq!(status, 200);
    assert_eq!(
        check(&body, "ovs_check_incomplete", "stale_cookie"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        check(&body, "ovs_dirty_flows", "stale_cookie"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample_with(&body, "ovs_ovn_controller_unreachable_total", &[]),
        Some(1.0),
        "{body}"
    );
}
