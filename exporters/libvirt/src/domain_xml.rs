//! What the exporter reads from a domain's XML: identity, sizing, declared pinning, devices and
//! nova's metadata.
//!
//! The XML is libvirt's own (`virDomainGetXMLDesc`), so it is well-formed; nova's metadata inside
//! it is free-form and is parsed separately so that a broken `<metadata>` never hides the domain:
//! [`DomainXml::nova`] is `Err` then and the caller counts it.
#![forbid(unsafe_code)]

use crate::cpuset::{parse_cpuset, CpuSet};
use crate::error::ParseError;
use crate::nova::{nova_from_element, nova_namespace_version, NovaInstance};
use crate::nova_policy::{nova_cpu_info, NovaCpuInfo};
use crate::xmltree::{parse_tree, Element};

/// Bound on devices read per domain (label cardinality).
const MAX_DEVICES: usize = 256;

/// One disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `file`, `block`, `network`...
    pub disk_type: String,
    /// `disk`, `cdrom`...
    pub device: String,
    pub target_dev: String,
    pub target_bus: String,
    pub driver_name: String,
    pub driver_type: String,
    pub driver_cache: String,
    pub driver_discard: String,
    pub source_file: String,
    pub source_protocol: String,
    pub serial: String,
}

/// One network interface.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Interface {
    /// `bridge`, `ethernet`, `vhostuser`...
    pub interface_type: String,
    pub mac: String,
    pub target_dev: String,
    pub source_bridge: String,
    pub model: String,
    pub mtu: String,
    /// The neutron port: OVS's `interfaceid`, else recovered from a `tapXXXXXXXX-XX` name
    /// matched against nova's port list (filled in by [`parse_domain_xml`]).
    pub port_id: String,
}

/// Declared NUMA memory policy (`<numatune><memory mode nodeset>`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NumaMemory {
    pub mode: String,
    pub nodeset: String,
}

/// What a domain's XML says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainXml {
    pub name: String,
    pub uuid: String,
    pub os_type: String,
    pub os_arch: String,
    pub os_machine: String,
    /// `<memory>`, bytes.
    pub memory_bytes: Option<u64>,
    /// `<currentMemory>`, bytes.
    pub current_memory_bytes: Option<u64>,
    /// `<vcpu>`: maximum vCPUs.
    pub vcpus: u32,
    /// `<vcpu current>`, or `vcpus`.
    pub vcpus_current: u32,
    /// `<vcpu cpuset>`: where vCPUs without their own `<vcpupin>` may run.
    pub vcpu_cpuset: Option<CpuSet>,
    /// `<cputune><vcpupin vcpu cpuset>`, sorted by vCPU.
    pub vcpu_pins: Vec<(u32, CpuSet)>,
    /// `<cputune><emulatorpin cpuset>`.
    pub emulator_pin: Option<CpuSet>,
    pub numa_memory: Option<NumaMemory>,
    pub disks: Vec<Disk>,
    pub interfaces: Vec<Interface>,
    /// `None`: no nova metadata; `Some(Err)`: present but malformed.
    pub nova: Option<Result<NovaInstance, String>>,
    /// The CPU policy nova's metadata asks for.
    pub nova_cpu: NovaCpuInfo,
}

impl DomainXml {
    /// The declared affinity of vCPU `vcpu`: its `<vcpupin>`, else `<vcpu cpuset>`, else `None`
    /// (any host CPU).
    pub fn vcpu_affinity(&self, vcpu: u32) -> Option<&CpuSet> {
        self.vcpu_pins
            .iter()
            .find(|(v, _)| *v == vcpu)
            .map(|(_, s)| s)
            .or(self.vcpu_cpuset.as_ref())
    }

    /// Whether any vCPU has a declared affinity (`<vcpupin>` or `<vcpu cpuset>`).
    pub fn declares_affinity(&self) -> bool {
        !self.vcpu_pins.is_empty() || self.vcpu_cpuset.is_some()
    }

    /// Why nova's metadata is malformed (as a whole, or its CPU policy), if it is.
    pub fn nova_problem(&self) -> Option<&str> {
        match &self.nova {
            Some(Err(e)) => Some(e),
            _ => self.nova_cpu.problem.as_deref(),
        }
    }
}

fn attr(el: Option<&Element>, name: &str) -> String {
    el.and_then(|e| e.attr(name)).unwrap_or("").to_string()
}

/// Bytes of a libvirt memory element (`unit` defaults to KiB).
fn memory_bytes(el: &Element) -> Result<u64, ParseError> {
    let v: u64 = el
        .text
        .parse()
        .map_err(|_| ParseError::invalid("memory size", el.text.clone()))?;
    let factor: u64 = match el.attr("unit").unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        other => return Err(ParseError::invalid("memory unit", other)),
    };
    v.checked_mul(factor)
        .ok_or_else(|| ParseError::invalid("memory size", el.text.clone()))
}

fn u32_attr(el: &Element, name: &'static str) -> Result<Option<u32>, ParseError> {
    el.attr(name)
        .map(|v| v.parse().map_err(|_| ParseError::invalid(name, v)))
        .transpose()
}

/// `<cputune>`'s `<vcpupin>`s (vCPU, CPUs; sorted by vCPU) and `<emulatorpin>`.
type Cputune = (Vec<(u32, CpuSet)>, Option<CpuSet>);

/// Reads [`Cputune`].
fn cputune(root: &Element) -> Result<Cputune, ParseError> {
    let mut vcpu_pins = Vec::new();
    let mut emulator_pin = None;
    if let Some(ct) = root.child("cputune") {
        for p in ct.children_named("vcpupin") {
            let vcpu = u32_attr(p, "vcpu")?
                .ok_or_else(|| ParseError::invalid("vcpupin", "without vcpu"))?;
            let set = parse_cpuset(p.attr("cpuset").unwrap_or(""))?;
            vcpu_pins.push((vcpu, set));
        }
        if let Some(e) = ct.child("emulatorpin") {
            emulator_pin = Some(parse_cpuset(e.attr("cpuset").unwrap_or(""))?);
        }
    }
    vcpu_pins.sort_by_key(|(v, _)| *v);
    Ok((vcpu_pins, emulator_pin))
}

/// One `<disk>` of `<devices>`.
fn disk(d: &Element) -> Disk {
    let driver = d.child("driver");
    let source = d.child("source");
    let target = d.child("target");
    Disk {
        disk_type: attr(Some(d), "type"),
        device: attr(Some(d), "device"),
        target_dev: attr(target, "dev"),
        target_bus: attr(target, "bus"),
        driver_name: attr(driver, "name"),
        driver_type: attr(driver, "type"),
        driver_cache: attr(driver, "cache"),
        driver_discard: attr(driver, "discard"),
        source_file: source
            .and_then(|s| s.attr("file").or(s.attr("dev")).or(s.attr("name")))
            .unwrap_or("")
            .to_string(),
        source_protocol: attr(source, "protocol"),
        serial: d.text_at(&["serial"]).unwrap_or("").to_string(),
    }
}

/// One `<interface>` of `<devices>`.
fn interface(i: &Element) -> Interface {
    let source = i.child("source");
    Interface {
        interface_type: attr(Some(i), "type"),
        mac: attr(i.child("mac"), "address"),
        target_dev: attr(i.child("target"), "dev"),
        source_bridge: source
            .and_then(|s| s.attr("bridge").or(s.attr("network")))
            .unwrap_or("")
            .to_string(),
        model: attr(i.child("model"), "type"),
        mtu: attr(i.child("mtu"), "size"),
        port_id: attr(i.path(&["virtualport", "parameters"]), "interfaceid"),
    }
}

/// Linux bridge and other plugs have no interfaceid: nova names the tap after the port, so an
/// interface without one takes the nova port whose id starts with its tap name's tail.
fn ports_by_tap_name(n: &NovaInstance, interfaces: &mut [Interface]) {
    for iface in interfaces.iter_mut().filter(|i| i.port_id.is_empty()) {
        if let Some(short) = iface.target_dev.strip_prefix("tap") {
            if short.len() >= 8 {
                if let Some(p) = n.ports.iter().find(|p| p.id.starts_with(short)) {
                    iface.port_id = p.id.clone();
                }
            }
        }
    }
}

/// Parses a domain's XML.
pub fn parse_domain_xml(xml: &str) -> Result<DomainXml, ParseError> {
    let root = parse_tree(xml)?;
    if root.name != "domain" {
        return Err(ParseError::invalid("root element", root.name));
    }
    let name = root
        .text_at(&["name"])
        .ok_or_else(|| ParseError::invalid("domain", "without <name>"))?
        .to_string();
    let os_type_el = root.path(&["os", "type"]);
    let vcpu_el = root.child("vcpu");
    let vcpus = match vcpu_el {
        Some(v) => v
            .text
            .parse()
            .map_err(|_| ParseError::invalid("vcpu count", v.text.clone()))?,
        None => 1,
    };
    let vcpus_current = match vcpu_el {
        Some(v) => u32_attr(v, "current")?.unwrap_or(vcpus),
        None => vcpus,
    };
    let vcpu_cpuset = vcpu_el
        .and_then(|v| v.attr("cpuset"))
        .map(parse_cpuset)
        .transpose()?;
    let (vcpu_pins, emulator_pin) = cputune(&root)?;
    let numa_memory = root.path(&["numatune", "memory"]).map(|m| NumaMemory {
        mode: m.attr("mode").unwrap_or("strict").to_string(),
        nodeset: m.attr("nodeset").unwrap_or("").to_string(),
    });
    let devices = root.child("devices");
    let disks: Vec<Disk> = devices
        .iter()
        .flat_map(|d| d.children_named("disk").take(MAX_DEVICES))
        .map(disk)
        .collect();
    let mut interfaces: Vec<Interface> = devices
        .iter()
        .flat_map(|d| d.children_named("interface").take(MAX_DEVICES))
        .map(interface)
        .collect();
    let nova = root.child("metadata").and_then(|m| {
        m.children
            .iter()
            .find(|c| {
                c.name == "instance" && c.ns.as_deref().and_then(nova_namespace_version).is_some()
            })
            .map(|el| nova_from_element(el).map_err(|e| e.to_string()))
    });
    if let Some(Ok(n)) = &nova {
        ports_by_tap_name(n, &mut interfaces);
    }

    let nova_cpu = nova_cpu_info(nova.as_ref(), vcpus);
    Ok(DomainXml {
        name,
        uuid: root.text_at(&["uuid"]).unwrap_or("").to_string(),
        os_type: os_type_el.map(|t| t.text.clone()).unwrap_or_default(),
        os_arch: attr(os_type_el, "arch"),
        os_machine: attr(os_type_el, "machine"),
        memory_bytes: root.child("memory").map(memory_bytes).transpose()?,
        current_memory_bytes: root.child("currentMemory").map(memory_bytes).transpose()?,
        vcpus,
        vcpus_current,
        vcpu_cpuset,
        vcpu_pins,
        emulator_pin,
        numa_memory,
        disks,
        interfaces,
        nova,
        nova_cpu,
    })
}

/// The names of the `<domain>`s of a libvirt test-driver node XML (tests and the benchmark
/// check a fixture against what the exporter reports).
pub fn node_domain_names(node_xml: &str) -> Result<Vec<String>, ParseError> {
    let root = parse_tree(node_xml)?;
    Ok(root
        .children_named("domain")
        .filter_map(|d| d.text_at(&["name"]).map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = r#"<domain type='kvm' id='3'>
  <name>instance-0000000a</name>
  <uuid>0a0a0a0a-0000-4000-8000-00000000000a</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>web</nova:name>
      <nova:flavor name="pinned"><nova:vcpus>2</nova:vcpus>
        <nova:extraSpecs><nova:extraSpec name="hw:cpu_policy">dedicated</nova:extraSpec></nova:extraSpecs></nova:flavor>
      <nova:ports><nova:port uuid="1234abcd-ef01-2345-6789-abcdef012345"/></nova:ports>
    </nova:instance>
    <other:thing xmlns:other="urn:other"/>
  </metadata>
  <memory unit='GiB'>2</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static' current='2' cpuset='8-15'>4</vcpu>
  <cputune>
    <vcpupin vcpu='1' cpuset='3'/>
    <vcpupin vcpu='0' cpuset='2'/>
    <emulatorpin cpuset='0-1'/>
  </cputune>
  <numatune><memory mode='strict' nodeset='0'/></numatune>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none' discard='unmap'/>
      <source protocol='rbd' name='vms/0a_disk'/>
      <target dev='vda' bus='virtio'/>
      <serial>0a0a</serial>
    </disk>
    <interface type='bridge'>
      <mac address='fa:16:3e:00:00:0a'/>
      <source bridge='qbr1234abcd-ef'/>
      <target dev='tap1234abcd-ef'/>
      <model type='virtio'/>
      <mtu size='1450'/>
    </interface>
    <interface type='ethernet'><target dev='vnet9'/></interface>
  </devices>
</domain>"#;

    #[test]
    fn reads_everything() {
        let d = parse_domain_xml(DOMAIN).unwrap();
        assert_eq!(d.name, "instance-0000000a");
        assert_eq!(d.uuid, "0a0a0a0a-0000-4000-8000-00000000000a");
        assert_eq!((d.os_type.as_str(), d.os_arch.as_str()), ("hvm", "x86_64"));
        assert_eq!(d.memory_bytes, Some(2 << 30));
        assert_eq!(d.current_memory_bytes, Some(1 << 30));
        assert_eq!((d.vcpus, d.vcpus_current), (4, 2));
        assert_eq!(
            d.vcpu_pins
                .iter()
                .map(|(v, s)| (*v, s.to_string()))
                .collect::<Vec<_>>(),
            vec![(0, "2".to_string()), (1, "3".to_string())]
        );
        assert_eq!(
            d.vcpu_affinity(1).map(|s| s.to_string()).as_deref(),
            Some("3")
        );
        // vCPU 2 has no pin of its own: it may use <vcpu cpuset>.
        assert_eq!(
            d.vcpu_affinity(2).map(|s| s.to_string()).as_deref(),
            Some("8-15")
        );
        assert_eq!(
            d.emulator_pin.as_ref().map(|s| s.to_string()).as_deref(),
            Some("0-1")
        );
        assert_eq!(
            d.numa_memory,
            Some(NumaMemory {
                mode: "strict".into(),
                nodeset: "0".into()
            })
        );
        assert_eq!(d.disks.len(), 1);
        assert_eq!(d.disks[0].source_file, "vms/0a_disk");
        assert_eq!(d.disks[0].source_protocol, "rbd");
        assert_eq!(d.disks[0].serial, "0a0a");
        assert_eq!(
            d.interfaces[0].port_id,
            "1234abcd-ef01-2345-6789-abcdef012345"
        );
        assert_eq!(d.interfaces[0].mtu, "1450");
        assert_eq!(d.interfaces[1].port_id, "");
        assert_eq!(
            d.nova_cpu.cpu,
            crate::nova_policy::NovaCpu::Policy(crate::nova_policy::CpuPolicy::Dedicated, "flavor")
        );
    }

    #[test]
    fn broken_metadata_keeps_the_domain() {
        let xml = DOMAIN.replace("<nova:vcpus>2</nova:vcpus>", "<nova:vcpus>x</nova:vcpus>");
        let d = parse_domain_xml(&xml).unwrap();
        assert!(matches!(d.nova, Some(Err(_))));
        assert_eq!(d.vcpu_pins.len(), 2);
    }

    #[test]
    fn rejects_bad_domains() {
        for bad in [
            "<domain><uuid>x</uuid></domain>",
            "<node/>",
            "<domain><name>a</name><vcpu>many</vcpu></domain>",
            "<domain><name>a</name><cputune><vcpupin vcpu='0' cpuset='z'/></cputune></domain>",
            "<domain><name>a</name><memory unit='parsec'>1</memory></domain>",
        ] {
            assert!(parse_domain_xml(bad).is_err(), "accepted {bad}");
        }
        let d = parse_domain_xml("<domain><name>a</name></domain>").unwrap();
        assert_eq!((d.vcpus, d.nova.is_none()), (1, true));
    }
}
