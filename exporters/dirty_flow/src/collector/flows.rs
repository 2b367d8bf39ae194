//! The `flows` collector: per scrape, read the port inventory from the OVS database, stream each
//! bridge's `ovs-ofctl dump-flows` through the checks, and build fresh metrics from the result.
//!
//! The database is read while the dumps of the bridges the last scrape found already stream
//! (see [`FlowsCollector::run`]).
//!
//! A bridge whose dump fails gets `ovs_dump_success 0` and no flow or check series (their values
//! would be unknown, not 0); the other bridges are unaffected. Any failure (database or a
//! bridge) makes the collector return an error after writing what it has, so
//! `ovs_scrape_collector_success{collector="flows"}` drops to 0 as well. A dump with
//! unparseable lines keeps its flows, but every check of the bridge is `ovs_check_incomplete`
//! 1 (the lines lost were not checked) and the collector fails; at most
//! [`crate::ovs::Limits::parallel_dumps`] bridges are dumped at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::text::TextFamily;
use common::{CollectError, Collector, Sink};
use futures::future::BoxFuture;

use crate::checks::groups::{self, FlowRefs, Groups, Judged};
use crate::checks::{
    evidence_text, BridgeReport, BridgeScan, Evidence, OverlapCache, Ports, PortsSender,
};
use crate::config::Config;
use crate::controller::{Controller, OvnStatus};
use crate::inventory::Inventory;
use crate::ovs::{valid_bridge_name, Ovs};
use crate::parse::line::DEFAULT_PRIORITY;

/// The collector's identity (flag, label, help, default).
pub const FLAG: common::cli::CollectorFlag = common::cli::CollectorFlag {
    name: "flows",
    help: "Dumps every bridge's OpenFlow flows and runs the dirty-flow checks.",
    default_enabled: true,
};

/// The collector.
#[derive(Debug)]
pub struct FlowsCollector {
    ovs: Ovs,
    config: Arc<Config>,
    /// From `--ovs.bridge`; empty means every bridge in the database.
    bridges: Vec<String>,
    evidence_limit: usize,
    /// The bridges the last scrape found in the database: their dumps start while the
    /// database is being read (see [`FlowsCollector::run`]).
    last_bridges: Mutex<Vec<String>>,
    /// Per bridge, the overlap results of the last scrape, reused for unchanged flow groups.
    overlap_cache: Mutex<HashMap<String, OverlapCache>>,
    /// Per bridge, the flow texts last fetched for evidence, by hash ([`Evidence::fetch`]):
    /// while the same flows overlap, they are not fetched again.
    fetched: Mutex<HashMap<String, HashMap<u64, String>>>,
    /// One permit per bridge being dumped ([`crate::ovs::Limits::parallel_dumps`]).
    dump_permits: tokio::sync::Semaphore,
    /// Scrapes on which ovn-controller could not be asked.
    ovn_unreachable: std::sync::atomic::AtomicU64,
}

/// The controller of `bridge`, by the database's answer (`none` when it could not be read).
fn controller(
    ctl: &Result<std::collections::BTreeMap<String, Controller>, crate::error::Error>,
    bridge: &str,
) -> Controller {
    ctl.as_ref()
        .ok()
        .and_then(|c| c.get(bridge).copied())
        .unwrap_or_default()
}

/// A bridge's dump, streamed through the line checks, how long it took, and its groups and
/// meters dumped alongside.
type Dumped<'c> = (Result<BridgeScan<'c>, String>, Duration, Listings);

/// A bridge's `dump-groups` and `dump-meters`.
#[derive(Debug)]
struct Listings {
    groups: Result<Groups, String>,
    meters: Result<HashSet<u32>, String>,
}

impl Listings {
    fn none(why: &str) -> Self {
        Self {
            groups: Err(why.to_string()),
            meters: Err(why.to_string()),
        }
    }
}

/// Candidates (flows naming a group or meter missing from its dump) confirmed per bridge and
/// scrape; more leave their check incomplete.
const MAX_CONFIRMATIONS: usize = 16;

impl FlowsCollector {
    pub fn new(ovs: Ovs, config: Arc<Config>, bridges: Vec<String>, evidence_limit: usize) -> Self {
        // A bridge given twice is dumped and reported once.
        let mut seen = std::collections::HashSet::new();
        let bridges = bridges
            .into_iter()
            .filter(|b| seen.insert(b.clone()))
            .collect();
        let permits = ovs.limits.parallel_dumps.max(1);
        Self {
            dump_permits: tokio::sync::Semaphore::new(permits),
            ovs,
            config,
            bridges,
            evidence_limit,
            last_bridges: Mutex::new(Vec::new()),
            overlap_cache: Mutex::new(HashMap::new()),
            fetched: Mutex::new(HashMap::new()),
            ovn_unreachable: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A bridge's ports as its scan needs them: `reg5` names a port on neutron's bridges, the
    /// scan skips the overlap check's searches where that check is off, and what a paused
    /// packet keeps follows the controller ([`Controller::resume`]).
    fn ports(
        &self,
        ifaces: &[crate::inventory::Interface],
        bridge: &str,
        ctl: Controller,
    ) -> Ports {
        Ports::new(ifaces)
            .with_reg5(ctl == Controller::Neutron)
            .with_overlap(self.config.check_on(bridge, "overlap"))
            .with_resume(ctl.resume())
    }

    /// Streams the bridge's dump through a scan, which checks each table as the dump moves on
    /// (see [`BridgeScan`]); the last table is checked in [`BridgeScan::finish_cached`]. The
    /// scan's first flow waits for the bridge's ports, sent through the returned sender (the
    /// database answers while the dump starts; dropping the sender sends "unknown").
    fn start_dump<'s>(
        &'s self,
        bridge: &'s str,
        cache: OverlapCache,
    ) -> (
        PortsSender,
        impl std::future::Future<Output = Dumped<'static>> + 's,
    ) {
        let (scan, ports) =
            BridgeScan::awaiting_ports(Arc::clone(&self.config), self.evidence_limit);
        // A database that hangs costs missing_port, not the dump.
        let scan = scan.with_cache(cache).with_ports_wait(self.ovs.timeout / 2);
        let dump = async move {
            let start = Instant::now();
            if !valid_bridge_name(bridge) {
                let e = format!("invalid bridge name {bridge:?}");
                return (Err(e.clone()), Duration::ZERO, Listings::none(&e));
            }
            // The semaphore is never closed; without a permit the dump would not be bounded.
            let Ok(_permit) = self.dump_permits.acquire().await else {
                let e = "no dump permit";
                return (Err(e.into()), start.elapsed(), Listings::none(e));
            };
            // Groups and meters alongside the flows, each under the same timeout, spawned one
            // poll after the flows (and after the database readers `run` polls next).
            let (res, groups, meters) = tokio::join!(
                self.ovs.dump_flows(bridge, scan),
                async {
                    tokio::task::yield_now().await;
                    self.ovs.dump_groups(bridge).await
                },
                async {
                    tokio::task::yield_now().await;
                    self.ovs.dump_meters(bridge).await
                }
            );
            let listings = Listings { groups, meters };
            (res.map_err(|e| e.to_string()), start.elapsed(), listings)
        };
        (ports, dump)
    }

    /// Puts the whole flow text in the evidence that has only the match (see
    /// [`Evidence::fetch`]): from the texts fetched last scrape, else with
    /// [`crate::ovs::Ovs::flow_text`], first with the match as the filter, then (a match
    /// `ovs-ofctl` does not take back as a filter) from the whole table's lines. A flow gone
    /// meanwhile (or a failed fetch) keeps the match it overlapped on, with its priority as
    /// OVS prints it (none when it is 32768).
    async fn fetch_evidence(&self, bridge: &str, report: &mut BridgeReport) {
        let known = common::sync::lock(&self.fetched)
            .remove(bridge)
            .unwrap_or_default();
        let wanted: Vec<&mut Evidence> = report
            .checks
            .iter_mut()
            .flat_map(|c| c.evidence.iter_mut())
            .filter(|e| e.fetch.is_some())
            .collect();
        let texts = futures::future::join_all(wanted.iter().map(|e| {
            let hash = e.fetch.unwrap_or_default();
            let cached = known.get(&hash).cloned();
            let prefix = format!("priority={}", e.priority);
            let m = e.flow.strip_prefix(&prefix).unwrap_or("");
            let m = m.strip_prefix(',').unwrap_or(m).to_string();
            let table = e.table.clone();
            async move {
                if let Some(t) = cached {
                    return (hash, Some(t));
                }
                let ovs = &self.ovs;
                let filtered = ovs
                    .flow_text(bridge, &table, e.priority, &m, hash, true)
                    .await;
                let res = match filtered {
                    Err(err) if !m.is_empty() => {
                        tracing::debug!(bridge, error = %err, "the match is no dump-flows filter: fetching the table");
                        ovs.flow_text(bridge, &table, e.priority, &m, hash, false)
                            .await
                    }
                    other => other,
                };
                match res {
                    Ok(t) => (hash, t),
                    Err(err) => {
                        tracing::debug!(bridge, error = %err, "cannot fetch an evidence flow");
                        (hash, None)
                    }
                }
            }
        }))
        .await;
        let mut keep = HashMap::new();
        for (e, (hash, text)) in wanted.into_iter().zip(texts) {
            match text {
                Some(t) => {
                    e.flow = evidence_text(&t);
                    keep.insert(hash, t);
                }
                None if e.priority == DEFAULT_PRIORITY => {
                    // As OVS prints the flow: no `priority=` when it is the default.
                    let shown = format!("priority={DEFAULT_PRIORITY}");
                    let m = e
                        .flow
                        .strip_prefix(&shown)
                        .map(|m| m.trim_start_matches(','));
                    if let Some(m) = m.filter(|m| !m.is_empty()) {
                        e.flow = m.to_string();
                    }
                }
                None => {}
            }
            e.fetch = None;
        }
        common::sync::lock(&self.fetched).insert(bridge.to_string(), keep);
    }

    /// Judges `missing_group`, `group_bucket_missing_port` and `missing_meter` (see
    /// [`crate::checks::groups`]): flows naming a group or meter missing from its dump are
    /// counted only when confirmed after the dumps (the group or meter still absent from a
    /// second dump, the flow still there); otherwise the check is incomplete.
    async fn judge_groups(
        &self,
        bridge: &str,
        refs: &FlowRefs,
        listings: &Listings,
        ports: Option<&Ports>,
    ) -> Judged {
        let limit = self.evidence_limit;
        let mut j = groups::judge(
            refs,
            listings.groups.as_ref().map_err(String::as_str),
            listings.meters.as_ref().map_err(String::as_str),
            ports,
            limit,
        );
        if j.candidates.is_empty() {
            return j;
        }
        let wants = |check| j.candidates.iter().any(|c| c.check == check);
        let (groups_now, meters_now) = tokio::join!(
            async {
                match wants(groups::MISSING_GROUP) {
                    true => self.ovs.dump_groups(bridge).await.ok(),
                    false => None,
                }
            },
            async {
                match wants(groups::MISSING_METER) {
                    true => self.ovs.dump_meters(bridge).await.ok(),
                    false => None,
                }
            }
        );
        let candidates = std::mem::take(&mut j.candidates);
        for (i, c) in candidates.iter().enumerate() {
            let still_missing = match c.check {
                groups::MISSING_GROUP => groups_now.as_ref().map(|g| !g.ids.contains(&c.id)),
                _ => meters_now.as_ref().map(|m| !m.contains(&c.id)),
            };
            let found = match i < MAX_CONFIRMATIONS && still_missing == Some(true) {
                true => self.flow_again(bridge, c).await,
                false => None,
            };
            match found {
                Some(text) => groups::confirm(&mut j, c, &text, limit),
                None => {
                    tracing::warn!(bridge, check = c.check, id = c.id, "a flow named a group or meter missing from its dump, unconfirmed (changed between the dumps)");
                    groups::unconfirmed(&mut j, c);
                }
            }
        }
        j
    }

    /// The candidate's flow if it is still on the bridge: found by its text hash in a dump of
    /// its table.
    async fn flow_again(&self, bridge: &str, c: &groups::Candidate) -> Option<String> {
        let f = &c.flow;
        match self
            .ovs
            .flow_text(bridge, &f.table, f.priority, "", f.hash, false)
            .await
        {
            Ok(found) => found.filter(|t| crate::checks::match_hash(t) == f.hash),
            Err(e) => {
                tracing::debug!(bridge, error = %e, "confirming a flow");
                None
            }
        }
    }

    /// Exports `ovs_bridge_info{bridge,controller}` and applies each bridge's controller to
    /// its report ([`crate::controller::apply`]); on an OVN bridge, asks ovn-controller
    /// whether it is connected (an unreachable socket is logged and counted).
    async fn apply_controllers(
        &self,
        bridges: &[String],
        controllers: &std::collections::BTreeMap<String, Controller>,
        scans: &mut [(Result<BridgeReport, String>, f64)],
        sink: &mut Sink,
    ) {
        let of = |b: &str| controllers.get(b).copied().unwrap_or_default();
        let ovn = if bridges.iter().any(|b| of(b) == Controller::Ovn) {
            let st = self.ovs.ovn_status().await;
            if let OvnStatus::Unreachable(e) = &st {
                tracing::warn!(ovn_rundir = %self.ovs.ovn_rundir.display(), error = %e, "cannot reach ovn-controller's unixctl socket: stale_cookie incomplete on its bridge");
                self.ovn_unreachable
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Some(st)
        } else {
            None
        };
        let mut info = sink.gauge(
            "bridge_info",
            "1 per bridge: the controller that programs it (ovn, neutron or none), read from the OVS database",
        );
        for (b, (report, _)) in bridges.iter().zip(scans.iter_mut()) {
            info.push(
                &[("bridge", b.as_str()), ("controller", of(b).as_str())],
                1i64,
            );
            if let Ok(r) = report {
                crate::controller::apply(r, b, of(b), &self.config, ovn.as_ref());
            }
        }
        sink.push(info);
        sink.counter_value(
            "ovn_controller_unreachable",
            "Scrapes on which ovn-controller's unixctl socket (--ovn.rundir) could not be reached",
            self.ovn_unreachable
                .load(std::sync::atomic::Ordering::Relaxed),
        );
    }

    /// Bridges known before the database answers: the flag's, else the last scrape's.
    fn early_bridges(&self) -> Vec<String> {
        if !self.bridges.is_empty() {
            return self.bridges.clone();
        }
        common::sync::lock(&self.last_bridges).clone()
    }

    /// Per scrape: the database (`ovs-vsctl`) and the dumps of the bridges already known run
    /// concurrently (the dump is the long part; its parser waits for the ports before the
    /// first flow, and the database answers long before ovs-vswitchd has sent much);
    /// bridges the database adds are dumped after it, and dumps of bridges it no longer has
    /// are dropped. The first scrape (bridges unknown) reads the database first.
    ///
    /// Each failure is reported once: in the returned error, which `common::scrape` logs.
    async fn run(&self, sink: &mut Sink) -> Result<(), CollectError> {
        let mut problems: Vec<String> = Vec::new();
        let early = self.early_bridges();
        let mut caches = std::mem::take(&mut *common::sync::lock(&self.overlap_cache));
        let (senders, early_dumps): (Vec<PortsSender>, Vec<_>) = early
            .iter()
            .map(|b| self.start_dump(b, caches.remove(b).unwrap_or_default()))
            .unzip();
        // Spawn order: each bridge's `dump-flows` (the longest call), then the database
        // readers (the dumps wait on their ports), then the group and meter listings.
        let (early_dumps, db) = tokio::join!(
            futures::future::join_all(early_dumps),
            self.read_database(&early, senders)
        );
        let (inventory, controllers) = db.into_parts(&mut problems);
        let bridges = self.bridges_to_report(inventory.as_ref());
        encode_inventory(sink, inventory.as_ref(), &bridges);

        let mut dumps: HashMap<String, Dumped<'_>> = early.into_iter().zip(early_dumps).collect();
        let late: Vec<&String> = bridges.iter().filter(|b| !dumps.contains_key(*b)).collect();
        let late_dumps = futures::future::join_all(late.iter().map(|b| {
            let ctl = controllers.get(*b).copied().unwrap_or_default();
            let ports = inventory
                .as_ref()
                .and_then(|inv| inv.get(*b))
                .map(|i| self.ports(i, b, ctl));
            let (tx, dump) = self.start_dump(b, caches.remove(*b).unwrap_or_default());
            tx.send(ports);
            dump
        }))
        .await;
        dumps.extend(late.into_iter().cloned().zip(late_dumps));

        let (mut scans, listings) = self.finish_scans(&bridges, dumps);
        // Before the evidence is fetched: checks off for a bridge need none.
        self.apply_controllers(&bridges, &controllers, &mut scans, sink)
            .await;
        let unknown = self
            .judge(&bridges, &mut scans, &listings, inventory.as_ref())
            .await;
        let mut families = BridgeFamilies::new(sink);
        for ((bridge, (res, secs)), unknown) in bridges.iter().zip(scans).zip(unknown) {
            let in_db = inventory.as_ref().map(|inv| inv.contains_key(bridge));
            families.encode(bridge, res, secs, unknown, in_db, &mut problems);
        }
        families.push_to(sink);

        if problems.is_empty() {
            Ok(())
        } else {
            Err(CollectError::new(problems.join("; ")))
        }
    }

    /// Reads the port inventory and the bridges' controllers, and sends each early dump its
    /// ports as soon as they are known.
    async fn read_database(&self, early: &[String], senders: Vec<PortsSender>) -> Database {
        let (inventory, controllers) = tokio::join!(self.ovs.inventory(), self.ovs.controllers());
        for (b, tx) in early.iter().zip(&senders) {
            tx.send(
                inventory
                    .as_ref()
                    .ok()
                    .and_then(|i| i.get(b))
                    .map(|i| self.ports(i, b, controller(&controllers, b))),
            );
        }
        Database {
            inventory,
            controllers,
        }
    }

    /// The bridges this scrape reports: the flag's, else the database's (remembered for the
    /// next scrape's early dumps).
    fn bridges_to_report(&self, inventory: Option<&Inventory>) -> Vec<String> {
        if !self.bridges.is_empty() {
            return self.bridges.clone();
        }
        let found: Vec<String> = inventory
            .map(|i| i.keys().cloned().collect())
            .unwrap_or_default();
        common::sync::lock(&self.last_bridges).clone_from(&found);
        found
    }

    /// Runs each bridge's last table through the checks and keeps its overlap cache for the
    /// next scrape (caches of bridges gone or failed are dropped). Returns, per bridge in
    /// order, its report (or why there is none) with the seconds it took, and its listings.
    fn finish_scans(
        &self,
        bridges: &[String],
        mut dumps: HashMap<String, Dumped<'_>>,
    ) -> (Vec<Scanned>, Vec<Listings>) {
        let mut kept = HashMap::new();
        let mut listings = Vec::with_capacity(bridges.len());
        let scans = bridges
            .iter()
            .map(|b| {
                let (scan, dumped, listed) = dumps.remove(b).unwrap_or_else(|| {
                    let e = "not dumped";
                    (Err(e.into()), Duration::ZERO, Listings::none(e))
                });
                listings.push(listed);
                let start = Instant::now();
                let report = scan.map(|scan| {
                    let peak = scan.peak_store_bytes();
                    let (report, cache) = scan.finish_cached();
                    tracing::debug!(
                        bridge = %b,
                        dump_seconds = dumped.as_secs_f64(),
                        last_table_seconds = start.elapsed().as_secs_f64(),
                        overlap_groups_checked = cache.checked,
                        overlap_groups_reused = cache.reused,
                        largest_table_store_bytes = peak,
                        "bridge scanned"
                    );
                    kept.insert(b.clone(), cache);
                    report
                });
                (report, (dumped + start.elapsed()).as_secs_f64())
            })
            .collect();
        *common::sync::lock(&self.overlap_cache) = kept;
        (scans, listings)
    }

    /// Fetches the evidence of each report's findings and judges its groups and meters.
    /// Returns, per bridge, the checks it could not decide, with why.
    async fn judge(
        &self,
        bridges: &[String],
        scans: &mut [Scanned],
        listings: &[Listings],
        inventory: Option<&Inventory>,
    ) -> Vec<Undecided> {
        let mut unknown = Vec::with_capacity(bridges.len());
        for ((b, (report, _)), listed) in bridges.iter().zip(scans.iter_mut()).zip(listings) {
            let mut u = Vec::new();
            if let Ok(r) = report {
                self.fetch_evidence(b, r).await;
                let ports = inventory.and_then(|inv| inv.get(b)).map(|i| Ports::new(i));
                let judged = self.judge_groups(b, &r.refs, listed, ports.as_ref()).await;
                r.checks.extend(judged.checks);
                u = judged.unknown;
            }
            unknown.push(u);
        }
        // The texts fetched for bridges gone are dropped.
        common::sync::lock(&self.fetched).retain(|b, _| bridges.contains(b));
        unknown
    }
}

/// A bridge's report (or why there is none) and the seconds its dump and checks took.
type Scanned = (Result<BridgeReport, String>, f64);

/// The checks a bridge's scrape could not decide, with why.
type Undecided = Vec<(&'static str, String)>;

/// The database's two answers of a scrape.
struct Database {
    inventory: Result<Inventory, crate::error::Error>,
    controllers: Result<std::collections::BTreeMap<String, Controller>, crate::error::Error>,
}

impl Database {
    /// What the scrape uses of the answers: the inventory (None when unreadable) and the
    /// controllers (none known when unreadable); each failure goes to `problems`.
    fn into_parts(
        self,
        problems: &mut Vec<String>,
    ) -> (
        Option<Inventory>,
        std::collections::BTreeMap<String, Controller>,
    ) {
        let controllers = self.controllers.unwrap_or_else(|e| {
            problems.push(format!("database (controllers): {e}"));
            Default::default()
        });
        let inventory = self
            .inventory
            .map_err(|e| problems.push(format!("database: {e}")))
            .ok();
        (inventory, controllers)
    }
}

/// `ovs_database_up` and, per reported bridge, its interfaces as the database lists them.
fn encode_inventory(sink: &mut Sink, inventory: Option<&Inventory>, bridges: &[String]) {
    sink.gauge_value(
        "database_up",
        "Whether the OVS database could be read (ovs-vsctl)",
        i64::from(inventory.is_some()),
    );
    let mut interfaces = sink.gauge("interfaces", "Interfaces of the bridge in the OVS database");
    let mut failed = sink.gauge(
        "failed_interfaces",
        "Interfaces of the bridge that ovs-vswitchd could not open (ofport -1 or error set)",
    );
    let mut failed_info = sink.gauge("failed_interface_info", "A failed interface and its error");
    let mut iface_info = sink.gauge(
        "interface_info",
        "An interface of the bridge: OpenFlow port, type, neutron port (iface-id) and VM MAC",
    );
    for b in bridges {
        let Some(ifaces) = inventory.and_then(|inv| inv.get(b)) else {
            continue;
        };
        let bl = [("bridge", b.as_str())];
        interfaces.push(&bl, ifaces.len() as i64);
        for i in ifaces {
            let ofport = i.ofport.map(|p| p.to_string()).unwrap_or_default();
            iface_info.push(
                &[
                    ("bridge", b.as_str()),
                    ("interface", &i.name),
                    ("ofport", &ofport),
                    ("type", &i.kind),
                    ("iface_id", i.iface_id.as_deref().unwrap_or_default()),
                    (
                        "attached_mac",
                        i.attached_mac.as_deref().unwrap_or_default(),
                    ),
                ],
                1i64,
            );
        }
        let bad: Vec<_> = ifaces.iter().filter(|i| i.failed()).collect();
        failed.push(&bl, bad.len() as i64);
        for i in bad {
            failed_info.push(
                &[
                    ("bridge", b.as_str()),
                    ("interface", &i.name),
                    ("type", &i.kind),
                    ("error", &failure_text(i.error.as_deref())),
                ],
                1i64,
            );
        }
    }
    for f in [interfaces, failed, failed_info, iface_info] {
        sink.push(f);
    }
}

/// A failed interface's error as a label: at most 200 characters, `ofport -1` when OVS gave none.
fn failure_text(error: Option<&str>) -> String {
    let err: String = error.unwrap_or_default().chars().take(200).collect();
    if err.is_empty() {
        "ofport -1".into()
    } else {
        err
    }
}

/// The per-bridge families of a scrape, filled bridge by bridge.
struct BridgeFamilies {
    success: TextFamily,
    duration: TextFamily,
    flows: TextFamily,
    parse_errors: TextFamily,
    dirty: TextFamily,
    incomplete: TextFamily,
    evidence: TextFamily,
}

impl BridgeFamilies {
    fn new(sink: &Sink) -> Self {
        Self {
            success: sink.gauge(
                "dump_success",
                "Whether the last ovs-ofctl dump-flows of the bridge succeeded",
            ),
            duration: sink.gauge(
                "dump_duration_seconds",
                "Time taken to dump and check the bridge's flows",
            ),
            flows: sink.gauge("flows", "Flows per bridge and table in the last dump"),
            parse_errors: sink.gauge(
                "flow_parse_errors",
                "Lines of the last dump that could not be parsed",
            ),
            dirty: sink.gauge(
                "dirty_flows",
                "Flows that a check flags as dirty, per bridge and check",
            ),
            incomplete: sink.gauge(
                "check_incomplete",
                "Whether a check did not see every flow or compare every pair it should (unparseable dump lines, comparison budget, or a table dumped in two runs)",
            ),
            evidence: sink.gauge(
                "dirty_flow_info",
                "An offending flow (at most --checks.evidence-limit per bridge and check)",
            ),
        }
    }

    /// One bridge's series; `in_db`: whether the database lists it (None: database down).
    fn encode(
        &mut self,
        bridge: &str,
        res: Result<BridgeReport, String>,
        secs: f64,
        unknown: Undecided,
        in_db: Option<bool>,
        problems: &mut Vec<String>,
    ) {
        let bl = [("bridge", bridge)];
        self.duration.push(&bl, secs);
        let report = match res {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("bridge {bridge}: {e}"));
                self.success.push(&bl, 0i64);
                return;
            }
        };
        self.success.push(&bl, 1i64);
        self.parse_errors.push(&bl, report.parse_errors as i64);
        if report.parse_errors > 0 {
            problems.push(format!(
                "bridge {bridge}: {} unparseable dump-flows lines: every check incomplete",
                report.parse_errors
            ));
        }
        for (table, n) in &report.tables {
            self.flows
                .push(&[("bridge", bridge), ("table", table)], *n as i64);
        }
        fn check_labels<'a>(bridge: &'a str, check: &'a str) -> [(&'static str, &'a str); 2] {
            [("bridge", bridge), ("check", check)]
        }
        if in_db == Some(false) {
            tracing::warn!(
                bridge,
                "bridge not in the OVS database: missing_port skipped"
            );
        } else if in_db == Some(true) && !report.checks.iter().any(|c| c.name == "missing_port") {
            // The database answered, but after the dump's parser stopped waiting for the
            // ports: missing_port is unknown for this dump, which must not look like a
            // successful scrape.
            problems.push(format!("bridge {bridge}: the OVS database answered after the dump stopped waiting for the ports (half of --ovs.timeout): missing_port skipped"));
            self.incomplete
                .push(&check_labels(bridge, "missing_port"), 1i64);
        }
        for (check, why) in unknown {
            problems.push(format!("bridge {bridge}: {check} undecided: {why}"));
            self.incomplete.push(&check_labels(bridge, check), 1i64);
        }
        for c in &report.checks {
            let cl = check_labels(bridge, &c.name);
            self.dirty.push(&cl, c.dirty as i64);
            // The flows of unparseable lines were not checked.
            let partial = c.incomplete || report.parse_errors > 0;
            self.incomplete.push(&cl, i64::from(partial));
            if c.incomplete {
                tracing::warn!(bridge, check = %c.name, "check incomplete (comparison budget, or a table dumped in two runs)");
            }
            for e in &c.evidence {
                self.evidence.push(
                    &[
                        ("bridge", bridge),
                        ("check", &c.name),
                        ("table", &e.table),
                        ("priority", &e.priority.to_string()),
                        ("cookie", &format!("{:#x}", e.cookie)),
                        ("flow", &e.flow),
                    ],
                    1i64,
                );
            }
        }
    }

    fn push_to(self, sink: &mut Sink) {
        for f in [
            self.success,
            self.duration,
            self.flows,
            self.parse_errors,
            self.dirty,
            self.incomplete,
            self.evidence,
        ] {
            sink.push(f);
        }
    }
}

impl Collector for FlowsCollector {
    fn name(&self) -> &'static str {
        FLAG.name
    }

    fn collect<'a>(&'a self, sink: &'a mut Sink) -> BoxFuture<'a, Result<(), CollectError>> {
        Box::pin(self.run(sink))
    }
}
