//! `missing_port`: a flow that names an OpenFlow port the bridge does not have.
//!
//! Neutron's classic leftover: a VM's port is deleted (`del-port`), its flows stay, and OVS keeps
//! them silently (`ofproto/trace` then says "Nonexistent output port"). A port counts as present
//! when one of the bridge's interfaces in the database has that ofport; an interface that failed
//! has ofport -1, so flows meant for it count as missing too.
//!
//! On a bridge neutron's OVS agent programs ([`Ports::with_reg5`]), a flow matching `reg5=N`
//! names port N too: neutron's firewall keeps the packet's port number in `reg5`, and its
//! leftovers often name the port only there.

use std::collections::HashSet;

use crate::inventory::Interface;
use crate::parse::actions::{for_each_port_ref, port_number, PortRef};
use crate::parse::find::Needle;
use crate::parse::Flow;

/// The ports of one bridge that exist and work.
#[derive(Debug, Clone, Default)]
pub struct Ports {
    numbers: HashSet<u32>,
    names: HashSet<String>,
    /// `reg5=N` names port N (neutron).
    reg5: bool,
    /// The bridge's `overlap` check is off (by the config): the scan skips the conntrack
    /// searches that only an overlap finding needs.
    overlap_off: bool,
    /// What the bridge's controller may change in a packet it pauses, for the conntrack
    /// searches ([`crate::checks::reach::Resume`]).
    resume: crate::checks::reach::Resume,
}

impl Ports {
    /// From the bridge's interfaces in the database.
    pub fn new(ifaces: &[Interface]) -> Self {
        let mut p = Ports::default();
        for i in ifaces {
            if let Some(n) = i
                .ofport
                .filter(|&n| n > 0)
                .and_then(|n| u32::try_from(n).ok())
            {
                p.numbers.insert(n);
                p.names.insert(i.name.clone());
            }
        }
        p
    }

    /// Counts `reg5=N` as naming port N (a bridge of neutron's OVS agent).
    pub fn with_reg5(mut self, on: bool) -> Self {
        self.reg5 = on;
        self
    }

    /// Whether the bridge's `overlap` check is on (see [`Ports`]'s field).
    pub fn with_overlap(mut self, on: bool) -> Self {
        self.overlap_off = !on;
        self
    }

    /// Whether the bridge's `overlap` check is off.
    pub fn overlap_off(&self) -> bool {
        self.overlap_off
    }

    /// What the bridge's controller may change in a packet it pauses and resumes.
    pub fn with_resume(mut self, resume: crate::checks::reach::Resume) -> Self {
        self.resume = resume;
        self
    }

    /// What the bridge's controller may change in a packet it pauses and resumes.
    pub fn resume(&self) -> crate::checks::reach::Resume {
        self.resume
    }

    /// Whether `reg5=N` names port N.
    pub fn reg5(&self) -> bool {
        self.reg5
    }

    /// Whether an interface with this name exists and works.
    pub fn has_name(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Whether the port exists and works.
    pub fn has(&self, r: &PortRef) -> bool {
        match r {
            PortRef::Number(n) => self.numbers.contains(n),
            PortRef::Name(s) => self.names.contains(s),
        }
    }
}

/// Whether `flow` matches on or sends to a port that `ports` lacks.
pub fn is_dirty(flow: &Flow<'_>, ports: &Ports) -> bool {
    let mut missing = false;
    for_each_match_port(flow, &mut |r| missing |= !ports.has(&r));
    if ports.reg5 {
        for_each_reg5_port(flow, &mut |r| missing |= !ports.has(&r));
    }
    for_each_port_ref(flow.actions(), &mut |r| missing |= !ports.has(&r));
    missing
}

static IN_PORT: Needle = Needle::new(b"in_port");

/// Calls `f` with the port the flow's match names (`in_port=N`), if any.
pub fn for_each_match_port(flow: &Flow<'_>, f: &mut dyn FnMut(PortRef)) {
    // Most flows do not match on in_port: one substring search settles those.
    if !IN_PORT.is_in(flow.match_text.as_bytes()) {
        return;
    }
    for (k, v) in flow.match_fields() {
        if matches!(k, "in_port" | "in_port_oxm") {
            if let Some(r) = v.and_then(port_number) {
                f(r);
            }
        }
    }
}

static REG5: Needle = Needle::new(b"reg5=");

/// Calls `f` with the port a neutron flow's `reg5=N` names (an exact value, not a mask; N
/// below OpenFlow's reserved ports).
pub fn for_each_reg5_port(flow: &Flow<'_>, f: &mut dyn FnMut(PortRef)) {
    if !REG5.is_in(flow.match_text.as_bytes()) {
        return;
    }
    for (k, v) in flow.match_fields() {
        if k != "reg5" {
            continue;
        }
        let Some(v) = v.filter(|v| !v.contains('/')) else {
            continue;
        };
        let n = match v.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        };
        if let Some(n) = n.filter(|&n| n > 0 && n < 0xff00) {
            f(PortRef::Number(n));
        }
    }
}

/// A working dummy interface, for tests.
#[cfg(test)]
pub(crate) fn iface(name: &str, ofport: i64) -> Interface {
    Interface {
        name: name.into(),
        ofport: Some(ofport),
        kind: "dummy".into(),
        error: None,
        iface_id: None,
        attached_mac: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_flow;

    #[test]
    fn flags_missing_and_failed_ports() {
        let ports = Ports::new(&[
            iface("br-int", 65534),
            iface("tap1", 1),
            iface("tap2", 2),
            iface("bad", -1),
        ]);
        let dirty = |l: &str| is_dirty(&parse_flow(l).unwrap(), &ports);
        assert!(!dirty(" priority=1,in_port=1 actions=output:2"));
        assert!(!dirty(
            " priority=1,in_port=LOCAL actions=NORMAL,output:LOCAL,resubmit(,10)"
        ));
        assert!(dirty(" priority=1,in_port=77 actions=drop"));
        assert!(dirty(" priority=1,in_port=1 actions=output:99"));
        assert!(dirty(" priority=1 actions=enqueue:3:1"));
        assert!(dirty(
            " priority=1 actions=load:0x9->NXM_OF_IN_PORT[],resubmit(,1)"
        ));
        assert!(dirty(
            " priority=1 actions=bundle(eth_src,0,hrw,ofport,members:1,5)"
        ));
        assert!(!dirty(" priority=1 actions=CONTROLLER:65535,IN_PORT,FLOOD"));
        assert!(!dirty(" priority=1,in_port=tap1 actions=output:tap2"));
        assert!(dirty(" priority=1,in_port=bad actions=drop"));
        // reg5 is no port unless the bridge is neutron's.
        assert!(!dirty(
            " table=72, priority=50,reg5=0x9 actions=resubmit(,93)"
        ));
    }

    #[test]
    fn neutron_reg5_names_a_port() {
        let ports = Ports::new(&[iface("tap1", 1), iface("tap2", 2)]).with_reg5(true);
        let dirty = |l: &str| is_dirty(&parse_flow(l).unwrap(), &ports);
        // neutron's firewall flows, as its agent writes them.
        assert!(dirty(
            " table=72, priority=50,ct_mark=0x1,reg5=0x9 actions=resubmit(,93)"
        ));
        assert!(dirty(" table=82, priority=50,reg5=9 actions=drop"));
        assert!(!dirty(
            " table=72, priority=50,ct_mark=0x1,reg5=0x2 actions=resubmit(,93)"
        ));
        // A mask, port 0 and reserved numbers name no port.
        assert!(!dirty(" table=72, priority=50,reg5=0x9/0xff actions=drop"));
        assert!(!dirty(" table=72, priority=50,reg5=0 actions=drop"));
        assert!(!dirty(
            " table=72, priority=50,reg5=0xfffffffe actions=drop"
        ));
        assert!(!dirty(" table=72, priority=50,reg15=0x9 actions=drop"));
    }
}
