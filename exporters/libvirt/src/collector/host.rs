//! `host`: the compute node as libvirt sees it: CPU count and topology, memory.
#![forbid(unsafe_code)]

use std::sync::Arc;

use common::{CollectError, Collector, Sink};
use futures::future::BoxFuture;

use crate::connection::Libvirt;
use crate::snapshot::{host_info, HostInfo};

/// The collector's identity (flag, label, help, default).
pub const FLAG: common::cli::CollectorFlag = common::cli::CollectorFlag {
    name: "host",
    help: "Host CPU count and topology and memory, from virNodeGetInfo",
    default_enabled: true,
};

/// The `host` collector.
#[derive(Debug)]
pub struct HostCollector {
    libvirt: Arc<Libvirt>,
}

impl HostCollector {
    pub fn new(libvirt: Arc<Libvirt>) -> Self {
        Self { libvirt }
    }
}

/// Writes the host metrics.
pub fn encode_host(h: &HostInfo, sink: &mut Sink) {
    sink.gauge_value("host_cpus", "Number of active host CPUs", f64::from(h.cpus));
    sink.gauge_value(
        "host_cpu_frequency_megahertz",
        "Expected CPU frequency of the host, 0 if unknown",
        f64::from(h.mhz),
    );
    sink.gauge_value(
        "host_numa_nodes",
        "Number of host NUMA cells",
        f64::from(h.nodes),
    );
    sink.gauge_value(
        "host_cpu_sockets",
        "CPU sockets per NUMA cell",
        f64::from(h.sockets),
    );
    sink.gauge_value("host_cpu_cores", "CPU cores per socket", f64::from(h.cores));
    sink.gauge_value(
        "host_cpu_threads",
        "CPU threads per core",
        f64::from(h.threads),
    );
    sink.gauge_value(
        "host_memory_bytes",
        "Host memory size in bytes",
        h.memory_bytes as f64,
    );
    let mut info = sink.gauge("host_info", "Host CPU model, as a label");
    info.push(&[("cpu_model", &h.model)], 1.0);
    sink.push(info);
}

impl Collector for HostCollector {
    fn name(&self) -> &'static str {
        FLAG.name
    }
    fn collect<'a>(&'a self, sink: &'a mut Sink) -> BoxFuture<'a, Result<(), CollectError>> {
        Box::pin(async move {
            let conn = self.libvirt.connection().await.map_err(CollectError::new)?;
            let h = host_info(&self.libvirt, &conn)
                .await
                .map_err(CollectError::new)?;
            encode_host(&h, sink);
            Ok(())
        })
    }
}
