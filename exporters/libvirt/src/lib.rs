//! libvirt_exporter: libvirt domains with their nova metadata and CPU pinning.
//!
//! `main.rs` is thin; the flags, the collectors and their parsers live here so tests reach them.
#![forbid(unsafe_code)]

use std::sync::Arc;

use common::cli::{CollectorFlag, LogArgs, WebArgs};
use common::{Collector, Exporter, ExporterInfo};

/// Identity of this exporter.
pub const INFO: ExporterInfo = ExporterInfo {
    name: "libvirt_exporter",
    prefix: "libvirt",
    description: "Exports libvirt domains with their OpenStack nova metadata and CPU pinning.",
    default_listen: ":9177",
};

/// The collectors this exporter has: name, help, enabled by default.
pub const COLLECTORS: &[CollectorFlag] = &[];

/// Command-line flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "libvirt_exporter", version, about = INFO.description)]
pub struct Flags {
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// libvirt connection URI (opened read-only).
    #[arg(long = "libvirt.uri", default_value = "qemu:///system")]
    pub libvirt_uri: String,
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
        let flags = <Flags as clap::Parser>::parse_from(["libvirt_exporter"]);
        let names: Vec<_> = collectors(&flags).iter().map(|c| c.name()).collect();
        let flag_names: Vec<_> = COLLECTORS.iter().map(|c| c.name).collect();
        assert_eq!(names, flag_names);
    }
}
