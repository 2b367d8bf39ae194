//! dirty_flow_exporter: dirty OpenFlow flow detection from `ovs-ofctl dump-flows`.
//!
//! `main.rs` is thin; the flags, the collectors and their parsers live here so tests reach them.
#![forbid(unsafe_code)]

pub mod checks;
pub mod config;
pub mod error;
pub mod inventory;
pub mod parse;

use std::sync::Arc;

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
pub const COLLECTORS: &[CollectorFlag] = &[];

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
    pub ovs_rundir: std::path::PathBuf,
}

/// Builds every collector of this exporter (enabled or not), in the order of [`COLLECTORS`].
pub fn collectors(_flags: &Flags) -> Vec<Arc<dyn Collector>> {
    Vec::new()
}

/// Runs the exporter until SIGTERM/SIGINT.
pub async fn run(
    flags: Flags,
    enabled: Vec<&'static str>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _config = match &flags.config.file {
        Some(p) => Some(config::load(p)?),
        None => None,
    };
    Exporter::new(INFO, flags.web.clone(), collectors(&flags), enabled)
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
}
