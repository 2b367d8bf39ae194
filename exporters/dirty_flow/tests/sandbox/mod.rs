//! A real Open vSwitch for tests: ovsdb-server and ovs-vswitchd with the dummy datapath in a
//! temp dir (as OVS's own test suite runs them), stopped by PID from their pidfiles on drop, and
//! the exporter in-process on 127.0.0.1:0, scraped over HTTP.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dirty_flow_exporter::config::Config;
use dirty_flow_exporter::{collectors_with, Flags, INFO};
use e2e_tests::{parse_samples, run_ok as run, stop_pidfile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One OVS sandbox.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    /// Starts the daemons and creates bridge `br-int` with dummy ports tap1..tap3 (ofports 1..3).
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ovs")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let sb = Sandbox { dir };
        let d = sb.path().to_path_buf();
        run(Command::new("ovsdb-tool")
            .arg("create")
            .arg(d.join("conf.db"))
            .arg("/usr/share/openvswitch/vswitch.ovsschema"));
        run(sb
            .cmd("ovsdb-server")
            .arg(d.join("conf.db"))
            .args(["--detach", "--no-chdir", "-vconsole:off"])
            .arg(format!(
                "--pidfile={}",
                d.join("ovsdb-server.pid").display()
            ))
            .arg(format!("--remote=punix:{}", d.join("db.sock").display()))
            .arg(format!(
                "--log-file={}",
                d.join("ovsdb-server.log").display()
            )));
        sb.vsctl(&["--no-wait", "init"]);
        sb.start_vswitchd();
        sb.vsctl(&[
            "add-br",
            "br-int",
            "--",
            "set",
            "bridge",
            "br-int",
            "datapath_type=dummy",
            "fail-mode=secure",
        ]);
        for i in 1..=3 {
            sb.add_port(&format!("tap{i}"), i);
        }
        sb
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A shell script `name` in the sandbox's directory (a stand-in for an OVS tool that
    /// hangs, fails or prints garbage), its path as text.
    pub fn script(&self, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p.display().to_string()
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for v in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            c.env(v, self.path());
        }
        c
    }

    pub fn start_vswitchd(&self) {
        let d = self.path();
        run(self
            .cmd("ovs-vswitchd")
            .arg(format!("unix:{}", d.join("db.sock").display()))
            .args([
                "--enable-dummy=override",
                "--disable-system",
                "--detach",
                "--no-chdir",
                "-vconsole:off",
            ])
            .arg(format!(
                "--pidfile={}",
                d.join("ovs-vswitchd.pid").display()
            ))
            .arg(format!(
                "--log-file={}",
                d.join("ovs-vswitchd.log").display()
            )));
    }

    /// Stops one daemon by the PID in its pidfile (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&self, daemon: &str) {
        stop_pidfile(
            &self.path().join(format!("{daemon}.pid")),
            Duration::from_secs(5),
        );
    }

    pub fn vsctl(&self, args: &[&str]) -> String {
        let out = run(self
            .cmd("ovs-vsctl")
            .arg(format!(
                "--db=unix:{}",
                self.path().join("db.sock").display()
            ))
            .arg("--timeout=10")
            .args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn add_port(&self, name: &str, ofport: u32) {
        self.vsctl(&[
            "add-port",
            "br-int",
            name,
            "--",
            "set",
            "Interface",
            name,
            "type=dummy",
            &format!("ofport_request={ofport}"),
        ]);
    }

    pub fn target(&self) -> String {
        format!("unix:{}", self.path().join("br-int.mgmt").display())
    }

    pub fn ofctl(&self, args: &[&str]) -> String {
        let out = run(Command::new("ovs-ofctl").args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds flows (one per line, ovs-ofctl syntax) through a file.
    pub fn add_flows(&self, flows: &str) {
        self.add_flows_with(&[], flows);
    }

    pub fn add_flows_with(&self, opts: &[&str], flows: &str) {
        let f = self.path().join(format!(
            "flows-{}.txt",
            std::process::id() as u128 * 1000 + rand_suffix()
        ));
        std::fs::write(&f, flows).expect("write flows");
        let target = self.target();
        let mut args: Vec<&str> = opts.to_vec();
        let fs = f.display().to_string();
        args.extend(["add-flows", &target, &fs]);
        self.ofctl(&args);
    }

    /// Flags pointing the exporter at this sandbox.
    pub fn flags(&self, extra: &[&str]) -> Flags {
        let rundir = format!("--ovs.rundir={}", self.path().display());
        let mut args = vec![
            "dirty_flow_exporter",
            "--web.listen-address=127.0.0.1:0",
            rundir.as_str(),
        ];
        args.extend_from_slice(extra);
        <Flags as clap::Parser>::parse_from(args)
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_007)
        .unwrap_or(0)
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop("ovs-vswitchd");
        self.stop("ovsdb-server");
    }
}

/// The exporter serving on loopback; stopped on drop.
pub struct Running {
    pub addr: std::net::SocketAddr,
    token: common::CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Starts the exporter in-process with `flags` and `config`.
pub async fn serve(flags: Flags, config: Config) -> Running {
    let enabled = vec!["flows"];
    let exp = common::Exporter::new(
        INFO,
        flags.web.clone(),
        collectors_with(&flags, Arc::new(config)),
        enabled,
    )
    .bind()
    .await
    .expect("bind");
    let addr = exp.local_addrs()[0];
    let token = exp.shutdown_token();
    tokio::spawn(exp.run());
    Running { addr, token }
}

/// GET /metrics over plain HTTP/1.0; returns (status, body).
pub async fn scrape(addr: std::net::SocketAddr) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// Lines of the evidence metric for one check.
pub fn evidence<'a>(body: &'a str, check: &str) -> Vec<&'a str> {
    parse_samples(body)
        .filter(|s| s.name == "ovs_dirty_flow_info" && s.label("check").as_deref() == Some(check))
        .map(|s| s.line)
        .collect()
}
