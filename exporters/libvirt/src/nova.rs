//! OpenStack nova's instance metadata, as nova writes it into `<metadata>` of each domain.
//!
//! Nova writes `<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">` (1.0
//! before nova 23) with the instance's display name, creation time, flavor, owner, root disk and
//! ports; since nova 32 also the flavor's `id` and `<nova:extraSpecs>` (always, empty when the
//! flavor has none) and `<nova:image>` (uuid, empty when booted from a volume, container and disk
//! format, minimum disk and RAM, and `<nova:properties>`). There is no hostname element.
//! Elements are matched by namespace, not prefix. Every field is optional as nova's releases
//! differ; a field that is present but unreadable (a flavor size that is not a number, a port
//! without an id) makes the metadata malformed: the caller counts that, and the domain is still
//! exported.
#![forbid(unsafe_code)]

use crate::error::ParseError;
use crate::xmltree::{parse_tree, Element};

/// Namespace URI prefix of nova's metadata; the version follows.
pub const NOVA_NS_PREFIX: &str = "http://openstack.org/xmlns/libvirt/nova/";
/// The namespace versions this exporter reads.
pub const NOVA_NS_VERSIONS: &[&str] = &["1.0", "1.1"];

/// Bound on flavor extra specs and ports kept per instance (label cardinality).
const MAX_ITEMS: usize = 64;

/// The flavor as nova recorded it at boot or resize.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flavor {
    pub name: Option<String>,
    pub id: Option<String>,
    pub vcpus: Option<u64>,
    pub memory_mb: Option<u64>,
    pub disk_gb: Option<u64>,
    pub swap_mb: Option<u64>,
    pub ephemeral_gb: Option<u64>,
    /// `(name, value)`, e.g. `("hw:cpu_policy", "dedicated")`, in document order.
    pub extra_specs: Vec<(String, String)>,
    /// Whether nova wrote `<nova:extraSpecs>` (nova 32 and later, even when empty): a policy
    /// missing from them is then really missing, not unrecorded.
    pub extra_specs_written: bool,
}

impl Flavor {
    /// An extra spec's value.
    pub fn extra_spec(&self, name: &str) -> Option<&str> {
        self.extra_specs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The image as nova recorded it (`<nova:image>`, nova 32 and later).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Image {
    /// Empty for an instance booted from a volume.
    pub id: String,
    pub container_format: Option<String>,
    pub disk_format: Option<String>,
    pub min_disk_gb: Option<u64>,
    pub min_ram_mb: Option<u64>,
    /// `(name, value)`, e.g. `("hw_cpu_policy", "dedicated")`, in document order. A property
    /// that is not plain text (child elements, no name) is left out and makes
    /// [`Image::malformed_properties`] count it.
    pub properties: Vec<(String, String)>,
    /// Properties that could not be read as `name = text`.
    pub malformed_properties: usize,
}

impl Image {
    /// A property's value.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One address of a port (`<nova:ip type address ipVersion>`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ip {
    /// `fixed` or `floating`.
    pub kind: String,
    pub address: String,
    /// `4` or `6` as nova wrote it (empty when absent).
    pub version: String,
}

/// One neutron port with its addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Port {
    pub id: String,
    pub fixed_ips: Vec<String>,
    pub floating_ips: Vec<String>,
    /// Every address in document order, with its type and IP version.
    pub ips: Vec<Ip>,
}

/// Everything nova writes about an instance.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NovaInstance {
    /// `1.0` or `1.1`.
    pub namespace_version: String,
    /// nova's version (`<nova:package version>`).
    pub package_version: Option<String>,
    /// The display name.
    pub name: Option<String>,
    /// `YYYY-MM-DD HH:MM:SS`, UTC.
    pub creation_time: Option<String>,
    pub flavor: Flavor,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    /// `image` or `volume`.
    pub root_type: Option<String>,
    pub root_id: Option<String>,
    /// The image the instance was built from (`<nova:image uuid>` or an image root).
    pub image_id: Option<String>,
    /// `<nova:image>`, when nova wrote it.
    pub image: Option<Image>,
    pub ports: Vec<Port>,
}

/// The version part of a nova namespace URI, if `ns` is one.
pub fn nova_namespace_version(ns: &str) -> Option<&str> {
    ns.strip_prefix(NOVA_NS_PREFIX)
}

fn number(el: &Element, name: &'static str) -> Result<Option<u64>, ParseError> {
    match el.child(name) {
        None => Ok(None),
        Some(c) if c.text.is_empty() => Ok(None),
        Some(c) => c
            .text
            .parse()
            .map(Some)
            .map_err(|_| ParseError::invalid(name, c.text.clone())),
    }
}

fn text(el: &Element, name: &str) -> Option<String> {
    el.text_at(&[name]).map(str::to_string)
}

/// Reads a `<nova:instance>` element (already known to be in a nova namespace).
pub fn nova_from_element(el: &Element) -> Result<NovaInstance, ParseError> {
    let ns = el.ns.as_deref().unwrap_or("");
    let version =
        nova_namespace_version(ns).ok_or_else(|| ParseError::invalid("nova namespace", ns))?;
    if !NOVA_NS_VERSIONS.contains(&version) {
        return Err(ParseError::invalid("nova namespace version", version));
    }
    let mut out = NovaInstance {
        namespace_version: version.to_string(),
        package_version: el
            .child("package")
            .and_then(|p| p.attr("version"))
            .map(str::to_string),
        name: text(el, "name"),
        creation_time: text(el, "creationTime"),
        ..NovaInstance::default()
    };
    if let Some(f) = el.child("flavor") {
        out.flavor = flavor(f)?;
    }
    if let Some(owner) = el.child("owner") {
        if let Some(u) = owner.child("user") {
            out.user_id = u.attr("uuid").map(str::to_string);
            out.user_name = Some(u.text.clone()).filter(|s| !s.is_empty());
        }
        if let Some(p) = owner.child("project") {
            out.project_id = p.attr("uuid").map(str::to_string);
            out.project_name = Some(p.text.clone()).filter(|s| !s.is_empty());
        }
    }
    if let Some(root) = el.child("root") {
        out.root_type = root.attr("type").map(str::to_string);
        out.root_id = root.attr("uuid").map(str::to_string);
        if out.root_type.as_deref() == Some("image") {
            out.image_id = out.root_id.clone();
        }
    }
    if let Some(image_el) = el.child("image") {
        if let Some(id) = image_el.attr("uuid").filter(|s| !s.is_empty()) {
            out.image_id = Some(id.to_string());
        }
        out.image = Some(image(image_el)?);
    }
    if let Some(ports) = el.child("ports") {
        for p in ports.children_named("port").take(MAX_ITEMS) {
            out.ports.push(port(p)?);
        }
    }
    Ok(out)
}

/// `<nova:flavor>`.
fn flavor(f: &Element) -> Result<Flavor, ParseError> {
    let mut extra_specs = Vec::new();
    let specs_el = f.child("extraSpecs");
    if let Some(specs) = specs_el {
        for s in specs.children_named("extraSpec").take(MAX_ITEMS) {
            let name = s
                .attr("name")
                .ok_or_else(|| ParseError::invalid("extraSpec", "without name"))?;
            extra_specs.push((name.to_string(), s.text.clone()));
        }
    }
    Ok(Flavor {
        name: f.attr("name").map(str::to_string),
        id: f.attr("id").map(str::to_string),
        vcpus: number(f, "vcpus")?,
        memory_mb: number(f, "memory")?,
        disk_gb: number(f, "disk")?,
        swap_mb: number(f, "swap")?,
        ephemeral_gb: number(f, "ephemeral")?,
        extra_specs,
        extra_specs_written: specs_el.is_some(),
    })
}

/// `<nova:image>` (a property with children or without a name is counted as malformed).
fn image(image: &Element) -> Result<Image, ParseError> {
    let mut img = Image {
        id: image.attr("uuid").unwrap_or("").to_string(),
        container_format: text(image, "containerFormat"),
        disk_format: text(image, "diskFormat"),
        min_disk_gb: number(image, "minDisk")?,
        min_ram_mb: number(image, "minRam")?,
        ..Image::default()
    };
    if let Some(props) = image.child("properties") {
        for p in props.children_named("property") {
            match p.attr("name") {
                Some(name) if p.children.is_empty() && !name.is_empty() => {
                    if img.properties.len() < MAX_ITEMS {
                        img.properties.push((name.to_string(), p.text.clone()));
                    }
                }
                _ => img.malformed_properties += 1,
            }
        }
    }
    Ok(img)
}

/// One `<nova:port>` with its fixed and floating addresses.
fn port(p: &Element) -> Result<Port, ParseError> {
    let id = p
        .attr("uuid")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ParseError::invalid("nova port", "without uuid"))?;
    let mut port = Port {
        id: id.to_string(),
        ..Port::default()
    };
    for ip in p.children_named("ip").take(MAX_ITEMS) {
        let addr = ip
            .attr("address")
            .ok_or_else(|| ParseError::invalid("nova ip", "without address"))?
            .to_string();
        let kind = ip.attr("type").unwrap_or("");
        if matches!(kind, "fixed" | "floating") {
            port.ips.push(Ip {
                kind: kind.to_string(),
                address: addr.clone(),
                version: ip.attr("ipVersion").unwrap_or("").to_string(),
            });
        }
        match ip.attr("type") {
            Some("fixed") => port.fixed_ips.push(addr),
            Some("floating") => port.floating_ips.push(addr),
            other => {
                return Err(ParseError::invalid(
                    "nova ip type",
                    other.unwrap_or("(none)"),
                ))
            }
        }
    }
    Ok(port)
}

/// Parses nova's metadata on its own (the `<nova:instance>` document).
pub fn parse_nova_metadata(xml: &str) -> Result<NovaInstance, ParseError> {
    let el = parse_tree(xml)?;
    if el.name != "instance" {
        return Err(ParseError::invalid("nova metadata root", el.name));
    }
    nova_from_element(&el)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:package version="29.0.1"/>
      <nova:name>db &amp; cache</nova:name>
      <nova:creationTime>2024-05-01 10:00:00</nova:creationTime>
      <nova:flavor name="c4.pinned" id="8a0f">
        <nova:memory>4096</nova:memory><nova:disk>40</nova:disk><nova:swap>512</nova:swap>
        <nova:ephemeral>10</nova:ephemeral><nova:vcpus>4</nova:vcpus>
        <nova:extraSpecs>
          <nova:extraSpec name="hw:cpu_policy">dedicated</nova:extraSpec>
          <nova:extraSpec name="hw:mem_page_size">large</nova:extraSpec>
        </nova:extraSpecs>
      </nova:flavor>
      <nova:owner><nova:user uuid="u-1">alice</nova:user><nova:project uuid="p-1">shop</nova:project></nova:owner>
      <nova:root type="image" uuid="img-1"/>
      <nova:ports>
        <nova:port uuid="port-1"><nova:ip type="fixed" address="10.0.0.5" ipVersion="4"/>
          <nova:ip type="floating" address="203.0.113.7" ipVersion="4"/></nova:port>
        <nova:port uuid="port-2"/>
      </nova:ports>
    </nova:instance>"#;

    #[test]
    fn full_metadata() {
        let n = parse_nova_metadata(FULL).unwrap();
        assert_eq!(n.namespace_version, "1.1");
        assert_eq!(n.package_version.as_deref(), Some("29.0.1"));
        assert_eq!(n.name.as_deref(), Some("db & cache"));
        assert_eq!(n.flavor.name.as_deref(), Some("c4.pinned"));
        assert_eq!(n.flavor.id.as_deref(), Some("8a0f"));
        assert_eq!(
            (
                n.flavor.vcpus,
                n.flavor.memory_mb,
                n.flavor.disk_gb,
                n.flavor.swap_mb,
                n.flavor.ephemeral_gb
            ),
            (Some(4), Some(4096), Some(40), Some(512), Some(10))
        );
        assert_eq!(n.flavor.extra_spec("hw:cpu_policy"), Some("dedicated"));
        assert_eq!(n.flavor.extra_specs.len(), 2);
        assert_eq!(n.user_id.as_deref(), Some("u-1"));
        assert_eq!(n.user_name.as_deref(), Some("alice"));
        assert_eq!(n.project_id.as_deref(), Some("p-1"));
        assert_eq!(n.project_name.as_deref(), Some("shop"));
        assert_eq!(n.root_type.as_deref(), Some("image"));
        assert_eq!(n.image_id.as_deref(), Some("img-1"));
        assert_eq!(n.ports.len(), 2);
        assert_eq!(n.ports[0].fixed_ips, vec!["10.0.0.5"]);
        assert_eq!(n.ports[0].floating_ips, vec!["203.0.113.7"]);
        assert!(n.ports[1].fixed_ips.is_empty());
        assert_eq!(
            n.ports[0]
                .ips
                .iter()
                .map(|i| format!("{}:{}:{}", i.kind, i.address, i.version))
                .collect::<Vec<_>>(),
            ["fixed:10.0.0.5:4", "floating:203.0.113.7:4"]
        );
    }

    #[test]
    fn namespace_1_0_and_other_prefix() {
        let n = parse_nova_metadata(
            r#"<x:instance xmlns:x="http://openstack.org/xmlns/libvirt/nova/1.0"><x:name>old</x:name>
               <x:flavor name="m1.small"><x:vcpus>1</x:vcpus></x:flavor>
               <x:root type="volume" uuid="vol-1"/></x:instance>"#,
        )
        .unwrap();
        assert_eq!(n.namespace_version, "1.0");
        assert_eq!(n.name.as_deref(), Some("old"));
        assert_eq!(n.flavor.vcpus, Some(1));
        assert_eq!(n.root_type.as_deref(), Some("volume"));
        assert_eq!(n.image_id, None);
    }

    #[test]
    fn malformed_metadata() {
        let cases = [
            // not a number
            r#"<n:instance xmlns:n="http://openstack.org/xmlns/libvirt/nova/1.1"><n:flavor name="f"><n:vcpus>two</n:vcpus></n:flavor></n:instance>"#,
            // unknown namespace version
            r#"<n:instance xmlns:n="http://openstack.org/xmlns/libvirt/nova/9.9"/>"#,
            // port without id
            r#"<n:instance xmlns:n="http://openstack.org/xmlns/libvirt/nova/1.1"><n:ports><n:port/></n:ports></n:instance>"#,
            // ip of unknown type
            r#"<n:instance xmlns:n="http://openstack.org/xmlns/libvirt/nova/1.1"><n:ports><n:port uuid="p"><n:ip type="weird" address="1.2.3.4"/></n:port></n:ports></n:instance>"#,
            // not XML at all
            "<n:instance",
        ];
        for c in cases {
            assert!(parse_nova_metadata(c).is_err(), "accepted {c}");
        }
    }
}
