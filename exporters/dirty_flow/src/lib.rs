//! dirty_flow_exporter: dirty OpenFlow flow detection from `ovs-ofctl dump-flows`.
//!
//! `main.rs` is thin; the flags, the collectors and their parsers live here so tests reach them.
//! The path of a scrape: [`collector::flows`] asks [`ovs`] for the port inventory
//! ([`inventory`]) while it streams each bridge's dump into a [`checks::BridgeScan`], which
//! parses each line ([`parse`]) and runs the checks configured in [`config`].
#![deny(unsafe_code)]

pub mod checks;
pub(crate) mod collector;
pub mod config;
pub mod controller;
pub(crate) mod error;
pub mod inventory;
pub mod ovs;
pub mod parse;
mod sys;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::cli::{CollectorFlag, ConfigArgs, LogArgs, WebArgs};
use common::{Collector, Exporter, ExporterInfo};

/// Identity of this exporter.
pub const INFO: ExporterInfo = ExporterInfo {
    name: "dirty_flow_exporter",
    prefix: "ovs",
    description: "Detects dirty OpenFlow flows in Open vSwitch bridges.",
    default_listen: ":9852",
};

/// The collectors this exporter has: name, help, enabled by default.
pub const COLLECTORS: &[CollectorFlag] = &[collector::flows::FLAG];

/// Command-line flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "dirty_flow_exporter", version, about = INFO.description)]
pub struct Flags {
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Directory holding ovs-vswitchd's sockets (`<bridge>.mgmt`).
    #[arg(long = "ovs.rundir", default_value = "/var/run/openvswitch")]
    pub ovs_rundir: PathBuf,
    /// Bridge to check (repeatable). Default: every bridge in the OVS database.
    #[arg(long = "ovs.bridge", value_name = "BRIDGE")]
    pub ovs_bridge: Vec<String>,
    /// Path of ovs-ofctl.
    #[arg(
        long = "ovs.ofctl-path",
        default_value = "ovs-ofctl",
        value_name = "PATH"
    )]
    pub ovs_ofctl_path: PathBuf,
    /// Path of ovs-vsctl.
    #[arg(
        long = "ovs.vsctl-path",
        default_value = "ovs-vsctl",
        value_name = "PATH"
    )]
    pub ovs_vsctl_path: PathBuf,
    /// OVSDB remote for ovs-vsctl. Default: unix:<ovs.rundir>/db.sock.
    #[arg(long = "ovs.db", value_name = "REMOTE")]
    pub ovs_db: Option<String>,
    /// Timeout of every ovs-ofctl / ovs-vsctl run; the child is killed when it expires.
    #[arg(long = "ovs.timeout", default_value = "8s", value_parser = common::cli::parse_duration, value_name = "DURATION")]
    pub ovs_timeout: Duration,
    /// OpenFlow version(s) ovs-ofctl may speak (-O); it uses the highest one the bridge also
    /// speaks. Those up to 1.3 are offered first (a 1.5 dump prints slower and shows nothing
    /// more the checks read), the whole list to a bridge that refuses them. The default lists
    /// them all: an OpenFlow 1.0 dump (ovs-ofctl's own default) drops the 1.1+ instructions it
    /// cannot express (`write_actions(output:N)` prints as `drop`) or cannot print a reply.
    #[arg(
        long = "ovs.openflow-version",
        value_name = "VERSION",
        default_value = "OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13,OpenFlow14,OpenFlow15"
    )]
    pub ovs_openflow_version: Option<String>,
    /// Nice value added to the thread that parses each dump, 0 to 19 (0: the exporter's own
    /// priority). Higher: ovs-ofctl and the VMs win the CPU on a busy node; scrapes get slower.
    #[arg(long = "ovs.parser-nice", default_value_t = 10, value_parser = parse_nice, value_name = "N")]
    pub ovs_parser_nice: i32,
    /// Directory holding ovn-controller's pidfile and unixctl socket (OVN's rundir): on an OVN
    /// node, `stale_cookie` asks ovn-controller whether it is connected.
    #[arg(
        long = "ovn.rundir",
        default_value = "/var/run/ovn",
        value_name = "DIR"
    )]
    pub ovn_rundir: PathBuf,
    /// Path of ovs-appctl (asks ovn-controller its connection status).
    #[arg(
        long = "ovs.appctl-path",
        default_value = "ovs-appctl",
        value_name = "PATH"
    )]
    pub ovs_appctl_path: PathBuf,
    /// Offending flows shown per bridge and check in ovs_dirty_flow_info.
    #[arg(long = "checks.evidence-limit", default_value_t = 5, value_name = "N")]
    pub evidence_limit: usize,
}

impl Flags {
    /// The OVS paths the flags describe.
    pub fn ovs(&self) -> ovs::Ovs {
        ovs::Ovs {
            ofctl: self.ovs_ofctl_path.clone(),
            vsctl: self.ovs_vsctl_path.clone(),
            rundir: self.ovs_rundir.clone(),
            db: self
                .ovs_db
                .clone()
                .unwrap_or_else(|| format!("unix:{}", self.ovs_rundir.join("db.sock").display())),
            timeout: self.ovs_timeout,
            openflow_version: self.ovs_openflow_version.clone(),
            wide_bridges: Default::default(),
            parser_nice: self.ovs_parser_nice,
            limits: ovs::Limits::default(),
            appctl: self.ovs_appctl_path.clone(),
            ovn_rundir: self.ovn_rundir.clone(),
        }
    }
}

/// `--ovs.parser-nice`: an integer from 0 to 19 (Linux nice values above the default 0).
fn parse_nice(s: &str) -> Result<i32, String> {
    let range = "an integer from 0 (the exporter's priority) to 19 (the lowest)";
    match s.trim().parse::<i32>() {
        Ok(n) if (0..=sys::MAX_NICE).contains(&n) => Ok(n),
        Ok(n) => Err(format!(
            "{n} is out of range: the nice value added must be {range}"
        )),
        Err(_) => Err(format!(
            "not a number: the nice value added must be {range}"
        )),
    }
}

/// Builds every collector with the default (empty) checks config, in the order of [`COLLECTORS`].
pub fn collectors(flags: &Flags) -> Vec<Arc<dyn Collector>> {
    collectors_with(flags, Arc::new(config::Config::default()))
}

/// Builds every collector with a loaded checks config.
pub fn collectors_with(flags: &Flags, config: Arc<config::Config>) -> Vec<Arc<dyn Collector>> {
    vec![Arc::new(collector::flows::FlowsCollector::new(
        flags.ovs(),
        config,
        flags.ovs_bridge.clone(),
        flags.evidence_limit,
    ))]
}

/// Runs the exporter until SIGTERM/SIGINT.
pub async fn run(
    flags: Flags,
    enabled: Vec<&'static str>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = match &flags.config.file {
        Some(p) => config::load(p)?,
        None => config::Config::default(),
    };
    // Freed flow stores (several MiB of records and 1 MiB text chunks) go back to the system
    // instead of staying resident in the arenas' heaps.
    if common::alloc::tune(None) {
        tracing::debug!(
            bytes = common::alloc::MMAP_THRESHOLD,
            "malloc mmap threshold fixed"
        );
    }
    for b in &flags.ovs_bridge {
        if !ovs::valid_bridge_name(b) {
            return Err(format!("--ovs.bridge {b:?}: not a valid bridge name").into());
        }
    }
    tracing::info!(
        custom_checks = config.checks.len(),
        allowed_cookies = config.allowed_cookies.len(),
        stale_cookie_mode = ?config.stale_cookie.mode,
        "checks loaded"
    );
    Exporter::new(
        INFO,
        flags.web.clone(),
        collectors_with(&flags, Arc::new(config)),
        enabled,
    )
    .run()
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_list_matches_flags() {
        let flags = <Flags as clap::Parser>::parse_from(["dirty_flow_exporter"]);
        let names: Vec<_> = collectors(&flags).iter().map(|c| c.name()).collect();
        let flag_names: Vec<_> = COLLECTORS.iter().map(|c| c.name).collect();
        assert_eq!(names, flag_names);
    }

    #[test]
    fn parser_nice_flag_is_validated() {
        let parse = |args: &[&str]| {
            <Flags as clap::Parser>::try_parse_from(
                std::iter::once("x").chain(args.iter().copied()),
            )
        };
        assert_eq!(parse(&[]).unwrap().ovs().parser_nice, 10, "default");
        for ok in [0, 5, 19] {
            let flags = parse(&[&format!("--ovs.parser-nice={ok}")]).unwrap();
            assert_eq!(flags.ovs().parser_nice, ok);
        }
        for (bad, says) in [
            ("20", "20 is out of range"),
            ("-1", "-1 is out of range"),
            ("ten", "not a number"),
            ("", "not a number"),
        ] {
            let err = parse(&[&format!("--ovs.parser-nice={bad}")])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--ovs.parser-nice") && err.contains(says) && err.contains("to 19"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn db_defaults_to_rundir() {
        let flags = <Flags as clap::Parser>::parse_from(["x", "--ovs.rundir=/tmp/r"]);
        assert_eq!(flags.ovs().db, "unix:/tmp/r/db.sock");
        assert_eq!(flags.ovs().target("br-int"), "unix:/tmp/r/br-int.mgmt");
    }
}
