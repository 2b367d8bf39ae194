//! `domain`: every domain with its stats, nova metadata, declared and live pinning, and each kind
//! of broken pinning as its own metric.
//!
//! Names follow inovex/prometheus-libvirt-exporter where it has the metric (`libvirt_up`,
//! `libvirt_domain_info_*`, `libvirt_domain_block_stats_*`, `libvirt_domain_interface_stats_*`,
//! `libvirt_domain_vcpu_*`, `libvirt_domain_memory_stats_*`, `libvirt_domain_openstack_info`,
//! `libvirt_domain_timed_out`), so its dashboards keep working; the rest is named in its style.
//! Per-domain series carry `domain` (plus the device or vCPU) only; nova's descriptive labels
//! live on `libvirt_domain_openstack_info`, joined on `domain`.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::text::{Kind, SharedFamily, TextFamily};
use common::{CollectError, Collector, Sink};
use futures::future::BoxFuture;

use crate::capabilities::NumaTopology;
use crate::cpuset::CpuSet;
use crate::domain_xml::DomainXml;
use crate::metrics::FxBuild;
use crate::metrics::{labels, Labels};
use crate::nova_conf::{load_nova_conf, NovaCpuSets};
use crate::pinning::{
    analyse, claims_of, numa_remote_cpus, DomainClaims, DomainFindings, PinningReport, VcpuKind,
};
use crate::snapshot::{DomainSnap, Gatherer, Snapshot, STATE_NAMES};

/// The collector's identity (flag, label, help, default).
pub const FLAG: common::cli::CollectorFlag = common::cli::CollectorFlag {
    name: "domain",
    help: "Domains: state, stats, nova metadata, CPU pinning and broken pinning",
    default_enabled: true,
};

/// Flavor extra specs copied onto `libvirt_domain_openstack_info` (as `flavor_<name>` with `:` as
/// `_`); every other extra spec is on `libvirt_domain_openstack_flavor_extra_spec_info`.
const INFO_EXTRA_SPECS: &[&str] = &[
    "hw:cpu_policy",
    "hw:cpu_thread_policy",
    "hw:emulator_threads_policy",
    "hw:mem_page_size",
    "hw:numa_nodes",
];

/// Where nova's CPU sets come from: flags win over the nova.conf file.
#[derive(Debug, Clone, Default)]
pub struct NovaSetsSource {
    pub dedicated: Option<CpuSet>,
    pub shared: Option<CpuSet>,
    pub config_file: Option<PathBuf>,
    /// The last read error logged (shared by clones): the same error is logged once, not on
    /// every scrape.
    pub last_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl NovaSetsSource {
    /// The sets for this scrape, and whether the file (if given) was read. Blocking: it reads
    /// the file (see [`DomainCollector`]'s `nova_sets` for the scrape's way to call it).
    pub fn resolve(&self) -> (NovaCpuSets, Option<bool>) {
        let (sets, ok) = match &self.config_file {
            Some(p) => match load_nova_conf(p) {
                Ok(s) => {
                    if common::sync::lock(&self.last_error).take().is_some() {
                        tracing::info!(path = %p.display(), "nova's CPU sets read again");
                    }
                    (s, Some(true))
                }
                Err(e) => {
                    let e = e.to_string();
                    let mut last = common::sync::lock(&self.last_error);
                    if last.as_deref() != Some(e.as_str()) {
                        tracing::warn!(path = %p.display(), error = %e, "cannot read nova's CPU sets (logged again only when the error changes)");
                        *last = Some(e);
                    }
                    (NovaCpuSets::default(), Some(false))
                }
            },
            None => (NovaCpuSets::default(), None),
        };
        (self.with_flags(sets), ok)
    }

    /// `sets` with the flags' sets in place of the file's.
    fn with_flags(&self, mut sets: NovaCpuSets) -> NovaCpuSets {
        // An empty flag is nova's "unset", as in nova.conf: it overrides nothing.
        if let Some(d) = self.dedicated.as_ref().filter(|s| !s.is_empty()) {
            sets.dedicated = Some(d.clone());
        }
        if let Some(s) = self.shared.as_ref().filter(|s| !s.is_empty()) {
            sets.shared = Some(s.clone());
        }
        sets
    }
}

/// What the `domain` collector exports beyond its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `domain_pinning_overlap_info` series per domain (`--pinning.evidence-limit`).
    pub evidence_limit: usize,
    /// Per-vCPU series (`--domain.vcpu-detail`): state, times, host CPU, maximum, declared pin.
    pub vcpu_detail: bool,
    /// The guest's own memory figures beyond the defaults (`--domain.memory-detail`).
    pub memory_detail: bool,
}

impl Options {
    /// The defaults with `evidence_limit` overlap evidence series per domain.
    pub fn limit(evidence_limit: usize) -> Self {
        Self {
            evidence_limit,
            vcpu_detail: false,
            memory_detail: false,
        }
    }
}

/// The `domain` collector.
pub struct DomainCollector {
    gatherer: Arc<Gatherer>,
    nova: NovaSetsSource,
    /// Whether a read of nova.conf is still running (a hung file system): no second one.
    nova_reading: Arc<std::sync::atomic::AtomicBool>,
    opts: Options,
    statics: std::sync::Mutex<StaticCache>,
}

impl std::fmt::Debug for DomainCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainCollector")
            .field("gatherer", &self.gatherer)
            .field("nova", &self.nova)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl DomainCollector {
    /// A collector over `gatherer`'s snapshots, with nova's sets from `nova`.
    pub fn new(gatherer: Arc<Gatherer>, nova: NovaSetsSource, opts: Options) -> Self {
        Self {
            gatherer,
            nova,
            opts,
            statics: std::sync::Mutex::new(StaticCache::default()),
            nova_reading: Arc::default(),
        }
    }

    /// nova's sets for this scrape. nova.conf is read on the blocking pool under
    /// `--libvirt.timeout` (a file on a hung file system must not block the runtime), one read
    /// at a time; a read that does not return in time counts as not loaded.
    async fn nova_sets(&self) -> (NovaCpuSets, Option<bool>) {
        if self.nova.config_file.is_none() {
            return self.nova.resolve();
        }
        let not_loaded = || (self.nova.with_flags(NovaCpuSets::default()), Some(false));
        if self.nova_reading.swap(true, Ordering::AcqRel) {
            tracing::warn!("the last read of nova's CPU sets has not returned; not read again");
            return not_loaded();
        }
        let (nova, reading) = (self.nova.clone(), Arc::clone(&self.nova_reading));
        let read = tokio::task::spawn_blocking(move || {
            let out = nova.resolve();
            reading.store(false, Ordering::Release);
            out
        });
        match tokio::time::timeout(self.gatherer.libvirt.timeout(), read).await {
            Ok(Ok(out)) => out,
            _ => {
                tracing::warn!("cannot read nova's CPU sets: no answer in time");
                not_loaded()
            }
        }
    }

    fn encode_counters(&self, sink: &mut Sink) {
        let g = &self.gatherer;
        let mut errors = sink.counter("call_errors", "libvirt calls that failed, by call");
        let mut timeouts = sink.counter(
            "call_timeouts",
            "libvirt calls that did not answer within --libvirt.timeout, by call",
        );
        for (call, c) in g.libvirt.call_counts() {
            errors.push(&[("call", call)], c.errors as f64);
            timeouts.push(&[("call", call)], c.timeouts as f64);
        }
        sink.push(errors);
        sink.push(timeouts);
        let mut fallbacks = sink.counter(
            "domain_stats_fallbacks",
            "Stat groups missing from libvirt's bulk stats of a running domain and fetched with per-domain calls instead, by group",
        );
        for (group, n) in crate::stats_fallback::GROUPS.iter().zip(&g.fallbacks) {
            fallbacks.push(&[("group", group)], n.load(Ordering::Relaxed) as f64);
        }
        sink.push(fallbacks);
        sink.counter_value(
            "connections_opened",
            "Connections to libvirt opened (the first one and every re-open)",
            g.libvirt.opens() as f64,
        );
        sink.counter_value(
            "domain_xml_fetches",
            "Domain XML documents fetched from libvirt (new domains, domains changed according to libvirt's events, periodic refresh)",
            g.xml_fetches.load(Ordering::Relaxed) as f64,
        );
        if let Some(n) = g.libvirt.events_received() {
            sink.counter_value(
                "domain_events",
                "libvirt domain events received (with --libvirt.events)",
                n as f64,
            );
        }
        sink.counter_value(
            "domain_xml_parses",
            "Domain XML documents parsed (only new or changed domains are parsed)",
            g.xml_parses.load(Ordering::Relaxed) as f64,
        );
        sink.counter_value(
            "domain_xml_parse_errors",
            "Domain XML documents that could not be parsed",
            g.xml_errors.load(Ordering::Relaxed) as f64,
        );
        sink.counter_value(
            "openstack_metadata_errors",
            "Parsed domain XMLs whose nova metadata was malformed",
            g.nova_errors.load(Ordering::Relaxed) as f64,
        );
    }
}

impl Collector for DomainCollector {
    fn name(&self) -> &'static str {
        FLAG.name
    }
    fn collect<'a>(&'a self, sink: &'a mut Sink) -> BoxFuture<'a, Result<(), CollectError>> {
        Box::pin(async move {
            let libvirt = &self.gatherer.libvirt;
            // nova's sets first: they classify vCPUs of nova 31 and older.
            let (sets, nova_ok) = self.nova_sets().await;
            // The domains complete before their own calls are built while those calls run.
            let mut early = Early::new(sink.prefix(), &sets).with_options(self.opts);
            let snap = match libvirt.connection().await {
                Ok(conn) => {
                    let (early, statics) = (&mut early, &self.statics);
                    self.gatherer
                        .gather_overlapped(&conn, move |ncpus, done| {
                            early.encode(&mut common::sync::lock(statics), ncpus, done);
                        })
                        .await
                }
                Err(e) => Err(e),
            };
            self.encode_counters(sink);
            let snap = match snap {
                Ok(s) => s,
                Err(e) => {
                    sink.gauge_value(
                        "up",
                        "Whether scraping libvirt's metrics was successful",
                        0.0,
                    );
                    return Err(CollectError::new(e));
                }
            };
            sink.gauge_value(
                "up",
                "Whether scraping libvirt's metrics was successful",
                1.0,
            );
            if let Some(ok) = nova_ok {
                sink.gauge_value(
                    "nova_config_loaded",
                    "Whether the nova.conf given by --nova.config-file was read",
                    f64::from(u8::from(ok)),
                );
            }
            let started = std::time::Instant::now();
            let mut cache = common::sync::lock(&self.statics);
            encode_snapshot_cached(&snap, &sets, self.opts, &mut cache, Some(early), sink);
            tracing::debug!(seconds = started.elapsed().as_secs_f64(), "metrics built");
            Ok(())
        })
    }
}

fn state_desc(state: i32) -> &'static str {
    STATE_NAMES
        .iter()
        .find(|(s, _, _)| *s == state)
        .map(|(_, _, d)| *d)
        .unwrap_or("unknown")
}

/// Families of one scrape, written as text as they are filled and handed to the sink at the end
/// in a fixed order (gauges, then counters, each by name).
struct Fams {
    prefix: String,
    g: BTreeMap<&'static str, TextFamily>,
    c: BTreeMap<&'static str, TextFamily>,
}

impl Fams {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            g: BTreeMap::new(),
            c: BTreeMap::new(),
        }
    }
    fn gauge<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        name: &'static str,
        help: &'static str,
        l: impl AsRef<[(K, V)]>,
        v: f64,
    ) {
        self.g
            .entry(name)
            .or_insert_with(|| TextFamily::new(&self.prefix, name, help, Kind::Gauge))
            .push(l.as_ref(), v);
    }
    fn counter<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        name: &'static str,
        help: &'static str,
        l: impl AsRef<[(K, V)]>,
        v: f64,
    ) {
        // libvirt gives -1 (or nothing sensible) for a counter it does not know: left out.
        if !(v.is_finite() && v >= 0.0) {
            return;
        }
        self.c
            .entry(name)
            .or_insert_with(|| TextFamily::new(&self.prefix, name, help, Kind::Counter))
            .push(l.as_ref(), v);
    }
    /// Declares a family; one without series is not written.
    fn declare_gauge(&mut self, name: &'static str, help: &'static str) {
        self.g
            .entry(name)
            .or_insert_with(|| TextFamily::new(&self.prefix, name, help, Kind::Gauge));
    }
    /// Freezes every family, to be appended on later scrapes without a copy.
    fn share(self) -> SharedFams {
        SharedFams {
            g: self.g.into_iter().map(|(n, f)| (n, f.share())).collect(),
            c: self.c.into_iter().map(|(n, f)| (n, f.share())).collect(),
        }
    }
    /// Appends every family of `other` (see [`TextFamily::append_shared`]).
    fn append_shared(&mut self, other: &SharedFams) {
        for (map, fams) in [(&mut self.g, &other.g), (&mut self.c, &other.c)] {
            for (name, fam) in fams {
                map.entry(name)
                    .or_insert_with(|| TextFamily::empty_like(fam))
                    .append_shared(fam);
            }
        }
    }
    fn push_to(self, sink: &mut Sink) {
        for f in self.g.into_values().chain(self.c.into_values()) {
            sink.push(f);
        }
    }
}

/// [`Fams`] frozen for reuse across scrapes.
struct SharedFams {
    g: Vec<(&'static str, SharedFamily)>,
    c: Vec<(&'static str, SharedFamily)>,
}

fn dl(d: &DomainSnap) -> [(&'static str, &str); 1] {
    [("domain", &d.name)]
}

fn dl2<'a>(d: &'a DomainSnap, k: &'static str, v: &'a str) -> [(&'static str, &'a str); 2] {
    [("domain", &d.name), (k, v)]
}

/// The XML-derived part of one domain: its series rendered by [`encode_static`] and its pinning
/// claims, valid while the domain keeps the same parsed XML (the gatherer's cache hands out the
/// same `Arc` until the XML text changes), uuid and host CPU count.
struct StaticPart {
    /// Unique over the cache's life: a new render gets a new id, so the pinning report's key
    /// cannot mistake a new XML for an old one.
    id: u64,
    xml: Arc<DomainXml>,
    uuid: String,
    ncpus: u32,
    /// nova's sets the claims were classified with.
    sets: NovaCpuSets,
    fams: SharedFams,
    claims: DomainClaims,
}

/// What the pinning report depends on: the claims of the running domains (by [`StaticPart`]
/// id, in order), the host CPU count, nova's sets and the evidence limit.
#[derive(PartialEq, Eq)]
struct ReportKey {
    active: Vec<u64>,
    ncpus: u32,
    nova: NovaCpuSets,
    evidence_limit: usize,
    numa: Option<Arc<NumaTopology>>,
}

/// Series that depend only on the domains' XML, kept across scrapes: each domain's
/// [`StaticPart`] by domain name (unique on a host), and the pinning report's series while the
/// running domains and their XML stay the same: most of the text a scrape writes, rendered
/// once per XML change instead of on every scrape.
#[derive(Default)]
pub struct StaticCache {
    parts: HashMap<String, StaticPart, FxBuild>,
    next_id: u64,
    report: Option<(ReportKey, SharedFams)>,
}

/// Builds every metric of the `domain` collector from a snapshot, with `opts`, without a cache.
#[cfg(test)]
pub fn encode_snapshot(snap: &Snapshot, nova: &NovaCpuSets, opts: Options, sink: &mut Sink) {
    encode_snapshot_cached(snap, nova, opts, &mut StaticCache::default(), None, sink);
}

/// What was built while the per-domain calls ran ([`Gatherer::gather_overlapped`]): the stats
/// and XML-derived series of the domains complete before them.
pub struct Early {
    fams: Fams,
    names: HashSet<String, FxBuild>,
    sets: NovaCpuSets,
    opts: Options,
}

impl Early {
    /// Nothing built yet, for metric names with `prefix`, with nova's `sets`.
    pub fn new(prefix: &str, sets: &NovaCpuSets) -> Self {
        Self {
            fams: Fams::new(prefix),
            names: HashSet::default(),
            sets: sets.clone(),
            opts: Options::limit(0),
        }
    }

    /// With `opts`' detail series (the evidence limit plays no part here).
    pub fn with_options(mut self, opts: Options) -> Self {
        self.opts = opts;
        self
    }

    /// Builds the series of `done` (domains whose snapshot lacks only their own calls' answers,
    /// with the XML the final snapshot carries), on a host with `ncpus` CPUs.
    pub fn encode(
        &mut self,
        cache: &mut StaticCache,
        ncpus: u32,
        done: &[(&DomainSnap, &Arc<DomainXml>)],
    ) {
        for (d, x) in done {
            encode_domain_stats(&mut self.fams, d, Some(x), self.opts);
            cache.append_static(
                &mut self.fams,
                d,
                x,
                ncpus,
                &self.sets,
                self.opts.vcpu_detail,
            );
            self.names.insert(d.name.clone());
        }
    }
}

impl StaticCache {
    /// Appends the XML-derived part of `d` to `f`, rendering it unless cached for this XML.
    fn append_static(
        &mut self,
        f: &mut Fams,
        d: &DomainSnap,
        x: &Arc<DomainXml>,
        ncpus: u32,
        sets: &NovaCpuSets,
        vcpu_detail: bool,
    ) {
        let fresh = self.parts.get(&d.name).is_some_and(|p| {
            Arc::ptr_eq(&p.xml, x) && p.uuid == d.uuid && p.ncpus == ncpus && p.sets == *sets
        });
        if !fresh {
            let claims = claims_of(x, ncpus, sets);
            let mut fams = Fams::new(&f.prefix);
            encode_static(&mut fams, d, x, &claims, vcpu_detail);
            self.next_id += 1;
            self.parts.insert(
                d.name.clone(),
                StaticPart {
                    id: self.next_id,
                    fams: fams.share(),
                    xml: Arc::clone(x),
                    uuid: d.uuid.clone(),
                    ncpus,
                    sets: sets.clone(),
                    claims,
                },
            );
        }
        if let Some(p) = self.parts.get(&d.name) {
            f.append_shared(&p.fams);
        }
    }
}

/// [`encode_snapshot`], reusing and refreshing the XML-derived parts in `cache`, after the
/// `early` part built while the per-domain calls ran (if any).
pub fn encode_snapshot_cached(
    snap: &Snapshot,
    nova: &NovaCpuSets,
    opts: Options,
    cache: &mut StaticCache,
    early: Option<Early>,
    sink: &mut Sink,
) {
    let prefix = sink.prefix().to_string();
    let Early {
        fams: mut f,
        names: early,
        ..
    } = early.unwrap_or_else(|| Early::new(&prefix, nova).with_options(opts));
    let ncpus = snap.host.cpus;

    sink.gauge_value("domains", "Number of domains", snap.domains.len() as f64);
    let mut by_state = sink.gauge("domains_by_state", "Number of domains by state");
    for (code, name, _) in STATE_NAMES {
        let n = snap.domains.iter().filter(|d| d.state == *code).count();
        by_state.push(&[("state", name)], n as f64);
    }
    sink.push(by_state);
    encode_health_totals(snap, sink);

    // Domain names are unique on a host, so the cached parts (each labelled with its domain)
    // are appended without checking them against each other.
    let names: HashSet<&str, FxBuild> = snap.domains.iter().map(|d| d.name.as_str()).collect();
    cache.parts.retain(|name, _| names.contains(name.as_str()));
    for d in &snap.domains {
        encode_domain_calls(&mut f, d, opts.vcpu_detail);
        if early.contains(&d.name) {
            continue;
        }
        encode_domain_stats(&mut f, d, d.xml.as_deref(), opts);
        match &d.xml {
            Some(x) => cache.append_static(&mut f, d, x, ncpus, nova, opts.vcpu_detail),
            None => {
                cache.parts.remove(&d.name);
            }
        }
    }
    // The pinning report over the claims of the running domains.
    let active: Vec<&StaticPart> = snap
        .domains
        .iter()
        .filter(|d| d.is_active() && d.xml.is_some())
        .filter_map(|d| cache.parts.get(&d.name))
        .collect();
    let key = ReportKey {
        active: active.iter().map(|p| p.id).collect(),
        ncpus,
        nova: nova.clone(),
        evidence_limit: opts.evidence_limit,
        numa: snap.host.numa.clone(),
    };
    if cache.report.as_ref().is_none_or(|(k, _)| *k != key) {
        let claims: Vec<&DomainClaims> = active.iter().map(|p| &p.claims).collect();
        let mut fams = Fams::new(&prefix);
        let numa = snap.host.numa.as_deref();
        encode_report(&mut fams, &claims, ncpus, nova, opts.evidence_limit, numa);
        cache.report = Some((key, fams.share()));
    }
    if let Some((_, fams)) = cache.report.as_ref() {
        f.append_shared(fams);
    }
    encode_live_affinity(&mut f, snap);
    f.push_to(sink);
}

/// This scrape's per-domain failures, summed over the node.
fn encode_health_totals(snap: &Snapshot, sink: &mut Sink) {
    let timed_out = snap.domains.iter().filter(|d| d.timed_out).count();
    sink.gauge_value(
        "domains_timed_out",
        "Domains libvirt did not answer in time for on this scrape (each one has libvirt_domain_timed_out)",
        timed_out as f64,
    );
    let errors: usize = snap.domains.iter().map(|d| d.errors.len()).sum();
    sink.gauge_value(
        "domains_scrape_errors",
        "libvirt calls for domains that failed on this scrape (per domain in libvirt_domain_scrape_errors)",
        errors as f64,
    );
}

/// The series of one domain that come from the answers of its own calls: errors and timeouts
/// (only when they happened: the node totals count them), and `virDomainGetVcpus` (per-vCPU
/// detail, with `--domain.vcpu-detail`).
fn encode_domain_calls(f: &mut Fams, d: &DomainSnap, vcpu_detail: bool) {
    if d.timed_out {
        f.gauge(
            "domain_timed_out",
            "1 for a domain libvirt did not answer in time for on this scrape (only such domains; libvirt_domains_timed_out counts them)",
            dl(d),
            1.0,
        );
    }
    if !d.errors.is_empty() {
        f.gauge(
            "domain_scrape_errors",
            "libvirt calls for this domain that failed on this scrape (only domains with a failure; libvirt_domains_scrape_errors sums them)",
            dl(d),
            d.errors.len() as f64,
        );
    }
    let Some(vs) = d.vcpus.as_ref().filter(|_| vcpu_detail) else {
        return;
    };
    // Per-vCPU state and time from virDomainGetVcpus only where bulk stats lack them.
    let nvcpu = d.stat("vcpu.maximum").map(|v| v as u32).unwrap_or(0);
    let vcpu_seen = (0..nvcpu).any(|i| d.stat(&format!("vcpu.{i}.state")).is_some());
    for v in vs {
        let idx = v.number.to_string();
        let l = || dl2(d, "vcpu", &idx);
        if !vcpu_seen && d.vcpus_fresh {
            f.gauge(
                "domain_vcpu_state",
                "State of the vCPU (0 offline, 1 running, 2 blocked)",
                l(),
                f64::from(v.state),
            );
            f.counter(
                "domain_vcpu_time_seconds",
                "Time spent by the virtual CPU",
                l(),
                v.cpu_time_ns as f64 / 1e9,
            );
        }
        if v.cpu >= 0 {
            f.gauge(
                "domain_vcpu_cpu",
                "Host CPU the vCPU last ran on",
                l(),
                f64::from(v.cpu),
            );
        }
    }
}

/// The series of one domain that come from its bulk stats (and its XML where they lack a value).
fn encode_domain_stats(f: &mut Fams, d: &DomainSnap, xml: Option<&DomainXml>, opts: Options) {
    encode_state(f, d, xml, opts.vcpu_detail);
    encode_memory(f, d, xml, opts.memory_detail);
    if opts.vcpu_detail {
        encode_vcpus(f, d);
    }
    encode_blocks(f, d);
    encode_interfaces(f, d, xml);
}

/// State, vCPU count and CPU time.
fn encode_state(f: &mut Fams, d: &DomainSnap, xml: Option<&DomainXml>, vcpu_detail: bool) {
    f.gauge(
        "domain_info_state",
        "Code of the domain state",
        dl2(d, "state_desc", state_desc(d.state)),
        f64::from(d.state),
    );
    if let Some(v) = d
        .stat("vcpu.current")
        .or_else(|| xml.map(|x| f64::from(x.vcpus_current)))
    {
        f.gauge(
            "domain_vcpu_current",
            "Number of current online vCPUs",
            dl(d),
            v,
        );
    }
    if vcpu_detail {
        if let Some(v) = d
            .stat("vcpu.maximum")
            .or_else(|| xml.map(|x| f64::from(x.vcpus)))
        {
            f.gauge(
                "domain_vcpu_maximum",
                "Number of maximum online vCPUs",
                dl(d),
                v,
            );
        }
    }
    if let Some(v) = d.stat("cpu.time") {
        f.counter(
            "domain_info_cpu_time_seconds",
            "Amount of CPU time used by the domain, in seconds",
            dl(d),
            v / 1e9,
        );
    }
}

/// libvirt's balloon stats in KiB, exported in bytes: key, name, help, whether only with
/// `--domain.memory-detail`.
const BALLOON_BYTES: &[(&str, &str, &str, bool)] = &[
    (
        "balloon.unused",
        "domain_memory_stats_unused_bytes",
        "Memory unused by the domain",
        true,
    ),
    (
        "balloon.available",
        "domain_memory_stats_available_bytes",
        "Memory available to the domain",
        false,
    ),
    (
        "balloon.usable",
        "domain_memory_stats_usable_bytes",
        "Memory usable by the domain (corresponds to 'Available' in /proc/meminfo)",
        false,
    ),
    (
        "balloon.rss",
        "domain_memory_stats_rss_bytes",
        "Resident Set Size of the process running the domain",
        false,
    ),
    (
        "balloon.swap_in",
        "domain_memory_stats_swap_in_bytes",
        "Memory swapped in for this domain",
        false,
    ),
    (
        "balloon.swap_out",
        "domain_memory_stats_swap_out_bytes",
        "Memory swapped out for this domain",
        false,
    ),
    (
        "balloon.disk_caches",
        "domain_memory_stats_disk_caches_bytes",
        "Memory the guest can reclaim quickly: its disk caches",
        true,
    ),
];

/// libvirt's balloon counters: key, name, help, whether only with `--domain.memory-detail`.
const BALLOON_COUNTS: &[(&str, &str, &str, bool)] = &[
    (
        "balloon.major_fault",
        "domain_memory_stats_major_fault",
        "Page faults that required disk IO",
        false,
    ),
    (
        "balloon.minor_fault",
        "domain_memory_stats_minor_fault",
        "Page faults served without disk IO",
        true,
    ),
    (
        "balloon.hugetlb_pgalloc",
        "domain_memory_stats_hugetlb_pgalloc",
        "Successful huge page allocations inside the domain (virtio balloon)",
        true,
    ),
    (
        "balloon.hugetlb_pgfail",
        "domain_memory_stats_hugetlb_pgfail",
        "Failed huge page allocations inside the domain (virtio balloon)",
        true,
    ),
];

/// Memory: the balloon (else the XML's sizes) and the guest's own figures.
fn encode_memory(f: &mut Fams, d: &DomainSnap, xml: Option<&DomainXml>, detail: bool) {
    let kib = |k: &str| d.stat(k).map(|v| v * 1024.0);
    if let Some(v) =
        kib("balloon.maximum").or_else(|| xml.and_then(|x| x.memory_bytes).map(|b| b as f64))
    {
        f.gauge(
            "domain_memory_stats_maximum_bytes",
            "Maximum memory the domain may use, in bytes (balloon maximum, else the XML's <memory>)",
            dl(d),
            v,
        );
    }
    if let Some(v) = kib("balloon.current")
        .or_else(|| xml.and_then(|x| x.current_memory_bytes).map(|b| b as f64))
    {
        f.gauge(
            "domain_memory_stats_current_balloon_bytes",
            "Current balloon value, in bytes (else the XML's <currentMemory>)",
            dl(d),
            v,
        );
    }
    for (key, name, help, _) in BALLOON_BYTES.iter().filter(|m| detail || !m.3) {
        if let Some(v) = kib(key) {
            f.gauge(name, help, dl(d), v);
        }
    }
    for (key, name, help, _) in BALLOON_COUNTS.iter().filter(|m| detail || !m.3) {
        if let Some(v) = d.stat(key) {
            f.counter(name, help, dl(d), v);
        }
    }
    // As inovex computes it: the share of the guest's memory that is not usable.
    if let (Some(avail), Some(usable)) = (d.stat("balloon.available"), d.stat("balloon.usable")) {
        if avail > 0.0 {
            f.gauge(
                "domain_memory_stats_used_percent",
                "Memory in use inside the domain, in percent: (available - usable) / available x 100",
                dl(d),
                (avail - usable) / avail * 100.0,
            );
        }
    }
    if let Some(v) = d.stat("balloon.last-update").filter(|_| detail) {
        f.gauge(
            "domain_memory_stats_last_update_timestamp_seconds",
            "When the guest last updated its memory stats (Unix time)",
            dl(d),
            v,
        );
    }
}

/// Per-vCPU state and times from the bulk stats (else `virDomainGetVcpus`, see
/// [`encode_domain_calls`]), with `--domain.vcpu-detail`.
fn encode_vcpus(f: &mut Fams, d: &DomainSnap) {
    let nvcpu = d.stat("vcpu.maximum").map(|v| v as u32).unwrap_or(0);
    for i in 0..nvcpu {
        let idx = i.to_string();
        let l = || dl2(d, "vcpu", &idx);
        if let Some(v) = d.stat(&format!("vcpu.{i}.state")) {
            f.gauge(
                "domain_vcpu_state",
                "State of the vCPU (0 offline, 1 running, 2 blocked)",
                l(),
                v,
            );
        }
        for (k, name, help) in [
            ("time", "domain_vcpu_time_seconds", "Time spent by the virtual CPU"),
            ("wait", "domain_vcpu_wait_seconds", "Time the vCPU wants to run, but the host scheduler has something else running ahead of it"),
            ("delay", "domain_vcpu_delay_seconds", "Time the vCPU spent waiting in the queue instead of running"),
        ] {
            if let Some(v) = d.stat(&format!("vcpu.{i}.{k}")) {
                f.counter(name, help, l(), v / 1e9);
            }
        }
    }
}

/// Block device counters: bulk stats key, name, help, scale.
const BLOCK_COUNTERS: &[(&str, &str, &str, f64)] = &[
    (
        "rd.bytes",
        "domain_block_stats_read_bytes",
        "Number of bytes read from a block device, in bytes",
        1.0,
    ),
    (
        "rd.reqs",
        "domain_block_stats_read_requests",
        "Number of read requests from a block device",
        1.0,
    ),
    (
        "wr.bytes",
        "domain_block_stats_write_bytes",
        "Number of bytes written to a block device, in bytes",
        1.0,
    ),
    (
        "wr.reqs",
        "domain_block_stats_write_requests",
        "Number of write requests to a block device",
        1.0,
    ),
    (
        "rd.times",
        "domain_block_stats_read_time_seconds",
        "Total time spent on reads from a block device, in seconds",
        1e-9,
    ),
    (
        "wr.times",
        "domain_block_stats_write_time_seconds",
        "Total time spent on writes on a block device, in seconds",
        1e-9,
    ),
    (
        "fl.reqs",
        "domain_block_stats_flush_requests",
        "Total flush requests from a block device",
        1.0,
    ),
    (
        "fl.times",
        "domain_block_stats_flush_time_seconds",
        "Total time in seconds spent on cache flushing to a block device",
        1e-9,
    ),
];

/// Block devices: the XML names them (see [`encode_devices`]), bulk stats count them.
fn encode_blocks(f: &mut Fams, d: &DomainSnap) {
    let nblock = d.stat("block.count").map(|v| v as u32).unwrap_or(0);
    for i in 0..nblock.min(256) {
        let Some(dev) = d
            .stats
            .get(&format!("block.{i}.name"))
            .and_then(|v| v.as_str())
        else {
            continue;
        };
        let l = || dl2(d, "target_device", dev);
        let s = |k: &str| d.stat(&format!("block.{i}.{k}"));
        for (k, name, help, scale) in BLOCK_COUNTERS {
            if let Some(v) = s(k) {
                f.counter(name, help, l(), v * scale);
            }
        }
        if let Some(v) = s("capacity") {
            f.gauge(
                "domain_block_stats_capacity_bytes",
                "Logical size in bytes of the block device backing image",
                l(),
                v,
            );
        }
        if let Some(v) = s("allocation") {
            f.gauge(
                "domain_block_stats_allocation_bytes",
                "Highest allocated offset of the block device, in bytes",
                l(),
                v,
            );
        }
    }
}

/// Interface counters: bulk stats key, name, help.
const INTERFACE_COUNTERS: &[(&str, &str, &str)] = &[
    (
        "rx.bytes",
        "domain_interface_stats_receive_bytes",
        "Number of bytes received on a network interface, in bytes",
    ),
    (
        "rx.pkts",
        "domain_interface_stats_receive_packets",
        "Number of packets received on a network interface",
    ),
    (
        "rx.errs",
        "domain_interface_stats_receive_errors",
        "Number of packet receive errors on a network interface",
    ),
    (
        "rx.drop",
        "domain_interface_stats_receive_drops",
        "Number of packet receive drops on a network interface",
    ),
    (
        "tx.bytes",
        "domain_interface_stats_transmit_bytes",
        "Number of bytes transmitted on a network interface, in bytes",
    ),
    (
        "tx.pkts",
        "domain_interface_stats_transmit_packets",
        "Number of packets transmitted on a network interface",
    ),
    (
        "tx.errs",
        "domain_interface_stats_transmit_errors",
        "Number of packet transmit errors on a network interface",
    ),
    (
        "tx.drop",
        "domain_interface_stats_transmit_drops",
        "Number of packet transmit drops on a network interface",
    ),
];

/// Interfaces, with the neutron port.
fn encode_interfaces(f: &mut Fams, d: &DomainSnap, xml: Option<&DomainXml>) {
    let port_of = |dev: &str| -> String {
        xml.and_then(|x| x.interfaces.iter().find(|i| i.target_dev == dev))
            .map(|i| i.port_id.clone())
            .unwrap_or_default()
    };
    let nnet = d.stat("net.count").map(|v| v as u32).unwrap_or(0);
    for i in 0..nnet.min(256) {
        let Some(dev) = d
            .stats
            .get(&format!("net.{i}.name"))
            .and_then(|v| v.as_str())
        else {
            continue;
        };
        let port = port_of(dev);
        let l = || {
            labels([
                ("domain", &d.name),
                ("target_device", dev),
                ("port_id", &port),
            ])
        };
        for (k, name, help) in INTERFACE_COUNTERS {
            if let Some(v) = d.stat(&format!("net.{i}.{k}")) {
                f.counter(name, help, l(), v);
            }
        }
    }
}

/// The series of one domain that depend only on its XML (and name and uuid): device and nova
/// metadata, declared pinning. Rendered once per XML and replayed on every scrape (see
/// [`StaticCache`]).
fn encode_static(
    f: &mut Fams,
    d: &DomainSnap,
    x: &DomainXml,
    claims: &DomainClaims,
    vcpu_detail: bool,
) {
    encode_devices(f, d, x);
    if x.nova_problem().is_some() {
        f.gauge(
            "domain_openstack_metadata_malformed",
            "1 for a domain whose nova metadata could not be read, as a whole or its CPU policy (only such domains)",
            dl(d),
            1.0,
        );
    }
    if let Some(Ok(n)) = &x.nova {
        encode_nova(f, d, n);
    }
    encode_declared_pinning(f, d, x, claims, vcpu_detail);
}

/// Block devices, interfaces and the domain itself: metadata from the XML.
fn encode_devices(f: &mut Fams, d: &DomainSnap, x: &DomainXml) {
    for disk in &x.disks {
        f.gauge(
            "domain_block_stats_info",
            "Metadata information on block devices",
            labels([
                ("domain", &d.name),
                ("disk_type", &disk.disk_type),
                ("target_bus", &disk.target_bus),
                ("driver_name", &disk.driver_name),
                ("driver_type", &disk.driver_type),
                ("driver_cache", &disk.driver_cache),
                ("driver_discard", &disk.driver_discard),
                ("source_file", &disk.source_file),
                ("source_protocol", &disk.source_protocol),
                ("target_device", &disk.target_dev),
                ("serial", &disk.serial),
            ]),
            1.0,
        );
    }
    for i in &x.interfaces {
        f.gauge(
            "domain_interface_stats_info",
            "Metadata on network interfaces",
            labels([
                ("domain", &d.name),
                ("interface_type", &i.interface_type),
                ("source_bridge", &i.source_bridge),
                ("target_device", &i.target_dev),
                ("mac_address", &i.mac),
                ("model_type", &i.model),
                ("mtu_size", &i.mtu),
                ("port_id", &i.port_id),
            ]),
            1.0,
        );
    }
    f.gauge(
        "domain_info",
        "Metadata labels for the domain",
        labels([
            ("domain", &d.name),
            ("uuid", &d.uuid),
            ("os_type", &x.os_type),
            ("os_type_arch", &x.os_arch),
            ("os_type_machine", &x.os_machine),
        ]),
        1.0,
    );
}

/// `libvirt_domain_openstack_info`'s labels: nova's metadata of the domain.
fn openstack_labels(d: &DomainSnap, n: &crate::nova::NovaInstance) -> Labels {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    let num = |o: Option<u64>| o.map(|v| v.to_string()).unwrap_or_default();
    let mut l: Labels = vec![
        ("domain".into(), d.name.clone()),
        ("instance_name".into(), opt(&n.name)),
        ("instance_id".into(), d.uuid.clone()),
        ("flavor_name".into(), opt(&n.flavor.name)),
        ("user_name".into(), opt(&n.user_name)),
        ("user_id".into(), opt(&n.user_id)),
        ("project_name".into(), opt(&n.project_name)),
        ("project_id".into(), opt(&n.project_id)),
        ("flavor_id".into(), opt(&n.flavor.id)),
        ("flavor_vcpus".into(), num(n.flavor.vcpus)),
        ("flavor_memory_mb".into(), num(n.flavor.memory_mb)),
        ("flavor_disk_gb".into(), num(n.flavor.disk_gb)),
        ("flavor_swap_mb".into(), num(n.flavor.swap_mb)),
        ("flavor_ephemeral_gb".into(), num(n.flavor.ephemeral_gb)),
        ("root_type".into(), opt(&n.root_type)),
        ("root_id".into(), opt(&n.root_id)),
        ("image_id".into(), opt(&n.image_id)),
        ("creation_time".into(), opt(&n.creation_time)),
        ("nova_version".into(), opt(&n.package_version)),
        ("nova_namespace".into(), n.namespace_version.clone()),
    ];
    for spec in INFO_EXTRA_SPECS {
        l.push((
            format!("flavor_{}", spec.replace(':', "_")).into(),
            n.flavor.extra_spec(spec).unwrap_or("").to_string(),
        ));
    }
    l
}

/// nova's metadata: the instance, the extra specs not already on its info series, the image and
/// the ports.
fn encode_nova(f: &mut Fams, d: &DomainSnap, n: &crate::nova::NovaInstance) {
    f.gauge(
        "domain_openstack_info",
        "OpenStack nova metadata labels for the domain",
        openstack_labels(d, n),
        1.0,
    );
    for (k, v) in &n.flavor.extra_specs {
        if INFO_EXTRA_SPECS.contains(&k.as_str()) {
            continue;
        }
        f.gauge(
            "domain_openstack_flavor_extra_spec_info",
            "Each extra spec of the domain's nova flavor that is not a label of libvirt_domain_openstack_info",
            labels([("domain", &d.name), ("key", k), ("value", v)]),
            1.0,
        );
    }
    if let Some(img) = &n.image {
        let num = |o: Option<u64>| o.map(|v| v.to_string()).unwrap_or_default();
        f.gauge(
            "domain_openstack_image_info",
            "The image nova recorded for the domain (<nova:image>, nova 32 and later; image_id empty when booted from a volume)",
            labels([
                ("domain", d.name.as_str()),
                ("image_id", &img.id),
                ("container_format", img.container_format.as_deref().unwrap_or("")),
                ("disk_format", img.disk_format.as_deref().unwrap_or("")),
                ("min_disk_gb", &num(img.min_disk_gb)),
                ("min_ram_mb", &num(img.min_ram_mb)),
            ]),
            1.0,
        );
        for (k, v) in &img.properties {
            f.gauge(
                "domain_openstack_image_property_info",
                "Each image property nova recorded for the domain",
                labels([("domain", &d.name), ("key", k), ("value", v)]),
                1.0,
            );
        }
    }
    for p in &n.ports {
        f.gauge(
            "domain_openstack_port_info",
            "Each neutron port of the domain with its fixed and floating IPs (comma separated)",
            labels([
                ("domain", &d.name),
                ("port_id", &p.id),
                ("fixed_ips", &p.fixed_ips.join(",")),
                ("floating_ips", &p.floating_ips.join(",")),
            ]),
            1.0,
        );
    }
}

/// The vCPUs of `claims` of one kind, as a set of vCPU numbers.
fn vcpus_of(claims: &DomainClaims, kind: VcpuKind) -> String {
    claims
        .vcpus
        .iter()
        .filter(|v| v.kind == kind)
        .map(|v| v.vcpu)
        .collect::<CpuSet>()
        .to_string()
}

/// Declared pinning (shut-off domains too: it is what they will claim): one series per domain,
/// and per vCPU with `--domain.vcpu-detail`.
fn encode_declared_pinning(
    f: &mut Fams,
    d: &DomainSnap,
    x: &DomainXml,
    claims: &DomainClaims,
    vcpu_detail: bool,
) {
    let emulator = x.emulator_pin.as_ref().map(|e| e.to_string());
    f.gauge(
        "domain_pinning_info",
        "Declared pinning of the domain: its vCPUs by class (dedicated, floating, unknown = left out of the analysis), the host CPUs its dedicated vCPUs and isolate emulator threads claim, the host CPUs its floating vCPUs may use, and <emulatorpin> with nova's emulator threads policy",
        labels([
            ("domain", d.name.as_str()),
            ("dedicated_vcpus", &vcpus_of(claims, VcpuKind::Dedicated)),
            ("floating_vcpus", &vcpus_of(claims, VcpuKind::Floating)),
            ("unknown_vcpus", &vcpus_of(claims, VcpuKind::Unknown)),
            ("dedicated_cpus", &claims.dedicated_cpus().to_string()),
            ("floating_cpus", &claims.floating_cpus().to_string()),
            ("emulator_cpuset", emulator.as_deref().unwrap_or("")),
            ("emulator_policy", x.nova_cpu.emulator.as_str()),
        ]),
        1.0,
    );
    if vcpu_detail {
        for v in &claims.vcpus {
            let declared = x
                .vcpu_affinity(v.vcpu)
                .map(|s| s.to_string())
                .unwrap_or_default();
            f.gauge(
                "domain_vcpu_pinning_info",
                "Declared host CPUs of each vCPU (empty: any), and whether it is dedicated, floating or unknown (left out of the analysis)",
                labels([
                    ("domain", &d.name),
                    ("vcpu", &v.vcpu.to_string()),
                    ("cpuset", &declared),
                    ("kind", v.kind.as_str()),
                ]),
                1.0,
            );
        }
    }
    if let Some(m) = &x.numa_memory {
        f.gauge(
            "domain_numa_memory_info",
            "Declared NUMA memory mode and host nodes",
            labels([
                ("domain", &d.name),
                ("mode", &m.mode),
                ("nodeset", &m.nodeset),
            ]),
            1.0,
        );
    }
}
/// The live affinity of a vCPU from one source.
type LiveAffinity<'a> = Box<dyn Fn(u32) -> Option<CpuSet> + 'a>;

/// The series of the pinning report over the running domains' claims: per host CPU, overlaps
/// and per-domain broken pinning.
fn encode_report(
    f: &mut Fams,
    active: &[&DomainClaims],
    ncpus: u32,
    nova: &NovaCpuSets,
    evidence_limit: usize,
    numa: Option<&NumaTopology>,
) {
    let report = analyse(active, ncpus, nova, evidence_limit);
    if let Some(topo) = numa {
        encode_numa(f, active, topo);
    }
    encode_host_cpus(f, &report);
    f.declare_gauge(
        "domain_pinning_overlap_info",
        "Pairs of running domains whose dedicated vCPUs claim the same host CPUs, with those CPUs (at most --pinning.evidence-limit per domain, first by other_domain)",
    );
    for (dom, other, cpus) in &report.overlaps {
        f.gauge(
            "domain_pinning_overlap_info",
            "Pairs of running domains whose dedicated vCPUs claim the same host CPUs, with those CPUs (at most --pinning.evidence-limit per domain, first by other_domain)",
            labels([("domain", dom), ("other_domain", other), ("cpus", &cpus.to_string())]),
            1.0,
        );
    }
    f.declare_gauge(
        "domain_pinning_emulator_overlap_info",
        "Running domains whose emulator threads are pinned onto host CPUs another running domain's dedicated vCPUs hold, with that domain and those CPUs (at most --pinning.evidence-limit per domain, first by other_domain)",
    );
    for (dom, other, cpus) in &report.emulator_overlaps {
        f.gauge(
            "domain_pinning_emulator_overlap_info",
            "Running domains whose emulator threads are pinned onto host CPUs another running domain's dedicated vCPUs hold, with that domain and those CPUs (at most --pinning.evidence-limit per domain, first by other_domain)",
            labels([("domain", dom), ("other_domain", other), ("cpus", &cpus.to_string())]),
            1.0,
        );
    }
    for (dom, fi) in &report.domains {
        encode_findings(f, dom, fi);
    }
}

/// Per host CPU that carries a dedicated claim: its pinned vCPUs, its dedicated domains and (when
/// any) the domains floating over it. A CPU no dedicated vCPU claims has no series.
fn encode_host_cpus(f: &mut Fams, report: &PinningReport) {
    for (cpu, u) in report.cpus.iter().filter(|(_, u)| u.dedicated_domains > 0) {
        let l = || labels([("cpu", &cpu.to_string())]);
        f.gauge(
            "host_cpu_pinned_vcpus",
            "Dedicated vCPUs of running domains pinned to this host CPU (host CPUs with a dedicated claim)",
            l(),
            f64::from(u.pinned_vcpus),
        );
        f.gauge(
            "host_cpu_dedicated_domains",
            "Running domains with dedicated vCPUs or isolate emulator threads on this host CPU (more than 1 is broken pinning; host CPUs with a dedicated claim)",
            l(),
            f64::from(u.dedicated_domains),
        );
        if u.floating_domains > 0 {
            f.gauge(
                "host_cpu_floating_domains",
                "Running domains whose floating vCPUs may run on this host CPU (host CPUs with a dedicated claim, when any: broken pinning)",
                l(),
                f64::from(u.floating_domains),
            );
        }
    }
}

/// One domain's broken pinning: each finding only while it has CPUs (the alerts test `> 0`).
fn encode_findings(f: &mut Fams, dom: &str, fi: &DomainFindings) {
    let l = || labels([("domain", dom)]);
    let found = [
        ("domain_pinning_emulator_overlap_cpus", "Host CPUs of the domain's emulator threads that another running domain's dedicated vCPUs hold (only while any)", Some(&fi.emulator_overlap)),
        ("domain_pinning_overlap_cpus", "Host CPUs of the domain's dedicated vCPUs that another running domain's dedicated vCPUs also claim (only while any)", Some(&fi.overlap)),
        ("domain_pinning_dedicated_in_shared_cpus", "Host CPUs of the domain's dedicated vCPUs that floating vCPUs may also use (only while any)", Some(&fi.dedicated_in_shared)),
        ("domain_pinning_outside_dedicated_set_cpus", "Host CPUs of the domain's dedicated vCPUs (and isolate emulator threads) outside nova's cpu_dedicated_set (only while any, when the set is known)", fi.outside_dedicated_set.as_ref()),
        ("domain_pinning_outside_shared_set_cpus", "Host CPUs the domain's floating vCPUs (and share emulator threads) may use outside nova's cpu_shared_set (only while any, when the set is known)", fi.outside_shared_set.as_ref()),
    ];
    for (name, help, set) in found {
        if let Some(set) = set.filter(|s| !s.is_empty()) {
            f.gauge(name, help, l(), set.len() as f64);
        }
    }
    if !fi.emulator_overlap.is_empty() {
        f.gauge(
            "domain_pinning_emulator_overlap_info_omitted",
            "Other running domains under the domain's emulator threads left out of domain_pinning_emulator_overlap_info by --pinning.evidence-limit",
            l(),
            fi.emulator_overlap_omitted as f64,
        );
    }
    if !fi.overlap.is_empty() {
        f.gauge(
            "domain_pinning_overlap_info_omitted",
            "Other running domains sharing the domain's dedicated host CPUs that are left out of domain_pinning_overlap_info by --pinning.evidence-limit",
            l(),
            fi.overlap_omitted as f64,
        );
    }
}

/// Dedicated guests whose memory is strictly bound to NUMA nodes other than those of their
/// pinned CPUs (with the host's topology).
fn encode_numa(f: &mut Fams, active: &[&DomainClaims], topo: &NumaTopology) {
    f.declare_gauge(
        "domain_pinning_numa_mismatch_info",
        "Dedicated CPUs of the domain on NUMA nodes its memory is not strictly bound to, with the CPUs, their nodes and the memory's nodes",
    );
    for d in active {
        let Some(remote) = numa_remote_cpus(d, topo) else {
            continue;
        };
        if !remote.is_empty() {
            f.gauge(
                "domain_pinning_numa_remote_cpus",
                "Host CPUs of the domain's dedicated vCPUs on NUMA nodes outside the nodes its memory is strictly bound to (<numatune> mode strict; only while any)",
                labels([("domain", &d.domain)]),
                remote.len() as f64,
            );
            let memory = d
                .strict_memory_nodes
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_default();
            f.gauge(
                "domain_pinning_numa_mismatch_info",
                "Dedicated CPUs of the domain on NUMA nodes its memory is not strictly bound to, with the CPUs, their nodes and the memory's nodes",
                labels([
                    ("domain", d.domain.as_str()),
                    ("cpus", &remote.to_string()),
                    ("cpu_nodes", &topo.nodes_of(&remote).to_string()),
                    ("memory_nodes", &memory),
                ]),
                1.0,
            );
        }
    }
}

/// Declared pinning against the live affinity of each source, for the running domains.
fn encode_live_affinity(f: &mut Fams, snap: &Snapshot) {
    f.declare_gauge(
        "domain_vcpu_affinity_mismatch_info",
        "vCPUs whose live affinity differs from the declared pinning, with both sets",
    );
    let mut checked: BTreeMap<&str, u32> = [("pininfo", 0), ("vcpuinfo", 0), ("procfs", 0)].into();
    for d in snap.domains.iter().filter(|d| d.is_active()) {
        let Some(x) = d.xml.as_deref() else { continue };
        let mut sources: Vec<(&str, LiveAffinity<'_>)> = Vec::new();
        if let Some(p) = &d.pin_info {
            sources.push(("pininfo", Box::new(move |v| p.get(v as usize).cloned())));
        }
        if let Some(vs) = &d.vcpus {
            sources.push((
                "vcpuinfo",
                Box::new(move |v| {
                    vs.iter()
                        .find(|i| i.number == v)
                        .map(|i| i.affinity.clone())
                }),
            ));
        }
        if let Some(pa) = &d.proc_affinity {
            sources.push(("procfs", Box::new(move |v| pa.get(&v).cloned())));
        }
        for (source, live_of) in &sources {
            *checked.entry(source).or_default() += 1;
            let mut mismatched = 0u32;
            for v in 0..x.vcpus_current {
                let Some(declared) = x.vcpu_affinity(v) else {
                    continue;
                };
                let Some(live) = live_of(v) else { continue };
                if &live != declared {
                    mismatched += 1;
                    f.gauge(
                        "domain_vcpu_affinity_mismatch_info",
                        "vCPUs whose live affinity differs from the declared pinning, with both sets",
                        labels([
                            ("domain", &d.name),
                            ("vcpu", &v.to_string()),
                            ("source", source),
                            ("declared", &declared.to_string()),
                            ("live", &live.to_string()),
                        ]),
                        1.0,
                    );
                }
            }
            if mismatched > 0 {
                f.gauge(
                    "domain_pinning_affinity_mismatch_vcpus",
                    "vCPUs whose live affinity (source: pininfo = virDomainGetVcpuPinInfo, vcpuinfo = virDomainGetVcpus, procfs = the kernel's Cpus_allowed_list) differs from the declared pinning (only while any)",
                    dl2(d, "source", source),
                    f64::from(mismatched),
                );
            }
        }
    }
    for (source, n) in checked {
        f.gauge(
            "domains_affinity_checked",
            "Running domains whose live affinity from this source was compared with their declared pinning on this scrape (a mismatch shows in libvirt_domain_pinning_affinity_mismatch_vcpus)",
            [("source", source)],
            f64::from(n),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::HostInfo;

    /// Building some domains early (while their calls run) and the rest after gives the same
    /// exposition as building all at once.
    #[test]
    fn early_and_late_parts_add_up_to_the_whole() {
        let xml = |name: &str, cpuset: &str| {
            let x = format!("<domain><name>{name}</name><uuid>u-{name}</uuid><vcpu>2</vcpu><memory>1024</memory><cputune><vcpupin vcpu='0' cpuset='{cpuset}'/><vcpupin vcpu='1' cpuset='{cpuset}'/></cputune></domain>");
            Arc::new(crate::domain_xml::parse_domain_xml(&x).unwrap())
        };
        let dom = |name: &str, cpuset: &str| {
            let mut stats = crate::snapshot::Stats::default();
            stats.insert(
                "cpu.time".into(),
                crate::ffi::TypedValue::UInt(7_000_000_000),
            );
            stats.insert("vcpu.maximum".into(), crate::ffi::TypedValue::UInt(2));
            stats.insert("vcpu.0.time".into(), crate::ffi::TypedValue::UInt(1_000));
            DomainSnap {
                name: name.into(),
                uuid: format!("u-{name}"),
                state: 1,
                stats,
                xml: Some(xml(name, cpuset)),
                timed_out: name == "b",
                ..DomainSnap::default()
            }
        };
        let snap = Snapshot {
            host: HostInfo {
                cpus: 4,
                ..HostInfo::default()
            },
            domains: vec![dom("a", "1"), dom("b", "1"), dom("c", "2")],
        };
        let render = |early: Option<&[usize]>| {
            let mut cache = StaticCache::default();
            let mut sink = Sink::new("libvirt");
            let e = early.map(|idx| {
                let mut e = Early::new("libvirt", &NovaCpuSets::default());
                let done: Vec<(&DomainSnap, &Arc<DomainXml>)> = idx
                    .iter()
                    .map(|&i| (&snap.domains[i], snap.domains[i].xml.as_ref().unwrap()))
                    .collect();
                e.encode(&mut cache, 4, &done);
                e
            });
            encode_snapshot_cached(
                &snap,
                &NovaCpuSets::default(),
                Options::limit(5),
                &mut cache,
                e,
                &mut sink,
            );
            let mut out = String::new();
            sink.encode(&mut out).unwrap();
            let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
            lines.sort_unstable();
            lines
        };
        let whole = render(None);
        assert!(
            whole.iter().any(|l| l.starts_with(
                "libvirt_domain_pinning_overlap_info{domain=\"a\",other_domain=\"b\""
            )),
            "{whole:#?}"
        );
        assert!(whole
            .iter()
            .any(|l| l == "libvirt_domain_timed_out{domain=\"b\"} 1.0"));
        for early in [&[][..], &[0], &[0, 2], &[0, 1, 2]] {
            assert_eq!(render(Some(early)), whole, "early {early:?}");
        }
    }

    /// The cached XML-derived series follow the XML: a changed XML, a changed host CPU count
    /// and a domain gone are all seen on the next scrape, and an unchanged one is reused.
    #[test]
    fn cached_static_series_follow_xml_changes() {
        let dom = |name: &str, cpuset: &str| {
            let xml = format!("<domain><name>{name}</name><uuid>u-{name}</uuid><vcpu>1</vcpu><cputune><vcpupin vcpu='0' cpuset='{cpuset}'/></cputune></domain>");
            Arc::new(crate::domain_xml::parse_domain_xml(&xml).unwrap())
        };
        let snap = |cpus: u32, doms: Vec<(&str, Arc<DomainXml>)>| Snapshot {
            host: HostInfo {
                cpus,
                ..HostInfo::default()
            },
            domains: doms
                .into_iter()
                .map(|(name, xml)| DomainSnap {
                    name: name.into(),
                    uuid: format!("u-{name}"),
                    state: 1,
                    xml: Some(xml),
                    ..DomainSnap::default()
                })
                .collect(),
        };
        let mut cache = StaticCache::default();
        let scrape = |cache: &mut StaticCache, s: &Snapshot| {
            let mut sink = Sink::new("libvirt");
            encode_snapshot_cached(
                s,
                &NovaCpuSets::default(),
                Options::limit(5),
                cache,
                None,
                &mut sink,
            );
            let mut out = String::new();
            sink.encode(&mut out).unwrap();
            // Families of cached parts are appended in cache order: compare sorted lines.
            let mut lines: Vec<&str> = out.lines().collect();
            lines.sort_unstable();
            lines.join("\n")
        };
        let (a1, b1) = (dom("a", "1"), dom("b", "2"));
        let out = scrape(
            &mut cache,
            &snap(4, vec![("a", a1.clone()), ("b", b1.clone())]),
        );
        let pin = |d: &str, c: &str| {
            format!("libvirt_domain_pinning_info{{domain=\"{d}\",dedicated_vcpus=\"0\",floating_vcpus=\"\",unknown_vcpus=\"\",dedicated_cpus=\"{c}\",floating_cpus=\"\",emulator_cpuset=\"\",emulator_policy=\"\"}} 1.0")
        };
        assert!(
            out.contains(&pin("a", "1")) && out.contains(&pin("b", "2")),
            "{out}"
        );
        let first_a = Arc::as_ptr(&cache.parts["a"].xml);
        // Same XML again: reused, same output.
        let again = scrape(
            &mut cache,
            &snap(4, vec![("a", a1.clone()), ("b", b1.clone())]),
        );
        assert_eq!(again, out);
        assert_eq!(Arc::as_ptr(&cache.parts["a"].xml), first_a);
        // a's XML changes, b is gone.
        let out = scrape(&mut cache, &snap(4, vec![("a", dom("a", "3"))]));
        assert!(out.contains(&pin("a", "3")), "{out}");
        assert!(!out.contains(&pin("a", "1")), "{out}");
        assert!(!out.contains("domain=\"b\""), "{out}");
        assert!(!cache.parts.contains_key("b"));
        // The cached pinning report follows: b's CPU 2 is free, a moved from 1 to 3 (host CPUs
        // without a dedicated claim have no series).
        let cpu = |c: &str| format!("libvirt_host_cpu_pinned_vcpus{{cpu=\"{c}\"}}");
        assert!(out.contains(&format!("{} 1.0", cpu("3"))), "{out}");
        assert!(
            !out.contains(&cpu("1")) && !out.contains(&cpu("2")),
            "{out}"
        );
        // A domain that stops running leaves the report though its XML is the same.
        let mut paused = snap(4, vec![("a", cache.parts["a"].xml.clone())]);
        paused.domains[0].state = 5; // shut off
        let out = scrape(&mut cache, &paused);
        assert!(!out.contains(&cpu("3")), "{out}");
        assert!(out.contains(&pin("a", "3")), "{out}");
        // The host CPU count changes: claims are recomputed (an unpinned vCPU floats on every
        // host CPU, and CPU 3 is not one of a 2-CPU host's).
        let c = Arc::new(
            crate::domain_xml::parse_domain_xml(
                "<domain><name>c</name><uuid>u-c</uuid><vcpu>1</vcpu></domain>",
            )
            .unwrap(),
        );
        let floating = |cpus: &str| {
            format!("floating_vcpus=\"0\",unknown_vcpus=\"\",dedicated_cpus=\"\",floating_cpus=\"{cpus}\"")
        };
        let out = scrape(&mut cache, &snap(4, vec![("c", c.clone())]));
        assert!(out.contains(&floating("0-3")), "{out}");
        let out = scrape(&mut cache, &snap(2, vec![("c", c)]));
        assert!(out.contains(&floating("0-1")), "{out}");
        assert_eq!(cache.parts["c"].ncpus, 2);
    }

    /// inovex's memory names with its used_percent; the guest's memory detail and the per-vCPU
    /// series only with their flags.
    #[test]
    fn memory_and_vcpu_detail_follow_their_flags() {
        use crate::ffi::TypedValue::UInt;
        let xml = crate::domain_xml::parse_domain_xml(
            "<domain><name>m</name><uuid>u-m</uuid><vcpu>1</vcpu><memory>4096</memory></domain>",
        )
        .unwrap();
        let mut stats = crate::snapshot::Stats::default();
        for (k, v) in [
            ("balloon.current", 2048),
            ("balloon.maximum", 4096),
            ("balloon.available", 2000),
            ("balloon.usable", 500),
            ("balloon.unused", 400),
            ("balloon.disk_caches", 100),
            ("balloon.hugetlb_pgalloc", 3),
            ("balloon.last-update", 1_700_000_000),
            ("vcpu.maximum", 1),
            ("vcpu.0.state", 1),
            ("vcpu.0.delay", 2_000_000_000),
        ] {
            stats.insert(k.into(), UInt(v));
        }
        let snap = Snapshot {
            host: HostInfo {
                cpus: 2,
                ..HostInfo::default()
            },
            domains: vec![DomainSnap {
                name: "m".into(),
                uuid: "u-m".into(),
                state: 1,
                stats,
                xml: Some(Arc::new(xml)),
                ..DomainSnap::default()
            }],
        };
        let render = |opts: Options| {
            let mut sink = Sink::new("libvirt");
            encode_snapshot(&snap, &NovaCpuSets::default(), opts, &mut sink);
            let mut out = String::new();
            sink.encode(&mut out).unwrap();
            out
        };
        let m = |name: &str, v: &str| format!("libvirt_domain_{name}{{domain=\"m\"}} {v}");
        let out = render(Options::limit(5));
        for line in [
            m("memory_stats_current_balloon_bytes", "2097152"),
            m("memory_stats_maximum_bytes", "4194304"),
            m("memory_stats_available_bytes", "2048000"),
            m("memory_stats_usable_bytes", "512000"),
            m("memory_stats_used_percent", "75"),
            m("vcpu_current", "1"),
        ] {
            assert!(out.contains(&line), "{line} in {out}");
        }
        for name in [
            "memory_stats_unused_bytes",
            "memory_stats_disk_caches_bytes",
            "memory_stats_hugetlb_pgalloc_total",
            "memory_stats_last_update_timestamp_seconds",
            "vcpu_state",
            "vcpu_delay_seconds_total",
            "vcpu_maximum",
            "vcpu_pinning_info",
        ] {
            assert!(
                !out.contains(&format!("libvirt_domain_{name}{{")),
                "{name} in {out}"
            );
        }
        let out = render(Options {
            evidence_limit: 5,
            vcpu_detail: true,
            memory_detail: true,
        });
        for line in [
            m("memory_stats_unused_bytes", "409600"),
            m("memory_stats_disk_caches_bytes", "102400"),
            m("memory_stats_hugetlb_pgalloc_total", "3"),
            m("memory_stats_last_update_timestamp_seconds", "1700000000"),
            m("vcpu_maximum", "1"),
            "libvirt_domain_vcpu_state{domain=\"m\",vcpu=\"0\"} 1".to_string(),
            "libvirt_domain_vcpu_delay_seconds_total{domain=\"m\",vcpu=\"0\"} 2".to_string(),
            "libvirt_domain_vcpu_pinning_info{domain=\"m\",vcpu=\"0\",cpuset=\"\",kind=\"floating\"} 1".to_string(),
        ] {
            assert!(out.contains(&line), "{line} in {out}");
        }
    }

    #[test]
    fn a_domain_that_timed_out_is_reported_and_the_others_kept() {
        let xml = crate::domain_xml::parse_domain_xml(
            "<domain><name>ok</name><vcpu>1</vcpu><cputune><vcpupin vcpu='0' cpuset='1'/></cputune></domain>",
        )
        .unwrap();
        let snap = Snapshot {
            host: HostInfo {
                cpus: 4,
                ..HostInfo::default()
            },
            domains: vec![
                DomainSnap {
                    name: "ok".into(),
                    state: 1,
                    xml: Some(Arc::new(xml)),
                    ..DomainSnap::default()
                },
                DomainSnap {
                    name: "stuck".into(),
                    state: 1,
                    timed_out: true,
                    ..DomainSnap::default()
                },
                DomainSnap {
                    name: "broken".into(),
                    state: 1,
                    errors: vec!["xml", "vcpus"],
                    ..DomainSnap::default()
                },
            ],
        };
        let mut sink = Sink::new("libvirt");
        encode_snapshot(&snap, &NovaCpuSets::default(), Options::limit(5), &mut sink);
        let mut out = String::new();
        sink.encode(&mut out).unwrap();
        assert!(
            out.contains("libvirt_domain_timed_out{domain=\"stuck\"} 1"),
            "{out}"
        );
        // Per domain only where something failed; the node totals count every domain.
        assert!(!out.contains("libvirt_domain_timed_out{domain=\"ok\"}"));
        assert!(!out.contains("libvirt_domain_scrape_errors{domain=\"ok\"}"));
        assert!(out.contains("libvirt_domain_scrape_errors{domain=\"broken\"} 2"));
        assert!(out.contains("libvirt_domains_timed_out 1"));
        assert!(out.contains("libvirt_domains_scrape_errors 2"));
        assert!(out.contains("libvirt_domains 3"));
        assert!(out.contains("libvirt_host_cpu_pinned_vcpus{cpu=\"1\"} 1"));
        assert!(out.contains(
            "libvirt_domain_info_state{domain=\"stuck\",state_desc=\"the domain is running\"} 1"
        ));
    }

    #[test]
    fn overlap_info_is_bounded_per_domain_and_the_rest_counted() {
        // 40 running domains, each with two dedicated vCPUs on host CPUs 2 and 3, plus one on a
        // CPU of its own: 40 x 39 pairs without a limit.
        let n = 40;
        let domains = (0..n)
            .map(|i| {
                let xml = crate::domain_xml::parse_domain_xml(&format!(
                    "<domain><name>vm-{i:02}</name><vcpu>3</vcpu><cputune><vcpupin vcpu='0' cpuset='2'/><vcpupin vcpu='1' cpuset='3'/><vcpupin vcpu='2' cpuset='{}'/></cputune></domain>",
                    10 + i
                ))
                .unwrap();
                DomainSnap {
                    name: format!("vm-{i:02}"),
                    state: 1,
                    xml: Some(Arc::new(xml)),
                    ..DomainSnap::default()
                }
            })
            .collect();
        let snap = Snapshot {
            host: HostInfo {
                cpus: 64,
                ..HostInfo::default()
            },
            domains,
        };
        for limit in [0usize, 1, 5, 39, 100] {
            let mut sink = Sink::new("libvirt");
            encode_snapshot(
                &snap,
                &NovaCpuSets::default(),
                Options::limit(limit),
                &mut sink,
            );
            let mut out = String::new();
            sink.encode(&mut out).unwrap();
            let shown = limit.min(n - 1);
            for i in 0..n {
                let d = format!("vm-{i:02}");
                let info: Vec<&str> = out
                    .lines()
                    .filter(|l| {
                        l.starts_with(&format!(
                            "libvirt_domain_pinning_overlap_info{{domain=\"{d}\","
                        ))
                    })
                    .collect();
                assert_eq!(info.len(), shown, "limit {limit}, {d}: {info:?}");
                // The first other domains by name, with the CPUs they share.
                let first = if i == 0 { "vm-01" } else { "vm-00" };
                if shown > 0 {
                    assert!(
                        info[0].contains(&format!("other_domain=\"{first}\",cpus=\"2-3\"")),
                        "{}",
                        info[0]
                    );
                }
                let omitted = format!(
                    "libvirt_domain_pinning_overlap_info_omitted{{domain=\"{d}\"}} {}.0\n",
                    n - 1 - shown
                );
                assert!(out.contains(&omitted), "limit {limit}: {omitted}");
                assert!(
                    out.contains(&format!(
                        "libvirt_domain_pinning_overlap_cpus{{domain=\"{d}\"}} 2.0\n"
                    )),
                    "limit {limit}, {d}"
                );
            }
            assert!(out.contains("libvirt_host_cpu_dedicated_domains{cpu=\"2\"} 40.0\n"));
        }
    }
}
