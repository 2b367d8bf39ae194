//! The host's NUMA topology from libvirt's capabilities XML (`virConnectGetCapabilities`:
//! `<host><topology><cells><cell id><cpus><cpu id/>`), to tell on which NUMA node a host CPU is.
//!
//! Read once per connection (the topology of a running host does not change). A driver that
//! reports no cells (libvirt's test driver on a node XML) gives no topology, and the checks
//! that need it are not made.
#![forbid(unsafe_code)]

use crate::cpuset::{CpuSet, MAX_CPUS};
use crate::error::ParseError;
use crate::xmltree::parse_tree;

/// Most NUMA cells read (Linux's MAX_NUMNODES is at most 1024).
const MAX_CELLS: usize = 1024;

/// NUMA cells: `(node id, its CPUs)`, in document order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NumaTopology {
    pub cells: Vec<(u32, CpuSet)>,
}

impl NumaTopology {
    /// The nodes holding any CPU of `cpus`.
    pub fn nodes_of(&self, cpus: &CpuSet) -> CpuSet {
        self.cells
            .iter()
            .filter(|(_, c)| !c.intersection(cpus).is_empty())
            .map(|(n, _)| *n)
            .collect()
    }

    /// The CPUs of the nodes `nodes`.
    pub fn cpus_of(&self, nodes: &CpuSet) -> CpuSet {
        self.cells
            .iter()
            .filter(|(n, _)| nodes.contains(*n))
            .fold(CpuSet::new(), |acc, (_, c)| acc.union(c))
    }
}

/// Reads the NUMA cells of a capabilities XML; `None` when it has none.
pub fn parse_numa_topology(xml: &str) -> Result<Option<NumaTopology>, ParseError> {
    let root = parse_tree(xml)?;
    let Some(cells) = root.path(&["host", "topology", "cells"]) else {
        return Ok(None);
    };
    let mut out = NumaTopology::default();
    for cell in cells.children_named("cell").take(MAX_CELLS) {
        let id: u32 = cell
            .attr("id")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ParseError::invalid("NUMA cell id", cell.attr("id").unwrap_or("")))?;
        let mut cpus = CpuSet::new();
        if let Some(list) = cell.child("cpus") {
            for cpu in list.children_named("cpu") {
                let c: u32 = cpu
                    .attr("id")
                    .and_then(|v| v.parse().ok())
                    .filter(|c| *c < MAX_CPUS)
                    .ok_or_else(|| {
                        ParseError::invalid("NUMA cell cpu id", cpu.attr("id").unwrap_or(""))
                    })?;
                cpus.insert(c);
            }
        }
        out.cells.push((id, cpus));
    }
    Ok((!out.cells.is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuset::parse_cpuset;

    #[test]
    fn cells_of_libvirt_capabilities() {
        // As libvirt's test:///default reports them (virsh capabilities), trimmed.
        let xml = "<capabilities><host><cpu><arch>i686</arch></cpu><topology><cells num='2'>\
            <cell id='0'><memory unit='KiB'>2097152</memory><cpus num='2'>\
            <cpu id='0' socket_id='0' die_id='0' core_id='0' siblings='0'/>\
            <cpu id='1' socket_id='0' die_id='0' core_id='1' siblings='1'/></cpus></cell>\
            <cell id='1'><cpus num='2'><cpu id='8' socket_id='1'/><cpu id='9' socket_id='1'/></cpus></cell>\
            </cells></topology></host><guest/></capabilities>";
        let t = parse_numa_topology(xml).unwrap().unwrap();
        assert_eq!(t.cells.len(), 2);
        assert_eq!(t.nodes_of(&parse_cpuset("1,9").unwrap()).to_string(), "0-1");
        assert_eq!(t.nodes_of(&parse_cpuset("8").unwrap()).to_string(), "1");
        assert_eq!(t.cpus_of(&parse_cpuset("1").unwrap()).to_string(), "8-9");
        // No cells (libvirt's test driver on a node XML): no topology.
        let none = "<capabilities><host><topology><cells num='0'></cells></topology></host></capabilities>";
        assert_eq!(parse_numa_topology(none).unwrap(), None);
        assert_eq!(parse_numa_topology("<capabilities/>").unwrap(), None);
        // Broken: an error, not a guess.
        assert!(parse_numa_topology("<capabilities><host><topology><cells><cell id='x'/></cells></topology></host></capabilities>").is_err());
        assert!(parse_numa_topology("<capabilities><host><topology><cells><cell id='0'><cpus><cpu id='99999'/></cpus></cell></cells></topology></host></capabilities>").is_err());
    }
}
