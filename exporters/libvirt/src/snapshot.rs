//! One scrape's gathering: every libvirt call a scrape makes, into owned data.
//!
//! Per scrape: node info and the bulk stats of all domains (`virConnectGetAllDomainStats` with
//! `NOWAIT`, so a domain busy in a migration job returns what it can without waiting for the
//! job), then per domain, on `concurrency` worker threads ([`Libvirt::pool`]): its XML when due,
//! libvirt's pin info for running domains that declare pinning, and `virDomainGetVcpus` when its
//! check is due (see `VcpuCheck`; the last answer is reused in between). A running domain whose bulk
//! record lacks a stat group the exporter exports (drivers other than QEMU, such as the test
//! driver) gets that group from per-domain calls ([`crate::stats_fallback`]) in a second round.
//! A domain whose calls fail or time out is marked and kept; only a failure of the
//! connection-level calls fails the scrape. A domain's XML is fetched when the domain is new,
//! when a libvirt event said it changed, after a reconnect, every `xml_refresh` as a safety net,
//! and on every scrape when the connection delivers no events; it is parsed only when its text
//! changed.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

use crate::capabilities::NumaTopology;
use crate::connection::Libvirt;
use crate::cpuset::CpuSet;
use crate::domain_xml::{parse_domain_xml, DomainXml};
use crate::error::Error;
use crate::ffi::{self, TypedValue, VcpuInfo};
use crate::metrics::FxBuild;
use crate::procfs;
use crate::stats_fallback::{self, Missing};

/// The stat groups asked for in bulk.
pub const STATS_GROUPS: u32 = sys::VIR_DOMAIN_STATS_STATE
    | sys::VIR_DOMAIN_STATS_CPU_TOTAL
    | sys::VIR_DOMAIN_STATS_BALLOON
    | sys::VIR_DOMAIN_STATS_VCPU
    | sys::VIR_DOMAIN_STATS_INTERFACE
    | sys::VIR_DOMAIN_STATS_BLOCK;

/// `virDomainState` values.
pub const STATE_NAMES: &[(i32, &str, &str)] = &[
    (0, "nostate", "no state"),
    (1, "running", "the domain is running"),
    (2, "blocked", "the domain is blocked on resource"),
    (3, "paused", "the domain is paused by user"),
    (4, "shutdown", "the domain is being shut down"),
    (5, "shutoff", "the domain is shut off"),
    (6, "crashed", "the domain is crashed"),
    (
        7,
        "pmsuspended",
        "the domain is suspended by guest power management",
    ),
];

/// One domain's stats by libvirt's names.
pub type Stats = HashMap<String, TypedValue, FxBuild>;

/// Host facts from `virNodeGetInfo`.
#[derive(Debug, Clone, Default)]
pub struct HostInfo {
    pub model: String,
    pub memory_bytes: u64,
    pub cpus: u32,
    pub mhz: u32,
    pub nodes: u32,
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
    /// NUMA cells from the capabilities XML (`None`: not reported or not read).
    pub numa: Option<Arc<NumaTopology>>,
}

/// Everything gathered about one domain.
#[derive(Debug, Clone, Default)]
pub struct DomainSnap {
    pub name: String,
    pub uuid: String,
    /// `virDomainState`.
    pub state: i32,
    /// Bulk stats, as libvirt named them (`balloon.current`, `block.0.rd.bytes`...).
    pub stats: Stats,
    pub xml: Option<Arc<DomainXml>>,
    /// libvirt's pin info per vCPU (live for running domains).
    pub pin_info: Option<Vec<CpuSet>>,
    /// `virDomainGetVcpus` (running domains only): of this scrape when `vcpus_fresh`, else as
    /// of the last check.
    pub vcpus: Option<Vec<VcpuInfo>>,
    /// Whether `vcpus` was fetched on this scrape.
    pub vcpus_fresh: bool,
    /// Kernel affinity of the QEMU vCPU threads, when the process is visible in procfs.
    pub proc_affinity: Option<HashMap<u32, CpuSet>>,
    pub timed_out: bool,
    /// Calls that failed (not timeouts), e.g. "xml".
    pub errors: Vec<&'static str>,
}

impl DomainSnap {
    /// Whether the domain holds host resources (anything but shut off / no state).
    pub fn is_active(&self) -> bool {
        !matches!(self.state, 0 | 5)
    }

    /// A numeric bulk stat.
    pub fn stat(&self, key: &str) -> Option<f64> {
        self.stats.get(key).and_then(TypedValue::as_f64)
    }
}

/// One scrape's data.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub host: HostInfo,
    pub domains: Vec<DomainSnap>,
}

struct Cached {
    hash: u64,
    parsed: Arc<DomainXml>,
}

/// The last `virDomainGetVcpus` answer of a running domain (the kernel's vCPU affinity, as
/// libvirt reads it). The call is repeated when due: every `--libvirt.vcpuinfo-interval`, at
/// once for a new or changed domain (its XML was fetched), when libvirt's pin info changed
/// since the last check, and on every scrape while a mismatch is shown (so its end is seen).
#[derive(Debug, Clone)]
struct VcpuCheck {
    due: Instant,
    /// libvirt's pin info as last seen.
    pins: Option<Vec<CpuSet>>,
    vcpus: Vec<VcpuInfo>,
    /// Whether `vcpus` disagreed with the declared pinning.
    mismatch: bool,
}

/// Whether any vCPU's live affinity (per `virDomainGetVcpus`) differs from its declaration.
pub fn vcpuinfo_mismatch(x: &DomainXml, vcpus: &[VcpuInfo]) -> bool {
    vcpus.iter().any(|v| {
        x.vcpu_affinity(v.number)
            .is_some_and(|declared| *declared != v.affinity)
    })
}

/// Long-lived gathering state: the XML parse cache and its counters.
pub struct Gatherer {
    pub libvirt: Arc<Libvirt>,
    pub concurrency: usize,
    pub procfs: Option<PathBuf>,
    /// Whether a scan of procfs for QEMU processes is still running (a read the kernel blocks):
    /// no second one is started beside it.
    procfs_scanning: Arc<std::sync::atomic::AtomicBool>,
    cache: Mutex<HashMap<String, Cached, FxBuild>>,
    /// XML documents parsed (new or changed domains).
    pub xml_parses: AtomicU64,
    /// Domain XMLs that could not be parsed at all.
    pub xml_errors: AtomicU64,
    /// Parsed XMLs whose nova metadata was malformed.
    pub nova_errors: AtomicU64,
    /// Domain XMLs fetched.
    pub xml_fetches: AtomicU64,
    /// Fetch every XML at least this often, events or not.
    xml_refresh: Duration,
    /// (connection opens, time) of the last scrape that fetched every XML.
    last_full: Mutex<(u64, Option<Instant>)>,
    /// Fill stat groups missing from the bulk stats with per-domain calls.
    stats_fallback: bool,
    /// Whether per-vCPU state and time missing from the bulk stats are fetched
    /// (`--domain.vcpu-detail`: only then are they exported).
    vcpu_fallback: bool,
    /// Groups filled that way, per [`stats_fallback::GROUPS`].
    pub fallbacks: [AtomicU64; 5],
    /// How often a running domain's `virDomainGetVcpus` is repeated (zero: every scrape).
    vcpuinfo_interval: Duration,
    vcpu_checks: Mutex<HashMap<String, VcpuCheck, FxBuild>>,
    /// How often a running domain's pin info is asked for while its XML is cached (zero:
    /// every scrape).
    pininfo_interval: Duration,
    pin_checks: Mutex<HashMap<String, PinCheck, FxBuild>>,
    /// The NUMA topology read on connection number `.0` (read once per connection).
    numa: Mutex<Option<(u64, Option<Arc<NumaTopology>>)>>,
}

/// The last `virDomainGetVcpuPinInfo` answer of a running domain. libvirt's pin info is its
/// own bookkeeping: it changes only through libvirt (a live re-pin, which sends a tunable
/// event; a start, restart or migration, which send lifecycle events), and each of those makes
/// the domain's XML be fetched again, which asks for the pin info on the same scrape. While the
/// XML is cached, the answer is reused and asked for again every `--libvirt.pininfo-interval`
/// (a share of it the first time, so domains found together are not all due together), and on
/// every scrape while it disagrees with the declaration (so the end of a mismatch is seen).
#[derive(Debug, Clone)]
struct PinCheck {
    due: Instant,
    pins: Vec<CpuSet>,
    mismatch: bool,
}

/// How long until a domain's check is due again: `interval`, or for a domain checked the first
/// time a share of it derived from its UUID (never zero), so that domains found together (the
/// first scrape) are not all due on the same scrape.
fn next_wait(interval: Duration, uuid: &str, first: bool) -> Duration {
    if first {
        interval.mul_f64(((hash_of(uuid) % 1000) + 1) as f64 / 1000.0)
    } else {
        interval
    }
}

/// Whether libvirt's pin info disagrees with the declared pinning of any vCPU.
fn pininfo_mismatch(x: &DomainXml, pins: &[CpuSet]) -> bool {
    pins.iter().enumerate().any(|(v, live)| {
        u32::try_from(v)
            .ok()
            .and_then(|v| x.vcpu_affinity(v))
            .is_some_and(|declared| declared != live)
    })
}

impl std::fmt::Debug for Gatherer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gatherer").finish_non_exhaustive()
    }
}

fn hash_of(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Host info, one call.
pub async fn host_info(libvirt: &Libvirt, conn: &Arc<Connect>) -> Result<HostInfo, Error> {
    libvirt
        .with_conn(conn, "node_info", |c| {
            let n = c.node_info()?;
            Ok(HostInfo {
                model: n.model,
                memory_bytes: n.memory.saturating_mul(1024),
                cpus: n.cpus,
                mhz: n.mhz,
                nodes: n.nodes,
                sockets: n.sockets,
                cores: n.cores,
                threads: n.threads,
                numa: None,
            })
        })
        .await
}

/// A domain from the bulk call, before its own calls.
struct Listed {
    domain: Domain,
    snap: DomainSnap,
}

impl Listed {
    fn new(r: ffi::StatsRecord) -> Self {
        let stats: Stats = r.params.into_iter().collect();
        let state = stats
            .get("state.state")
            .and_then(TypedValue::as_f64)
            .map(|v| v as i32)
            .unwrap_or(0);
        let snap = DomainSnap {
            name: r.domain.name().unwrap_or_default(),
            uuid: r.domain.uuid_string().unwrap_or_default(),
            state,
            stats,
            ..DomainSnap::default()
        };
        Self {
            domain: r.domain,
            snap,
        }
    }
}

impl Gatherer {
    pub fn new(
        libvirt: Arc<Libvirt>,
        concurrency: usize,
        procfs: Option<PathBuf>,
        xml_refresh: Duration,
        stats_fallback: bool,
        vcpuinfo_interval: Duration,
        pininfo_interval: Duration,
    ) -> Self {
        Self {
            vcpuinfo_interval,
            vcpu_checks: Mutex::new(HashMap::default()),
            pininfo_interval,
            pin_checks: Mutex::new(HashMap::default()),
            numa: Mutex::new(None),
            stats_fallback,
            vcpu_fallback: true,
            fallbacks: Default::default(),
            xml_fetches: AtomicU64::new(0),
            xml_refresh,
            last_full: Mutex::new((0, None)),
            libvirt,
            concurrency: concurrency.max(1),
            procfs,
            procfs_scanning: Arc::default(),
            cache: Mutex::new(HashMap::default()),
            xml_parses: AtomicU64::new(0),
            xml_errors: AtomicU64::new(0),
            nova_errors: AtomicU64::new(0),
        }
    }

    /// Whether per-vCPU state and time missing from the bulk stats are fetched with
    /// `virDomainGetVcpus` on every scrape (on by default; off when they are not exported).
    pub fn with_vcpu_fallback(mut self, on: bool) -> Self {
        self.vcpu_fallback = on;
        self
    }

    /// Parses `xml` unless the cached parse of this domain is of the same text.
    fn parse_cached(&self, uuid: &str, xml: &str) -> Result<Arc<DomainXml>, Error> {
        let hash = hash_of(xml);
        {
            let cache = common::sync::lock(&self.cache);
            if let Some(c) = cache.get(uuid).filter(|c| c.hash == hash) {
                return Ok(Arc::clone(&c.parsed));
            }
        }
        self.xml_parses.fetch_add(1, Ordering::Relaxed);
        let parsed = match parse_domain_xml(xml) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                self.xml_errors.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if let Some(e) = parsed.nova_problem() {
            self.nova_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(domain = %parsed.name, error = %e, "malformed nova metadata");
        }
        common::sync::lock(&self.cache).insert(
            uuid.to_string(),
            Cached {
                hash,
                parsed: Arc::clone(&parsed),
            },
        );
        Ok(parsed)
    }

    /// QEMU processes by guest name under `root`, on the blocking pool under the call timeout,
    /// one scan at a time: the kernel blocks a read of a process's `cmdline` while its memory
    /// map is locked, and every scrape starting a scan beside a stuck one would leave a thread
    /// behind (and count it against the calls that may be stuck before libvirt calls are
    /// refused). While one is stuck, no QEMU process is looked up.
    async fn find_qemu_processes(&self, root: &std::path::Path) -> HashMap<String, u32> {
        if self.procfs_scanning.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "the last scan of procfs for QEMU processes has not returned; not scanned again"
            );
            return HashMap::new();
        }
        let (root, scanning) = (root.to_path_buf(), Arc::clone(&self.procfs_scanning));
        let scan = tokio::task::spawn_blocking(move || {
            let out = procfs::find_qemu_processes(&root);
            scanning.store(false, Ordering::Release);
            out
        });
        match tokio::time::timeout(self.libvirt.timeout(), scan).await {
            Ok(Ok(found)) => found,
            _ => {
                tracing::warn!("the scan of procfs for QEMU processes did not return in time");
                self.libvirt.count_timeout("procfs");
                HashMap::new()
            }
        }
    }

    /// Gathers one scrape. `Err` only when the connection-level calls fail.
    #[cfg(test)]
    pub async fn gather(&self, conn: &Arc<Connect>) -> Result<Snapshot, Error> {
        self.gather_overlapped(conn, |_, _| {}).await
    }

    /// [`Gatherer::gather`], calling `early` while the per-domain calls run with the host's CPU
    /// count and the domains that are already complete before them: those whose XML is
    /// cached and whose bulk stats need no per-domain stats calls. Their snapshot lacks only the
    /// answers of the per-domain calls (pin info, vCPU info, procfs, errors, timeouts); their
    /// XML is the one the final snapshot will carry. The caller builds their metrics there, on
    /// the core that would otherwise wait for libvirt.
    pub async fn gather_overlapped<F>(
        &self,
        conn: &Arc<Connect>,
        early: F,
    ) -> Result<Snapshot, Error>
    where
        F: FnOnce(u32, &[(&DomainSnap, &Arc<DomainXml>)]) + Send,
    {
        let started = Instant::now();
        let mut host = host_info(&self.libvirt, conn).await?;
        host.numa = self.numa_topology(conn).await;
        let host_done = started.elapsed();
        let listed = self.bulk_stats(conn).await?;
        let qemu = Arc::new(self.qemu_processes(&listed).await);
        let (full, changed, cached) = self.cached_xml(conn, &listed);
        let bulk_done = started.elapsed();
        let (cpus, ncpus) = (host.cpus, host.cpus.max(1));
        let mut domains = self
            .per_domain(listed, ncpus, &qemu, &cached, |done| early(cpus, done))
            .await;
        domains.sort_by(|a, b| a.name.cmp(&b.name));
        tracing::debug!(
            domains = domains.len(),
            full_xml_refresh = full,
            changed,
            node_info_seconds = host_done.as_secs_f64(),
            bulk_seconds = bulk_done.as_secs_f64(),
            per_domain_seconds = (started.elapsed() - bulk_done).as_secs_f64(),
            "gathered"
        );
        self.forget_gone(&domains);
        Ok(Snapshot { host, domains })
    }

    /// Every domain with its bulk stats (`virConnectGetAllDomainStats` with `NOWAIT`).
    async fn bulk_stats(&self, conn: &Arc<Connect>) -> Result<Vec<Listed>, Error> {
        self.libvirt
            .with_conn(conn, "all_domain_stats", |c| {
                let records = ffi::all_domain_stats(
                    c,
                    STATS_GROUPS,
                    sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
                )?;
                Ok(records.into_iter().map(Listed::new).collect())
            })
            .await
    }

    /// QEMU processes by guest name, when procfs is read and some domain is active.
    async fn qemu_processes(&self, listed: &[Listed]) -> HashMap<String, u32> {
        match &self.procfs {
            Some(root) if listed.iter().any(|l| l.snap.is_active()) => {
                self.find_qemu_processes(root).await
            }
            _ => HashMap::new(),
        }
    }

    /// Which XMLs are fetched this scrape: all (no events, a new connection, or
    /// `xml_refresh` passed), or the changed and new ones. Returns whether all are, how many
    /// domains changed, and the cached parse of every domain whose XML is not fetched.
    fn cached_xml(
        &self,
        conn: &Arc<Connect>,
        listed: &[Listed],
    ) -> (bool, usize, HashMap<String, Arc<DomainXml>>) {
        let changes = self.libvirt.take_changes(conn);
        let full = changes.is_none() || {
            let mut last = common::sync::lock(&self.last_full);
            let opens = self.libvirt.opens();
            let due = last.0 != opens || last.1.is_none_or(|t| t.elapsed() >= self.xml_refresh);
            if due {
                *last = (opens, Some(Instant::now()));
            }
            due
        };
        let changed = changes.unwrap_or_default();
        let cache = common::sync::lock(&self.cache);
        let cached = listed
            .iter()
            .filter(|l| !full && !changed.contains(&l.snap.uuid))
            .filter_map(|l| {
                cache
                    .get(&l.snap.uuid)
                    .map(|c| (l.snap.uuid.clone(), Arc::clone(&c.parsed)))
            })
            .collect();
        (full, changed.len(), cached)
    }

    /// Forgets the parses and checks of domains that are gone.
    fn forget_gone(&self, domains: &[DomainSnap]) {
        let seen: HashSet<&str> = domains.iter().map(|d| d.uuid.as_str()).collect();
        common::sync::lock(&self.cache).retain(|k, _| seen.contains(k.as_str()));
        common::sync::lock(&self.vcpu_checks).retain(|k, _| seen.contains(k.as_str()));
        common::sync::lock(&self.pin_checks).retain(|k, _| seen.contains(k.as_str()));
    }

    /// The host's NUMA topology, read from the capabilities XML once per connection; a failed
    /// read (counted as a call error) is tried again on the next scrape.
    async fn numa_topology(&self, conn: &Arc<Connect>) -> Option<Arc<NumaTopology>> {
        let opens = self.libvirt.opens();
        {
            let cached = common::sync::lock(&self.numa);
            if let Some((_, topo)) = cached.as_ref().filter(|(at, _)| *at == opens) {
                return topo.clone();
            }
        }
        let xml = match self
            .libvirt
            .with_conn(conn, "capabilities", |c| c.capabilities())
            .await
        {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the host's NUMA topology");
                return None;
            }
        };
        let topo = match crate::capabilities::parse_numa_topology(&xml) {
            Ok(t) => t.map(Arc::new),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the host's NUMA topology from the capabilities");
                None
            }
        };
        *common::sync::lock(&self.numa) = Some((opens, topo.clone()));
        topo
    }

    /// Every domain's own calls, `concurrency` domains at a time (see [`Libvirt::pool`]): its
    /// XML when due, pin info and `virDomainGetVcpus` when
    /// needed, procfs; then, for running domains whose bulk stats lack groups, the per-domain
    /// stats calls.
    async fn per_domain<F>(
        &self,
        listed: Vec<Listed>,
        ncpus: u32,
        qemu: &Arc<HashMap<String, u32>>,
        cached: &HashMap<String, Arc<DomainXml>>,
        early: F,
    ) -> Vec<DomainSnap>
    where
        F: FnOnce(&[(&DomainSnap, &Arc<DomainXml>)]) + Send,
    {
        let now = Instant::now();
        let (pending, jobs): (Vec<Pending>, Vec<DomainJob>) = listed
            .into_iter()
            .map(|l| self.plan(l, qemu, cached, now))
            .unzip();
        let procfs_root = self.procfs.clone();
        let (prepared, calls_started) = (now.elapsed(), Instant::now());
        let calls = self
            .libvirt
            .pool("domain", jobs, self.concurrency, move |job| {
                domain_calls(job, ncpus, procfs_root.as_deref())
            });
        // `join` polls `calls` first, which starts the workers; `early` then runs here while
        // they wait for libvirt.
        let done: Vec<(&DomainSnap, &Arc<DomainXml>)> = pending
            .iter()
            .filter(|p| p.fallback.is_none())
            .filter_map(|p| p.reuse.as_ref().map(|x| (&p.snap, x)))
            .collect();
        let (answers, ()) = futures::future::join(calls, async { early(&done) }).await;
        drop(done);
        tracing::debug!(
            prepare_seconds = prepared.as_secs_f64(),
            calls_seconds = calls_started.elapsed().as_secs_f64(),
            "per-domain calls"
        );

        let mut snaps = Vec::with_capacity(pending.len());
        let mut fill = Vec::new();
        for (p, answer) in pending.into_iter().zip(answers) {
            let (snap, job) = self.take_answers(p, answer, now);
            if let Some(job) = job {
                fill.push((snaps.len(), job));
            }
            snaps.push(snap);
        }
        self.fill_missing(&mut snaps, fill).await;
        snaps
    }

    /// One domain's calls, and what its snapshot needs kept until their answers are in.
    fn plan(
        &self,
        Listed { domain, snap }: Listed,
        qemu: &HashMap<String, u32>,
        cached: &HashMap<String, Arc<DomainXml>>,
        now: Instant,
    ) -> (Pending, DomainJob) {
        let reuse = cached.get(&snap.uuid).cloned();
        let active = snap.is_active();
        let missing = Missing::of(&snap.stats);
        let fallback =
            (self.stats_fallback && active && missing.needs_calls()).then(|| domain.clone());
        if reuse.is_none() {
            self.xml_fetches.fetch_add(1, Ordering::Relaxed);
        }
        // Live affinity only matters for running domains that declare some (an XML not known
        // yet may); the kernel's view via virDomainGetVcpus is asked for when due (see
        // `VcpuCheck`), or every scrape when it stands in for the bulk vcpu group.
        let declares = reuse.as_ref().is_none_or(|x| x.declares_affinity());
        let prev = self.vcpu_check(&snap.uuid);
        // libvirt's pin info: with the XML (new or changed domain), when due, while shown
        // mismatched; otherwise the last answer stands (see `PinCheck`).
        let pin_prev = self.pin_check(&snap.uuid);
        let pins_due = reuse.is_none()
            || self.pininfo_interval.is_zero()
            || pin_prev.as_ref().is_none_or(|p| p.mismatch || now >= p.due);
        let vcpus_due = active
            && ((self.stats_fallback && self.vcpu_fallback && missing.vcpu)
                || (declares
                    && (reuse.is_none()
                        || prev.as_ref().is_none_or(|p| p.mismatch || now >= p.due))));
        let job = DomainJob {
            domain,
            known_vcpus: reuse.as_ref().map(|x| x.vcpus),
            want_pins: active && declares && pins_due,
            vcpus_due,
            prev_pins: prev.as_ref().and_then(|p| p.pins.clone()),
            qemu_pid: qemu.get(&snap.name).copied().filter(|_| active),
        };
        let pending = Pending {
            snap,
            reuse,
            prev,
            pin_prev: pin_prev.filter(|_| active && declares && !pins_due),
            missing,
            fallback,
        };
        (pending, job)
    }

    /// A domain's snapshot with the answers of its calls taken in, and the per-domain stats
    /// calls it still needs (none when its calls timed out).
    fn take_answers(
        &self,
        p: Pending,
        answer: Result<DomainAnswer, Error>,
        now: Instant,
    ) -> (DomainSnap, Option<FillJob>) {
        let Pending {
            mut snap,
            reuse,
            prev,
            pin_prev,
            missing,
            fallback,
        } = p;
        // Pin info not asked for this time: the last answer stands.
        snap.pin_info = pin_prev.map(|p| p.pins);
        self.apply_domain_calls(&mut snap, reuse, prev, missing, answer, now);
        let Some(domain) = fallback.filter(|_| !snap.timed_out) else {
            return (snap, None);
        };
        let missing = Missing {
            // Without the XML the devices are unknown: left out rather than claimed 0.
            block: missing.block && snap.xml.is_some(),
            interface: missing.interface && snap.xml.is_some(),
            // Per-vCPU stats come from virDomainGetVcpus, made above.
            vcpu: false,
            ..missing
        };
        if !missing.needs_calls() {
            return (snap, None);
        }
        let (disks, ifaces) = snap
            .xml
            .as_deref()
            .map(|x| {
                (
                    x.disks.iter().map(|d| d.target_dev.clone()).collect(),
                    x.interfaces.iter().map(|i| i.target_dev.clone()).collect(),
                )
            })
            .unwrap_or_default();
        (snap, Some((domain, missing, disks, ifaces)))
    }

    /// Makes the per-domain stats calls `fill` (by index into `snaps`), `concurrency` domains
    /// at a time, and takes their answers into `snaps`.
    async fn fill_missing(&self, snaps: &mut [DomainSnap], fill: Vec<(usize, FillJob)>) {
        if fill.is_empty() {
            return;
        }
        let (idx, jobs): (Vec<usize>, Vec<FillJob>) = fill.into_iter().unzip();
        let missing: Vec<Missing> = jobs.iter().map(|j| j.1).collect();
        let answers = self
            .libvirt
            .pool(
                "domain_stats",
                jobs,
                self.concurrency,
                |(domain, missing, disks, ifaces): FillJob| {
                    let disks: Vec<&str> = disks.iter().map(String::as_str).collect();
                    let ifaces: Vec<&str> = ifaces.iter().map(String::as_str).collect();
                    stats_fallback::fetch(&domain, missing, &disks, &ifaces)
                },
            )
            .await;
        for ((i, missing), answer) in idx.into_iter().zip(missing).zip(answers) {
            if let Some(snap) = snaps.get_mut(i) {
                self.apply_fill(snap, missing, answer);
            }
        }
    }

    /// Takes in the answers of one domain's calls.
    fn apply_domain_calls(
        &self,
        snap: &mut DomainSnap,
        reuse: Option<Arc<DomainXml>>,
        prev: Option<VcpuCheck>,
        missing: Missing,
        answer: Result<DomainAnswer, Error>,
        now: Instant,
    ) {
        let active = snap.is_active();
        match answer {
            Ok(DomainAnswer {
                xml,
                pins,
                vcpus,
                proc_affinity,
            }) => {
                match xml {
                    None => snap.xml = reuse,
                    Some(Ok(x)) => match self.parse_cached(&snap.uuid, &x) {
                        Ok(p) => snap.xml = Some(p),
                        Err(e) => {
                            tracing::warn!(domain = %snap.name, error = %e, "cannot parse domain XML");
                            snap.errors.push("xml_parse");
                        }
                    },
                    Some(Err(e)) => {
                        tracing::debug!(domain = %snap.name, error = %e, "cannot get domain XML");
                        snap.errors.push("xml");
                    }
                }
                match pins {
                    Some(Ok(p)) => {
                        self.pins_checked(snap, &p, now);
                        snap.pin_info = Some(p);
                    }
                    Some(Err(e)) => {
                        tracing::debug!(domain = %snap.name, error = %e, "cannot get vCPU pin info");
                        self.libvirt.count_error("vcpu_pin_info");
                        snap.errors.push("vcpu_pin_info");
                    }
                    None => {}
                }
                match vcpus {
                    Some(Ok(v)) => {
                        if missing.vcpu && self.stats_fallback && self.vcpu_fallback {
                            self.fallbacks[stats_fallback::VCPU].fetch_add(1, Ordering::Relaxed);
                        }
                        snap.vcpus = Some(v);
                        snap.vcpus_fresh = true;
                        self.vcpu_checked(snap, prev.is_none(), now);
                    }
                    Some(Err(e)) => {
                        tracing::debug!(domain = %snap.name, error = %e, "cannot get vCPU info");
                        self.libvirt.count_error("vcpus");
                        snap.errors.push("vcpus");
                    }
                    // Not due: the kernel's affinity as of the last check.
                    None => {
                        snap.vcpus = prev.filter(|_| active).map(|p| p.vcpus);
                        if let Some(p) = &snap.pin_info {
                            self.remember_pins(&snap.uuid, p);
                        }
                    }
                }
                snap.proc_affinity = proc_affinity.filter(|m| !m.is_empty());
            }
            // The XML known from earlier scrapes stays: a slow call must not make the domain's
            // metadata and pinning claims flap.
            Err(Error::Timeout { .. }) => {
                tracing::warn!(domain = %snap.name, "libvirt did not answer in time for this domain");
                snap.timed_out = true;
                snap.xml = reuse;
            }
            Err(e) => {
                tracing::warn!(domain = %snap.name, error = %e, "domain calls failed");
                snap.errors.push("domain");
                snap.xml = reuse;
            }
        }
    }

    /// The last `virDomainGetVcpus` check of a domain.
    fn vcpu_check(&self, uuid: &str) -> Option<VcpuCheck> {
        common::sync::lock(&self.vcpu_checks).get(uuid).cloned()
    }

    /// Records a fresh `virDomainGetVcpus` answer; the next check is due after [`next_wait`].
    fn vcpu_checked(&self, snap: &DomainSnap, first: bool, now: Instant) {
        let Some(vcpus) = &snap.vcpus else { return };
        let mismatch = snap
            .xml
            .as_deref()
            .is_some_and(|x| vcpuinfo_mismatch(x, vcpus));
        let wait = next_wait(self.vcpuinfo_interval, &snap.uuid, first);
        common::sync::lock(&self.vcpu_checks).insert(
            snap.uuid.clone(),
            VcpuCheck {
                due: now + wait,
                pins: snap.pin_info.clone(),
                vcpus: vcpus.clone(),
                mismatch,
            },
        );
    }

    fn pin_check(&self, uuid: &str) -> Option<PinCheck> {
        common::sync::lock(&self.pin_checks).get(uuid).cloned()
    }

    /// Records a fresh pin info answer (see [`PinCheck`]).
    fn pins_checked(&self, snap: &DomainSnap, pins: &[CpuSet], now: Instant) {
        let mismatch = snap
            .xml
            .as_deref()
            .is_some_and(|x| pininfo_mismatch(x, pins));
        let mut checks = common::sync::lock(&self.pin_checks);
        let first = !checks.contains_key(&snap.uuid);
        let wait = next_wait(self.pininfo_interval, &snap.uuid, first);
        checks.insert(
            snap.uuid.clone(),
            PinCheck {
                due: now + wait,
                pins: pins.to_vec(),
                mismatch,
            },
        );
    }

    /// Keeps libvirt's latest pin info beside a check that was not due.
    fn remember_pins(&self, uuid: &str, pins: &[CpuSet]) {
        let mut checks = common::sync::lock(&self.vcpu_checks);
        if let Some(c) = checks.get_mut(uuid) {
            if c.pins.as_deref() != Some(pins) {
                c.pins = Some(pins.to_vec());
            }
        }
    }

    /// Takes in the per-domain stats calls that stood in for missing bulk stat groups.
    fn apply_fill(
        &self,
        snap: &mut DomainSnap,
        missing: Missing,
        answer: Result<stats_fallback::Fetched, Error>,
    ) {
        match answer {
            Ok(fetched) => {
                for (counter, wanted) in self.fallbacks.iter().zip(missing.groups()) {
                    if wanted {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for call in fetched.errors {
                    self.libvirt.count_error(call);
                    snap.errors.push(call);
                }
                snap.stats.extend(fetched.params);
            }
            Err(Error::Timeout { .. }) => {
                tracing::warn!(domain = %snap.name, "libvirt did not answer in time for this domain's stats");
                snap.timed_out = true;
            }
            Err(e) => {
                tracing::warn!(domain = %snap.name, error = %e, "domain stats calls failed");
                snap.errors.push("domain_stats");
            }
        }
    }
}

/// A domain's snapshot while its calls run: what taking in their answers needs.
struct Pending {
    snap: DomainSnap,
    /// The cached parse of its XML, when the XML is not fetched.
    reuse: Option<Arc<DomainXml>>,
    /// The last `virDomainGetVcpus` check.
    prev: Option<VcpuCheck>,
    /// The last pin info check, when the pin info is not asked for this time.
    pin_prev: Option<PinCheck>,
    missing: Missing,
    /// The domain, when it needs per-domain stats calls.
    fallback: Option<Domain>,
}

/// One domain's calls, as a worker thread makes them.
struct DomainJob {
    domain: Domain,
    /// `<vcpu>` of the cached XML; `None`: fetch the XML.
    known_vcpus: Option<u32>,
    want_pins: bool,
    vcpus_due: bool,
    /// libvirt's pin info at the last `virDomainGetVcpus` check.
    prev_pins: Option<Vec<CpuSet>>,
    /// The QEMU process, when running and visible in procfs.
    qemu_pid: Option<u32>,
}

/// The answers of one domain's calls.
struct DomainAnswer {
    xml: Option<Result<String, virt::error::Error>>,
    pins: Option<Result<Vec<CpuSet>, virt::error::Error>>,
    vcpus: Option<Result<Vec<VcpuInfo>, virt::error::Error>>,
    proc_affinity: Option<HashMap<u32, CpuSet>>,
}

/// The per-domain stats calls of one domain: the domain, the groups, disk and interface targets.
type FillJob = (Domain, Missing, Vec<String>, Vec<String>);

/// Makes one domain's calls (blocking).
fn domain_calls(job: DomainJob, ncpus: u32, procfs_root: Option<&std::path::Path>) -> DomainAnswer {
    let domain = &job.domain;
    let xml = match job.known_vcpus {
        Some(_) => None,
        None => Some(domain.xml_desc(0)),
    };
    let nvcpus = match (&xml, job.known_vcpus) {
        (_, Some(n)) => n,
        (Some(Ok(x)), None) => vcpu_count_hint(x),
        _ => 0,
    };
    let pins = job
        .want_pins
        .then(|| ffi::vcpu_pin_info(domain, nvcpus.max(1), ncpus, sys::VIR_DOMAIN_AFFECT_LIVE));
    // libvirt's own pinning changed since the last look: check the kernel's now.
    let pins_changed = match (&pins, &job.prev_pins) {
        (Some(Ok(now)), Some(before)) => now != before,
        (Some(Ok(_)), None) => true,
        _ => false,
    };
    let vcpus = (job.vcpus_due || pins_changed).then(|| ffi::vcpus(domain, nvcpus.max(1), ncpus));
    let proc_affinity = match (procfs_root, job.qemu_pid) {
        (Some(root), Some(pid)) => Some(procfs::vcpu_thread_affinity(root, pid)),
        _ => None,
    };
    DomainAnswer {
        xml,
        pins,
        vcpus,
        proc_affinity,
    }
}

/// The `<vcpu>` maximum of an XML without parsing it all (sizes the pin-info buffers). libvirt
/// writes `<metadata>` before `<vcpu>`, and other applications' metadata may hold an element
/// named `vcpu` in their default namespace: the search starts after it.
fn vcpu_count_hint(xml: &str) -> u32 {
    let from = xml.rfind("</metadata>").unwrap_or(0);
    let xml = &xml[from..];
    let Some(start) = xml
        .match_indices("<vcpu")
        .map(|(i, _)| i)
        .find(|i| matches!(xml.as_bytes().get(i + 5), Some(b'>' | b' ')))
    else {
        return 1;
    };
    let rest = &xml[start..];
    let Some(gt) = rest.find('>') else { return 1 };
    let after = &rest[gt + 1..];
    let end = after.find('<').unwrap_or(after.len());
    after[..end].trim().parse().unwrap_or(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn gatherer(interval: Duration) -> Gatherer {
        let node = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dedicated.xml");
        let libvirt = Arc::new(Libvirt::new(
            format!("test://{node}"),
            Duration::from_secs(10),
            Duration::from_secs(1),
            true,
        ));
        // No stats fallback: virDomainGetVcpus is then made for the affinity check only.
        Gatherer::new(
            libvirt,
            2,
            None,
            Duration::from_secs(3600),
            false,
            interval,
            interval,
        )
    }

    async fn fresh(g: &Gatherer) -> Vec<(String, bool, bool)> {
        let conn = g.libvirt.connection().await.unwrap();
        let snap = g.gather(&conn).await.unwrap();
        snap.domains
            .iter()
            .map(|d| (d.name.clone(), d.vcpus_fresh, d.vcpus.is_some()))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vcpuinfo_is_repeated_when_due_and_reused_in_between() {
        // First scrape: every running pinned domain is checked. Within the interval the answer
        // is reused (the affinity mismatch keeps its source), not asked for again.
        let g = gatherer(Duration::from_secs(3600));
        let first = fresh(&g).await;
        assert!(!first.is_empty());
        assert!(first.iter().all(|(_, f, s)| *f && *s), "{first:?}");
        let second = fresh(&g).await;
        assert!(second.iter().all(|(_, f, s)| !*f && *s), "{second:?}");

        // Interval zero: every scrape.
        let g = gatherer(Duration::ZERO);
        fresh(&g).await;
        let again = fresh(&g).await;
        assert!(again.iter().all(|(_, f, _)| *f), "{again:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pininfo_is_reused_while_the_xml_is_cached_and_asked_for_when_due() {
        let pinned = |snap: &Snapshot| -> Vec<(String, bool)> {
            snap.domains
                .iter()
                .filter(|d| d.is_active())
                .map(|d| (d.name.clone(), d.pin_info.is_some()))
                .collect()
        };
        let dues = |g: &Gatherer| -> Vec<(String, Instant)> {
            let mut v: Vec<_> = g
                .pin_checks
                .lock()
                .unwrap()
                .iter()
                .map(|(k, c)| (k.clone(), c.due))
                .collect();
            v.sort();
            v
        };
        let g = gatherer(Duration::from_secs(3600));
        let conn = g.libvirt.connection().await.unwrap();
        let first = g.gather(&conn).await.unwrap();
        let asked = dues(&g);
        assert!(!asked.is_empty());
        assert!(
            pinned(&first).iter().all(|(_, p)| *p),
            "{:?}",
            pinned(&first)
        );
        // Within the interval, with the XML cached: not asked again, the answer carried over.
        let second = g.gather(&conn).await.unwrap();
        assert_eq!(dues(&g), asked);
        assert_eq!(pinned(&second), pinned(&first));

        // Interval zero: asked on every scrape.
        let g = gatherer(Duration::ZERO);
        let conn = g.libvirt.connection().await.unwrap();
        g.gather(&conn).await.unwrap();
        let asked = dues(&g);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let again = g.gather(&conn).await.unwrap();
        assert!(pinned(&again).iter().all(|(_, p)| *p));
        let later = dues(&g);
        assert_eq!(later.len(), asked.len());
        assert!(
            later.iter().zip(&asked).all(|(l, a)| l.1 > a.1),
            "{later:?} {asked:?}"
        );
    }

    #[test]
    fn pininfo_mismatch_compares_with_the_declaration() {
        let x = parse_domain_xml(
            "<domain><name>d</name><vcpu>2</vcpu><cputune><vcpupin vcpu='0' cpuset='4'/></cputune></domain>",
        )
        .unwrap();
        let c = |s: &str| crate::cpuset::parse_cpuset(s).unwrap();
        assert!(!pininfo_mismatch(&x, &[c("4"), c("0-7")]));
        assert!(pininfo_mismatch(&x, &[c("5"), c("0-7")]));
    }

    #[test]
    fn vcpuinfo_mismatch_compares_with_the_declaration() {
        let x = parse_domain_xml(
            "<domain><name>d</name><vcpu>2</vcpu><cputune><vcpupin vcpu='0' cpuset='4'/></cputune></domain>",
        )
        .unwrap();
        let v = |n, cpus: &str| VcpuInfo {
            number: n,
            state: 1,
            cpu_time_ns: 0,
            cpu: -1,
            affinity: crate::cpuset::parse_cpuset(cpus).unwrap(),
        };
        assert!(!vcpuinfo_mismatch(&x, &[v(0, "4"), v(1, "0-7")]));
        assert!(vcpuinfo_mismatch(&x, &[v(0, "5"), v(1, "0-7")]));
    }

    #[test]
    fn vcpu_hint() {
        assert_eq!(
            vcpu_count_hint("<domain><vcpu placement='static'>4</vcpu></domain>"),
            4
        );
        assert_eq!(vcpu_count_hint("<domain><vcpupin/></domain>"), 1);
        assert_eq!(
            vcpu_count_hint("<domain><vcpupin vcpu='0'/><vcpu current='1'>3</vcpu></domain>"),
            3
        );
        assert_eq!(vcpu_count_hint("<domain/>"), 1);
        // Metadata (any namespace, written before <vcpu>) may hold an element named vcpu.
        assert_eq!(
            vcpu_count_hint(
                "<domain><metadata><app xmlns='urn:x'><vcpu>1</vcpu></app></metadata>\n<vcpu placement='static'>4</vcpu></domain>"
            ),
            4
        );
        assert_eq!(vcpu_count_hint("<domain><vcpu>x</vcpu></domain>"), 1);
    }
}
