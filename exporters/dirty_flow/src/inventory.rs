//! The port inventory from the OVS database: bridges, their interfaces and OpenFlow port numbers.
//!
//! One `ovs-vsctl --format=json` run lists the Bridge, Port and Interface tables (three JSON
//! documents, one per line), so the three are read in one database transaction-free pass and
//! joined here: bridge -> ports -> interfaces. OVS JSON encodes sets as `["set",[...]]` except a
//! one-element set, which is the bare element, and maps as `["map",[[k,v],...]]`; an interface
//! whose ofport is not yet assigned has `["set",[]]`, a failed one `-1`.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::error::Error;

/// The `ovs-vsctl` arguments whose output [`parse_inventory`] reads.
pub const VSCTL_ARGS: &[&str] = &[
    "--format=json",
    "--",
    "--columns=name,ports",
    "list",
    "Bridge",
    "--",
    "--columns=_uuid,name,interfaces",
    "list",
    "Port",
    "--",
    "--columns=_uuid,name,ofport,type,error,external_ids",
    "list",
    "Interface",
];

/// One interface of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// None when not assigned yet; -1 when the interface failed.
    pub ofport: Option<i64>,
    pub kind: String,
    pub error: Option<String>,
    pub iface_id: Option<String>,
    pub attached_mac: Option<String>,
}

impl Interface {
    /// Whether ovs-vswitchd could not open the interface.
    pub fn failed(&self) -> bool {
        self.ofport == Some(-1) || self.error.is_some()
    }
}

/// Bridges by name, each with its interfaces (sorted by name).
pub type Inventory = BTreeMap<String, Vec<Interface>>;

/// An `ovs-vsctl --format=json` table: its headings and rows (helpers shared with
/// [`crate::controller`]).
pub(crate) fn table(doc: &str) -> Result<(Vec<String>, Vec<Vec<Value>>), Error> {
    let v: Value =
        serde_json::from_str(doc).map_err(|e| Error::Inventory(format!("invalid JSON: {e}")))?;
    let headings = v
        .get("headings")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Inventory("no headings".into()))?
        .iter()
        .map(|h| h.as_str().unwrap_or_default().to_string())
        .collect();
    let rows = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Inventory("no data".into()))?
        .iter()
        .map(|r| r.as_array().cloned().unwrap_or_default())
        .collect();
    Ok((headings, rows))
}

pub(crate) fn col<'a>(headings: &[String], row: &'a [Value], name: &str) -> Option<&'a Value> {
    headings
        .iter()
        .position(|h| h == name)
        .and_then(|i| row.get(i))
}

/// `["uuid","..."]` -> the uuid.
pub(crate) fn uuid(v: &Value) -> Option<&str> {
    match v.as_array()?.as_slice() {
        [t, u] if t == "uuid" => u.as_str(),
        _ => None,
    }
}

/// An OVSDB set (or a bare single element) as a list of its elements.
pub(crate) fn set_elems(v: &Value) -> Vec<&Value> {
    match v.as_array().map(Vec::as_slice) {
        Some([t, items]) if t == "set" => items
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => vec![v],
    }
}

pub(crate) fn map_get<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    match v.as_array()?.as_slice() {
        [t, pairs] if t == "map" => {
            pairs
                .as_array()?
                .iter()
                .find_map(|p| match p.as_array()?.as_slice() {
                    [k, val] if k == key => val.as_str(),
                    _ => None,
                })
        }
        _ => None,
    }
}

fn scalar_str(v: Option<&Value>) -> Option<String> {
    let v = v?;
    if let Some(s) = v.as_str() {
        return Some(s.to_string());
    }
    // An empty optional column is `["set",[]]`.
    set_elems(v)
        .first()
        .and_then(|e| e.as_str())
        .map(str::to_string)
}

/// Parses the output of `ovs-vsctl` run with [`VSCTL_ARGS`].
pub fn parse_inventory(text: &str) -> Result<Inventory, Error> {
    let docs: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let [bridges, ports, ifaces] = docs.as_slice() else {
        return Err(Error::Inventory(format!(
            "expected 3 JSON tables, got {}",
            docs.len()
        )));
    };
    let (ih, irows) = table(ifaces)?;
    let mut by_uuid: HashMap<String, Interface> = HashMap::new();
    for row in &irows {
        let Some(id) = col(&ih, row, "_uuid").and_then(uuid) else {
            continue;
        };
        let ext = col(&ih, row, "external_ids");
        let iface = Interface {
            name: scalar_str(col(&ih, row, "name")).unwrap_or_default(),
            ofport: col(&ih, row, "ofport").and_then(|v| {
                v.as_i64()
                    .or_else(|| set_elems(v).first().and_then(|e| e.as_i64()))
            }),
            kind: scalar_str(col(&ih, row, "type")).unwrap_or_default(),
            error: scalar_str(col(&ih, row, "error")),
            iface_id: ext.and_then(|e| map_get(e, "iface-id")).map(str::to_string),
            attached_mac: ext
                .and_then(|e| map_get(e, "attached-mac"))
                .map(str::to_string),
        };
        by_uuid.insert(id.to_string(), iface);
    }
    let (ph, prows) = table(ports)?;
    let mut port_ifaces: HashMap<String, Vec<String>> = HashMap::new();
    for row in &prows {
        let Some(id) = col(&ph, row, "_uuid").and_then(uuid) else {
            continue;
        };
        let list = col(&ph, row, "interfaces")
            .map(|v| {
                set_elems(v)
                    .into_iter()
                    .filter_map(uuid)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        port_ifaces.insert(id.to_string(), list);
    }
    let (bh, brows) = table(bridges)?;
    let mut inv = Inventory::new();
    for row in &brows {
        let Some(name) = scalar_str(col(&bh, row, "name")) else {
            continue;
        };
        let mut list: Vec<Interface> = col(&bh, row, "ports")
            .map(|v| {
                set_elems(v)
                    .into_iter()
                    .filter_map(uuid)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .flat_map(|p| port_ifaces.get(p).cloned().unwrap_or_default())
            .filter_map(|i| by_uuid.get(&i).cloned())
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        inv.insert(name, list);
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_inventory() {
        let text = include_str!("../tests/fixtures/vsctl_inventory.json");
        let inv = parse_inventory(text).unwrap();
        let br = &inv["br-int"];
        let names: Vec<_> = br.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, vec!["br-int", "broken", "tap1", "tap2", "tap3"]);
        let tap1 = &br[2];
        assert_eq!(tap1.ofport, Some(1));
        assert_eq!(tap1.iface_id.as_deref(), Some("port-1"));
        assert_eq!(tap1.attached_mac.as_deref(), Some("fa:16:3e:00:00:01"));
        assert!(!tap1.failed());
        assert_eq!(br[0].ofport, Some(65534));
        assert_eq!(br[0].kind, "internal");
        let broken = &br[1];
        assert_eq!(broken.ofport, Some(-1));
        assert!(broken.failed());
        assert!(broken.error.as_deref().unwrap().contains("could not open"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_inventory("").is_err());
        assert!(parse_inventory("{}\n{}\n{}").is_err());
        assert!(parse_inventory("not json\nx\ny").is_err());
    }
}
