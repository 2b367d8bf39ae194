//! Which controller programs each bridge, from what the OVS database says, and what that means
//! for the checks.
//!
//! A check's verdict depends on who writes the flows: OVN uses one cookie per logical flow (so
//! cookie age says nothing) and programs same-priority overlaps that only the path a packet took
//! tells apart; neutron's OVS agent uses one cookie per run and names ports in `reg5`. The
//! controller is read from the database, never guessed from the flows:
//!
//! - `ovn`: the `Open_vSwitch` row's `external_ids` has `ovn-remote` (what `ovn-controller`
//!   needs to run) and the bridge is its integration bridge (`external_ids:ovn-bridge`, default
//!   `br-int`);
//! - `neutron`: the bridge has an OpenFlow controller on the loopback (`tcp:127.0.0.1:PORT` or
//!   `tcp:[::1]:PORT`): neutron's agent with its native OpenFlow interface listens there and
//!   sets it on every bridge it manages (`of_listen_address`/`of_listen_port`);
//! - `none`: anything else.
//!
//! Every check runs on every bridge unless the config switches it off; the controller changes
//! how some are judged: `stale_cookie` on OVN (below), `missing_port` reads `reg5` on
//! neutron, and `overlap`'s searches keep a packet's protocol and conntrack state across a
//! pause on OVN only ([`Controller::resume`]); on `none` every check is judged by the flows
//! alone.
//!
//! On OVN, staleness is judged by `ovn-controller` itself: connected to its southbound database
//! (its unixctl `connection-status`) means its flows are current; an answer of `not connected`
//! means every flow of the bridge is left unmanaged. A controller whose socket cannot be reached
//! (no pidfile, no answer) leaves the check incomplete, never 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::inventory::{col, map_get, set_elems, table, uuid};

use crate::checks::BridgeReport;
use crate::config::Config;
use crate::error::Error;

/// Who programs a bridge's flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Controller {
    Ovn,
    Neutron,
    #[default]
    None,
}

impl Controller {
    /// The `controller` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Controller::Ovn => "ovn",
            Controller::Neutron => "neutron",
            Controller::None => "none",
        }
    }

    /// What this controller may change in a packet it pauses (`controller(pause)`) and resumes,
    /// for the conntrack searches of `overlap` ([`crate::checks::reach::Resume`]).
    pub fn resume(self) -> crate::checks::reach::Resume {
        match self {
            Controller::Ovn => crate::checks::reach::Resume::Ovn,
            Controller::Neutron | Controller::None => crate::checks::reach::Resume::Anything,
        }
    }
}

/// `ovs-vsctl` arguments (after `--db` and `--timeout`) for what [`parse_controllers`] reads.
pub const VSCTL_ARGS: &[&str] = &[
    "--format=json",
    "--",
    "--columns=external_ids",
    "list",
    "Open_vSwitch",
    "--",
    "--columns=name,controller",
    "list",
    "Bridge",
    "--",
    "--columns=_uuid,target",
    "list",
    "Controller",
];

/// Whether an OpenFlow controller target is neutron's native listener on the loopback.
fn loopback_tcp(target: &str) -> bool {
    target.starts_with("tcp:127.0.0.1:") || target.starts_with("tcp:[::1]:")
}

/// Parses the output of `ovs-vsctl` run with [`VSCTL_ARGS`]: the controller of every bridge.
pub fn parse_controllers(text: &str) -> Result<BTreeMap<String, Controller>, Error> {
    let docs: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let [ovs, bridges, controllers] = docs.as_slice() else {
        return Err(Error::Inventory(format!(
            "expected 3 JSON tables, got {}",
            docs.len()
        )));
    };
    let (oh, orows) = table(ovs)?;
    let (ch, crows) = table(controllers)?;
    let (bh, brows) = table(bridges)?;
    for (h, want) in [
        (&oh, &["external_ids"][..]),
        (&bh, &["name", "controller"][..]),
        (&ch, &["_uuid", "target"][..]),
    ] {
        if want.iter().any(|w| !h.contains(&w.to_string())) {
            return Err(Error::Inventory(format!(
                "expected the columns {want:?}, got {h:?}"
            )));
        }
    }
    let ext = orows.first().and_then(|r| col(&oh, r, "external_ids"));
    let ovn_bridge = ext
        .filter(|e| map_get(e, "ovn-remote").is_some_and(|r| !r.is_empty()))
        .map(|e| map_get(e, "ovn-bridge").unwrap_or("br-int").to_string());
    let loopback: Vec<&str> = crows
        .iter()
        .filter(|r| {
            col(&ch, r, "target")
                .and_then(Value::as_str)
                .is_some_and(loopback_tcp)
        })
        .filter_map(|r| col(&ch, r, "_uuid").and_then(uuid))
        .collect();
    let mut out = BTreeMap::new();
    for r in &brows {
        let Some(name) = col(&bh, r, "name").and_then(Value::as_str) else {
            continue;
        };
        let neutron = col(&bh, r, "controller").is_some_and(|c| {
            set_elems(c)
                .into_iter()
                .filter_map(uuid)
                .any(|u| loopback.contains(&u))
        });
        let c = if ovn_bridge.as_deref() == Some(name) {
            Controller::Ovn
        } else if neutron {
            Controller::Neutron
        } else {
            Controller::None
        };
        out.insert(name.to_string(), c);
    }
    Ok(out)
}

/// What `ovn-controller` says of its southbound connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OvnStatus {
    /// `connected`: its flows are current.
    Connected,
    /// Any other answer (`not connected`): the flows are not maintained.
    Disconnected(String),
    /// No pidfile, or the socket did not answer: the check cannot tell.
    Unreachable(String),
}

/// The unixctl socket of the `ovn-controller` whose pidfile is in `rundir`.
pub fn ovn_controller_socket(rundir: &Path) -> Result<PathBuf, String> {
    let pidfile = rundir.join("ovn-controller.pid");
    let pid =
        std::fs::read_to_string(&pidfile).map_err(|e| format!("{}: {e}", pidfile.display()))?;
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| format!("{}: not a pid", pidfile.display()))?;
    Ok(rundir.join(format!("ovn-controller.{pid}.ctl")))
}

/// Reads an `ovs-appctl connection-status` answer.
pub fn parse_connection_status(out: &str) -> OvnStatus {
    match out.trim() {
        "connected" => OvnStatus::Connected,
        other => OvnStatus::Disconnected(other.chars().take(80).collect()),
    }
}

/// Applies the bridge's controller to its report: checks off for it (the controller's
/// defaults, then the config's `bridges:` settings) report 0 without evidence; on OVN,
/// `stale_cookie` becomes `ovn-controller`'s own verdict (`ovn`, when known).
pub fn apply(
    report: &mut BridgeReport,
    bridge: &str,
    controller: Controller,
    cfg: &Config,
    ovn: Option<&OvnStatus>,
) {
    let flows = report.flows;
    for c in &mut report.checks {
        if !cfg.check_on(bridge, &c.name) {
            c.dirty = 0;
            c.evidence.clear();
            c.incomplete = false;
            continue;
        }
        if controller == Controller::Ovn && c.name == "stale_cookie" {
            c.evidence.clear();
            (c.dirty, c.incomplete) = match ovn {
                Some(OvnStatus::Connected) => (0, false),
                Some(OvnStatus::Disconnected(_)) => (flows, false),
                Some(OvnStatus::Unreachable(_)) | None => (0, true),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn doc(headings: &str, rows: &str) -> String {
        format!("{{\"data\":{rows},\"headings\":{headings}}}\n")
    }

    #[test]
    fn ovn_integration_bridge_from_the_database() {
        // As ovs-vsctl printed it on the OVN sandbox (tests/fixtures/ovn/capture.sh).
        let got = parse_controllers(&fixture("ovn/healthy_controllers.json")).unwrap();
        let got: Vec<(&str, &str)> = got.iter().map(|(b, c)| (b.as_str(), c.as_str())).collect();
        assert_eq!(
            got,
            vec![("br-ex", "none"), ("br-int", "ovn"), ("br-phys", "none")]
        );
    }

    #[test]
    fn neutron_by_its_loopback_controller_and_none_otherwise() {
        let text = [
            doc(
                r#"["external_ids"]"#,
                r#"[[["map",[["ovn-bridge","br-ovn"],["system-id","hv1"]]]]]"#,
            ),
            doc(
                r#"["name","controller"]"#,
                r#"[["br-int",["uuid","c1"]],["br-tun",["set",[["uuid","c2"],["uuid","c3"]]]],["br-sdn",["uuid","c4"]],["br-ovn",["set",[]]],["br-plain",["set",[]]]]"#,
            ),
            doc(
                r#"["_uuid","target"]"#,
                r#"[[["uuid","c1"],"tcp:127.0.0.1:6633"],[["uuid","c2"],"ptcp:6653"],[["uuid","c3"],"tcp:[::1]:6633"],[["uuid","c4"],"tcp:192.0.2.1:6653"]]"#,
            ),
        ]
        .concat();
        let got = parse_controllers(&text).unwrap();
        let got: Vec<(&str, &str)> = got.iter().map(|(b, c)| (b.as_str(), c.as_str())).collect();
        // No ovn-remote: ovn-bridge alone makes no OVN node; a remote SDN controller is not
        // neutron.
        assert_eq!(
            got,
            vec![
                ("br-int", "neutron"),
                ("br-ovn", "none"),
                ("br-plain", "none"),
                ("br-sdn", "none"),
                ("br-tun", "neutron"),
            ]
        );
    }

    #[test]
    fn bad_output_is_an_error() {
        // The port inventory (other columns) is refused too.
        let inventory = fixture("vsctl_inventory.json");
        for text in ["", "{}\n{}\n{}\n", "not json\n1\n2\n", &inventory] {
            assert!(parse_controllers(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn connection_status_and_socket() {
        assert_eq!(parse_connection_status("connected\n"), OvnStatus::Connected);
        assert_eq!(
            parse_connection_status("not connected\n"),
            OvnStatus::Disconnected("not connected".into())
        );
        let d = tempfile::tempdir().unwrap();
        assert!(ovn_controller_socket(d.path()).is_err());
        std::fs::write(d.path().join("ovn-controller.pid"), "1234\n").unwrap();
        assert_eq!(
            ovn_controller_socket(d.path()).unwrap(),
            d.path().join("ovn-controller.1234.ctl")
        );
        std::fs::write(d.path().join("ovn-controller.pid"), "x\n").unwrap();
        assert!(ovn_controller_socket(d.path()).is_err());
    }
}
